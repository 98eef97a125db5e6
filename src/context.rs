//! The GPU context: instance, adapter, device and queue, plus the pipeline cache and the
//! buffer pool every call shares.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::kernels::{ShaderFeatures, Variant};
use crate::mods::ModsInfo;
use crate::pool::BufferPool;
use crate::tensor::DType;

/// A device to run attention on. Create one per device and share it (`Context` is
/// `Send + Sync`); pipelines are built once per variant and buffers are reused across calls.
pub struct Context {
    /// Unique in the process: what the engine's own objects that outlive a call (a
    /// [`crate::BlockMask`]) remember, since wgpu compares devices and buffers by ids that
    /// repeat across instances (two `Context::new()`s each have device 0).
    id: u64,
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    features: wgpu::Features,
    pipelines: Mutex<PipelineCache<wgpu::ComputePipeline>>,
    pub(crate) pool: Mutex<BufferPool>,
    poison: AtomicBool,
    gpu_timing: AtomicBool,
    tuning: Mutex<Tuning>,
    lost: Arc<Mutex<Option<String>>>,
    /// The device shares memory with the host and maps storage buffers.
    unified: bool,
    /// The driver's own bound on one shader invocation's loop trips (llvmpipe's), read from
    /// the adapter's name and driver once.
    driver_loop_trips: Option<u64>,
    /// Held for a whole call on backends whose device must not be driven from several
    /// threads at once (see [`Context::serial`]).
    serial: futures_intrusive::sync::Mutex<()>,
    /// Bound where a kernel's optional input is absent (no mask, no past cache): 16 zero
    /// bytes, created once and never written.
    absent: wgpu::Buffer,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("adapter", &self.info.name)
            .field("backend", &self.info.backend)
            .finish_non_exhaustive()
    }
}

/// A pipeline's cache key: its variant and, for variants with user snippets, their generated
/// module (so pipelines are cached by source).
type PipelineKey = (Variant, Option<Arc<str>>);

/// The most pipelines with user snippets kept at once (each distinct set of snippets builds
/// a few: the block mask, the fused kernels, the staged mask stage).
const USER_PIPELINES: usize = 256;

/// Built pipelines. The engine's own variants are finitely many; those with user snippets
/// are keyed by source, which a caller can vary without end (a constant formatted into a
/// `mask_mod` on every call), so at most [`USER_PIPELINES`] of them are kept, the oldest
/// dropped first (a call that needs one again builds it again).
struct PipelineCache<T> {
    map: HashMap<PipelineKey, T>,
    user: VecDeque<PipelineKey>,
    user_max: usize,
}

impl<T> Default for PipelineCache<T> {
    fn default() -> Self {
        PipelineCache {
            map: HashMap::new(),
            user: VecDeque::new(),
            user_max: USER_PIPELINES,
        }
    }
}

impl<T> PipelineCache<T> {
    fn get(&self, key: &PipelineKey) -> Option<&T> {
        self.map.get(key)
    }

