//! PyTorch's mask conventions held against PyTorch itself: `tests/data/torch_mha.safetensors`
//! holds `nn.MultiheadAttention` results (float64, identity projections, so the output is the
//! heads' attention; written by `tests/oracle/make_torch_fixtures.py`), and each scenario runs
//! here through `masks::from_key_padding_mask`, `masks::from_mha_attn_mask` and
//! `masks::combine` on every path. `[N, L, E]` with `E = H * D` is the `bshd` layout.

mod common;

use anyhow::{anyhow, bail, Context as _, Result};
use safetensors::{Dtype, SafeTensors};
use wgattn::{
    masks, reference, AttentionInputs, AttentionOptions, ExecutionPath, Layout, Mask, Returns,
    Tensor,
};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/torch_mha.safetensors"
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
        .map_err(|e| anyhow!("{FIXTURE}: tensor {name}: {e}"))
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

/// An f32 input `[N, S, E]` as `[N, S, H, D]` (bshd).
fn input(file: &SafeTensors<'_>, name: &str, heads: usize) -> Result<Tensor> {
    let (shape, data) = floats(file, name)?;
    let [n, s, e] = shape[..] else {
        bail!("{name}: shape {shape:?}")
    };
    let data = data.into_iter().map(|x| x as f32).collect();
    Ok(Tensor::from_f32([n, s, heads, e / heads], data)?)
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
