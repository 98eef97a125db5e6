//! Attention options as a case file's metadata or the command line gives them: each one may be
//! absent, and the command line overrides the file.

use std::collections::HashMap;

use anyhow::{anyhow, Result};
use wgattn::{AttentionOptions, Layout, Returns};

/// The metadata keys [`OptionValues::from_metadata`] reads.
pub const OPTION_KEYS: [&str; 8] = [
    "causal",
    "causal_offset",
    "scale",
    "softcap",
    "window_left",
    "window_right",
    "layout",
    "return",
];

/// Every option of `SEMANTICS.md`'s case files; `None` = not given here.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OptionValues {
    pub causal: Option<bool>,
    pub causal_offset: Option<i64>,
    pub scale: Option<f32>,
    pub softcap: Option<f32>,
    pub window_left: Option<i64>,
    pub window_right: Option<i64>,
    pub layout: Option<Layout>,
    pub returns: Option<Returns>,
}

impl OptionValues {
    /// Reads the known keys of a case file's metadata ([`OPTION_KEYS`]). Other keys (a
    /// description, a producer) are ignored here (`Case::read` warns of them); a known key
    /// whose value does not parse is an error naming both.
    pub fn from_metadata(metadata: Option<&HashMap<String, String>>) -> Result<Self> {
        let Some(meta) = metadata else {
            return Ok(Self::default());
        };
        Ok(OptionValues {
            causal: key(meta, "causal", parse_bool)?,
            causal_offset: key(meta, "causal_offset", parse_int)?,
            scale: key(meta, "scale", parse_float)?,
            softcap: key(meta, "softcap", parse_float)?,
            window_left: key(meta, "window_left", parse_int)?,
            window_right: key(meta, "window_right", parse_int)?,
            layout: key(meta, "layout", parse_layout)?,
            returns: key(meta, "return", parse_returns)?,
        })
    }

    /// Each value of `self`, or `fallback`'s where `self` has none.
    pub fn or(self, fallback: OptionValues) -> OptionValues {
        OptionValues {
            causal: self.causal.or(fallback.causal),
            causal_offset: self.causal_offset.or(fallback.causal_offset),
            scale: self.scale.or(fallback.scale),
            softcap: self.softcap.or(fallback.softcap),
            window_left: self.window_left.or(fallback.window_left),
            window_right: self.window_right.or(fallback.window_right),
            layout: self.layout.or(fallback.layout),
            returns: self.returns.or(fallback.returns),
        }
    }

    /// The library's options: the values given, the defaults for the rest. Range checks
    /// (finite scale, window sizes, ...) are the library's.
    pub fn resolve(&self) -> AttentionOptions {
        let d = AttentionOptions::default();
        AttentionOptions {
            scale: self.scale.or(d.scale),
            softcap: self.softcap.unwrap_or(d.softcap),
            causal: self.causal.unwrap_or(d.causal),
            causal_offset: self.causal_offset.or(d.causal_offset),
            window_left: self.window_left.unwrap_or(d.window_left),
            window_right: self.window_right.unwrap_or(d.window_right),
            layout: self.layout.unwrap_or(d.layout),
            returns: self.returns.unwrap_or(d.returns),
            ..d
        }
    }
}

/// The structured masks as command-line flags (`wgattn run`, `heatmap`, `mask`); each one
/// given overrides the case file's metadata.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct MaskFlags {
    /// Causal mask; `--causal=false` turns off a file's `causal=true`.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = parse_bool)]
    pub causal: Option<bool>,
    /// Replaces the derived causal/window offset (e.g. Lt - Lq for bottom-right alignment).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub causal_offset: Option<i64>,
    /// Sliding window, keys to the left of the diagonal; -1 = unbounded.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub window_left: Option<i64>,
    /// Sliding window, keys to the right of the diagonal; -1 = unbounded.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub window_right: Option<i64>,
}

/// Every option of a case file but `return`, as command-line flags.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct OptionFlags {
    #[command(flatten)]
    pub masks: MaskFlags,
    /// Multiplies q·kᵀ (default 1/sqrt(D)).
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    pub scale: Option<f32>,
    /// Softcap c: s = c·tanh(s/c); 0 = none.
    #[arg(long, value_name = "C", allow_negative_numbers = true)]
    pub softcap: Option<f32>,
    /// Memory order of q, k, v and out: bhsd or bshd.
    #[arg(long, value_name = "LAYOUT", value_parser = parse_layout)]
    pub layout: Option<Layout>,
}

impl MaskFlags {
    /// The values given (the others `None`).
    pub fn values(&self) -> OptionValues {
        OptionValues {
            causal: self.causal,
            causal_offset: self.causal_offset,
            window_left: self.window_left,
            window_right: self.window_right,
            ..Default::default()
        }
    }
}

impl OptionFlags {
    /// The values given (the others `None`), with `returns`.
    pub fn values(&self, returns: Option<Returns>) -> OptionValues {
        OptionValues {
            scale: self.scale,
            softcap: self.softcap,
            layout: self.layout,
            returns,
            ..self.masks.values()
        }
    }
}

fn key<T>(
    meta: &HashMap<String, String>,
    name: &str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<Option<T>> {
    meta.get(name)
        .map(|value| parse(value).map_err(|why| anyhow!("metadata `{name}` = {value:?}: {why}")))
        .transpose()
}

/// `true` or `false` (any case; also `1` or `0`).
pub fn parse_bool(s: &str) -> Result<bool, String> {
    // Case files come from many writers: Python's str(True) is "True", some write 1/0.
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// A decimal integer (may be negative).
pub fn parse_int(s: &str) -> Result<i64, String> {
    s.trim()
        .parse()
        .map_err(|_| "expected an integer".to_string())
}

/// A decimal number.
pub fn parse_float(s: &str) -> Result<f32, String> {
    s.trim()
        .parse()
        .map_err(|_| "expected a number".to_string())
}

/// `bhsd` or `bshd`.
pub fn parse_layout(s: &str) -> Result<Layout, String> {
    s.trim()
        .parse()
        .map_err(|_| "expected bhsd or bshd".to_string())
}

/// A comma-separated list of `scores`, `logits`, `probs` (empty = none).
pub fn parse_returns(s: &str) -> Result<Returns, String> {
    s.parse().map_err(|_| {
        "expected a comma-separated list of scores, logits, probs (or nothing)".to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::{parse_bool, OptionValues, OPTION_KEYS};

    /// Each listed key is read: a value no option accepts is an error naming the key (so
    /// the list the unknown-key warning uses is the list that is read).
    #[test]
    fn every_listed_key_is_read() {
        for key in OPTION_KEYS {
            let meta = [(key.to_string(), "?".to_string())].into_iter().collect();
            let err = OptionValues::from_metadata(Some(&meta)).unwrap_err();
            assert!(
                err.to_string().contains(&format!("`{key}`")),
                "{key}: {err}"
            );
        }
    }

    #[test]
    fn booleans_from_any_writer() {
        for (s, want) in [
            ("true", true),
            ("True", true),
            ("1", true),
            ("FALSE", false),
            ("0", false),
        ] {
            assert_eq!(parse_bool(s), Ok(want), "{s}");
        }
        assert!(parse_bool("maybe").is_err());
        assert!(parse_bool("yes").is_err());
    }
}
