// Merges the partial softmax results of the key splits of fused / fused_decode:
// M = max m_s, L = sum l_s exp(m_s - M), out = sum acc_s exp(m_s - M) / L; a row no split
// found alive (fully masked) is 0. One invocation per stored word of `out`.
//
// Template values: DV4.
#import common

@group(0) @binding(1) var<storage, read> partials: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

const DV4: u32 = {{DV4}}u;

fn out_element(e: u32) -> f32 {
    let c = out_coords(e);
    let b = c.x;
    let h = c.y;
    let d = c.w;
    let row = (b * params.q_heads + h) * params.q_len + c.z;
    var big_m = params.neg_inf;
    var alive = false;
    for (var s = 0u; s < params.splits; s++) {
        let p = partials[s * params.rows + row];
        alive = alive || p.z > 0.0;
        big_m = max(big_m, p.x);
        // A NaN sum (a NaN score at an allowed key) makes the row NaN.
        if (is_nan(p.y)) {
            return p.y;
        }
    }
    if (!alive) {
        return 0.0;
    }
    var big_l = 0.0;
    var acc = 0.0;
    for (var s = 0u; s < params.splits; s++) {
        let slot = s * params.rows + row;
        let p = partials[slot];
        if (p.x > params.neg_inf) {
            let w = exp(p.x - big_m);
            big_l += p.y * w;
            acc += partials[params.splits * params.rows + slot * DV4 + d / 4u][d % 4u] * w;
        }
    }
    return acc / big_l;
}

#import out_words
