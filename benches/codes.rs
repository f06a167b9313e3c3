//! `cargo bench --bench codes`: how fast and how small the relay's codes are, beside the
//! naive `image` pipeline and the QR encoders we could have used; and what a session costs to
//! start from a warm code pool. Every figure is a median over many runs on one thread.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use image::{DynamicImage, ImageFormat};
use qrlogin_relay::codes::{BrandedCode, DEFAULT_DISC_RATIO, PreparedLogo, centre_disc};
use qrlogin_relay::sandbox::{SandboxOptions, draw_sun_code, sandbox_settings};
use qrlogin_relay::startup::Application;
use std::hint::black_box;
use std::io::Cursor;
use std::time::{Duration, Instant};

const RUNS: usize = 400;

/// Median time of `f` over `RUNS` runs, after a few to warm caches.
fn time<T>(mut f: impl FnMut() -> T) -> Duration {
    for _ in 0..20 {
        black_box(f());
    }
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            black_box(f());
            start.elapsed()
        })
        .collect();
    times.sort();
    times[RUNS / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn row(what: &str, time: Duration, bytes: Option<usize>) {
    let size = bytes.map_or(String::from("-"), |b| format!("{:.1} KB", b as f64 / 1000.0));
    println!("| {what:<58} | {:>10} | {size:>9} |", ms(time));
}

fn sun_code_jpeg() -> Vec<u8> {
    let code =
        DynamicImage::ImageRgba8(draw_sun_code("Gx1bK7pQ2mZr9TfA3cVwLd", 430, false, [0, 0, 0])).to_rgb8();
    let mut out = Cursor::new(Vec::new());
    code.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90))
        .unwrap();
    out.into_inner()
}

fn sun_code_png() -> Vec<u8> {
    let code = draw_sun_code("Gx1bK7pQ2mZr9TfA3cVwLd", 430, false, [0, 0, 0]);
    let mut out = Vec::new();
    code.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
        .unwrap();
    out
}

/// What a straightforward `image` pipeline does: decode, overlay an RGBA logo, encode PNG.
fn naive_brand(jpeg: &[u8], logo: &image::RgbaImage) -> Vec<u8> {
    let mut code = image::load_from_memory(jpeg).unwrap().to_rgba8();
    let (left, top, _) = centre_disc(code.width(), DEFAULT_DISC_RATIO);
    image::imageops::overlay(&mut code, logo, left.into(), top.into());
    let mut out = Vec::new();
    code.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
        .unwrap();
    out
}

fn codes() {
    let logo = PreparedLogo::bundled();
    let jpeg = sun_code_jpeg();
    let (_, _, diameter) = centre_disc(430, DEFAULT_DISC_RATIO);
    let round = logo.round_image(diameter);
    let url = "https://login.example.com/q/Gx1bK7pQ2mZr9TfA3cVwLd";
    let brand = || BrandedCode::sun_code(&jpeg, &logo, DEFAULT_DISC_RATIO).unwrap();
    let link = || BrandedCode::link(url, &logo).unwrap();
    let fast = || fast_qr::QRBuilder::new(url).ecl(fast_qr::ECL::H).build().unwrap();
    let version = (fast().size - 17) / 4;

    println!(
        "| code work (input: a 430 px sun code JPEG, {:.1} KB) | median | size |",
        jpeg.len() as f64 / 1000.0
    );
    println!("|---|---:|---:|");
    let naive = naive_brand(&jpeg, &round).len();
    row(
        "sun code + logo, naive image pipeline (RGBA PNG)",
        time(|| naive_brand(&jpeg, &round)),
        Some(naive),
    );
    row(
        "sun code + logo, relay (luma decode, palette PNG)",
        time(brand),
        Some(brand().png.len()),
    );
    // What the simulator sends (and WeChat, by some reports): the same code as an RGBA PNG.
    let png = sun_code_png();
    row(
        &format!(
            "the same from an RGBA PNG ({:.1} KB), relay",
            png.len() as f64 / 1000.0
        ),
        time(|| BrandedCode::sun_code(&png, &logo, DEFAULT_DISC_RATIO).unwrap()),
        None,
    );
    let qrcode = || qrcode::QrCode::with_error_correction_level(url, qrcode::EcLevel::H).unwrap();
    row(
        &format!("QR matrix only, `qrcode` crate (version {version}, H)"),
        time(qrcode),
        None,
    );
    let qrcodegen = || qrcodegen::QrCode::encode_text(url, qrcodegen::QrCodeEcc::High).unwrap();
    row("QR matrix only, `qrcodegen`", time(qrcodegen), None);
    row("QR matrix only, `fast_qr` (the relay's choice)", time(fast), None);
    row(
        "link QR + logo, relay (matrix, palette PNG)",
        time(link),
        Some(link().png.len()),
    );
}

/// Session starts over HTTP against the sandbox (in-memory store, in-process simulator):
/// from a warm pool, and with the pool off (a live WeChat fetch and branding per request).
async fn session_starts() {
    let http = reqwest::Client::new();
    let metric = async |base: &str, name: &str| -> u64 {
        let text = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap()
    };
    let calls = async |base: &str| -> u64 {
        let stats: serde_json::Value = http
            .get(format!("{base}/sandbox/wechat/_sim/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        stats["calls"]["getwxacodeunlimit"].as_u64().unwrap_or(0)
    };
    const STARTS: usize = 100;
    println!(
        "\n| session start over HTTP ({STARTS} sequential `POST /v1/login-sessions`) | median | WeChat code calls during the starts |"
    );
    println!("|---|---:|---:|");
    for pool_size in [STARTS + 10, 0] {
        let mut settings = sandbox_settings(SandboxOptions {
            listen: "127.0.0.1:0".into(),
            backend_secret: "bench".into(),
            ..SandboxOptions::default()
        });
        settings.connections[0].pool_size = pool_size;
        settings.connections[0].pool_low_water = 0;
        let app = Application::build(settings, std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .await
            .unwrap();
        let base = app.public_base_url().to_owned();
        tokio::spawn(app.run_until_stopped());
        let deadline = Instant::now() + Duration::from_secs(120);
        while metric(&base, "qrlogin_code_pool_refilled_total").await < pool_size as u64 {
            assert!(Instant::now() < deadline, "the pool did not fill");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let before = calls(&base).await;
        let mut times = Vec::with_capacity(STARTS);
        for _ in 0..STARTS {
            let start = Instant::now();
            let response = http
                .post(format!("{base}/v1/login-sessions"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201);
            times.push(start.elapsed());
        }
        times.sort();
        let what = if pool_size > 0 {
            "warm pool (pool hits)"
        } else {
            "pool off (live fetch + branding)"
        };
        let hits = metric(&base, "qrlogin_code_pool_hits_total").await;
        println!(
            "| {what}, {hits} hits | {:>10} | {} |",
            ms(times[STARTS / 2]),
            calls(&base).await - before
        );
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench` asks benches to list their tests; this one has none to list.
    }
    codes();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(session_starts());
}
