//! The GPU side of the mods: the `tables` buffer every masking kernel binds (per-batch
//! bounds, then the mods' index tables), the aux tensors of group 1, the token-class pass, and
//! the block mask (the fused kernel's tiles classified empty / full / partial), which a caller
//! can build once with [`block_mask`] and reuse.

use std::hash::{Hash, Hasher};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::gpu::{
    bind_slices, bind_slices_at, check_binding, dispatch_with, grid, Held, Params, Slice, STORAGE,
};
use crate::kernels::{Kernel, Variant};
use crate::mods::{self, MaskMods, ModFlags, TableOffsets};
use crate::problem::{AttentionInputs, AttentionOptions, AttentionProblem};

/// Invocations per workgroup of `token_mask` (`WORKGROUP` in its WGSL).
const TOKEN_WORKGROUP: u64 = 64;

/// How the block mask tiles `[B, Hq, Lq, Lt]`: the fused kernel's tile (`rows` x `keys`), and
/// whether the mask differs between batch entries and heads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct BlockLayout {
    pub rows: u32,
    pub keys: u32,
    pub q_tiles: u32,
    pub k_tiles: u32,
    pub batches: u32,
    pub heads: u32,
}

impl BlockLayout {
    pub(crate) fn new(p: &AttentionProblem, rows: u32, keys: u32) -> Option<Self> {
        let m = p.mods.as_ref()?;
        if !m.flags.masks() {
            return None;
        }
        Some(BlockLayout {
            rows,
            keys,
            q_tiles: (p.q_len as u32).div_ceil(rows),
            k_tiles: (p.total_len() as u32).div_ceil(keys),
            batches: if m.per_batch { p.batch as u32 } else { 1 },
            heads: if m.per_head { p.q_heads as u32 } else { 1 },
        })
    }

    /// Number of blocks (one word each).
    pub(crate) fn words(&self) -> u64 {
        self.batches as u64 * self.heads as u64 * self.q_tiles as u64 * self.k_tiles as u64
    }

    fn set_params(&self, params: &mut Params) {
        let per_head = self.q_tiles * self.k_tiles;
        params.blk_q = self.rows;
        params.blk_k = self.keys;
        params.blk_qt = self.q_tiles;
        params.blk_kt = self.k_tiles;
        params.blk_sh = if self.heads > 1 { per_head } else { 0 };
        params.blk_sb = if self.batches > 1 {
            per_head * self.heads
        } else {
            0
        };
    }
}

/// Bytes of the tables, checked against the binding limit before they are built (and by each
/// path's `check_limits`, so [`crate::split`] sees them): the bounds, the mods' tables and the
/// block mask's words.
pub(crate) fn check_tables(
    ctx: &Context,
    p: &AttentionProblem,
    blocks: Option<BlockLayout>,
) -> Result<u64> {
    let bounds = 4 * p.bounds.len() as u64;
    let mods = p
        .mods
        .as_ref()
        .map_or(0, |m| mods::table_words(m, &dims(p)));
    let words = (bounds + mods + blocks.map_or(0, |b| b.words())).max(1);
    check_binding(ctx, TABLES, words * 4)
}

fn dims(p: &AttentionProblem) -> mods::Dims {
    mods::Dims {
        batch: p.batch,
        q_heads: p.q_heads,
        q_len: p.q_len,
        total_len: p.total_len(),
    }
}

const TABLES: &str = "mask tables (bounds, mods, block mask)";

/// The uploaded `tables` of one call and where its parts lie.
pub(crate) struct Tables {
    pub buffer: wgpu::Buffer,
    pub bytes: u64,
    offsets: TableOffsets,
    blocks: Option<BlockLayout>,
    fingerprint: u64,
}

