// Fused attention for short query blocks against long keys (flash-decoding): one workgroup
// per (group of R query rows, key split), which writes each row's partial (m, l, alive, acc)
// for fused_combine. A group's rows are consecutive rows of one (batch, key/value head): the
// query heads of a GQA group and the rows of the query block, so every key and value row
// loaded serves all of them. Splits start at the group's first allowed key, so masked key
// ranges cost nothing but the empty splits' one write per row.
//
// Two layouts of the split's keys over the invocations:
// - SUBGROUP_KEYS (the GPU default): each subgroup takes four keys at a time, its
//   invocations a share of each key's row (neighbouring invocations read neighbouring words
//   of one row, so a subgroup's loads coalesce), the scores from one subgroupAdd; each
//   subgroup keeps an online softmax (running max and sum, its share of P·V) over its run of
//   keys, and the workgroup merges them. On lavapipe it measured slower than the other
//   layout but for wide heads (BENCHMARKS.md), so CPU adapters choose it for those only.
// - otherwise each invocation takes every WG-th key: its scores in private memory, then its
//   share of P·V in a private accumulator; the workgroup reduces max, sum and accumulators.
//
// Template values: WG (invocations), CHUNK (keys per split, a multiple of WG), D4, DV4
// (even with VEC8: its loops take eight elements per load), LANES (SUBGROUP_KEYS: the
// adapter's smallest subgroup; WG is a multiple of its largest), R (query rows per
// workgroup, 1 to 4; where R does not divide group * Lq the last group of each block is
// short; 1 with BLOCK_MASK; ROWS is defined where R > 1).
#ifdef NATIVE_F16
enable f16;
#endif
#ifdef SUBGROUP_KEYS
// Every subgroup operation below runs where control flow is uniform across the subgroup (each
// condition depends only on the subgroup's own run of keys), but a static analysis cannot
// see that: Tint's subgroup uniformity check (an error by default) rejected this kernel
// ("'subgroupAdd' must only be called from subgroup uniform control flow"). naga does not
// check it and ignores the directive.
diagnostic(off, subgroup_uniformity);
#endif
#import common
#import masking

const WG: u32 = {{WG}}u;
const CHUNK: u32 = {{CHUNK}}u;
const PER: u32 = CHUNK / WG;
const D4: u32 = {{D4}}u;
const DV4: u32 = {{DV4}}u;
const R: u32 = {{R}}u;

#ifdef SUBGROUP_KEYS
const LANES: u32 = {{LANES}}u;
// One accumulator per subgroup (at most WG / LANES of them).
var<workgroup> accs: array<vec4<f32>, WG / LANES * DV4>;
// Load units of a row (eight elements with VEC8, else four) and vec4s per unit.
#ifdef VEC8
const KU: u32 = D4 / 2u;
const VU: u32 = DV4 / 2u;
const UW: u32 = 2u;
#else
const KU: u32 = D4;
const VU: u32 = DV4;
const UW: u32 = 1u;
#endif
// Units per invocation: unit lane + k * sg for k < PK (PV), sg >= LANES.
const PK: u32 = (KU + LANES - 1u) / LANES;
const PV: u32 = (VU + LANES - 1u) / LANES;

var<workgroup> groups: atomic<u32>;

// Row r's units of q at r * PK * UW, of its accumulator at r * PV * UW.
var<private> qr: array<vec4<f32>, R * PK * UW>;
var<private> acc: array<vec4<f32>, R * PV * UW>;
#ifdef ROWS
// Per row its running max, sum and alive flag, and the current four keys' bias and p; the four keys' k and v units, loaded once for all the rows (key c of unit k at
// 4 * k + c, with VEC8 its two halves at 8 * k + 2 * c and the next); the subgroup's size
// and this invocation's place in it.
var<private> rm: array<f32, R>;
var<private> rl: array<f32, R>;
var<private> ralive: array<f32, R>;
var<private> bias4s: array<vec4<f32>, R>;
var<private> p4s: array<vec4<f32>, R>;
var<private> kst: array<vec4<f32>, 4u * PK * UW>;
var<private> vst: array<vec4<f32>, 4u * PV * UW>;
var<private> sg_lane: u32;
var<private> sg_size: u32;
#endif
#else
var<workgroup> accs: array<vec4<f32>, WG * DV4>;

