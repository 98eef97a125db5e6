// Bindings, loads and index helpers of the fused kernels (fused, fused_decode: the same
// bindings, in the order of Kernel::bindings). The importing kernel declares the D4 / DV4
// constants.
//
// f16/bf16 q, k and v are bound as u32 words (two elements to a word): four words a load
// with VEC8 (D and Dv multiples of 8), two with VEC4, and one element at a time otherwise.
// With NATIVE_F16 (f16 on an adapter with shader-f16) the hardware converts them
// (unpack2x16float; without VEC4 or VEC8, f16 arrays); otherwise integer code decodes them.
// Words rather than vec4<f16>: on lavapipe vec4<f16> loads took 278 ms of a decode step that
// vec4<u32> words take 168 ms for (BENCHMARKS.md, 2026-12-04). (naga 30 cannot bitcast a u32 to vec2<f16>, which would keep
// the word loads and convert in hardware.)
//
// `k` and `v` hold all Lt keys: the caller's k/v when there is no cache (in the problem's
// layout), else the concatenated present cache (always bhsd); `params.kv_bshd` says which.

// params (binding 0) comes from common.wgsl.
@group(0) @binding(1) var<storage, read> q: array<Unit>;
@group(0) @binding(2) var<storage, read> k: array<Unit>;
@group(0) @binding(3) var<storage, read> v: array<Unit>;
@group(0) @binding(4) var<storage, read> tables: array<u32>;
@group(0) @binding(5) var<storage, read> mask: array<u32>;
@group(0) @binding(6) var<storage, read_write> out: array<u32>;
@group(0) @binding(7) var<storage, read_write> partials: array<vec4<f32>>;

#ifdef VEC8
// f16/bf16 with D and Dv multiples of 8: eight elements per 16-byte load (four packed words;
// half the loads of VEC4, which is what bounds decode where every key is loaded once).
alias Unit = vec4<u32>;

#ifdef DTYPE_F16
#ifdef NATIVE_F16
// The adapter converts f16 in hardware (unpack2x16float: exact, every f16 is an f32).
fn pair(w: u32) -> vec2<f32> {
    return unpack2x16float(w);
}
#else
fn pair(w: u32) -> vec2<f32> {
    return vec2<f32>(f16_value(w & 0xffffu), f16_value(w >> 16u));
}
#endif
#endif
#ifdef DTYPE_BF16
fn pair(w: u32) -> vec2<f32> {
    return bitcast<vec2<f32>>(vec2<u32>(w << 16u, w & 0xffff0000u));
}
#endif

// Elements 0..3 in column 0, 4..7 in column 1.
fn unit8(u: vec4<u32>) -> mat2x4<f32> {
    return mat2x4<f32>(vec4<f32>(pair(u.x), pair(u.y)), vec4<f32>(pair(u.z), pair(u.w)));
}
#else
#ifdef VEC4
// Four elements per load: f32 as vec4<u32>, f16/bf16 as two packed words.
#ifdef DTYPE_F32
alias Unit = vec4<u32>;

fn unit4(u: vec4<u32>) -> vec4<f32> {
    return bitcast<vec4<f32>>(u);
}
#endif
#ifdef DTYPE_F16
#ifdef NATIVE_F16
// shader-f16: two words, converted by the hardware.
alias Unit = vec2<u32>;

fn unit4(u: vec2<u32>) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(u.x), unpack2x16float(u.y));
}
#else
alias Unit = vec2<u32>;

fn unit4(u: vec2<u32>) -> vec4<f32> {
    return vec4<f32>(f16_value(u.x & 0xffffu), f16_value(u.x >> 16u), f16_value(u.y & 0xffffu), f16_value(u.y >> 16u));
}
#endif
#endif
#ifdef DTYPE_BF16
alias Unit = vec2<u32>;

fn unit4(u: vec2<u32>) -> vec4<f32> {
    return bitcast<vec4<f32>>(vec4<u32>(u.x << 16u, u.x & 0xffff0000u, u.y << 16u, u.y & 0xffff0000u));
}
#endif
#else
#ifdef NATIVE_F16
alias Unit = f16;

// Element i of q, k or v, from the array element holding it.
fn element(u: f16, i: u32) -> f32 {
    return f32(u);
}

fn index_of(i: u32) -> u32 {
    return i;
}
#else
alias Unit = u32;

fn element(word: u32, i: u32) -> f32 {
    return decode(word, i);
}

fn index_of(i: u32) -> u32 {
    return word_of(i);
}
#endif
#endif
#endif

// Offset of element 0 of q[b, h, i, :].
fn q_offset(b: u32, h: u32, i: u32) -> u32 {
    if (params.bshd == 1u) {
        return ((b * params.q_len + i) * params.q_heads + h) * params.head_dim;
    }
    return ((b * params.q_heads + h) * params.q_len + i) * params.head_dim;
}

