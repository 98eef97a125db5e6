//! The mods of a case file (README, "Custom masks"): tensors `q_segment`, `kv_segment`,
//! `prefix_len`, `alibi_slopes`, `kv_token_ids`, `token_classes`, `modality_q`, `modality_kv`,
//! `modality_allow`, `modality_causal` and `aux_<name>`; metadata `mask_mod`, `score_mod`,
//! `alibi`, `blocked_ids`, `blocked_classes`.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use wgattn::{Alibi, Aux, AuxData, BlockedTokens, MaskMods, Modalities, Segments, TokenFilter};

/// The mod tensor names a case file may hold (besides `aux_<name>`).
pub const MOD_TENSORS: [&str; 10] = [
    "q_segment",
    "kv_segment",
    "prefix_len",
    "alibi_slopes",
    "kv_token_ids",
    "token_classes",
    "modality_q",
    "modality_kv",
    "modality_allow",
    "modality_causal",
];

/// The metadata keys [`read`] reads.
pub const MOD_KEYS: [&str; 5] = [
    "mask_mod",
    "score_mod",
    "alibi",
    "blocked_ids",
    "blocked_classes",
];

/// Reads the mods of a case; `None` when it has none.
pub fn read(
    file: &SafeTensors<'_>,
    meta: Option<&HashMap<String, String>>,
) -> Result<Option<MaskMods>> {
    let get = |name: &str| file.tensor(name).ok();
    let text = |key: &str| meta.and_then(|m| m.get(key)).cloned();
    let mut mods = MaskMods::default();
    let mut any = false;

    match (get("q_segment"), get("kv_segment")) {
        (None, None) => {}
        (Some(q), Some(kv)) => {
            mods.segments = Some(Segments {
                q: ints("q_segment", &q, Some(2))?,
                kv: ints("kv_segment", &kv, Some(2))?,
            });
            any = true;
        }
        _ => bail!("tensors `q_segment` [B, Lq] and `kv_segment` [B, Lt] come together"),
    }
    if let Some(t) = get("prefix_len") {
        mods.prefix_lengths = Some(ints("prefix_len", &t, Some(1))?);
        any = true;
    }
    let alibi_kind = text("alibi");
    let slopes = get("alibi_slopes")
        .map(|t| floats("alibi_slopes", &t, Some(1)))
        .transpose()?;
    if alibi_kind.is_some() || slopes.is_some() {
        let symmetric = match alibi_kind.as_deref() {
            None | Some("true") | Some("one-sided") => false,
            Some("symmetric") => true,
            Some(other) => {
                bail!("metadata `alibi` = {other:?}: expected one-sided (or true) or symmetric")
            }
        };
        mods.alibi = Some(Alibi { slopes, symmetric });
        any = true;
    }
    if let Some(ids) = get("kv_token_ids") {
        let kv_token_ids = ints("kv_token_ids", &ids, Some(2))?;
        let blocked = match (
            text("blocked_ids"),
            get("token_classes"),
            text("blocked_classes"),
        ) {
            (Some(list), None, None) => BlockedTokens::Ids(int_list("blocked_ids", &list)?),
            (None, Some(classes), Some(list)) => BlockedTokens::Classes {
                class_of: to_u32("token_classes", ints("token_classes", &classes, Some(1))?)?,
                blocked: to_u32("blocked_classes", int_list("blocked_classes", &list)?)?,
            },
            _ => bail!(
                "tensor `kv_token_ids` needs either metadata `blocked_ids` (comma-separated) or \
                 tensor `token_classes` [V] with metadata `blocked_classes`"
            ),
        };
        mods.token_filter = Some(TokenFilter {
            kv_token_ids,
            blocked,
        });
        any = true;
    } else if text("blocked_ids").is_some() || get("token_classes").is_some() {
        bail!("`blocked_ids` / `token_classes` need tensor `kv_token_ids` [B, Lt]");
    }
    let modality = [
        "modality_q",
        "modality_kv",
        "modality_allow",
        "modality_causal",
    ]
    .map(get);
    match modality {
        [None, None, None, None] => {}
        [Some(q), Some(kv), Some(allow), causal] => {
            let allow_flags = flags("modality_allow", &allow, Some(2))?;
            let m = allow.shape().first().copied().unwrap_or(0);
            let causal = match causal {
                Some(c) => flags("modality_causal", &c, Some(1))?,
                None => vec![false; m],
            };
            mods.modalities = Some(Modalities {
                q: to_u32("modality_q", ints("modality_q", &q, Some(2))?)?,
                kv: to_u32("modality_kv", ints("modality_kv", &kv, Some(2))?)?,
                allow: allow_flags,
                causal,
            });
            any = true;
        }
        _ => bail!(
            "a modality mask needs tensors `modality_q` [B, Lq], `modality_kv` [B, Lt] and \
             `modality_allow` [M, M] (and optionally `modality_causal` [M])"
        ),
    }
    mods.mask_mod = text("mask_mod");
    mods.score_mod = text("score_mod");
    any |= mods.mask_mod.is_some() || mods.score_mod.is_some();
    let mut names: Vec<&str> = file
        .names()
        .into_iter()
        .filter(|n| n.starts_with("aux_"))
        .collect();
    names.sort_unstable();
    for name in names {
        let view = file
            .tensor(name)
            .map_err(|e| anyhow!("tensor `{name}`: {e}"))?;
        let data = match view.dtype() {
            Dtype::I32 => AuxData::I32(words(view.data()).map(|w| w as i32).collect()),
            Dtype::U32 => AuxData::U32(words(view.data()).collect()),
            Dtype::F32 => AuxData::F32(words(view.data()).map(f32::from_bits).collect()),
            other => bail!("tensor `{name}` has dtype {other}; an aux tensor is I32, U32 or F32"),
        };
        mods.aux.push(Aux {
            name: name["aux_".len()..].to_string(),
            data,
        });
        any = true;
    }
    Ok(any.then_some(mods))
}

