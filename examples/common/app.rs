//! The app side that the embedding examples share (`examples/embed.rs`,
//! `examples/live_window.rs`; each includes this file with `#[path]`): the colormap compute
//! pass from an attention output into a texture and its CPU twin for the tests, buffer
//! uploads, the read-back of a texture, the PNG writer and deterministic inputs.

use anyhow::{Context as _, Result};

/// The colormap pass: `values` (f32, row-major) to an rgba8 texture, one value per texel,
/// `width` values a row (`[B, H, L, Dv]` becomes `Dv x (B * H * L)`).
const SHADER: &str = r#"
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

/// The shader's `viridis`, on the CPU (the tests colour the CPU reference with it).
#[allow(dead_code)] // used by the tests that include the examples
pub fn viridis(t: f32) -> [f32; 3] {
    let c: [[f32; 3]; 7] = [
        [0.2777, 0.0054, 0.3341],
        [0.1051, 1.4046, 1.3846],
        [-0.3309, 0.2148, 0.0951],
        [-4.6342, -5.7991, -19.3324],
        [6.2283, 14.1799, 56.6906],
        [4.7764, -13.7451, -65.3530],
        [-5.4355, 4.6459, 26.3124],
    ];
    let mut rgb = [0.0f32; 3];
    for (ch, out) in rgb.iter_mut().enumerate() {
        let mut x = c[6][ch];
        for k in (0..6).rev() {
            x = c[k][ch] + t * x;
        }
        *out = x.clamp(0.0, 1.0);
    }
    rgb
}

/// The colour the pass gives the value `x`, as 8-bit RGB (what an rgba8unorm store rounds to).
#[allow(dead_code)] // used by the tests that include the examples
pub fn rgb8(x: f32) -> [u8; 3] {
    viridis((x * 0.5 + 0.5).clamp(0.0, 1.0)).map(|c| (c * 255.0).round() as u8)
}

/// The colormap pass and its texture, bound to one values buffer.
pub struct Colormap {
    /// The picture: `Rgba8Unorm`, `STORAGE_BINDING | COPY_SRC` plus the usages asked for.
    pub texture: wgpu::Texture,
    pipeline: wgpu::ComputePipeline,
    group: wgpu::BindGroup,
}

impl Colormap {
    /// A `width x height` picture of `values` (at least `width * height` f32), with the
    /// texture usages in `usage` besides the pass's own.
    pub fn new(
        device: &wgpu::Device,
        values: &wgpu::Buffer,
        (width, height): (u32, u32),
        usage: wgpu::TextureUsages,
    ) -> Colormap {
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
            usage: wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_SRC | usage,
            view_formats: &[],
        });
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("colormap"),
            source: wgpu::ShaderSource::Wgsl(SHADER.into()),
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
                    resource: values.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: wgpu::BindingResource::TextureView(&view),
                },
            ],
        });
        Colormap {
            texture,
            pipeline,
            group,
        }
    }

    /// Records the pass (values to texture) into `encoder`.
    pub fn record(&self, encoder: &mut wgpu::CommandEncoder) {
        let size = self.texture.size();
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("colormap"),
            timestamp_writes: None,
        });
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.group, &[]);
        pass.dispatch_workgroups(size.width.div_ceil(8), size.height.div_ceil(8), 1);
    }
}

/// A buffer to copy a 4-byte-per-texel texture into and read it on the host.
pub struct Readback {
    buffer: wgpu::Buffer,
    size: wgpu::Extent3d,
    row_bytes: u32,
}

impl Readback {
    /// Room for one `size` texture of 4 bytes a texel.
    pub fn new(device: &wgpu::Device, size: wgpu::Extent3d) -> Readback {
        let row_bytes = (size.width * 4).next_multiple_of(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT);
        let buffer = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("picture read-back"),
            size: u64::from(row_bytes) * u64::from(size.height),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Readback {
            buffer,
            size,
            row_bytes,
        }
    }

    /// Records the copy of `texture` (of this read-back's size, `COPY_SRC`) into `encoder`.
    pub fn record_copy(&self, encoder: &mut wgpu::CommandEncoder, texture: &wgpu::Texture) {
        encoder.copy_texture_to_buffer(
            texture.as_image_copy(),
            wgpu::TexelCopyBufferInfo {
                buffer: &self.buffer,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(self.row_bytes),
                    rows_per_image: None,
                },
            },
            self.size,
        );
    }

    /// After the copy's submission: waits for it and returns the texels, row by row without
    /// padding, in the texture's byte order.
    pub fn read(&self, device: &wgpu::Device) -> Result<Vec<u8>> {
        self.buffer.map_async(wgpu::MapMode::Read, .., |_| {});
        device.poll(wgpu::PollType::wait_indefinitely())?;
        let mapped = self.buffer.get_mapped_range(..)?;
        let width = (self.size.width * 4) as usize;
        let mut texels = Vec::with_capacity(width * self.size.height as usize);
        for row in mapped.chunks(self.row_bytes as usize) {
            texels.extend_from_slice(&row[..width]);
        }
        drop(mapped);
        self.buffer.unmap();
        Ok(texels)
    }
}

/// Writes RGBA8 pixels, row by row, as a PNG.
pub fn write_png(path: &std::path::Path, rgba: &[u8], width: u32, height: u32) -> Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("creating {path:?}"))?;
    let mut png = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    png.set_color(png::ColorType::Rgba);
    png.set_depth(png::BitDepth::Eight);
    png.write_header()?.write_image_data(rgba)?;
    Ok(())
}

/// A `STORAGE | COPY_DST` buffer holding `bytes` (the upload is queued).
pub fn storage(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    label: &str,
    bytes: &[u8],
) -> wgpu::Buffer {
    let buffer = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes.len() as u64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    queue.write_buffer(&buffer, 0, bytes);
    buffer
}

/// `n` deterministic values in [-1, 1) from a small LCG seeded by `state` (the examples need
/// no RNG crate); `state` is advanced, so successive calls continue the sequence.
pub fn uniform(state: &mut u64, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((*state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}