    fn insert(&mut self, key: PipelineKey, value: T) {
        if key.1.is_some() && !self.map.contains_key(&key) {
            self.user.push_back(key.clone());
            while self.user.len() > self.user_max {
                if let Some(old) = self.user.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
        self.map.insert(key, value);
    }

    fn iter(&self) -> impl Iterator<Item = (&PipelineKey, &T)> {
        self.map.iter()
    }
}

/// Overrides of the fused kernels' configuration, which the engine otherwise derives from
/// the adapter's type and limits. Every choice gives the same results.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tuning {
    /// Query rows per invocation of the prefill kernel (default: 4 on CPU adapters, else 1).
    pub rows_per_invocation: Option<u32>,
    /// Keys per tile of the prefill kernel, a multiple of 4 (default: the most, up to 64,
    /// that fit in workgroup memory).
    pub keys_per_tile: Option<u32>,
    /// Longest query block that takes the split-key decode kernel (default 4; on CPU
    /// adapters 128 where the keys fit 16 splits of at most 2048 and no block mask is
    /// needed).
    pub decode_max_q: Option<usize>,
    /// Keys per split of the decode kernel, rounded up to a multiple of its workgroup size
    /// (default 512; for query blocks longer than 4 rows on CPU adapters, enough keys to
    /// stay within 16 splits, up to 2048).
    pub decode_keys_per_split: Option<u32>,
    /// Invocations per workgroup of the decode kernel, rounded up to a power of two from 4 to
    /// the device's limit (default: 16 on CPU adapters, else 64); halved while its
    /// accumulators do not fit in workgroup memory.
    pub decode_invocations: Option<u32>,
    /// Query rows per workgroup of the decode kernel, at most 4 and the workgroup's size:
    /// rows of one batch entry and key/value head (the query heads of a GQA group, the rows
    /// of the query block), so every key and value row loaded serves all of them. The engine
    /// spreads their rows evenly over the fewest workgroups of at most this many (7 rows at 4:
    /// 4 and 3) (default: 4 on CPU adapters, else 1); always 1 with a block mask.
    pub decode_rows: Option<u32>,
    /// Spread each key's row over a subgroup in the decode kernel (neighbouring invocations
    /// read neighbouring words of one row; the score from a subgroup sum) instead of one key
    /// per invocation. Default: on for GPUs, where it makes the loads coalesce; on CPU
    /// adapters only for wide heads (see [`Context::decode_subgroup_keys`]), where a key per
    /// invocation holds too much in private memory (lavapipe, BENCHMARKS.md). It needs
    /// subgroups and a workgroup that is a multiple of the adapter's largest subgroup:
    /// `Some(true)` cannot turn it on elsewhere.
    pub decode_subgroup_keys: Option<bool>,
    /// Write inputs straight into mappable storage buffers instead of through wgpu's staging
    /// copy (default: on where the device shares memory with the host, a CPU or integrated
    /// adapter offering `MAPPABLE_PRIMARY_BUFFERS`; `Some(true)` cannot turn it on elsewhere).
    pub mapped_uploads: Option<bool>,
    /// Use `shader-f16` where the adapter offers it (default); `Some(false)` forces the
    /// fallback (integer decoding of f16 words).
    pub shader_f16: Option<bool>,
    /// Use subgroup operations where the adapter offers them (default); `Some(false)` forces
    /// the fallback (reductions in workgroup memory only).
    pub subgroups: Option<bool>,
    /// Hide loop trip counts from the driver's shader compiler so it does not unroll them
    /// (default: on the GL backend, where unrolling made fused pipelines take up to a minute
    /// to compile on llvmpipe; off elsewhere). Same results either way.
    pub opaque_loops: Option<bool>,
    /// The most bytes the engine binds at once; default and upper bound: the device's limit
    /// (`max_storage_buffer_binding_size`, `max_buffer_size`). Every binding and the read-back
    /// are checked against the smaller of the two. A request over it is split over batch
    /// entries and heads (down to one batch entry and one query head) and gives the same
    /// result as an unsplit run; what one such unit still exceeds fails with
    /// [`Error::ExceedsLimit`]. Lowering it makes the splits happen at small sizes (tests).
    pub max_binding_bytes: Option<u64>,
    /// The most loop trips the engine lets one shader invocation take, all its loops
    /// together (default: 65,535 on llvmpipe, whose compiler ends every loop of an invocation
    /// past that count and so returns wrong results, see [`Context::loop_trip_limit`]; no
    /// bound elsewhere). The fused kernels then split the keys finely enough; the staged path
    /// refuses what it cannot keep within it. A lower value makes the splits happen at small
    /// sizes (tests).
    pub max_loop_trips: Option<u64>,
}

impl Tuning {
    /// Every choice left to the engine (the same as `Tuning::default()`, usable in `const`).
    pub const AUTO: Tuning = Tuning {
        rows_per_invocation: None,
        keys_per_tile: None,
        decode_max_q: None,
        decode_keys_per_split: None,
        decode_invocations: None,
        decode_rows: None,
        decode_subgroup_keys: None,
        mapped_uploads: None,
        shader_f16: None,
        subgroups: None,
        opaque_loops: None,
        max_binding_bytes: None,
        max_loop_trips: None,
    };

    /// The choices the engine makes by default on a discrete GPU, whatever the adapter: one
    /// query row per invocation and per decode workgroup, 64 decode invocations with a
    /// subgroup per key, splits of 512 keys, the decode kernel for blocks of up to 4 rows,
    /// uploads through wgpu's staging copy. On a CPU adapter this runs the configuration a GPU
    /// would: `tests/subgroup_sizes.rs` holds it to the reference on lavapipe at subgroups of
    /// 4, 8 and 16, and the soak draws it.
    pub const DISCRETE_GPU: Tuning = Tuning {
        rows_per_invocation: Some(1),
        decode_max_q: Some(crate::fused::DECODE_MAX_Q),
        decode_keys_per_split: Some(crate::fused::DECODE_CHUNK),
        decode_invocations: Some(crate::fused::DECODE_INVOCATIONS_GPU),
        decode_rows: Some(1),
        decode_subgroup_keys: Some(true),
        mapped_uploads: Some(false),
        ..Tuning::AUTO
    };
}

/// GPU memory allocated by the engine (see [`Context::memory`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Bytes allocated now.
    pub live_bytes: u64,
    /// Most bytes allocated at once since the last trim.
    pub peak_bytes: u64,
}

