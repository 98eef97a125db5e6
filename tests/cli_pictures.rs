//! `wgattn heatmap` and `wgattn mask`, end to end: case files written here, the binary run,
//! its PNG decoded and the colours checked at positions whose state the mask semantics fix
//! (masked, allowed, the peak of a row).
//!
//! The PNG names where each panel's cells are (`tEXt` chunk `wgattn-panels`: `x y cell_w
//! cell_h rows cols`, a tab, the label), so the tests read cells without re-deriving the
//! layout; the title block is `wgattn-title` (`x y w h`) and its text `Title`.
//!
//! Needs the binary: `cargo test --features cli --test cli_pictures`.
#![cfg(feature = "cli")]

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::cli::{self, run_ok, text, wgattn, CaseFile, Scratch};
use common::{random, Rng};
use wgattn::{DType, Tensor};

/// Masked positions: neutral mid grey.
const MASKED: [u8; 3] = [128, 128, 128];
/// viridis(1), the top of the colormap.
const TOP: [u8; 3] = [253, 231, 37];
/// viridis(0), probability 0 (allowed).
const BOTTOM: [u8; 3] = [68, 1, 84];

// ---------------------------------------------------------------------------------------------
// Helpers: case files, the binary, decoding pictures.

/// Writes a case file: f32 `q`, `k`, `v`, optionally a BOOL mask and I64 key lengths.
fn write_case(
    path: &Path,
    [q, k, v]: [&Tensor; 3],
    mask: Option<(&[usize], &[bool])>,
    kv_lengths: Option<&[i64]>,
    metadata: &[(&str, &str)],
) {
    let mut case = CaseFile::new(q, k, v);
    if let Some((shape, data)) = mask {
        case = case.bool_mask(shape, data);
    }
    if let Some(lengths) = kv_lengths {
        case = case.kv_lengths_i64(lengths);
    }
    for (key, value) in metadata {
        case = case.meta(key, value);
    }
    case.write(path);
}

/// Random `q [B, H, Lq, D]`, `k`, `v [B, H, Lk, D]`.
fn random_qkv(seed: u64, b: usize, h: usize, lq: usize, lk: usize, d: usize) -> [Tensor; 3] {
    let mut rng = Rng::new(seed);
    [
        random(&mut rng, &[b, h, lq, d], DType::F32, 1.0),
        random(&mut rng, &[b, h, lk, d], DType::F32, 1.0),
        random(&mut rng, &[b, h, lk, d], DType::F32, 1.0),
    ]
}

/// Runs `wgattn ARGS...` and asserts the failure contract ([`cli::assert_fails`]: non-zero
/// exit, one `error:` line on stderr holding each of `expect`, no panic), and no internal
/// error.
fn assert_fails(args: &[&str], expect: &[&str]) {
    println!("wgattn {args:?}");
    let o = wgattn(args);
    cli::assert_fails(&o, expect);
    let stderr = text(&o.stderr);
    assert!(!stderr.contains("internal error"), "{args:?}: {stderr:?}");
}

/// Where one panel's cells are.
#[derive(Debug)]
struct PanelAt {
    x: usize,
    y: usize,
    cell_w: usize,
    cell_h: usize,
    rows: usize,
    cols: usize,
    label: String,
}

/// A decoded PNG.
struct Picture {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
    texts: HashMap<String, String>,
}

impl Picture {
    fn read(path: &Path) -> Picture {
        let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
        let mut reader = png::Decoder::new(file).read_info().unwrap();
        let mut rgb = vec![0; reader.output_buffer_size().unwrap()];
        let frame = reader.next_frame(&mut rgb).unwrap();
        assert_eq!(frame.color_type, png::ColorType::Rgb);
        assert_eq!(frame.bit_depth, png::BitDepth::Eight);
        let texts = reader
            .info()
            .uncompressed_latin1_text
            .iter()
            .map(|t| (t.keyword.clone(), t.text.clone()))
            .collect();
        Picture {
            width: frame.width as usize,
            height: frame.height as usize,
            rgb,
            texts,
        }
    }

    fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        assert!(
            x < self.width && y < self.height,
            "({x}, {y}) is off the picture"
        );
        let i = (y * self.width + x) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    fn title(&self) -> &str {
        &self.texts["Title"]
    }

    fn panels(&self) -> Vec<PanelAt> {
        self.texts["wgattn-panels"]
            .lines()
            .map(|line| {
                let (numbers, label) = line.split_once('\t').unwrap();
                let n: Vec<usize> = numbers
                    .split_whitespace()
                    .map(|x| x.parse().unwrap())
                    .collect();
                let at = PanelAt {
                    x: n[0],
                    y: n[1],
                    cell_w: n[2],
                    cell_h: n[3],
                    rows: n[4],
                    cols: n[5],
                    label: label.to_string(),
                };
                assert!(
                    at.x + at.cols * at.cell_w <= self.width,
                    "{at:?} sticks out"
                );
                assert!(
                    at.y + at.rows * at.cell_h <= self.height,
                    "{at:?} sticks out"
                );
                at
            })
            .collect()
    }

    /// The colour at the centre of cell `(row, col)` of `panel`.
    fn cell(&self, panel: &PanelAt, row: usize, col: usize) -> [u8; 3] {
        assert!(row < panel.rows && col < panel.cols);
        self.pixel(
            panel.x + col * panel.cell_w + panel.cell_w / 2,
            panel.y + row * panel.cell_h + panel.cell_h / 2,
        )
    }

    /// Pixels of the title block that are not white.
    fn title_ink(&self) -> usize {
        let b: Vec<usize> = self.texts["wgattn-title"]
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        let mut ink = 0;
        for y in b[1]..b[1] + b[3] {
            for x in b[0]..b[0] + b[2] {
                ink += usize::from(self.pixel(x, y) != [255, 255, 255]);
            }
        }
        ink
    }
}

// ---------------------------------------------------------------------------------------------
// `heatmap`.

#[test]
fn heatmap_causal_8x8_is_grey_above_the_diagonal_and_peaks_on_it() {
    let dir = Scratch::new("causal8");
    // q_i = k_i = 3·e_i and scale 10: the diagonal's logit is 90, the others' 0, so each row
    // puts probability 1 (in f32) on its own key and underflows to exactly 0 on the allowed
    // keys before it, which must still be drawn as probability 0, not as masked.
    let (l, d) = (8, 8);
    let eye: Vec<f32> = (0..l * d)
        .map(|x| if x / d == x % d { 3.0 } else { 0.0 })
        .collect();
    let q = Tensor::from_f32([1, 1, l, d], eye).unwrap();
    let case = dir.path("case.safetensors");
    write_case(&case, [&q, &q, &q], None, None, &[("causal", "true")]);
    let out = dir.arg("heat.png");
    run_ok(&[
        "heatmap",
        case.to_str().unwrap(),
        "-o",
        &out,
        "--scale",
        "10",
    ]);

    let pic = Picture::read(&dir.path("heat.png"));
    let panels = pic.panels();
    assert_eq!(panels.len(), 1);
    let p = &panels[0];
    assert_eq!((p.rows, p.cols, p.label.as_str()), (8, 8, "head 0"));
    assert!(
        p.cell_w >= 8 && p.cell_w == p.cell_h,
        "small L is scaled up: {p:?}"
    );
    assert!(
        pic.width > p.x + 8 * p.cell_w + 30,
        "room for the colorbar: {}",
        pic.width
    );
    for i in 0..l {
        for j in 0..l {
            let want = match j.cmp(&i) {
                std::cmp::Ordering::Greater => MASKED,
                std::cmp::Ordering::Equal => TOP,
                std::cmp::Ordering::Less => BOTTOM,
            };
            assert_eq!(pic.cell(p, i, j), want, "cell ({i}, {j})");
        }
    }
    for word in ["B=1", "Lq=8", "Lt=8", "causal", "scale 10"] {
        assert!(
            pic.title().contains(word),
            "title {:?} lacks {word}",
            pic.title()
        );
    }
    assert!(!pic.title().contains("max-pooled"));
    assert!(pic.title_ink() > 200, "the title block is drawn");
    assert_eq!(
        dir.files(),
        ["case.safetensors", "heat.png"],
        "no temporary left"
    );
}

