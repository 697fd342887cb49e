//! Field-by-field reading of a JSON object, collecting a type error for each
//! field of the wrong JSON type instead of stopping at the first. The draft's
//! fields, their names and JSON types, are not listed here but read from
//! [`DraftJson`]'s own `Deserialize` ([`json_fields`]).

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use products_core::domain::{FieldError, UnvalidatedProduct, ValidationErrors};
use serde::{
    de::{
        self, value::Error as ProbeError, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess,
        Visitor,
    },
    Deserialize, Deserializer,
};
use serde_json::{Map, Value};

use super::{DecodeError, DraftJson};

pub(super) fn parse_object(body: &[u8]) -> Result<Map<String, Value>, DecodeError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| DecodeError::Syntax(e.to_string()))?;
    match value {
        Value::Object(object) => Ok(object),
        _ => Err(DecodeError::NotAnObject),
    }
}

pub(super) struct Fields<'a> {
    object: &'a Map<String, Value>,
    errors: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    pub(super) fn new(object: &'a Map<String, Value>) -> Self {
        Self {
            object,
            errors: Vec::new(),
        }
    }

    /// The product fields every body and payload share: each field of
    /// [`DraftJson`], in its order, checked for its JSON type (a wrong one is
    /// an error and counts as absent; so does a wrong item of an array), then
    /// read into `DraftJson` by serde.
    pub(super) fn draft(&mut self) -> UnvalidatedProduct {
        static DRAFT_FIELDS: LazyLock<Vec<(&'static str, JsonType)>> = LazyLock::new(|| {
            json_fields::<DraftJson>()
                .expect("DraftJson's fields are strings, numbers, integers or arrays of strings")
        });
        let mut checked = Map::new();
        for &(name, json_type) in DRAFT_FIELDS.iter() {
            let value = match json_type {
                JsonType::String => self.string(name).map(Value::from),
                JsonType::Number => self.number(name).map(Value::from),
                JsonType::Integer => self.integer(name).map(Value::from),
                JsonType::Strings => Some(Value::from(self.strings(name))),
            };
            if let Some(value) = value {
                checked.insert(name.to_owned(), value);
            }
        }
        match DraftJson::deserialize(Value::Object(checked)) {
            Ok(draft) => draft.into(),
            // Not reached: every value has the type its field takes.
            Err(err) => {
                self.errors
                    .push(FieldError::new("payload", format!("is invalid: {err}")));
                UnvalidatedProduct::default()
            }
        }
    }

    /// The type errors found so far, if any.
    pub(super) fn finish(self) -> Result<(), ValidationErrors> {
        match ValidationErrors::from_fields(self.errors) {
            None => Ok(()),
            Some(errors) => Err(errors),
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.object.get(key).filter(|v| !v.is_null())
    }

    fn wrong_type(&mut self, key: &str, expected: &str) {
        self.errors
            .push(FieldError::new(key, format!("must be {expected}")));
    }

    pub(super) fn string(&mut self, key: &str) -> Option<String> {
        match self.get(key)? {
            Value::String(s) => Some(s.clone()),
            _ => {
                self.wrong_type(key, "a string");
                None
            }
        }
    }

    /// An RFC 3339 timestamp.
    pub(super) fn timestamp(&mut self, key: &str) -> Option<DateTime<Utc>> {
        let raw = self.string(key)?;
        match DateTime::parse_from_rfc3339(&raw) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => {
                self.wrong_type(key, "an RFC 3339 timestamp");
                None
            }
        }
    }

    fn number(&mut self, key: &str) -> Option<f64> {
        match self.get(key)?.as_f64() {
            Some(n) => Some(n),
            None => {
                self.wrong_type(key, "a number");
                None
            }
        }
    }

    fn integer(&mut self, key: &str) -> Option<i64> {
        let value = self.get(key)?;
        // Accept 3.0 but not 3.5: JSON has one number type.
        let as_int = value.as_i64().or_else(|| {
            value
                .as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        });
        if as_int.is_none() {
            self.wrong_type(key, "an integer");
        }
        as_int
    }

    fn strings(&mut self, key: &str) -> Vec<String> {
        match self.get(key) {
            None => Vec::new(),
            Some(Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => out.push(s.clone()),
                        _ => self.wrong_type(&format!("{key}[{i}]"), "a string"),
                    }
                }
                out
            }
            Some(_) => {
                self.wrong_type(key, "an array of strings");
                Vec::new()
            }
        }
    }
}

