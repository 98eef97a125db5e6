//! The fused path (prefill and decode kernels, key splits, combine) against the reference.
mod common;

use std::sync::OnceLock;

use common::*;
use wgattn::kernels::ShaderFeatures;
use wgattn::{
    masked_attention, reference, AttentionInputs, AttentionOptions, BoolMask, Context, DType,
    ExecutionPath, Layout, Mask, Tensor, Tuning,
};

/// Kernel configurations every case runs under: the adapter's defaults (on lavapipe with
/// shader-f16 and subgroups; up to four query rows per decode workgroup), one row per
/// invocation with 4-key tiles (the GPU configuration, many tiles) without the optional
/// features and with GL's opaque loops, two rows with 8-key tiles and one query row per decode
/// workgroup, every query length on the decode kernel without the optional features (opaque
/// loops), with short splits (40 keys, rounded up to 48) and up to 3 query rows per
/// workgroup, eight rows with 12-key tiles, and every query length on the decode kernel with
/// a subgroup per key (its GPU layout; two subgroups of 8 per workgroup on lavapipe, which
/// offers subgroups on Vulkan only) and short splits, with up to four query rows per
/// workgroup (the CPU default) or one (the GPU default).
const TUNINGS: [Tuning; 7] = [
    Tuning::AUTO,
    Tuning {
        rows_per_invocation: Some(1),
        keys_per_tile: Some(4),
        decode_max_q: Some(0),
        shader_f16: Some(false),
        subgroups: Some(false),
        opaque_loops: Some(true),
        ..Tuning::AUTO
    },
    Tuning {
        rows_per_invocation: Some(2),
        keys_per_tile: Some(8),
        decode_max_q: None,
        decode_rows: Some(1),
        ..Tuning::AUTO
    },
    Tuning {
        rows_per_invocation: None,
        keys_per_tile: None,
        decode_max_q: Some(1 << 20),
        decode_keys_per_split: Some(40),
        decode_rows: Some(3),
        shader_f16: Some(false),
        subgroups: Some(false),
        opaque_loops: Some(true),
        ..Tuning::AUTO
    },
    Tuning {
        rows_per_invocation: Some(8),
        keys_per_tile: Some(12),
        decode_max_q: Some(0),
        ..Tuning::AUTO
    },
    Tuning {
        decode_max_q: Some(1 << 20),
        decode_keys_per_split: Some(40),
        decode_subgroup_keys: Some(true),
        ..Tuning::AUTO
    },
    Tuning {
        decode_max_q: Some(1 << 20),
        decode_keys_per_split: Some(40),
        decode_subgroup_keys: Some(true),
        decode_rows: Some(1),
        ..Tuning::AUTO
    },
];

/// One context per tuning (a tuning is per context, and tests run in parallel).
fn tuned(i: usize) -> &'static Context {
    static CTXS: [OnceLock<Context>; TUNINGS.len()] = [const { OnceLock::new() }; TUNINGS.len()];
    CTXS[i].get_or_init(|| tuned_context(TUNINGS[i]))
}

/// Shapes and options of one fused case.
#[derive(Clone)]
struct Case {
    b: usize,
    hq: usize,
    hkv: usize,
    lq: usize,
    lk: usize,
    past: usize,
    d: usize,
    dv: usize,
    dtype: DType,
    layout: Layout,
    options: AttentionOptions,
    kv_lengths: Option<Vec<i64>>,
    mask: Option<&'static str>,
    amp: f32,
    /// Amplitude of v (q and k take `amp`).
    v_amp: f32,
    /// Tolerance of `out` in place of the dtype's.
    tol: Option<Tol>,
}

impl Default for Case {
    fn default() -> Self {
        Case {
            b: 1,
            hq: 2,
            hkv: 1,
            lq: 7,
            lk: 33,
            past: 0,
            d: 16,
            dv: 16,
            dtype: DType::F32,
            layout: Layout::Bhsd,
            options: AttentionOptions::default(),
            kv_lengths: None,
            mask: None,
            amp: 1.0,
            v_amp: 1.0,
            tol: None,
        }
    }
}

fn shape(layout: Layout, b: usize, h: usize, s: usize, d: usize) -> Vec<usize> {
    match layout {
        Layout::Bhsd => vec![b, h, s, d],
        Layout::Bshd => vec![b, s, h, d],
    }
}

