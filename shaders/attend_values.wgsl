// Stage 4: out[b, h, i, :] = probs[b, h, i, :] . v[b, h / group, :, :], over keys with a
// probability above 0 (a disallowed key never contributes, even where v holds NaN). One invocation per
// stored word of `out` (one f32 element, or two packed f16/bf16 elements). Rows that are
// fully masked are written as zeros whatever v holds.
#import common

@group(0) @binding(1) var<storage, read> v: array<u32>;
@group(0) @binding(2) var<storage, read> past_v: array<u32>;
@group(0) @binding(3) var<storage, read> probs: array<f32>;
@group(0) @binding(4) var<storage, read> row_alive: array<u32>;
@group(0) @binding(5) var<storage, read_write> out: array<u32>;


// out element e (in the problem's layout) from its probabilities row and v.
fn out_element(e: u32) -> f32 {
    let c = out_coords(e);
    let b = c.x;
    let h = c.y;
    let d = c.w;
    let dv = params.v_dim;
    let row = (b * params.q_heads + h) * params.q_len + c.z;
    if (row_alive[row] == 0u) {
        return 0.0;
    }
    let hk = h / params.group;
    let base = row * params.total_len;
    var acc = 0.0;
    let pl = params.past_len;
    for (var j = 0u; j < pl; j++) {
        let vi = ((b * params.kv_heads + hk) * pl + j) * dv + d;
        let p = probs[base + j];
        if (contributes(p)) {
            acc += p * decode(past_v[word_of(vi)], vi);
        }
    }
    for (var j = 0u; j < params.k_len; j++) {
        var vi = 0u;
        if (params.bshd == 1u) {
            vi = ((b * params.k_len + j) * params.kv_heads + hk) * dv + d;
        } else {
            vi = ((b * params.kv_heads + hk) * params.k_len + j) * dv + d;
        }
        let p = probs[base + pl + j];
        if (contributes(p)) {
            acc += p * decode(v[word_of(vi)], vi);
        }
    }
    return acc;
}

#import out_words
