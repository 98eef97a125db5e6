//! The fused path: `fused` (prefill, one invocation per query row, key tiles in workgroup
//! memory) or `fused_decode` (short query blocks, keys split across workgroups), then
//! `fused_combine` when keys were split. Memory is linear in the sequence lengths.

use crate::blocks::{self, AuxGroup, BlockLayout, BlockMask, Tables};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::gpu::{
    bind_slices, check_binding, dispatch, dispatch_with, grid, Held, Params, Present, Readback,
    Recorded, Slice,
};
use crate::kernels::{Kernel, Tile, Variant};
use crate::loops;
use crate::mods::{MaskMods, ModFlags, ModsInfo};
use crate::problem::{AttentionInputs, AttentionProblem};
use crate::staged::upload_mask;
use crate::tensor::{DType, Tensor};

/// Largest head dim the fused kernels take (their per-invocation arrays grow with it).
const MAX_HEAD_DIM: usize = 512;
/// Query blocks up to this length take the decode kernel.
pub(crate) const DECODE_MAX_Q: usize = 4;
/// On CPU adapters query blocks up to this length take the decode kernel too where no block
/// mask holds it to one row per workgroup and the keys fit `DECODE_MAX_SPLITS_CPU` splits of
/// at most `DECODE_MAX_CHUNK_CPU` keys: there it read keys 1.7x to 25x faster than the
/// prefill kernel's tiles (BENCHMARKS.md, session 14). Beyond 128 rows a causal prefill skips
/// keys better in the prefill kernel.
const DECODE_MAX_Q_CPU: usize = 128;
/// Each split of the decode kernel keeps a partial state per query row: a bound on their
/// number keeps the partials of longer query blocks a few rows' worth, O(Lq), not O(Lq x Lt);
/// longer keys take longer splits.
const DECODE_MAX_SPLITS_CPU: u64 = 16;
/// The longest split of the decode kernel for longer query blocks on CPU adapters (each
/// invocation keeps `keys / invocations` scores per row in private memory).
const DECODE_MAX_CHUNK_CPU: u64 = 2048;
/// Keys per split of the decode kernel (`Tuning::decode_keys_per_split` overrides it; on
/// lavapipe 512 to 4096 measured the same within the run-to-run spread, BENCHMARKS.md).
pub(crate) const DECODE_CHUNK: u32 = 512;
/// Invocations per workgroup of the decode kernel on GPUs (`Tuning::decode_invocations`
/// overrides it).
pub(crate) const DECODE_INVOCATIONS_GPU: u32 = 64;
/// Invocations per workgroup of the decode kernel on CPU adapters, where each is a SIMD lane
/// and fewer mean fewer accumulators to sum.
const DECODE_INVOCATIONS_CPU: u32 = 16;
/// Query rows per workgroup of the decode kernel on CPU adapters (`Tuning::decode_rows`
/// overrides it; GPUs take one until one is measured).
const DECODE_ROWS_CPU: u32 = 4;
/// The most query rows per workgroup the decode kernel takes (its per-row steps are written
/// out for four rows).
const DECODE_ROWS_MAX: u32 = 4;
/// Fewer workgroups than this leave a device idle: split the keys.
const TARGET_WORKGROUPS: u64 = 64;
/// Invocations of `fused_combine` per workgroup (`WORKGROUP` in its WGSL).
const COMBINE_WORKGROUP: u64 = 64;

/// Whether the fused kernels can run this problem on this device.
pub(crate) fn supports(ctx: &Context, p: &AttentionProblem) -> Result<()> {
    let biggest = p.head_dim.max(p.v_dim);
    if biggest > MAX_HEAD_DIM {
        return Err(Error::ExceedsLimit {
            what: "fused kernel head dim".into(),
            limit: "fused MAX_HEAD_DIM",
            requested: biggest as u64,
            max: MAX_HEAD_DIM as u64,
        });
    }
    // Both fused kernels bind 7 storage buffers beside the aux tensors: a device with fewer
    // per stage cannot run this path (`Auto` then takes the staged one, which binds at most 5).
    let aux = p.mods.as_ref().map_or(0, ModsInfo::snippet_aux);
    crate::kernels::check_bindings(ctx, "the fused kernels", Kernel::Fused, aux)?;
    Config::new(ctx, p).map(|_| ())
}

