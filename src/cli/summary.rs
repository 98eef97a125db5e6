//! One-line descriptions of a request for the titles of pictures: its shape, its masks, its
//! scale.

use wgattn::{AttentionInputs, AttentionOptions, AttentionProblem, Mask};

/// `B=2 Hq=4 Hkv=2 Lq=8 Lt=8 D=16 f32`, with the cache, `Dv` and layout when they matter.
pub fn shape(p: &AttentionProblem) -> String {
    let mut s = format!(
        "B={} Hq={} Hkv={} Lq={} Lt={}",
        p.batch,
        p.q_heads,
        p.kv_heads,
        p.q_len,
        p.total_len()
    );
    if p.has_past {
        s += &format!(" (P={} cached + Lk={})", p.past_len, p.k_len);
    }
    s += &format!(" D={}", p.head_dim);
    if p.v_dim != p.head_dim {
        s += &format!(" Dv={}", p.v_dim);
    }
    s += &format!(" {}", p.dtype.name());
    if p.layout != wgattn::Layout::Bhsd {
        s += &format!(" {}", p.layout.name());
    }
    s
}

/// `masks: causal, window left 2, offset kv_len-Lq, kv_lengths [5, 3], bool mask [2, 1, 8, 8]`,
/// or `masks: none`.
pub fn masks(p: &AttentionProblem, inputs: &AttentionInputs<'_>, o: &AttentionOptions) -> String {
    let mut parts = Vec::new();
    if o.causal {
        parts.push("causal".to_string());
    }
    if o.window_left >= 0 {
        parts.push(format!("window left {}", o.window_left));
    }
    if o.window_right >= 0 {
        parts.push(format!("window right {}", o.window_right));
    }
    if !parts.is_empty() {
        if let Some(offset) = o.causal_offset {
            parts.push(format!("offset {offset}"));
        } else if p.has_past {
            parts.push(format!("offset P={}", p.past_len));
        } else if inputs.kv_lengths.is_some() {
            parts.push("offset kv_len-Lq".to_string());
        }
    }
    if let Some(lengths) = inputs.kv_lengths {
        parts.push(format!("kv_lengths {}", list(lengths)));
    }
    match inputs.mask {
        Some(Mask::Bool(m)) => parts.push(format!("bool mask {:?}", m.shape())),
        Some(Mask::Additive(t)) => parts.push(format!(
            "additive {} mask {:?}",
            t.dtype().name(),
            t.shape()
        )),
        None => {}
    }
    if let Some(m) = inputs.mods {
        parts.extend(mods(m));
    }
    if parts.is_empty() {
        "masks: none".to_string()
    } else {
        format!("masks: {}", parts.join(", "))
    }
}

/// The mods in words: `segments`, `prefix-LM [4, 0]`, `ALiBi`, ...
fn mods(m: &wgattn::MaskMods) -> Vec<String> {
    let mut parts = Vec::new();
    if m.segments.is_some() {
        parts.push("segments".to_string());
    }
    if let Some(p) = &m.prefix_lengths {
        parts.push(format!("prefix-LM {}", list(p)));
    }
    if let Some(a) = &m.alibi {
        parts.push(
            if a.symmetric {
                "ALiBi (symmetric)"
            } else {
                "ALiBi"
            }
            .to_string(),
        );
    }
    if m.token_filter.is_some() {
        parts.push("token filter".to_string());
    }
    if let Some(md) = &m.modalities {
        parts.push(format!("{} modalities", md.causal.len()));
    }
    if m.mask_mod.is_some() {
        parts.push("mask_mod".to_string());
    }
    if m.score_mod.is_some() {
        parts.push("score_mod".to_string());
    }
    parts
}

/// `scale 0.3536` (and the softcap when there is one).
pub fn scale(p: &AttentionProblem) -> String {
    let mut s = format!("scale {}", short(p.scale));
    if p.softcap > 0.0 {
        s += &format!(", softcap {}", short(p.softcap));
    }
    s
}

/// A number in at most 4 significant digits: `0.3536`, `30`, `0.0125`, `1.500e-7`.
pub fn short(x: f32) -> String {
    if x == 0.0 || !x.is_finite() {
        return x.to_string();
    }
    if !(1e-4..1e6).contains(&x.abs()) {
        return format!("{x:.3e}");
    }
    let digits = (3 - x.abs().log10().floor() as i32).max(0) as usize;
    let s = format!("{x:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// `[5, 3]`, or the first 8 values and the count.
fn list(values: &[i64]) -> String {
    if values.len() <= 8 {
        return format!("{values:?}");
    }
    let head: Vec<String> = values[..8].iter().map(i64::to_string).collect();
    format!("[{}, ... ({} values)]", head.join(", "), values.len())
}

/// `; queries 0-1, 7 see no key (out = 0)` for the rows of a row-major `rows x Lt` plane that
/// allow no key (fully masked: their output is 0), or nothing; `first` is the query index of
/// the plane's first row. At most four runs of rows are listed, then how many rows more.
pub fn unseeing_rows(allowed: &[bool], lt: usize, first: usize) -> String {
    let rows: Vec<usize> = allowed
        .chunks(lt)
        .enumerate()
        .filter(|(_, row)| !row.contains(&true))
        .map(|(i, _)| first + i)
        .collect();
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for &i in &rows {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == i => *end = i,
            _ => runs.push((i, i)),
        }
    }
    let mut listed: Vec<String> = runs
        .iter()
        .take(4)
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    let shown: usize = runs.iter().take(4).map(|&(a, b)| b - a + 1).sum();
    if shown < rows.len() {
        listed.push(format!("{} more", rows.len() - shown));
    }
    match rows.len() {
        0 => String::new(),
        1 => format!("; query {} sees no key (out = 0)", rows[0]),
        _ => format!("; queries {} see no key (out = 0)", listed.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::{short, unseeing_rows};

    #[test]
    fn short_numbers() {
        assert_eq!(short(0.35355338), "0.3536");
        assert_eq!(short(30.0), "30");
        assert_eq!(short(0.0125), "0.0125");
        assert_eq!(short(1234.6), "1235");
        assert_eq!(short(0.0), "0");
        assert_eq!(short(1.5e-7), "1.500e-7");
        assert_eq!(short(-2.5e9), "-2.500e9");
    }

    /// A plane of `lt = 2` keys whose rows `empty` allow nothing.
    fn plane(rows: usize, empty: &[usize]) -> Vec<bool> {
        (0..rows * 2).map(|e| !empty.contains(&(e / 2))).collect()
    }

    #[test]
    fn rows_that_see_no_key_are_named_in_runs() {
        assert_eq!(unseeing_rows(&plane(3, &[]), 2, 0), "");
        assert_eq!(
            unseeing_rows(&plane(3, &[2]), 2, 0),
            "; query 2 sees no key (out = 0)"
        );
        assert_eq!(
            unseeing_rows(&plane(14, &[0, 1, 3, 5, 6, 7, 9, 11, 12]), 2, 0),
            "; queries 0-1, 3, 5-7, 9, 2 more see no key (out = 0)"
        );
        // One allowed key keeps a row off the list.
        let mut p = plane(2, &[0, 1]);
        p[3] = true;
        assert_eq!(unseeing_rows(&p, 2, 0), "; query 0 sees no key (out = 0)");
        // Rows counted from the first one drawn.
        assert_eq!(unseeing_rows(&p, 2, 5), "; query 5 sees no key (out = 0)");
    }
}