// Row r's q at r * D4, its accumulator at r * DV4, its score of the t-th key at t * R + r;
// per row its running max, alive flag and sum, and the workgroup's max and alive flag.
var<private> qr: array<vec4<f32>, R * D4>;
var<private> acc: array<vec4<f32>, R * DV4>;
var<private> sc: array<f32, PER * R>;
var<private> local_max: array<f32, R>;
var<private> local_alive: array<f32, R>;
var<private> local_sum: array<f32, R>;
var<private> row_max: array<f32, R>;
var<private> row_alive: array<f32, R>;
#ifdef ROWS
// Each row's bias and p of the current key; the current key's k and v rows, loaded once for
// all the rows.
var<private> brow: array<f32, R>;
var<private> prow: array<f32, R>;
var<private> krow: array<vec4<f32>, D4>;
var<private> vrow: array<vec4<f32>, DV4>;
#endif
#endif

#import fused_io
#import mods

#import reduce

// The last row of the (batch, kv head) block that holds row0: a short last group of a block
// repeats it in its rows past the block and writes nothing for them. (Derived from row0
// rather than kept in a private variable: Tint counts private variables as non-uniform, and
// the key range, which decides whether the workgroup returns early, depends on it.)
fn block_last_row(row0: u32) -> u32 {
    // Not `gl`, the name main uses: naga's GLSL writer would call this one `gl_1`, and GLSL
    // reserves every name that starts with `gl_` (the GL backend refused the kernel).
    let rows = params.group * params.q_len;
    return (row0 / rows + 1u) * rows - 1u;
}

// Whether row r of the group is a row of the block (not a repeat past its end).
fn row_is_real(r: u32, row0: u32) -> bool {
    return row0 + r <= block_last_row(row0);
}

// Writes a row's partial at `slot`: its (max, sum, alive) and the sum of the first n
// accumulators left in workgroup memory (one per subgroup or per invocation).
fn write_partial(lid: u32, slot: u32, state: vec4<f32>, n: u32) {
    if (lid == 0u) {
        partials[slot] = state;
    }
    let base = params.splits * params.rows + slot * DV4;
    for (var d4 = lid; d4 < trips(DV4); d4 += WG) {
        var total = vec4<f32>(0.0);
        for (var t = 0u; t < n; t++) {
            total += accs[t * DV4 + d4];
        }
        partials[base + d4] = total;
    }
}

#ifdef ROWS
// Each row's position and head (both layouts).
var<private> ri: array<u32, R>;
var<private> rh: array<u32, R>;

// Sets row r's position and head; the offset of its q.
fn row_place(r: u32, row0: u32, b: u32) -> u32 {
    let row = min(row0 + r, block_last_row(row0));
    ri[r] = row % params.q_len;
    rh[r] = (row / params.q_len) % params.q_heads;
    return q_offset(b, rh[r], ri[r]);
}
#endif

#ifdef SUBGROUP_KEYS
#ifdef ROWS
// The per-row steps of the subgroup-per-key layout with R > 1 rows, called as those of the
// other layout are (below): once per row with a constant r.

// Row r's position, head and this invocation's units of its q.
fn sg_row_q(r: u32, row0: u32, b: u32) {
    let qo = row_place(r, row0, b);
    rm[r] = params.neg_inf;
    for (var k = 0u; k < trips(PK); k++) {
        let u = sg_lane + k * sg_size;
        if (u < KU) {
#ifdef VEC8
            qr[(r * PK + k) * 2u] = q4(qo, 2u * u);
            qr[(r * PK + k) * 2u + 1u] = q4(qo, 2u * u + 1u);
#else
            qr[r * PK + k] = q4(qo, u);
#endif
        }
    }
}

// Row r's bias of keys j0..j0+3 (-inf where disallowed); whether it may see any of them.
fn sg_row_bias(r: u32, bd: Bounds, b: u32, j0: i32, j_end: i32, full: bool) -> bool {
    let i = i32(ri[r]);
    var interior = j0 >= i + bd.lo && j0 + 3 <= i + bd.hi && j0 + 3 < bd.kv_len && j0 + 3 < j_end;
#ifndef MASK_NONE
    interior = false;
#endif
#ifdef MODS
    interior = interior && mods_free(full);
#endif
    var bias = vec4<f32>(0.0);
    if (!interior) {
        bias = bias4(b, rh[r], ri[r], bd, j0, j_end, full);
    }
    bias4s[r] = bias;
    return any(allows4(bias));
}

