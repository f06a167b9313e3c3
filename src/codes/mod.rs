//! Branded codes: the connection's logo, clipped to a circle with a thin white ring, over the
//! centre disc of the sun code WeChat returns, or over the middle of a standard QR code the relay
//! draws itself (`link` connections). Both come out as small palette PNGs.

mod indexed;
mod logo;

pub use logo::{Badge, PreparedLogo};

use fast_qr::{ECL, QRBuilder};
use indexed::{BLACK, IndexedImage, WHITE, grey_lut};
use std::fmt;
use std::io::Cursor;
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

/// The centre disc of a sun code (where WeChat draws the mini-program's avatar), as a fraction
/// of the code's width: ≈0.449 measured on real codes. Per connection, `disc_ratio`; the
/// simulator draws its disc with this default.
pub const DEFAULT_DISC_RATIO: f32 = 0.45;
/// The most of a QR code's width a logo may cover (error correction H restores 30 %).
pub const LINK_LOGO_RATIO: f32 = 0.22;
/// Blank modules kept around a QR code, as the standard asks.
const QUIET_ZONE: usize = 4;
/// Link codes are drawn about this wide.
const LINK_TARGET_WIDTH: usize = 360;
// fdeflate's fast mode mostly codes runs of zero bytes, which a row filter makes of repeats.
// Measured (benches/codes.rs), a 430 px sun code: unfiltered 76 KB; `Up` (same as the row
// above) 19.1 KB in 0.71 ms a code, `Paeth` 18.8 KB in 0.78 ms. A link code, whose rows
// repeat and whose modules are runs of one index: unfiltered 57 KB, `Up` 10.4 KB, `Paeth`
// (which zeroes both) 5.5 KB, at ~0.17 ms either way.
const SUN_CODE_FILTER: png::Filter = png::Filter::Up;
const LINK_CODE_FILTER: png::Filter = png::Filter::Paeth;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeError(pub String);

impl fmt::Display for CodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodeError {}

/// The centre disc of a square code `width` px wide: (left, top, diameter).
pub fn centre_disc(width: u32, ratio: f32) -> (u32, u32, u32) {
    let diameter = ((width as f32 * ratio).round() as u32).clamp(1, width);
    let offset = (width - diameter) / 2;
    (offset, offset, diameter)
}

/// A finished code image, ready to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrandedCode {
    pub png: Vec<u8>,
}

impl BrandedCode {
    /// Pastes `logo` over the centre disc of a sun code (JPEG or PNG bytes, sniffed).
    pub fn sun_code(sun_code: &[u8], logo: &PreparedLogo, disc_ratio: f32) -> Result<Self, CodeError> {
        let (width, height, pixels) = decode_luma(sun_code, &grey_lut())?;
        let mut image = IndexedImage {
            width,
            height,
            pixels,
        };
        let (left, top, diameter) = centre_disc(width.min(height), disc_ratio);
        let badge = logo.badge(diameter);
        image.paint(&badge, left, top);
        Ok(Self {
            png: image.to_png(&badge.palette, SUN_CODE_FILTER)?,
        })
    }

    /// A standard QR code (error correction H) of `url`, with `logo` over its middle.
    pub fn link(url: &str, logo: &PreparedLogo) -> Result<Self, CodeError> {
        let qr = QRBuilder::new(url.as_bytes())
            .ecl(ECL::H)
            .build()
            .map_err(|e| CodeError(format!("cannot make a QR code of this link: {e:?}")))?;
        let modules = qr.size + 2 * QUIET_ZONE;
        let scale = (LINK_TARGET_WIDTH / modules).max(2);
        let width = modules * scale;
        let mut pixels = filled(width * width, WHITE);
        let mut row = vec![WHITE; width];
        for y in 0..qr.size {
            row.fill(WHITE);
            for x in 0..qr.size {
                if qr.data[y * qr.size + x].value() {
                    let start = (x + QUIET_ZONE) * scale;
                    row[start..start + scale].fill(BLACK);
                }
            }
            let top = (y + QUIET_ZONE) * scale;
            for line in pixels[top * width..(top + scale) * width].chunks_exact_mut(width) {
                line.copy_from_slice(&row);
            }
        }
        let width = width as u32;
        let mut image = IndexedImage {
            width,
            height: width,
            pixels,
        };
        let (left, top, diameter) = centre_disc(width, LINK_LOGO_RATIO);
        let badge = logo.badge(diameter);
        image.paint(&badge, left, top);
        Ok(Self {
            png: image.to_png(&badge.palette, LINK_CODE_FILTER)?,
        })
    }

