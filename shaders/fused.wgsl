// Fused attention (FlashAttention-style) for prefill. A workgroup takes BQ = WG * R query
// rows of one head; each invocation owns R rows (R > 1 reuses every key and value loaded
// from workgroup memory R times, which pays where loads dominate, e.g. on CPU adapters).
// Tiles of BK keys and values are shared in workgroup memory; online softmax with a
// running maximum m and sum l per row; P·V accumulated in private memory. Nothing of size
// Lq x Lt exists.
//
// The key range of a workgroup is cut from the structured masks (causal, window, key
// length) before the loop, so tiles that are entirely masked are never loaded; tiles that
// are entirely allowed skip the per-key mask checks. Keys may be split across workgroups,
// and the splits taken in several passes (dispatches) where a driver bounds one invocation's
// loop trips: with SPLIT each workgroup writes its partial (m, l, alive, acc) for
// fused_combine (in a later pass after reading it back), otherwise the final output.
//
// Template values: WG, R, BK (a multiple of 4), D4 = ceil(D/4), DV4 = ceil(Dv/4) (even with
// VEC8).
#ifdef NATIVE_F16
enable f16;
#endif
#import common
#import masking

const WG: u32 = {{WG}}u;
const R: u32 = {{R}}u;
const BQ: u32 = WG * R;
const BK: u32 = {{BK}}u;
const D4: u32 = {{D4}}u;
const DV4: u32 = {{DV4}}u;

#ifdef VEC8
// f16/bf16 tiles hold the words as loaded (four elements in two words), converted where they
// are read: half the workgroup memory of f32 tiles, and half the loads from it (on lavapipe a
// 1024-query f16 prefill took 1000 ms against 1500 with f32 tiles).
var<workgroup> k_tile: array<vec2<u32>, BK * D4>;
var<workgroup> v_tile: array<vec2<u32>, BK * DV4>;

fn tile4(u: vec2<u32>) -> vec4<f32> {
    return vec4<f32>(pair(u.x), pair(u.y));
}
#else
var<workgroup> k_tile: array<vec4<f32>, BK * D4>;
var<workgroup> v_tile: array<vec4<f32>, BK * DV4>;

fn tile4(u: vec4<f32>) -> vec4<f32> {
    return u;
}
#endif

// This invocation's query rows, output accumulators and running softmax states.
var<private> qr: array<array<vec4<f32>, D4>, R>;
var<private> acc: array<array<vec4<f32>, DV4>, R>;
var<private> m: array<f32, R>;
var<private> l: array<f32, R>;
var<private> alive: array<bool, R>;

#import fused_io
#import mods