// Row r's scores of the four keys (their units in kst), its online-softmax step (at most one
// rescale) and its p in p4s[r]; whether the row takes any of the keys.
fn sg_row_scores(r: u32, b: u32, j0: i32) -> bool {
    let z = vec4<f32>(0.0);
    let one = vec4<f32>(1.0);
    let neg = vec4<f32>(params.neg_inf);
    var a0 = z;
    var a1 = z;
    var a2 = z;
    var a3 = z;
    for (var k = 0u; k < trips(PK); k++) {
        let u = sg_lane + k * sg_size;
        if (u < KU) {
#ifdef VEC8
            let qa = qr[(r * PK + k) * 2u];
            let qb = qr[(r * PK + k) * 2u + 1u];
            let e = 8u * k;
            a0 += qa * kst[e] + qb * kst[e + 1u];
            a1 += qa * kst[e + 2u] + qb * kst[e + 3u];
            a2 += qa * kst[e + 4u] + qb * kst[e + 5u];
            a3 += qa * kst[e + 6u] + qb * kst[e + 7u];
#else
            let qv = qr[r * PK + k];
            let e = 4u * k;
            a0 += qv * kst[e];
            a1 += qv * kst[e + 1u];
            a2 += qv * kst[e + 2u];
            a3 += qv * kst[e + 3u];
#endif
        }
    }
    let score = subgroupAdd(vec4<f32>(dot(a0, one), dot(a1, one), dot(a2, one), dot(a3, one)));
    let sm = modded4(softcapped4(params.scale * score), b, rh[r], ri[r], j0);
    let bias = bias4s[r];
    let ok = kept4(bias, sm);
    p4s[r] = z;
    if (!any(ok)) {
        return false;
    }
    ralive[r] = 1.0;
    let x = select(neg, sm + bias, ok);
    let gmax = max(max(x.x, x.y), max(x.z, x.w));
    if (gmax > rm[r]) {
        let corr = exp(rm[r] - gmax);
        rl[r] *= corr;
        for (var k = 0u; k < trips(PV * UW); k++) {
            acc[r * PV * UW + k] *= corr;
        }
        rm[r] = gmax;
    }
    let p = select(z, exp(x - rm[r]), ok);
    rl[r] += dot(p, one);
    p4s[r] = p;
    return true;
}

// Row r's share of the four keys' v units (in vst): a key with p = 0 adds nothing, even where
// v holds NaN.
fn sg_row_values(r: u32) {
    let z = vec4<f32>(0.0);
    let p = p4s[r];
    for (var k = 0u; k < trips(PV); k++) {
        let u = sg_lane + k * sg_size;
        if (u < VU) {
#ifdef VEC8
            let e = 8u * k;
            let o = (r * PV + k) * 2u;
            acc[o] += select(z, p.x * vst[e], contributes(p.x)) + select(z, p.y * vst[e + 2u], contributes(p.y))
                + select(z, p.z * vst[e + 4u], contributes(p.z)) + select(z, p.w * vst[e + 6u], contributes(p.w));
            acc[o + 1u] += select(z, p.x * vst[e + 1u], contributes(p.x)) + select(z, p.y * vst[e + 3u], contributes(p.y))
                + select(z, p.z * vst[e + 5u], contributes(p.z)) + select(z, p.w * vst[e + 7u], contributes(p.w));
#else
            let e = 4u * k;
            acc[r * PV + k] += select(z, p.x * vst[e], contributes(p.x)) + select(z, p.y * vst[e + 1u], contributes(p.y))
                + select(z, p.z * vst[e + 2u], contributes(p.z)) + select(z, p.w * vst[e + 3u], contributes(p.w));
#endif
        }
    }
}

// Merges row r over the subgroups (weights exp(m_s - M); the sum counted once per subgroup, by
// its invocation 0) and writes its partial.
fn sg_row_partial(lid: u32, r: u32, s: u32, nsg: u32, split: u32, row0: u32) {
    var l = rl[r];
    // A subgroup smaller than the adapter's reported minimum would leave units unread: the
    // row comes out NaN rather than quietly wrong.
    if (sg_size < LANES) {
        l = quiet_nan();
    }
    let m = rm[r];
    let big_m = reduce(lid, m, 0u);
    let any_alive = reduce(lid, ralive[r], 0u);
    var w = 0.0;
    if (m > params.neg_inf) {
        w = exp(m - big_m);
    }
    let big_l = reduce(lid, select(0.0, l * w, sg_lane == 0u), 1u);
    for (var k = 0u; k < trips(PV); k++) {
        let u = sg_lane + k * sg_size;
        if (u < VU) {
#ifdef VEC8
            accs[s * DV4 + 2u * u] = acc[(r * PV + k) * 2u] * w;
            accs[s * DV4 + 2u * u + 1u] = acc[(r * PV + k) * 2u + 1u] * w;
#else
            accs[s * DV4 + u] = acc[r * PV + k] * w;
#endif
        }
    }
    workgroupBarrier();
    if (row_is_real(r, row0)) {
        write_partial(lid, split * params.rows + row0 + r, vec4<f32>(big_m, big_l, any_alive, 0.0), nsg);
    }
    workgroupBarrier();
}
#endif
#endif

