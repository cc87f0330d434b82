//! Pictures: big, flat, solid shapes on a plain light background, rasterised without
//! antialiasing.
//!
//! Why so plain: the frozen CLIP of the tiny preset sees 7x7 patches of 32 px and keeps only a
//! couple of CLS vectors, so colour, kind, count and position must be coarse, high-contrast
//! signals. Shapes have roughly equal areas, so "which shape" is decided by form, not size, and
//! "how many" is proportional to coloured area.

use crate::rng::Rng;
use image::{Rgb, RgbImage};

/// Side of every picture, in pixels (CLIP's input size, so no resampling is needed).
pub const SIZE: u32 = 224;

/// Colours a shape can have, with their names (as used in questions and choices).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colour {
    Red,
    Green,
    Blue,
    Yellow,
    Purple,
}

impl Colour {
    pub const ALL: [Colour; 5] = [
        Colour::Red,
        Colour::Green,
        Colour::Blue,
        Colour::Yellow,
        Colour::Purple,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Yellow => "yellow",
            Colour::Purple => "purple",
        }
    }

    /// Saturated values far apart in RGB (every pair differs by >= 120 in some channel).
    fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [220, 30, 30],
            Colour::Green => [30, 160, 50],
            Colour::Blue => [30, 70, 230],
            Colour::Yellow => [245, 205, 20],
            Colour::Purple => [140, 40, 170],
        }
    }
}

/// Forms a shape can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Circle,
    Square,
    Triangle,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Circle, Kind::Square, Kind::Triangle];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Circle => "circle",
            Kind::Square => "square",
            Kind::Triangle => "triangle",
        }
    }
}

/// One shape: centre (pixels) and size `r`. A circle has radius `r`; a square and a triangle
/// are scaled to about the circle's area (square half-side 0.886 r, triangle half-base 1.25 r
/// and height 2.5 r).
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub kind: Kind,
    pub colour: Colour,
    pub cx: i32,
    pub cy: i32,
    pub r: i32,
}

impl Shape {
    /// Whether the pixel centre (x + 0.5, y + 0.5) is inside the shape.
    fn contains(&self, x: i32, y: i32) -> bool {
        let px = x as f64 + 0.5 - self.cx as f64;
        let py = y as f64 + 0.5 - self.cy as f64;
        let r = self.r as f64;
        match self.kind {
            Kind::Circle => px * px + py * py <= r * r,
            Kind::Square => {
                let h = 0.886 * r;
                px.abs() <= h && py.abs() <= h
            }
            Kind::Triangle => {
                // Apex up, centred vertically on cy.
                let (half_base, height) = (1.25 * r, 2.5 * r);
                let top = -height / 2.0;
                let t = (py - top) / height; // 0 at the apex, 1 at the base
                (0.0..=1.0).contains(&t) && px.abs() <= t * half_base
            }
        }
    }

    /// Half of the shape's bounding box (pixels), for keeping shapes inside the picture.
    pub fn extent(kind: Kind, r: i32) -> i32 {
        match kind {
            Kind::Circle => r,
            Kind::Square => (0.886 * r as f64).ceil() as i32,
            Kind::Triangle => (1.25 * r as f64).ceil() as i32,
        }
    }
}

/// Plain light backgrounds with their caption words.
const BACKGROUNDS: [([u8; 3], &str); 4] = [
    ([255, 255, 255], "white"),
    ([232, 232, 232], "gray"),
    ([250, 244, 228], "cream"),
    ([228, 238, 250], "light blue"),
];

/// A picture: background plus shapes drawn in order.
#[derive(Debug, Clone)]
pub struct Scene {
    background: usize,
    pub shapes: Vec<Shape>,
}

impl Scene {
    /// An empty scene on a random background.
    pub fn new(rng: &mut Rng) -> Self {
        Scene {
            background: rng.below(BACKGROUNDS.len()),
            shapes: Vec::new(),
        }
    }

    /// An empty scene on white. Used where the shapes' area must be comparable across
    /// pictures (counting), so the background adds no variation.
    pub fn on_white() -> Self {
        Scene {
            background: 0,
            shapes: Vec::new(),
        }
    }

    pub fn background_name(&self) -> &'static str {
        BACKGROUNDS[self.background].1
    }

    /// Rasterises the scene (no antialiasing: flat colours compress well and stay unambiguous).
    pub fn render(&self) -> RgbImage {
        let mut img = RgbImage::from_pixel(SIZE, SIZE, Rgb(BACKGROUNDS[self.background].0));
        for s in &self.shapes {
            let e = Shape::extent(s.kind, s.r) + 1;
            let x0 = (s.cx - e).max(0);
            let x1 = (s.cx + e).min(SIZE as i32 - 1);
            let y0 = (s.cy - e - s.r).max(0);
            let y1 = (s.cy + e + s.r).min(SIZE as i32 - 1);
            for y in y0..=y1 {
                for x in x0..=x1 {
                    if s.contains(x, y) {
                        img.put_pixel(x as u32, y as u32, Rgb(s.colour.rgb()));
                    }
                }
            }
        }
        img
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_have_similar_areas() {
        let area = |kind| {
            let s = Shape {
                kind,
                colour: Colour::Red,
                cx: 112,
                cy: 112,
                r: 40,
            };
            let mut n = 0;
            for y in 0..224 {
                for x in 0..224 {
                    n += s.contains(x, y) as i32;
                }
            }
            n as f64
        };
        let c = area(Kind::Circle);
        for k in [Kind::Square, Kind::Triangle] {
            let ratio = area(k) / c;
            assert!((0.9..1.1).contains(&ratio), "{k:?} area ratio {ratio}");
        }
    }
}
