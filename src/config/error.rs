//! The config error type and how a byte span in the source becomes a
//! `file:line:column: key` location.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// A config file that could not be read, parsed or validated, with where and why.
///
/// Validation goes on past a mistake, so one error may carry the others found
/// in the same file (`more`); displayed, each is a line of its own. The first
/// is the one validation finds first, as when weir reported only one.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file the config came from, as given by the caller.
    pub(crate) file: PathBuf,
    /// 1-based line of the offending text; 0 when there is no position (I/O errors).
    pub line: usize,
    /// 1-based column (in characters) of the offending text; 0 when there is no position.
    pub(crate) column: usize,
    /// Dotted path of the offending key, such as `upstream[0].servers[1]`; may be empty.
    pub key: String,
    /// What is wrong, in words meant for the person editing the file.
    pub message: String,
    /// The underlying I/O error when the file could not be read.
    #[source]
    pub(crate) io: Option<std::io::Error>,
    /// The other mistakes in the same file, in the order validation found
    /// them (section by section, then in file order); empty when this is the only one.
    pub(crate) more: Vec<ConfigError>,
}

impl ConfigError {
    /// An error at byte `span` of `source`, for `key`.
    pub(crate) fn at(
        file: &Path,
        source: &str,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let (line, column) = line_column(source, span.start);
        Self {
            file: file.to_path_buf(),
            line,
            column,
            key: key.into(),
            message: message.into(),
            io: None,
            more: Vec::new(),
        }
    }

    /// An error about the file a config value names (a PEM file), pointed at that value.
    pub(crate) fn at_location(
        location: &super::model::Location,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file: location.file.clone(),
            line: location.line,
            column: location.column,
            key: location.key.clone(),
            message: message.into(),
            io: None,
            more: Vec::new(),
        }
    }

    /// The file could not be read at all.
    pub(crate) fn io(file: &Path, error: std::io::Error) -> Self {
        Self {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("cannot read: {error}"),
            io: Some(error),
            more: Vec::new(),
        }
    }

    /// `first` and `rest` as one error, in that order.
    pub(crate) fn many(first: ConfigError, rest: Vec<ConfigError>) -> Self {
        let mut head = first;
        let mut more = std::mem::take(&mut head.more);
        more.extend(rest.into_iter().flat_map(ConfigError::into_each));
        head.more = more;
        head
    }

    /// This error and the others it carries.
    pub fn each(&self) -> impl Iterator<Item = &ConfigError> {
        std::iter::once(self).chain(&self.more)
    }

    fn into_each(mut self) -> impl Iterator<Item = ConfigError> {
        let more = std::mem::take(&mut self.more);
        std::iter::once(self).chain(more)
    }

    fn fmt_one(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.file.display())?;
        if self.line > 0 {
            write!(f, "{}:{}:", self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, " {}:", self.key)?;
        }
        write!(f, " {}", self.message)
    }

    /// Converts a toml syntax or serde error, deriving the key path from its span.
    pub(crate) fn from_toml(file: &Path, source: &str, error: &toml::de::Error) -> Self {
        let span = error.span().unwrap_or(0..0);
        let message = error.message().trim_end();
        let duplicate = (message == "duplicate key")
            .then(|| duplicate_key_path(source, span.clone()))
            .flatten();
        let key = duplicate.unwrap_or_else(|| {
            let (tree, _) = DeTable::parse_recoverable(source);
            key_path_at(source, &tree, span.start)
        });
        Self::at(file, source, span, key, message)
    }
}

impl fmt::Display for ConfigError {
    /// One line per error: `file:line:column: key: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_one(f)?;
        for other in &self.more {
            writeln!(f)?;
            other.fmt_one(f)?;
        }
        Ok(())
    }
}

/// 1-based line and character column of byte `offset` in `source`.
pub(crate) fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Stands in for a duplicated key so the span-preserving parse keeps it.
const DUPLICATE_MARK: &str = "weir-duplicate-key-mark";

/// The dotted path of the duplicated key written at `span`.
///
/// toml points at the second definition, which the span-preserving parse
/// drops, so nothing there covers the span and the nearest key before it
/// would be named instead. Renamed to a name of its own, the key is kept,
/// and the path found for it is the duplicate's, with its real name put back.
fn duplicate_key_path(source: &str, span: Range<usize>) -> Option<String> {
    let written = source.get(span.clone())?;
    // The key as written may be quoted: a one-key document decodes it.
    let document = format!("{written} = 0");
    let (decoded, errors) = DeTable::parse_recoverable(&document);
    let name = match (decoded.get_ref().iter().next(), errors.is_empty()) {
        (Some((name, _)), true) => name.get_ref().to_string(),
        _ => return None,
    };
    let marked = format!(
        "{}{DUPLICATE_MARK}{}",
        source.get(..span.start)?,
        source.get(span.end..)?
    );
    let (tree, _) = DeTable::parse_recoverable(&marked);
    let path = key_path_at(&marked, &tree, span.start);
    let parent = path.strip_suffix(DUPLICATE_MARK)?;
    Some(format!("{parent}{name}"))
}

