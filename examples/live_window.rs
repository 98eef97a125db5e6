//! The embedding example's picture, live in a window: the app opens a window (winit), creates
//! the wgpu instance, surface, adapter and device itself and hands the device to the engine
//! with `Context::from_device`. Each frame is one command encoder and one submission: the
//! attention (`record_attention` on the app's own Q, K, V buffers), the colormap compute pass
//! of `examples/embed.rs` (`examples/common/app.rs`) into a texture, then a render pass that
//! draws that texture over the whole surface texture (a full-screen triangle, each texel a
//! `ZOOM x ZOOM` square); then the frame is presented.
//!
//! Each key's value is a one-hot channel of its own, so each query's output row is its
//! attention probabilities over the keys and the picture is the attention matrix of each head
//! (heads stacked; queries down, keys across): the causal triangle cut to a band by a sliding
//! window whose width changes by one every frame (narrowing to the diagonal, then widening
//! back).
//!
//! ```sh
//! cargo run --example live_window --features window                      # until closed
//! cargo run --example live_window --features window -- --frames 20 --screenshot live.png
//! ```
//!
//! `--frames N` exits after N presented frames; `--screenshot PATH` saves the last frame as a
//! PNG: the presented surface texture, read back in that frame's encoder, where the surface
//! allows copies from it; else (wgpu's GL backend, or a window closed by hand) the colormap
//! texture, which still holds the last frame. One line a second, and one at exit, say how
//! many frames were presented on which adapter. X11 only (the `window` feature builds winit's
//! X11 backend alone). `WGPU_BACKEND`, `WGPU_ADAPTER_NAME` pick the adapter as elsewhere.
//!
//! Run on (Debian 12, Mesa 22.3, no GPU), both under Xvfb: lavapipe (Mesa's software Vulkan),
//! presenting through Mesa's X11 software WSI to a `Bgra8Unorm` surface that allows copies
//! (`tests/example_window.rs` runs it there and checks the screenshot against the CPU
//! reference), and llvmpipe through wgpu's GL backend (`WGPU_BACKEND=gl`): an `Rgba8Unorm`
//! surface without copies, so the screenshot is the colormap texture. The first frame compiles
//! the pipelines: about 3 s on lavapipe and on llvmpipe's GL with Mesa's shader cache cold
//! (GL took 40 s before the engine's opaque loops), well under a second with it warm; then a
//! few hundred frames a second on either. Not
//! run on a GPU, nor on Wayland (not built).

#[path = "common/app.rs"]
pub mod app;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use app::{Colormap, Readback};
use wgattn::{record_attention, AttentionOptions, Context, DType, GpuInputs, GpuTensor, Tensor};
use winit::application::ApplicationHandler;
use winit::dpi::PhysicalSize;
use winit::event::WindowEvent;
use winit::event_loop::{ActiveEventLoop, EventLoop};
use winit::window::{Window, WindowId};

/// Batch 1, 2 query heads over 1 key/value head, 64 queries and keys, head size 32; the
/// values are `[1, 1, 64, 64]` (one channel per key).
pub const SHAPE: (usize, usize, usize, usize, usize) = (1, 2, 1, 64, 32);

/// Screen pixels per texel, each way: the window is `ZOOM` times the picture.
pub const ZOOM: u32 = 4;

/// Key `j`'s value is `2 * GAIN` in channel `j` and 0 elsewhere, minus 1: the output is then
/// `2 * GAIN * p - 1` for probability `p`, which the colormap's [-1, 1] shows from 0 (dark) to
/// `1 / GAIN` and more (bright).
pub const GAIN: f32 = 16.0;

/// The picture's size in texels: value channels across, heads times queries down.
pub fn picture_size() -> (u32, u32) {
    let (b, hq, _, l, _) = SHAPE;
    (l as u32, (b * hq * l) as u32)
}

/// Deterministic queries and keys in [-1, 1), and the one-hot values.
pub fn inputs() -> (Tensor, Tensor, Tensor) {
    let (b, hq, hkv, l, d) = SHAPE;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: usize| app::uniform(&mut state, n);
    let q = Tensor::from_f32([b, hq, l, d], next(b * hq * l * d));
    let k = Tensor::from_f32([b, hkv, l, d], next(b * hkv * l * d));
    let one_hot = (0..b * hkv * l * l)
        .map(|e| {
            let (key, channel) = ((e / l) % l, e % l);
            if key == channel {
                2.0 * GAIN - 1.0
            } else {
                -1.0
            }
        })
        .collect();
    let v = Tensor::from_f32([b, hkv, l, l], one_hot);
    match (q, k, v) {
        (Ok(q), Ok(k), Ok(v)) => (q, k, v),
        _ => unreachable!("the shapes match the data"),
    }
}