// Folds keys [j0, min(j0 + BK, j_end)) of the tiles into the rows' (m, l, acc), four keys
// at a time: independent accumulators, at most one rescale per row and group. `full`: the
// block mask says the mods allow every position of the tile.
fn accumulate_tile(i_first: u32, b: u32, h: u32, bd: Bounds, j0: i32, j_end: i32, full: bool) {
    let tile_last = min(j0 + i32(BK), j_end) - 1;
    let neg = vec4<f32>(params.neg_inf);
    let one = vec4<f32>(1.0);
    // Every key of the tile allowed for every row by the structured masks, no mask tensor.
    let i_lo = i32(i_first);
    let i_hi = i32(i_first + R - 1u);
    var interior = j0 >= i_hi + bd.lo && tile_last <= i_lo + bd.hi && tile_last < bd.kv_len;
#ifndef MASK_NONE
    interior = false;
#endif
#ifdef MODS
    interior = interior && mods_free(full);
#endif
    // Keys past this invocation's last row's upper bound are disallowed for all its rows
    // (the causal / right-window frontier): stop there, not at the workgroup's end.
    let my_end = min(j_end, i_hi + bd.hi + 1);
    for (var jj = 0u; jj < trips(BK); jj += 4u) {
        let jb = j0 + i32(jj);
        if (jb >= my_end) {
            break;
        }
        var s = array<vec4<f32>, R>();
        for (var d4 = 0u; d4 < trips(D4); d4++) {
            let k0 = tile4(k_tile[jj * D4 + d4]);
            let k1 = tile4(k_tile[(jj + 1u) * D4 + d4]);
            let k2 = tile4(k_tile[(jj + 2u) * D4 + d4]);
            let k3 = tile4(k_tile[(jj + 3u) * D4 + d4]);
            for (var r = 0u; r < trips(R); r++) {
                let qv = qr[r][d4];
                s[r] += vec4<f32>(dot(qv, k0), dot(qv, k1), dot(qv, k2), dot(qv, k3));
            }
        }
        var p = array<vec4<f32>, R>();
        for (var r = 0u; r < trips(R); r++) {
            let i = i_first + r;
            var bias = vec4<f32>(0.0);
            if (i >= params.q_len) {
                bias = neg;
            } else if (!interior || jb + 3 >= j_end) {
                bias = bias4(b, h, i, bd, jb, j_end, full);
            }
            let sm = modded4(softcapped4(params.scale * s[r]), b, h, i, jb);
            let ok = kept4(bias, sm);
            if (any(ok)) {
                alive[r] = true;
                let x = select(neg, sm + bias, ok);
                let gmax = max(max(x.x, x.y), max(x.z, x.w));
                if (gmax > m[r]) {
                    let corr = exp(m[r] - gmax);
                    l[r] = l[r] * corr;
                    for (var d4 = 0u; d4 < trips(DV4); d4++) {
                        acc[r][d4] = acc[r][d4] * corr;
                    }
                    m[r] = gmax;
                }
                p[r] = select(vec4<f32>(0.0), exp(x - m[r]), ok);
                l[r] += dot(p[r], one);
            }
        }
        for (var d4 = 0u; d4 < trips(DV4); d4++) {
            let v0 = tile4(v_tile[jj * DV4 + d4]);
            let v1 = tile4(v_tile[(jj + 1u) * DV4 + d4]);
            let v2 = tile4(v_tile[(jj + 2u) * DV4 + d4]);
            let v3 = tile4(v_tile[(jj + 3u) * DV4 + d4]);
            for (var r = 0u; r < trips(R); r++) {
                let pr = p[r];
                // Keys with p = 0 (disallowed) add nothing, even where v holds NaN; a NaN p
                // (a NaN score at an allowed key) does, as in the reference.
                let z = vec4<f32>(0.0);
                acc[r][d4] += select(z, pr.x * v0, contributes(pr.x))
                    + select(z, pr.y * v1, contributes(pr.y))
                    + select(z, pr.z * v2, contributes(pr.z))
                    + select(z, pr.w * v3, contributes(pr.w));
            }
        }
    }
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let q_tiles = (params.q_len + BQ - 1u) / BQ;
    let heads = params.batch * params.q_heads;
    // A tile's key splits are neighbouring workgroups: llvmpipe hands each thread an equal
    // run of consecutive workgroups, and with the splits outermost a causal grid's empty
    // splits all fell in the last runs (one core did most of the work: 4.3 against 3.0 s at
    // L = 4096, BENCHMARKS.md 2026-12-07).
    let wg_all = linear_workgroup(wid, nwg);
    let split = wg_all % params.splits;
    let wg = wg_all / params.splits;
    if (wg >= q_tiles * heads) {
        return;
    }
    // A head's tiles zig-zag (0, n - 1, 1, n - 2, ...), so each of those equal runs holds
    // light and heavy tiles alike under a causal mask, also where there are fewer heads
    // than threads (one head, L = 8192: causal took 0.71 of unmasked in tile order).
    let t = wg % q_tiles;
    var qt = t / 2u;
    if ((t & 1u) == 1u) {
        qt = q_tiles - 1u - t / 2u;
    }
    let bh = wg / q_tiles;
    let b = bh / params.q_heads;
    let h = bh % params.q_heads;
    let hk = h / params.group;
    let i0 = qt * BQ;
    // Rows i0 + lid * R + r: each invocation takes R consecutive rows, so tiles on the
    // causal or window frontier of one invocation are rarely on another's.
    let i_first = i0 + lid * R;
    let bd = bounds_of(b);

    // Keys any row of this tile may see, then this split's share of them.
    let i_last = min(i0 + BQ, params.q_len) - 1u;
    let range = key_range(bd, i0, i_last);
#ifdef BLOCK_MASK
    // Tiles aligned to the block mask's key blocks (BK keys each).
    let j_first = (range.x / i32(BK)) * i32(BK);
#else
    let j_first = range.x;
#endif
    let j_begin = j_first + i32((params.key_pass * params.splits + split) * params.split_len);
    let j_end = min(range.y, j_begin + i32(params.split_len));

    for (var r = 0u; r < trips(R); r++) {
        let i = i_first + r;
        if (i < params.q_len) {
            let qo = q_offset(b, h, i);
            for (var d4 = 0u; d4 < trips(D4); d4++) {
                qr[r][d4] = q4(qo, d4);
            }
        }
        m[r] = params.neg_inf;
        l[r] = 0.0;
        alive[r] = false;
#ifdef SPLIT
        // Later passes go on from the state the pass before left in this split's slot.
        if (params.key_pass > 0u && i < params.q_len) {
            read_row(b, h, i, split, r);
        }
#endif
    }

    for (var j0 = j_begin; j0 < j_end; j0 += i32(BK)) {
        var full = false;
#ifdef BLOCK_MASK
        // Uniform across the workgroup: an empty tile is skipped, loads and all.
        let kind = tables[params.t_blocks + b * params.blk_sb + h * params.blk_sh + qt * params.blk_kt + u32(j0) / BK];
        if (kind == 0u) {
            continue;
        }
        full = kind == 1u;
#endif
        workgroupBarrier();
#ifdef VEC8
        // Eight elements per load, stored unconverted: tile entries 2t and 2t + 1.
        for (var t = lid; t < BK * D4 / 2u; t += WG) {
            let j = j0 + i32(t / (D4 / 2u));
            var x = vec4<u32>(0u);
            if (j < j_end) {
                x = k_words(kv_offset(b, hk, u32(j), params.head_dim), t % (D4 / 2u));
            }
            k_tile[2u * t] = x.xy;
            k_tile[2u * t + 1u] = x.zw;
        }
        for (var t = lid; t < BK * DV4 / 2u; t += WG) {
            let j = j0 + i32(t / (DV4 / 2u));
            var x = vec4<u32>(0u);
            if (j < j_end) {
                x = v_words(kv_offset(b, hk, u32(j), params.v_dim), t % (DV4 / 2u));
            }
            v_tile[2u * t] = x.xy;
            v_tile[2u * t + 1u] = x.zw;
        }
#else
        for (var t = lid; t < BK * D4; t += WG) {
            let j = j0 + i32(t / D4);
            var x = vec4<f32>(0.0);
            if (j < j_end) {
                x = k4(kv_offset(b, hk, u32(j), params.head_dim), t % D4);
            }
            k_tile[t] = x;
        }
        for (var t = lid; t < BK * DV4; t += WG) {
            let j = j0 + i32(t / DV4);
            var x = vec4<f32>(0.0);
            if (j < j_end) {
                x = v4(kv_offset(b, hk, u32(j), params.v_dim), t % DV4);
            }
            v_tile[t] = x;
        }
#endif
        workgroupBarrier();
        if (i_first < params.q_len) {
            accumulate_tile(i_first, b, h, bd, j0, j_end, full);
        }
    }

    for (var r = 0u; r < trips(R); r++) {
        let i = i_first + r;
        if (i >= params.q_len) {
            break;
        }
        write_row(b, h, i, split, r);
    }
}