impl Tables {
    /// Builds and uploads the tables: bounds, then the mods' data, then room for the token
    /// pass's key flags and `blocks`' words.
    pub(crate) fn upload(
        ctx: &Context,
        held: &mut Held<'_>,
        p: &AttentionProblem,
        mods: Option<&MaskMods>,
        blocks: Option<BlockLayout>,
    ) -> Result<Self> {
        let mut words: Vec<u32> = p
            .bounds
            .iter()
            .flat_map(|b| [b.lo, b.hi, b.kv_len, b.offset].map(|x| x as u32))
            .collect();
        let block_words = blocks.map_or(0, |b| b.words());
        let bytes = check_tables(ctx, p, blocks)?;
        let offsets = match mods {
            Some(m) => mods::append_tables(&mut words, m, &dims(p), block_words as usize),
            None => TableOffsets::default(),
        };
        if words.is_empty() {
            words.push(0);
        }
        // What was checked is what is bound.
        if words.len() as u64 * 4 != bytes {
            return Err(Error::Gpu(format!(
                "mask tables: {} words built, {} counted",
                words.len(),
                bytes / 4
            )));
        }
        let fingerprint = fingerprint(p, mods, &words, &offsets, blocks);
        let buffer = held.upload(bytemuck::cast_slice(&words))?;
        Ok(Tables {
            buffer,
            bytes,
            offsets,
            blocks,
            fingerprint,
        })
    }

    /// Writes the tables' offsets and the block layout into the uniform block.
    pub(crate) fn set_params(&self, params: &mut Params) {
        let o = &self.offsets;
        params.t_q_seg = o.q_seg;
        params.t_kv_seg = o.kv_seg;
        params.t_prefix = o.prefix;
        params.t_alibi = o.alibi;
        params.alibi_symmetric = o.alibi_symmetric;
        params.t_ids = o.ids;
        params.t_blocked = o.blocked;
        params.n_blocked = o.n_blocked;
        params.t_classes = o.classes;
        params.n_classes = o.n_classes;
        params.t_class_blocked = o.class_blocked;
        params.t_key_ok = o.key_ok;
        params.t_mod_q = o.mod_q;
        params.t_mod_kv = o.mod_kv;
        params.t_allow = o.allow;
        params.t_mod_causal = o.mod_causal;
        params.modalities = o.modalities;
        params.t_blocks = o.blocks;
        if let Some(b) = self.blocks {
            b.set_params(params);
        }
    }

    pub(crate) fn slice(&self) -> Slice<'_> {
        Slice::whole(&self.buffer, self.bytes)
    }

    /// Records the passes that fill the tables before attention: the token pass (with a
    /// token filter), then the block mask (classified here, or copied from `reuse`).
    pub(crate) fn encode_passes(
        &self,
        ctx: &Context,
        p: &AttentionProblem,
        uniform: Slice<'_>,
        aux: Option<&AuxGroup>,
        reuse: Option<&BlockMask>,
        encoder: &mut wgpu::CommandEncoder,
    ) -> Result<()> {
        let Some(info) = p.mods.as_ref() else {
            return Ok(());
        };
        let flags = info.flags;
        if flags.tokens {
            let variant = Variant::new(Kernel::TokenMask, p.dtype, None);
            let pipeline = ctx.pipeline(variant)?;
            let n = (p.batch * p.total_len()) as u64;
            let g = grid(ctx, "token_mask", n.div_ceil(TOKEN_WORKGROUP))?;
            let group = bind_slices(ctx, &pipeline, "token_mask", &[uniform, self.slice()]);
            crate::gpu::dispatch(encoder, "token_mask", (&variant, &pipeline), &group, g);
        }
        let Some(layout) = self.blocks else {
            return Ok(());
        };
        let at = self.offsets.blocks as u64 * 4;
        let bytes = layout.words() * 4;
        match reuse {
            Some(bm) => {
                if bm.context != ctx.id() {
                    return Err(Error::BlockMaskMismatch(
                        "it was built on another context (build it with wgattn::block_mask \
                         on the context that runs the call)"
                            .into(),
                    ));
                }
                if bm.layout != layout || bm.fingerprint != self.fingerprint {
                    return Err(Error::BlockMaskMismatch(format!(
                        "it was built for tiles of {}x{} over {}x{} blocks and other mods or \
                         shapes; this call needs {}x{} over {}x{} (build it with \
                         wgattn::block_mask for these inputs and options)",
                        bm.layout.rows,
                        bm.layout.keys,
                        bm.layout.q_tiles,
                        bm.layout.k_tiles,
                        layout.rows,
                        layout.keys,
                        layout.q_tiles,
                        layout.k_tiles
                    )));
                }
                crate::gpu::copy(encoder, (&bm.buffer, 0), (&self.buffer, at), bytes);
            }
            None => {
                let variant = Variant::new(Kernel::BlockMask, p.dtype, None).with_mods(flags);
                let pipeline = ctx.pipeline_with(variant, Some(info))?;
                let g = grid(ctx, "block_mask", layout.words())?;
                let group = bind_slices(ctx, &pipeline, "block_mask", &[uniform, self.slice()]);
                let aux = AuxGroup::bind_for(aux, ctx, &variant, &pipeline);
                let pass = (&variant, &pipeline);
                dispatch_with(encoder, "block_mask", pass, &group, aux.as_ref(), g);
            }
        }
        Ok(())
    }
}

