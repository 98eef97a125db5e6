//! Lane probe (benchmarks/2026-12-04-lane-probe.rs), after benchmarks/2026-12-04-load-probe.rs:
//! the same 128 MiB of f32 rows (262,144 rows of 128) read with other mappings of rows to
//! invocations, to see whether the decode kernel's layout (one key row per invocation) or
//! its loops are what cost. Kinds:
//! - storage, storage-in-loop: one row per invocation, straight-line and inside a loop whose
//!   trip count the compiler cannot see (the load probe's);
//! - uniform-wg1 / uniform-wg8: rows read at addresses uniform across the workgroup (one
//!   invocation, or eight doing the same work), 64 rows per workgroup in a loop;
//! - lane-d: a subgroup of 8 per row, each invocation four vec4s of it (constant loops);
//! - lane-d-dyn-il: the same, rows in a loop of runtime trip count under a condition, the
//!   vec4s interleaved across the subgroup (neighbouring invocations, neighbouring words);
//! - lane-rt2: as lane-d-dyn-il with the per-invocation loop strided by the runtime
//!   `subgroup_size` (a runtime trip count);
//! - lane-ct: as lane-d-dyn-il with the subgroup's size and place counted by subgroupAdd /
//!   subgroupExclusiveAdd and a constant trip count with a guard (what fused_decode's
//!   SUBGROUP_KEYS layout does).
//! Not part of the crate: build it in a scratch crate with
//!   [dependencies] wgpu = "30", pollster = "0.4", bytemuck = "1"
//! and run `WGPU_BACKEND=vulkan cargo run --release`. Prints the median of 7 rounds per kind,
//! the kinds interleaved within each round.
use std::time::Instant;
use wgpu::util::DeviceExt;

const ROWS: u32 = 8192 * 32; // keys x heads of the decode target
const D4: u32 = 32; // D = 128
const WIDTH: u32 = 4096; // texels per texture row
const KINDS: [&str; 8] = ["storage", "storage-in-loop", "uniform-wg1", "uniform-wg8", "lane-d", "lane-d-dyn-il", "lane-rt2", "lane-ct"];

