//! Execution plans: the buffers, shaders, dispatches and copies the engine records for one
//! request, captured as it records them, so that another WebGPU implementation (a browser)
//! can replay exactly what [`crate::masked_attention`] would run.
//!
//! [`plan`] records the request as the engine does (same validation, same path choice, same
//! kernels, tiles, uniform blocks and bind groups, from the context's limits and features)
//! while a trace is active on the calling thread; the engine's buffer, bind-group, dispatch
//! and copy helpers (`src/gpu.rs`) report to it. Nothing is submitted. Replaying a plan means:
//! create every buffer with its size and usage, write its initial contents, run the steps in
//! order in one submission, then read the result ranges.

use crate::attention;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::gpu::{present, Held};
use crate::kernels::{Binding, ShaderFeatures, Variant};
use crate::problem::{AttentionInputs, AttentionOptions, AttentionProblem, ExecutionPath};
use crate::split;
use crate::tensor::DType;

/// What one request records: replay it in one submission.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The path the engine chose (`Staged` or `Fused`).
    pub path: ExecutionPath,
    /// The optional features the shaders use (the union over [`Plan::shaders`]).
    pub features: ShaderFeatures,
    /// The limits of the context planned on (the plan fits them).
    pub limits: wgpu::Limits,
    /// Every buffer, indexed by [`PlanBuffer::id`].
    pub buffers: Vec<PlanBuffer>,
    /// Every shader a step runs, indexed by [`Dispatch::shader`].
    pub shaders: Vec<PlanShader>,
    /// The steps, in recording order.
    pub steps: Vec<Step>,
    /// Where the results lie after the steps ran.
    pub results: Vec<PlanResult>,
}

/// One buffer of a plan.
#[derive(Clone, Debug)]
pub struct PlanBuffer {
    /// Its index in [`Plan::buffers`].
    pub id: usize,
    /// Bytes.
    pub size: u64,
    /// wgpu usage flags, as created.
    pub usage: wgpu::BufferUsages,
    /// What it holds before the first step.
    pub contents: Contents,
}

/// The contents of a buffer before the first step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Contents {
    /// Zeros (what a new buffer holds).
    Zeros,
    /// These bytes from offset 0, zeros after them.
    Bytes(Vec<u8>),
    /// Every byte set to this value (`0xff`: outputs poisoned with NaN, see
    /// [`Context::set_poison_outputs`]).
    Fill(u8),
}

/// One specialized shader of a plan.
#[derive(Clone, Debug)]
pub struct PlanShader {
    /// The specialization (kernel, dtype, mask kind, tile, features).
    pub variant: Variant,
    /// [`Variant::label`].
    pub label: String,
    /// The WGSL source as naga (wgpu) reads it. Tint also needs `enable subgroups;` in front
    /// of a shader with [`ShaderFeatures::subgroups`] (naga 30 refuses that line).
    pub source: String,
    /// The entry point.
    pub entry_point: &'static str,
    /// Bind group 0, binding `i` at index `i`.
    pub bindings: Vec<Binding>,
}

/// One recorded command.
#[derive(Clone, Debug)]
pub enum Step {
    /// A compute pass with one dispatch.
    Dispatch(Dispatch),
    /// A buffer-to-buffer copy.
    Copy(BufferCopy),
}

/// A compute pass with one dispatch.
#[derive(Clone, Debug)]
pub struct Dispatch {
    /// The pass label.
    pub label: String,
    /// Index into [`Plan::shaders`].
    pub shader: usize,
    /// Bind group 0: what binding `i` binds is at index `i`.
    pub bindings: Vec<BoundRange>,
    /// Workgroup counts in x, y, z.
    pub workgroups: [u32; 3],
}

/// A range of a buffer bound to one binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoundRange {
    /// Index into [`Plan::buffers`].
    pub buffer: usize,
    /// Byte offset.
    pub offset: u64,
    /// Bytes bound.
    pub size: u64,
}

/// A buffer-to-buffer copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferCopy {
    /// Source buffer (index into [`Plan::buffers`]).
    pub src: usize,
    /// Byte offset in the source.
    pub src_offset: u64,
    /// Destination buffer.
    pub dst: usize,
    /// Byte offset in the destination.
    pub dst_offset: u64,
    /// Bytes copied.
    pub size: u64,
}

/// Where one result tensor lies after the steps ran.
#[derive(Clone, Debug)]
pub struct PlanResult {
    /// `out`, `scores`, `logits` or `probs` (the result file's names).
    pub name: &'static str,
    /// Index into [`Plan::buffers`].
    pub buffer: usize,
    /// Byte offset.
    pub offset: u64,
    /// Bytes (the elements, little-endian, without padding).
    pub size: u64,
    /// dtype of the elements in the buffer: `out` is in the input dtype, the intermediates are
    /// f32 on the GPU (the engine rounds them to the input dtype after reading back).
    pub dtype: DType,
    /// Shape (`out` in the request's layout; intermediates `[B, Hq, Lq, Lt]`).
    pub shape: Vec<usize>,
}