/// The kernel, tile and key split chosen for a problem on a device.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    kernel: Kernel,
    tile: Tile,
    /// Key splits per dispatch (each its own partials).
    splits: u32,
    split_len: u32,
    /// Dispatches of the main kernel, each taking the next `splits` splits and carrying the
    /// rows' states in the partials (more than one only for the prefill kernel, where the
    /// driver bounds one invocation's loop trips).
    passes: u32,
    workgroups: u64,
    combine: bool,
}

impl Config {
    pub(crate) fn new(ctx: &Context, p: &AttentionProblem) -> Result<Self> {
        let limits = ctx.limits();
        let d4 = p.head_dim.div_ceil(4) as u32;
        let dv4 = p.v_dim.div_ceil(4) as u32;
        let invocations = limits
            .max_compute_invocations_per_workgroup
            .min(limits.max_compute_workgroup_size_x);
        let rows = 64.min(invocations).max(1);
        let lt = p.total_len() as u64;
        let wg_mem = limits.max_compute_workgroup_storage_size as u64;
        let vec4 = p.head_dim.is_multiple_of(4) && p.v_dim.is_multiple_of(4);
        let packed_odd = p.dtype != DType::F32 && p.v_dim % 2 == 1;
        let tuning = ctx.tuning();
        let cpu = ctx.adapter_info().device_type == wgpu::DeviceType::Cpu;
        let block_mask = p.mods.as_ref().is_some_and(|m| m.flags.masks());
        // Keys per split of the decode kernel: one chunk for short blocks; for longer blocks
        // on CPU adapters, enough to keep within DECODE_MAX_SPLITS_CPU splits.
        let long_block = cpu && !block_mask && p.q_len > DECODE_MAX_Q;
        let decode_keys = match tuning.decode_keys_per_split {
            Some(keys) => keys.clamp(1, 1 << 16) as u64,
            None if long_block => lt
                .div_ceil(DECODE_MAX_SPLITS_CPU)
                .next_power_of_two()
                .clamp(DECODE_CHUNK as u64, DECODE_MAX_CHUNK_CPU),
            None => DECODE_CHUNK as u64,
        };
        let decode_max_q = if long_block && lt.div_ceil(decode_keys) <= DECODE_MAX_SPLITS_CPU {
            DECODE_MAX_Q_CPU
        } else {
            DECODE_MAX_Q
        };
        if p.q_len <= tuning.decode_max_q.unwrap_or(decode_max_q) {
            // A subgroup per key (by default on GPUs, and for wide heads on CPU adapters)
            // where every subgroup is whole: the workgroup a multiple of the largest subgroup.
            let info = ctx.adapter_info();
            let subgroup_keys = ctx.decode_subgroup_keys(p.dtype, p.head_dim, p.v_dim);
            let lanes_at = |wg: u32| {
                let max = info.subgroup_max_size.max(1);
                if subgroup_keys && max <= wg && wg.is_multiple_of(max) {
                    info.subgroup_min_size.max(1)
                } else {
                    0
                }
            };
            // Invocations: the most (a power of two from 4 to 64; 16 on CPU adapters, where
            // each is a SIMD lane and fewer mean fewer accumulators to sum) whose
            // accumulators fit in workgroup memory.
            let mut wg: u32 = tuning.decode_invocations.map_or(
                if cpu {
                    DECODE_INVOCATIONS_CPU
                } else {
                    DECODE_INVOCATIONS_GPU
                },
                |n| n.clamp(4, 1 << 16).next_power_of_two(),
            );
            wg = wg.min(invocations.max(4));
            while wg > 4 && decode_memory(wg, dv4, lanes_at(wg)) > wg_mem {
                wg /= 2;
            }
            let lanes = lanes_at(wg);
            if decode_memory(wg, dv4, lanes) > wg_mem {
                return Err(too_big(decode_memory(wg, dv4, lanes), wg_mem));
            }
            // Query rows per workgroup: consecutive rows of one (batch, kv head), so each key
            // and value row loaded serves all of them; up to the cap, the rows spread evenly
            // over the fewest workgroups (7 rows: 4 and 3, the short group repeating its last
            // row and writing nothing for the repeat); at most the workgroup's size (each row
            // writes an empty split's partial), and one with a block mask (one kind per row and
            // key block).
            let per_kv_head = (p.group() * p.q_len).max(1) as u32;
            let cap = if block_mask {
                1
            } else {
                tuning
                    .decode_rows
                    .unwrap_or(if cpu { DECODE_ROWS_CPU } else { 1 })
                    .clamp(1, DECODE_ROWS_MAX.min(wg))
            };
            let r = per_kv_head.div_ceil(per_kv_head.div_ceil(cap));
            let mut tile = Tile {
                rows: wg,
                per_invocation: r,
                keys: (decode_keys as u32).next_multiple_of(wg),
                d4,
                dv4,
                split: true,
                vec4,
                lanes,
            };
            // Where the driver ends loops past a count of trips per invocation (llvmpipe),
            // splits short enough to stay within it.
            if let Some(limit) = ctx.loop_trip_limit() {
                let trips = |t: &Tile| loops::decode(t, t.keys as u64, info.subgroup_max_size);
                while tile.keys > wg && trips(&tile) > limit {
                    tile.keys = (tile.keys / 2).next_multiple_of(wg);
                }
                if trips(&tile) > limit {
                    return Err(loops::too_many_trips("fused_decode", trips(&tile), limit));
                }
            }
            let chunk = tile.keys;
            let splits = lt.div_ceil(chunk as u64).max(1);
            let groups = (p.rows() as u64 / per_kv_head as u64) * per_kv_head.div_ceil(r) as u64;
            return Ok(Config {
                kernel: Kernel::FusedDecode,
                tile,
                splits: splits as u32,
                split_len: chunk,
                passes: 1,
                workgroups: groups * splits,
                combine: true,
            });
        }
        // Keys per tile: the most (a power of two from 4 to 64) whose key and value rows fit
        // in workgroup memory.
        let per_key = Tile {
            d4,
            dv4,
            vec4,
            ..Tile::default()
        }
        .bytes_per_key(p.dtype);
        let mut keys = tuning
            .keys_per_tile
            .map_or(64, |k| (k as u64).next_multiple_of(4).max(4));
        while keys > 4 && keys * per_key > wg_mem {
            keys = (keys / 2).next_multiple_of(4);
        }
        if keys * per_key > wg_mem {
            return Err(too_big(keys * per_key, wg_mem));
        }
        // CPU adapters (SIMD across invocations) are bound by loads: each invocation takes
        // several rows so every key and value loaded serves all of them.
        let per_invocation = tuning
            .rows_per_invocation
            .unwrap_or(match (cpu, d4 + dv4) {
                // Beyond D = Dv = 128 the private rows grow large (and slow to compile).
                (true, 0..=64) => 4,
                (true, _) => 2,
                (false, _) => 1,
            })
            .clamp(1, 16);
        let bq = (rows * per_invocation) as u64;
        let q_tiles = (p.q_len as u64).div_ceil(bq);
        let base = q_tiles * (p.batch * p.q_heads) as u64;
        // Splits cut each tile's own key range, from its first allowed key: the widest such
        // range decides how many are needed (a window's few hundred keys, not Lt).
        let width = widest_key_range(p, bq, if block_mask { keys - 1 } else { 0 });
        let mut splits = 1u64;
        if base < TARGET_WORKGROUPS {
            splits = TARGET_WORKGROUPS
                .div_ceil(base)
                .min(width.div_ceil(keys * 4))
                .max(1);
        }
        let mut tile = Tile {
            rows,
            per_invocation,
            keys: keys as u32,
            d4,
            dv4,
            split: false,
            vec4,
            lanes: 0,
        };
        let mut split_len = width.div_ceil(splits).next_multiple_of(keys);
        // Where the driver ends loops past a count of trips per invocation (llvmpipe), no
        // split longer than the tiles one invocation may take.
        if let Some(limit) = ctx.loop_trip_limit() {
            let (per_tile, fixed) = loops::prefill(&tile);
            let tiles = limit.saturating_sub(fixed) / per_tile;
            if tiles == 0 {
                return Err(loops::too_many_trips("fused", per_tile + fixed, limit));
            }
            if split_len > tiles * keys {
                // As many splits as that takes, of even length.
                split_len = width
                    .div_ceil(width.div_ceil(tiles * keys))
                    .next_multiple_of(keys);
            }
        }
        // Splits beyond those the device wants at once run in passes, one after another
        // over the same partials: memory stays `splits x Lq` however long the keys (a one-head
        // prefill of 32768 keys on llvmpipe took 35 splits at once, 312 MB of partials, over
        // its binding limit).
        let chunks = width.div_ceil(split_len).max(1);
        let passes = chunks.div_ceil(splits);
        let splits = chunks.div_ceil(passes);
        let combine = splits > 1 || passes > 1 || packed_odd;
        tile.split = combine;
        Ok(Config {
            kernel: Kernel::Fused,
            tile,
            splits: splits as u32,
            split_len: split_len as u32,
            passes: passes as u32,
            workgroups: base * splits,
            combine,
        })
    }