/// The dotted path of the deepest key whose key or value covers `offset`.
///
/// toml's serde errors carry a span but not the key path in a form we can
/// read, so the path is recovered from a second, span-preserving parse.
///
/// When nothing covers it (a syntax error cuts a value short), the last key
/// that starts before `offset` is the best guess, unless a table header
/// lies between them: a broken header the parse could not keep is no key's.
fn key_path_at(source: &str, table: &Spanned<DeTable<'_>>, offset: usize) -> String {
    let mut path = String::new();
    walk_table(table.get_ref(), offset, &mut path);
    if path.is_empty() {
        let mut best = (0, String::new());
        last_key_before(table.get_ref(), offset, "", &mut best);
        let between = source.get(best.0..offset).unwrap_or_default();
        let header_between = between
            .lines()
            .skip(1)
            .any(|line| line.trim_start().starts_with('['));
        if !header_between {
            path = best.1;
        }
    }
    path
}

fn last_key_before(table: &DeTable<'_>, offset: usize, prefix: &str, best: &mut (usize, String)) {
    for (key, value) in table.iter() {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        let start = key.span().start;
        if start <= offset && (start >= best.0 || best.1.is_empty()) {
            *best = (start, path.clone());
        }
        last_value_before(value.get_ref(), offset, &path, best);
    }
}

fn last_value_before(value: &DeValue<'_>, offset: usize, path: &str, best: &mut (usize, String)) {
    match value {
        DeValue::Table(table) => last_key_before(table, offset, path, best),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                last_value_before(item.get_ref(), offset, &format!("{path}[{i}]"), best);
            }
        }
        _ => {}
    }
}

fn walk_table(table: &DeTable<'_>, offset: usize, path: &mut String) {
    for (key, value) in table.iter() {
        let in_key = key.span().contains(&offset);
        let in_value = value.span().contains(&offset)
            // An array of tables or a `[table]` header spans only its header, so
            // look inside it too.
            || contains_deep(value, offset);
        if in_key || in_value {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(key.get_ref());
            if !in_key {
                walk_value(value.get_ref(), offset, path);
            }
            return;
        }
    }
}

fn walk_value(value: &DeValue<'_>, offset: usize, path: &mut String) {
    match value {
        DeValue::Table(table) => walk_table(table, offset, path),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if item.span().contains(&offset) || contains_deep(item, offset) {
                    path.push_str(&format!("[{i}]"));
                    walk_value(item.get_ref(), offset, path);
                    return;
                }
            }
        }
        _ => {}
    }
}

/// Whether any key or value below `value` covers `offset`.
fn contains_deep(value: &Spanned<DeValue<'_>>, offset: usize) -> bool {
    match value.get_ref() {
        DeValue::Table(table) => table.iter().any(|(k, v)| {
            k.span().contains(&offset) || v.span().contains(&offset) || contains_deep(v, offset)
        }),
        DeValue::Array(items) => items
            .iter()
            .any(|v| v.span().contains(&offset) || contains_deep(v, offset)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_lines_and_characters() {
        let src = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_column(src, 0), (1, 1));
        assert_eq!(line_column(src, 6), (2, 1));
        // 'é' is two bytes but one column.
        assert_eq!(line_column(src, 9), (2, 3));
        assert_eq!(line_column(src, 1000), (3, 1));
        // Inside a multi-byte character: falls back to its start.
        assert_eq!(line_column(src, 8), (2, 2));
    }

    #[test]
    fn display_has_file_line_column_key_message() {
        let e = ConfigError::at(
            Path::new("weir.toml"),
            "\n\nx = 1",
            2..3,
            "server.listen",
            "bad",
        );
        assert_eq!(e.to_string(), "weir.toml:3:1: server.listen: bad");
    }

    #[test]
    fn io_error_display_has_no_position() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let e = ConfigError::io(Path::new("/etc/weir/weir.toml"), io);
        assert_eq!(e.to_string(), "/etc/weir/weir.toml: cannot read: gone");
        assert_eq!((e.line, e.column), (0, 0));
    }

    #[test]
    fn many_errors_are_one_line_each_in_the_order_found() {
        let src = "a = 1\nb = 2\nc = 3\n";
        let at = |line: usize, key: &str| {
            let start = src.find(&format!("{key} =")).unwrap_or(0);
            let e = ConfigError::at(Path::new("w.toml"), src, start..start + 1, key, "bad");
            assert_eq!(e.line, line);
            e
        };
        let nested = ConfigError::many(at(3, "c"), vec![at(1, "a")]);
        let e = ConfigError::many(at(2, "b"), vec![nested]);
        assert_eq!(
            e.to_string(),
            "w.toml:2:1: b: bad\nw.toml:3:1: c: bad\nw.toml:1:1: a: bad"
        );
        assert_eq!(e.each().count(), 3);
        assert!(e.more.iter().all(|m| m.more.is_empty()));
    }

    #[test]
    fn key_path_is_found_from_offset() {
        let src = "[server]\nlisten = [\"a\", { addr = \"b\", tls = 1 }]\n[[upstream]]\nname = \"x\"\n[[upstream]]\nname = \"y\"\nbogus = 1\n";
        let (tree, _) = DeTable::parse_recoverable(src);
        let at = |needle: &str| key_path_at(src, &tree, src.find(needle).unwrap_or(0));
        assert_eq!(at("tls"), "server.listen[1].tls");
        assert_eq!(at("\"a\""), "server.listen[0]");
        assert_eq!(at("bogus"), "upstream[1].bogus");
        assert_eq!(at("\"x\""), "upstream[0].name");
    }
}