/// Features the engine uses when the adapter offers them.
const WANTED_FEATURES: wgpu::Features = wgpu::Features::SHADER_F16
    .union(wgpu::Features::SUBGROUP)
    .union(wgpu::Features::TIMESTAMP_QUERY);

impl Context {
    /// A context on the adapter the environment picks: `WGPU_BACKEND` (e.g. `vulkan`, `gl`)
    /// restricts the backends, `WGPU_ADAPTER_NAME` picks an adapter by a substring of its name,
    /// `WGPU_POWER_PREF` (`low`/`high`) the power preference. Blocks until the device is ready.
    pub fn new() -> Result<Self> {
        pollster::block_on(Self::new_async())
    }

    /// [`Context::new`] for callers with their own executor.
    pub async fn new_async() -> Result<Self> {
        Self::on_environment_adapter(None).await
    }

    /// A context on the adapter [`Context::new`] picks whose device is created with exactly
    /// `limits` and, of the features the engine uses, only those in `features` that the
    /// adapter offers: the engine then plans as for a device with those limits, and wgpu
    /// enforces them. `Context::with_limits(wgpu::Limits::default(), wgpu::Features::empty())`
    /// is any WebGPU adapter (the WebGPU default limits, no optional features), which is what
    /// `wgattn plan --webgpu-limits` captures for a browser. Fails with
    /// [`Error::RequestDevice`] where the adapter falls short of `limits`.
    pub fn with_limits(limits: wgpu::Limits, features: wgpu::Features) -> Result<Self> {
        pollster::block_on(Self::on_environment_adapter(Some((limits, features))))
    }

