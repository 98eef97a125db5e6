//! Other libraries' mask conventions held against those libraries' own results, written by
//! `tests/oracle/make_torch_fixtures.py` (see there for how each was computed):
//!
//! - `tests/data/torch_mha.safetensors`: PyTorch `nn.MultiheadAttention` (float64, identity
//!   projections, so the output is the heads' attention), each scenario run here through
//!   `masks::from_key_padding_mask`, `masks::from_mha_attn_mask` and `masks::combine`.
//!   `[N, L, E]` with `E = H * D` is the `bshd` layout.
//! - `tests/data/hf_attention.safetensors`: the attention inside tiny HF Transformers models
//!   (Llama with a right-padded batch and a left-padded decode step after a cache, Mistral's
//!   sliding window, Gemma 2's softcap and scale), run here through
//!   `masks::from_hf_attention_mask` with causal attention, a past cache and windows in this
//!   crate's terms.
//!
//! Every path: the CPU reference, staged and fused.

mod common;

use anyhow::{anyhow, bail, Context as _, Result};
use safetensors::{Dtype, SafeTensors};
use wgattn::{
    masks, reference, AttentionInputs, AttentionOptions, DType, ExecutionPath, Layout, Mask,
    Returns, Tensor,
};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/torch_mha.safetensors"
);
const HF_FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/hf_attention.safetensors"
);

/// Scenario name and its number of heads (`E / H` is the head size).
const SCENARIOS: [(&str, usize); 3] = [("per_head", 4), ("causal", 3), ("shared", 1)];

struct Scenario {
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Mask,
    /// torch's `attn_output`, `[N, L, E]`.
    out: Vec<f64>,
    /// torch's per-head attention weights, `[N, H, L, S]`.
    weights: Vec<f64>,
}

fn tensor<'a>(
    file: &'a SafeTensors<'a>,
    name: &str,
) -> Result<safetensors::tensor::TensorView<'a>> {
    file.tensor(name)
        .map_err(|e| anyhow!("fixture tensor {name}: {e}"))
}

fn floats(file: &SafeTensors<'_>, name: &str) -> Result<(Vec<usize>, Vec<f64>)> {
    let t = tensor(file, name)?;
    let data = match t.dtype() {
        Dtype::F32 => t
            .data()
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        Dtype::F64 => t
            .data()
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(std::array::from_fn(|i| c[i])))
            .collect(),
        other => bail!("{name}: unexpected dtype {other}"),
    };
    Ok((t.shape().to_vec(), data))
}

/// An F32 tensor as stored, in `shape` (default: its own).
fn f32_tensor(file: &SafeTensors<'_>, name: &str, shape: Option<Vec<usize>>) -> Result<Tensor> {
    let t = tensor(file, name)?;
    if t.dtype() != Dtype::F32 {
        bail!("{name}: expected F32, got {}", t.dtype());
    }
    let shape = shape.unwrap_or_else(|| t.shape().to_vec());
    Ok(Tensor::from_le_bytes(shape, DType::F32, t.data())?)
}

/// An f32 input `[N, S, E]` as `[N, S, H, D]` (bshd).
fn input(file: &SafeTensors<'_>, name: &str, heads: usize) -> Result<Tensor> {
    let shape = tensor(file, name)?.shape().to_vec();
    let [n, s, e] = shape[..] else {
        bail!("{name}: shape {shape:?}")
    };
    f32_tensor(file, name, Some(vec![n, s, heads, e / heads]))
}

fn ints(file: &SafeTensors<'_>, name: &str) -> Result<(Vec<usize>, Vec<i64>)> {
    let t = tensor(file, name)?;
    if t.dtype() != Dtype::I64 {
        bail!("{name}: expected I64, got {}", t.dtype());
    }
    let data = t
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(std::array::from_fn(|i| c[i])))
        .collect();
    Ok((t.shape().to_vec(), data))
}

fn flags(file: &SafeTensors<'_>, name: &str) -> Result<(Vec<usize>, Vec<bool>)> {
    let t = tensor(file, name)?;
    Ok((
        t.shape().to_vec(),
        t.data().iter().map(|&x| x != 0).collect(),
    ))
}

fn load(file: &SafeTensors<'_>, name: &str, heads: usize) -> Result<Scenario> {
    let query = input(file, &format!("{name}.query"), heads)?;
    let (attn_shape, attn) = flags(file, &format!("{name}.attn_mask"))?;
    let mut mask = masks::from_mha_attn_mask(&attn, &attn_shape, heads)?;
    if let Ok((shape, padding)) = flags(file, &format!("{name}.key_padding_mask")) {
        let padding = masks::from_key_padding_mask(&padding, shape[0], shape[1])?;
        mask = masks::combine(&padding, &mask)?;
    }
    Ok(Scenario {
        query,
        key: input(file, &format!("{name}.key"), heads)?,
        value: input(file, &format!("{name}.value"), heads)?,
        mask,
        out: floats(file, &format!("{name}.out"))?.1,
        weights: floats(file, &format!("{name}.weights"))?.1,
    })
}

fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}: element {i}: got {g}, torch {w}"
        );
    }
}

