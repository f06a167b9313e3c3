//! A connection's logo, prepared once: decoded, squared, and for each size it is drawn at, made
//! into a round badge (thin white ring, soft edge) already reduced to a palette, so that making a
//! code only copies palette indices.

use super::CodeError;
use image::imageops::{self, FilterType};
use image::{Rgba, RgbaImage};
use std::collections::HashMap;
use std::fmt;
use std::io::Cursor;
use std::sync::{Arc, Mutex};

const MAX_LOGO_BYTES: usize = 2 * 1024 * 1024;
const MAX_LOGO_SIDE: u32 = 4096;
const BUNDLED_LOGO: &[u8] = include_bytes!("../../assets/logo.png");
/// Colours a badge may use: the other 16 palette entries are the code's grey levels.
pub const BADGE_COLOURS: usize = 240;

/// A badge `diameter` px wide, as palette indices into `palette` (opaque pixels) and coverage
/// (`alpha`: 255 inside, 0 outside, between at the soft edge, where the ring's white is blended
/// with what lies beneath).
pub struct Badge {
    pub diameter: u32,
    pub index: Vec<u8>,
    pub alpha: Vec<u8>,
    pub palette: Vec<[u8; 3]>,
}

pub struct PreparedLogo {
    /// Names this logo's content (pooled codes are kept per logo).
    pub fingerprint: String,
    square: RgbaImage,
    badges: Mutex<HashMap<u32, Arc<Badge>>>,
}

impl fmt::Debug for PreparedLogo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PreparedLogo({}px)", self.square.width())
    }
}

impl PreparedLogo {
    /// Checks and decodes a PNG, JPEG or WebP logo of up to 2 MB and 4096 px a side.
    pub fn prepare(bytes: &[u8]) -> Result<Self, CodeError> {
        if bytes.len() > MAX_LOGO_BYTES {
            return Err(CodeError(format!("is {} bytes; the limit is 2 MB", bytes.len())));
        }
        let reader = image::ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| CodeError(format!("cannot be read: {e}")))?;
        if reader.format().is_none() {
            return Err(CodeError("is not a PNG, JPEG or WebP image".into()));
        }
        let (w, h) = reader
            .into_dimensions()
            .map_err(|e| CodeError(format!("is not a readable image: {e}")))?;
        if w > MAX_LOGO_SIDE || h > MAX_LOGO_SIDE || w == 0 || h == 0 {
            return Err(CodeError(format!(
                "is {w}x{h} px; each side must be 1 to 4096 px"
            )));
        }
        let image =
            image::load_from_memory(bytes).map_err(|e| CodeError(format!("is not a readable image: {e}")))?;
        let side = w.min(h);
        let square = image
            .crop_imm((w - side) / 2, (h - side) / 2, side, side)
            .to_rgba8();
        let fingerprint = crate::token::hash(bytes)[..16].to_owned();
        Ok(Self {
            fingerprint,
            square,
            badges: Mutex::new(HashMap::new()),
        })
    }

    /// The logo shipped in `assets/logo.png`.
    pub fn bundled() -> Self {
        match Self::prepare(BUNDLED_LOGO) {
            Ok(logo) => logo,
            // The bundled asset is checked by a unit test; a white badge beats a crash.
            Err(_) => Self {
                fingerprint: "blank".into(),
                square: RgbaImage::from_pixel(1, 1, Rgba([255, 255, 255, 255])),
                badges: Mutex::default(),
            },
        }
    }

    /// The badge `diameter` px wide, made on first use and kept.
    pub fn badge(&self, diameter: u32) -> Arc<Badge> {
        if let Some(badge) = self
            .badges
            .lock()
            .ok()
            .and_then(|cache| cache.get(&diameter).cloned())
        {
            return badge;
        }
        let badge = Arc::new(make_badge(&self.square, diameter));
        if let Ok(mut cache) = self.badges.lock() {
            cache.insert(diameter, badge.clone());
        }
        badge
    }

    /// The round logo as an RGBA image (for the mini-program's confirm screen).
    pub fn round_image(&self, diameter: u32) -> RgbaImage {
        round(&self.square, diameter)
    }
}

/// The logo resized to `diameter`, clipped to a circle with a thin white ring; transparent
/// outside, with a one-pixel soft edge.
fn round(square: &RgbaImage, diameter: u32) -> RgbaImage {
    let mut badge = imageops::resize(square, diameter, diameter, FilterType::Triangle);
    let radius = diameter as f32 / 2.0;
    let ring = (diameter as f32 / 40.0).max(2.0);
    for (x, y, px) in badge.enumerate_pixels_mut() {
        let dx = x as f32 + 0.5 - radius;
        let dy = y as f32 + 0.5 - radius;
        let r = (dx * dx + dy * dy).sqrt();
        let coverage = (radius - r + 0.5).clamp(0.0, 1.0);
        if r > radius - ring {
            *px = Rgba([255, 255, 255, 255]);
        } else {
            // Logos with transparency sit on white.
            let a = px[3] as f32 / 255.0;
            for c in 0..3 {
                px[c] = (px[c] as f32 * a + 255.0 * (1.0 - a)).round() as u8;
            }
            px[3] = 255;
        }
        px[3] = (255.0 * coverage).round() as u8;
    }
    badge
}