// Offset of element 0 of key/value row j of kv head hk, rows of `dim` elements.
fn kv_offset(b: u32, hk: u32, j: u32, dim: u32) -> u32 {
    let lt = params.total_len;
    if (params.kv_bshd == 1u) {
        return ((b * lt + j) * params.kv_heads + hk) * dim;
    }
    return ((b * params.kv_heads + hk) * lt + j) * dim;
}

// Offset of element 0 of out[b, h, i, :].
fn out_offset(b: u32, h: u32, i: u32) -> u32 {
    if (params.bshd == 1u) {
        return ((b * params.q_len + i) * params.q_heads + h) * params.v_dim;
    }
    return ((b * params.q_heads + h) * params.q_len + i) * params.v_dim;
}

// Elements base + 4*d4 .. base + 4*d4 + 3 of q, k or v (zero past the row's length).
#ifdef VEC8
// Every row starts on a load unit. The kernels take k and v eight elements at a time
// (k8 / v8, or the words themselves for fused's tiles); q4 loads eight and keeps half.
fn q4(base: u32, d4: u32) -> vec4<f32> {
    return unit8(q[base / 8u + d4 / 2u])[d4 % 2u];
}

// Elements base + 8*d8 .. base + 8*d8 + 7 of k or v, as loaded (four words) and converted.
fn k_words(base: u32, d8: u32) -> vec4<u32> {
    return k[base / 8u + d8];
}

fn v_words(base: u32, d8: u32) -> vec4<u32> {
    return v[base / 8u + d8];
}

fn k8(base: u32, d8: u32) -> mat2x4<f32> {
    return unit8(k_words(base, d8));
}

fn v8(base: u32, d8: u32) -> mat2x4<f32> {
    return unit8(v_words(base, d8));
}
#else
#ifdef VEC4
// D and Dv are multiples of 4: every row starts on a load unit, one load per 4 elements.
fn q4(base: u32, d4: u32) -> vec4<f32> {
    return unit4(q[base / 4u + d4]);
}

fn k4(base: u32, d4: u32) -> vec4<f32> {
    return unit4(k[base / 4u + d4]);
}

fn v4(base: u32, d4: u32) -> vec4<f32> {
    return unit4(v[base / 4u + d4]);
}
#else
fn q4(base: u32, d4: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
        let d = d4 * 4u + c;
        if (d < params.head_dim) {
            r[c] = element(q[index_of(base + d)], base + d);
        }
    }
    return r;
}

fn k4(base: u32, d4: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
        let d = d4 * 4u + c;
        if (d < params.head_dim) {
            r[c] = element(k[index_of(base + d)], base + d);
        }
    }
    return r;
}

fn v4(base: u32, d4: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
        let d = d4 * 4u + c;
        if (d < params.v_dim) {
            r[c] = element(v[index_of(base + d)], base + d);
        }
    }
    return r;
}

#endif
#endif

// The bias of keys jb..jb+3 for query i: 0 or the additive mask (plus the mods' bias) where
// allowed, -inf where not. `full`: the block mask says the mods allow the whole tile.
fn bias4(b: u32, h: u32, i: u32, bd: Bounds, jb: i32, j_end: i32, full: bool) -> vec4<f32> {
    var bias = vec4<f32>(params.neg_inf);
    for (var c = 0u; c < 4u; c++) {
        let j = jb + i32(c);
        if (j < j_end && structurally_allowed(bd, i, u32(j))) {
#ifdef MODS
            if (full || mod_allowed(bd, b, h, i, u32(j))) {
                bias[c] = mask_bias(b, h, i, u32(j)) + mod_bias(bd, h, i, u32(j));
            }
#else
            bias[c] = mask_bias(b, h, i, u32(j));
#endif
        }
    }
    return bias;
}

// The user's score_mod on four scores of keys jb..jb+3 (the scores themselves without one).
fn modded4(s: vec4<f32>, b: u32, h: u32, i: u32, jb: i32) -> vec4<f32> {
#ifdef MOD_USER_SCORE
    var x = s;
    for (var c = 0u; c < 4u; c++) {
        x[c] = mod_score(s[c], b, h, i, u32(max(jb + i32(c), 0)));
    }
    return x;
#else
    return s;
#endif
}

// [begin, end) of the keys that queries i_first..=i_last may see under the structured masks
// (window/causal bounds and key length); empty when begin >= end.
fn key_range(bd: Bounds, i_first: u32, i_last: u32) -> vec2<i32> {
    let begin = max(0, i32(i_first) + bd.lo);
    let end = min(min(i32(params.total_len), bd.kv_len), i32(i_last) + bd.hi + 1);
    return vec2<i32>(begin, end);
}
