//! Drawing for `wgattn heatmap` and `wgattn mask`: an RGB canvas with bitmap text, the
//! viridis colormap, a figure of per-head panels ([`figure`]), PNG encoding.

pub mod figure;
pub mod font;
pub mod viridis;

use anyhow::{anyhow, Result};

/// An 8-bit sRGB colour.
pub type Rgb = [u8; 3];

/// The page.
pub const WHITE: Rgb = [255, 255, 255];
/// Text, ticks, frames.
pub const INK: Rgb = [32, 32, 32];
/// Masked (disallowed) positions: a neutral mid grey, in no colormap's range.
pub const MASKED: Rgb = [128, 128, 128];
/// A position whose probability is NaN.
pub const NAN: Rgb = [255, 0, 255];

/// A white RGB image that can be drawn on and encoded as PNG.
pub struct Canvas {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

impl Canvas {
    /// A `width` x `height` canvas filled with white.
    pub fn new(width: usize, height: usize) -> Canvas {
        Canvas {
            width,
            height,
            rgb: WHITE.repeat(width * height),
        }
    }

    /// Colours one pixel; pixels off the canvas are ignored.
    pub fn set(&mut self, x: usize, y: usize, c: Rgb) {
        if x < self.width && y < self.height {
            let i = (y * self.width + x) * 3;
            self.rgb[i..i + 3].copy_from_slice(&c);
        }
    }

    /// Fills the rectangle at `(x, y)` of size `w` x `h`, clipped to the canvas.
    pub fn fill(&mut self, x: usize, y: usize, w: usize, h: usize, c: Rgb) {
        for yy in y..(y + h).min(self.height) {
            for xx in x..(x + w).min(self.width) {
                self.set(xx, yy, c);
            }
        }
    }

    /// A one-pixel frame just outside the rectangle at `(x, y)` of size `w` x `h`.
    pub fn frame(&mut self, x: usize, y: usize, w: usize, h: usize, c: Rgb) {
        let (x0, y0) = (x.saturating_sub(1), y.saturating_sub(1));
        self.fill(x0, y0, w + 2, 1, c);
        self.fill(x0, y + h, w + 2, 1, c);
        self.fill(x0, y0, 1, h + 2, c);
        self.fill(x + w, y0, 1, h + 2, c);
    }

    /// Draws `s` with its top-left corner at `(x, y)`, each font pixel `scale` pixels wide.
    pub fn text(&mut self, x: usize, y: usize, s: &str, scale: usize, c: Rgb) {
        for (n, ch) in s.chars().enumerate() {
            let gx = x + n * font::ADVANCE * scale;
            for (row, bits) in font::glyph(ch).iter().enumerate() {
                for col in 0..font::WIDTH {
                    if bits & (1 << (font::WIDTH - 1 - col)) != 0 {
                        self.fill(gx + col * scale, y + row * scale, scale, scale, c);
                    }
                }
            }
        }
    }

    /// Draws `s` turned a quarter left (reading upwards), its bottom-left corner at `(x, y)`:
    /// the text occupies columns `x..x + font::HEIGHT` and rows up to `y`.
    pub fn text_up(&mut self, x: usize, y: usize, s: &str, c: Rgb) {
        for (n, ch) in s.chars().enumerate() {
            let base = n * font::ADVANCE;
            for (row, bits) in font::glyph(ch).iter().enumerate() {
                for col in 0..font::WIDTH {
                    if bits & (1 << (font::WIDTH - 1 - col)) != 0 {
                        if let Some(yy) = y.checked_sub(base + col) {
                            self.set(x + row, yy, c);
                        }
                    }
                }
            }
        }
    }

    /// The PNG file (8-bit RGB) with `texts` as `tEXt` chunks (keyword, value; printable
    /// ASCII, tabs and newlines are kept, anything else becomes `?`).
    pub fn to_png(&self, texts: &[(&str, String)]) -> Result<Vec<u8>> {
        let fail = |e: png::EncodingError| anyhow!("encoding the PNG: {e}");
        let mut bytes = Vec::new();
        let mut encoder = png::Encoder::new(&mut bytes, self.width as u32, self.height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::High);
        for (keyword, text) in texts {
            encoder
                .add_text_chunk(keyword.to_string(), ascii(text))
                .map_err(fail)?;
        }
        let mut writer = encoder.write_header().map_err(fail)?;
        writer.write_image_data(&self.rgb).map_err(fail)?;
        writer.finish().map_err(fail)?;
        Ok(bytes)
    }
}

/// `s` with every character outside printable ASCII (tabs and newlines kept) replaced by `?`.
fn ascii(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == '\n' || c == '\t' || (' '..='~').contains(&c) {
                c
            } else {
                '?'
            }
        })
        .collect()
}
