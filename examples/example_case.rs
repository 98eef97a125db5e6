//! Writes `docs/example.safetensors` (or the path given), the case file the README's
//! pictures are drawn from: `cargo run --example example_case [-- PATH]`.
//!
//! B=2, Hq=4 over Hkv=2 (GQA), Lq=Lk=16, D=16, f32, causal, and a boolean padding mask
//! `[2, 1, 1, 16]` under which the second sequence has 11 real tokens and 5 of padding. The
//! heads are built to attend in recognisable ways: head 0 to its own position (queries match
//! their keys), head 1 to the previous token, head 2 to the first token (a large shared
//! direction in key 0), head 3 almost uniformly (small queries).

use std::collections::HashMap;

use safetensors::tensor::TensorView;
use safetensors::Dtype;

const B: usize = 2;
const HQ: usize = 4;
const HKV: usize = 2;
const L: usize = 16;
const D: usize = 16;
const REAL_TOKENS: [usize; B] = [16, 11];

/// A small deterministic generator (xorshift), values in [-1, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "docs/example.safetensors".into());
    let mut rng = Rng(0x5eed_cafe_f00d);
    let mut k = vec![0f32; B * HKV * L * D];
    let mut v = vec![0f32; B * HKV * L * D];
    for x in k.iter_mut().chain(v.iter_mut()) {
        *x = rng.next();
    }
    let kv = |b: usize, hk: usize, j: usize| ((b * HKV + hk) * L + j) * D;
    // Key 0 of kv head 1 points far along one direction: the first-token sink of head 2.
    for b in 0..B {
        let at = kv(b, 1, 0);
        k[at..at + D].fill(0.0);
        k[at] = 6.0;
    }
    let mut q = vec![0f32; B * HQ * L * D];
    for b in 0..B {
        for h in 0..HQ {
            for i in 0..L {
                let at = ((b * HQ + h) * L + i) * D;
                for d in 0..D {
                    let noise = 0.3 * rng.next();
                    q[at + d] = match h {
                        0 => 3.0 * k[kv(b, 0, i) + d] + noise,
                        1 => 3.0 * k[kv(b, 0, i.saturating_sub(1)) + d] + noise,
                        2 => {
                            if d == 0 {
                                2.0
                            } else {
                                noise
                            }
                        }
                        _ => noise,
                    };
                }
            }
        }
    }
    let mask: Vec<u8> = REAL_TOKENS
        .iter()
        .flat_map(|&n| (0..L).map(move |j| u8::from(j < n)))
        .collect();
    let bytes = |x: &[f32]| x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
    let (qb, kb, vb) = (bytes(&q), bytes(&k), bytes(&v));
    let tensors = [
        ("q", TensorView::new(Dtype::F32, vec![B, HQ, L, D], &qb)?),
        ("k", TensorView::new(Dtype::F32, vec![B, HKV, L, D], &kb)?),
        ("v", TensorView::new(Dtype::F32, vec![B, HKV, L, D], &vb)?),
        (
            "mask",
            TensorView::new(Dtype::BOOL, vec![B, 1, 1, L], &mask)?,
        ),
    ];
    let metadata = HashMap::from([
        ("causal".to_string(), "true".to_string()),
        (
            "description".to_string(),
            "wgattn example: causal GQA over a right-padded batch".to_string(),
        ),
    ]);
    std::fs::write(&path, safetensors::serialize(tensors, Some(metadata))?)?;
    println!("wrote {path}");
    Ok(())
}
