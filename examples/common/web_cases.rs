//! The cases `examples/web_async.rs` runs through `masked_attention_async` (in a browser on
//! WebGPU, or natively), built from fixed seeds so that `tests/wasm.rs`, which includes this
//! file with `#[path]`, rebuilds the same inputs and checks the page's outputs against the CPU
//! reference itself.

use wgattn::{AttentionInputs, AttentionOptions, BoolMask, DType, ExecutionPath, Mask, Tensor};

/// One call: its tensors, masks and options.
pub struct WebCase {
    pub name: &'static str,
    pub q: Tensor,
    pub k: Tensor,
    pub v: Tensor,
    pub mask: Option<Mask>,
    pub kv_lengths: Option<Vec<i64>>,
    pub options: AttentionOptions,
}

impl WebCase {
    pub fn inputs(&self) -> AttentionInputs<'_> {
        let mut inputs = AttentionInputs::new(&self.q, &self.k, &self.v);
        if let Some(mask) = &self.mask {
            inputs = inputs.with_mask(mask);
        }
        if let Some(lengths) = &self.kv_lengths {
            inputs = inputs.with_kv_lengths(lengths);
        }
        inputs
    }
}

/// Uniform values in `[-1, 1)` from a 64-bit LCG (the same stream on every target).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn tensor(&mut self, shape: [usize; 4], dtype: DType) -> Tensor {
        let data: Vec<f32> = (0..shape.iter().product()).map(|_| self.next()).collect();
        Tensor::from_f32_as(shape, &data, dtype).expect("a valid shape")
    }
}

/// Prefill and decode, both GPU paths and the automatic choice, f32 and f16, every mask kind
/// the engine computes from indices (causal, window, key lengths) and a broadcast boolean
/// tensor with a fully masked row; sizes that divide no tile.
pub fn cases() -> Vec<WebCase> {
    let mut rng = Lcg(20261202);
    let mut out = Vec::new();
    // GQA prefill: 4 query heads on 2 key/value heads, causal over right-padded keys.
    for (name, path) in [
        ("causal_padded_gqa_fused", ExecutionPath::Fused),
        ("causal_padded_gqa_staged", ExecutionPath::Staged),
    ] {
        out.push(WebCase {
            name,
            q: rng.tensor([2, 4, 7, 16], DType::F32),
            k: rng.tensor([2, 2, 9, 16], DType::F32),
            v: rng.tensor([2, 2, 9, 16], DType::F32),
            mask: None,
            kv_lengths: Some(vec![9, 5]),
            options: AttentionOptions {
                causal: true,
                causal_offset: Some(2),
                path,
                ..Default::default()
            },
        });
    }
    // f16 with a boolean mask broadcast over heads ([B, 1, Lq, Lk]); query row 3 of batch 1
    // sees no key at all; a sliding window on top.
    let (b, lq, lk) = (2, 6, 11);
    let allowed: Vec<bool> = (0..b * lq * lk)
        .map(|n| {
            let (bi, i, j) = (n / (lq * lk), (n / lk) % lq, n % lk);
            !(bi == 1 && i == 3) && (i + j + bi) % 4 != 0
        })
        .collect();
    out.push(WebCase {
        name: "bool_mask_window_f16",
        q: rng.tensor([b, 3, lq, 24], DType::F16),
        k: rng.tensor([b, 3, lk, 24], DType::F16),
        v: rng.tensor([b, 3, lk, 20], DType::F16),
        mask: Some(Mask::Bool(
            BoolMask::new([b, 1, lq, lk], allowed).expect("a valid mask"),
        )),
        kv_lengths: None,
        options: AttentionOptions {
            window_left: 3,
            ..Default::default()
        },
    });
    // Decode: one query against 700 keys, which the fused path splits across workgroups.
    out.push(WebCase {
        name: "decode_700_keys",
        q: rng.tensor([1, 4, 1, 32], DType::F32),
        k: rng.tensor([1, 4, 700, 32], DType::F32),
        v: rng.tensor([1, 4, 700, 32], DType::F32),
        mask: None,
        kv_lengths: Some(vec![650]),
        options: AttentionOptions::default(),
    });
    out
}

/// A request the engine must refuse before dispatching anything (k's head size is not q's).
pub fn invalid() -> WebCase {
    let mut rng = Lcg(7);
    WebCase {
        name: "mismatched_head_dim",
        q: rng.tensor([1, 2, 3, 8], DType::F32),
        k: rng.tensor([1, 2, 3, 4], DType::F32),
        v: rng.tensor([1, 2, 3, 8], DType::F32),
        mask: None,
        kv_lengths: None,
        options: AttentionOptions::default(),
    }
}
