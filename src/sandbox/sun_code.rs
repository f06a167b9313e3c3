//! The simulator's sun code: WeChat's look (rays around a centre disc holding the app's
//! avatar, three "eyes"), drawn from a hash of the scene so every scene looks different. It
//! cannot be scanned: nothing but WeChat can make a real one.

use crate::codes::{DEFAULT_DISC_RATIO, centre_disc};
use image::{Rgba, RgbaImage};
use sha2::{Digest, Sha256};
use std::f32::consts::PI;

const RAYS: usize = 64;
const WECHAT_GREEN: Rgba<u8> = Rgba([7, 193, 96, 255]);

pub fn draw(scene: &str, width: u32, hyaline: bool, line: [u8; 3]) -> RgbaImage {
    let background = if hyaline {
        Rgba([255, 255, 255, 0])
    } else {
        Rgba([255, 255, 255, 255])
    };
    let ink = Rgba([line[0], line[1], line[2], 255]);
    let w = width as f32;
    let centre = w / 2.0;
    let (_, _, disc) = centre_disc(width, DEFAULT_DISC_RATIO);
    let disc_r = disc as f32 / 2.0;
    let digest = Sha256::digest(scene.as_bytes());
    let lengths: Vec<f32> = (0..RAYS)
        .map(|i| 0.04 + (digest[i % 32] >> (i / 32 * 4) & 0x0f) as f32 / 15.0 * 0.17)
        .collect();
    let ray_start = disc_r + w * 0.03;
    let longest = lengths.iter().copied().fold(0.0, f32::max) * w;
    let half_thickness = (w / 110.0).max(1.5);
    let eye_r = w * 0.075;
    // Top-left, top-right and bottom-left, as on WeChat's codes.
    let a = w * 0.26;
    let eyes = [
        (centre - a, centre - a),
        (centre + a, centre - a),
        (centre - a, centre + a),
    ];

    RgbaImage::from_fn(width, width, |x, y| {
        let dx = x as f32 + 0.5 - centre;
        let dy = y as f32 + 0.5 - centre;
        let r = (dx * dx + dy * dy).sqrt();
        if r <= disc_r {
            // The mini-program's avatar: a green disc with a white dot, which the relay's logo covers.
            return if r <= disc_r * 0.35 {
                Rgba([255, 255, 255, 255])
            } else {
                WECHAT_GREEN
            };
        }
        for (ex, ey) in eyes {
            let d = ((x as f32 - ex).powi(2) + (y as f32 - ey).powi(2)).sqrt();
            if d <= eye_r {
                let ring = d > eye_r * 0.7 || d < eye_r * 0.4;
                return if ring { ink } else { background };
            }
        }
        // Outside the ring the rays can reach nothing is drawn: no angle to work out (about half
        // the pixels; the image is the same).
        if r < ray_start || r > ray_start + longest {
            return background;
        }
        let theta = dy.atan2(dx).rem_euclid(2.0 * PI);
        let step = 2.0 * PI / RAYS as f32;
        let index = ((theta / step).round() as usize) % RAYS;
        let off_axis = r * (theta - index as f32 * step).sin().abs();
        let end = ray_start + lengths[index] * w;
        if off_axis <= half_thickness && r >= ray_start && r <= end {
            ink
        } else {
            background
        }
    })
}