#ifndef SUBGROUP_KEYS
// The per-row steps of the key-per-invocation layout. main calls each once per row with a
// constant r (`if (R > 1u) { f(1u); }` ...), never from a loop over the rows: on lavapipe a
// loop around a barrier is not unrolled, nor were loops over the rows inside the per-key
// loops, and a private array indexed by a loop counter lives in memory rather than registers
// (acc so made the f32 decode step 50% slower).
#ifdef ROWS
// Row r's position, head and q; its running max starts at -inf.
fn row_q(r: u32, row0: u32, b: u32) {
    let qo = row_place(r, row0, b);
    local_max[r] = params.neg_inf;
    for (var d4 = 0u; d4 < trips(D4); d4++) {
        qr[r * D4 + d4] = q4(qo, d4);
    }
}

// Row r's bias of key j (-inf where disallowed); whether row r may see it.
fn row_bias(r: u32, bd: Bounds, b: u32, j: i32, j_end: i32, full: bool) -> bool {
    brow[r] = params.neg_inf;
    if (j < j_end && structurally_allowed(bd, ri[r], u32(j))) {
        var bias = mask_bias(b, rh[r], ri[r], u32(j));
#ifdef MODS
        if (!full && !mod_allowed(bd, b, rh[r], ri[r], u32(j))) {
            bias = params.neg_inf;
        }
        bias += mod_bias(bd, rh[r], ri[r], u32(j));
#endif
        brow[r] = bias;
    }
    return allows(brow[r]);
}

// Row r's score of key j (its k row in krow where row r may see it) into sc[t * R + r],
// with the row's running max and alive flag.
fn row_score(r: u32, t: u32, b: u32, j: i32) {
    var x = params.neg_inf;
    if (allows(brow[r])) {
        var a = vec4<f32>(0.0);
        for (var d4 = 0u; d4 < trips(D4); d4++) {
            a += qr[r * D4 + d4] * krow[d4];
        }
        let sm = mod_score(softcapped(params.scale * dot(a, vec4<f32>(1.0))), b, rh[r], ri[r], u32(j));
        if (!score_removed(sm)) {
            local_alive[r] = 1.0;
            x = sm + brow[r];
        }
    }
    sc[t * R + r] = x;
    local_max[r] = max(local_max[r], x);
}

// Row r's p of the t-th key, added to its sum; whether it adds to the row's values. Every
// score but -inf takes part, NaN included (it makes the row NaN, as in the reference; max
// may pass over NaN, so the max alone cannot tell).
fn row_p(r: u32, t: u32) -> bool {
    let x = sc[t * R + r];
    prow[r] = 0.0;
    if (bitcast<u32>(x) != bitcast<u32>(params.neg_inf)) {
        prow[r] = exp(x - row_max[r]);
        local_sum[r] += prow[r];
    }
    return contributes(prow[r]);
}

// Row r's share of the current key's v row (in vrow): none where its p is 0, even where v
// holds NaN.
fn row_add(r: u32) {
    let p = prow[r];
    if (contributes(p)) {
        for (var d4 = 0u; d4 < trips(DV4); d4++) {
            acc[r * DV4 + d4] += p * vrow[d4];
        }
    }
}
#endif

// The workgroup's max and alive flag of row r.
fn row_stats(lid: u32, r: u32) {
    row_max[r] = reduce(lid, local_max[r], 0u);
    row_alive[r] = reduce(lid, local_alive[r], 0u);
}

