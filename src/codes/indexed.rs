//! Palette images: a code is 16 grey levels (the code's lines, quantized, which also clears
//! JPEG noise) plus the badge's colours, written as an 8-bit indexed PNG with a fast deflate.
//! Small and quick to write, since every pixel is one byte.

use super::CodeError;
use super::logo::Badge;

/// Grey levels 0 (white) to 15 (black) come first in every palette.
pub const GREYS: u8 = 16;
pub const WHITE: u8 = 0;
pub const BLACK: u8 = GREYS - 1;

/// Luma → grey-level index.
pub fn grey_lut() -> [u8; 256] {
    let mut lut = [0u8; 256];
    for (luma, level) in lut.iter_mut().enumerate() {
        *level = (((255 - luma) * (GREYS as usize - 1) + 127) / 255) as u8;
    }
    lut
}

/// A palette image under construction: `width` × `height` indices.
pub struct IndexedImage {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

impl IndexedImage {
    /// Paints `badge` with its top-left corner at (`left`, `top`). Where its edge is soft, the
    /// ring's white is blended with the grey beneath.
    pub fn paint(&mut self, badge: &Badge, left: u32, top: u32) {
        let d = badge.diameter as usize;
        for by in 0..d {
            let y = top as usize + by;
            if y >= self.height as usize {
                break;
            }
            let row = y * self.width as usize + left as usize;
            for bx in 0..d.min(self.width as usize - left as usize) {
                let alpha = badge.alpha[by * d + bx] as usize;
                let target = &mut self.pixels[row + bx];
                if alpha == 255 {
                    *target = GREYS + badge.index[by * d + bx];
                } else if alpha > 0 && *target < GREYS {
                    // The level beneath, pulled towards white by the ring's coverage.
                    *target = ((*target as usize * (255 - alpha) + 127) / 255) as u8;
                }
            }
        }
    }

    /// Encodes as an indexed PNG with the greys and then `badge_palette`, each row `filter`ed.
    pub fn to_png(&self, badge_palette: &[[u8; 3]], filter: png::Filter) -> Result<Vec<u8>, CodeError> {
        let mut palette = Vec::with_capacity(3 * (GREYS as usize + badge_palette.len()));
        for level in 0..GREYS as usize {
            let v = (255 - level * 255 / (GREYS as usize - 1)) as u8;
            palette.extend_from_slice(&[v, v, v]);
        }
        for colour in badge_palette {
            palette.extend_from_slice(colour);
        }
        let mut out = Vec::with_capacity(self.pixels.len() / 4);
        let mut encoder = png::Encoder::new(&mut out, self.width, self.height);
        encoder.set_color(png::ColorType::Indexed);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_palette(palette);
        encoder.set_compression(png::Compression::Fast);
        encoder.set_filter(filter);
        let fail = |e: png::EncodingError| CodeError(format!("cannot encode the code: {e}"));
        let mut writer = encoder.write_header().map_err(fail)?;
        writer.write_image_data(&self.pixels).map_err(fail)?;
        writer.finish().map_err(fail)?;
        Ok(out)
    }
}
