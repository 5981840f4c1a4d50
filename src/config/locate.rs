//! Finds the line of a dotted key (`rollout.max_error_rate`) in TOML text,
//! so validation errors can point at the line to fix.

use toml::de::{DeTable, DeValue};

/// 1-based line of `key` (array indices like `shadow.routes[2]` resolve to
/// the array), or of the deepest table on the way when the key itself is
/// absent; `None` when even the first table is not in the file.
pub fn line_of(text: &str, key: &str) -> Option<usize> {
    let root = DeTable::parse(text).ok()?;
    let mut table = root.get_ref();
    let mut found = None;
    for part in key.split('.') {
        let name = part.split('[').next().unwrap_or(part);
        let Some((k, v)) = table.get_key_value(name) else {
            break;
        };
        found = Some(k.span().start);
        match v.get_ref() {
            DeValue::Table(inner) => table = inner,
            _ => break,
        }
    }
    found.map(|offset| text[..offset].matches('\n').count() + 1)
}