#[test]
fn multihead_attention_masks_match_pytorch_on_every_path() -> Result<()> {
    let bytes = std::fs::read(FIXTURE).with_context(|| format!("reading {FIXTURE}"))?;
    let file = SafeTensors::deserialize(&bytes)?;
    for (name, heads) in SCENARIOS {
        let s = load(&file, name, heads).with_context(|| format!("scenario {name}"))?;
        let inputs = AttentionInputs::new(&s.query, &s.key, &s.value).with_mask(&s.mask);
        let probs = Returns {
            probs: true,
            ..Returns::default()
        };
        let options = |path, returns| AttentionOptions {
            layout: Layout::Bshd,
            path,
            returns,
            ..AttentionOptions::default()
        };
        // `probs` is [N, H, L, S] whatever the layout, as torch's weights are.
        let cpu = reference::masked_attention(&inputs, &options(ExecutionPath::Auto, probs))?;
        let cpu_probs = cpu.probs.context("reference probs")?;
        assert_close(
            &format!("{name}, reference: out"),
            &cpu.out.to_f64_vec(),
            &s.out,
            2e-7,
        );
        assert_close(
            &format!("{name}, reference: probs"),
            &cpu_probs.to_f64_vec(),
            &s.weights,
            2e-7,
        );
        let staged = options(ExecutionPath::Staged, probs);
        let fused = options(ExecutionPath::Fused, Returns::default());
        for options in [staged, fused] {
            let what = format!("{name}, {:?}", options.path);
            let gpu = wgattn::masked_attention(common::ctx(), &inputs, &options)?;
            assert_close(&format!("{what}: out"), &gpu.out.to_f64_vec(), &s.out, 2e-6);
            if let Some(p) = gpu.probs {
                assert_close(&format!("{what}: probs"), &p.to_f64_vec(), &s.weights, 2e-6);
            }
        }
    }
    Ok(())
}

#[test]
fn the_fixture_masks_are_not_trivial() -> Result<()> {
    // A check on the fixture itself: each scenario's combined mask disallows some positions
    // (else the test above would not see a mask at all) and no row is fully masked (torch
    // gives NaN there, the contract 0).
    let bytes = std::fs::read(FIXTURE)?;
    let file = SafeTensors::deserialize(&bytes)?;
    for (name, heads) in SCENARIOS {
        let s = load(&file, name, heads)?;
        let Mask::Bool(m) = &s.mask else {
            bail!("{name}: expected a boolean mask")
        };
        let keys = *m.shape().last().context("mask rank")?;
        let rows: Vec<&[bool]> = m.data().chunks(keys).collect();
        assert!(
            rows.iter().any(|r| r.contains(&false)),
            "{name}: nothing masked"
        );
        assert!(
            rows.iter().all(|r| r.contains(&true)),
            "{name}: a fully masked row"
        );
    }
    Ok(())
}

/// The HF scenarios of `hf_attention.safetensors`.
const HF_SCENARIOS: [&str; 4] = [
    "llama_padded",
    "llama_decode",
    "mistral_window",
    "gemma2_softcap",
];

#[test]
fn hf_transformers_attention_matches_on_every_path() -> Result<()> {
    let bytes = std::fs::read(HF_FIXTURE).with_context(|| format!("reading {HF_FIXTURE}"))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)?;
    let meta = header.metadata().clone().context("fixture metadata")?;
    let file = SafeTensors::deserialize(&bytes)?;
    for name in HF_SCENARIOS {
        let t = |part: &str| f32_tensor(&file, &format!("{name}.{part}"), None);
        let (q, k, v) = (t("q")?, t("k")?, t("v")?);
        let past = match (t("past_k"), t("past_v")) {
            (Ok(pk), Ok(pv)) => Some((pk, pv)),
            _ => None,
        };
        let (mask_shape, hf_mask) = ints(&file, &format!("{name}.attention_mask"))?;
        let mask = masks::from_hf_attention_mask(&hf_mask, mask_shape[0], mask_shape[1])?;
        let want = floats(&file, &format!("{name}.out"))?.1;
        let o: serde_json::Value = serde_json::from_str(meta.get(name).context("options")?)?;
        let number = |key: &str| o[key].as_f64().with_context(|| format!("{name}: {key}"));
        let base = AttentionOptions {
            causal: o["causal"].as_bool() == Some(true),
            scale: Some(number("scale")? as f32),
            softcap: number("softcap")? as f32,
            window_left: number("window_left")? as i64,
            ..AttentionOptions::default()
        };
        let mut inputs = AttentionInputs::new(&q, &k, &v).with_mask(&mask);
        if let Some((pk, pv)) = &past {
            inputs = inputs.with_past(pk, pv);
        }
        let cpu = reference::masked_attention(&inputs, &base)?;
        assert_close(
            &format!("{name}, reference"),
            &cpu.out.to_f64_vec(),
            &want,
            1e-5,
        );
        for path in [ExecutionPath::Staged, ExecutionPath::Fused] {
            let options = AttentionOptions { path, ..base };
            let gpu = wgattn::masked_attention(common::ctx(), &inputs, &options)?;
            assert_close(
                &format!("{name}, {path:?}"),
                &gpu.out.to_f64_vec(),
                &want,
                1e-5,
            );
            if let Some((pk, _)) = &past {
                // The keys HF attended: per (batch, head) the cache's rows, then the new one.
                let present = gpu.present_k.context("present_k")?.to_f64_vec();
                let (old, new) = (pk.to_f64_vec(), k.to_f64_vec());
                let (p, d) = (pk.shape()[2], pk.shape()[3]);
                let want: Vec<f64> = old
                    .chunks(p * d)
                    .zip(new.chunks(d))
                    .flat_map(|(o, n)| o.iter().chain(n).copied())
                    .collect();
                assert_eq!(present, want, "{name}: present_k");
            }
        }
    }
    Ok(())
}