// Sums row r's accumulators over the workgroup, each invocation its share of the value
// columns, and writes the row's partial. With subgroups, each subgroup first sums its own
// in registers and its first active invocation stores that (the others store zeros; see
// reduce.wgsl).
fn row_partial(lid: u32, r: u32, split: u32, row0: u32) {
    let l = reduce(lid, local_sum[r], 1u);
#ifdef SUBGROUPS
    let leader = lid == subgroupBroadcastFirst(lid);
    for (var d4 = 0u; d4 < trips(DV4); d4++) {
        let total = subgroupAdd(acc[r * DV4 + d4]);
        accs[lid * DV4 + d4] = select(vec4<f32>(0.0), total, leader);
    }
#else
    for (var d4 = 0u; d4 < trips(DV4); d4++) {
        accs[lid * DV4 + d4] = acc[r * DV4 + d4];
    }
#endif
    workgroupBarrier();
    if (row_is_real(r, row0)) {
        write_partial(lid, split * params.rows + row0 + r, vec4<f32>(row_max[r], l, row_alive[r], 0.0), trips(WG));
    }
    workgroupBarrier();
}
#endif

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // Rows of one (batch, kv head): its query heads' rows, (b * Hkv + hk) * gl + g * Lq + i,
    // in groups of R (the last one short where R does not divide gl).
    let gl = params.group * params.q_len;
    let per_block = (gl + R - 1u) / R;
    let n_groups = params.rows / gl * per_block;
    let wg = linear_workgroup(wid, nwg);
    let split = wg / n_groups;
    if (split >= params.splits) {
        return;
    }
    let first = (wg % n_groups % per_block) * R;
    let row0 = wg % n_groups / per_block * gl + first;
    let i = row0 % params.q_len;
    let h = (row0 / params.q_len) % params.q_heads;
    let b = row0 / (params.q_len * params.q_heads);
    let hk = h / params.group;
    let bd = bounds_of(b);
    // The group's rows' query positions: the union of their key ranges.
    var i_lo = i;
    var i_hi = i;
    for (var r = 1u; r < R; r++) {
        let ir = min(row0 + r, block_last_row(row0)) % params.q_len;
        i_lo = min(i_lo, ir);
        i_hi = max(i_hi, ir);
    }
    let range = key_range(bd, i_lo, i_hi);
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
        if (lid < R && row_is_real(lid, row0)) {
            partials[split * params.rows + row0 + lid] = vec4<f32>(params.neg_inf, 0.0, 0.0, 0.0);
        }
        return;
    }

#ifdef SUBGROUP_KEYS
    let qo = q_offset(b, h, i);
    // The subgroup's size and this invocation's place in it, counted over its active
    // invocations, and the subgroup's number from a counter: nothing assumed about how
    // invocations map to subgroups.
    let sg = subgroupAdd(1u);
    let lane = subgroupExclusiveAdd(1u);
    if (lid == 0u) {
        atomicStore(&groups, 0u);
    }
    workgroupBarrier();
    var s = 0u;
    if (lane == 0u) {
        s = atomicAdd(&groups, 1u);
    }
    s = subgroupBroadcastFirst(s);
    workgroupBarrier();
    let nsg = atomicLoad(&groups);