#[test]
fn heatmap_padded_batch_shows_masked_columns_for_the_heads_and_rows_asked() {
    let dir = Scratch::new("padded");
    let (b, h, l) = (2, 4, 8);
    let [q, k, v] = random_qkv(2, b, h, l, l, 8);
    // [B, 1, 1, L]: batch 0 sees every key, batch 1 its first 5.
    let mask: Vec<bool> = (0..b * l).map(|x| x < l || x % l < 5).collect();
    let case = dir.path("case.safetensors");
    write_case(&case, [&q, &k, &v], Some((&[b, 1, 1, l], &mask)), None, &[]);
    let case = case.to_str().unwrap();

    let out = dir.arg("b1.png");
    let args = [
        "heatmap", case, "-o", &out, "--batch", "1", "--heads", "0,3",
    ];
    run_ok(&args);
    let pic = Picture::read(Path::new(&out));
    let panels = pic.panels();
    let labels: Vec<&str> = panels.iter().map(|p| p.label.as_str()).collect();
    assert_eq!(labels, ["head 0", "head 3"]);
    for p in &panels {
        for i in 0..l {
            for j in 0..l {
                let masked = pic.cell(p, i, j) == MASKED;
                assert_eq!(masked, j >= 5, "batch 1, {}, cell ({i}, {j})", p.label);
            }
        }
    }
    assert!(
        pic.title().contains("bool mask [2, 1, 1, 8]"),
        "{}",
        pic.title()
    );

    let out = dir.arg("b0.png");
    run_ok(&["heatmap", case, "-o", &out, "--query-range", "2..6"]);
    let pic = Picture::read(Path::new(&out));
    let panels = pic.panels();
    assert_eq!(panels.len(), 4);
    for p in &panels {
        assert_eq!((p.rows, p.cols), (4, 8), "{}", p.label);
        for i in 0..4 {
            for j in 0..l {
                assert_ne!(pic.cell(p, i, j), MASKED, "batch 0 masks nothing");
            }
        }
    }
    assert!(pic.title().contains("queries 2..6"), "{}", pic.title());
}

/// A panel's label names the drawn query rows that see no key (out = 0), counted as queries
/// whatever range is drawn: here the key-lengths trap, offset `kv_len - Lq = 2 - 4`, leaves
/// batch 0's queries 0 and 1 without a key.
#[test]
fn heatmap_labels_name_the_rows_that_see_no_key() {
    let dir = Scratch::new("unseeing");
    let [q, k, v] = random_qkv(3, 2, 2, 4, 5, 8);
    let case = dir.path("case.safetensors");
    write_case(
        &case,
        [&q, &k, &v],
        None,
        Some(&[2, 5]),
        &[("causal", "true")],
    );
    let case = case.to_str().unwrap();
    let out = dir.arg("heat.png");
    let labels = |range: &str| {
        run_ok(&["heatmap", case, "-o", &out, "--query-range", range]);
        let pic = Picture::read(Path::new(&out));
        let labels: Vec<String> = pic.panels().into_iter().map(|p| p.label).collect();
        labels
    };
    let all = "; queries 0-1 see no key (out = 0)";
    assert_eq!(
        labels("0..4"),
        [format!("head 0{all}"), format!("head 1{all}")]
    );
    let one = "; query 1 sees no key (out = 0)";
    assert_eq!(
        labels("1..3"),
        [format!("head 0{one}"), format!("head 1{one}")]
    );
    assert_eq!(labels("2..4"), ["head 0", "head 1"]);
}