fn make_badge(square: &RgbaImage, diameter: u32) -> Badge {
    let round = round(square, diameter);
    let palette = popular_colours(&round);
    let mut nearest_cache: HashMap<[u8; 3], u8> = HashMap::new();
    let mut index = Vec::with_capacity(round.len() / 4);
    let mut alpha = Vec::with_capacity(round.len() / 4);
    for px in round.pixels() {
        let colour = [px[0], px[1], px[2]];
        let i = *nearest_cache
            .entry(colour)
            .or_insert_with(|| nearest(&palette, colour));
        index.push(i);
        alpha.push(px[3]);
    }
    Badge {
        diameter,
        index,
        alpha,
        palette,
    }
}

/// Up to 240 colours: every colour if there are that few, else the most common ones after
/// folding each channel to 5 bits (popularity quantization: logos are mostly flat colours).
fn popular_colours(round: &RgbaImage) -> Vec<[u8; 3]> {
    let mut counts: HashMap<[u8; 3], usize> = HashMap::new();
    for px in round.pixels().filter(|p| p[3] == 255) {
        *counts.entry([px[0], px[1], px[2]]).or_default() += 1;
    }
    if counts.len() > BADGE_COLOURS {
        let mut folded: HashMap<[u8; 3], usize> = HashMap::new();
        for (c, n) in counts {
            let fold = |v: u8| (v & 0xF8) | 0x04;
            *folded.entry([fold(c[0]), fold(c[1]), fold(c[2])]).or_default() += n;
        }
        counts = folded;
    }
    let mut by_count: Vec<_> = counts.into_iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut palette: Vec<[u8; 3]> = by_count.into_iter().take(BADGE_COLOURS).map(|(c, _)| c).collect();
    if palette.is_empty() {
        palette.push([255, 255, 255]);
    }
    palette
}

fn nearest(palette: &[[u8; 3]], colour: [u8; 3]) -> u8 {
    let distance = |p: &[u8; 3]| -> i32 { (0..3).map(|i| (p[i] as i32 - colour[i] as i32).pow(2)).sum() };
    palette
        .iter()
        .enumerate()
        .min_by_key(|(_, p)| distance(p))
        .map_or(0, |(i, _)| i as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::ImageFormat;

    fn png(img: &RgbaImage) -> Vec<u8> {
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn the_bundled_logo_is_a_valid_image() {
        assert!(PreparedLogo::prepare(BUNDLED_LOGO).is_ok());
    }

    #[test]
    fn bad_logos_are_refused_with_a_reason() {
        assert!(
            PreparedLogo::prepare(b"not an image")
                .unwrap_err()
                .0
                .contains("not a PNG")
        );
        let huge = png(&RgbaImage::new(4097, 1));
        assert!(PreparedLogo::prepare(&huge).unwrap_err().0.contains("4096"));
        let mut truncated = png(&RgbaImage::from_pixel(64, 64, Rgba([1, 2, 3, 255])));
        truncated.truncate(truncated.len() / 2);
        assert!(PreparedLogo::prepare(&truncated).is_err());
        assert!(
            PreparedLogo::prepare(&vec![0u8; MAX_LOGO_BYTES + 1])
                .unwrap_err()
                .0
                .contains("2 MB")
        );
    }

    #[test]
    fn webp_and_jpeg_logos_are_accepted() {
        let img = image::DynamicImage::ImageRgba8(RgbaImage::from_pixel(32, 20, Rgba([200, 10, 10, 255])));
        for format in [ImageFormat::WebP, ImageFormat::Jpeg] {
            let mut bytes = Vec::new();
            img.to_rgb8()
                .write_to(&mut Cursor::new(&mut bytes), format)
                .unwrap();
            assert!(PreparedLogo::prepare(&bytes).is_ok(), "{format:?}");
        }
    }

    #[test]
    fn badges_are_round_ringed_and_reduced_to_a_palette() {
        let logo =
            PreparedLogo::prepare(&png(&RgbaImage::from_pixel(100, 100, Rgba([255, 0, 0, 255])))).unwrap();
        let badge = logo.badge(100);
        assert!(Arc::ptr_eq(&badge, &logo.badge(100)), "made once");
        let at = |x: usize, y: usize| {
            (
                badge.palette[badge.index[y * 100 + x] as usize],
                badge.alpha[y * 100 + x],
            )
        };
        assert_eq!(at(50, 50), ([255, 0, 0], 255), "the logo at the centre");
        assert_eq!(at(1, 50), ([255, 255, 255], 255), "the white ring at the edge");
        assert_eq!(at(0, 0).1, 0, "transparent outside the circle");
        assert!(badge.palette.len() <= BADGE_COLOURS);

        let gradient = RgbaImage::from_fn(256, 256, |x, y| Rgba([x as u8, y as u8, 128, 255]));
        let many = PreparedLogo::prepare(&png(&gradient)).unwrap().badge(200);
        assert_eq!(
            many.palette.len(),
            BADGE_COLOURS,
            "a photo-like logo is reduced to 240 colours"
        );
    }
}
