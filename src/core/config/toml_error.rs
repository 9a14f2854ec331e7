//! Errors of a config file that TOML cannot read (syntax, a wrong type, an unknown
//! key): the file, line and column, and the dotted key where it can be read off the
//! line.

use crate::core::error::{BridgeError, ErrorClass};
use std::path::Path;

/// A TOML syntax, type or unknown-key error, with the file, line, column and (where it
/// can be read off the line) the key.
pub(super) fn toml_error(err: toml::de::Error, text: &str, path: &Path) -> BridgeError {
    let file = path.display().to_string();
    let message = err.message();
    let Some(span) = err.span().filter(|s| text.get(s.clone()).is_some()) else {
        return BridgeError::new(ErrorClass::Config, format!("{file}: {message}"))
            .with_detail("source", file)
            .with_source(err);
    };
    let (line, column) = line_column(text, span.start);
    let source = format!("{file} line {line} column {column}");
    let error = match key_at(text, span.start) {
        Some(found) => {
            let value = &text[span];
            let shown = found.on_value
                && !value.trim().is_empty()
                && value.len() <= 80
                && !value.contains('\n');
            let value_part = if shown {
                format!(" = {value}")
            } else {
                String::new()
            };
            BridgeError::new(
                ErrorClass::Config,
                format!("{}{value_part} (from {source}): {message}", found.key),
            )
            .with_detail("key", found.key)
        }
        None => BridgeError::new(ErrorClass::Config, format!("{source}: {message}")),
    };
    error.with_detail("source", file).with_source(err)
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    (line, before[line_start..].chars().count() + 1)
}

/// A `key = value` line's dotted key, read off the text.
struct KeyAt {
    key: String,
    /// Whether the offset lies in the value rather than the key.
    on_value: bool,
}

/// The full key of the `key = value` line holding byte `offset`, prefixed with the
/// table header above it; `None` where the line has no `=`.
fn key_at(text: &str, offset: usize) -> Option<KeyAt> {
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = &text[line_start..line_end];
    let eq = line.find('=')?;
    let key = line[..eq].trim();
    if key.is_empty() || key.starts_with('[') || key.starts_with('#') {
        return None;
    }
    let key = match table_above(&text[..line_start]) {
        Some(table) => format!("{table}.{key}"),
        None => key.to_owned(),
    };
    Some(KeyAt {
        key,
        on_value: offset > line_start + eq,
    })
}

/// The name of the last `[table]` header in `text`.
fn table_above(text: &str) -> Option<&str> {
    let header = text
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))?;
    let inner = header.trim_start_matches('[');
    Some(inner[..inner.find(']')?].trim())
}
