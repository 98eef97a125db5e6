// Shared by every staged kernel: the problem's sizes and options, and element loads/stores
// for the storage dtypes. Every tensor is bound as array<u32>: f32 elements are their bits,
// f16/bf16 elements are packed two to a word (element 2w in the low half of word w), so no
// kernel needs the shader-f16 feature.
//
// Defines: one of DTYPE_F32 | DTYPE_F16 | DTYPE_BF16 (q, k, v, past, out), and for the mask
// one of MASK_NONE | MASK_BOOL | MASK_F32 | MASK_F16 | MASK_BF16.

struct Params {
    batch: u32,
    q_heads: u32,
    kv_heads: u32,
    q_len: u32,
    k_len: u32,
    past_len: u32,
    total_len: u32,
    head_dim: u32,
    v_dim: u32,
    group: u32,
    // 1 when q, k, v, out are [B, S, H, D].
    bshd: u32,
    // Number of rows B * Hq * Lq.
    rows: u32,
    scale: f32,
    softcap: f32,
    // -inf, from the host: WGSL has no infinite constant that every compiler accepts.
    neg_inf: f32,
    // Elements of `out`.
    out_len: u32,
    // Mask strides over batch, head and query; length of its key axis.
    mask_sb: u32,
    mask_sh: u32,
    mask_si: u32,
    mask_n: u32,
    // Fused kernels: 1 when k and v are [B, Lt, Hkv, D] (no cache, bshd), key splits, and
    // keys per split; the prefill kernel's pass over its splits (a dispatch takes splits
    // key_pass * splits + s, and past the first carries its rows' states in the partials).
    kv_bshd: u32,
    splits: u32,
    split_len: u32,
    key_pass: u32,
    // Mods (mods.wgsl): where their data lies in `tables` (after the bounds).
    t_q_seg: u32,
    t_kv_seg: u32,
    t_prefix: u32,
    t_alibi: u32,
    alibi_symmetric: u32,
    t_ids: u32,
    t_blocked: u32,
    n_blocked: u32,
    t_classes: u32,
    n_classes: u32,
    t_class_blocked: u32,
    t_key_ok: u32,
    t_mod_q: u32,
    t_mod_kv: u32,
    t_allow: u32,
    t_mod_causal: u32,
    modalities: u32,
    // Block mask: first word, rows and keys per block, blocks per column and row, and the
    // strides of batch and head (0 where the mask is the same for all).
    t_blocks: u32,
    blk_q: u32,
    blk_k: u32,
    blk_qt: u32,
    blk_kt: u32,
    blk_sb: u32,
    blk_sh: u32,
    // Added to b and h before they reach a user snippet (a part of a split request).
    b_base: u32,
    h_base: u32,
    pad1: u32,
    pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;

// -inf for the user's snippets (a run-time value: no compiler accepts an infinite constant).
fn minus_infinity() -> f32 {
    return params.neg_inf;
}

// A quiet NaN, built from the bits of a run-time value: `x - x` (even of -inf) may be folded
// to 0 by compilers that assume no NaN (lavapipe does), and a NaN constant is rejected.
fn quiet_nan() -> f32 {
    return bitcast<f32>(bitcast<u32>(params.neg_inf) | 0x00400000u);
}

// Float tests by bits: WGSL lets compilers assume there is no NaN, and naga's `!=` on floats
// is the ordered comparison (false for NaN), so NaN-aware decisions look at the bits.
// `contributes(p)`: p is a probability other than +0, NaN included (a NaN score at an allowed
// key makes its row NaN, as in the reference; disallowed keys have p = +0 exactly).
fn contributes(p: f32) -> bool {
    return bitcast<u32>(p) != 0u;
}

// `allows(bias)`: the bias lets its key take part, anything but -inf (NaN included: a NaN in
// an additive mask at an allowed key makes the row NaN, as in the reference).
fn allows(bias: f32) -> bool {
    return bitcast<u32>(bias) != bitcast<u32>(params.neg_inf);
}

fn allows4(bias: vec4<f32>) -> vec4<bool> {
    return bitcast<vec4<u32>>(bias) != vec4<u32>(bitcast<u32>(params.neg_inf));
}

fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

fn is_nan4(x: vec4<f32>) -> vec4<bool> {
    return (bitcast<vec4<u32>>(x) & vec4<u32>(0x7fffffffu)) > vec4<u32>(0x7f800000u);
}

// Softcap: c * tanh(s / c) when c > 0, accurate in f32 for every finite c. The drivers' tanh
// computes (e^2x - 1) / (e^2x + 1), whose cancellation near x = 0 costs an absolute error of
// about one ulp of 1 in tanh, so c times it was off by ~c * 1.2e-7 (cap 1e4: logits off by
// 1e-3; cap 1e20: garbage) where the scores are small beside the cap. So: for |x| < 0.625
// Cephes' tanhf polynomial, tanh(x) = x + x * P(x^2) (relative error 1.6e-7), written as
// s + s * P so that a tiny x (a huge cap) neither rounds nor flushes; beyond,
// 1 - 2 / (e^2x + 1), which has no cancellation there (and gives 1 for an infinite score).
// A NaN score stays NaN (as in the reference): llvmpipe's GL tanh gave -1 for NaN, which
// turned a NaN score into -c.
fn softcap_poly(z: f32) -> f32 {
    return ((((-5.70498872745e-3 * z + 2.06390887954e-2) * z - 5.37397155531e-2) * z
        + 1.33314422036e-1) * z - 3.33332819422e-1) * z;
}

fn softcapped(s: f32) -> f32 {
    let c = params.softcap;
    if (c > 0.0) {
        let x = s / c;
        let ax = abs(x);
        let near = s + s * softcap_poly(x * x);
        let far = c * sign(x) * (1.0 - 2.0 / (exp(2.0 * ax) + 1.0));
        return select(select(far, near, ax < 0.625), s, is_nan(s));
    }
    return s;
}

fn softcapped4(s: vec4<f32>) -> vec4<f32> {
    let c = params.softcap;
    if (c > 0.0) {
        let x = s / c;
        let ax = abs(x);
        let z = x * x;
        let p = vec4<f32>(softcap_poly(z.x), softcap_poly(z.y), softcap_poly(z.z), softcap_poly(z.w));
        let near = s + s * p;
        let far = c * sign(x) * (vec4<f32>(1.0) - 2.0 / (exp(2.0 * ax) + vec4<f32>(1.0)));
        return select(select(far, near, ax < vec4<f32>(0.625)), s, is_nan4(s));
    }
    return s;
}

// Workgroups are laid out on a 2-D grid so that more than 65,535 of them can be dispatched.
fn linear_workgroup(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}

// (b, h, i, d) of element e of `out`, [B, Hq, Lq, Dv] or, in bshd, [B, Lq, Hq, Dv].
fn out_coords(e: u32) -> vec4<u32> {
    let d = e % params.v_dim;
    let r = e / params.v_dim;
    if (params.bshd == 1u) {
        return vec4<u32>(r / (params.q_heads * params.q_len), r % params.q_heads, (r / params.q_heads) % params.q_len, d);
    }
    return vec4<u32>(r / (params.q_len * params.q_heads), (r / params.q_len) % params.q_heads, r % params.q_len, d);
}

// Word index and decoding of element `i` of a tensor of the kernel's dtype.
fn word_of(i: u32) -> u32 {
#ifdef DTYPE_F32
    return i;
#else
    return i >> 1u;
#endif
}

fn decode(word: u32, i: u32) -> f32 {
#ifdef DTYPE_F32
    return bitcast<f32>(word);
#endif
#ifdef DTYPE_F16
    return f16_value(select(word & 0xffffu, word >> 16u, (i & 1u) == 1u));
#endif
#ifdef DTYPE_BF16
    return bitcast<f32>(select(word << 16u, word & 0xffff0000u, (i & 1u) == 1u));
#endif
}

// f16 bits (low 16 bits of `h`) -> f32, exactly. Integer arithmetic rather than
// unpack2x16float, which needs a capability some backends (GL) lack.
fn f16_value(h: u32) -> f32 {
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if (e == 0u) {
        // Zero or subnormal: m * 2^-24, exact in f32.
        let magnitude = f32(m) * 5.9604644775390625e-8;
        return select(magnitude, -magnitude, sign != 0u);
    }
    if (e == 31u) {
        return bitcast<f32>(sign | 0x7f800000u | (m << 13u));
    }
    return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
}

// f32 -> f16 bits, round to nearest even, overflow to inf, NaN kept (pack2x16float leaves
// out-of-range values indeterminate, so it is not used).
fn f16_bits(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    let sign = (b >> 16u) & 0x8000u;
    let a = b & 0x7fffffffu;
    if (a > 0x7f800000u) {
        return sign | 0x7e00u;
    }
    if (a >= 0x477ff000u) {
        return sign | 0x7c00u;
    }
    if (a < 0x38800000u) {
        // Result is subnormal (or zero): round(|x| * 2^24).
        if (a < 0x33000000u) {
            return sign;
        }
        let e = a >> 23u;
        let m = (a & 0x7fffffu) | 0x800000u;
        let shift = 126u - e;
        var q = m >> shift;
        let rem = m & ((1u << shift) - 1u);
        let halfway = 1u << (shift - 1u);
        if (rem > halfway || (rem == halfway && (q & 1u) == 1u)) {
            q = q + 1u;
        }
        return sign | q;
    }
    let r = a - 0x38000000u;
    return sign | ((r + 0xfffu + ((r >> 13u) & 1u)) >> 13u);
}

// f32 -> bf16 bits, round to nearest even, NaN kept quiet.
fn bf16_bits(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    if ((b & 0x7fffffffu) > 0x7f800000u) {
        return (b >> 16u) | 0x40u;
    }
    return (b + 0x7fffu + ((b >> 16u) & 1u)) >> 16u;
}

// Elements per stored word of the kernel's dtype.
fn per_word() -> u32 {
#ifdef DTYPE_F32
    return 1u;
#else
    return 2u;
#endif
}

// Encodes up to two results (lo = element 2w, hi = element 2w + 1) into one word.
fn encode(lo: f32, hi: f32) -> u32 {
#ifdef DTYPE_F32
    return bitcast<u32>(lo);
#endif
#ifdef DTYPE_F16
    return f16_bits(lo) | (f16_bits(hi) << 16u);
#endif
#ifdef DTYPE_BF16
    return bf16_bits(lo) | (bf16_bits(hi) << 16u);
#endif
}

// A loop's constant trip count. With OPAQUE_LOOPS it passes through the uniforms, so the
// driver's compiler cannot unroll the loop (Mesa's GLSL compiler unrolls every loop with a
// constant count of up to 32 trips, nested loops multiply, and llvmpipe then took up to a
// minute per fused pipeline; on GL the engine sets it). `batch` is never 0: problems with an
// empty axis are refused before anything is dispatched.
fn trips(n: u32) -> u32 {
#ifdef OPAQUE_LOOPS
    return select(n, 0u, params.batch == 0u);
#else
    return n;
#endif
}