/// What the engine would record for this request on `ctx`, captured without submitting.
///
/// Validation and the path choice are [`crate::masked_attention`]'s (same errors). A request
/// that would run as several submissions (over the binding limits, see [`crate::Tuning`])
/// is refused with [`Error::InvalidCombination`]. Buffers are created unpooled (sizes are
/// the requested ones rounded up to 16 bytes), so a plan does not depend on earlier calls.
/// `present_k`/`present_v` are built on the host and are not among the results.
pub fn plan(
    ctx: &Context,
    inputs: &AttentionInputs<'_>,
    options: &AttentionOptions,
) -> Result<Plan> {
    let _serial = pollster::block_on(ctx.serial());
    ctx.check_alive()?;
    let p = AttentionProblem::new(inputs, options)?;
    let path = attention::resolve_path(ctx, &p, options.path)?;
    if split::plan(ctx, &p, inputs, path)?.is_some() {
        return Err(Error::InvalidCombination(
            "this request is over the binding limits and runs as several submissions; a plan \
             holds one: plan smaller requests",
        ));
    }
    if inputs.mods.is_some_and(|m| !m.aux.is_empty()) {
        return Err(Error::InvalidCombination(
            "a plan holds one bind group per dispatch: plan requests without aux tensors",
        ));
    }
    let present = present(&p, inputs)?;
    let mut held = Held::unpooled(ctx);
    let (recorded, trace) =
        trace::capture(|| attention::record(ctx, &p, inputs, path, &present, &mut held));
    let recorded = recorded?;
    let readback = trace
        .find(&recorded.readback)
        .ok_or_else(|| bug("the read-back buffer was not traced"))?;
    let layout = &recorded.layout;
    let mut results = Vec::new();
    if let Some(offset) = layout.offsets[0] {
        results.push(PlanResult {
            name: "out",
            buffer: readback,
            offset,
            size: (p.out_len() * p.dtype.size()) as u64,
            dtype: p.dtype,
            shape: p.out_shape(),
        });
    }
    for (name, slot) in ["scores", "logits", "probs"]
        .into_iter()
        .zip(&layout.offsets[1..])
    {
        if let Some(offset) = *slot {
            results.push(PlanResult {
                name,
                buffer: readback,
                offset,
                size: p.score_len() as u64 * 4,
                dtype: DType::F32,
                shape: p.score_shape(),
            });
        }
    }
    let mut plan = trace.into_plan(ctx)?;
    plan.path = path;
    plan.results = results;
    Ok(plan)
}

fn bug(what: &str) -> Error {
    Error::Gpu(format!("capturing a plan: {what} (a bug in wgattn)"))
}

/// The capture: a trace the engine's GPU helpers report to while one is active on the
/// calling thread (they do nothing otherwise).
pub(crate) mod trace {
    use std::cell::RefCell;

    use super::{bug, BoundRange, BufferCopy, Contents, Dispatch, Plan, PlanBuffer, PlanShader};
    use super::{Step, Variant};
    use crate::context::Context;
    use crate::error::Result;
    use crate::gpu::Slice;
    use crate::kernels::ShaderFeatures;
    use crate::problem::ExecutionPath;

    /// What the helpers reported, in order.
    #[derive(Default)]
    pub(crate) struct Trace {
        buffers: Vec<(wgpu::Buffer, Contents)>,
        groups: Vec<(wgpu::BindGroup, Vec<BoundRange>)>,
        steps: Vec<Traced>,
    }

    enum Traced {
        Dispatch {
            label: String,
            pipeline: wgpu::ComputePipeline,
            group: Option<usize>,
            workgroups: [u32; 3],
        },
        Copy(BufferCopy),
    }

    thread_local! {
        static ACTIVE: RefCell<Option<Trace>> = const { RefCell::new(None) };
    }

    fn with(f: impl FnOnce(&mut Trace)) {
        ACTIVE.with(|active| {
            if let Ok(mut active) = active.try_borrow_mut() {
                if let Some(trace) = active.as_mut() {
                    f(trace);
                }
            }
        });
    }

    /// Runs `f` with a trace active on this thread; returns its result and the trace.
    pub(crate) fn capture<R>(f: impl FnOnce() -> R) -> (R, Trace) {
        /// Ends the trace however `f` ends.
        struct Active;
        impl Drop for Active {
            fn drop(&mut self) {
                ACTIVE.with(|a| a.borrow_mut().take());
            }
        }
        ACTIVE.with(|a| *a.borrow_mut() = Some(Trace::default()));
        let active = Active;
        let result = f();
        let trace = ACTIVE.with(|a| a.borrow_mut().take()).unwrap_or_default();
        drop(active);
        (result, trace)
    }

    impl Trace {
        /// The id of a traced buffer.
        pub(crate) fn find(&self, buffer: &wgpu::Buffer) -> Option<usize> {
            self.buffers.iter().position(|(b, _)| b == buffer)
        }

