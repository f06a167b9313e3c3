//! Branded codes: the connection's logo, clipped to a circle with a thin white ring, pasted over
//! the centre disc of the sun code WeChat returns.

use image::imageops::{self, FilterType};
use image::{ImageFormat, Rgba, RgbaImage};
use std::collections::HashMap;
use std::fmt;
use std::io::Cursor;
use std::sync::{Arc, Mutex};

/// The centre disc of a sun code (where WeChat draws the mini-program's avatar), as a fraction
/// of the code's width. Measured on real codes: ≈0.449; the simulator draws the same disc.
pub const CENTRE_DISC_RATIO: f32 = 0.45;

const MAX_LOGO_BYTES: usize = 2 * 1024 * 1024;
const MAX_LOGO_SIDE: u32 = 4096;
const BUNDLED_LOGO: &[u8] = include_bytes!("../assets/logo.png");

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeError(pub String);

impl fmt::Display for CodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodeError {}

/// A connection's logo, decoded and squared once; badges (resized, masked) are cached by size.
pub struct PreparedLogo {
    square: RgbaImage,
    badges: Mutex<HashMap<u32, Arc<RgbaImage>>>,
}

impl fmt::Debug for PreparedLogo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PreparedLogo({}px)", self.square.width())
    }
}

impl PreparedLogo {
    /// Checks and decodes a PNG or JPEG logo of any size up to 2 MB and 4096 px a side.
    pub fn prepare(bytes: &[u8]) -> Result<Self, CodeError> {
        if bytes.len() > MAX_LOGO_BYTES {
            return Err(CodeError(format!("is {} bytes; the limit is 2 MB", bytes.len())));
        }
        let reader = image::ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| CodeError(format!("cannot be read: {e}")))?;
        if reader.format().is_none() {
            return Err(CodeError("is not a PNG or JPEG image".into()));
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
        Ok(Self {
            square,
            badges: Mutex::new(HashMap::new()),
        })
    }

    /// The logo shipped in `assets/logo.png`.
    pub fn bundled() -> Self {
        match Self::prepare(BUNDLED_LOGO) {
            Ok(logo) => logo,
            // The bundled asset is checked by a unit test; a blank badge beats a crash.
            Err(_) => Self {
                square: RgbaImage::from_pixel(1, 1, Rgba([255, 255, 255, 255])),
                badges: Mutex::default(),
            },
        }
    }

    /// The logo as a round badge `diameter` px wide with a white ring, transparent outside.
    pub fn badge(&self, diameter: u32) -> Arc<RgbaImage> {
        if let Ok(cache) = self.badges.lock()
            && let Some(badge) = cache.get(&diameter)
        {
            return badge.clone();
        }
        let badge = Arc::new(make_badge(&self.square, diameter));
        if let Ok(mut cache) = self.badges.lock() {
            cache.insert(diameter, badge.clone());
        }
        badge
    }
}

fn make_badge(square: &RgbaImage, diameter: u32) -> RgbaImage {
    let mut badge = imageops::resize(square, diameter, diameter, FilterType::Triangle);
    let radius = diameter as f32 / 2.0;
    let ring = (diameter as f32 / 40.0).max(2.0);
    for (x, y, px) in badge.enumerate_pixels_mut() {
        let dx = x as f32 + 0.5 - radius;
        let dy = y as f32 + 0.5 - radius;
        let r = (dx * dx + dy * dy).sqrt();
        // Coverage of the disc at this pixel, with a one-pixel soft edge.
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
        px[3] = (px[3] as f32 * coverage).round() as u8;
    }
    badge
}

/// The centre disc of a square code `width` px wide: (left, top, diameter).
pub fn centre_disc(width: u32) -> (u32, u32, u32) {
    let diameter = (width as f32 * CENTRE_DISC_RATIO).round() as u32;
    let offset = (width - diameter) / 2;
    (offset, offset, diameter)
}

/// A finished code image, ready to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrandedCode {
    pub png: Vec<u8>,
}

impl BrandedCode {
    /// Pastes `logo` over the centre disc of a sun code (PNG or JPEG bytes, sniffed).
    pub fn from_sun_code(sun_code: &[u8], logo: &PreparedLogo) -> Result<Self, CodeError> {
        let mut code = image::load_from_memory(sun_code)
            .map_err(|e| CodeError(format!("WeChat's code image cannot be decoded: {e}")))?
            .to_rgba8();
        let width = code.width().min(code.height());
        let (left, top, diameter) = centre_disc(width);
        let badge = logo.badge(diameter);
        imageops::overlay(&mut code, badge.as_ref(), left.into(), top.into());
        let mut png = Vec::new();
        code.write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
            .map_err(|e| CodeError(format!("cannot encode the code: {e}")))?;
        Ok(Self { png })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn the_logo_covers_the_centre_disc_and_leaves_the_rest_alone() {
        let black = Rgba([0, 0, 0, 255]);
        let code = RgbaImage::from_pixel(430, 430, black);
        let logo =
            PreparedLogo::prepare(&png(&RgbaImage::from_pixel(100, 100, Rgba([255, 0, 0, 255])))).unwrap();
        let branded = BrandedCode::from_sun_code(&png(&code), &logo).unwrap();
        let out = image::load_from_memory(&branded.png).unwrap().to_rgba8();
        assert_eq!(
            out.get_pixel(215, 215),
            &Rgba([255, 0, 0, 255]),
            "logo at the centre"
        );
        let (left, _, d) = centre_disc(430);
        assert_eq!(
            out.get_pixel(left + 1, 215)[0],
            255,
            "white ring at the disc's edge"
        );
        assert_eq!(out.get_pixel(left - 2, 215), &black, "outside the disc untouched");
        assert_eq!(out.get_pixel(10, 10), &black);
        assert_eq!(
            out.get_pixel(left + d / 10, left + d / 10),
            &black,
            "corners of the disc's box untouched"
        );
    }
}