/// A hash of everything a block mask depends on.
fn fingerprint(
    p: &AttentionProblem,
    mods: Option<&MaskMods>,
    words: &[u32],
    offsets: &TableOffsets,
    blocks: Option<BlockLayout>,
) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (p.batch, p.q_heads, p.q_len, p.total_len()).hash(&mut h);
    blocks.hash(&mut h);
    let end = if blocks.is_some() {
        offsets.blocks as usize
    } else {
        words.len()
    };
    words[..end.min(words.len())].hash(&mut h);
    if let Some(m) = mods {
        m.mask_mod.hash(&mut h);
        for a in &m.aux {
            a.name.hash(&mut h);
            a.data.words().hash(&mut h);
        }
    }
    h.finish()
}

/// The aux tensors of one call, uploaded (bound in group 1 of the kernels that include the
/// user's snippets).
pub(crate) struct AuxGroup {
    buffers: Vec<(wgpu::Buffer, u64)>,
}

impl AuxGroup {
    pub(crate) fn upload(
        ctx: &Context,
        held: &mut Held<'_>,
        mods: Option<&MaskMods>,
    ) -> Result<Option<Self>> {
        let Some(m) = mods.filter(|m| !m.aux.is_empty()) else {
            return Ok(None);
        };
        // Whether the kernels' storage buffers, the aux tensors and their second bind group
        // fit the device is checked as each pipeline is built (`kernels::check_bindings`), and
        // before the fused path is chosen.
        let mut buffers = Vec::new();
        for a in &m.aux {
            let words = a.data.words();
            let bytes = check_binding(ctx, &format!("aux_{}", a.name), words.len() as u64 * 4)?;
            let b = held.upload(bytemuck::cast_slice(&words))?;
            buffers.push((b, bytes));
        }
        Ok(Some(AuxGroup { buffers }))
    }

    /// Group 1 of `pipeline`: each tensor bound exactly (so `arrayLength` is its length).
    pub(crate) fn bind(&self, ctx: &Context, pipeline: &wgpu::ComputePipeline) -> wgpu::BindGroup {
        let slices: Vec<Slice<'_>> = self
            .buffers
            .iter()
            .map(|(buffer, bytes)| Slice {
                buffer,
                offset: 0,
                size: (*bytes).max(4).next_multiple_of(4),
            })
            .collect();
        bind_slices_at(ctx, pipeline, 1, "wgattn aux tensors", &slices)
    }

    /// Group 1 for `variant` (none where the variant does not include the snippets).
    pub(crate) fn bind_for(
        this: Option<&Self>,
        ctx: &Context,
        variant: &Variant,
        pipeline: &wgpu::ComputePipeline,
    ) -> Option<wgpu::BindGroup> {
        match this {
            Some(a) if variant.uses_user_module() => Some(a.bind(ctx, pipeline)),
            _ => None,
        }
    }
}

/// The mask mods of one problem classified per tile of the fused kernel (empty tiles are
/// skipped, full ones need no mask evaluation), kept on the GPU for reuse: pass it with
/// [`AttentionInputs::with_block_mask`] to calls with the same shapes, options and mods, and
/// the classification pass is not run again. Build it with [`block_mask`].
#[derive(Debug)]
pub struct BlockMask {
    /// The context that built it ([`Context::id`]): its buffer means nothing to another one's
    /// device (wgpu would resolve it to whichever buffer there has the same id).
    context: u64,
    buffer: wgpu::Buffer,
    layout: BlockLayout,
    fingerprint: u64,
    counts: BlockCounts,
}

/// How many blocks of a [`BlockMask`] are of each kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockCounts {
    /// Blocks every position of which the mods disallow (skipped).
    pub empty: u64,
    /// Blocks every position of which the mods allow (no mask evaluation).
    pub full: u64,
    /// The rest, evaluated position by position.
    pub partial: u64,
}

impl BlockMask {
    /// The number of empty, full and partial blocks.
    pub fn counts(&self) -> BlockCounts {
        self.counts
    }