/// Runs the case on the fused path and the reference; compares `out` and the present cache.
fn check(name: &str, c: Case, seed: u64) {
    let mut rng = Rng::new(seed);
    let q = random(
        &mut rng,
        &shape(c.layout, c.b, c.hq, c.lq, c.d),
        c.dtype,
        c.amp,
    );
    let k = random(
        &mut rng,
        &shape(c.layout, c.b, c.hkv, c.lk, c.d),
        c.dtype,
        c.amp,
    );
    let v = random(
        &mut rng,
        &shape(c.layout, c.b, c.hkv, c.lk, c.dv),
        c.dtype,
        c.v_amp,
    );
    let pk = random(&mut rng, &[c.b, c.hkv, c.past, c.d], c.dtype, c.amp);
    let pv = random(&mut rng, &[c.b, c.hkv, c.past, c.dv], c.dtype, c.v_amp);
    let lt = c.past + c.lk;
    let mask = c.mask.map(|kind| match kind {
        "bool" => {
            let n = c.b * c.lq * lt;
            let data = (0..n).map(|_| rng.bool(0.7)).collect();
            Mask::Bool(BoolMask::new([c.b, 1, c.lq, lt], data).unwrap())
        }
        _ => {
            let n = c.hq * c.lq * lt;
            let data: Vec<f32> = (0..n)
                .map(|_| {
                    if rng.bool(0.2) {
                        f32::NEG_INFINITY
                    } else {
                        rng.uniform() * 2.0
                    }
                })
                .collect();
            Mask::Additive(Tensor::from_f32([c.hq, c.lq, lt], data).unwrap())
        }
    });
    let mut inputs = AttentionInputs::new(&q, &k, &v);
    if c.past > 0 || c.options.causal_offset == Some(-12345) {
        inputs = inputs.with_past(&pk, &pv);
    }
    if let Some(l) = &c.kv_lengths {
        inputs = inputs.with_kv_lengths(l);
    }
    if let Some(m) = &mask {
        inputs = inputs.with_mask(m);
    }
    let options = AttentionOptions {
        layout: c.layout,
        path: ExecutionPath::Fused,
        ..c.options.clone()
    };
    let want = reference::masked_attention(&inputs, &options).unwrap();
    // Large logits: the f32 dot products carry an error relative to their magnitude.
    let tol = c
        .tol
        .unwrap_or_else(|| Tol::for_dtype(c.dtype).scaled(if c.amp > 4.0 { 10.0 } else { 1.0 }));
    // One case at a time: several software devices submitting at once oversubscribe the
    // two cores badly (measured: 264 s in parallel against 15 s in sequence).
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The adapter's own configuration and the decode kernel's GPU layout always (where the
    // adapter has subgroups: without, that layout does not exist), with several query rows
    // per workgroup or one as the seed says, plus one of the others chosen by the seed (every
    // configuration compiles its own pipelines, which the software adapter takes seconds for).
    // And the prefill kernel where the seed's choice is not one of its configurations: the
    // adapter's own takes the decode kernel for up to 128 query rows on CPU adapters.
    let subgroup_keys = 5 + (seed as usize / 4) % 2;
    let mut runs = vec![0, subgroup_keys, 1 + seed as usize % 4];
    if !runs.contains(&1) && !runs.contains(&4) {
        runs.push(1 + 3 * ((seed as usize / 4) % 2));
    }
    for t in runs {
        if t == subgroup_keys && !tuned(t).shader_features().subgroups {
            continue;
        }
        let tuning = &TUNINGS[t];
        let got = masked_attention(tuned(t), &inputs, &options)
            .unwrap_or_else(|e| panic!("{name} {tuning:?}: {e}"));
        assert_close(&format!("{name} {tuning:?}: out"), &got.out, &want.out, tol);
        assert_eq!(got.present_k, want.present_k, "{name}: present_k");
        assert_eq!(got.present_v, want.present_v, "{name}: present_v");
    }
}

#[test]
fn fused_prefill_plain_and_odd_sizes() {
    check("plain", Case::default(), 1);
    check(
        "odd",
        Case {
            lq: 129,
            lk: 300,
            d: 7,
            dv: 13,
            ..Case::default()
        },
        2,
    );
    check(
        "one key",
        Case {
            lq: 70,
            lk: 1,
            ..Case::default()
        },
        3,
    );
    check(
        "gqa",
        Case {
            hq: 8,
            hkv: 2,
            lq: 65,
            lk: 40,
            ..Case::default()
        },
        4,
    );
    check(
        "mqa bshd",
        Case {
            hq: 4,
            hkv: 1,
            lq: 33,
            lk: 47,
            layout: Layout::Bshd,
            ..Case::default()
        },
        5,
    );
}

/// f16 inputs with and without shader-f16 and subgroups: each case runs on the adapter's
/// configuration and (seed % 4 = 0 or 2) on one that forces both fallbacks.
#[test]
fn fused_f16_with_and_without_optional_features() {
    let offered = ShaderFeatures::of_device(tuned(0).features());
    let used = tuned(0).shader_features();
    assert_eq!((used.f16, used.subgroups), (offered.f16, offered.subgroups));
    let gl = tuned(0).adapter_info().backend == wgpu::Backend::Gl;
    assert_eq!(used.opaque_loops, gl, "opaque loops are the GL default");
    for t in [1, 3] {
        assert_eq!(
            tuned(t).shader_features(),
            ShaderFeatures {
                f16: false,
                subgroups: false,
                opaque_loops: true,
            },
            "tuning {t} forces the fallbacks and GL's opaque loops"
        );
    }
    for (lq, seed) in [(1, 20), (3, 22), (40, 24), (129, 26)] {
        for (d, dv) in [(16, 16), (7, 13), (64, 32)] {
            let causal = AttentionOptions {
                causal: true,
                ..Default::default()
            };
            check(
                &format!("f16 lq{lq} d{d} dv{dv}"),
                Case {
                    hq: 4,
                    hkv: 2,
                    lq,
                    lk: 300,
                    d,
                    dv,
                    dtype: DType::F16,
                    options: causal,
                    mask: if lq > 3 { Some("additive") } else { None },
                    ..Case::default()
                },
                seed,
            );
        }
    }
}

/// f16 subnormals (v in ±3e-5, below the smallest normal 6.1e-5; q, k in ±2e-4) through
/// every load width: eight elements per load (D, Dv multiples of 8), four, and one; on the
/// prefill and decode kernels, each with shader-f16 (hardware conversion) and without it
/// (integer decoding). Outputs are subnormal too: to one f16 ulp there (2^-24), so a
/// decoder that flushed subnormals to zero would miss by ~1e-5.
#[test]
fn fused_f16_subnormal_inputs() {
    let tol = Tol {
        atol: 2f64.powi(-24),
        rtol: 2f64.powi(-10),
    };
    // Seeds: 40 and 44 also run tuning 1 (prefill, fallbacks), 42 and 46 tuning 3 (decode
    // kernel for every query length, fallbacks).
    for (d, dv, seed) in [(16, 8, 40), (16, 8, 42), (12, 20, 44), (7, 5, 46)] {
        for lq in [1, 9] {
            check(
                &format!("f16 subnormal lq{lq} d{d} dv{dv}"),
                Case {
                    hq: 2,
                    hkv: 1,
                    lq,
                    lk: 70,
                    d,
                    dv,
                    dtype: DType::F16,
                    amp: 2e-4,
                    v_amp: 3e-5,
                    tol: Some(tol),
                    ..Case::default()
                },
                seed,
            );
        }
    }
}

#[test]
fn fused_prefill_head_dims() {
    // Seeds pick the second configuration (1 + seed % 4): eight rows per invocation only
    // for the small head dims, whose pipelines compile quickly.
    // f16 rows of 128 and 256 take the packed tiles (half the workgroup memory of f32 ones,
    // so twice the keys per tile where memory bounds them: 32 of them at D=256 on lavapipe).
    for (d, dtype, seed) in [
        (32, DType::F32, 11),
        (64, DType::F32, 10),
        (80, DType::F32, 13),
        (96, DType::F32, 14),
        (128, DType::F32, 17),
        (256, DType::F32, 12),
        (128, DType::F16, 21),
        (256, DType::F16, 20),
    ] {
        check(
            &format!("d{d} {dtype:?}"),
            Case {
                b: 1,
                hq: 1,
                lq: 40,
                lk: 50,
                d,
                dv: d,
                dtype,
                ..Case::default()
            },
            seed,
        );
    }
}

#[test]
fn fused_masks() {
    let causal = AttentionOptions {
        causal: true,
        ..Default::default()
    };
    check(
        "causal",
        Case {
            lq: 100,
            lk: 100,
            options: causal.clone(),
            ..Case::default()
        },
        20,
    );
    check(
        "causal past",
        Case {
            lq: 70,
            lk: 70,
            past: 20,
            options: causal.clone(),
            ..Case::default()
        },
        21,
    );
    let window = AttentionOptions {
        causal: true,
        window_left: 9,
        ..Default::default()
    };
    check(
        "window causal",
        Case {
            lq: 130,
            lk: 130,
            options: window,
            ..Case::default()
        },
        22,
    );
    let both = AttentionOptions {
        window_left: 5,
        window_right: 3,
        ..Default::default()
    };
    check(
        "window both",
        Case {
            lq: 67,
            lk: 90,
            options: both,
            ..Case::default()
        },
        23,
    );
    check(
        "kv lengths causal",
        Case {
            b: 3,
            lq: 66,
            lk: 80,
            kv_lengths: Some(vec![80, 66, 0]),
            options: causal.clone(),
            ..Case::default()
        },
        24,
    );
    let negative = AttentionOptions {
        causal: true,
        causal_offset: Some(-70),
        ..Default::default()
    };
    check(
        "fully masked rows",
        Case {
            lq: 100,
            lk: 100,
            options: negative,
            ..Case::default()
        },
        25,
    );
    check(
        "bool mask",
        Case {
            b: 2,
            lq: 70,
            lk: 45,
            mask: Some("bool"),
            options: causal.clone(),
            ..Case::default()
        },
        26,
    );
    check(
        "additive mask",
        Case {
            hq: 2,
            lq: 66,
            lk: 45,
            mask: Some("add"),
            ..Case::default()
        },
        27,
    );
    let cap = AttentionOptions {
        softcap: 5.0,
        scale: Some(1.0),
        ..Default::default()
    };
    check(
        "softcap large",
        Case {
            lq: 65,
            lk: 70,
            amp: 8.0,
            options: cap,
            ..Case::default()
        },
        28,
    );
    let big = AttentionOptions {
        scale: Some(1.0),
        ..Default::default()
    };
    check(
        "large logits",
        Case {
            lq: 65,
            lk: 70,
            amp: 50.0 / 4.0,
            options: big,
            ..Case::default()
        },
        29,
    );
}

#[test]
fn fused_dtypes() {
    for (i, dtype) in [DType::F16, DType::BF16].into_iter().enumerate() {
        check(
            "even dv",
            Case {
                dtype,
                lq: 70,
                lk: 50,
                ..Case::default()
            },
            30 + i as u64,
        );
        check(
            "odd dv",
            Case {
                dtype,
                lq: 70,
                lk: 50,
                dv: 9,
                ..Case::default()
            },
            32 + i as u64,
        );
        check(
            "decode",
            Case {
                dtype,
                lq: 1,
                lk: 600,
                dv: 9,
                ..Case::default()
            },
            34 + i as u64,
        );
    }
}

/// `fused_combine` merges four elements of a row per invocation (f32, or Dv even) or one
/// stored word (f16/bf16 with Dv odd, whose words can hold two rows' elements): rows whose
/// last four are 1, 2 or 3 elements, both layouts, a fully masked row (kv length 0).
#[test]
fn fused_combine_row_ends() {
    let cases = [
        (DType::F32, 13),
        (DType::F32, 14),
        (DType::F32, 15),
        (DType::F16, 10),
        (DType::BF16, 6),
        (DType::F16, 11),
    ];
    for (i, (dtype, dv)) in cases.into_iter().enumerate() {
        check(
            &format!("combine {dtype:?} dv{dv}"),
            Case {
                b: 2,
                hq: 3,
                hkv: 1,
                lq: 1 + i % 2,
                lk: 300,
                d: 12,
                dv,
                dtype,
                layout: if i % 2 == 0 {
                    Layout::Bshd
                } else {
                    Layout::Bhsd
                },
                kv_lengths: Some(vec![300, 0]),
                ..Case::default()
            },
            60 + i as u64,
        );
    }
}

#[test]
fn fused_decode_splits() {
    check(
        "decode long",
        Case {
            hq: 4,
            hkv: 2,
            lq: 1,
            lk: 1000,
            ..Case::default()
        },
        40,
    );
    let causal = AttentionOptions {
        causal: true,
        ..Default::default()
    };
    check(
        "decode past causal",
        Case {
            lq: 3,
            lk: 3,
            past: 700,
            options: causal.clone(),
            ..Case::default()
        },
        41,
    );
    let window = AttentionOptions {
        causal: true,
        window_left: 100,
        ..Default::default()
    };
    check(
        "decode window",
        Case {
            lq: 2,
            lk: 2,
            past: 900,
            options: window,
            ..Case::default()
        },
        42,
    );
    check(
        "decode kv lengths",
        Case {
            b: 3,
            lq: 1,
            lk: 520,
            kv_lengths: Some(vec![520, 1, 0]),
            ..Case::default()
        },
        43,
    );
    check(
        "decode bool mask",
        Case {
            b: 2,
            lq: 4,
            lk: 300,
            mask: Some("bool"),
            ..Case::default()
        },
        44,
    );
    check(
        "decode additive",
        Case {
            lq: 4,
            lk: 300,
            mask: Some("add"),
            ..Case::default()
        },
        45,
    );
    // A query row per GQA head of a group and per row of the block: up to 4 rows share
    // each key and value row loaded (bshd, so the group's rows are not adjacent in q).
    check(
        "decode gqa group",
        Case {
            b: 2,
            hq: 8,
            hkv: 2,
            lq: 2,
            lk: 2,
            past: 600,
            layout: Layout::Bshd,
            options: causal.clone(),
            ..Case::default()
        },
        47,
    );
    check(
        "decode gqa kv lengths, additive mask",
        Case {
            b: 2,
            hq: 6,
            hkv: 2,
            lq: 1,
            lk: 700,
            d: 40,
            dv: 24,
            kv_lengths: Some(vec![700, 333]),
            mask: Some("add"),
            ..Case::default()
        },
        48,
    );
    check(
        "prefill split",
        Case {
            b: 1,
            hq: 1,
            lq: 20,
            lk: 2000,
            ..Case::default()
        },
        46,
    );
    // A short block against more keys than 16 splits of 512 take: on CPU adapters longer
    // splits (1024 keys) of the decode kernel; 15 rows per key/value head, in groups of 4,
    // 4, 4 and 3.
    check(
        "short block long keys",
        Case {
            hq: 6,
            hkv: 2,
            lq: 5,
            lk: 5,
            past: 9100,
            mask: Some("bool"),
            options: causal.clone(),
            ..Case::default()
        },
        49,
    );
    // That choice, by the variant's name, where the adapter is a CPU and times its kernels.
    let ctx = Context::new().unwrap_or_else(|e| panic!("an adapter: {e}"));
    ctx.set_gpu_timing(true);
    let cpu = ctx.adapter_info().device_type == wgpu::DeviceType::Cpu;
    let mut rng = Rng::new(50);
    let q = random(&mut rng, &[1, 6, 5, 16], DType::F32, 1.0);
    let k = random(&mut rng, &[1, 2, 9105, 16], DType::F32, 1.0);
    let inputs = AttentionInputs::new(&q, &k, &k);
    let got = masked_attention(&ctx, &inputs, &AttentionOptions::default()).unwrap();
    let want = reference::masked_attention(&inputs, &AttentionOptions::default()).unwrap();
    assert_close("long keys", &got.out, &want.out, Tol::for_dtype(DType::F32));
    if cpu && got.gpu_time.is_some() {
        let first = &got.gpu_kernels[0].variant;
        assert!(
            first.starts_with("wgattn fused_decode ") && first.contains(" k1024 "),
            "{first}"
        );
    }
}

/// The two GPU paths agree with each other directly (not only through the reference), on
/// every mask kind at once, in each dtype.
#[test]
fn fused_equals_staged() {
    let mut rng = Rng::new(99);
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let (b, hq, hkv, lq, lk, past, d) = (2, 4, 2, 37, 50, 13, 24);
        let q = random(&mut rng, &[b, hq, lq, d], dtype, 1.0);
        let k = random(&mut rng, &[b, hkv, lk, d], dtype, 1.0);
        let v = random(&mut rng, &[b, hkv, lk, d], dtype, 1.0);
        let pk = random(&mut rng, &[b, hkv, past, d], dtype, 1.0);
        let pv = random(&mut rng, &[b, hkv, past, d], dtype, 1.0);
        let lt = past + lk;
        let data = (0..b * lq * lt).map(|_| rng.bool(0.8)).collect();
        let mask = Mask::Bool(BoolMask::new([b, 1, lq, lt], data).unwrap());
        let inputs = AttentionInputs::new(&q, &k, &v)
            .with_past(&pk, &pv)
            .with_mask(&mask);
        let base = AttentionOptions {
            causal: true,
            window_left: 20,
            softcap: 3.0,
            ..Default::default()
        };
        let run = |path| {
            let options = AttentionOptions {
                path,
                ..base.clone()
            };
            masked_attention(ctx(), &inputs, &options).unwrap()
        };
        let staged = run(ExecutionPath::Staged);
        let fused = run(ExecutionPath::Fused);
        // Both round f32 results once; they may land on either side of a rounding boundary.
        assert_close(
            &format!("{dtype}: fused vs staged"),
            &fused.out,
            &staged.out,
            Tol::for_dtype(dtype),
        );
        assert_eq!(fused.present_k, staged.present_k);
    }
}

