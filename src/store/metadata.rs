//! A row's stored metadata as the in-memory copy keeps it: a compact, immutable JSON tree
//! that filters are evaluated on ([`super::filter::eval`]) and that becomes a hit's
//! `metadata` again ([`Metadata::to_map`]).
//!
//! It owns the representation only: it must not decide what a filter means, and it never
//! sees SQL. It is built from exactly the JSON value stored in the file (SQL NULL is
//! [`Metadata::Null`]), so a filter sees the same thing here as in DuckDB.
//!
//! Why not `serde_json::Value`: a `Value` object is a `BTreeMap` (a node of 11 slots per
//! object, however few keys it has), about twice the bytes of this boxed slice of sorted
//! pairs, and the copy holds one per row.

use serde_json::{Map, Number, Value};

#[derive(Debug, Clone, PartialEq)]
pub enum Metadata {
    Null,
    Bool(bool),
    /// As parsed, so an integer stays an integer when it is served back.
    Number(Number),
    Text(Box<str>),
    Array(Box<[Metadata]>),
    /// Sorted by key, keys unique (the last of duplicates wins, as in `serde_json`).
    Object(Box<[(Box<str>, Metadata)]>),
}

impl From<&Value> for Metadata {
    fn from(value: &Value) -> Self {
        match value {
            Value::Null => Metadata::Null,
            Value::Bool(b) => Metadata::Bool(*b),
            Value::Number(n) => Metadata::Number(n.clone()),
            Value::String(s) => Metadata::Text(s.as_str().into()),
            Value::Array(items) => Metadata::Array(items.iter().map(Metadata::from).collect()),
            Value::Object(map) => Metadata::object(map),
        }
    }
}

impl Metadata {
    /// An object from a map (a `serde_json` map iterates in key order).
    pub fn object(map: &Map<String, Value>) -> Self {
        Metadata::Object(
            map.iter()
                .map(|(k, v)| (k.as_str().into(), Metadata::from(v)))
                .collect(),
        )
    }

    /// Parse stored JSON text (`None`: SQL NULL).
    pub fn parse(text: Option<&str>) -> Result<Self, serde_json::Error> {
        match text {
            None => Ok(Metadata::Null),
            Some(t) => serde_json::from_str::<Value>(t).map(|v| Metadata::from(&v)),
        }
    }

    /// The value of `key` when this is an object that has it.
    pub fn get(&self, key: &str) -> Option<&Metadata> {
        let Metadata::Object(pairs) = self else {
            return None;
        };
        pairs
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &pairs[i].1)
    }

    pub fn to_value(&self) -> Value {
        match self {
            Metadata::Null => Value::Null,
            Metadata::Bool(b) => Value::Bool(*b),
            Metadata::Number(n) => Value::Number(n.clone()),
            Metadata::Text(s) => Value::String(s.to_string()),
            Metadata::Array(items) => Value::Array(items.iter().map(Metadata::to_value).collect()),
            Metadata::Object(pairs) => {
                Value::Object(pairs.iter().map(|(k, v)| (k.to_string(), v.to_value())).collect())
            }
        }
    }

    /// A hit's metadata (see [`hit_object`]).
    pub fn to_map(&self) -> Map<String, Value> {
        hit_object(self.to_value())
    }

    /// Bytes held, heap included (an estimate: allocator overhead is not counted).
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Metadata>()
            + match self {
                Metadata::Text(s) => s.len(),
                Metadata::Array(items) => items.iter().map(Metadata::bytes).sum(),
                Metadata::Object(pairs) => pairs
                    .iter()
                    .map(|(k, v)| std::mem::size_of::<Box<str>>() + k.len() + v.bytes())
                    .sum(),
                _ => 0,
            }
    }
}

/// Stored metadata as a hit shows it, whichever engine read it: the object itself; `{}` for
/// null; any other JSON value (possible in a table someone else wrote) as `{"value": ...}`,
/// served rather than dropped.
pub fn hit_object(stored: Value) -> Map<String, Value> {
    match stored {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        other => Map::from_iter([("value".to_string(), other)]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_what_serde_json_parses() {
        let text =
            r#"{"z":1,"a":[1.5,-2,18446744073709551615,"x",null,true,{"k":{}}],"m":{"b":"é","a":null}}"#;
        let value: Value = serde_json::from_str(text).unwrap();
        let meta = Metadata::parse(Some(text)).unwrap();
        assert_eq!(meta.to_value(), value);
        assert_eq!(
            serde_json::to_string(&meta.to_value()).unwrap(),
            serde_json::to_string(&value).unwrap()
        );
        assert_eq!(
            meta.get("m").and_then(|m| m.get("b")),
            Some(&Metadata::Text("é".into()))
        );
        assert_eq!(meta.get("missing"), None);
        assert_eq!(
            meta.get("a").and_then(|a| a.get("k")),
            None,
            "no path walks through arrays"
        );
    }

    #[test]
    fn hits_get_an_object_whatever_was_stored() {
        assert_eq!(Metadata::parse(None).unwrap().to_map(), Map::new());
        assert_eq!(Metadata::parse(Some("null")).unwrap().to_map(), Map::new());
        assert_eq!(
            Value::Object(Metadata::parse(Some("[1]")).unwrap().to_map()),
            json!({"value": [1]})
        );
        assert!(Metadata::parse(Some("{")).is_err());
        assert_eq!(std::mem::size_of::<Metadata>(), 24);
    }
}