    /// Query rows and keys per block (the fused kernel's tile on this device).
    pub fn block_size(&self) -> (usize, usize) {
        (self.layout.rows as usize, self.layout.keys as usize)
    }

    /// Blocks along the query and key axes.
    pub fn grid(&self) -> (usize, usize) {
        (self.layout.q_tiles as usize, self.layout.k_tiles as usize)
    }
}

/// Classifies the tiles of a request's mask mods on the GPU (waits for it) and returns the
/// block mask to reuse across calls with the same shapes, options and mods.
///
/// Errors where the request has no mod that can disallow a position (segments, prefix-LM,
/// token filter, modalities, `mask_mod`), or where the fused path cannot take it.
pub fn block_mask(
    ctx: &Context,
    inputs: &AttentionInputs<'_>,
    options: &AttentionOptions,
) -> Result<BlockMask> {
    ctx.check_alive()?;
    let p = AttentionProblem::new(inputs, options)?;
    crate::fused::supports(ctx, &p)?;
    let layout =
        crate::fused::Config::new(ctx, &p)?
            .blocks(&p)
            .ok_or(Error::InvalidCombination(
                "a block mask needs a mod that can disallow positions (segments, prefix-LM, \
             token filter, modalities or mask_mod)",
            ))?;
    let mut held = Held::unpooled(ctx);
    let tables = Tables::upload(ctx, &mut held, &p, inputs.mods, Some(layout))?;
    let mut params = Params::new(&p);
    tables.set_params(&mut params);
    let uniform = held.uniform(&params)?;
    let aux = AuxGroup::upload(ctx, &mut held, inputs.mods)?;
    let bytes = layout.words() * 4;
    let size = bytes.max(16).next_multiple_of(16);
    // The caller keeps the block mask; the read-back goes with this call.
    let buffer = held.outliving(&wgpu::BufferDescriptor {
        label: Some("wgattn block mask"),
        size,
        usage: STORAGE,
        mapped_at_creation: false,
    })?;
    let readback = held.outliving(&wgpu::BufferDescriptor {
        label: Some("wgattn block mask read-back"),
        size,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })?;
    let scope = ctx.device().push_error_scope(wgpu::ErrorFilter::Validation);
    let mut encoder = ctx
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("wgattn block mask"),
        });
    let u = Slice {
        buffer: &uniform,
        offset: 0,
        size: std::mem::size_of::<Params>() as u64,
    };
    let recorded = tables.encode_passes(ctx, &p, u, aux.as_ref(), None, &mut encoder);
    let at = tables.offsets.blocks as u64 * 4;
    encoder.copy_buffer_to_buffer(&tables.buffer, at, &buffer, 0, bytes);
    encoder.copy_buffer_to_buffer(&buffer, 0, &readback, 0, bytes);
    let index = recorded.map(|()| ctx.queue().submit([encoder.finish()]));
    if let Some(e) = crate::gpu::scope_error(scope) {
        return Err(Error::Gpu(format!("block mask: {e}")));
    }
    let index = index?;
    let (tx, rx) = std::sync::mpsc::channel();
    readback.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    ctx.device()
        .poll(wgpu::PollType::Wait {
            submission_index: Some(index),
            timeout: None,
        })
        .map_err(|e| Error::Gpu(format!("block mask: {e}")))?;
    match rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(Error::Gpu(format!("block mask read-back: {e}"))),
        Err(_) => return Err(Error::Gpu("block mask read-back was cancelled".into())),
    }
    let mut counts = BlockCounts::default();
    {
        let view = readback
            .get_mapped_range(..bytes)
            .map_err(|e| Error::Gpu(format!("mapping the block mask: {e}")))?;
        for w in view.chunks_exact(4) {
            match u32::from_le_bytes([w[0], w[1], w[2], w[3]]) {
                0 => counts.empty += 1,
                1 => counts.full += 1,
                _ => counts.partial += 1,
            }
        }
    }
    readback.unmap();
    ctx.check_alive()?;
    Ok(BlockMask {
        context: ctx.id(),
        buffer,
        layout,
        fingerprint: tables.fingerprint,
        counts,
    })
}

/// Flags of a problem's mods (none without mods).
pub(crate) fn flags(p: &AttentionProblem) -> ModFlags {
    p.mods.as_ref().map_or(ModFlags::default(), |m| m.flags)
}
