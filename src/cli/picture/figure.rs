//! A figure of per-head panels: a title, a grid of panels (keys across, queries down) with
//! ticked axes, and a key (a colorbar, or a legend of swatches), each masked position in the
//! neutral [`MASKED`] grey. Long axes are max-pooled to fit a pixel budget; short ones are
//! scaled up by an integer cell size.
//!
//! The PNG carries its geometry as `tEXt` chunks (`wgattn-panels`: one line per panel,
//! `x y cell_w cell_h rows cols` then a tab and the label; `wgattn-title`: `x y w h`), so a
//! program (the tests) can find the cell of a position without re-deriving the layout.

use super::font::{self, text_width};
use super::viridis::viridis;
use super::{Canvas, Rgb, INK, MASKED, NAN};

/// The largest cell, in pixels, for small sequences.
const MAX_CELL: usize = 24;
/// The least extent of a panel axis, in pixels (a 1-query panel is a strip this tall).
const MIN_EXTENT: usize = 48;
const MARGIN: usize = 12;
const TICK: usize = 3;
/// One line of text at scale 1, with leading.
const LINE: usize = font::HEIGHT + 3;
const TITLE_SCALE: usize = 2;
const KEY_BAR_WIDTH: usize = 14;
const GRID_LINE: Rgb = [64, 64, 64];

/// How `rows` x `cols` positions (queries x keys) become cells of pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pooling {
    /// Source positions pooled into one cell, down and across.
    pub row_factor: usize,
    pub col_factor: usize,
    /// Cells down and across.
    pub out_rows: usize,
    pub out_cols: usize,
    /// Pixels per cell.
    pub cell_w: usize,
    pub cell_h: usize,
}

impl Pooling {
    /// Fits `rows` x `cols` positions in `budget` pixels a side: an axis longer than the
    /// budget is max-pooled by the least factor that fits; cells are square, an integer
    /// number of pixels up to [`MAX_CELL`], except that an axis shorter than
    /// [`MIN_EXTENT`] (or the budget) is stretched to it.
    pub fn new(rows: usize, cols: usize, budget: usize) -> Pooling {
        let (rows, cols, budget) = (rows.max(1), cols.max(1), budget.max(1));
        let row_factor = rows.div_ceil(budget);
        let col_factor = cols.div_ceil(budget);
        let out_rows = rows.div_ceil(row_factor);
        let out_cols = cols.div_ceil(col_factor);
        let cell = (budget / out_rows.max(out_cols)).clamp(1, MAX_CELL);
        let least = MIN_EXTENT.min(budget);
        let stretch = |n: usize| cell.max(least.div_ceil(n));
        Pooling {
            row_factor,
            col_factor,
            out_rows,
            out_cols,
            cell_w: stretch(out_cols),
            cell_h: stretch(out_rows),
        }
    }

    /// The cells of one panel: each the maximum of the allowed values it covers (`None`
    /// where every position it covers is masked; NaN wins over numbers).
    pub fn pool(
        &self,
        rows: usize,
        cols: usize,
        value: impl Fn(usize, usize) -> Option<f32>,
    ) -> Vec<Option<f32>> {
        let mut cells: Vec<Option<f32>> = vec![None; self.out_rows * self.out_cols];
        for r in 0..rows {
            let base = (r / self.row_factor) * self.out_cols;
            for c in 0..cols {
                if let Some(v) = value(r, c) {
                    let cell = &mut cells[base + c / self.col_factor];
                    *cell = Some(match *cell {
                        None => v,
                        Some(old) if old.is_nan() || v.is_nan() => f32::NAN,
                        Some(old) => old.max(v),
                    });
                }
            }
        }
        cells
    }

    /// `max-pooled N:1` (naming the axis when only one, or each when they differ), or
    /// `None` at full resolution.
    pub fn note(&self) -> Option<String> {
        match (self.row_factor, self.col_factor) {
            (1, 1) => None,
            (r, c) if r == c => Some(format!("max-pooled {r}:1")),
            (1, c) => Some(format!("max-pooled {c}:1 (keys)")),
            (r, 1) => Some(format!("max-pooled {r}:1 (queries)")),
            (r, c) => Some(format!("max-pooled {r}:1 (queries), {c}:1 (keys)")),
        }
    }
}