fn words(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

fn check_rank(name: &str, view: &TensorView<'_>, rank: Option<usize>) -> Result<()> {
    match rank {
        Some(r) if view.shape().len() != r => bail!(
            "tensor `{name}` must be {r}-D, got shape {:?}",
            view.shape()
        ),
        _ => Ok(()),
    }
}

/// An integer tensor (I64, I32, U32, U8) as i64.
pub fn ints(name: &str, view: &TensorView<'_>, rank: Option<usize>) -> Result<Vec<i64>> {
    check_rank(name, view, rank)?;
    let b = view.data();
    Ok(match view.dtype() {
        Dtype::I64 => b
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(std::array::from_fn(|i| c[i])))
            .collect(),
        Dtype::I32 => words(b).map(|w| w as i32 as i64).collect(),
        Dtype::U32 => words(b).map(i64::from).collect(),
        Dtype::U8 => b.iter().map(|&x| i64::from(x)).collect(),
        other => bail!("tensor `{name}` has dtype {other}; it must be I64, I32, U32 or U8"),
    })
}

fn floats(name: &str, view: &TensorView<'_>, rank: Option<usize>) -> Result<Vec<f32>> {
    check_rank(name, view, rank)?;
    match view.dtype() {
        Dtype::F32 => Ok(words(view.data()).map(f32::from_bits).collect()),
        other => bail!("tensor `{name}` has dtype {other}; it must be F32"),
    }
}

/// A BOOL (or 0/1 integer) tensor as flags.
fn flags(name: &str, view: &TensorView<'_>, rank: Option<usize>) -> Result<Vec<bool>> {
    check_rank(name, view, rank)?;
    let values = if view.dtype() == Dtype::BOOL {
        view.data().iter().map(|&x| i64::from(x)).collect()
    } else {
        ints(name, view, rank)?
    };
    values
        .into_iter()
        .enumerate()
        .map(|(i, x)| match x {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(anyhow!(
                "tensor `{name}` holds {x} at flat index {i}; it holds 0 or 1 (or BOOL)"
            )),
        })
        .collect()
}

fn to_u32(name: &str, values: Vec<i64>) -> Result<Vec<u32>> {
    values
        .into_iter()
        .map(|x| u32::try_from(x).map_err(|_| anyhow!("`{name}` holds {x}; it must be in 0..2^32")))
        .collect()
}

fn int_list(key: &str, list: &str) -> Result<Vec<i64>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<i64>()
                .map_err(|_| anyhow!("metadata `{key}` = {list:?}: {s:?} is not an integer"))
        })
        .collect()
}
