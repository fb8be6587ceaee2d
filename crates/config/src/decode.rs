//! Decoding a resolved YAML section into a component's typed configuration.
//!
//! [`ValueDeserializer`] reads a `serde_yaml_ng::Value` the way upstream's decoder reads a
//! `confmap.Conf`, which differs from `serde_yaml_ng`'s own `Value` deserializer in a few ways
//! that matter for real configs:
//! - a scalar is accepted where a string is expected (`port: 4317` into a string field), and a
//!   string holding a number or boolean where one is expected. Values expanded from environment
//!   variables need this: `${env:PORT}` may land in a string or an integer field;
//! - an empty section (`batch:`, i.e. null) decodes as an empty map, so every field keeps its
//!   default, and as `None` for an `Option`;
//! - a string where a list is expected is split on commas (upstream's `StringToSliceHookFunc`).

use std::fmt;

use serde::de::value::{BorrowedStrDeserializer, SeqDeserializer};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    Unexpected, VariantAccess, Visitor,
};
use serde_yaml_ng::{Mapping, Number, Value};

use crate::{ConfigError, ConfigErrors};

/// Deserializes one component's config (found at `path`, e.g. `processors::batch`) into `T`.
///
/// A null or empty section gives `T`'s field defaults (`#[serde(default)]`). Errors carry the
/// full path to the offending key, e.g.
/// `processors::batch::timeout: invalid duration "5x": unknown unit "x" ...`.
pub fn decode_component<T: DeserializeOwned>(value: &Value, path: &str) -> Result<T, ConfigErrors> {
    serde_path_to_error::deserialize(ValueDeserializer::new(value)).map_err(|err| {
        let inner_path = format_path(err.path());
        let path = crate::join_path(path, &inner_path);
        ConfigErrors::from(ConfigError::new(path, err.into_inner().to_string()))
    })
}

/// `serde_path_to_error`'s path written with `::` between keys and `[i]` for list items.
fn format_path(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            serde_path_to_error::Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            serde_path_to_error::Segment::Map { key } => {
                if !out.is_empty() {
                    out.push_str("::");
                }
                out.push_str(key);
            }
            serde_path_to_error::Segment::Enum { variant } => {
                if !out.is_empty() {
                    out.push_str("::");
                }
                out.push_str(variant);
            }
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    out
}

/// A decoding failure; the path is added by [`decode_component`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

impl de::Error for DecodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DecodeError(msg.to_string())
    }
}

/// A lenient serde `Deserializer` over a borrowed YAML value (see the module docs).
pub struct ValueDeserializer<'de> {
    value: &'de Value,
}

impl<'de> ValueDeserializer<'de> {
    pub fn new(value: &'de Value) -> Self {
        ValueDeserializer {
            value: untagged(value),
        }
    }

    fn invalid_type<V: Visitor<'de>>(&self, visitor: &V) -> DecodeError {
        de::Error::invalid_type(unexpected(self.value), visitor)
    }
}

/// Custom YAML tags (`!foo bar`) carry no meaning in collector configs; read the value under them.
fn untagged(mut value: &Value) -> &Value {
    while let Value::Tagged(tagged) = value {
        value = &tagged.value;
    }
    value
}

fn unexpected(value: &Value) -> Unexpected<'_> {
    match value {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Unexpected::Unsigned(u)
            } else if let Some(i) = n.as_i64() {
                Unexpected::Signed(i)
            } else {
                Unexpected::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => Unexpected::Str(s),
        Value::Sequence(_) => Unexpected::Seq,
        Value::Mapping(_) => Unexpected::Map,
        Value::Tagged(_) => Unexpected::Enum,
    }
}

/// Text of a scalar, for string fields given a number or boolean.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn visit_number<'de, V: Visitor<'de>>(n: &Number, visitor: V) -> Result<V::Value, DecodeError> {
    if let Some(u) = n.as_u64() {
        visitor.visit_u64(u)
    } else if let Some(i) = n.as_i64() {
        visitor.visit_i64(i)
    } else {
        visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
    }
}

