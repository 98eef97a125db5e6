//! Loop trips per shader invocation, for drivers that cap them.
//!
//! Mesa's llvmpipe (lavapipe on Vulkan, llvmpipe on GL) counts the loop trips of each shader
//! invocation, every loop of the shader together, and once 65,535 are taken
//! (`LP_MAX_TGSI_LOOP_ITERATIONS`) it ends every loop after its current trip: the kernel
//! finishes early and its results are wrong, with no error. On lavapipe a fused prefill whose
//! workgroups each read a 4096-key split of `D = 128` rows came out 2.6e-2 off, and the staged
//! path at 65,600 keys (its value stage looped over every key) 2.6e-4 (BENCHMARKS.md,
//! 2026-12-07).
//!
//! So on such a driver the engine bounds each kernel's trips per invocation: the fused kernels
//! split the keys finely enough, the staged path refuses what it cannot bound. The bounds
//! below count every loop as if the compiler unrolled none (as on the GL backend with opaque
//! loops; a Vulkan driver unrolls some, so there they are safe and loose), the data-dependent
//! ones (a rescale of the accumulators whenever a row's maximum grows) as always taken. A user
//! `mask_mod` or `score_mod` with loops of its own adds trips that are not counted.

use crate::error::Error;
use crate::kernels::Tile;

/// llvmpipe's limit: loop trips per shader invocation, all loops together.
pub(crate) const LLVMPIPE_LOOP_TRIPS: u64 = 65_535;

/// Trips of one `vec4` unit's load: one, or with elements loaded one at a time (D or Dv not
/// a multiple of 4) the loop over its four elements too.
fn unit(tile: &Tile) -> u64 {
    if tile.vec4 {
        1
    } else {
        5
    }
}

/// `fused` (prefill): trips per key tile of one invocation, and those outside the tile loop.
pub(crate) fn prefill(tile: &Tile) -> (u64, u64) {
    let (d4, dv4, r) = (tile.d4 as u64, tile.dv4 as u64, tile.per_invocation as u64);
    let (bk, wg) = (tile.keys as u64, tile.rows.max(1) as u64);
    // The tile's loads: k and v units spread over the workgroup.
    let loads = (bk * d4).div_ceil(wg) * unit(tile) + (bk * dv4).div_ceil(wg) * unit(tile);
    // Per four keys: the scores (d4 x rows), each row's bias and score_mod (four keys each)
    // and rescale (dv4), the values (dv4 x rows).
    let group = d4 * (1 + r) + r * (1 + 4 + 4 + dv4) + dv4 * (1 + r);
    let per_tile = 1 + loads + bk.div_ceil(4) * (1 + group);
    // q rows, the rows' states carried from a pass before, the rows' results (a partial's
    // units, or the output's elements).
    let fixed = r * (1 + d4 * unit(tile)) + r * (1 + dv4) + r * (1 + 4 * dv4) + 16;
    (per_tile, fixed)
}

/// `fused_decode`: trips of one invocation for a split of `chunk` keys.
pub(crate) fn decode(tile: &Tile, chunk: u64, subgroup_max: u32) -> u64 {
    let (d4, dv4, r) = (tile.d4 as u64, tile.dv4 as u64, tile.per_invocation as u64);
    let wg = tile.rows.max(1) as u64;
    // Reductions over the workgroup (three per row) and the partials' writes.
    let fixed = r * (d4 * unit(tile) + 3 * (wg + 16) + (dv4.div_ceil(wg) + 1) * (wg + 1)) + 16;
    if tile.lanes == 0 {
        // A key per invocation, two passes over its chunk / wg keys: the key's k row, each
        // row's score, then its v row and each row's share of it.
        let per_key = 2 + (d4 + dv4) * (unit(tile) + r);
        return chunk.div_ceil(wg) * per_key + fixed;
    }
    // A subgroup per four keys: each invocation its units of them (pk, pv per key row, the
    // fewest lanes assumed), the rows' biases, scores, rescales and values. The subgroups
    // split the chunk; the fewest (the largest subgroup) take the longest runs.
    let lanes = tile.lanes.max(1) as u64;
    let (pk, pv) = (d4.div_ceil(lanes), dv4.div_ceil(lanes));
    let per_step = 1 + r * 4 + (pk + pv) * 4 * unit(tile) + r * (pk + 3 * pv + 4);
    let subgroups = (wg / subgroup_max.max(1) as u64).max(1);
    chunk.div_ceil(4 * subgroups) * per_step + fixed
}

/// The staged path's longest loop per invocation: `attend_values` over every key (past ones
/// included), four per trip, for each element of its output word (`per_word`); `softmax`'s
/// four passes over a row.
pub(crate) fn staged(total_len: u64, per_word: u64) -> u64 {
    let values = per_word * (total_len.div_ceil(4) + 2);
    let softmax = 4 * total_len.div_ceil(64) + 2 * 64 + 16;
    values.max(softmax)
}

/// `fused_combine`: two passes over the splits for each of the `elements` it merges one at a
/// time (one with four elements of a row per invocation, else those of its output word).
pub(crate) fn combine(splits: u64, elements: u64) -> u64 {
    elements * (2 * splits + 2)
}

/// A kernel whose invocations would take more loop trips than the driver runs correctly.
pub(crate) fn too_many_trips(what: &str, requested: u64, max: u64) -> Error {
    Error::ExceedsLimit {
        what: format!("{what}: loop trips per invocation"),
        limit: "the driver's loop trips per shader invocation (llvmpipe: 65535, Tuning::max_loop_trips)",
        requested,
        max,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tile(rows: u32, r: u32, keys: u32, d: u32, lanes: u32) -> Tile {
        Tile {
            rows,
            per_invocation: r,
            keys,
            d4: d / 4,
            dv4: d / 4,
            split: true,
            vec4: true,
            lanes,
        }
    }

    #[test]
    fn prefill_bound_covers_what_lavapipe_broke() {
        // D = 128, two rows per invocation, 32-key tiles: a 4096-key split (128 tiles) came
        // out wrong on lavapipe; the bound must put it over the limit.
        let (per_tile, fixed) = prefill(&tile(64, 2, 32, 128, 0));
        assert!(128 * per_tile + fixed > LLVMPIPE_LOOP_TRIPS);
    }

    #[test]
    fn staged_bound_grows_with_keys() {
        assert!(staged(65_536 * 4, 1) > LLVMPIPE_LOOP_TRIPS);
        assert!(staged(65_536, 1) < LLVMPIPE_LOOP_TRIPS);
        assert!(staged(65_536, 2) > staged(65_536, 1));
    }

    #[test]
    fn decode_bound_grows_with_the_chunk() {
        let t = tile(16, 4, 512, 128, 0);
        assert!(decode(&t, 2048, 8) > decode(&t, 512, 8));
        let s = tile(16, 4, 512, 256, 8);
        assert!(decode(&s, 2048, 16) > decode(&s, 2048, 8));
    }
}