    /// The block mask's layout for this configuration: one block per prefill tile, or per
    /// (query row, key split) of the decode kernel; `None` without mask mods.
    pub(crate) fn blocks(&self, p: &AttentionProblem) -> Option<BlockLayout> {
        let rows = match self.kernel {
            Kernel::FusedDecode => 1,
            _ => self.tile.rows * self.tile.per_invocation,
        };
        BlockLayout::new(p, rows, self.tile.keys)
    }
}

/// The most keys one prefill tile of `bq` query rows may see: the widest key range the
/// structured masks leave any such tile (`key_range` in `fused_io.wgsl`), plus `align` where
/// the kernel moves a range's start down to a tile boundary; at most `Lt`.
fn widest_key_range(p: &AttentionProblem, bq: u64, align: u64) -> u64 {
    let lt = p.total_len() as i64;
    let widest = p
        .bounds
        .iter()
        .map(|bd| {
            // Rows i0..i0 + bq - 1 see keys from i0 + lo to i0 + bq - 1 + hi, below kv_len.
            let band = bq as i64 + bd.hi as i64 - bd.lo as i64;
            band.min(bd.kv_len as i64).max(0) + align as i64
        })
        .max()
        .unwrap_or(lt);
    widest.clamp(1, lt.max(1)) as u64
}