#ifdef ROWS
    // R rows share each group of four keys' k and v units: loaded once where any row may see
    // one of the keys.
    sg_lane = lane;
    sg_size = sg;
    sg_row_q(0u, row0, b);
    if (R > 1u) { sg_row_q(1u, row0, b); }
    if (R > 2u) { sg_row_q(2u, row0, b); }
    if (R > 3u) { sg_row_q(3u, row0, b); }
    let run = ((j_end - j_begin + 4 * i32(nsg) - 1) / (4 * i32(nsg))) * 4;
    let run_end = min(j_end, j_begin + (i32(s) + 1) * run);
    for (var j0 = j_begin + i32(s) * run; j0 < run_end; j0 += 4) {
        var seen = sg_row_bias(0u, bd, b, j0, j_end, full);
        if (R > 1u) { seen = sg_row_bias(1u, bd, b, j0, j_end, full) || seen; }
        if (R > 2u) { seen = sg_row_bias(2u, bd, b, j0, j_end, full) || seen; }
        if (R > 3u) { seen = sg_row_bias(3u, bd, b, j0, j_end, full) || seen; }
        if (!seen) {
            continue;
        }
        // Keys past the split's end are read at its last key (and then disallowed).
        let last = j_end - 1;
        let k0 = kv_offset(b, hk, u32(j0), params.head_dim);
        let k1 = kv_offset(b, hk, u32(min(j0 + 1, last)), params.head_dim);
        let k2 = kv_offset(b, hk, u32(min(j0 + 2, last)), params.head_dim);
        let k3 = kv_offset(b, hk, u32(min(j0 + 3, last)), params.head_dim);
        for (var k = 0u; k < trips(PK); k++) {
            let u = lane + k * sg;
            if (u < KU) {
#ifdef VEC8
                let x0 = k8(k0, u);
                let x1 = k8(k1, u);
                let x2 = k8(k2, u);
                let x3 = k8(k3, u);
                kst[8u * k] = x0[0];
                kst[8u * k + 1u] = x0[1];
                kst[8u * k + 2u] = x1[0];
                kst[8u * k + 3u] = x1[1];
                kst[8u * k + 4u] = x2[0];
                kst[8u * k + 5u] = x2[1];
                kst[8u * k + 6u] = x3[0];
                kst[8u * k + 7u] = x3[1];
#else
                kst[4u * k] = k4(k0, u);
                kst[4u * k + 1u] = k4(k1, u);
                kst[4u * k + 2u] = k4(k2, u);
                kst[4u * k + 3u] = k4(k3, u);
#endif
            }
        }
        var used = sg_row_scores(0u, b, j0);
        if (R > 1u) { used = sg_row_scores(1u, b, j0) || used; }
        if (R > 2u) { used = sg_row_scores(2u, b, j0) || used; }
        if (R > 3u) { used = sg_row_scores(3u, b, j0) || used; }
        if (!used) {
            continue;
        }
        let v0 = kv_offset(b, hk, u32(j0), params.v_dim);
        let v1 = kv_offset(b, hk, u32(min(j0 + 1, last)), params.v_dim);
        let v2 = kv_offset(b, hk, u32(min(j0 + 2, last)), params.v_dim);
        let v3 = kv_offset(b, hk, u32(min(j0 + 3, last)), params.v_dim);
        for (var k = 0u; k < trips(PV); k++) {
            let u = lane + k * sg;
            if (u < VU) {
#ifdef VEC8
                let y0 = v8(v0, u);
                let y1 = v8(v1, u);
                let y2 = v8(v2, u);
                let y3 = v8(v3, u);
                vst[8u * k] = y0[0];
                vst[8u * k + 1u] = y0[1];
                vst[8u * k + 2u] = y1[0];
                vst[8u * k + 3u] = y1[1];
                vst[8u * k + 4u] = y2[0];
                vst[8u * k + 5u] = y2[1];
                vst[8u * k + 6u] = y3[0];
                vst[8u * k + 7u] = y3[1];
#else
                vst[4u * k] = v4(v0, u);
                vst[4u * k + 1u] = v4(v1, u);
                vst[4u * k + 2u] = v4(v2, u);
                vst[4u * k + 3u] = v4(v3, u);
#endif
            }
        }
        sg_row_values(0u);
        if (R > 1u) { sg_row_values(1u); }
        if (R > 2u) { sg_row_values(2u); }
        if (R > 3u) { sg_row_values(3u); }
    }
    sg_row_partial(lid, 0u, s, nsg, split, row0);
    if (R > 1u) { sg_row_partial(lid, 1u, s, nsg, split, row0); }
    if (R > 2u) { sg_row_partial(lid, 2u, s, nsg, split, row0); }
    if (R > 3u) { sg_row_partial(lid, 3u, s, nsg, split, row0); }
