// Fused attention for short query blocks against long keys (flash-decoding): one workgroup
// per (query row, key split). Each invocation takes every WG-th key of the split: its scores
// in private memory, then its share of P·V in a private accumulator; the workgroup then
// reduces max, sum and accumulators, and writes the split's partial (m, l, alive, acc) for
// fused_combine. Splits start at the row's first allowed key, so masked key ranges cost
// nothing but the empty splits' one write each.
//
// Template values: WG (invocations), CHUNK (keys per split, a multiple of WG), D4, DV4
// (even with VEC8: its loops take eight elements per load).
#ifdef NATIVE_F16
enable f16;
#endif
#import common
#import masking

const WG: u32 = {{WG}}u;
const CHUNK: u32 = {{CHUNK}}u;
const PER: u32 = CHUNK / WG;
const D4: u32 = {{D4}}u;
const DV4: u32 = {{DV4}}u;

var<workgroup> accs: array<vec4<f32>, WG * DV4>;

var<private> qr: array<vec4<f32>, D4>;
var<private> acc: array<vec4<f32>, DV4>;
var<private> sc: array<f32, PER>;

#import fused_io
#import mods

#import reduce

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let wg = linear_workgroup(wid, nwg);
    let row = wg % params.rows;
    let split = wg / params.rows;
    if (split >= params.splits) {
        return;
    }
    let i = row % params.q_len;
    let h = (row / params.q_len) % params.q_heads;
    let b = row / (params.q_len * params.q_heads);
    let hk = h / params.group;
    let bd = bounds_of(b);
    let range = key_range(bd, i, i);
#ifdef BLOCK_MASK
    // Splits aligned to the block mask's key blocks (one row by CHUNK keys each); an empty
    // block leaves the split with no keys.
    let j_begin = (range.x / i32(CHUNK)) * i32(CHUNK) + i32(split * params.split_len);
    let kind = tables[params.t_blocks + b * params.blk_sb + h * params.blk_sh + i * params.blk_kt + u32(j_begin) / CHUNK];
    var j_end = min(range.y, j_begin + i32(params.split_len));
    if (kind == 0u) {
        j_end = j_begin;
    }
    let full = kind == 1u;
#else
    let j_begin = range.x + i32(split * params.split_len);
    let j_end = min(range.y, j_begin + i32(params.split_len));
    let full = false;
#endif

    // A split with no keys left (masked, or past the row's range) says so in its partial and
    // stops: no loads, no reductions (the condition is uniform across the workgroup).
    if (j_end <= j_begin) {
        if (lid == 0u) {
            partials[split * params.rows + row] = vec4<f32>(params.neg_inf, 0.0, 0.0, 0.0);
        }
        return;
    }

    let qo = q_offset(b, h, i);
    for (var d4 = 0u; d4 < trips(D4); d4++) {
        qr[d4] = q4(qo, d4);
    }

    var local_max = params.neg_inf;
    var local_alive = 0.0;
    for (var t = 0u; t < trips(PER); t++) {
        let j = j_begin + i32(t * WG + lid);
        var x = params.neg_inf;
        if (j < j_end && structurally_allowed(bd, i, u32(j))) {
            var bias = mask_bias(b, h, i, u32(j));
#ifdef MODS
            if (!full && !mod_allowed(bd, b, h, i, u32(j))) {
                bias = params.neg_inf;
            }
            bias += mod_bias(bd, h, i, u32(j));
#endif
            if (bias != params.neg_inf) {
                let ko = kv_offset(b, hk, u32(j), params.head_dim);
                var a = vec4<f32>(0.0);
#ifdef VEC8
                for (var d8 = 0u; d8 < trips(D4 / 2u); d8++) {
                    let kk = k8(ko, d8);
                    a += qr[2u * d8] * kk[0] + qr[2u * d8 + 1u] * kk[1];
                }
#else
                for (var d4 = 0u; d4 < trips(D4); d4++) {
                    a += qr[d4] * k4(ko, d4);
                }
#endif
                let sm = mod_score(capped(params.scale * dot(a, vec4<f32>(1.0))), b, h, i, u32(j));
                if (!score_removed(sm)) {
                    local_alive = 1.0;
                    x = sm + bias;
                }
            }
        }
        sc[t] = x;
        local_max = max(local_max, x);
    }
    let m = reduce(lid, local_max, 0u);
    let alive = reduce(lid, local_alive, 0u);
    // Every score but -inf takes part, NaN included (it makes the row NaN, as in the
    // reference; max may pass over NaN, so m alone cannot tell).
    var local_sum = 0.0;
    for (var t = 0u; t < trips(PER); t++) {
        let x = sc[t];
        if (bitcast<u32>(x) != bitcast<u32>(params.neg_inf)) {
            let p = exp(x - m);
            local_sum += p;
            if (contributes(p)) {
                let vo = kv_offset(b, hk, u32(j_begin + i32(t * WG + lid)), params.v_dim);
#ifdef VEC8
                for (var d8 = 0u; d8 < trips(DV4 / 2u); d8++) {
                    let vv = v8(vo, d8);
                    acc[2u * d8] += p * vv[0];
                    acc[2u * d8 + 1u] += p * vv[1];
                }
#else
                for (var d4 = 0u; d4 < trips(DV4); d4++) {
                    acc[d4] += p * v4(vo, d4);
                }
#endif
            }
        }
    }
    let l = reduce(lid, local_sum, 1u);

    // Sum the accumulators: each invocation adds up its share of the value columns. With
    // subgroups, each subgroup first sums its own in registers and its first active
    // invocation stores that (the others store zeros; see reduce.wgsl).
#ifdef SUBGROUPS
    let leader = lid == subgroupBroadcastFirst(lid);
    for (var d4 = 0u; d4 < trips(DV4); d4++) {
        let total = subgroupAdd(acc[d4]);
        accs[lid * DV4 + d4] = select(vec4<f32>(0.0), total, leader);
    }
#else
    for (var d4 = 0u; d4 < trips(DV4); d4++) {
        accs[lid * DV4 + d4] = acc[d4];
    }
#endif
    workgroupBarrier();
    let slot = split * params.rows + row;
    if (lid == 0u) {
        partials[slot] = vec4<f32>(m, l, alive, 0.0);
    }
    let base = params.splits * params.rows + slot * DV4;
    for (var d4 = lid; d4 < trips(DV4); d4 += WG) {
        var total = vec4<f32>(0.0);
        for (var t = 0u; t < trips(WG); t++) {
            total += accs[t * DV4 + d4];
        }
        partials[base + d4] = total;
    }
}