/// One panel: a label above it and its pooled cells, `out_rows` x `out_cols` row-major.
pub struct Panel {
    pub label: String,
    pub cells: Vec<Option<f32>>,
}

/// What a cell's value means.
pub enum Key {
    /// Values `0..=vmax` through viridis, shown as a colorbar with ticks.
    Colorbar { vmax: f32, label: String },
    /// Every value is one colour, named by a swatch (a mask: allowed).
    Legend { colour: Rgb, label: String },
}

pub struct Figure {
    /// The first line, drawn large.
    pub title: String,
    /// Lines under it.
    pub subtitle: Vec<String>,
    /// Source positions of every panel: queries (down) and keys (across).
    pub rows: usize,
    pub cols: usize,
    /// The query index of row 0 (a `--query-range` start), for the tick labels.
    pub first_row: usize,
    pub pooling: Pooling,
    pub panels: Vec<Panel>,
    pub key: Key,
    /// One-pixel lines between cells, where cells are large enough (mask pictures).
    pub grid_lines: bool,
}

/// Where one panel's cells landed.
struct Placed {
    x: usize,
    y: usize,
}

impl Figure {
    /// The colour of a cell.
    fn colour(&self, cell: Option<f32>) -> Rgb {
        match (cell, &self.key) {
            (None, _) => MASKED,
            (Some(v), _) if v.is_nan() => NAN,
            (Some(v), Key::Colorbar { vmax, .. }) => viridis(v / vmax),
            (Some(_), Key::Legend { colour, .. }) => *colour,
        }
    }

    /// Draws the figure; returns the PNG file.
    pub fn to_png(&self) -> anyhow::Result<Vec<u8>> {
        let p = self.pooling;
        let (pw, ph) = (p.out_cols * p.cell_w, p.out_rows * p.cell_h);
        let x_ticks = ticks(0, self.cols, p.col_factor, p.cell_w, label_room(self.cols));
        let y_ticks = ticks(self.first_row, self.rows, p.row_factor, p.cell_h, 2 * LINE);
        let y_label_w = y_ticks
            .iter()
            .map(|&(i, _)| text_width(&i.to_string(), 1))
            .max()
            .unwrap_or(0);
        // A panel's slot: caption and tick labels at the left, label above, ticks below.
        let left = font::HEIGHT + 4 + y_label_w + TICK + 3;
        let top = LINE + 3;
        let bottom = TICK + 2 + LINE + LINE + 4;
        let slot_w = left + pw.max(text_width("key", 1)) + 16;
        let slot_h = top + ph + bottom;
        let n = self.panels.len().max(1);
        let grid_cols = (1..=n).find(|c| c * c >= n).unwrap_or(n);
        let grid_rows = n.div_ceil(grid_cols);
        let panel_label_w = self
            .panels
            .iter()
            .map(|panel| text_width(&panel.label, 1))
            .max()
            .unwrap_or(0);
        let slot_w = slot_w.max(left + panel_label_w + 8);

        let title_h = 2 * font::HEIGHT + 6 + self.subtitle.len() * LINE;
        let title_w = self
            .subtitle
            .iter()
            .map(|s| text_width(s, 1))
            .chain([text_width(&self.title, TITLE_SCALE)])
            .max()
            .unwrap_or(0);
        let key_entries = self.key_entries();
        let (key_w, key_h) = self.key_size(ph, &key_entries);
        let grid_w = grid_cols * slot_w;
        let width = (2 * MARGIN + title_w).max(2 * MARGIN + grid_w + key_w);
        let grid_y = MARGIN + title_h + 8;
        let height = grid_y + (grid_rows * slot_h).max(key_h) + MARGIN;

        let mut canvas = Canvas::new(width, height);
        canvas.text(MARGIN, MARGIN, &self.title, TITLE_SCALE, INK);
        for (k, line) in self.subtitle.iter().enumerate() {
            let y = MARGIN + 2 * font::HEIGHT + 6 + k * LINE;
            canvas.text(MARGIN, y, line, 1, INK);
        }

        let mut placed = Vec::new();
        for (k, panel) in self.panels.iter().enumerate() {
            let sx = MARGIN + (k % grid_cols) * slot_w;
            let sy = grid_y + (k / grid_cols) * slot_h;
            let (x, y) = (sx + left, sy + top);
            canvas.text(x, sy, &panel.label, 1, INK);
            self.draw_cells(&mut canvas, panel, x, y);
            canvas.frame(x, y, pw, ph, INK);
            for &(i, off) in &x_ticks {
                canvas.fill(x + off, y + ph + 1, 1, TICK, INK);
                let s = i.to_string();
                let lx = (x + off).saturating_sub(text_width(&s, 1) / 2);
                canvas.text(lx, y + ph + 2 + TICK, &s, 1, INK);
            }
            let caption_y = y + ph + 2 + TICK + LINE;
            canvas.text(
                x + pw.saturating_sub(text_width("key", 1)) / 2,
                caption_y,
                "key",
                1,
                INK,
            );
            for &(i, off) in &y_ticks {
                canvas.fill(x - 1 - TICK, y + off, TICK, 1, INK);
                let s = i.to_string();
                let lx = x - 2 - TICK - text_width(&s, 1) - 1;
                canvas.text(
                    lx,
                    (y + off).saturating_sub(font::HEIGHT / 2 - 1),
                    &s,
                    1,
                    INK,
                );
            }
            let caption_bottom = y + (ph + text_width("query", 1)) / 2;
            canvas.text_up(
                sx,
                caption_bottom.max(y + text_width("query", 1)),
                "query",
                INK,
            );
            placed.push(Placed { x, y });
        }
        self.draw_key(&mut canvas, MARGIN + grid_w, grid_y + top, ph, &key_entries);

        let panels: Vec<String> = placed
            .iter()
            .zip(&self.panels)
            .map(|(at, panel)| {
                format!(
                    "{} {} {} {} {} {}\t{}",
                    at.x, at.y, p.cell_w, p.cell_h, p.out_rows, p.out_cols, panel.label
                )
            })
            .collect();
        let mut title = vec![self.title.clone()];
        title.extend(self.subtitle.iter().cloned());
        canvas.to_png(&[
            ("Title", title.join("\n")),
            ("Software", format!("wgattn {}", env!("CARGO_PKG_VERSION"))),
            ("wgattn-panels", panels.join("\n")),
            (
                "wgattn-title",
                format!("{MARGIN} {MARGIN} {title_w} {title_h}"),
            ),
        ])
    }