#else
    for (var k = 0u; k < trips(PK); k++) {
        let u = lane + k * sg;
        if (u < KU) {
#ifdef VEC8
            qr[2u * k] = q4(qo, 2u * u);
            qr[2u * k + 1u] = q4(qo, 2u * u + 1u);
#else
            qr[k] = q4(qo, u);
#endif
        }
    }

    // Online softmax over this subgroup's keys, four at a time: the s-th of nsg equal runs
    // of the split (one stream of rows per subgroup: on lavapipe, whose subgroups of a
    // workgroup run one after the other, interleaved runs took twice as long). Every
    // condition is uniform across the subgroup. As in fused: independent accumulators, at
    // most one rescale per group, and a key with p = 0 adds no value, even where v holds NaN.
    let neg = vec4<f32>(params.neg_inf);
    let one = vec4<f32>(1.0);
    let z = vec4<f32>(0.0);
    var m = params.neg_inf;
    var l = 0.0;
    var alive = 0.0;
    let run = ((j_end - j_begin + 4 * i32(nsg) - 1) / (4 * i32(nsg))) * 4;
    let run_end = min(j_end, j_begin + (i32(s) + 1) * run);
    for (var j0 = j_begin + i32(s) * run; j0 < run_end; j0 += 4) {
        // Keys past the split's end are read at its last key (and then disallowed).
        let last = j_end - 1;
        var interior = j0 >= i32(i) + bd.lo && j0 + 3 <= i32(i) + bd.hi && j0 + 3 < bd.kv_len && j0 + 3 <= last;
#ifndef MASK_NONE
        interior = false;
#endif
#ifdef MODS
        interior = interior && mods_free(full);
#endif
        var bias = z;
        if (!interior) {
            bias = bias4(b, h, i, bd, j0, j_end, full);
            if (!any(allows4(bias))) {
                continue;
            }
        }
        let k0 = kv_offset(b, hk, u32(j0), params.head_dim);
        let k1 = kv_offset(b, hk, u32(min(j0 + 1, last)), params.head_dim);
        let k2 = kv_offset(b, hk, u32(min(j0 + 2, last)), params.head_dim);
        let k3 = kv_offset(b, hk, u32(min(j0 + 3, last)), params.head_dim);
        var a0 = z;
        var a1 = z;
        var a2 = z;
        var a3 = z;
        for (var k = 0u; k < trips(PK); k++) {
            let u = lane + k * sg;
            if (u < KU) {
#ifdef VEC8
                let qa = qr[2u * k];
                let qb = qr[2u * k + 1u];
                let x0 = k8(k0, u);
                let x1 = k8(k1, u);
                let x2 = k8(k2, u);
                let x3 = k8(k3, u);
                a0 += qa * x0[0] + qb * x0[1];
                a1 += qa * x1[0] + qb * x1[1];
                a2 += qa * x2[0] + qb * x2[1];
                a3 += qa * x3[0] + qb * x3[1];
#else
                let qv = qr[k];
                a0 += qv * k4(k0, u);
                a1 += qv * k4(k1, u);
                a2 += qv * k4(k2, u);
                a3 += qv * k4(k3, u);
#endif
            }
        }
        let score = subgroupAdd(vec4<f32>(dot(a0, one), dot(a1, one), dot(a2, one), dot(a3, one)));
        let sm = modded4(softcapped4(params.scale * score), b, h, i, j0);
        let ok = kept4(bias, sm);
        if (!any(ok)) {
            continue;
        }
        alive = 1.0;
        let x = select(neg, sm + bias, ok);
        let gmax = max(max(x.x, x.y), max(x.z, x.w));
        if (gmax > m) {
            let corr = exp(m - gmax);
            l *= corr;
            for (var k = 0u; k < trips(PV * UW); k++) {
                acc[k] *= corr;
            }
            m = gmax;
        }
        let p = select(z, exp(x - m), ok);
        l += dot(p, one);
        let v0 = kv_offset(b, hk, u32(j0), params.v_dim);
        let v1 = kv_offset(b, hk, u32(min(j0 + 1, last)), params.v_dim);
        let v2 = kv_offset(b, hk, u32(min(j0 + 2, last)), params.v_dim);
        let v3 = kv_offset(b, hk, u32(min(j0 + 3, last)), params.v_dim);
        for (var k = 0u; k < trips(PV); k++) {
            let u = lane + k * sg;
            if (u < VU) {
#ifdef VEC8
                let y0 = v8(v0, u);
                let y1 = v8(v1, u);
                let y2 = v8(v2, u);
                let y3 = v8(v3, u);
                acc[2u * k] += select(z, p.x * y0[0], contributes(p.x)) + select(z, p.y * y1[0], contributes(p.y))
                    + select(z, p.z * y2[0], contributes(p.z)) + select(z, p.w * y3[0], contributes(p.w));
                acc[2u * k + 1u] += select(z, p.x * y0[1], contributes(p.x)) + select(z, p.y * y1[1], contributes(p.y))
                    + select(z, p.z * y2[1], contributes(p.z)) + select(z, p.w * y3[1], contributes(p.w));
#else
                acc[k] += select(z, p.x * v4(v0, u), contributes(p.x)) + select(z, p.y * v4(v1, u), contributes(p.y))
                    + select(z, p.z * v4(v2, u), contributes(p.z)) + select(z, p.w * v4(v3, u), contributes(p.w));
#endif
            }
        }
    }
    // A subgroup smaller than the adapter's reported minimum would leave units unread (and
    // its accumulator slot past the WG / LANES ones): the row comes out NaN rather than
    // quietly wrong.
    if (sg < LANES) {
        l = quiet_nan();
    }

    // Merge the subgroups: weights exp(m_s - M), the sum and accumulators scaled by them
    // (the sum counted once per subgroup, by its invocation 0).
    let big_m = reduce(lid, m, 0u);
    let any_alive = reduce(lid, alive, 0u);
    var w = 0.0;
    if (m > params.neg_inf) {
        w = exp(m - big_m);
    }
    let big_l = reduce(lid, select(0.0, l * w, lane == 0u), 1u);
    for (var k = 0u; k < trips(PV); k++) {
        let u = lane + k * sg;
        if (u < VU) {
#ifdef VEC8
            accs[s * DV4 + 2u * u] = acc[2u * k] * w;
            accs[s * DV4 + 2u * u + 1u] = acc[2u * k + 1u] * w;
#else
            accs[s * DV4 + u] = acc[k] * w;
#endif
        }
    }
    workgroupBarrier();
    write_partial(lid, split * params.rows + row0, vec4<f32>(big_m, big_l, any_alive, 0.0), nsg);