/// Workgroup memory of `fused_decode`: the reduction slots, the accumulators (one per
/// invocation, or with a subgroup per key one per subgroup of at least `lanes`) and the
/// subgroup counter.
fn decode_memory(wg: u32, dv4: u32, lanes: u32) -> u64 {
    let accumulators = wg.checked_div(lanes).unwrap_or(wg);
    wg as u64 * 4 + accumulators as u64 * dv4 as u64 * 16 + 4
}

fn too_big(requested: u64, max: u64) -> Error {
    Error::ExceedsLimit {
        what: "fused kernel workgroup memory".into(),
        limit: "max_compute_workgroup_storage_size",
        requested,
        max,
    }
}

/// Bytes of the fused path's sized bindings, checked against the limits.
pub(crate) struct Bindings {
    out: u64,
    partials: u64,
    readback: Readback,
}

/// Checks every binding of the fused path and its read-back against the limits, from the
/// problem's sizes alone.
pub(crate) fn check_limits(ctx: &Context, p: &AttentionProblem, cfg: &Config) -> Result<Bindings> {
    let bytes = |n: usize| (n * p.dtype.size()) as u64;
    // With a cache the kernels read the concatenated present cache, `[B, Hkv, Lt, _]`.
    let kv_rows = p.batch * p.kv_heads * p.total_len();
    for (what, n) in [
        ("q", p.rows() * p.head_dim),
        ("k", kv_rows * p.head_dim),
        ("v", kv_rows * p.v_dim),
    ] {
        check_binding(ctx, what, bytes(n))?;
    }
    if let Some((_, layout)) = p.mask {
        check_binding(ctx, "mask", layout.len as u64 * 4)?;
    }
    blocks::check_tables(ctx, p, cfg.blocks(p))?;
    let out = check_binding(ctx, "out", bytes(p.out_len()))?;
    let slots = cfg.splits as u64 * p.rows() as u64;
    let partials = if cfg.combine {
        check_binding(
            ctx,
            &format!("fused partials ({} key splits)", cfg.splits),
            slots * (1 + cfg.tile.dv4 as u64) * 16,
        )?
    } else {
        16
    };
    if let (Some(limit), true) = (ctx.loop_trip_limit(), cfg.combine) {
        let trips = loops::combine(cfg.splits as u64, combine_tile(p, cfg).elements(p));
        if trips > limit {
            let what = format!("fused_combine over {} key splits", cfg.splits);
            return Err(loops::too_many_trips(&what, trips, limit));
        }
    }
    let readback = Readback::new(ctx, p, out, 0)?;
    Ok(Bindings {
        out,
        partials,
        readback,
    })
}

