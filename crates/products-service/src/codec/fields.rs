//! Field-by-field reading of a JSON object, collecting a type error for each
//! field of the wrong JSON type instead of stopping at the first.

use chrono::{DateTime, Utc};
use products_core::domain::{FieldError, UnvalidatedProduct, ValidationErrors};
use serde_json::{Map, Value};

use super::DecodeError;

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

    /// The product fields every body and payload share.
    pub(super) fn product_input(&mut self) -> UnvalidatedProduct {
        UnvalidatedProduct {
            category_id: self.string("categoryId"),
            name: self.string("name"),
            description: self.string("description"),
            price: self.number("price"),
            image_url: self.string("imageUrl"),
            photos: self.strings("photos"),
            quantity: self.integer("quantity"),
            rating: self.integer("rating"),
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