#[test]
fn heatmap_of_1500_keys_is_max_pooled_and_says_so() {
    let dir = Scratch::new("pooled");
    let (lq, lk) = (4, 1500);
    let [q, k, v] = random_qkv(3, 1, 1, lq, lk, 4);
    let case = dir.path("case.safetensors");
    // Keys from 1000 on are padding.
    write_case(&case, [&q, &k, &v], None, Some(&[1000]), &[]);
    let case = case.to_str().unwrap();

    let out = dir.arg("small.png");
    run_ok(&["heatmap", case, "-o", &out, "--panel-size", "300"]);
    let pic = Picture::read(Path::new(&out));
    let p = &pic.panels()[0];
    assert_eq!((p.rows, p.cols, p.cell_w), (4, 300, 1), "5 keys a cell");
    assert!(
        p.rows * p.cell_h >= 40,
        "a 4-query strip is stretched to be seen"
    );
    assert!(pic.title().contains("max-pooled 5:1"), "{}", pic.title());
    for i in 0..lq {
        for c in 0..300 {
            // Cell c covers keys 5c..5c+4: masked exactly when all are past 1000.
            let masked = pic.cell(p, i, c) == MASKED;
            assert_eq!(masked, c >= 200, "row {i}, pooled column {c}");
        }
    }

    let out = dir.arg("default.png");
    run_ok(&["heatmap", case, "-o", &out]);
    let pic = Picture::read(Path::new(&out));
    assert_eq!(pic.panels()[0].cols, 500);
    assert!(pic.title().contains("max-pooled 3:1"), "{}", pic.title());
}

#[test]
fn heatmap_bad_inputs_fail_with_one_line_and_no_file() {
    let dir = Scratch::new("errors");
    let [q, k, v] = random_qkv(4, 2, 2, 3, 3, 4);
    let case = dir.path("case.safetensors");
    write_case(&case, [&q, &k, &v], None, None, &[]);
    let case = case.to_str().unwrap();
    let out = dir.arg("heat.png");
    let missing = dir.arg("missing.safetensors");
    assert_fails(
        &["heatmap", &missing, "-o", &out],
        &["cannot read case file"],
    );
    assert_fails(
        &["heatmap", case, "-o", &out, "--heads", "0,x"],
        &["--heads", "0,3"],
    );
    assert_fails(
        &["heatmap", case, "-o", &out, "--heads", "0,2"],
        &["head 2", "Hq=2"],
    );
    assert_fails(
        &["heatmap", case, "-o", &out, "--batch", "2"],
        &["--batch 2", "B=2"],
    );
    assert_fails(
        &["heatmap", case, "-o", &out, "--query-range", "2..1"],
        &["2..1"],
    );
    assert_fails(
        &["heatmap", case, "-o", &out, "--query-range", "0..4"],
        &["0..3"],
    );
    assert_fails(
        &["heatmap", case, "-o", &out, "--query-range", "a-b"],
        &["A..B"],
    );
    assert_fails(&["heatmap", case, "-o", &out, "--vmax", "0"], &["above 0"]);
    assert_fails(
        &["heatmap", case, "-o", &out, "--window-left", "-2"],
        &["window_left"],
    );
    let nowhere = dir.arg("no/such/dir/heat.png");
    assert_fails(&["heatmap", case, "-o", &nowhere], &["does not exist"]);
    let itself = dir.dir().to_str().unwrap();
    assert_fails(&["heatmap", case, "-o", itself], &["is a directory"]);
    assert_eq!(dir.files(), ["case.safetensors"], "nothing written");
}

// ---------------------------------------------------------------------------------------------
// `mask`.

const CAUSAL_KV_LENGTHS_WINDOW: &str = "\
B=2 H=1 Lq=5 Lt=5; masks: causal, window left 2, offset kv_len-Lq, kv_lengths [5, 3] \
(# allowed, . masked; keys across, queries down)

batch 0 (kv_len 5), head 0:
#....
##...
###..
.###.
..###

batch 1 (kv_len 3), head 0; queries 0-1 see no key (out = 0):
.....
.....
#....
##...
###..
";

#[test]
fn mask_ascii_of_causal_kv_lengths_and_window_is_exact() {
    // Batch 1's offset is kv_len - Lq = -2: rows 0 and 1 see nothing, row 4 keys 0..=2.
    let got = run_ok(&[
        "mask",
        "--causal",
        "--kv-lengths",
        "5,3",
        "--window-left",
        "2",
        "--ascii",
    ]);
    assert_eq!(got, CAUSAL_KV_LENGTHS_WINDOW);
}