/// The options of frame `frame` (0 the first): causal attention with a sliding window of
/// `L - 1` keys back at frame 0 (the whole causal triangle), one fewer each frame down to 0
/// (the diagonal), then one more each frame back up, and so on.
pub fn options(frame: u64) -> AttentionOptions {
    let longest = SHAPE.3 as u64 - 1;
    let phase = frame % (2 * longest);
    AttentionOptions {
        causal: true,
        window_left: longest.abs_diff(phase) as i64,
        ..Default::default()
    }
}

/// Draws the picture over the whole target: a full-screen triangle whose fragments load the
/// texel under them (no filtering: each texel stays one flat square).
const BLIT: &str = r#"
@group(0) @binding(0) var picture: texture_2d<f32>;

struct Varyings {
    @builtin(position) position: vec4<f32>,
    @location(0) uv: vec2<f32>,
}

@vertex
fn vs(@builtin(vertex_index) i: u32) -> Varyings {
    // (0, 0), (2, 0), (0, 2): one triangle covering the target, uv (0, 0) at the top left.
    let uv = vec2<f32>(f32((i << 1u) & 2u), f32(i & 2u));
    return Varyings(vec4<f32>(uv.x * 2.0 - 1.0, 1.0 - uv.y * 2.0, 0.0, 1.0), uv);
}

@fragment
fn fs(in: Varyings) -> @location(0) vec4<f32> {
    let size = vec2<i32>(textureDimensions(picture));
    let texel = min(vec2<i32>(in.uv * vec2<f32>(size)), size - 1);
    return textureLoad(picture, texel, 0);
}
"#;

/// The surface's configuration and the format to draw through: an 8-bit RGBA or BGRA format
/// drawn through a non-sRGB view, so the picture's bytes reach the screen as they are (a
/// non-sRGB format where the surface offers one, else an sRGB one with a non-sRGB view where
/// the device allows that); copies from it where it allows them (for the screenshot).
fn surface_config(
    surface: &wgpu::Surface<'_>,
    adapter: &wgpu::Adapter,
    size: PhysicalSize<u32>,
) -> Result<(wgpu::SurfaceConfiguration, wgpu::TextureFormat)> {
    let caps = surface.get_capabilities(adapter);
    let eight_bit = |f: &wgpu::TextureFormat| {
        matches!(
            f.remove_srgb_suffix(),
            wgpu::TextureFormat::Bgra8Unorm | wgpu::TextureFormat::Rgba8Unorm
        )
    };
    let view_formats_ok = adapter
        .get_downlevel_capabilities()
        .flags
        .contains(wgpu::DownlevelFlags::SURFACE_VIEW_FORMATS);
    let mut eight_bit_formats = caps.formats.iter().copied().filter(eight_bit);
    let format = eight_bit_formats
        .clone()
        .find(|f| !f.is_srgb())
        .or_else(|| eight_bit_formats.find(|_| view_formats_ok))
        .with_context(|| {
            format!(
                "no 8-bit RGBA/BGRA surface format to draw to without sRGB encoding in {:?}",
                caps.formats
            )
        })?;
    let view_format = format.remove_srgb_suffix();
    let mut config = surface
        .get_default_config(adapter, size.width.max(1), size.height.max(1))
        .context("the surface is not supported by the adapter")?;
    config.format = format;
    config.present_mode = wgpu::PresentMode::AutoVsync;
    config.view_formats = if view_format == format {
        vec![]
    } else {
        vec![view_format]
    };
    if caps.usages.contains(wgpu::TextureUsages::COPY_SRC) {
        config.usage |= wgpu::TextureUsages::COPY_SRC;
    }
    Ok((config, view_format))
}

/// The render pipeline that draws `picture` over a `format` target ([`BLIT`]), and its
/// bind group.
fn blit_pipeline(
    device: &wgpu::Device,
    format: wgpu::TextureFormat,
    picture: &wgpu::Texture,
) -> (wgpu::RenderPipeline, wgpu::BindGroup) {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("blit"),
        source: wgpu::ShaderSource::Wgsl(BLIT.into()),
    });
    let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
        label: Some("blit"),
        layout: None,
        vertex: wgpu::VertexState {
            module: &module,
            entry_point: Some("vs"),
            compilation_options: Default::default(),
            buffers: &[],
        },
        primitive: Default::default(),
        depth_stencil: None,
        multisample: Default::default(),
        fragment: Some(wgpu::FragmentState {
            module: &module,
            entry_point: Some("fs"),
            compilation_options: Default::default(),
            targets: &[Some(format.into())],
        }),
        multiview_mask: None,
        cache: None,
    });
    let picture = picture.create_view(&Default::default());
    let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("blit"),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::TextureView(&picture),
        }],
    });
    (pipeline, group)
}