/// Whether every binding of the fused path fits the limits for this problem (what
/// [`crate::split`] asks of each sub-problem it considers).
pub(crate) fn fits(ctx: &Context, p: &AttentionProblem) -> Result<()> {
    check_limits(ctx, p, &Config::new(ctx, p)?).map(|_| ())
}

/// Where the fused kernels read their inputs and write `out`.
pub(crate) struct Io<'b> {
    pub q: Slice<'b>,
    pub k: Slice<'b>,
    pub v: Slice<'b>,
    pub mask: Option<Slice<'b>>,
    pub out: Slice<'b>,
    /// The mods' data (`p.mods` says which are given) and a block mask to reuse.
    pub mods: Option<&'b MaskMods>,
    pub block_mask: Option<&'b BlockMask>,
}

/// Uploads the inputs and records the fused kernel (and the merge) into one encoder.
pub(crate) fn record(
    ctx: &Context,
    p: &AttentionProblem,
    inputs: &AttentionInputs<'_>,
    present: &Present,
    held: &mut Held<'_>,
) -> Result<Recorded> {
    // With a cache the kernels read the concatenated present cache (built once on the host
    // for the output anyway).
    let (k, v): (&Tensor, &Tensor) = match present {
        (Some(pk), Some(pv)) => (pk, pv),
        _ => (inputs.k, inputs.v),
    };
    let el = |t: &Tensor| (t.len() * t.dtype().size()) as u64;
    let cfg = Config::new(ctx, p)?;
    let bindings = check_limits(ctx, p, &cfg)?;
    let q_buf = held.upload(&inputs.q.padded_bytes())?;
    let k_buf = held.upload(&k.padded_bytes())?;
    let v_buf = held.upload(&v.padded_bytes())?;
    let mask = upload_mask(held, inputs.mask)?;
    let out = held.scratch(bindings.out)?;
    let readback = held.take(
        bindings.readback.total,
        wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
    )?;
    let io = Io {
        q: Slice::whole(&q_buf, el(inputs.q)),
        k: Slice::whole(&k_buf, el(k)),
        v: Slice::whole(&v_buf, el(v)),
        mask: mask.as_ref().map(|(b, bytes)| Slice::whole(b, *bytes)),
        out: Slice::whole(&out, bindings.out),
        mods: inputs.mods,
        block_mask: inputs.block_mask,
    };
    let mut encoder = ctx
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("wgattn fused"),
        });
    encode(ctx, p, &cfg, &bindings, &io, held, &mut encoder)?;
    crate::gpu::copy(&mut encoder, (&out, 0), (&readback, 0), bindings.out);
    Ok(Recorded {
        encoder,
        readback,
        layout: bindings.readback,
    })
}

/// `fused_combine`'s tile: `vec4` where each invocation can take four elements of a row
/// (f32, or Dv even, so no stored word holds elements of two rows).
fn combine_tile(p: &AttentionProblem, cfg: &Config) -> CombineTile {
    CombineTile(Tile {
        dv4: cfg.tile.dv4,
        vec4: p.dtype == DType::F32 || p.v_dim.is_multiple_of(2),
        ..Tile::default()
    })
}

/// [`Tile`] of `fused_combine`, with what its invocations take.
#[derive(Clone, Copy)]
struct CombineTile(Tile);