    fn draw_cells(&self, canvas: &mut Canvas, panel: &Panel, x: usize, y: usize) {
        let p = self.pooling;
        let lines = self.grid_lines && p.cell_w >= 6 && p.cell_h >= 6;
        for r in 0..p.out_rows {
            for c in 0..p.out_cols {
                let colour = self.colour(panel.cells[r * p.out_cols + c]);
                let (cx, cy) = (x + c * p.cell_w, y + r * p.cell_h);
                canvas.fill(cx, cy, p.cell_w, p.cell_h, colour);
                if lines {
                    if c > 0 {
                        canvas.fill(cx, cy, 1, p.cell_h, GRID_LINE);
                    }
                    if r > 0 {
                        canvas.fill(cx, cy, p.cell_w, 1, GRID_LINE);
                    }
                }
            }
        }
    }

    /// The swatches under the colorbar (or the legend): the key's own, masked, and NaN when
    /// a panel holds one.
    fn key_entries(&self) -> Vec<(Rgb, String)> {
        let mut entries = Vec::new();
        if let Key::Legend { colour, label } = &self.key {
            entries.push((*colour, label.clone()));
        }
        entries.push((MASKED, "masked".to_string()));
        let any_nan = self
            .panels
            .iter()
            .any(|panel| panel.cells.iter().any(|c| c.is_some_and(f32::is_nan)));
        if any_nan {
            entries.push((NAN, "NaN".to_string()));
        }
        entries
    }

    fn bar_height(ph: usize) -> usize {
        ph.clamp(96, 320)
    }