macro_rules! deserialize_number {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
            match self.value {
                Value::Number(n) => visit_number(n, visitor),
                Value::String(s) => {
                    let text = s.trim();
                    if let Ok(u) = text.parse::<u64>() {
                        visitor.visit_u64(u)
                    } else if let Ok(i) = text.parse::<i64>() {
                        visitor.visit_i64(i)
                    } else if let Ok(f) = text.parse::<f64>() {
                        visitor.visit_f64(f)
                    } else {
                        Err(self.invalid_type(&visitor))
                    }
                }
                _ => Err(self.invalid_type(&visitor)),
            }
        }
    )*};
}

impl<'de> de::Deserializer<'de> for ValueDeserializer<'de> {
    type Error = DecodeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => visit_number(n, visitor),
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Sequence(seq) => visitor.visit_seq(SeqDe {
                iter: seq.iter(),
                len: seq.len(),
                index: 0,
            }),
            Value::Mapping(map) => visitor.visit_map(MapDe::new(map)),
            Value::Tagged(tagged) => ValueDeserializer::new(&tagged.value).deserialize_any(visitor),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.value {
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::String(s) => match s.trim() {
                "true" | "True" | "TRUE" => visitor.visit_bool(true),
                "false" | "False" | "FALSE" => visitor.visit_bool(false),
                _ => Err(self.invalid_type(&visitor)),
            },
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    deserialize_number! {
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
        deserialize_f32 deserialize_f64
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.value {
            Value::String(s) => visitor.visit_borrowed_str(s),
            // Null goes to `visit_unit` so that types with a meaning for "empty" can accept it.
            Value::Null => visitor.visit_unit(),
            other => match scalar_text(other) {
                Some(text) => visitor.visit_string(text),
                None => Err(self.invalid_type(&visitor)),
            },
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.value {
            Value::String(s) => visitor.visit_borrowed_bytes(s.as_bytes()),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.value {
            Value::Null => visitor.visit_unit(),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.value {
            Value::Sequence(seq) => visitor.visit_seq(SeqDe {
                iter: seq.iter(),
                len: seq.len(),
                index: 0,
            }),
            Value::Null => visitor.visit_seq(SeqDe {
                iter: [].iter(),
                len: 0,
                index: 0,
            }),
            // Upstream splits a string on commas when a list is expected: `a,b` -> [a, b].
            Value::String(s) => {
                let parts: Vec<&'de str> = if s.is_empty() {
                    Vec::new()
                } else {
                    s.split(',').collect()
                };
                visitor.visit_seq(SeqDeserializer::<_, DecodeError>::new(
                    parts.into_iter().map(BorrowedStrDeserializer::new),
                ))
            }
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.value {
            Value::Mapping(map) => visitor.visit_map(MapDe::new(map)),
            Value::Null => visitor.visit_map(MapDe::empty()),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        match self.value {
            Value::String(s) => visitor.visit_enum(BorrowedStrDeserializer::<DecodeError>::new(s)),
            Value::Mapping(map) if map.len() == 1 => visitor.visit_enum(MapDe::new(map)),
            Value::Null => Err(de::Error::invalid_type(Unexpected::Unit, &visitor)),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_unit()
    }
}

impl<'de> IntoDeserializer<'de, DecodeError> for ValueDeserializer<'de> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

struct SeqDe<'de> {
    iter: std::slice::Iter<'de, Value>,
    len: usize,
    index: usize,
}

impl<'de> SeqAccess<'de> for SeqDe<'de> {
    type Error = DecodeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DecodeError> {
        match self.iter.next() {
            Some(value) => {
                self.index += 1;
                seed.deserialize(ValueDeserializer::new(value)).map(Some)
            }
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.len - self.index)
    }
}

struct MapDe<'de> {
    iter: Option<serde_yaml_ng::mapping::Iter<'de>>,
    pending_value: Option<&'de Value>,
}

impl<'de> MapDe<'de> {
    fn new(map: &'de Mapping) -> Self {
        MapDe {
            iter: Some(map.iter()),
            pending_value: None,
        }
    }

    fn empty() -> Self {
        MapDe {
            iter: None,
            pending_value: None,
        }
    }
}

impl<'de> MapAccess<'de> for MapDe<'de> {
    type Error = DecodeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DecodeError> {
        let Some(iter) = self.iter.as_mut() else {
            return Ok(None);
        };
        match iter.next() {
            Some((key, value)) => {
                self.pending_value = Some(value);
                seed.deserialize(ValueDeserializer::new(key)).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DecodeError> {
        match self.pending_value.take() {
            Some(value) => seed.deserialize(ValueDeserializer::new(value)),
            None => Err(de::Error::custom("value requested before key")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        self.iter.as_ref().map(|iter| iter.len())
    }
}

// A single-entry map `{variant: value}` is an enum variant with data.
impl<'de> EnumAccess<'de> for MapDe<'de> {
    type Error = DecodeError;
    type Variant = ValueDeserializer<'de>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        mut self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), DecodeError> {
        let (key, value) = self
            .iter
            .as_mut()
            .and_then(|iter| iter.next())
            .ok_or_else(|| de::Error::custom("expected a map with one key naming the variant"))?;
        let variant = seed.deserialize(ValueDeserializer::new(key))?;
        Ok((variant, ValueDeserializer::new(value)))
    }
}

impl<'de> VariantAccess<'de> for ValueDeserializer<'de> {
    type Error = DecodeError;

    fn unit_variant(self) -> Result<(), DecodeError> {
        match self.value {
            Value::Null => Ok(()),
            other => Err(de::Error::invalid_type(unexpected(other), &"unit variant")),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, DecodeError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        de::Deserializer::deserialize_seq(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        de::Deserializer::deserialize_map(self, visitor)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    fn decode<T: DeserializeOwned>(yaml: &str) -> Result<T, String> {
        let value: Value = serde_yaml_ng::from_str(yaml).unwrap();
        decode_component(&value, "processors::x").map_err(|e| e.to_string())
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Action {
        Delete,
        Insert { key: String, value: Value },
        Hash(String),
    }

    /// The shape of tail sampling policies: a `type` and a section named after it.
    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(tag = "type", rename_all = "snake_case")]
    enum Policy {
        Latency { name: String, latency: Latency },
        AlwaysSample { name: String },
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Latency {
        threshold_ms: u64,
    }

    #[test]
    fn enums_in_their_yaml_shapes() {
        assert_eq!(decode::<Action>("delete").unwrap(), Action::Delete);
        assert_eq!(
            decode::<Action>("hash: user.id").unwrap(),
            Action::Hash("user.id".into())
        );
        assert_eq!(
            decode::<Action>("insert: {key: env, value: 1}").unwrap(),
            Action::Insert {
                key: "env".into(),
                value: Value::Number(1.into())
            }
        );
        let err = decode::<Action>("upsert").unwrap_err();
        assert!(
            err.contains("unknown variant `upsert`, expected one of `delete`, `insert`, `hash`"),
            "{err}"
        );

        let policies = decode::<Vec<Policy>>(
            "[{name: slow, type: latency, latency: {threshold_ms: 2000}}, {name: all, type: always_sample}]",
        )
        .unwrap();
        assert_eq!(
            policies,
            [
                Policy::Latency {
                    name: "slow".into(),
                    latency: Latency { threshold_ms: 2000 }
                },
                Policy::AlwaysSample { name: "all".into() },
            ]
        );
        let err = decode::<Vec<Policy>>("[{name: a, type: sometimes}]").unwrap_err();
        assert!(
            err.starts_with("processors::x[0]::type: unknown variant `sometimes`"),
            "{err}"
        );
    }

    #[test]
    fn options_lists_and_maps_from_null() {
        #[derive(Debug, Deserialize, Default, PartialEq)]
        #[serde(default, deny_unknown_fields)]
        struct Section {
            grpc: Option<Latency>,
            names: Vec<String>,
            labels: std::collections::BTreeMap<String, String>,
        }
        let section = decode::<Section>("grpc:\nnames:\nlabels:").unwrap();
        assert_eq!(section, Section::default());
        assert_eq!(decode::<Vec<String>>("''").unwrap(), Vec::<String>::new());
    }
}