impl CombineTile {
    /// Output elements each invocation merges one at a time (each one pass over the splits).
    fn elements(&self, p: &AttentionProblem) -> u64 {
        if self.0.vec4 {
            1
        } else {
            p.dtype.per_word()
        }
    }

    /// Invocations over the output: four elements of a row each, or one stored word.
    fn invocations(&self, p: &AttentionProblem) -> u64 {
        if self.0.vec4 {
            p.rows() as u64 * self.0.dv4 as u64
        } else {
            (p.out_len() as u64).div_ceil(p.dtype.per_word())
        }
    }
}

/// Records the fused path for `p` reading and writing `io` into `encoder`, with the
/// uniform block, bounds and partials taken from `held`. Nothing is submitted.
pub(crate) fn encode(
    ctx: &Context,
    p: &AttentionProblem,
    cfg: &Config,
    bindings: &Bindings,
    io: &Io<'_>,
    held: &mut Held<'_>,
    encoder: &mut wgpu::CommandEncoder,
) -> Result<()> {
    let main_grid = grid(ctx, cfg.kernel.name(), cfg.workgroups)?;
    let combine_tile = combine_tile(p, cfg);
    let combine_grid = grid(
        ctx,
        "fused_combine",
        combine_tile.invocations(p).div_ceil(COMBINE_WORKGROUP),
    )?;

    let mask_kind = p.mask.map(|(k, _)| k);
    let features = ctx.shader_features();
    let block_layout = cfg.blocks(p);
    let flags = ModFlags {
        block_mask: block_layout.is_some(),
        ..blocks::flags(p)
    };
    let main_variant = Variant::new(cfg.kernel, p.dtype, mask_kind)
        .with_tile(cfg.tile)
        .with_features(features)
        .with_mods(flags);
    let main_p = ctx.pipeline_with(main_variant, p.mods.as_ref())?;
    let combine_variant =
        Variant::new(Kernel::FusedCombine, p.dtype, None).with_tile(combine_tile.0);
    let combine_p = if cfg.combine {
        Some(ctx.pipeline(combine_variant)?)
    } else {
        None
    };

    let tables = Tables::upload(ctx, held, p, io.mods, block_layout)?;
    let mut params = Params::new(p);
    params.splits = cfg.splits;
    params.split_len = cfg.split_len;
    tables.set_params(&mut params);
    // One uniform per pass (they differ in `key_pass` only).
    let uniforms = (0..cfg.passes.max(1))
        .map(|pass| {
            params.key_pass = pass;
            held.uniform(&params)
        })
        .collect::<Result<Vec<_>>>()?;
    let aux = AuxGroup::upload(ctx, held, io.mods)?;
    let mask = io.mask.unwrap_or(Slice::whole(ctx.absent(), 16));
    let partials = held.scratch(bindings.partials)?;

    let u = std::mem::size_of::<Params>() as u64;
    let label = format!(
        "{} {:?} -> {:?}",
        cfg.kernel.name(),
        p.score_shape(),
        p.out_shape()
    );
    let uniform_of = |buffer| Slice {
        buffer,
        offset: 0,
        size: u,
    };
    let uniform = uniform_of(&uniforms[0]);
    tables.encode_passes(ctx, p, uniform, aux.as_ref(), io.block_mask, encoder)?;
    let partials = Slice::whole(&partials, bindings.partials);
    let aux_group = AuxGroup::bind_for(aux.as_ref(), ctx, &main_variant, &main_p);
    for buffer in &uniforms {
        let main_group = bind_slices(
            ctx,
            &main_p,
            &label,
            &[
                uniform_of(buffer),
                io.q,
                io.k,
                io.v,
                tables.slice(),
                mask,
                io.out,
                partials,
            ],
        );
        dispatch_with(
            encoder,
            &label,
            (&main_variant, &main_p),
            &main_group,
            aux_group.as_ref(),
            main_grid,
        );
    }
    if let Some(combine_p) = combine_p {
        let group = bind_slices(
            ctx,
            &combine_p,
            &format!("fused_combine {} splits", cfg.splits),
            &[uniform, partials, io.out],
        );
        let pass = (&combine_variant, &combine_p);
        dispatch(encoder, "fused_combine", pass, &group, combine_grid);
    }
    Ok(())
}