    fn key_size(&self, ph: usize, entries: &[(Rgb, String)]) -> (usize, usize) {
        let swatch_w = entries
            .iter()
            .map(|(_, s)| KEY_BAR_WIDTH + 4 + text_width(s, 1))
            .max()
            .unwrap_or(0);
        let swatches_h = entries.len() * (KEY_BAR_WIDTH + 4);
        match &self.key {
            Key::Colorbar { vmax, label } => {
                let labels = colorbar_ticks(*vmax)
                    .iter()
                    .map(|(_, s)| text_width(s, 1))
                    .max()
                    .unwrap_or(0);
                let w = (KEY_BAR_WIDTH + TICK + 3 + labels)
                    .max(text_width(label, 1))
                    .max(swatch_w);
                let h = LINE + Self::bar_height(ph) + 12 + swatches_h;
                (w + 16, LINE + 3 + h)
            }
            Key::Legend { .. } => (swatch_w + 16, LINE + 3 + swatches_h),
        }
    }

    fn draw_key(
        &self,
        canvas: &mut Canvas,
        x: usize,
        y: usize,
        ph: usize,
        entries: &[(Rgb, String)],
    ) {
        let mut y = y;
        if let Key::Colorbar { vmax, label } = &self.key {
            canvas.text(x, y - LINE - 3, label, 1, INK);
            let h = Self::bar_height(ph);
            for row in 0..h {
                let t = 1.0 - row as f32 / (h - 1) as f32;
                canvas.fill(x, y + row, KEY_BAR_WIDTH, 1, viridis(t));
            }
            canvas.frame(x, y, KEY_BAR_WIDTH, h, INK);
            for (v, s) in colorbar_ticks(*vmax) {
                let ty = y + ((1.0 - v / vmax) * (h - 1) as f32).round() as usize;
                canvas.fill(x + KEY_BAR_WIDTH + 1, ty, TICK, 1, INK);
                let ly = ty.saturating_sub(font::HEIGHT / 2 - 1);
                canvas.text(x + KEY_BAR_WIDTH + TICK + 3, ly, &s, 1, INK);
            }
            y += h + 12;
        }
        for (colour, label) in entries {
            canvas.fill(x, y, KEY_BAR_WIDTH, KEY_BAR_WIDTH, *colour);
            canvas.frame(x, y, KEY_BAR_WIDTH, KEY_BAR_WIDTH, INK);
            let ly = y + (KEY_BAR_WIDTH - font::HEIGHT) / 2 + 1;
            canvas.text(x + KEY_BAR_WIDTH + 4, ly, label, 1, INK);
            y += KEY_BAR_WIDTH + 4;
        }
    }
}

/// Room a tick label of the key axis needs: its widest label and a gap.
fn label_room(len: usize) -> usize {
    text_width(&len.saturating_sub(1).to_string(), 1) + 6
}

/// Ticks of an axis of `len` positions from index `first`, pooled `factor`:1 into cells of
/// `cell` pixels: every multiple of the least step in 1, 2, 5, 10, 20, 50, ... that puts
/// ticks `spacing` pixels apart or more. Each is (index, pixel offset of its cell's centre).
fn ticks(
    first: usize,
    len: usize,
    factor: usize,
    cell: usize,
    spacing: usize,
) -> Vec<(usize, usize)> {
    let per_index = cell as f64 / factor as f64;
    let mut k = 0;
    let step = loop {
        let step = [1, 2, 5][k % 3] * 10usize.pow((k / 3) as u32);
        if step as f64 * per_index >= spacing as f64 || step >= len {
            break step;
        }
        k += 1;
    };
    let start = first.div_ceil(step) * step;
    (start..first + len)
        .step_by(step)
        .map(|i| (i, ((i - first) / factor) * cell + cell / 2))
        .collect()
}

