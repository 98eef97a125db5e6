// Merges the partial softmax results of the key splits of fused / fused_decode:
// M = max m_s, L = sum l_s exp(m_s - M), out = sum acc_s exp(m_s - M) / L; a row no split
// found alive (fully masked) is 0.
//
// With VEC4 (f32, or Dv even) one invocation per four elements of a row of `out` (its
// d4-th vec4 of Dv): a split's (m, l, alive) is loaded once for the four, and its
// accumulator as one vec4. Otherwise (f16/bf16 with Dv odd, where a stored word can hold
// the last element of one row and the first of the next) one invocation per stored word.
//
// Template values: DV4.
#import common

@group(0) @binding(1) var<storage, read> partials: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

const DV4: u32 = {{DV4}}u;

// Elements 4 * d4 .. 4 * d4 + 3 of partial row `row` (zero past Dv).
fn merged(row: u32, d4: u32) -> vec4<f32> {
    var big_m = params.neg_inf;
    var alive = false;
    for (var s = 0u; s < params.splits; s++) {
        let p = partials[s * params.rows + row];
        alive = alive || p.z > 0.0;
        big_m = max(big_m, p.x);
        // A NaN sum (a NaN score at an allowed key) makes the row NaN.
        if (is_nan(p.y)) {
            return vec4<f32>(p.y);
        }
    }
    if (!alive) {
        return vec4<f32>(0.0);
    }
    var big_l = 0.0;
    var acc = vec4<f32>(0.0);
    for (var s = 0u; s < params.splits; s++) {
        let slot = s * params.rows + row;
        let p = partials[slot];
        if (p.x > params.neg_inf) {
            let w = exp(p.x - big_m);
            big_l += p.y * w;
            acc += partials[params.splits * params.rows + slot * DV4 + d4] * w;
        }
    }
    return acc / big_l;
}

// The partial row (b, h, i) of the row of `out` that holds element e.
fn partial_row(e: u32) -> u32 {
    let c = out_coords(e);
    return (c.x * params.q_heads + c.y) * params.q_len + c.z;
}

#ifdef VEC4
const WORKGROUP: u32 = 64u;

@compute @workgroup_size(WORKGROUP)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let unit = linear_workgroup(wid, nwg) * WORKGROUP + lid;
    let d4 = unit % DV4;
    let first = (unit / DV4) * params.v_dim + 4u * d4;
    if (first >= params.out_len) {
        return;
    }
    let r = merged(partial_row(first), d4);
    let n = min(4u, params.v_dim - 4u * d4);
#ifdef DTYPE_F32
    out[first] = bitcast<u32>(r.x);
    if (n > 1u) {
        out[first + 1u] = bitcast<u32>(r.y);
    }
    if (n > 2u) {
        out[first + 2u] = bitcast<u32>(r.z);
    }
    if (n > 3u) {
        out[first + 3u] = bitcast<u32>(r.w);
    }
#else
    // Dv is even, so the unit's elements start a word and come in whole words (n is 2 or 4).
    out[first / 2u] = encode(r.x, r.y);
    if (n > 2u) {
        out[first / 2u + 1u] = encode(r.z, r.w);
    }
#endif
}
#else
fn out_element(e: u32) -> f32 {
    let d = e % params.v_dim;
    return merged(partial_row(e), d / 4u)[d % 4u];
}

#import out_words
#endif
