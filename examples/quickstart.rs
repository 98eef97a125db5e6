//! The README's API example: causal GQA attention over a right-padded batch, on the GPU, checked
//! against the CPU reference.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! Needs an adapter; without a GPU install the software Vulkan driver
//! (`apt-get install -y mesa-vulkan-drivers`).

use wgattn::{
    masked_attention, masks, reference, AttentionInputs, AttentionOptions, Context, Tensor,
};

fn main() -> anyhow::Result<()> {
    let ctx = Context::new()?;

    // Batch 2, 4 query heads sharing 2 key/value heads (GQA), 6 tokens, head size 8.
    let (b, hq, hkv, l, d) = (2, 4, 2, 6, 8);
    let fill = |n: usize, seed: f32| (0..n).map(|i| (i as f32 * 0.37 + seed).sin()).collect();
    let q = Tensor::from_f32([b, hq, l, d], fill(b * hq * l * d, 0.1))?;
    let k = Tensor::from_f32([b, hkv, l, d], fill(b * hkv * l * d, 0.2))?;
    let v = Tensor::from_f32([b, hkv, l, d], fill(b * hkv * l * d, 0.3))?;

    // The second sequence has 4 real tokens and 2 of right padding (HF: 1 = keep, 0 = pad).
    let hf_attention_mask = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0];
    let padding = masks::from_hf_attention_mask(&hf_attention_mask, b, l)?;

    let inputs = AttentionInputs::new(&q, &k, &v).with_mask(&padding);
    let options = AttentionOptions {
        causal: true,
        ..Default::default()
    };
    let result = masked_attention(&ctx, &inputs, &options)?;
    assert_eq!(result.out.shape(), &[b, hq, l, d]);

    let out = result.out.to_f32_vec();
    let info = ctx.adapter_info();
    println!("adapter: {} ({:?})", info.name, info.backend);
    println!("out[0, 0, 0, :] = {:?}", &out[..d]);

    // The CPU reference (f64) computes the same contract.
    let want = reference::masked_attention(&inputs, &options)?
        .out
        .to_f32_vec();
    let max_err = out
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("max |gpu - reference| = {max_err:.2e}");
    anyhow::ensure!(max_err < 1e-4, "GPU and reference disagree by {max_err}");

    // Key lengths (ONNX nonpad_kv_seqlen) express the same padding WITHOUT causal. With
    // causal they would also move the causal frontier (see the README's trap section).
    let lengths = [6, 4];
    let by_length = AttentionInputs::new(&q, &k, &v).with_kv_lengths(&lengths);
    let by_mask = AttentionInputs::new(&q, &k, &v).with_mask(&padding);
    let plain = AttentionOptions::default();
    let a = masked_attention(&ctx, &by_length, &plain)?.out.to_f32_vec();
    let m = masked_attention(&ctx, &by_mask, &plain)?.out.to_f32_vec();
    let diff = a
        .iter()
        .zip(&m)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    println!("non-causal: key lengths vs padding mask, max difference {diff:.2e}");
    Ok(())
}