#endif
#else
#ifdef ROWS
    // R rows share each key's k and v rows: loaded once where any row may see the key.
    row_q(0u, row0, b);
    if (R > 1u) { row_q(1u, row0, b); }
    if (R > 2u) { row_q(2u, row0, b); }
    if (R > 3u) { row_q(3u, row0, b); }
    for (var t = 0u; t < trips(PER); t++) {
        let j = j_begin + i32(t * WG + lid);
        var seen = row_bias(0u, bd, b, j, j_end, full);
        if (R > 1u) { seen = row_bias(1u, bd, b, j, j_end, full) || seen; }
        if (R > 2u) { seen = row_bias(2u, bd, b, j, j_end, full) || seen; }
        if (R > 3u) { seen = row_bias(3u, bd, b, j, j_end, full) || seen; }
        if (seen) {
            let ko = kv_offset(b, hk, u32(j), params.head_dim);
#ifdef VEC8
            for (var d8 = 0u; d8 < trips(D4 / 2u); d8++) {
                let kk = k8(ko, d8);
                krow[2u * d8] = kk[0];
                krow[2u * d8 + 1u] = kk[1];
            }
#else
            for (var d4 = 0u; d4 < trips(D4); d4++) {
                krow[d4] = k4(ko, d4);
            }
#endif
        }
        row_score(0u, t, b, j);
        if (R > 1u) { row_score(1u, t, b, j); }
        if (R > 2u) { row_score(2u, t, b, j); }
        if (R > 3u) { row_score(3u, t, b, j); }
    }
#else
    let qo = q_offset(b, h, i);
    for (var d4 = 0u; d4 < trips(D4); d4++) {
        qr[d4] = q4(qo, d4);
    }
    local_max[0] = params.neg_inf;
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
            if (allows(bias)) {
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
                let sm = mod_score(softcapped(params.scale * dot(a, vec4<f32>(1.0))), b, h, i, u32(j));
                if (!score_removed(sm)) {
                    local_alive[0] = 1.0;
                    x = sm + bias;
                }
            }
        }
        sc[t] = x;
        local_max[0] = max(local_max[0], x);
    }
#endif
    row_stats(lid, 0u);
    if (R > 1u) { row_stats(lid, 1u); }
    if (R > 2u) { row_stats(lid, 2u); }
    if (R > 3u) { row_stats(lid, 3u); }
#ifdef ROWS
    for (var t = 0u; t < trips(PER); t++) {
        var used = row_p(0u, t);
        if (R > 1u) { used = row_p(1u, t) || used; }
        if (R > 2u) { used = row_p(2u, t) || used; }
        if (R > 3u) { used = row_p(3u, t) || used; }
        if (used) {
            let vo = kv_offset(b, hk, u32(j_begin + i32(t * WG + lid)), params.v_dim);
#ifdef VEC8
            for (var d8 = 0u; d8 < trips(DV4 / 2u); d8++) {
                let vv = v8(vo, d8);
                vrow[2u * d8] = vv[0];
                vrow[2u * d8 + 1u] = vv[1];
            }
#else
            for (var d4 = 0u; d4 < trips(DV4); d4++) {
                vrow[d4] = v4(vo, d4);
            }
#endif
            row_add(0u);
            if (R > 1u) { row_add(1u); }
            if (R > 2u) { row_add(2u); }
            if (R > 3u) { row_add(3u); }
        }
    }
#else
    // Every score but -inf takes part, NaN included (it makes the row NaN, as in the
    // reference; max may pass over NaN, so the max alone cannot tell).
    for (var t = 0u; t < trips(PER); t++) {
        let x = sc[t];
        if (bitcast<u32>(x) != bitcast<u32>(params.neg_inf)) {
            let p = exp(x - row_max[0]);
            local_sum[0] += p;
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
#endif
    row_partial(lid, 0u, split, row0);
    if (R > 1u) { row_partial(lid, 1u, split, row0); }
    if (R > 2u) { row_partial(lid, 2u, split, row0); }
    if (R > 3u) { row_partial(lid, 3u, split, row0); }
#endif
}
