//! Every key the raw serde structs accept appears in `config/weir.toml`
//! (commented or not), so the shipped file and the parser cannot drift apart.
//!
//! The keys come from serde itself, not from a list kept by hand: a tracing
//! `Deserializer` walks `RawConfig` and records the field list serde hands to
//! `deserialize_struct` for every struct it meets, then feeds each field a
//! value so that nested structs are met too. A field added to any raw struct,
//! or a new struct under any of them, shows up without touching this test.
//!
//! Values read with `deserialize_any` (`AddrOr`, `OneOrMany`, `RawListen`,
//! the untagged `RawSize`) do not say what they expect. The walk offers them a
//! table with one unknown key; a struct that denies unknown fields (all raw
//! structs do) answers with its field list, which the next pass uses. Each
//! pass that fails has learned one such shape, so a few passes finish.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::rc::Rc;

use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};
use serde::forward_to_deserialize_any;
use serde::Deserialize;

use super::raw::RawConfig;

/// The key offered to a `deserialize_any` value to make it name its fields.
const PROBE: &str = "\u{1}probe";

/// What a `deserialize_any` value turned out to want.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// A table with these keys.
    Table(&'static [&'static str]),
    /// Not a table: it gets an empty string.
    Scalar,
}

/// What the passes learn; shared by every tracer of a walk.
#[derive(Debug, Default)]
struct Walk {
    /// Dotted paths of every struct field met, list indices left out:
    /// `upstream.servers.weight`.
    keys: BTreeSet<String>,
    /// The shape of each `deserialize_any` value met so far, by path.
    shapes: BTreeMap<String, Shape>,
}

/// The dotted path of every key a `RawConfig` accepts.
fn accepted_keys() -> BTreeSet<String> {
    let walk = Rc::new(RefCell::new(Walk::default()));
    for _ in 0..64 {
        let known = walk.borrow().shapes.len();
        walk.borrow_mut().keys.clear();
        let tracer = Tracer {
            path: String::new(),
            walk: walk.clone(),
        };
        match RawConfig::deserialize(tracer) {
            Ok(_) => return std::mem::take(&mut walk.borrow_mut().keys),
            Err(e) => assert!(
                walk.borrow().shapes.len() > known,
                "the walk learned nothing from: {e}"
            ),
        }
    }
    panic!("the walk did not finish in 64 passes");
}

/// A deserializer that hands every visitor a plausible value and notes the
/// struct fields on the way.
#[derive(Debug, Clone)]
struct Tracer {
    path: String,
    walk: Rc<RefCell<Walk>>,
}

impl Tracer {
    fn child(&self, key: &str) -> Self {
        let path = if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        };
        Self {
            path,
            walk: self.walk.clone(),
        }
    }

    fn record(&self, fields: &[&str]) {
        let mut walk = self.walk.borrow_mut();
        for field in fields {
            walk.keys.insert(self.child(field).path);
        }
    }
}

#[derive(Debug)]
struct TraceError {
    message: String,
    /// Set when a struct refused the probe key: the keys it accepts.
    fields: Option<&'static [&'static str]>,
}

impl de::Error for TraceError {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Self {
            message: message.to_string(),
            fields: None,
        }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        Self {
            message: format!("unknown field `{}`", field.escape_debug()),
            fields: Some(expected),
        }
    }
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TraceError {}

impl<'de> Deserializer<'de> for Tracer {
    type Error = TraceError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        let shape = self.walk.borrow().shapes.get(&self.path).copied();
        match shape {
            Some(Shape::Table(fields)) => {
                self.record(fields);
                visitor.visit_map(Fields::new(self, fields))
            }
            Some(Shape::Scalar) => visitor.visit_borrowed_str(""),
            None => {
                let result = visitor.visit_map(Probe { asked: false });
                let learned = match &result {
                    Err(TraceError {
                        fields: Some(fields),
                        ..
                    }) => Shape::Table(fields),
                    _ => Shape::Scalar,
                };
                self.walk
                    .borrow_mut()
                    .shapes
                    .insert(self.path.clone(), learned);
                result
            }
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        // `$`-names are serde-private wrappers (toml's `Spanned`): their
        // fields are not config keys and their value sits at the same path.
        if name.starts_with('$') {
            return visitor.visit_map(Fields::transparent(self, fields));
        }
        self.record(fields);
        visitor.visit_map(Fields::new(self, fields))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_some(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_seq(One(Some(self)))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        // The words of a closed set are values, not keys: any one will do.
        let first = variants
            .first()
            .ok_or_else(|| de::Error::custom("an enum without variants"))?;
        visitor.visit_enum(IntoDeserializer::<TraceError>::into_deserializer(*first))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_bool(false)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_i64(0)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_u64(0)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_borrowed_str("")
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_borrowed_str("")
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        // A table of the user's own keys (`set = { NAME = "value" }`): they
        // are not config keys, so an empty table will do.
        visitor.visit_map(Probe { asked: true })
    }

    forward_to_deserialize_any! {
        i8 i16 i32 i128 u8 u16 u32 u128 f32 f64 char bytes byte_buf unit
        unit_struct newtype_struct tuple tuple_struct identifier ignored_any
    }
}

/// A struct's fields as a table, each value traced one level down.
struct Fields {
    tracer: Tracer,
    fields: &'static [&'static str],
    next: usize,
    /// Values stay at the struct's own path (a serde-private wrapper).
    transparent: bool,
}

