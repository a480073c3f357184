//! Where a key sits in a core map's TOML text, for messages: a key's line and
//! column (or its nearest present parent's), and the key a byte offset falls
//! in (the key a serde error is about).
//! Must never: parse a core map's values or judge them (`file` and
//! `validate` do); it only reads positions.

use toml::de::{DeTable, DeValue};

use crate::error::{Key, KeyPart, Location};

/// Where `key`'s value is in `text`; for a key the file leaves out, where its
/// nearest present parent is. `None` if the text does not parse.
pub(crate) fn locate(text: &str, key: &Key) -> Option<Location> {
    let root = DeValue::Table(DeTable::parse(text).ok()?.into_inner());
    let mut value = &root;
    let mut span = None;
    for part in key.parts() {
        let next = match part {
            KeyPart::Name(name) => value.get(*name),
            KeyPart::Index(index) => value.get(*index),
        };
        let Some(next) = next else { break };
        span = Some(next.span());
        value = next.get_ref();
    }
    span.map(|span| Location::of_offset(text, span.start))
}

/// The dotted key whose key or value covers byte `offset`, deepest first:
/// names the key a serde error is about (`runtime.park_us: invalid type ...`).
pub(crate) fn key_at_offset(text: &str, offset: usize) -> Option<String> {
    let root = DeTable::parse(text).ok()?;
    key_in_table(root.get_ref(), offset, "")
}

fn key_in_table(table: &DeTable<'_>, offset: usize, prefix: &str) -> Option<String> {
    for (key, value) in table.iter() {
        let name = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        if let Some(deeper) = key_in_value(value.get_ref(), offset, &name) {
            return Some(deeper);
        }
        if key.span().contains(&offset) || value.span().contains(&offset) {
            return Some(name);
        }
    }
    None
}

fn key_in_value(value: &DeValue<'_>, offset: usize, name: &str) -> Option<String> {
    match value {
        DeValue::Table(table) => key_in_table(table, offset, name),
        DeValue::Array(array) => array.iter().enumerate().find_map(|(index, element)| {
            let name = format!("{name}[{index}]");
            key_in_value(element.get_ref(), offset, &name)
                .or_else(|| element.span().contains(&offset).then_some(name))
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_finds_values_and_falls_back_to_parents() {
        let text = "[node]\nname = \"a\"\n\n[[shard]]\ncore = 0\n\n[[shard]]\ncore = 1\npartitions = [1]\n";
        let at = |key: &Key| locate(text, key).map(|l| l.line);
        assert_eq!(at(&Key::at("node").dot("name")), Some(2));
        assert_eq!(at(&Key::shard(1).dot("partitions")), Some(9));
        assert_eq!(at(&Key::shard(1).dot("core")), Some(8));
        // shard[0] has no partitions key: point at the shard itself.
        let parent = at(&Key::shard(0).dot("partitions"));
        assert!(matches!(parent, Some(4..=5)), "{parent:?}");
        assert_eq!(at(&Key::at("commit").dot("interval_ms")), None);
    }

    #[test]
    fn key_at_offset_names_the_deepest_key() {
        let text = "[node]\nname = \"a\"\n\n[[shard]]\ncore = 0\n\n[[shard]]\ncore = \"x\"\n";
        let offset = text.find("\"x\"").expect("present");
        assert_eq!(
            key_at_offset(text, offset).as_deref(),
            Some("shard[1].core")
        );
    }
}
