//! Checks of the pictures the embedding examples write (`tests/example_embed.rs`,
//! `tests/example_window.rs` include this file with `#[path]`): PNG decoding, and a picture
//! against the CPU reference's values coloured as the examples' colormap pass colours them.

use std::path::Path;

/// The RGBA8 pixels of the PNG at `path`, row by row, with its width and height.
pub fn read_png(path: &Path) -> (Vec<u8>, u32, u32) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("opening {path:?}: {e}"));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap_or_else(|e| panic!("decoding {path:?}: {e}"));
    let mut buf = vec![0; reader.output_buffer_size().expect("a PNG of sane size")];
    let info = reader.next_frame(&mut buf).expect("one frame");
    assert_eq!(
        (info.color_type, info.bit_depth),
        (png::ColorType::Rgba, png::BitDepth::Eight),
        "{path:?} is RGBA8"
    );
    buf.truncate(info.buffer_size());
    (buf, info.width, info.height)
}

/// Asserts that `rgba` (`width x height`) shows `values`, a `cols`-wide grid of values, each
/// drawn as `colour` gives it and scaled up by a whole factor (1 for the texture itself): the
/// centre pixel of each value's cell is within 2/255 of its colour in each channel, and
/// opaque; and the picture is not one flat colour. Returns the number of cells checked.
pub fn assert_shows(
    rgba: &[u8],
    (width, height): (u32, u32),
    values: &[f32],
    cols: usize,
    colour: impl Fn(f32) -> [u8; 3],
) -> usize {
    let (width, height) = (width as usize, height as usize);
    assert_eq!(rgba.len(), width * height * 4, "RGBA8, {width} x {height}");
    let rows = values.len() / cols;
    assert_eq!(values.len(), rows * cols, "whole rows of values");
    assert!(
        width % cols == 0 && height % rows == 0,
        "{width} x {height} is not a whole multiple of the {cols} x {rows} values"
    );
    let (sx, sy) = (width / cols, height / rows);
    let mut worst = (0, 0, [0u8; 4], [0u8; 3]);
    for (e, &x) in values.iter().enumerate() {
        let (px, py) = ((e % cols) * sx + sx / 2, (e / cols) * sy + sy / 2);
        let at = (py * width + px) * 4;
        let got: [u8; 4] = rgba[at..at + 4].try_into().unwrap();
        let want = colour(x);
        let off = (0..3).map(|c| got[c].abs_diff(want[c])).max().unwrap();
        if off > worst.0 {
            worst = (off, e, got, want);
        }
        assert_eq!(got[3], 255, "pixel ({px}, {py}) is opaque");
    }
    let (off, e, got, want) = worst;
    assert!(
        off <= 2,
        "value {e} (cell {}, {}) is {off}/255 off the reference's colour: {got:?} vs {want:?}",
        e % cols,
        e / cols
    );
    let first = &rgba[..4];
    assert!(
        rgba.chunks(4).any(|p| p != first),
        "one flat colour: the picture shows no data"
    );
    values.len()
}
