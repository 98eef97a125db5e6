//! `--tuning key=value,...`: the engine's choices ([`wgattn::Tuning`]) from the command line, so
//! a case can be run through one kernel variant (small tiles, the other decode layout, the
//! fallbacks without shader-f16 or subgroups, forced splits) and checked like any other.

use wgattn::Tuning;

/// `--tuning`'s help as a literal, the same for every subcommand that takes it, which adds
/// what is its own with `concat!`; `help!(keys)` is the list of keys alone.
macro_rules! help {
    (keys) => {
        "rows-per-invocation=N, keys-per-tile=N, decode-max-q=N, decode-keys-per-split=N, \
         decode-invocations=N, decode-rows=N, decode-layout=subgroup-keys|key-per-invocation, \
         shader-f16=on|off, subgroups=on|off, mapped-uploads=on|off, opaque-loops=on|off, \
         max-binding-bytes=N, max-loop-trips=N"
    };
    () => {
        concat!(
            "The engine's choices, comma-separated key=value (any subset of: ",
            $crate::cli::tuning::help!(keys),
            "), to run one kernel variant; every tuning computes the same attention (within \
             rounding)."
        )
    };
}
pub(crate) use help;

/// What `--tuning` takes, for its errors.
pub const KEYS: &str = help!(keys);

/// Parses a comma-separated list of `key=value`; keys not given stay the engine's choice.
pub fn parse_tuning(text: &str) -> Result<Tuning, String> {
    let mut tuning = Tuning::AUTO;
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| format!("`{item}` is not key=value; the keys: {KEYS}"))?;
        let (key, value) = (key.trim(), value.trim());
        let count = || -> Result<u32, String> {
            value
                .parse::<u32>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{key}={value}: expected a whole number above 0"))
        };
        let switch = || -> Result<bool, String> {
            match value {
                "on" | "true" => Ok(true),
                "off" | "false" => Ok(false),
                _ => Err(format!("{key}={value}: expected on or off")),
            }
        };
        let big = |what: &str| -> Result<u64, String> {
            value
                .parse::<u64>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{key}={value}: expected {what} above 0"))
        };
        match key {
            "rows-per-invocation" => tuning.rows_per_invocation = Some(count()?),
            "keys-per-tile" => tuning.keys_per_tile = Some(count()?),
            "decode-max-q" => tuning.decode_max_q = Some(count()? as usize),
            "decode-keys-per-split" => tuning.decode_keys_per_split = Some(count()?),
            "decode-invocations" => tuning.decode_invocations = Some(count()?),
            "decode-rows" => tuning.decode_rows = Some(count()?),
            "decode-layout" => {
                tuning.decode_subgroup_keys = Some(match value {
                    "subgroup-keys" => true,
                    "key-per-invocation" => false,
                    _ => {
                        return Err(format!(
                            "decode-layout={value}: expected subgroup-keys or key-per-invocation"
                        ))
                    }
                })
            }
            "shader-f16" => tuning.shader_f16 = Some(switch()?),
            "subgroups" => tuning.subgroups = Some(switch()?),
            "mapped-uploads" => tuning.mapped_uploads = Some(switch()?),
            "opaque-loops" => tuning.opaque_loops = Some(switch()?),
            "max-binding-bytes" => tuning.max_binding_bytes = Some(big("a byte count")?),
            "max-loop-trips" => tuning.max_loop_trips = Some(big("a trip count")?),
            _ => return Err(format!("unknown tuning key `{key}`; the keys: {KEYS}")),
        }
    }
    Ok(tuning)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_key() {
        let t = parse_tuning(
            "rows-per-invocation=2, keys-per-tile=8,decode-max-q=17,decode-keys-per-split=48,\
             decode-invocations=128,decode-rows=3,decode-layout=subgroup-keys,shader-f16=off,subgroups=off,mapped-uploads=on,\
             opaque-loops=on,max-binding-bytes=4096,max-loop-trips=5000",
        )
        .unwrap();
        assert_eq!(t.rows_per_invocation, Some(2));
        assert_eq!(t.keys_per_tile, Some(8));
        assert_eq!(t.decode_max_q, Some(17));
        assert_eq!(t.decode_keys_per_split, Some(48));
        assert_eq!(t.decode_invocations, Some(128));
        assert_eq!(t.decode_rows, Some(3));
        assert_eq!(t.decode_subgroup_keys, Some(true));
        assert_eq!(t.shader_f16, Some(false));
        assert_eq!(t.subgroups, Some(false));
        assert_eq!(t.mapped_uploads, Some(true));
        assert_eq!(t.opaque_loops, Some(true));
        assert_eq!(t.max_binding_bytes, Some(4096));
        assert_eq!(t.max_loop_trips, Some(5000));
        let t = parse_tuning("decode-layout=key-per-invocation").unwrap();
        assert_eq!(t.decode_subgroup_keys, Some(false));
        assert_eq!(t.keys_per_tile, None);
        assert_eq!(parse_tuning("").unwrap().rows_per_invocation, None);
    }

    #[test]
    fn rejects_bad_items() {
        for (text, words) in [
            ("keys-per-tile", "not key=value"),
            ("keys-per-tile=0", "above 0"),
            ("keys-per-tile=-4", "above 0"),
            ("shader-f16=maybe", "on or off"),
            ("decode-layout=rows", "subgroup-keys or key-per-invocation"),
            ("max-binding-bytes=0", "above 0"),
            ("max-loop-trips=x", "a trip count above 0"),
            ("tile=8", "unknown tuning key `tile`"),
        ] {
            let e = parse_tuning(text).unwrap_err();
            assert!(e.contains(words), "{text}: {e}");
        }
    }
}