#ifdef SPLIT
// Row i's partial state as a pass before wrote it (see write_row).
fn read_row(b: u32, h: u32, i: u32, split: u32, r: u32) {
    let row = (b * params.q_heads + h) * params.q_len + i;
    let slot = split * params.rows + row;
    let state = partials[slot];
    m[r] = state.x;
    l[r] = state.y;
    alive[r] = state.z > 0.0;
    let base = params.splits * params.rows + slot * DV4;
    for (var d4 = 0u; d4 < trips(DV4); d4++) {
        acc[r][d4] = partials[base + d4];
    }
}
#endif

// Writes row i's result: its partial state (SPLIT) or its normalized output.
fn write_row(b: u32, h: u32, i: u32, split: u32, r: u32) {
    let row = (b * params.q_heads + h) * params.q_len + i;
#ifdef SPLIT
    let slot = split * params.rows + row;
    partials[slot] = vec4<f32>(m[r], l[r], select(0.0, 1.0, alive[r]), 0.0);
    let base = params.splits * params.rows + slot * DV4;
    for (var d4 = 0u; d4 < trips(DV4); d4++) {
        partials[base + d4] = acc[r][d4];
    }
#else
    // Direct output: f32, or f16/bf16 with an even Dv so no word straddles two rows.
    var inv = 0.0;
    if (alive[r]) {
        inv = 1.0 / l[r];
    }
    let o = out_offset(b, h, i);
    for (var d = 0u; d < params.v_dim; d += per_word()) {
        var lo = 0.0;
        var hi = 0.0;
        if (alive[r]) {
            lo = acc[r][d / 4u][d % 4u] * inv;
            if (per_word() == 2u) {
                hi = acc[r][(d + 1u) / 4u][(d + 1u) % 4u] * inv;
            }
        }
        out[(o + d) / per_word()] = encode(lo, hi);
    }
#endif
}
