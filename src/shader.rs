//! A small WGSL preprocessor: `#import NAME` pulls in another shader file, and
//! `#ifdef X` / `#ifndef X` / `#else` / `#endif` keep or drop lines by the variant's defines.
//! Directives must stand alone on their line (leading spaces allowed).

/// Expands `source`: imports from `imports` (by name), conditionals by `defines`.
/// Errors name the line and the problem (unbalanced conditionals, unknown import).
pub(crate) fn preprocess(
    source: &str,
    imports: &[(&str, &str)],
    defines: &[&str],
) -> Result<String, String> {
    let mut out = String::with_capacity(source.len() * 2);
    expand(source, imports, defines, &mut out, 0)?;
    Ok(out)
}

fn expand(
    source: &str,
    imports: &[(&str, &str)],
    defines: &[&str],
    out: &mut String,
    depth: usize,
) -> Result<(), String> {
    if depth > 8 {
        return Err("#import nested more than 8 deep".into());
    }
    // One entry per open conditional: (this branch taken, any branch taken so far).
    let mut stack: Vec<(bool, bool)> = Vec::new();
    let active = |stack: &[(bool, bool)]| stack.iter().all(|&(on, _)| on);
    for (n, line) in source.lines().enumerate() {
        let t = line.trim_start();
        let mut words = t.split_whitespace();
        match words.next() {
            Some(d @ ("#ifdef" | "#ifndef")) => {
                let name = words
                    .next()
                    .ok_or_else(|| format!("line {}: {d} without a name", n + 1))?;
                let on = defines.contains(&name) == (d == "#ifdef");
                stack.push((on, on));
            }
            Some("#else") => {
                let top = stack
                    .last_mut()
                    .ok_or_else(|| format!("line {}: #else without #ifdef", n + 1))?;
                *top = (!top.1, true);
            }
            Some("#endif") => {
                stack
                    .pop()
                    .ok_or_else(|| format!("line {}: #endif without #ifdef", n + 1))?;
            }
            Some("#import") if active(&stack) => {
                let name = words
                    .next()
                    .ok_or_else(|| format!("line {}: #import without a name", n + 1))?;
                let src = imports
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, s)| *s)
                    .ok_or_else(|| format!("line {}: unknown import {name}", n + 1))?;
                expand(src, imports, defines, out, depth + 1)?;
            }
            _ if active(&stack) => {
                out.push_str(line);
                out.push('\n');
            }
            _ => {}
        }
    }
    if stack.is_empty() {
        Ok(())
    } else {
        Err(format!("{} #ifdef left open", stack.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::preprocess;

    #[test]
    fn conditionals_nest_and_else_flips() {
        let src = "a\n#ifdef X\nb\n#ifndef Y\nc\n#else\nd\n#endif\n#else\ne\n#endif\nf\n";
        assert_eq!(preprocess(src, &[], &["X"]).unwrap(), "a\nb\nc\nf\n");
        assert_eq!(preprocess(src, &[], &["X", "Y"]).unwrap(), "a\nb\nd\nf\n");
        assert_eq!(preprocess(src, &[], &[]).unwrap(), "a\ne\nf\n");
    }

    #[test]
    fn imports_are_expanded_with_the_same_defines() {
        let lib = "#ifdef X\nx\n#endif\n";
        let src = "#import lib\nmain\n";
        assert_eq!(
            preprocess(src, &[("lib", lib)], &["X"]).unwrap(),
            "x\nmain\n"
        );
        assert_eq!(preprocess(src, &[("lib", lib)], &[]).unwrap(), "main\n");
    }

    #[test]
    fn malformed_sources_are_errors() {
        assert!(preprocess("#ifdef X\n", &[], &[]).is_err());
        assert!(preprocess("#endif\n", &[], &[]).is_err());
        assert!(preprocess("#else\n", &[], &[]).is_err());
        assert!(preprocess("#import nope\n", &[], &[]).is_err());
        assert!(preprocess("#import a\n", &[("a", "#import a\n")], &[]).is_err());
    }
}

/// Replaces each `{{NAME}}` by its value; a placeholder left without a value is an error.
pub(crate) fn substitute(source: &str, values: &[(&str, u32)]) -> Result<String, String> {
    let mut out = source.to_string();
    for (name, value) in values {
        out = out.replace(&format!("{{{{{name}}}}}"), &value.to_string());
    }
    match out.find("{{") {
        Some(at) => {
            let end = out[at..].find("}}").map_or(out.len(), |e| at + e + 2);
            Err(format!("no value for {}", &out[at..end]))
        }
        None => Ok(out),
    }
}

#[cfg(test)]
mod substitute_tests {
    use super::substitute;

    #[test]
    fn placeholders_are_replaced_or_reported() {
        assert_eq!(substitute("a {{X}}u {{X}}", &[("X", 4)]).unwrap(), "a 4u 4");
        assert_eq!(
            substitute("{{Y}}", &[("X", 4)]).unwrap_err(),
            "no value for {{Y}}"
        );
    }
}