struct Args {
    frames: Option<u64>,
    screenshot: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        frames: None,
        screenshot: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--frames" => {
                let n = it.next().context("--frames wants a number of frames")?;
                let n: u64 = n
                    .parse()
                    .with_context(|| format!("--frames {n:?}: not a number of frames"))?;
                if n == 0 {
                    bail!("--frames 0: at least one frame");
                }
                args.frames = Some(n);
            }
            "--screenshot" => {
                let path = it.next().context("--screenshot wants a PNG path")?;
                args.screenshot = Some(path.into());
            }
            "-h" | "--help" => {
                println!("usage: live_window [--frames N] [--screenshot out.png]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(args)
}

/// The app's GPU side: the window and its surface, the device (shared with the engine), the
/// tensors' buffers and the two passes of its own.
struct Gpu {
    // The surface goes before the window it draws to (fields drop in order).
    surface: wgpu::Surface<'static>,
    window: Arc<Window>,
    config: wgpu::SurfaceConfiguration,
    view_format: wgpu::TextureFormat,
    adapter: wgpu::AdapterInfo,
    device: wgpu::Device,
    queue: wgpu::Queue,
    ctx: Context,
    q: wgpu::Buffer,
    k: wgpu::Buffer,
    v: wgpu::Buffer,
    out: wgpu::Buffer,
    shapes: [Vec<usize>; 4],
    colormap: Colormap,
    blit: wgpu::RenderPipeline,
    blit_group: wgpu::BindGroup,
}

/// A frame's outcome.
enum Drawn {
    /// Presented; with the read-back of its surface texture if one was asked for.
    Presented(Option<Vec<u8>>),
    /// No surface texture this time (timeout, occluded, reconfigured): try again.
    Skipped,
}

impl Gpu {
    fn new(event_loop: &ActiveEventLoop) -> Result<Gpu> {
        let (width, height) = picture_size();
        let window = Arc::new(
            event_loop.create_window(
                Window::default_attributes()
                    .with_title("wgattn: masked attention, live")
                    .with_inner_size(PhysicalSize::new(width * ZOOM, height * ZOOM)),
            )?,
        );
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_with_display_handle_from_env(
                Box::new(event_loop.owned_display_handle()),
            ));
        let surface = instance
            .create_surface(window.clone())
            .context("creating the window's surface")?;
        let adapter = pollster::block_on(wgpu::util::initialize_adapter_from_env_or_default(
            &instance,
            Some(&surface),
        ))
        .context(
            "no adapter that can present to this window \
             (install mesa-vulkan-drivers for the software one)",
        )?;
        let (device, queue) =
            pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
                label: Some("app device"),
                required_limits: adapter.limits(),
                ..Default::default()
            }))?;
        let ctx = Context::from_device(device.clone(), queue.clone(), adapter.get_info());

        let (config, view_format) = surface_config(&surface, &adapter, window.inner_size())?;
        surface.configure(&device, &config);

        // The app's tensors, uploaded once; `out` is written by the engine every frame.
        let (q, k, v) = inputs();
        let (b, hq, _, l, _) = SHAPE;
        let out_shape = vec![b, hq, l, v.shape()[3]];
        let upload = |label, bytes: &[u8]| app::storage(&device, &queue, label, bytes);
        let out_bytes = vec![0u8; out_shape.iter().product::<usize>() * 4];
        let (q_buf, k_buf, v_buf) = (
            upload("q", &q.to_le_bytes()),
            upload("k", &k.to_le_bytes()),
            upload("v", &v.to_le_bytes()),
        );
        let out = upload("out", &out_bytes);
        let colormap = Colormap::new(
            &device,
            &out,
            (width, height),
            wgpu::TextureUsages::TEXTURE_BINDING,
        );

        let (blit, blit_group) = blit_pipeline(&device, view_format, &colormap.texture);
        Ok(Gpu {
            surface,
            window,
            config,
            view_format,
            adapter: adapter.get_info(),
            device,
            queue,
            ctx,
            q: q_buf,
            k: k_buf,
            v: v_buf,
            out,
            shapes: [
                q.shape().to_vec(),
                k.shape().to_vec(),
                v.shape().to_vec(),
                out_shape,
            ],
            colormap,
            blit,
            blit_group,
        })
    }

    /// Whether frames can be read back from the surface itself.
    fn surface_readable(&self) -> bool {
        self.config.usage.contains(wgpu::TextureUsages::COPY_SRC)
    }

    fn resize(&mut self, size: PhysicalSize<u32>) {
        if size.width > 0 && size.height > 0 {
            self.config.width = size.width;
            self.config.height = size.height;
            self.surface.configure(&self.device, &self.config);
        }
    }

    /// Draws and presents frame `frame`: one encoder (attention, colormap, blit, and with
    /// `capture` the copy of the surface texture out), one submission.
    fn draw(&mut self, frame: u64, capture: bool) -> Result<Drawn> {
        let target = match self.surface.get_current_texture() {
            wgpu::CurrentSurfaceTexture::Success(t)
            | wgpu::CurrentSurfaceTexture::Suboptimal(t) => t,
            wgpu::CurrentSurfaceTexture::Timeout | wgpu::CurrentSurfaceTexture::Occluded => {
                return Ok(Drawn::Skipped)
            }
            wgpu::CurrentSurfaceTexture::Outdated => {
                self.surface.configure(&self.device, &self.config);
                return Ok(Drawn::Skipped);
            }
            wgpu::CurrentSurfaceTexture::Lost => bail!("the window's surface was lost"),
            wgpu::CurrentSurfaceTexture::Validation => {
                bail!("validation error getting the surface texture")
            }
        };
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("frame"),
            });
        let gpu = |buffer, shape| GpuTensor::new(buffer, shape, DType::F32);
        let [q_shape, k_shape, v_shape, out_shape] = &self.shapes;
        let inputs = GpuInputs::new(
            gpu(&self.q, q_shape),
            gpu(&self.k, k_shape),
            gpu(&self.v, v_shape),
        );
        let recorded = record_attention(
            &self.ctx,
            &mut encoder,
            &inputs,
            &options(frame),
            &gpu(&self.out, out_shape),
        )?;
        self.colormap.record(&mut encoder);
        let view = target.texture.create_view(&wgpu::TextureViewDescriptor {
            format: Some(self.view_format),
            ..Default::default()
        });
        {
            let mut pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
                label: Some("blit"),
                color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                    view: &view,
                    depth_slice: None,
                    resolve_target: None,
                    ops: wgpu::Operations {
                        load: wgpu::LoadOp::Clear(wgpu::Color::BLACK),
                        store: wgpu::StoreOp::Store,
                    },
                })],
                ..Default::default()
            });
            pass.set_pipeline(&self.blit);
            pass.set_bind_group(0, &self.blit_group, &[]);
            pass.draw(0..3, 0..1);
        }
        let readback = (capture && self.surface_readable()).then(|| {
            let readback = Readback::new(&self.device, target.texture.size());
            readback.record_copy(&mut encoder, &target.texture);
            readback
        });
        self.queue.submit([encoder.finish()]);
        drop(recorded);
        self.window.pre_present_notify();
        self.queue.present(target);
        let texels = match readback {
            Some(readback) => Some(self.to_rgba(readback.read(&self.device)?)),
            None => None,
        };
        Ok(Drawn::Presented(texels))
    }

    /// Surface texels in RGBA order.
    fn to_rgba(&self, mut texels: Vec<u8>) -> Vec<u8> {
        if self.view_format == wgpu::TextureFormat::Bgra8Unorm {
            for texel in texels.chunks_mut(4) {
                texel.swap(0, 2);
            }
        }
        texels
    }

    /// The colormap texture as it is now (the last frame's picture).
    fn read_picture(&self) -> Result<Vec<u8>> {
        let readback = Readback::new(&self.device, self.colormap.texture.size());
        let mut encoder = self.device.create_command_encoder(&Default::default());
        readback.record_copy(&mut encoder, &self.colormap.texture);
        self.queue.submit([encoder.finish()]);
        readback.read(&self.device)
    }

    fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?})",
            self.adapter.name, self.adapter.backend, self.adapter.device_type
        )
    }
}

