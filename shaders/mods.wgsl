// The mods of src/mods.rs: structured masks computed from small index tables, and the user's
// mask_mod / score_mod (the generated `user` module). The importing kernel declares
// `tables: array<u32>` and imports masking first; the offsets of each table are in params.
// Without any define every function is the identity (allows all, adds 0, keeps the score).
//
// Defines: MOD_SEGMENTS, MOD_PREFIX, MOD_ALIBI, MOD_TOKENS, MOD_MODALITY, MOD_USER_MASK,
// MOD_USER_SCORE (MOD_USER: either of the last two), MOD_MASKS (any mod that can disallow).
#ifdef MOD_USER
#import user
#endif

// Whether the mods allow key j for query i of batch entry b, query head h.
fn mod_allowed(bd: Bounds, b: u32, h: u32, i: u32, j: u32) -> bool {
    // The query's position, for the causal parts.
    let p = i32(i) + bd.offset;
#ifdef MOD_SEGMENTS
    if (tables[params.t_q_seg + b * params.q_len + i] != tables[params.t_kv_seg + b * params.total_len + j]) {
        return false;
    }
#endif
#ifdef MOD_PREFIX
    // Bidirectional inside the prefix, causal after it.
    if (i32(j) >= bitcast<i32>(tables[params.t_prefix + b]) && i32(j) > p) {
        return false;
    }
#endif
#ifdef MOD_TOKENS
    // Written by token_mask from the key's token id.
    if (tables[params.t_key_ok + b * params.total_len + j] == 0u) {
        return false;
    }
#endif
#ifdef MOD_MODALITY
    let mq = tables[params.t_mod_q + b * params.q_len + i];
    let mk = tables[params.t_mod_kv + b * params.total_len + j];
    if (tables[params.t_allow + mq * params.modalities + mk] == 0u) {
        return false;
    }
    if (tables[params.t_mod_causal + mq] != 0u && i32(j) > p) {
        return false;
    }
#endif
#ifdef MOD_USER_MASK
    if (!mask_mod(b + params.b_base, h + params.h_base, i, j)) {
        return false;
    }
#endif
    return true;
}

// The mods' additive bias of an allowed position (ALiBi), 0 without one.
fn mod_bias(bd: Bounds, h: u32, i: u32, j: u32) -> f32 {
#ifdef MOD_ALIBI
    let slope = bitcast<f32>(tables[params.t_alibi + h]);
    let distance = f32(i32(i) + bd.offset - i32(j));
    if (params.alibi_symmetric == 1u) {
        return -slope * abs(distance);
    }
    return -slope * distance;
#else
    return 0.0;
#endif
}

// The score after the user's score_mod (s itself without one).
fn mod_score(s: f32, b: u32, h: u32, i: u32, j: u32) -> f32 {
#ifdef MOD_USER_SCORE
    return score_mod(s, b + params.b_base, h + params.h_base, i, j);
#else
    return s;
#endif
}

// Whether a tile needs no per-position work from the mods: no ALiBi bias, and either no
// mod that can disallow or a block mask saying the tile is entirely allowed.
fn mods_free(full: bool) -> bool {
#ifdef MOD_ALIBI
    return false;
#else
#ifdef MOD_MASKS
    return full;
#else
    return true;
#endif
#endif
}

// Which of four keys take part: their bias allows them and their modded scores `sm` do not
// remove them (a key whose modded score is -inf is removed like a masked one).
fn kept4(bias: vec4<f32>, sm: vec4<f32>) -> vec4<bool> {
#ifdef MOD_USER_SCORE
    return allows4(bias) & (bitcast<vec4<u32>>(sm) != vec4<u32>(bitcast<u32>(params.neg_inf)));
#else
    return allows4(bias);
#endif
}

// Whether a modded score marks its key as removed (-inf by bits: NaN takes part).
fn score_removed(s: f32) -> bool {
#ifdef MOD_USER_SCORE
    return bitcast<u32>(s) == bitcast<u32>(params.neg_inf);
#else
    return false;
#endif
}