/// The JSON type a field takes, as [`Fields`] checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum JsonType {
    String,
    Number,
    Integer,
    /// An array of strings.
    Strings,
}

/// The fields of a struct `T` with derived `Deserialize`: their JSON names in
/// declaration order and the JSON type each takes (an `Option` of it
/// allowed). Found by running `T`'s deserializer against a probe that answers
/// every field with a dummy value and notes what it asked for; `None` if a
/// field takes anything else.
pub(super) fn json_fields<'de, T: Deserialize<'de>>() -> Option<Vec<(&'static str, JsonType)>> {
    let mut found = Vec::new();
    T::deserialize(StructProbe { found: &mut found }).ok()?;
    Some(found)
}

struct StructProbe<'p> {
    found: &'p mut Vec<(&'static str, JsonType)>,
}

impl<'de> Deserializer<'de> for StructProbe<'_> {
    type Error = ProbeError;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        visitor.visit_map(FieldsProbe {
            fields: fields.iter(),
            current: "",
            found: self.found,
        })
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, ProbeError> {
        Err(de::Error::custom("not a struct"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

struct FieldsProbe<'p> {
    fields: std::slice::Iter<'static, &'static str>,
    current: &'static str,
    found: &'p mut Vec<(&'static str, JsonType)>,
}

impl<'de> MapAccess<'de> for FieldsProbe<'_> {
    type Error = ProbeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ProbeError> {
        let Some(&name) = self.fields.next() else {
            return Ok(None);
        };
        self.current = name;
        seed.deserialize(name.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, ProbeError> {
        let mut asked = None;
        let value = seed.deserialize(ValueProbe { asked: &mut asked })?;
        let json_type = asked.ok_or_else(|| de::Error::custom("unsupported field type"))?;
        self.found.push((self.current, json_type));
        Ok(value)
    }
}

/// Answers one field's deserializer and notes the JSON type it asked for.
struct ValueProbe<'a> {
    asked: &'a mut Option<JsonType>,
}

impl<'de> Deserializer<'de> for ValueProbe<'_> {
    type Error = ProbeError;

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        visitor.visit_some(self)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        *self.asked = Some(JsonType::String);
        visitor.visit_string(String::new())
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        *self.asked = Some(JsonType::Number);
        visitor.visit_f64(0.0)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        *self.asked = Some(JsonType::Integer);
        visitor.visit_i64(0)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        let mut item = None;
        let value = visitor.visit_seq(OneItem {
            asked: Some(&mut item),
        })?;
        if item != Some(JsonType::String) {
            return Err(de::Error::custom("only arrays of strings"));
        }
        *self.asked = Some(JsonType::Strings);
        Ok(value)
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, ProbeError> {
        Err(de::Error::custom("unsupported field type"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i128 u8 u16 u32 u64 u128 f32 char str bytes byte_buf
        unit unit_struct newtype_struct tuple tuple_struct map struct enum identifier
        ignored_any
    }
}

/// An array of one probed item.
struct OneItem<'a> {
    asked: Option<&'a mut Option<JsonType>>,
}

impl<'de> SeqAccess<'de> for OneItem<'_> {
    type Error = ProbeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, ProbeError> {
        match self.asked.take() {
            Some(asked) => seed.deserialize(ValueProbe { asked }).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the decoder reads, in the order it reports errors.
    #[test]
    fn the_draft_fields_come_from_draft_json() {
        assert_eq!(
            json_fields::<DraftJson>().unwrap(),
            [
                ("categoryId", JsonType::String),
                ("name", JsonType::String),
                ("description", JsonType::String),
                ("price", JsonType::Number),
                ("imageUrl", JsonType::String),
                ("photos", JsonType::Strings),
                ("quantity", JsonType::Integer),
                ("rating", JsonType::Integer),
            ]
        );
    }

    #[test]
    fn other_field_types_are_refused() {
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct Nested {
            inner: Vec<Vec<String>>,
        }
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct Boolean {
            flag: bool,
        }
        assert!(json_fields::<Nested>().is_none());
        assert!(json_fields::<Boolean>().is_none());
        assert!(json_fields::<String>().is_none());
    }
}