    async fn on_environment_adapter(
        wanted: Option<(wgpu::Limits, wgpu::Features)>,
    ) -> Result<Self> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = pick_adapter(&instance).await?;
        let (limits, wanted) = match wanted {
            Some((limits, features)) => (limits, features & WANTED_FEATURES),
            None if shares_host_memory(adapter.get_info().device_type) => (
                adapter.limits(),
                WANTED_FEATURES | wgpu::Features::MAPPABLE_PRIMARY_BUFFERS,
            ),
            None => (adapter.limits(), WANTED_FEATURES),
        };
        let features = adapter.features() & wanted;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("wgattn"),
                required_features: features,
                required_limits: limits,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::RequestDevice(e.to_string()))?;
        let ctx = Self::build(device, queue, adapter.get_info());
        // Errors outside our error scopes must not reach wgpu's default handler, which panics.
        let lost = ctx.lost.clone();
        ctx.device
            .on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                if let Ok(mut slot) = lost.lock() {
                    if slot.is_none() {
                        *slot = Some(format!("uncaptured GPU error: {e}"));
                    }
                }
            }));
        Ok(ctx)
    }

    /// A context on a device the caller already has (an app with its own renderer). The
    /// caller keeps its device-lost and uncaptured-error handlers; the engine reports its own
    /// errors through error scopes.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue, info: wgpu::AdapterInfo) -> Self {
        Self::build(device, queue, info)
    }

    fn build(device: wgpu::Device, queue: wgpu::Queue, info: wgpu::AdapterInfo) -> Self {
        let lost = Arc::new(Mutex::new(None::<String>));
        let slot = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut s) = slot.lock() {
                *s = Some(format!("{reason:?}: {message}"));
            }
        });
        let unified = shares_host_memory(info.device_type)
            && device
                .features()
                .contains(wgpu::Features::MAPPABLE_PRIMARY_BUFFERS);
        let absent = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgattn absent input"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let llvmpipe = [&info.name, &info.driver]
            .iter()
            .any(|s| s.to_ascii_lowercase().contains("llvmpipe"));
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Context {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            unified,
            driver_loop_trips: llvmpipe.then_some(crate::loops::LLVMPIPE_LOOP_TRIPS),
            serial: futures_intrusive::sync::Mutex::new((), true),
            absent,
            limits: device.limits(),
            features: device.features(),
            device,
            queue,
            info,
            pipelines: Mutex::new(PipelineCache::default()),
            pool: Mutex::new(BufferPool::default()),
            poison: AtomicBool::new(false),
            gpu_timing: AtomicBool::new(false),
            tuning: Mutex::new(Tuning::default()),
            lost,
        }
    }

    /// This context's process-unique id (see the field).
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// The 16 zero bytes bound where a kernel's optional input is absent.
    pub(crate) fn absent(&self) -> &wgpu::Buffer {
        &self.absent
    }

    /// The adapter's name, backend, driver.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// The device's limits (the adapter's best, for a context from the environment).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// The device's features.
    pub fn features(&self) -> wgpu::Features {
        self.features
    }

    /// When set, every output and scratch buffer is filled with NaN before a run, so a test can
    /// see any element a kernel forgot to write.
    pub fn set_poison_outputs(&self, on: bool) {
        self.poison.store(on, Ordering::Relaxed);
    }

    /// When set (and the adapter offers `TIMESTAMP_QUERY`), every [`crate::masked_attention`]
    /// call (and its async form) times its kernels on the device with timestamp queries and
    /// reports it in [`AttentionOutput::gpu_time`] ([`crate::record_attention`] in
    /// [`crate::RecordedAttention::gpu_time`], once the caller has submitted): the kernels
    /// alone, without the uploads and read-back the wall time includes (on a CPU adapter those
    /// are host memory copies as long as the kernels). Off by default: it adds a query
    /// resolution and a small read-back to each call.
    ///
    /// [`AttentionOutput::gpu_time`]: crate::AttentionOutput::gpu_time
    pub fn set_gpu_timing(&self, on: bool) {
        self.gpu_timing.store(on, Ordering::Relaxed);
    }

    /// Whether calls time their kernels: [`Context::set_gpu_timing`] and an adapter with
    /// timestamp queries.
    pub fn gpu_timing(&self) -> bool {
        self.gpu_timing.load(Ordering::Relaxed)
            && self.features.contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// Overrides the engine's per-adapter kernel choices (for tests and tuning); `None`
    /// fields keep the engine's choice.
    pub fn set_tuning(&self, tuning: Tuning) {
        if let Ok(mut t) = self.tuning.lock() {
            *t = tuning;
        }
    }

    /// GPU memory the engine has allocated: buffers held by calls in flight plus those kept
    /// for reuse, now and at the high-water mark since the last [`Context::trim_memory`].
    pub fn memory(&self) -> MemoryStats {
        let (live_bytes, peak_bytes) = self.pool.lock().map(|p| p.stats()).unwrap_or_default();
        MemoryStats {
            live_bytes,
            peak_bytes,
        }
    }

    /// Frees the buffers kept for reuse and restarts the high-water mark.
    pub fn trim_memory(&self) {
        if let Ok(mut p) = self.pool.lock() {
            p.trim();
        }
    }

    /// The current overrides.
    pub fn tuning(&self) -> Tuning {
        self.tuning.lock().map(|t| *t).unwrap_or_default()
    }

    /// Whether inputs go straight into mapped storage buffers (see [`Tuning::mapped_uploads`]).
    pub fn uses_mapped_uploads(&self) -> bool {
        self.unified && self.tuning().mapped_uploads.unwrap_or(true)
    }

    /// The most loop trips one shader invocation may take here ([`Tuning::max_loop_trips`]):
    /// 65,535 on Mesa's llvmpipe (lavapipe on Vulkan, llvmpipe on GL), which counts every
    /// loop trip of an invocation and past that count ends each loop after one more trip,
    /// so a longer kernel finishes early with wrong results and no error; `None` (no bound)
    /// elsewhere.
    pub fn loop_trip_limit(&self) -> Option<u64> {
        self.tuning().max_loop_trips.or(self.driver_loop_trips)
    }

    /// Whether the decode kernel spreads each key over a subgroup here for heads of `dtype`
    /// with `head_dim` and `v_dim` elements ([`Tuning::decode_subgroup_keys`]), given
    /// subgroups: for a problem whose workgroup is a multiple of the adapter's largest subgroup
    /// (a large `Dv` can shrink it below on small workgroup memory; the kernel then takes one
    /// key per invocation).
    ///
    /// By default on GPUs. On CPU adapters a key per invocation keeps q and its accumulators
    /// (`D + Dv` elements per query row) private to each invocation, and past `D + Dv = 256`
    /// (or at 256 with f16/bf16, whose conversions need registers too) lavapipe measured the
    /// subgroup layout faster: f16 at `D = 128` 28 against 44 ms, `D = 256` 20-38% less in
    /// every dtype; below, a key per invocation measured 0-20% faster (BENCHMARKS.md,
    /// 2026-12-06). With query rows sharing each key ([`Tuning::decode_rows`]) the same
    /// choice held (f16 `D = 128`, four rows: 12-13 against 13-14 ms).
    pub fn decode_subgroup_keys(&self, dtype: DType, head_dim: usize, v_dim: usize) -> bool {
        let cpu = self.info.device_type == wgpu::DeviceType::Cpu;
        let wide = match head_dim + v_dim {
            n if n > 256 => true,
            256 => dtype != DType::F32,
            _ => false,
        };
        self.tuning().decode_subgroup_keys.unwrap_or(!cpu || wide)
            && self.shader_features().subgroups
    }

    /// The optional features kernels may use: what the device has, less what the tuning
    /// turns off.
    pub fn shader_features(&self) -> ShaderFeatures {
        let t = self.tuning();
        let have = ShaderFeatures::of_device(self.features);
        ShaderFeatures {
            f16: have.f16 && t.shader_f16.unwrap_or(true),
            subgroups: have.subgroups && t.subgroups.unwrap_or(true),
            opaque_loops: t
                .opaque_loops
                .unwrap_or(self.info.backend == wgpu::Backend::Gl),
        }
    }

    pub(crate) fn poison_outputs(&self) -> bool {
        self.poison.load(Ordering::Relaxed)
    }

    /// A guard that serializes the engine's calls on the GL backend, whose single GL context
    /// wgpu locks with a one-second timeout and a panic: many threads sharing a context (and
    /// llvmpipe's slow GL) exceed it. Elsewhere calls run concurrently and this is `None`.
    pub(crate) async fn serial(&self) -> Option<futures_intrusive::sync::MutexGuard<'_, ()>> {
        if self.info.backend == wgpu::Backend::Gl {
            Some(self.serial.lock().await)
        } else {
            None
        }
    }

    /// Why the device is gone (lost, destroyed, or an uncaptured GPU error), or `None` while it
    /// is usable. Once set, every call fails with [`Error::DeviceLost`]; make a new context.
    pub fn lost_reason(&self) -> Option<String> {
        self.lost
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|_| Some("device state poisoned".into()))
    }

    /// Fails with [`Error::DeviceLost`] once the device is gone.
    pub(crate) fn check_alive(&self) -> Result<()> {
        match self.lost.lock().map(|s| s.clone()) {
            Ok(None) => Ok(()),
            Ok(Some(why)) => Err(Error::DeviceLost(why)),
            Err(_) => Err(Error::DeviceLost("device state poisoned".into())),
        }
    }

    /// The variant a cached pipeline was built for, and the user module it includes.
    pub(crate) fn variant_of(
        &self,
        pipeline: &wgpu::ComputePipeline,
    ) -> Option<(Variant, Option<Arc<str>>)> {
        let cache = self.pipelines.lock().ok()?;
        let key = cache
            .iter()
            .find(|(_, p)| *p == pipeline)
            .map(|(key, _)| key.clone());
        key
    }

    /// The cached pipeline of a variant, built on first use inside an error scope.
    pub(crate) fn pipeline(&self, variant: Variant) -> Result<wgpu::ComputePipeline> {
        self.pipeline_with(variant, None)
    }

    /// [`Context::pipeline`] for a variant that may include the user's snippets: `mods`
    /// gives their module and the number of aux tensors (bound in group 1).
    pub(crate) fn pipeline_with(
        &self,
        variant: Variant,
        mods: Option<&ModsInfo>,
    ) -> Result<wgpu::ComputePipeline> {
        let user = if variant.uses_user_module() {
            mods.and_then(|m| m.user.clone())
        } else {
            None
        };
        let aux = if variant.uses_user_module() {
            mods.map_or(0, ModsInfo::snippet_aux)
        } else {
            0
        };
        let key = (variant, user);
        let mut cache = self
            .pipelines
            .lock()
            .map_err(|_| Error::Gpu("pipeline cache poisoned".into()))?;
        if let Some(p) = cache.get(&key) {
            return Ok(p.clone());
        }
        let label = variant.label();
        // A device with fewer storage buffers per stage than the kernel binds (OpenGL ES 3.1
        // guarantees 4; WebGPU, 8) cannot run it: say so, before wgpu's validation does.
        crate::kernels::check_bindings(self, &label, variant.kernel, aux)?;
        let source = variant.source_with(key.1.as_deref()).map_err(Error::Gpu)?;
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(&label),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
        let entries: Vec<_> = variant
            .kernel
            .bindings()
            .iter()
            .enumerate()
            .map(|(i, b)| b.layout_entry(i as u32))
            .collect();
        let group_layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(&label),
                entries: &entries,
            });
        let aux_entries: Vec<_> = (0..aux as u32)
            .map(|i| crate::kernels::Binding::ReadOnly.layout_entry(i))
            .collect();
        let aux_layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("wgattn aux tensors"),
                entries: &aux_entries,
            });
        let groups = [Some(&group_layout), Some(&aux_layout)];
        let layout = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(&label),
                bind_group_layouts: if aux > 0 { &groups } else { &groups[..1] },
                immediate_size: 0,
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&label),
                layout: Some(&layout),
                module: &module,
                entry_point: Some("main"),
                // Every kernel writes its workgroup memory before reading it (audited in
                // shaders/; WebGPU in a browser zeroes it anyway). Zeroing costs a pass per
                // workgroup, and on GL naga spells it as one array constructor of every
                // element, which llvmpipe took a minute to compile for a fused tile.
                compilation_options: wgpu::PipelineCompilationOptions {
                    zero_initialize_workgroup_memory: false,
                    ..Default::default()
                },
                cache: None,
            });
        if let Some(e) = crate::gpu::scope_error(scope) {
            return Err(Error::Gpu(format!("building {label}: {e}")));
        }
        if let Some(e) = crate::gpu::scope_error(oom) {
            return Err(Error::OutOfMemory {
                what: format!("pipeline {label}"),
                requested: 0,
                engine_bytes: self.memory().live_bytes,
                message: e.to_string(),
            });
        }
        cache.insert(key, pipeline.clone());
        Ok(pipeline)
    }
}

