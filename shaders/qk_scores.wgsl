// Stage 1: scores[b, h, i, j] = scale * (q[b, h, i, :] . k[b, h / group, j, :]), then softcap.
// One invocation per score; keys j < past_len come from the cache, the rest from k. A user
// score_mod then replaces the score (SEMANTICS.md: the scores intermediate includes it).
#import common

@group(0) @binding(1) var<storage, read> q: array<u32>;
@group(0) @binding(2) var<storage, read> k: array<u32>;
@group(0) @binding(3) var<storage, read> past_k: array<u32>;
@group(0) @binding(4) var<storage, read_write> scores: array<f32>;

#ifdef MOD_USER_SCORE
#import user
#endif

const WORKGROUP: u32 = 64u;

// Offset of the first element of token row (b, h, s) of a [B, H, S, D] or [B, S, H, D] tensor.
fn row_offset(b: u32, h: u32, s: u32, heads: u32, len: u32, dim: u32, bshd: bool) -> u32 {
    if (bshd) {
        return ((b * len + s) * heads + h) * dim;
    }
    return ((b * heads + h) * len + s) * dim;
}

fn score(b: u32, h: u32, i: u32, j: u32) -> f32 {
    let d_n = params.head_dim;
    let bshd = params.bshd == 1u;
    let qo = row_offset(b, h, i, params.q_heads, params.q_len, d_n, bshd);
    let hk = h / params.group;
    var acc = 0.0;
    if (j < params.past_len) {
        let ko = row_offset(b, hk, j, params.kv_heads, params.past_len, d_n, false);
        for (var d = 0u; d < d_n; d++) {
            let qi = qo + d;
            let ki = ko + d;
            acc += decode(q[word_of(qi)], qi) * decode(past_k[word_of(ki)], ki);
        }
    } else {
        let ko = row_offset(b, hk, j - params.past_len, params.kv_heads, params.k_len, d_n, bshd);
        for (var d = 0u; d < d_n; d++) {
            let qi = qo + d;
            let ki = ko + d;
            acc += decode(q[word_of(qi)], qi) * decode(k[word_of(ki)], ki);
        }
    }
    return softcapped(params.scale * acc);
}

@compute @workgroup_size(WORKGROUP)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let idx = linear_workgroup(wid, nwg) * WORKGROUP + lid;
    let lt = params.total_len;
    if (idx >= params.rows * lt) {
        return;
    }
    let row = idx / lt;
    let j = idx % lt;
    let i = row % params.q_len;
    let h = (row / params.q_len) % params.q_heads;
    let b = row / (params.q_len * params.q_heads);
#ifdef MOD_USER_SCORE
    scores[idx] = score_mod(score(b, h, i, j), b + params.b_base, h + params.h_base, i, j);
#else
    scores[idx] = score(b, h, i, j);
#endif
}