#[test]
fn mask_png_draws_what_ascii_prints() {
    let dir = Scratch::new("mask_png");
    let out = dir.arg("mask.png");
    let args = [
        "mask",
        "--causal",
        "--kv-lengths",
        "5,3",
        "--window-left",
        "2",
        "-o",
        &out,
    ];
    run_ok(&args);
    let pic = Picture::read(Path::new(&out));
    let panels = pic.panels();
    assert_eq!(panels.len(), 2);
    let blocks: Vec<&str> = CAUSAL_KV_LENGTHS_WINDOW.split("\n\n").skip(1).collect();
    for (p, block) in panels.iter().zip(blocks) {
        let mut lines = block.lines();
        assert_eq!(lines.next().unwrap(), format!("{}:", p.label));
        for (i, line) in lines.enumerate() {
            for (j, ch) in line.chars().enumerate() {
                let want = if ch == '#' { TOP } else { MASKED };
                assert_eq!(pic.cell(p, i, j), want, "{}, cell ({i}, {j})", p.label);
            }
        }
    }
    assert!(pic.title().contains("kv_lengths [5, 3]"), "{}", pic.title());
    assert!(pic.title_ink() > 200);
    assert_eq!(dir.files(), ["mask.png"]);
}

#[test]
fn mask_of_a_case_combines_its_tensor_with_its_options_and_the_flags() {
    let dir = Scratch::new("mask_case");
    let (h, l) = (2, 4);
    let [q, k, v] = random_qkv(5, 1, h, l, l, 4);
    // [1, H, 1, L]: head 0 drops key 3, head 1 keeps every key; the file says causal.
    let mask: Vec<bool> = (0..h * l).map(|x| !(x / l == 0 && x % l == 3)).collect();
    let case = dir.path("case.safetensors");
    write_case(
        &case,
        [&q, &k, &v],
        Some((&[1, h, 1, l], &mask)),
        None,
        &[("causal", "true")],
    );
    let case = case.to_str().unwrap();
    let got = run_ok(&["mask", "--case", case, "--ascii"]);
    let blocks: Vec<&str> = got.split("\n\n").collect();
    assert!(
        blocks[0].contains("causal, bool mask [1, 2, 1, 4]"),
        "{got}"
    );
    assert_eq!(blocks[1], "batch 0, head 0:\n#...\n##..\n###.\n###.");
    assert_eq!(blocks[2], "batch 0, head 1:\n#...\n##..\n###.\n####\n");
    // A flag overrides the file: not causal, and key lengths [2] cut both heads alike.
    let got = run_ok(&[
        "mask",
        "--case",
        case,
        "--causal=false",
        "--kv-lengths",
        "2",
        "--ascii",
    ]);
    let blocks: Vec<&str> = got.split("\n\n").collect();
    assert_eq!(
        blocks[1],
        "batch 0 (kv_len 2), heads 0-1 alike:\n##..\n##..\n##..\n##..\n"
    );
}

#[test]
fn mask_bad_inputs_fail_with_one_line_and_no_file() {
    let dir = Scratch::new("mask_errors");
    let out = dir.arg("mask.png");
    assert_fails(&["mask", "--causal", "-o", &out], &["no shape"]);
    assert_fails(&["mask", "--q-len", "4"], &["--ascii"]);
    assert_fails(
        &["mask", "--kv-lengths", "9", "--kv-len", "4", "-o", &out],
        &["kv_lengths[0] = 9"],
    );
    assert_fails(&["mask", "--kv-lengths", "5,x", "--ascii"], &["5,3"]);
    assert_fails(
        &["mask", "--q-len", "100000", "--kv-len", "100000", "--ascii"],
        &["too many"],
    );
    let missing = dir.arg("missing.safetensors");
    assert_fails(
        &["mask", "--case", &missing, "--ascii"],
        &["cannot read case file"],
    );
    assert_fails(
        &["mask", "--case", &missing, "--q-len", "3", "--ascii"],
        &["--q-len"],
    );
    let nowhere = dir.arg("no/such/dir/mask.png");
    assert_fails(
        &["mask", "--q-len", "4", "-o", &nowhere],
        &["does not exist"],
    );
    assert_eq!(dir.files(), Vec::<String>::new(), "nothing written");
}