/// Colorbar ticks: multiples of a 1-2-5 step near `vmax / 5`, with labels (in scientific
/// notation outside `1e-4..1e5`). `vmax` is finite and above 0.
fn colorbar_ticks(vmax: f32) -> Vec<(f32, String)> {
    let top = vmax as f64;
    let raw = top / 5.0;
    let exp = raw.log10().floor();
    if !exp.is_finite() {
        return vec![(0.0, "0".into()), (vmax, format!("{vmax:.1e}"))];
    }
    // The slack keeps an f32 0.2 over 0.1 (2.00000003) a 2.
    let (mantissa, exp) = match raw / 10f64.powf(exp) {
        m if m <= 1.0 + 1e-6 => (1.0, exp),
        m if m <= 2.0 + 1e-6 => (2.0, exp),
        m if m <= 5.0 + 1e-6 => (5.0, exp),
        _ => (1.0, exp + 1.0),
    };
    let step = mantissa * 10f64.powf(exp);
    let label = |v: f64| {
        if (-4.0..5.0).contains(&exp) {
            let decimals = (-exp).max(0.0) as usize;
            format!("{v:.decimals$}")
        } else if v == 0.0 {
            "0".to_string()
        } else {
            format!("{v:.1e}")
        }
    };
    (0..=5)
        .map(|k| k as f64 * step)
        .take_while(|&v| v <= top * (1.0 + 1e-6))
        .map(|v| (v as f32, label(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_sequences_get_large_square_cells() {
        let p = Pooling::new(8, 8, 512);
        assert_eq!((p.row_factor, p.col_factor), (1, 1));
        assert_eq!((p.cell_w, p.cell_h), (MAX_CELL, MAX_CELL));
        assert_eq!(p.note(), None);
        let p = Pooling::new(100, 100, 512);
        assert_eq!((p.cell_w, p.cell_h), (5, 5));
        let p = Pooling::new(2, 2, 512);
        assert_eq!(
            (p.cell_w, p.cell_h),
            (MAX_CELL, MAX_CELL),
            "48 px a side already"
        );
    }

    #[test]
    fn long_axes_are_max_pooled_to_the_budget() {
        let p = Pooling::new(1500, 1500, 512);
        assert_eq!((p.row_factor, p.out_rows, p.cell_w), (3, 500, 1));
        assert_eq!(p.note().as_deref(), Some("max-pooled 3:1"));
        let p = Pooling::new(4, 1500, 512);
        assert_eq!((p.row_factor, p.col_factor), (1, 3));
        assert_eq!(p.note().as_deref(), Some("max-pooled 3:1 (keys)"));
        assert!(
            p.out_rows * p.cell_h >= MIN_EXTENT,
            "a short axis is stretched"
        );
    }

    #[test]
    fn pooling_keeps_the_largest_allowed_value() {
        let p = Pooling::new(2, 4, 2);
        assert_eq!((p.row_factor, p.col_factor), (1, 2));
        let v = [
            [Some(0.1), None, None, None],
            [Some(0.5), Some(f32::NAN), None, Some(0.0)],
        ];
        let got = p.pool(2, 4, |r, c| v[r][c]);
        assert_eq!((p.out_rows, p.out_cols), (2, 2));
        assert_eq!(got[0], Some(0.1));
        assert_eq!(got[1], None);
        assert!(got[2].unwrap().is_nan(), "NaN wins: {got:?}");
        assert_eq!(got[3], Some(0.0));
    }

    #[test]
    fn ticks_are_spaced_and_centred() {
        assert_eq!(
            ticks(0, 4, 1, 24, 10),
            vec![(0, 12), (1, 36), (2, 60), (3, 84)]
        );
        let t = ticks(0, 1500, 3, 1, 30);
        assert_eq!(t[1].0, 100);
        assert_eq!(ticks(3, 5, 1, 4, 8), vec![(4, 6), (6, 14)]);
    }

    #[test]
    fn colorbar_ticks_are_round_numbers() {
        let labels = |v: f32| {
            colorbar_ticks(v)
                .into_iter()
                .map(|(_, s)| s)
                .collect::<Vec<_>>()
        };
        assert_eq!(labels(1.0), ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        assert_eq!(labels(0.83), ["0.0", "0.2", "0.4", "0.6", "0.8"]);
        assert_eq!(labels(0.013), ["0.000", "0.005", "0.010"]);
        assert_eq!(labels(3e-5), ["0", "1.0e-5", "2.0e-5", "3.0e-5"]);
        assert!(
            labels(1e-45).iter().all(|s| s.len() <= 8),
            "a subnormal top: short labels"
        );
        assert_eq!(labels(4e6)[1], "1.0e6");
        assert_eq!(labels(f32::MAX).len(), 4);
    }
}
