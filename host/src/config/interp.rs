//! `${VAR}` and `${VAR:-default}` environment interpolation (Vector's
//! convention), applied to the raw text so errors keep their line numbers.
//! `$$` is a literal `$`. Comment lines are left alone.

use super::error::ConfigError;
use std::path::Path;

pub fn interpolate(
    file: &Path,
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<String, Vec<ConfigError>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    for (n, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let tail = &rest[i..];
            if let Some(after) = tail.strip_prefix("$$") {
                out.push('$');
                rest = after;
            } else if let Some(body) = tail.strip_prefix("${") {
                let Some(end) = body.find('}') else {
                    errors.push(err(file, text, n, format!("unterminated `${{` in {:?}", line.trim())));
                    out.push_str(tail);
                    rest = "";
                    continue;
                };
                let expr = &body[..end];
                let (name, default) = match expr.split_once(":-") {
                    Some((name, d)) => (name, Some(d)),
                    None => (expr, None),
                };
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    errors.push(err(file, text, n, format!("`${{{expr}}}` is not a variable name (letters, digits, _)")));
                } else {
                    match (env(name).filter(|v| !v.is_empty()), default) {
                        (Some(v), _) if v.contains('\n') => {
                            errors.push(err(file, text, n, format!("environment variable {name} contains a newline")))
                        }
                        (Some(v), _) => out.push_str(&v),
                        (None, Some(d)) => out.push_str(d),
                        (None, None) => errors.push(err(
                            file,
                            text,
                            n,
                            format!("environment variable {name} is not set; set it or write ${{{name}:-default}}"),
                        )),
                    }
                }
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = &tail[1..];
            }
        }
        out.push_str(rest);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn err(file: &Path, text: &str, n: usize, message: String) -> ConfigError {
    ConfigError { file: file.to_path_buf(), line: Some(n + 1), path: key_path_of_line(text, n), message }
}

/// The dotted key path a line assigns (`[sources.trips]` + `path = ...` →
/// `sources.trips.path`). The text cannot be parsed yet (interpolation comes
/// first), so this reads headers and keys line by line; good enough to point
/// at the right key, and empty when unsure.
fn key_path_of_line(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let key_of = |l: &str| -> Option<String> {
        let (k, _) = l.split_once('=')?;
        let k = k.trim().trim_matches('"');
        (!k.is_empty() && !k.starts_with('#') && !k.starts_with('[')).then(|| k.to_string())
    };
    let table = lines[..n.min(lines.len())].iter().rev().find_map(|l| {
        let t = l.trim();
        let inner = t.strip_prefix("[[").and_then(|t| t.strip_suffix("]]")).or_else(|| t.strip_prefix('[').and_then(|t| t.strip_suffix(']')))?;
        Some(inner.trim().to_string())
    });
    let key = lines.get(n).and_then(|l| key_of(l));
    match (table, key) {
        (Some(t), Some(k)) => format!("{t}.{k}"),
        (None, Some(k)) => k,
        (Some(t), None) => t,
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> Result<String, Vec<ConfigError>> {
        interpolate(Path::new("p.toml"), text, |k| (k == "SET").then(|| "v".to_string()))
    }

    #[test]
    fn substitutes_defaults_and_escapes() {
        assert_eq!(run("a = \"${SET}/${UNSET:-d}/$$x\"\n").unwrap(), "a = \"v/d/$x\"\n");
        assert_eq!(run("# ${UNSET}\n").unwrap(), "# ${UNSET}\n");
    }

    #[test]
    fn missing_variable_names_the_line() {
        let e = run("a = 1\n[sources.x]\nb = \"${UNSET}\"\n").unwrap_err();
        assert_eq!(e[0].line, Some(3));
        assert_eq!(e[0].path, "sources.x.b");
        assert!(e[0].message.contains("UNSET"), "{}", e[0].message);
    }
}