/// A saved last frame: pixels, size, and what they are.
struct Screenshot {
    rgba: Vec<u8>,
    size: (u32, u32),
    what: &'static str,
}

struct App {
    args: Args,
    gpu: Option<Gpu>,
    error: Option<anyhow::Error>,
    presented: u64,
    started: Instant,
    /// When the last one-second line was printed, and the frame count it gave.
    last_report: Instant,
    reported: u64,
    screenshot: Option<Screenshot>,
}

impl App {
    fn fail(&mut self, event_loop: &ActiveEventLoop, error: anyhow::Error) {
        self.error.get_or_insert(error);
        event_loop.exit();
    }

    /// Draws the next frame; whether that was the last one asked for.
    fn frame(&mut self) -> Result<bool> {
        let Some(gpu) = self.gpu.as_mut() else {
            return Ok(false);
        };
        let last = self.args.frames == Some(self.presented + 1);
        let capture = last && self.args.screenshot.is_some();
        match gpu.draw(self.presented, capture)? {
            Drawn::Skipped => return Ok(false),
            Drawn::Presented(texels) => {
                if let Some(rgba) = texels {
                    self.screenshot = Some(Screenshot {
                        rgba,
                        size: (gpu.config.width, gpu.config.height),
                        what: "presented surface texture",
                    });
                }
            }
        }
        self.presented += 1;
        let since = self.last_report.elapsed();
        if since >= Duration::from_secs(1) {
            println!(
                "{} frames presented ({:.1} fps over the last {:.1} s), sliding window {} keys back",
                self.presented,
                (self.presented - self.reported) as f64 / since.as_secs_f64(),
                since.as_secs_f64(),
                options(self.presented - 1).window_left
            );
            self.last_report = Instant::now();
            self.reported = self.presented;
        }
        Ok(last)
    }
}

