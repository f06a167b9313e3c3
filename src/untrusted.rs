//! Property tests over everything parsed from clients and from WeChat: scene ids, tickets,
//! statuses, `X-Forwarded-For`, user agents, WeChat's JSON answers, logos and sun-code images
//! (random bytes, damaged real images, decompression bombs). Each runs a bounded number of
//! cases (`PROPTEST_CASES` raises it) as part of `cargo test`; none may panic, and what is
//! accepted must be what the format allows. JSON request bodies are fuzzed over HTTP by the
//! Schemathesis contract test.

use crate::client_ip::TrustedProxies;
use crate::codes::{BrandedCode, DEFAULT_DISC_RATIO, PreparedLogo};
use crate::session::{SceneId, Status, Ticket};
use crate::wechat::{MiniProgramUser, WeChatError, WebsiteGrant, parse};
use proptest::prelude::*;
use std::io::Cursor;
use std::net::IpAddr;
use std::sync::OnceLock;

fn encoded(format: image::ImageFormat) -> Vec<u8> {
    let code = image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(280, 280, |x, y| {
        image::Luma([if (x / 7 + y / 7) % 2 == 0 { 0 } else { 255 }])
    }));
    let mut out = Vec::new();
    code.write_to(&mut Cursor::new(&mut out), format)
        .unwrap_or_default();
    out
}

fn logo() -> &'static PreparedLogo {
    static LOGO: OnceLock<PreparedLogo> = OnceLock::new();
    LOGO.get_or_init(PreparedLogo::bundled)
}

/// A PNG that claims `side`×`side` pixels and carries no pixel data.
fn png_claiming(side: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, side, side);
    encoder.set_color(png::ColorType::Rgba);
    drop(encoder.write_header());
    out
}

/// A baseline JPEG header that claims `side`×`side` pixels.
fn jpeg_claiming(side: u16) -> Vec<u8> {
    let [hi, lo] = side.to_be_bytes();
    vec![
        0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x0B, 0x08, hi, lo, hi, lo, 0x01, 0x01, 0x11, 0x00, 0xFF, 0xD9,
    ]
}

fn damaged(original: &[u8], flips: &[(usize, u8)], cut: usize) -> Vec<u8> {
    let mut bytes = original.to_vec();
    for (at, value) in flips {
        let len = bytes.len();
        bytes[at % len] ^= value;
    }
    bytes.truncate(bytes.len().saturating_sub(cut % 64));
    bytes
}

#[test]
fn decompression_bombs_are_refused_before_they_are_decoded() {
    // 10 000 px a side: under the decoders' own defaults, over what a code or logo may be.
    for bomb in [png_claiming(10_000), jpeg_claiming(10_000)] {
        let refused = BrandedCode::sun_code(&bomb, logo(), DEFAULT_DISC_RATIO)
            .err()
            .map(|e| e.to_string());
        assert!(
            refused.is_some_and(|e| e.contains("limit") || e.contains("dimension") || e.contains("large"))
        );
        // A logo is decoded only once its header says at most 4096 px a side.
        assert!(PreparedLogo::prepare(&bomb).is_err());
    }
}

proptest! {
    #[test]
    fn scene_ids_are_1_to_32_letters_or_digits(raw in ".{0,40}") {
        // WeChat's scene is at most 32 visible characters; ours are 22, and nothing else passes.
        let valid = (1..=32).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_alphanumeric());
        prop_assert_eq!(SceneId::parse(&raw).is_some(), valid);
    }

    #[test]
    fn tickets_name_a_session_only_when_well_formed(id in "[A-Za-z0-9]{22}", rest in ".{0,40}") {
        let raw = format!("{id}.{rest}");
        let valid = rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_alphanumeric());
        prop_assert_eq!(Ticket::session_of(&raw).is_some(), valid);
        prop_assert!(Ticket::session_of(&rest).is_none() || rest.contains('.'));
    }

    #[test]
    fn statuses_parse_only_their_own_names(raw in "[a-z_]{0,12}") {
        if let Some(status) = Status::parse(&raw) {
            prop_assert_eq!(status.name(), raw);
        }
    }

    #[test]
    fn the_client_ip_is_the_peer_or_a_forwarded_hop(
        lines in proptest::collection::vec("[0-9a-f.:, \\[\\]]{0,40}", 0..4),
        peer in any::<[u8; 4]>(),
    ) {
        let trusted = TrustedProxies::parse(["0.0.0.0/0", "::/0"]).unwrap_or_default();
        let peer = IpAddr::from(peer);
        let client = trusted.client(peer, lines.iter().map(String::as_str));
        let joined = lines.join(",");
        prop_assert!(client == peer || joined.contains(&client.to_string()) || joined.contains(':'));
    }

    #[test]
    fn user_agents_are_described_without_panicking(raw in ".{0,300}") {
        let described = crate::user_agent::describe(&raw);
        prop_assert!(described.chars().count() <= 80);
    }

    #[test]
    fn wechat_answers_are_read_or_refused(body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse::<MiniProgramUser>(&body);
        let _ = parse::<WebsiteGrant>(&body);
    }

    #[test]
    fn a_non_zero_errcode_is_always_an_api_error(errcode in any::<i64>(), openid in "[A-Za-z0-9_-]{0,30}") {
        let body = serde_json::json!({ "errcode": errcode, "errmsg": "x", "openid": openid }).to_string();
        let read = parse::<MiniProgramUser>(body.as_bytes());
        if errcode == 0 {
            prop_assert_eq!(read.ok().map(|u| u.openid), Some(openid));
        } else {
            prop_assert!(
                matches!(read, Err(WeChatError::Api { errcode: e, .. }) if e == errcode),
                "errcode {} was not reported", errcode
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_bytes_are_never_a_sun_code_or_a_logo(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        prop_assert!(BrandedCode::sun_code(&bytes, logo(), DEFAULT_DISC_RATIO).is_err());
        let _ = PreparedLogo::prepare(&bytes);
    }

    #[test]
    fn damaged_images_are_decoded_or_refused_without_panicking(
        flips in proptest::collection::vec((any::<usize>(), 1u8..), 1..8),
        cut in any::<usize>(),
        jpeg in any::<bool>(),
    ) {
        static PNG: OnceLock<Vec<u8>> = OnceLock::new();
        static JPEG: OnceLock<Vec<u8>> = OnceLock::new();
        let original = if jpeg {
            JPEG.get_or_init(|| encoded(image::ImageFormat::Jpeg))
        } else {
            PNG.get_or_init(|| encoded(image::ImageFormat::Png))
        };
        let bytes = damaged(original, &flips, cut);
        if let Ok(code) = BrandedCode::sun_code(&bytes, logo(), DEFAULT_DISC_RATIO) {
            prop_assert!(code.png.starts_with(b"\x89PNG"));
        }
        let _ = PreparedLogo::prepare(&bytes);
    }
}
