// Fused attention (FlashAttention-style) for prefill: one invocation per query row, BQ rows
// per workgroup sharing tiles of BK keys in workgroup memory; online softmax with a running
// maximum m and sum l; P·V accumulated in registers. Nothing of size Lq x Lt exists.
//
// The key range of a workgroup is cut from the structured masks (causal, window, key
// length) before the loop, so tiles that are entirely masked are never loaded. Keys may be
// split across workgroups (z of the linear grid); with SPLIT each workgroup writes its
// partial (m, l, alive, acc) for fused_combine, otherwise the final output.
//
// Template values: BQ, BK, D4 = ceil(D/4), DV4 = ceil(Dv/4), T4 = max(D4, DV4).
#import common
#import masking

@group(0) @binding(1) var<storage, read> q: array<u32>;
@group(0) @binding(2) var<storage, read> k: array<u32>;
@group(0) @binding(3) var<storage, read> v: array<u32>;
@group(0) @binding(4) var<storage, read> bounds: array<Bounds>;
@group(0) @binding(5) var<storage, read> mask: array<u32>;
@group(0) @binding(6) var<storage, read_write> out: array<u32>;
@group(0) @binding(7) var<storage, read_write> partials: array<vec4<f32>>;

const BQ: u32 = {{BQ}}u;
const BK: u32 = {{BK}}u;
const D4: u32 = {{D4}}u;
const DV4: u32 = {{DV4}}u;
const T4: u32 = {{T4}}u;

var<workgroup> tile: array<vec4<f32>, BK * T4>;

#import fused_io

@compute @workgroup_size(BQ)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let q_tiles = (params.q_len + BQ - 1u) / BQ;
    let heads = params.batch * params.q_heads;
    let wg = linear_workgroup(wid, nwg);
    let qt = wg % q_tiles;
    let bh = (wg / q_tiles) % heads;
    let split = wg / (q_tiles * heads);
    if (split >= params.splits) {
        return;
    }
    let b = bh / params.q_heads;
    let h = bh % params.q_heads;
    let hk = h / params.group;
    let i0 = qt * BQ;
    let i = i0 + lid;
    let row_ok = i < params.q_len;
    let bd = bounds[b];

    // Keys any row of this tile may see, then this split's share of them.
    let i_last = min(i0 + BQ, params.q_len) - 1u;
    let range = key_range(bd, i0, i_last);
    let j_begin = range.x + i32(split * params.split_len);
    let j_end = min(range.y, j_begin + i32(params.split_len));

    var qr: array<vec4<f32>, D4>;
    if (row_ok) {
        let qo = q_offset(b, h, i);
        for (var d4 = 0u; d4 < D4; d4++) {
            qr[d4] = q4(qo, d4);
        }
    }
    var acc: array<vec4<f32>, DV4>;
    var m = params.neg_inf;
    var l = 0.0;
    var alive = false;
    var sc: array<f32, BK>;

    for (var j0 = j_begin; j0 < j_end; j0 += i32(BK)) {
        workgroupBarrier();
        for (var t = lid; t < BK * D4; t += BQ) {
            let jj = t / D4;
            let d4 = t % D4;
            let j = j0 + i32(jj);
            var x = vec4<f32>(0.0);
            if (j < j_end) {
                x = k4(kv_offset(b, hk, u32(j), params.head_dim), d4);
            }
            tile[jj * T4 + d4] = x;
        }
        workgroupBarrier();
        var tmax = params.neg_inf;
        for (var jj = 0u; jj < BK; jj++) {
            let j = j0 + i32(jj);
            var x = params.neg_inf;
            if (row_ok && j < j_end && structurally_allowed(bd, i, u32(j))) {
                let bias = mask_bias(b, h, i, u32(j));
                if (bias != params.neg_inf) {
                    alive = true;
                    var dot_qk = 0.0;
                    for (var d4 = 0u; d4 < D4; d4++) {
                        dot_qk += dot(qr[d4], tile[jj * T4 + d4]);
                    }
                    x = capped(params.scale * dot_qk) + bias;
                }
            }
            sc[jj] = x;
            tmax = max(tmax, x);
        }
        workgroupBarrier();
        for (var t = lid; t < BK * DV4; t += BQ) {
            let jj = t / DV4;
            let d4 = t % DV4;
            let j = j0 + i32(jj);
            var x = vec4<f32>(0.0);
            if (j < j_end) {
                x = v4(kv_offset(b, hk, u32(j), params.v_dim), d4);
            }
            tile[jj * T4 + d4] = x;
        }
        workgroupBarrier();
        if (tmax > params.neg_inf) {
            let m_new = max(m, tmax);
            let corr = exp(m - m_new);
            l = l * corr;
            for (var d4 = 0u; d4 < DV4; d4++) {
                acc[d4] = acc[d4] * corr;
            }
            for (var jj = 0u; jj < BK; jj++) {
                let p = exp(sc[jj] - m_new);
                l += p;
                for (var d4 = 0u; d4 < DV4; d4++) {
                    acc[d4] += p * tile[jj * T4 + d4];
                }
            }
            m = m_new;
        }
    }

    if (!row_ok) {
        return;
    }
    let row = (b * params.q_heads + h) * params.q_len + i;
#ifdef SPLIT
    let slot = split * params.rows + row;
    partials[slot] = vec4<f32>(m, l, select(0.0, 1.0, alive), 0.0);
    let base = params.splits * params.rows + slot * DV4;
    for (var d4 = 0u; d4 < DV4; d4++) {
        partials[base + d4] = acc[d4];
    }
#else
    // Direct output: f32, or f16/bf16 with an even Dv so no word straddles two rows.
    var inv = 0.0;
    if (alive) {
        inv = 1.0 / l;
    }
    let o = out_offset(b, h, i);
    for (var d = 0u; d < params.v_dim; d += per_word()) {
        var lo = 0.0;
        var hi = 0.0;
        if (alive) {
            lo = acc[d / 4u][d % 4u] * inv;
            if (per_word() == 2u) {
                hi = acc[(d + 1u) / 4u][(d + 1u) % 4u] * inv;
            }
        }
        out[(o + d) / per_word()] = encode(lo, hi);
    }
#endif
}