fn shader(kind: &str) -> String {
    if kind.starts_with("lane-ct") {
        let guard = if kind == "lane-ct" { "d4 < D4" } else { "true" };
        return format!(r#"
const D4: u32 = {D4}u;
const PL: u32 = 4u;
@group(0) @binding(0) var<storage, read> kb: array<vec4<f32>>;
@group(0) @binding(1) var kt: texture_2d<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> q: array<vec4<f32>, D4>;
var<private> qr: array<vec4<f32>, PL>;
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) w: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
    let sg = subgroupAdd(1u);
    let lane = subgroupExclusiveAdd(1u);
    let r0 = (w.x + w.y * n.x) * 64u + (lid / sg) * sg;
    for (var k = 0u; k < PL; k++) {{ let d4 = lane + k * sg; if ({guard}) {{ qr[k] = q[d4]; }} }}
    for (var t = 0u; t < n.z * sg; t++) {{
        let r = r0 + t;
        var a = vec4<f32>(0.0);
        if (n.x != 3u + t) {{
        for (var k = 0u; k < PL; k++) {{
            let d4 = lane + k * sg;
            if ({guard}) {{
                a += qr[k] * kb[r * D4 + d4];
            }}
        }}
        }}
        let s = subgroupAdd(dot(a, vec4<f32>(1.0)));
        if (lane == 0u) {{
            out[r] = s + f32(arrayLength(&kb)) * 0.0 + f32(textureDimensions(kt).x) * 0.0;
        }}
    }}
}}
"#);
    }
    if kind.starts_with("lane-rt") {
        let acc = if kind == "lane-rt2" { "a += qr[k] * kb[r * D4 + d4]; k++;" } else { "a += q[d4] * kb[r * D4 + d4];" };
        return format!(r#"
const D4: u32 = {D4}u;
@group(0) @binding(0) var<storage, read> kb: array<vec4<f32>>;
@group(0) @binding(1) var kt: texture_2d<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> q: array<vec4<f32>, D4>;
var<private> qr: array<vec4<f32>, D4>;
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) w: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>, @builtin(local_invocation_index) lid: u32,
        @builtin(subgroup_invocation_id) lane: u32, @builtin(subgroup_size) sg: u32) {{
    let r0 = (w.x + w.y * n.x) * 64u + (lid / sg) * sg;
    var k = 0u;
    for (var d4 = lane; d4 < D4; d4 += sg) {{ qr[k] = q[d4]; k++; }}
    for (var t = 0u; t < n.z * sg; t++) {{
        let r = r0 + t;
        var a = vec4<f32>(0.0);
        if (n.x != 3u + t) {{
        k = 0u;
        for (var d4 = lane; d4 < D4; d4 += sg) {{
            {acc}
        }}
        }}
        let s = subgroupAdd(dot(a, vec4<f32>(1.0)));
        if (lane == 0u) {{
            out[r] = s + f32(arrayLength(&kb)) * 0.0 + f32(textureDimensions(kt).x) * 0.0;
        }}
    }}
}}
"#);
    }
    if kind.starts_with("lane-d") {
        let (open, close) = if kind != "lane-d" { ("if (n.x != 3u + t) {", "}") } else { ("", "") };
        let trips = if kind != "lane-d" { "n.z * 8u" } else { "8u" };
        let idx = if kind == "lane-d-dyn-il" { "k * 8u + lane" } else { "lane * 4u + k" };
        return format!(r#"
const D4: u32 = {D4}u;
@group(0) @binding(0) var<storage, read> kb: array<vec4<f32>>;
@group(0) @binding(1) var kt: texture_2d<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> q: array<vec4<f32>, D4>;
var<private> qr: array<vec4<f32>, 4>;
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) w: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
    let r0 = (w.x + w.y * n.x) * 64u + (lid / 8u) * 8u;
    let lane = lid % 8u;
    for (var k = 0u; k < 4u; k++) {{ qr[k] = q[{idx}]; }}
    for (var t = 0u; t < {trips}; t++) {{
        let r = r0 + t;
        var a = vec4<f32>(0.0);
        {open}
        for (var k = 0u; k < 4u; k++) {{
            a += qr[k] * kb[r * D4 + {idx}];
        }}
        {close}
        let s = subgroupAdd(dot(a, vec4<f32>(1.0)));
        if (lane == 0u) {{
            out[r] = s + f32(arrayLength(&kb)) * 0.0 + f32(textureDimensions(kt).x) * 0.0;
        }}
    }}
}}
"#);
    }
    if kind.starts_with("uniform") {
        let wg = if kind == "uniform-wg1" { 1 } else { 8 };
        return format!(r#"
const D4: u32 = {D4}u;
@group(0) @binding(0) var<storage, read> kb: array<vec4<f32>>;
@group(0) @binding(1) var kt: texture_2d<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> q: array<vec4<f32>, D4>;
var<private> qr: array<vec4<f32>, D4>;
@compute @workgroup_size({wg})
fn main(@builtin(workgroup_id) w: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
    let r0 = (w.x + w.y * n.x) * 64u;
    for (var d4 = 0u; d4 < D4; d4++) {{ qr[d4] = q[d4]; }}
    for (var t = 0u; t < n.z * 64u; t++) {{
        let r = r0 + t;
        var a = vec4<f32>(0.0);
        for (var d4 = 0u; d4 < D4; d4++) {{
            a += qr[d4] * kb[r * D4 + d4];
        }}
        if (lid == 0u) {{
            out[r] = dot(a, vec4<f32>(1.0)) + f32(arrayLength(&kb)) * 0.0 + f32(textureDimensions(kt).x) * 0.0;
        }}
    }}
}}
"#);
    }
    let load = if kind == "texture" {
        "textureLoad(kt, vec2<u32>((r * D4 + d4) % WIDTH, (r * D4 + d4) / WIDTH), 0)"
    } else {
        "kb[r * D4 + d4]"
    };
    // The condition is uniform (never false): what it costs is the masked execution.
    let (open, close) = match kind {
        "storage-under-if" => ("if (n.x != 3u) {", "}"),
        // A loop whose trip count (1) the compiler cannot see.
        "storage-in-loop" => ("for (var t = 0u; t < n.z; t++) {", "}"),
        "storage-after-return" => ("if (n.x == 3u) { return; }", ""),
        _ => ("", ""),
    };
    format!(
        r#"
const D4: u32 = {D4}u;
const WIDTH: u32 = {WIDTH}u;
@group(0) @binding(0) var<storage, read> kb: array<vec4<f32>>;
@group(0) @binding(1) var kt: texture_2d<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> q: array<vec4<f32>, D4>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>) {{
    let r = g.x + g.y * n.x * 64u;
    var a = vec4<f32>(0.0);
    {open}
    for (var d4 = 0u; d4 < D4; d4++) {{
        a += q[d4] * {load};
    }}
    {close}
    out[r] = dot(a, vec4<f32>(1.0)) + f32(arrayLength(&kb)) * 0.0 + f32(textureDimensions(kt).x) * 0.0;
}}
"#
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
            .expect("an adapter");
    let info = adapter.get_info();
    println!("{} ({:?}, {})", info.name, info.backend, info.driver_info);
    let mut limits = adapter.limits();
    limits.max_storage_buffer_binding_size = limits.max_storage_buffer_binding_size.min(1 << 30);
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: limits,
        required_features: wgpu::Features::SUBGROUP,
        ..Default::default()
    }))
    .expect("a device");
    let n = (ROWS * D4 * 4) as usize;
    let data: Vec<f32> = (0..n).map(|i| ((i * 2654435761usize) % 1000) as f32 / 1000.0).collect();
    let kb = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: bytemuck::cast_slice(&data),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
    });
    let height = ROWS * D4 / WIDTH;
    let size = wgpu::Extent3d { width: WIDTH, height, depth_or_array_layers: 1 };
    let tex = device.create_texture(&wgpu::TextureDescriptor {
        label: None,
        size,
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba32Float,
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    });
    let qv: Vec<f32> = (0..D4 * 4).map(|i| i as f32 * 0.01).collect();
    let qb = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: bytemuck::cast_slice(&qv),
        usage: wgpu::BufferUsages::STORAGE,
    });
    let out = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: ROWS as u64 * 4,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let view = tex.create_view(&Default::default());
    let wait = || device.poll(wgpu::PollType::wait_indefinitely()).expect("poll");
    let time = |f: &dyn Fn(&mut wgpu::CommandEncoder)| {
        let t = Instant::now();
        let mut enc = device.create_command_encoder(&Default::default());
        f(&mut enc);
        queue.submit([enc.finish()]);
        wait();
        t.elapsed().as_secs_f64() * 1e3
    };
    let copy = |enc: &mut wgpu::CommandEncoder| {
        enc.copy_buffer_to_texture(
            wgpu::TexelCopyBufferInfo {
                buffer: &kb,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(WIDTH * 16),
                    rows_per_image: Some(height),
                },
            },
            wgpu::TexelCopyTextureInfo {
                texture: &tex,
                mip_level: 0,
                origin: wgpu::Origin3d::ZERO,
                aspect: wgpu::TextureAspect::All,
            },
            size,
        );
    };
    time(&copy); // first touch of the texture's memory
    let runs: Vec<_> = KINDS
        .iter()
        .map(|kind| {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: None,
                source: wgpu::ShaderSource::Wgsl(shader(kind).into()),
            });
            let pipe = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: None,
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
            let bg = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &pipe.get_bind_group_layout(0),
                entries: &[
                    wgpu::BindGroupEntry { binding: 0, resource: kb.as_entire_binding() },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: wgpu::BindingResource::TextureView(&view),
                    },
                    wgpu::BindGroupEntry { binding: 2, resource: out.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 3, resource: qb.as_entire_binding() },
                ],
            });
            (pipe, bg)
        })
        .collect();
    let dispatch = |i: usize| {
        let (pipe, bg) = &runs[i];
        time(&|enc: &mut wgpu::CommandEncoder| {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(pipe);
            pass.set_bind_group(0, bg, &[]);
            // 4,096 workgroups of 64 rows each, for every kind.
            pass.dispatch_workgroups(ROWS / 64 / 64, 64, 1);
        })
    };
    for i in 0..KINDS.len() {
        dispatch(i); // compile and first run
    }
    let mut times = vec![Vec::new(); KINDS.len() + 1];
    for _ in 0..7 {
        for (i, t) in times.iter_mut().enumerate().take(KINDS.len()) {
            t.push(dispatch(i));
        }
        times[KINDS.len()].push(time(&copy));
    }
    for (i, kind) in KINDS.iter().enumerate() {
        println!("{kind:>18}: {:6.1} ms (128 MiB read)", median(times[i].clone()));
    }
    println!("{:>18}: {:6.1} ms (128 MiB copied)", "buffer->texture", median(times[KINDS.len()].clone()));
}
