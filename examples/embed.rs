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

use anyhow::{Context as _, Result};
use wgattn::{record_attention, AttentionOptions, Context, DType, GpuInputs, GpuTensor, Tensor};

/// Batch 1, 4 query heads over 2 key/value heads, 48 queries and keys, head size 32.
pub const SHAPE: (usize, usize, usize, usize, usize) = (1, 4, 2, 48, 32);

/// The app's colormap pass: out `[B, H, L, Dv]` (f32) to an rgba8 texture `Dv x (H * L)`.
const COLORMAP: &str = r#"
@group(0) @binding(0) var<storage, read> values: array<f32>;
@group(0) @binding(1) var image: texture_storage_2d<rgba8unorm, write>;

// A degree-6 polynomial fit of viridis (after Matt Zucker, CC0), t in [0, 1].
fn viridis(t: f32) -> vec3<f32> {
    let c0 = vec3<f32>(0.2777, 0.0054, 0.3341);
    let c1 = vec3<f32>(0.1051, 1.4046, 1.3846);
    let c2 = vec3<f32>(-0.3309, 0.2148, 0.0951);
    let c3 = vec3<f32>(-4.6342, -5.7991, -19.3324);
    let c4 = vec3<f32>(6.2283, 14.1799, 56.6906);
    let c5 = vec3<f32>(4.7764, -13.7451, -65.3530);
    let c6 = vec3<f32>(-5.4355, 4.6459, 26.3124);
    return clamp(c0 + t * (c1 + t * (c2 + t * (c3 + t * (c4 + t * (c5 + t * c6))))), vec3<f32>(0.0), vec3<f32>(1.0));
}

@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let size = textureDimensions(image);
    if (id.x >= size.x || id.y >= size.y) {
        return;
    }
    let x = values[id.y * size.x + id.x];
    let t = clamp(x * 0.5 + 0.5, 0.0, 1.0);
    textureStore(image, vec2<i32>(id.xy), vec4<f32>(viridis(t), 1.0));
}
"#;

/// Deterministic inputs in [-1, 1) (a small LCG: the example needs no RNG crate).
pub fn inputs() -> (Tensor, Tensor, Tensor) {
    let (b, hq, hkv, l, d) = SHAPE;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    };
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
    let storage = |label: &str, bytes: &[u8], usage: wgpu::BufferUsages| {
        let buffer = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.len() as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | usage,
            mapped_at_creation: false,
        });
        queue.write_buffer(&buffer, 0, bytes);
        buffer
    };
    let none = wgpu::BufferUsages::empty();
    let q_buf = storage("q", &q.to_le_bytes(), none);
    let k_buf = storage("k", &k.to_le_bytes(), none);
    let v_buf = storage("v", &v.to_le_bytes(), none);
    let out_shape = [b, hq, l, d];
    let out_buf = storage("out", &vec![0u8; b * hq * l * d * 4], none);

    let (width, height) = (d as u32, (b * hq * l) as u32);
    let texture = device.create_texture(&wgpu::TextureDescriptor {
        label: Some("attention picture"),
        size: wgpu::Extent3d {
            width,
            height,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba8Unorm,
        usage: wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_SRC,
        view_formats: &[],
    });
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("colormap"),
        source: wgpu::ShaderSource::Wgsl(COLORMAP.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("colormap"),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let view = texture.create_view(&Default::default());
    let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("colormap"),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: out_buf.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: wgpu::BindingResource::TextureView(&view),
            },
        ],
    });
    let row_bytes = (width * 4).next_multiple_of(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT);
    let readback = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("picture read-back"),
        size: (row_bytes * height) as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });

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
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &group, &[]);
        pass.dispatch_workgroups(width.div_ceil(8), height.div_ceil(8), 1);
    }
    encoder.copy_texture_to_buffer(
        texture.as_image_copy(),
        wgpu::TexelCopyBufferInfo {
            buffer: &readback,
            layout: wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(row_bytes),
                rows_per_image: None,
            },
        },
        texture.size(),
    );
    queue.submit([encoder.finish()]);
    drop(recorded);

    readback.map_async(wgpu::MapMode::Read, .., |_| {});
    device.poll(wgpu::PollType::wait_indefinitely())?;
    let mapped = readback.get_mapped_range(..)?;
    let mut rgba = Vec::with_capacity((width * height * 4) as usize);
    for row in mapped.chunks(row_bytes as usize) {
        rgba.extend_from_slice(&row[..(width * 4) as usize]);
    }
    drop(mapped);
    readback.unmap();

    let file = std::fs::File::create(path).with_context(|| format!("creating {path:?}"))?;
    let mut png = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    png.set_color(png::ColorType::Rgba);
    png.set_depth(png::BitDepth::Eight);
    png.write_header()?.write_image_data(&rgba)?;
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
