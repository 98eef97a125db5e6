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


// acc plus cached key j's p * v of out element (b, hk, d), probabilities at `base`. A
// disallowed key adds nothing, even where v holds NaN.
fn with_past_key(acc: f32, b: u32, hk: u32, d: u32, base: u32, j: u32) -> f32 {
    let p = probs[base + j];
    if (!contributes(p)) {
        return acc;
    }
    let vi = ((b * params.kv_heads + hk) * params.past_len + j) * params.v_dim + d;
    return acc + p * decode(past_v[word_of(vi)], vi);
}

// The same for key j of this call's k and v (after the cache's keys in `probs`).
fn with_key(acc: f32, b: u32, hk: u32, d: u32, base: u32, j: u32) -> f32 {
    let p = probs[base + params.past_len + j];
    if (!contributes(p)) {
        return acc;
    }
    var vi = 0u;
    if (params.bshd == 1u) {
        vi = ((b * params.k_len + j) * params.kv_heads + hk) * params.v_dim + d;
    } else {
        vi = ((b * params.kv_heads + hk) * params.k_len + j) * params.v_dim + d;
    }
    return acc + p * decode(v[word_of(vi)], vi);
}

// out element e (in the problem's layout) from its probabilities row and v, keys in order.
// Four keys per loop trip: llvmpipe ends every loop of an invocation once it has taken
// 65,535 trips in all (src/loops.rs), so a trip per key would stop short of longer rows.
fn out_element(e: u32) -> f32 {
    let c = out_coords(e);
    let b = c.x;
    let h = c.y;
    let d = c.w;
    let row = (b * params.q_heads + h) * params.q_len + c.z;
    if (row_alive[row] == 0u) {
        return 0.0;
    }
    let hk = h / params.group;
    let base = row * params.total_len;
    var acc = 0.0;
    let pl = params.past_len;
    for (var j = 0u; j < pl; j += 4u) {
        acc = with_past_key(acc, b, hk, d, base, j);
        if (j + 1u < pl) {
            acc = with_past_key(acc, b, hk, d, base, j + 1u);
        }
        if (j + 2u < pl) {
            acc = with_past_key(acc, b, hk, d, base, j + 2u);
        }
        if (j + 3u < pl) {
            acc = with_past_key(acc, b, hk, d, base, j + 3u);
        }
    }
    let kl = params.k_len;
    for (var j = 0u; j < kl; j += 4u) {
        acc = with_key(acc, b, hk, d, base, j);
        if (j + 1u < kl) {
            acc = with_key(acc, b, hk, d, base, j + 1u);
        }
        if (j + 2u < kl) {
            acc = with_key(acc, b, hk, d, base, j + 2u);
        }
        if (j + 3u < kl) {
            acc = with_key(acc, b, hk, d, base, j + 3u);
        }
    }
    return acc;
}

#import out_words