/// Adapters whose buffers live in host memory, where mapping a storage buffer costs nothing
/// and saves the staging copy (on a discrete GPU a mappable buffer would sit in slow memory).
fn shares_host_memory(kind: wgpu::DeviceType) -> bool {
    matches!(
        kind,
        wgpu::DeviceType::Cpu | wgpu::DeviceType::IntegratedGpu
    )
}

async fn pick_adapter(instance: &wgpu::Instance) -> Result<wgpu::Adapter> {
    let adapters = instance.enumerate_adapters(wgpu::Backends::all()).await;
    if let Ok(name) = std::env::var("WGPU_ADAPTER_NAME") {
        let want = name.to_lowercase();
        let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
        return adapters
            .into_iter()
            .find(|a| a.get_info().name.to_lowercase().contains(&want))
            .ok_or_else(|| {
                Error::NoAdapter(format!(
                    "WGPU_ADAPTER_NAME={name} matches none of {names:?}"
                ))
            });
    }
    let preference = wgpu::PowerPreference::from_env().unwrap_or_default();
    match instance
        .request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: preference,
            ..Default::default()
        })
        .await
    {
        Ok(a) => Ok(a),
        // request_adapter may pass over a CPU adapter; take any adapter rather than none.
        Err(e) => adapters.into_iter().next().ok_or_else(|| {
            Error::NoAdapter(format!(
                "{e}; on a machine without a GPU install the software Vulkan driver \
                 (apt-get install mesa-vulkan-drivers)"
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::Kernel;

    #[test]
    fn user_pipelines_are_bounded_oldest_first() {
        let mut cache = PipelineCache::<u32> {
            user_max: 3,
            ..Default::default()
        };
        let variant = |k| Variant::new(k, DType::F32, None);
        let user = |n: u32| Some(Arc::<str>::from(format!("return k != {n}u;")));
        cache.insert((variant(Kernel::Softmax), None), 0);
        for n in 1..=5 {
            cache.insert((variant(Kernel::ApplyMask), user(n)), n);
            // Built again (another thread raced it): counted once.
            cache.insert((variant(Kernel::ApplyMask), user(n)), n);
        }
        assert_eq!(cache.map.len(), 4, "the engine's own and the three newest");
        assert!(cache.get(&(variant(Kernel::Softmax), None)).is_some());
        for n in 1..=2 {
            assert!(cache.get(&(variant(Kernel::ApplyMask), user(n))).is_none());
        }
        for n in 3..=5 {
            assert_eq!(cache.get(&(variant(Kernel::ApplyMask), user(n))), Some(&n));
        }
    }
}
