//! The simulator's sun code: WeChat's look (rays around a centre disc holding the app's
//! avatar, three "eyes"), drawn from a hash of the scene so every scene looks different. It
//! cannot be scanned: nothing but WeChat can make a real one.
//!
//! Where the disc, the eyes and each ray's line fall depends only on the width; a scene only
//! picks how far each ray reaches. So a [`Layout`] works out every pixel's part once per width
//! (angles and roots), and drawing a scene is one pass that looks its pixels up.

use crate::codes::{DEFAULT_DISC_RATIO, centre_disc};
use image::{Rgba, RgbaImage};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::f32::consts::PI;
use std::sync::{Arc, Mutex, MutexGuard};

const RAYS: usize = 64;
const WECHAT_GREEN: Rgba<u8> = Rgba([7, 193, 96, 255]);
/// The shortest and longest a ray may reach, as fractions of the width.
const SHORTEST_RAY: f32 = 0.04;
const RAY_SPREAD: f32 = 0.17;
/// Layouts kept: a 430 px one is 1.5 MB, a 1280 px one 13 MB; a width past these is laid out
/// for its one code.
const LAYOUTS_KEPT: usize = 4;

/// What a pixel of a sun code is, whatever the scene.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Part {
    Background,
    Ink,
    Avatar,
    AvatarDot,
    /// On the line of ray `index`, `r` from the centre: ink if the scene's ray reaches it.
    Ray {
        index: u8,
        r: f32,
    },
}

/// Every pixel's part of a sun code `width` px wide.
pub struct Layout {
    width: u32,
    ray_start: f32,
    parts: Vec<Part>,
}

impl Layout {
    pub fn new(width: u32) -> Self {
        let w = width as f32;
        let centre = w / 2.0;
        let (_, _, disc) = centre_disc(width, DEFAULT_DISC_RATIO);
        let disc_r = disc as f32 / 2.0;
        let ray_start = disc_r + w * 0.03;
        let farthest = ray_start + (SHORTEST_RAY + RAY_SPREAD) * w;
        let half_thickness = (w / 110.0).max(1.5);
        let eye_r = w * 0.075;
        // Top-left, top-right and bottom-left, as on WeChat's codes.
        let a = w * 0.26;
        let eyes = [
            (centre - a, centre - a),
            (centre + a, centre - a),
            (centre - a, centre + a),
        ];
        let step = 2.0 * PI / RAYS as f32;
        let part = |x: u32, y: u32| {
            let dx = x as f32 + 0.5 - centre;
            let dy = y as f32 + 0.5 - centre;
            let r = (dx * dx + dy * dy).sqrt();
            if r <= disc_r {
                // The mini-program's avatar: a green disc with a white dot, which the relay's
                // logo covers.
                return if r <= disc_r * 0.35 {
                    Part::AvatarDot
                } else {
                    Part::Avatar
                };
            }
            for (ex, ey) in eyes {
                let d = ((x as f32 - ex).powi(2) + (y as f32 - ey).powi(2)).sqrt();
                if d <= eye_r {
                    let ring = d > eye_r * 0.7 || d < eye_r * 0.4;
                    return if ring { Part::Ink } else { Part::Background };
                }
            }
            if r < ray_start || r > farthest {
                return Part::Background;
            }
            let theta = dy.atan2(dx).rem_euclid(2.0 * PI);
            let index = ((theta / step).round() as usize) % RAYS;
            let off_axis = r * (theta - index as f32 * step).sin().abs();
            if off_axis <= half_thickness {
                Part::Ray {
                    index: index as u8,
                    r,
                }
            } else {
                Part::Background
            }
        };
        let parts = (0..width)
            .flat_map(|y| (0..width).map(move |x| (x, y)))
            .map(|(x, y)| part(x, y))
            .collect();
        Self {
            width,
            ray_start,
            parts,
        }
    }

    /// The code of `scene`: rays as long as its hash says, in `line`'s colour, on white (or
    /// on transparent with `hyaline`).
    pub fn draw(&self, scene: &str, hyaline: bool, line: [u8; 3]) -> RgbaImage {
        let background = if hyaline {
            Rgba([255, 255, 255, 0])
        } else {
            Rgba([255, 255, 255, 255])
        };
        let ink = Rgba([line[0], line[1], line[2], 255]);
        let w = self.width as f32;
        let digest = Sha256::digest(scene.as_bytes());
        let ends: Vec<f32> = (0..RAYS)
            .map(|i| {
                let length =
                    SHORTEST_RAY + (digest[i % 32] >> (i / 32 * 4) & 0x0f) as f32 / 15.0 * RAY_SPREAD;
                self.ray_start + length * w
            })
            .collect();
        let mut image = RgbaImage::new(self.width, self.width);
        for (pixel, part) in image.pixels_mut().zip(&self.parts) {
            *pixel = match *part {
                Part::Background => background,
                Part::Ink => ink,
                Part::Avatar => WECHAT_GREEN,
                Part::AvatarDot => Rgba([255, 255, 255, 255]),
                Part::Ray { index, r } if r <= ends[index as usize] => ink,
                Part::Ray { .. } => background,
            };
        }
        image
    }
}

/// The layouts of the widths asked for so far (the first `LAYOUTS_KEPT` of them).
#[derive(Default)]
pub struct Layouts(Mutex<HashMap<u32, Arc<Layout>>>);

impl Layouts {
    pub fn of(&self, width: u32) -> Arc<Layout> {
        if let Some(layout) = self.kept().get(&width) {
            return layout.clone();
        }
        // Worked out with the map unlocked: other widths' codes are not held up meanwhile.
        let layout = Arc::new(Layout::new(width));
        let mut layouts = self.kept();
        if layouts.len() < LAYOUTS_KEPT {
            return layouts.entry(width).or_insert(layout).clone();
        }
        layout
    }

    fn kept(&self) -> MutexGuard<'_, HashMap<u32, Arc<Layout>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One sun code, its layout worked out for it alone.
pub fn draw(scene: &str, width: u32, hyaline: bool, line: [u8; 3]) -> RgbaImage {
    Layout::new(width).draw(scene, hyaline, line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_width_is_laid_out_once_and_only_the_first_few_widths_are_kept() {
        let layouts = Layouts::default();
        let first = layouts.of(280);
        assert!(Arc::ptr_eq(&first, &layouts.of(280)), "the same layout again");
        for width in 281..280 + LAYOUTS_KEPT as u32 {
            layouts.of(width);
        }
        let past = 280 + LAYOUTS_KEPT as u32;
        assert!(
            !Arc::ptr_eq(&layouts.of(past), &layouts.of(past)),
            "laid out for each code"
        );
        assert_eq!(layouts.kept().len(), LAYOUTS_KEPT);
    }

    #[test]
    fn scenes_differ_and_a_scene_is_drawn_the_same_each_time() {
        let layout = Layout::new(300);
        let one = layout.draw("scene-one", false, [0, 0, 0]);
        assert_eq!(one, layout.draw("scene-one", false, [0, 0, 0]));
        assert_eq!(one, draw("scene-one", 300, false, [0, 0, 0]));
        assert_ne!(one, layout.draw("scene-two", false, [0, 0, 0]));
    }
}
