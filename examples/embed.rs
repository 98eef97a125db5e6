//! Embedding the engine in an app that already has a device: Q, K, V live in the app's own
//! buffers; one command encoder records the attention, then the app's own colormap pass from
//! the attention output into a texture, then the copy of the texture out; one submission.
//! The texture is saved as a PNG (heads stacked vertically, one row per query, one column per
//! value channel; viridis-like colours over [-1, 1]).
//!
//! ```sh
//! cargo run --example embed -- embed.png
//! ```
//!
//! Runs headless on any adapter, the software one included; `tests/example_embed.rs` runs it
//! and checks the picture against the CPU reference.

#[path = "common/app.rs"]
pub mod app;

use anyhow::{Context as _, Result};
use app::{Colormap, Readback};
use wgattn::{record_attention, AttentionOptions, Context, DType, GpuInputs, GpuTensor, Tensor};

/// Batch 1, 4 query heads over 2 key/value heads, 48 queries and keys, head size 32.
pub const SHAPE: (usize, usize, usize, usize, usize) = (1, 4, 2, 48, 32);

/// Deterministic inputs in [-1, 1).
pub fn inputs() -> (Tensor, Tensor, Tensor) {
    let (b, hq, hkv, l, d) = SHAPE;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: usize| app::uniform(&mut state, n);
    let q = Tensor::from_f32([b, hq, l, d], next(b * hq * l * d));
    let k = Tensor::from_f32([b, hkv, l, d], next(b * hkv * l * d));
    let v = Tensor::from_f32([b, hkv, l, d], next(b * hkv * l * d));
    match (q, k, v) {
        (Ok(q), Ok(k), Ok(v)) => (q, k, v),
        _ => unreachable!("the shapes match the data"),
    }
}

/// The options of the example: causal attention.
pub fn options() -> AttentionOptions {
    AttentionOptions {
        causal: true,
        ..Default::default()
    }
}

/// Runs the example and writes the PNG to `path`; returns the texture's RGBA bytes, row by
/// row, and its width and height.
pub fn run(path: &std::path::Path) -> Result<(Vec<u8>, u32, u32)> {
    // The app's device (here a fresh one; an app would use its renderer's).
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default()))
        .context("no adapter (install mesa-vulkan-drivers for the software one)")?;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("app device"),
        required_limits: adapter.limits(),
        ..Default::default()
    }))?;
    let ctx = Context::from_device(device.clone(), queue.clone(), adapter.get_info());

    // The app's buffers: Q, K, V uploaded once; out written by the engine.
    let (b, hq, _, l, d) = SHAPE;
    let (q, k, v) = inputs();
    let upload = |label, bytes: &[u8]| app::storage(&device, &queue, label, bytes);
    let q_buf = upload("q", &q.to_le_bytes());
    let k_buf = upload("k", &k.to_le_bytes());
    let v_buf = upload("v", &v.to_le_bytes());
    let out_shape = [b, hq, l, d];
    let out_buf = upload("out", &vec![0u8; b * hq * l * d * 4]);

    let (width, height) = (d as u32, (b * hq * l) as u32);
    let colormap = Colormap::new(
        &device,
        &out_buf,
        (width, height),
        wgpu::TextureUsages::empty(),
    );
    let readback = Readback::new(&device, colormap.texture.size());

    // One encoder: attention, the colormap pass, the copy out. One submission.
    let mut encoder = device.create_command_encoder(&Default::default());
    let gpu = |buffer, shape| GpuTensor::new(buffer, shape, DType::F32);
    let (q_shape, k_shape) = (q.shape().to_vec(), k.shape().to_vec());
    let inputs = GpuInputs::new(
        gpu(&q_buf, &q_shape),
        gpu(&k_buf, &k_shape),
        gpu(&v_buf, &k_shape),
    );
    let recorded = record_attention(
        &ctx,
        &mut encoder,
        &inputs,
        &options(),
        &gpu(&out_buf, &out_shape),
    )?;
    colormap.record(&mut encoder);
    readback.record_copy(&mut encoder, &colormap.texture);
    queue.submit([encoder.finish()]);
    drop(recorded);

    let rgba = readback.read(&device)?;
    app::write_png(path, &rgba, width, height)?;
    Ok((rgba, width, height))
}

#[allow(dead_code)] // the test includes this file and calls `run` itself
fn main() -> Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "embed.png".into());
    let (_, w, h) = run(std::path::Path::new(&path))?;
    println!("wrote {path} ({w} x {h}: heads stacked, queries down, value channels across)");
    Ok(())
}