/// Junk at disallowed keys (NaN and infinity in `k` and `v` past `kv_lengths` and where the
/// mask blocks, as in a preallocated cache) has no effect on any path: the result is bit for bit
/// the one with clean values there, and finite. Nine query rows take the prefill kernel, three
/// the decode kernel; with a subgroup per decode key, both do.
#[test]
fn junk_at_disallowed_keys_has_no_effect() {
    let mut rng = Rng::new(123);
    let (b, h, lk, d) = (2, 2, 40, 16);
    let lengths = [25i64, 40];
    let blocked = |bi: usize, j: usize| j as i64 >= lengths[bi] || j % 7 == 3;
    let mask_data: Vec<bool> = (0..b * lk).map(|x| x % lk % 7 != 3).collect();
    let mask = Mask::Bool(BoolMask::new([b, 1, 1, lk], mask_data).unwrap());
    for (lq, dtype) in [
        (9, DType::F32),
        (9, DType::F16),
        (3, DType::F32),
        (3, DType::F16),
    ] {
        let q = random(&mut rng, &[b, h, lq, d], dtype, 1.0);
        let k = random(&mut rng, &[b, h, lk, d], dtype, 1.0);
        let v = random(&mut rng, &[b, h, lk, d], dtype, 1.0);
        let poison = |t: &Tensor| {
            let mut x = t.to_f32_vec();
            for (n, e) in x.iter_mut().enumerate() {
                let (bi, j) = (n / (h * lk * d), n / d % lk);
                if blocked(bi, j) {
                    *e = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][n % 3];
                }
            }
            Tensor::from_f32_as(t.shape().to_vec(), &x, dtype).unwrap()
        };
        let (kj, vj) = (poison(&k), poison(&v));
        // The fused path on the adapter's configuration and with a subgroup per decode key.
        for (path, cx, how) in [
            (ExecutionPath::Staged, ctx(), ""),
            (ExecutionPath::Fused, ctx(), ""),
            (ExecutionPath::Fused, tuned(5), " subgroup keys"),
        ] {
            let options = AttentionOptions {
                causal: true,
                causal_offset: Some(30),
                path,
                ..Default::default()
            };
            let run = |k: &Tensor, v: &Tensor| {
                let inputs = AttentionInputs::new(&q, k, v)
                    .with_kv_lengths(&lengths)
                    .with_mask(&mask);
                masked_attention(cx, &inputs, &options).unwrap().out
            };
            let clean = run(&k, &v);
            let junk = run(&kj, &vj);
            assert!(
                junk.to_f32_vec().iter().all(|x| x.is_finite()),
                "{path:?}{how} {dtype} Lq={lq}: junk leaked"
            );
            assert_eq!(
                junk, clean,
                "{path:?}{how} {dtype} Lq={lq}: junk changed the result"
            );
            let inputs = AttentionInputs::new(&q, &kj, &vj)
                .with_kv_lengths(&lengths)
                .with_mask(&mask);
            let want = reference::masked_attention(&inputs, &options).unwrap();
            assert_close(
                &format!("{path:?}{how} {dtype} Lq={lq} vs reference"),
                &junk,
                &want.out,
                Tol::for_dtype(dtype),
            );
        }
    }
}

/// 66,000 query rows of one key each: more workgroups than one grid dimension allows, on the
/// decode kernel (the adapter's configuration) and on the prefill kernel (seed 28 picks the
/// configuration without the decode kernel).
#[test]
fn fused_grid_beyond_one_dimension() {
    check(
        "66000 rows",
        Case {
            b: 2,
            hq: 33_000,
            hkv: 1,
            lq: 1,
            lk: 9,
            d: 4,
            dv: 4,
            ..Case::default()
        },
        28,
    );
}