        fn id(&mut self, buffer: &wgpu::Buffer) -> usize {
            self.find(buffer).unwrap_or_else(|| {
                self.buffers.push((buffer.clone(), Contents::Zeros));
                self.buffers.len() - 1
            })
        }

        /// The plan, without path and results (the caller knows those).
        pub(crate) fn into_plan(self, ctx: &Context) -> Result<Plan> {
            let mut shaders: Vec<PlanShader> = Vec::new();
            let mut steps = Vec::new();
            let mut features = ShaderFeatures::default();
            for step in self.steps {
                let (label, pipeline, group, workgroups) = match step {
                    Traced::Copy(c) => {
                        steps.push(Step::Copy(c));
                        continue;
                    }
                    Traced::Dispatch {
                        label,
                        pipeline,
                        group,
                        workgroups,
                    } => (label, pipeline, group, workgroups),
                };
                let (variant, user) = ctx
                    .variant_of(&pipeline)
                    .ok_or_else(|| bug("a dispatch's pipeline is not in the cache"))?;
                let bindings = group
                    .and_then(|g| self.groups.get(g))
                    .map(|(_, b)| b.clone())
                    .ok_or_else(|| bug("a dispatch's bind group was not traced"))?;
                let source = variant
                    .source_with(user.as_deref())
                    .map_err(crate::error::Error::Gpu)?;
                let shader = match shaders
                    .iter()
                    .position(|s| s.variant == variant && s.source == source)
                {
                    Some(i) => i,
                    None => {
                        shaders.push(shader(variant, source));
                        shaders.len() - 1
                    }
                };
                if bindings.len() != shaders[shader].bindings.len() {
                    return Err(bug("a bind group does not match its pipeline's layout"));
                }
                features.f16 |= variant.features.f16;
                features.subgroups |= variant.features.subgroups;
                steps.push(Step::Dispatch(Dispatch {
                    label,
                    shader,
                    bindings,
                    workgroups,
                }));
            }
            let buffers = self
                .buffers
                .into_iter()
                .enumerate()
                .map(|(id, (b, contents))| PlanBuffer {
                    id,
                    size: b.size(),
                    usage: b.usage(),
                    contents,
                })
                .collect();
            Ok(Plan {
                path: ExecutionPath::Auto,
                features,
                limits: ctx.limits().clone(),
                buffers,
                shaders,
                steps,
                results: Vec::new(),
            })
        }
    }

    fn shader(variant: Variant, source: String) -> PlanShader {
        PlanShader {
            variant,
            label: variant.label(),
            source,
            // The entry point of every kernel (`Context::pipeline`).
            entry_point: "main",
            bindings: variant.kernel.bindings().to_vec(),
        }
    }

    /// A buffer was created (zeros, or stale pooled contents no kernel reads).
    pub(crate) fn created(buffer: &wgpu::Buffer) {
        with(|t| {
            t.id(buffer);
        });
    }

    /// `bytes` were written at offset 0 before any command ran.
    pub(crate) fn written(buffer: &wgpu::Buffer, bytes: &[u8]) {
        with(|t| {
            let id = t.id(buffer);
            t.buffers[id].1 = Contents::Bytes(bytes.to_vec());
        });
    }

    /// Every byte was set to `byte` before any command ran.
    pub(crate) fn filled(buffer: &wgpu::Buffer, byte: u8) {
        with(|t| {
            let id = t.id(buffer);
            t.buffers[id].1 = Contents::Fill(byte);
        });
    }

    /// A bind group binding `slices` in order.
    pub(crate) fn bound(group: &wgpu::BindGroup, slices: &[Slice<'_>]) {
        with(|t| {
            let ranges = slices
                .iter()
                .map(|s| BoundRange {
                    buffer: t.id(s.buffer),
                    offset: s.offset,
                    size: s.size,
                })
                .collect();
            t.groups.push((group.clone(), ranges));
        });
    }

    /// A compute pass dispatching `workgroups` of `pipeline` with `group`.
    pub(crate) fn dispatched(
        label: &str,
        pipeline: &wgpu::ComputePipeline,
        group: &wgpu::BindGroup,
        workgroups: [u32; 3],
    ) {
        with(|t| {
            let group = t.groups.iter().position(|(g, _)| g == group);
            t.steps.push(Traced::Dispatch {
                label: label.to_string(),
                pipeline: pipeline.clone(),
                group,
                workgroups,
            });
        });
    }

    /// A copy of `size` bytes.
    pub(crate) fn copied(
        (src, src_offset): (&wgpu::Buffer, u64),
        (dst, dst_offset): (&wgpu::Buffer, u64),
        size: u64,
    ) {
        with(|t| {
            let copy = BufferCopy {
                src: t.id(src),
                src_offset,
                dst: t.id(dst),
                dst_offset,
                size,
            };
            t.steps.push(Traced::Copy(copy));
        });
    }
}