    /// The same image as a JPEG (quality 90), for pages that ask for one.
    pub fn to_jpeg(png: &[u8]) -> Result<Vec<u8>, CodeError> {
        let image =
            image::load_from_memory(png).map_err(|e| CodeError(format!("cannot decode the code: {e}")))?;
        let mut out = Cursor::new(Vec::new());
        let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90);
        image
            .to_rgb8()
            .write_with_encoder(encoder)
            .map_err(|e| CodeError(format!("cannot encode the code: {e}")))?;
        Ok(out.into_inner())
    }
}

/// WeChat's codes are at most 1280 px wide; anything larger than this a side is refused before
/// it is decoded (a decompression bomb cannot make the relay allocate gigabytes).
const MAX_CODE_SIDE: usize = 2048;

/// Decodes a code image to luma, each pixel's mapped through `map` (the code's grey levels):
/// JPEG straight to luma (skipping colour conversion), PNG row by row, anything else through
/// `image`.
fn decode_luma(bytes: &[u8], map: &[u8; 256]) -> Result<(u32, u32, Vec<u8>), CodeError> {
    let unreadable = |e: &dyn fmt::Display| CodeError(format!("WeChat's code image cannot be decoded: {e}"));
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        let options = DecoderOptions::default()
            .jpeg_set_out_colorspace(ColorSpace::Luma)
            .set_max_width(MAX_CODE_SIDE)
            .set_max_height(MAX_CODE_SIDE);
        let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
        let luma = decoder.decode().map_err(|e| unreadable(&format!("{e:?}")))?;
        let info = decoder.info().ok_or_else(|| unreadable(&"no header"))?;
        return Ok((info.width.into(), info.height.into(), mapped(luma, map)));
    }
    if bytes.starts_with(b"\x89PNG") {
        return png_luma(bytes, map).map_err(|e| unreadable(&e));
    }
    let mut reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| unreadable(&e))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_CODE_SIDE as u32);
    limits.max_image_height = Some(MAX_CODE_SIDE as u32);
    limits.max_alloc = Some(CODE_DECODE_BYTES as u64);
    reader.limits(limits);
    let image = reader.decode().map_err(|e| unreadable(&e))?.to_luma8();
    Ok((image.width(), image.height(), mapped(image.into_raw(), map)))
}

fn mapped(mut luma: Vec<u8>, map: &[u8; 256]) -> Vec<u8> {
    for p in &mut luma {
        *p = map[*p as usize];
    }
    luma
}

/// What decoding one code image may allocate.
const CODE_DECODE_BYTES: usize = 64 * 1024 * 1024;

/// A PNG code (WeChat's with `is_hyaline`, and often without) to luma, with integer Rec. 709
/// weights and any transparency laid over white (the code's background): the `png` crate
/// straight to 8-bit samples, no float per pixel, and `map` applied as each pixel is converted.
fn png_luma(bytes: &[u8], map: &[u8; 256]) -> Result<(u32, u32, Vec<u8>), String> {
    // The header first (signature, IHDR's length and name, then width and height), so a
    // claimed size is refused before anything is read or allocated.
    let side = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let (Some(width), Some(height)) = (side(16), side(20)) else {
        return Err("the PNG header is cut short".into());
    };
    if width as usize > MAX_CODE_SIDE || height as usize > MAX_CODE_SIDE {
        return Err(format!("{width}×{height} px is larger than a code can be"));
    }
    let limits = png::Limits {
        bytes: CODE_DECODE_BYTES,
    };
    let mut decoder = png::Decoder::new_with_limits(Cursor::new(bytes), limits);
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    if reader.info().size() != (width, height) {
        return Err("the PNG header is inconsistent".into());
    }
    let (color, _) = reader.output_color_type();
    let width = width as usize;
    let mut out = filled(width * height as usize, 0);
    if reader.info().interlaced {
        // Adam7 rows come pass by pass: the whole frame first.
        let size = reader.output_buffer_size().ok_or("the image is too large")?;
        let mut samples = filled(size, 0);
        let frame = reader.next_frame(&mut samples).map_err(|e| e.to_string())?;
        let lines = samples[..frame.buffer_size()].chunks_exact(frame.line_size);
        for (line, luma) in lines.zip(out.chunks_exact_mut(width)) {
            row_to_luma(color, line, luma, map)?;
        }
    } else {
        // Row by row: no buffer the size of the decoded image (740 KB for a 430 px RGBA code).
        for luma in out.chunks_exact_mut(width) {
            let row = reader.next_row().map_err(|e| e.to_string())?;
            row_to_luma(color, row.ok_or("the image data is cut short")?.data(), luma, map)?;
        }
    }
    Ok((width as u32, height, out))
}

