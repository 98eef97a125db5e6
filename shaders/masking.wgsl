// Mask evaluation shared by apply_mask and the fused kernels. The importing kernel declares
// `tables: array<u32>` (the per-batch bounds, four words each, then the mods' data) and, where
// it reads a mask tensor, `mask: array<u32>`.
//
// Defines: one of MASK_NONE | MASK_BOOL | MASK_F32 | MASK_F16 | MASK_BF16.

struct Bounds {
    // Key j is allowed for query i only if i + lo <= j <= i + hi and j < kv_len.
    lo: i32,
    hi: i32,
    kv_len: i32,
    // The causal offset: query i sits at position i + offset (prefix-LM, modalities, ALiBi).
    offset: i32,
}

fn bounds_of(b: u32) -> Bounds {
    let at = 4u * b;
    return Bounds(bitcast<i32>(tables[at]), bitcast<i32>(tables[at + 1u]), bitcast<i32>(tables[at + 2u]), bitcast<i32>(tables[at + 3u]));
}

// The additive part of the bias of key j, or -inf where the mask tensor disallows it.
fn mask_bias(b: u32, h: u32, i: u32, j: u32) -> f32 {
#ifdef MASK_NONE
    return 0.0;
#else
    if (j >= params.mask_n) {
        return params.neg_inf;
    }
    let e = b * params.mask_sb + h * params.mask_sh + i * params.mask_si + j;
#ifdef MASK_BOOL
    let byte = (mask[e >> 2u] >> ((e & 3u) * 8u)) & 0xffu;
    return select(params.neg_inf, 0.0, byte != 0u);
#endif
#ifdef MASK_F32
    return bitcast<f32>(mask[e]);
#endif
#ifdef MASK_F16
    let word = mask[e >> 1u];
    return f16_value(select(word & 0xffffu, word >> 16u, (e & 1u) == 1u));
#endif
#ifdef MASK_BF16
    let word = mask[e >> 1u];
    return bitcast<f32>(select(word << 16u, word & 0xffff0000u, (e & 1u) == 1u));
#endif
#endif
}

fn structurally_allowed(bd: Bounds, i: u32, j: u32) -> bool {
    let ii = i32(i);
    let jj = i32(j);
    return jj >= ii + bd.lo && jj <= ii + bd.hi && jj < bd.kv_len;
}

