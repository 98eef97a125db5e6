//! A custom mask in five lines of WGSL: packed documents, causal inside each, plus a global
//! first token every query sees. Runs it on the GPU and checks it against the CPU reference,
//! which takes the same mask as a Rust closure.
//!
//! `cargo run --example custom_mask` (needs an adapter; lavapipe will do).

use wgattn::reference::{self, RustMods};
use wgattn::{masked_attention, AttentionInputs, AttentionOptions, Aux, Context, MaskMods, Tensor};

fn main() -> anyhow::Result<()> {
    let (adapter, shape, worst) = run()?;
    println!(
        "custom mask on {adapter}: out {shape:?}, largest difference from the CPU reference \
         {worst:.2e}"
    );
    anyhow::ensure!(worst < 1e-4, "GPU and CPU disagree by {worst}");
    Ok(())
}

/// Runs the mask on the GPU and the CPU: the adapter's name, the output's shape and the
/// largest difference between the two.
pub fn run() -> anyhow::Result<(String, Vec<usize>, f32)> {
    let ctx = Context::new()?;
    let (h, l, d) = (2, 24, 16);
    let data = |seed: f32| -> Vec<f32> {
        (0..h * l * d)
            .map(|i| (i as f32 * 0.37 + seed).sin() * 0.8)
            .collect()
    };
    let q = Tensor::from_f32([1, h, l, d], data(0.1))?;
    let k = Tensor::from_f32([1, h, l, d], data(1.3))?;
    let v = Tensor::from_f32([1, h, l, d], data(2.9))?;
    // Three documents of 10, 6 and 8 tokens.
    let doc_ids: Vec<i32> = (0..l as i32)
        .map(|j| (j >= 10) as i32 + (j >= 16) as i32)
        .collect();

    let mods = MaskMods {
        mask_mod: Some(
            "
            let same_doc = aux_doc[q] == aux_doc[k];
            let causal = k <= q;
            let global = k == 0u;
            return (same_doc && causal) || global;
            "
            .into(),
        ),
        aux: vec![Aux::i32("doc", doc_ids.clone())],
        ..Default::default()
    };
    let inputs = AttentionInputs::new(&q, &k, &v).with_mods(&mods);
    let options = AttentionOptions::default();
    let gpu = masked_attention(&ctx, &inputs, &options)?;

    let mask = move |_b: usize, _h: usize, q: usize, k: usize| {
        (doc_ids[q] == doc_ids[k] && k <= q) || k == 0
    };
    let rust = RustMods {
        mask_mod: Some(&mask),
        score_mod: None,
    };
    let cpu = reference::masked_attention_with(&inputs, &options, rust)?;
    let worst = gpu
        .out
        .to_f32_vec()
        .iter()
        .zip(cpu.out.to_f32_vec())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    Ok((
        ctx.adapter_info().name.clone(),
        gpu.out.shape().to_vec(),
        worst,
    ))
}