/// `len` bytes of `value`, written into memory the allocator hands back as it is. Not
/// `vec![0; len]`: for a zeroed block the size of a code (100–200 KB) jemalloc takes one freed
/// earlier and zeroes it by handing its pages back to the system (`madvise`), which makes the
/// kernel interrupt every core to drop the pages' mappings and then fault each page in again
/// — on a 2-core box one such "zeroing" per session start held both workers up, and bursts of
/// them made the longest waits of a sustained run (README, "No stalls"). Writing the bytes is
/// a few microseconds.
fn filled(len: usize, value: u8) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(len);
    bytes.resize(len, value);
    bytes
}

/// One decoded PNG row (8-bit samples of `color`) to luma, mapped through `map`.
fn row_to_luma(color: png::ColorType, line: &[u8], luma: &mut [u8], map: &[u8; 256]) -> Result<(), String> {
    // Integer weights; x / 255 rounded is (t + (t >> 8)) >> 8 with t = x + 128, exactly, for
    // every sum here (at most 255 · 255 + 128).
    let over_white = |luma: u32, alpha: u8| {
        let alpha = u32::from(alpha);
        let t = luma * alpha + 255 * (255 - alpha) + 128;
        ((t + (t >> 8)) >> 8) as u8
    };
    let rgb = |[r, g, b]: [u8; 3]| (54 * u32::from(r) + 183 * u32::from(g) + 19 * u32::from(b) + 128) >> 8;
    let map = |y: u8| map[y as usize];
    match color {
        png::ColorType::Grayscale => each_pixel(line, luma, |[y]: [u8; 1]| map(y)),
        png::ColorType::GrayscaleAlpha => each_pixel(line, luma, |[y, a]| map(over_white(y.into(), a))),
        png::ColorType::Rgb => each_pixel(line, luma, |p| map(rgb(p) as u8)),
        png::ColorType::Rgba => each_pixel(line, luma, |[r, g, b, a]| map(over_white(rgb([r, g, b]), a))),
        png::ColorType::Indexed => return Err("a palette survived expansion".into()),
    }
    Ok(())
}