impl ApplicationHandler for App {
    fn resumed(&mut self, event_loop: &ActiveEventLoop) {
        if self.gpu.is_some() {
            return;
        }
        match Gpu::new(event_loop) {
            Ok(gpu) => {
                println!(
                    "live_window on {}: surface {:?} {}x{}, {:?}; screenshots from the {}",
                    gpu.describe(),
                    gpu.config.format,
                    gpu.config.width,
                    gpu.config.height,
                    gpu.config.present_mode,
                    if gpu.surface_readable() {
                        "surface"
                    } else {
                        "colormap texture (the surface allows no copies)"
                    }
                );
                gpu.window.request_redraw();
                self.started = Instant::now();
                self.last_report = self.started;
                self.gpu = Some(gpu);
            }
            Err(e) => self.fail(event_loop, e),
        }
    }

    fn window_event(&mut self, event_loop: &ActiveEventLoop, _: WindowId, event: WindowEvent) {
        match event {
            WindowEvent::CloseRequested => event_loop.exit(),
            WindowEvent::Resized(size) => {
                if let Some(gpu) = self.gpu.as_mut() {
                    gpu.resize(size);
                }
            }
            WindowEvent::RedrawRequested => match self.frame() {
                Ok(true) => event_loop.exit(),
                Ok(false) => {
                    if let Some(gpu) = &self.gpu {
                        gpu.window.request_redraw();
                    }
                }
                Err(e) => self.fail(event_loop, e),
            },
            _ => {}
        }
    }
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let event_loop = EventLoop::new().context("opening the display (is DISPLAY set?)")?;
    let mut app = App {
        args,
        gpu: None,
        error: None,
        presented: 0,
        started: Instant::now(),
        last_report: Instant::now(),
        reported: 0,
        screenshot: None,
    };
    event_loop.run_app(&mut app)?;
    if let Some(e) = app.error.take() {
        return Err(e);
    }
    let Some(gpu) = app.gpu.as_ref() else {
        bail!("the event loop ended before the window opened");
    };
    let secs = app.started.elapsed().as_secs_f64();
    println!(
        "presented {} frames in {secs:.2} s ({:.1} fps) on {}",
        app.presented,
        app.presented as f64 / secs,
        gpu.describe()
    );
    if let Some(path) = &app.args.screenshot {
        if app.presented == 0 {
            bail!("no frame was presented: no screenshot");
        }
        let shot = match app.screenshot.take() {
            Some(shot) => shot,
            None => Screenshot {
                rgba: gpu.read_picture()?,
                size: picture_size(),
                what: "colormap texture",
            },
        };
        let (w, h) = shot.size;
        app::write_png(path, &shot.rgba, w, h)?;
        println!(
            "wrote {} ({w} x {h}, the {} of frame {}, sliding window {} keys back)",
            path.display(),
            shot.what,
            app.presented - 1,
            options(app.presented - 1).window_left
        );
    }
    Ok(())
}