impl Fields {
    fn new(tracer: Tracer, fields: &'static [&'static str]) -> Self {
        Self {
            tracer,
            fields,
            next: 0,
            transparent: false,
        }
    }

    fn transparent(tracer: Tracer, fields: &'static [&'static str]) -> Self {
        Self {
            transparent: true,
            ..Self::new(tracer, fields)
        }
    }
}

impl<'de> MapAccess<'de> for Fields {
    type Error = TraceError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, TraceError> {
        match self.fields.get(self.next) {
            Some(field) => seed.deserialize(Key(field)).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, TraceError> {
        let field = self
            .fields
            .get(self.next)
            .ok_or_else(|| de::Error::custom("a value asked for after the last key"))?;
        self.next += 1;
        if self.transparent {
            seed.deserialize(self.tracer.clone())
        } else {
            seed.deserialize(self.tracer.child(field))
        }
    }
}

/// A table with one key no struct accepts, and no value worth tracing.
struct Probe {
    asked: bool,
}

impl<'de> MapAccess<'de> for Probe {
    type Error = TraceError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, TraceError> {
        if std::mem::replace(&mut self.asked, true) {
            return Ok(None);
        }
        seed.deserialize(Key(PROBE)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, TraceError> {
        seed.deserialize(IntoDeserializer::<TraceError>::into_deserializer(()))
    }
}

/// A table key.
struct Key(&'static str);

impl<'de> Deserializer<'de> for Key {
    type Error = TraceError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_borrowed_str(self.0)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

/// A list of one traced element.
struct One(Option<Tracer>);

impl<'de> SeqAccess<'de> for One {
    type Error = TraceError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, TraceError> {
        self.0
            .take()
            .map(|tracer| seed.deserialize(tracer))
            .transpose()
    }
}

/// `config/weir.toml` cut into sections at its table headers, commented or not.
struct Sections<'a> {
    /// Each header's dotted name (`""` before the first) and the text under it.
    sections: Vec<(&'a str, String)>,
}

impl<'a> Sections<'a> {
    fn of(doc: &'a str) -> Self {
        let mut sections = vec![("", String::new())];
        for line in doc.lines() {
            let text = line.trim_start_matches(|c: char| c == '#' || c.is_whitespace());
            match header(text) {
                Some(name) => sections.push((name, String::new())),
                None => {
                    if let Some((_, body)) = sections.last_mut() {
                        body.push_str(text);
                        body.push('\n');
                    }
                }
            }
        }
        Self { sections }
    }

    /// Whether `path` (`upstream.health_check.host`) is in the file: as a
    /// header of its own, or as `key =` under the nearest header above it.
    fn mentions(&self, path: &str) -> bool {
        if self.sections.iter().any(|(name, _)| *name == path) {
            return true;
        }
        let (parent, key) = path.rsplit_once('.').unwrap_or(("", path));
        // The nearest enclosing header: `upstream.servers.weight` is written in
        // `[[upstream]]`'s inline tables, `upstream.health_check.host` under its own header.
        let mut section = parent;
        while !section.is_empty() && !self.sections.iter().any(|(name, _)| *name == section) {
            section = section.rsplit_once('.').map_or("", |(up, _)| up);
        }
        self.sections
            .iter()
            .filter(|(name, _)| *name == section)
            .any(|(_, body)| has_key(body, key))
    }
}

/// The name of a `[table]` or `[[array]]` header at the start of `text`.
fn header(text: &str) -> Option<&str> {
    let inner = text.strip_prefix('[')?;
    let inner = inner.strip_prefix('[').unwrap_or(inner);
    let name = &inner[..inner.find(']')?];
    let is_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.');
    is_name.then_some(name)
}

/// Whether `text` has `key =` (also inside an inline table: `{ key = …`).
fn has_key(text: &str, key: &str) -> bool {
    text.match_indices(key).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + key.len()..].trim_start_matches(' ');
        !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') && after.starts_with('=')
    })
}

#[test]
fn every_key_the_parser_accepts_is_in_the_shipped_config() {
    let keys = accepted_keys();
    // The walk reaches every kind of nesting: derived structs, `Spanned`,
    // `AddrOr` tables, `OneOrMany`, `RawListen` and `Option`s.
    for reached in [
        "log.access",
        "route.request_timeout",
        "upstream.servers.weight",
        "upstream.health_check.host",
        "server.listen.redirect_https",
        "server.listen.tls.cert",
    ] {
        assert!(
            keys.contains(reached),
            "the walk missed {reached}: {keys:?}"
        );
    }
    let doc = Sections::of(include_str!("../../config/weir.toml"));
    let missing: Vec<&String> = keys.iter().filter(|k| !doc.mentions(k)).collect();
    assert!(
        missing.is_empty(),
        "config/weir.toml does not show {missing:?}"
    );
}

#[test]
fn a_key_counts_only_in_its_own_section() {
    let doc = Sections::of(
        "[server]\nlisten = [{ addr = \"x\" }]\n# threads = 0\n# [upstream.health_check]\n\
         # host = \"h\"\n[[route]]\nupstream = \"a\"  # see max_fails\n",
    );
    assert!(doc.mentions("server"));
    assert!(doc.mentions("server.threads"));
    assert!(doc.mentions("server.listen.addr"));
    assert!(doc.mentions("upstream.health_check"));
    assert!(doc.mentions("upstream.health_check.host"));
    assert!(doc.mentions("route.upstream"));
    // Named in a comment, not as a key; or as a key of another section.
    assert!(!doc.mentions("route.max_fails"));
    assert!(!doc.mentions("route.host"));
    assert!(!doc.mentions("server.listen.tls"));
    assert!(!doc.mentions("admin"));
    assert!(!doc.mentions("upstream"));
}