/// `convert`s each `N`-byte pixel of `line` into `out`, reusing the last answer while pixels
/// repeat: a code is long runs of its background and of its ink, so this is mostly a compare.
fn each_pixel<const N: usize>(line: &[u8], out: &mut [u8], convert: impl Fn([u8; N]) -> u8) {
    let (pixels, _) = line.as_chunks::<N>();
    let Some(&first) = pixels.first() else {
        return;
    };
    let mut last = (first, convert(first));
    for (y, &pixel) in out.iter_mut().zip(pixels) {
        if pixel != last.0 {
            last = (pixel, convert(pixel));
        }
        *y = last.1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageFormat, Luma, Rgba, RgbaImage};

    /// Luma as it is.
    fn identity() -> [u8; 256] {
        std::array::from_fn(|n| n as u8)
    }

    fn encode(img: &image::DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), format).unwrap();
        out
    }

    fn red_logo() -> PreparedLogo {
        let red = image::DynamicImage::ImageRgba8(RgbaImage::from_pixel(100, 100, Rgba([255, 0, 0, 255])));
        PreparedLogo::prepare(&encode(&red, ImageFormat::Png)).unwrap()
    }

    #[test]
    fn the_logo_covers_the_centre_disc_and_leaves_the_rest_alone() {
        // A code of vertical stripes, as PNG and as JPEG.
        let stripes = image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(430, 430, |x, _| {
            if (x / 10) % 2 == 0 { Luma([0]) } else { Luma([255]) }
        }));
        for format in [ImageFormat::Png, ImageFormat::Jpeg] {
            let branded =
                BrandedCode::sun_code(&encode(&stripes, format), &red_logo(), DEFAULT_DISC_RATIO).unwrap();
            let out = image::load_from_memory(&branded.png).unwrap().to_rgba8();
            assert_eq!(
                out.get_pixel(215, 215),
                &Rgba([255, 0, 0, 255]),
                "logo at the centre ({format:?})"
            );
            let (left, _, d) = centre_disc(430, DEFAULT_DISC_RATIO);
            assert_eq!(
                out.get_pixel(left + 1, 215),
                &Rgba([255, 255, 255, 255]),
                "white ring at the disc's edge"
            );
            for (x, y) in [
                (5, 5),
                (left - 3, 215),
                (left + d / 10, left + d / 10),
                (425, 300),
            ] {
                let expected = if (x / 10) % 2 == 0 { 0 } else { 255 };
                let got = out.get_pixel(x, y)[0] as i32;
                assert!(
                    (got - expected).abs() <= 24,
                    "({x},{y}) outside the disc is the code: {got} ({format:?})"
                );
            }
        }
    }

    #[test]
    fn link_codes_decode_to_their_url_with_the_logo_in_place() {
        let url = "https://example.com/q/AbCdEfGhIjKlMnOpQrStUv";
        let code = BrandedCode::link(url, &red_logo()).unwrap();
        let image = image::load_from_memory(&code.png).unwrap().to_luma8();
        let mut prepared = rqrr::PreparedImage::prepare_from_greyscale(
            image.width() as usize,
            image.height() as usize,
            |x, y| image.get_pixel(x as u32, y as u32)[0],
        );
        let grids = prepared.detect_grids();
        assert_eq!(grids.len(), 1);
        let (_, content) = grids[0].decode().unwrap();
        assert_eq!(content, url);
        let rgba = image::load_from_memory(&code.png).unwrap().to_rgba8();
        let middle = rgba.width() / 2;
        assert_eq!(rgba.get_pixel(middle, middle), &Rgba([255, 0, 0, 255]));
        assert_eq!(
            rgba.get_pixel(2, 2),
            &Rgba([255, 255, 255, 255]),
            "the quiet zone is kept"
        );
    }

    #[test]
    fn codes_convert_to_jpeg() {
        let code = BrandedCode::link("https://example.com/q/x", &red_logo()).unwrap();
        let jpeg = BrandedCode::to_jpeg(&code.png).unwrap();
        assert!(jpeg.starts_with(&[0xFF, 0xD8, 0xFF]));
    }

    #[test]
    fn png_codes_become_luma_with_transparency_over_white() {
        let pixels = RgbaImage::from_fn(4, 1, |x, _| match x {
            0 => Rgba([255, 0, 0, 255]),
            1 => Rgba([0, 0, 0, 0]),
            2 => Rgba([0, 0, 0, 128]),
            _ => Rgba([255, 255, 255, 255]),
        });
        let png = encode(&image::DynamicImage::ImageRgba8(pixels), ImageFormat::Png);
        let (width, height, luma) = decode_luma(&png, &identity()).unwrap();
        assert_eq!((width, height), (4, 1));
        // Red by Rec. 709 (0.2126 · 255 ≈ 54); fully transparent is background (white); half
        // transparent black is mid grey; white stays white.
        assert_eq!(luma, vec![54, 255, 127, 255]);
    }

    #[test]
    fn interlaced_png_codes_decode_row_for_row_like_plain_ones() {
        // 12 × 10 RGB, Adam7: rows of a gradient with a red stripe, written pass by pass (made
        // with Python's zlib; neither `png` nor `image` writes Adam7).
        let png = include_bytes!("testdata/interlaced.png");
        let (width, height, luma) = decode_luma(png, &identity()).unwrap();
        let expected = image::load_from_memory(png).unwrap().to_luma8();
        assert_eq!((width, height), expected.dimensions());
        for (ours, theirs) in luma.iter().zip(expected.as_raw()) {
            assert!(ours.abs_diff(*theirs) <= 1, "{luma:?}\n{:?}", expected.as_raw());
        }
        assert!(luma[..12] != luma[12..24], "the rows differ");
    }

    #[test]
    fn a_corrupt_code_image_is_an_error_not_a_panic() {
        assert!(BrandedCode::sun_code(b"\xFF\xD8\xFFgarbage", &red_logo(), 0.45).is_err());
        assert!(BrandedCode::sun_code(b"nothing", &red_logo(), 0.45).is_err());
    }
}
