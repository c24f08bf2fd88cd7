//! Finds the line of a key path in a TOML document, so errors found after
//! deserialisation (a missing input, a cycle, a bad plugin) still point at
//! the right line.

use toml::de::{DeTable, DeValue};

/// Byte offset of the deepest key of `path` that exists in `text`.
pub fn offset_of(text: &str, path: &[&str]) -> Option<usize> {
    let root = DeTable::parse(text).ok()?;
    let mut table = root.get_ref();
    let mut found = None;
    for (depth, segment) in path.iter().enumerate() {
        let (key, value) = table.iter().find(|(k, _)| k.get_ref().as_ref() == *segment)?;
        found = Some(key.span().start);
        match value.get_ref() {
            DeValue::Table(t) => table = t,
            DeValue::Array(a) => {
                // `inputs[2]`-style paths: point at the element.
                if let Some(Ok(i)) = path.get(depth + 1).map(|s| s.parse::<usize>()) {
                    return a.get(i).map(|v| v.span().start).or(found);
                }
                return found;
            }
            _ => return found,
        }
    }
    found
}

/// True when `path` names a table of `text` that has the key `key`.
pub fn table_has_key(text: &str, path: &[&str], key: &str) -> bool {
    let Ok(root) = DeTable::parse(text) else {
        return false;
    };
    let mut table = root.get_ref();
    for segment in path {
        match table
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == *segment)
            .map(|(_, v)| v.get_ref())
        {
            Some(DeValue::Table(t)) => table = t,
            _ => return false,
        }
    }
    table.iter().any(|(k, _)| k.get_ref().as_ref() == key)
}

/// True when the key path is written in `text` (not left to its default).
pub fn has_key(text: &str, path: &[&str]) -> bool {
    match path.split_last() {
        Some((key, parent)) => table_has_key(text, parent, key),
        None => true,
    }
}
