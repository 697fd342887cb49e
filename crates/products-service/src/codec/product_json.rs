//! The Product JSON of the README's "APIs" section (camelCase, as the Go
//! original): the product's id and timestamps around its [`DraftJson`].
//!
//! Encoding is plain serde. Decoding client input goes through
//! `serde_json::Value` instead (`super::fields`), so that a wrong type in one
//! field ("price": "cheap") is reported next to every other bad field rather
//! than aborting the whole body at the first serde error. Cache entries
//! (Redis, the hot read path) decode with serde, streaming (see
//! [`ProductJson`]'s `Deserialize`).

use std::{borrow::Cow, fmt};

use chrono::{DateTime, Utc};
use products_core::domain::{
    Product, ProductDraft, ProductId, UnvalidatedProduct, ValidationErrors,
};
use serde::{
    de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor},
    Deserialize, Deserializer, Serialize,
};

use super::{
    fields::{parse_object, Fields},
    DraftJson,
};

/// A product as clients see it (REST responses, Redis entries, Kafka creates).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductJson {
    #[schema(example = "65a1f0c2e4b0a1b2c3d4e5f6")]
    pub product_id: String,
    #[serde(flatten)]
    pub draft: DraftJson,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&Product> for ProductJson {
    fn from(product: &Product) -> Self {
        Self {
            product_id: product.id.to_string(),
            draft: DraftJson::from(&product.draft),
            created_at: product.created_at,
            updated_at: product.updated_at,
        }
    }
}

impl ProductJson {
    /// Rebuilds a domain product, re-checking every field (data read back from
    /// a cache or a message is input like any other).
    pub fn into_product(self) -> Result<Product, ValidationErrors> {
        let id = ProductId::parse(&self.product_id)
            .map_err(|m| ValidationErrors::single("productId", m))?;
        Ok(Product {
            id,
            draft: ProductDraft::parse(UnvalidatedProduct::from(self.draft))?,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// As serde's `flatten` would read it (the same fields, duplicates and
/// missing ones refused, unknown ones ignored) but streaming: `flatten`
/// buffers the whole object first, which costs a cached read about half as
/// much again. The product's own keys are taken aside; every other key goes
/// to [`DraftJson`]'s derived deserializer.
impl<'de> Deserialize<'de> for ProductJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ProductJsonVisitor)
    }
}

struct ProductJsonVisitor;

impl<'de> Visitor<'de> for ProductJsonVisitor {
    type Value = ProductJson;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a product object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ProductJson, A::Error> {
        let mut own = OwnFields::default();
        let draft = DraftJson::deserialize(OwnFieldsAside { map, own: &mut own })?;
        let required = de::Error::missing_field;
        Ok(ProductJson {
            product_id: own.product_id.ok_or_else(|| required(PRODUCT_ID))?,
            draft,
            created_at: own.created_at.ok_or_else(|| required(CREATED_AT))?,
            updated_at: own.updated_at.ok_or_else(|| required(UPDATED_AT))?,
        })
    }
}

/// [`ProductJson`]'s fields beyond the draft's (its `Serialize` names them
/// from the struct; a test holds the two to the same names).
pub(super) const PRODUCT_ID: &str = "productId";
pub(super) const CREATED_AT: &str = "createdAt";
pub(super) const UPDATED_AT: &str = "updatedAt";

#[derive(Default)]
struct OwnFields {
    product_id: Option<String>,
    created_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
}

/// The object's entries minus [`OwnFields`]' (read into it on the way),
/// as a deserializer for the draft.
struct OwnFieldsAside<'o, A> {
    map: A,
    own: &'o mut OwnFields,
}

impl<'de, A: MapAccess<'de>> OwnFieldsAside<'_, A> {
    fn once<T: Deserialize<'de>>(
        map: &mut A,
        slot: &mut Option<T>,
        name: &'static str,
    ) -> Result<(), A::Error> {
        if slot.is_some() {
            return Err(de::Error::duplicate_field(name));
        }
        *slot = Some(map.next_value()?);
        Ok(())
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for OwnFieldsAside<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        while let Some(Key(key)) = self.map.next_key()? {
            match &*key {
                PRODUCT_ID => Self::once(&mut self.map, &mut self.own.product_id, PRODUCT_ID)?,
                CREATED_AT => Self::once(&mut self.map, &mut self.own.created_at, CREATED_AT)?,
                UPDATED_AT => Self::once(&mut self.map, &mut self.own.updated_at, UPDATED_AT)?,
                _ => return seed.deserialize(key.into_deserializer()).map(Some),
            }
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(seed)
    }
}

impl<'de, A: MapAccess<'de>> Deserializer<'de> for OwnFieldsAside<'_, A> {
    type Error = A::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, A::Error> {
        visitor.visit_map(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

/// An object key, borrowed from the input when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Why a body could not be turned into product input.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("body is not valid JSON: {0}")]
    Syntax(String),
    #[error("body must be a JSON object")]
    NotAnObject,
    #[error(transparent)]
    Fields(#[from] ValidationErrors),
}

/// Decodes a create/update body into unvalidated input, collecting a type
/// error for every field of the wrong JSON type. Unknown fields are ignored
/// (as the Go original did); `null` counts as absent.
pub fn decode_product_input(body: &[u8]) -> Result<UnvalidatedProduct, DecodeError> {
    let object = parse_object(body)?;
    let mut fields = Fields::new(&object);
    let input = fields.draft();
    fields.finish()?;
    Ok(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_original_json() {
        let body = br#"{"categoryId":"65a1f0c2e4b0a1b2c3d4e5f6","name":"Mug","description":"A mug",
            "price":9.5,"imageUrl":"https://i.example.com/m.png","photos":["https://i.example.com/1.png"],
            "quantity":3,"rating":7,"unknown":true}"#;
        let input = decode_product_input(body).unwrap();
        assert_eq!(input.name.as_deref(), Some("Mug"));
        assert_eq!(input.quantity, Some(3));
        assert_eq!(input.photos.len(), 1);
    }

    #[test]
    fn every_wrong_type_is_reported() {
        let body = br#"{"categoryId":1,"name":["x"],"price":"cheap","quantity":1.5,"photos":[1,"ok"],"rating":null}"#;
        let DecodeError::Fields(errors) = decode_product_input(body).unwrap_err() else {
            panic!("expected field errors")
        };
        let fields: Vec<&str> = errors.fields().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["categoryId", "name", "price", "photos[0]", "quantity"]
        );
    }

    /// The OpenAPI body schema and the decoder name the same fields and
    /// require the same ones, so the document cannot drift from the code.
    #[test]
    fn the_body_schema_lists_what_the_decoder_reads() {
        let schema = serde_json::to_value(<DraftJson as utoipa::PartialSchema>::schema()).unwrap();
        let names = |v: &serde_json::Value| -> Vec<String> {
            let mut names: Vec<String> = match v {
                serde_json::Value::Object(map) => map.keys().cloned().collect(),
                serde_json::Value::Array(items) => items
                    .iter()
                    .filter_map(|i| i.as_str().map(str::to_owned))
                    .collect(),
                _ => Vec::new(),
            };
            names.sort();
            names
        };
        let error_fields = |body: &serde_json::Value| -> Vec<String> {
            let DecodeError::Fields(errors) = decode_product_input(body.to_string().as_bytes())
                .and_then(|raw| products_core::domain::ProductDraft::parse(raw).map_err(Into::into))
                .unwrap_err()
            else {
                panic!("expected field errors")
            };
            let mut fields: Vec<String> = errors.fields().iter().map(|e| e.field.clone()).collect();
            fields.sort();
            fields
        };
        // Every property of the wrong JSON type: the decoder reports each.
        let properties = names(&schema["properties"]);
        let wrong_types: serde_json::Map<String, serde_json::Value> = properties
            .iter()
            .map(|name| (name.clone(), serde_json::json!({ "wrong": "type" })))
            .collect();
        assert_eq!(
            error_fields(&serde_json::Value::Object(wrong_types)),
            properties
        );
        // Nothing at all: the decoder and rules require what the schema does.
        assert_eq!(
            error_fields(&serde_json::json!({})),
            names(&schema["required"])
        );
    }

    const CACHED: &str = r#"{"productId":"65a1f0c2e4b0a1b2c3d4e5f6","categoryId":"65a1f0c2e4b0a1b2c3d4e5f7","name":"Coffee mug","description":"Stoneware, 350 ml","price":9.5,"imageUrl":"https://img.example.com/mug.png","photos":["https://img.example.com/1.png"],"quantity":3,"rating":7,"createdAt":"2026-03-04T05:06:07.123456789Z","updatedAt":"2026-03-05T05:06:07Z"}"#;

    /// The streaming `Deserialize` reads what `Serialize` writes, byte for
    /// byte, under the same names (PRODUCT_ID, CREATED_AT, UPDATED_AT).
    #[test]
    fn product_json_round_trips_byte_for_byte() {
        let json: ProductJson = serde_json::from_str(CACHED).unwrap();
        assert_eq!(serde_json::to_string(&json).unwrap(), CACHED);
        let product = json.clone().into_product().unwrap();
        assert_eq!(ProductJson::from(&product), json);
        let without_image = CACHED.replace(r#""imageUrl":"https://img.example.com/mug.png","#, "");
        let json: ProductJson = serde_json::from_str(&without_image).unwrap();
        assert_eq!(json.draft.image_url, None);
        assert_eq!(serde_json::to_string(&json).unwrap(), without_image);
    }

    /// As the derived `Deserialize` did: unknown fields ignored (escaped
    /// keys too), a missing or repeated field refused.
    #[test]
    fn product_json_decoding_is_strict_about_its_fields() {
        let decode = |s: &str| serde_json::from_str::<ProductJson>(s);
        let extra = CACHED.replacen('{', r#"{"extra":[1,{"a":2}],"na\u006de":"Coffee mug","#, 1);
        assert!(decode(&extra).is_err(), "name given twice");
        let extra = CACHED.replacen('{', r#"{"extra":[1,{"a":2}],"#, 1);
        assert_eq!(decode(&extra).unwrap(), decode(CACHED).unwrap());
        let escaped = CACHED.replacen(r#""productId""#, r#""product\u0049d""#, 1);
        assert_eq!(decode(&escaped).unwrap(), decode(CACHED).unwrap());
        for field in [PRODUCT_ID, CREATED_AT, UPDATED_AT, "name"] {
            let twice = CACHED.replacen('{', &format!(r#"{{"{field}":"x","#), 1);
            assert!(decode(&twice).is_err(), "{field} twice");
        }
        for field in [PRODUCT_ID, CREATED_AT, UPDATED_AT] {
            let mut object: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(CACHED).unwrap();
            object.remove(field);
            let missing = serde_json::Value::Object(object).to_string();
            let err = decode(&missing).unwrap_err().to_string();
            assert!(err.contains(&format!("missing field `{field}`")), "{err}");
        }
        assert!(decode(r#"["not", "an", "object"]"#).is_err());
    }

    #[test]
    fn syntax_and_shape_errors() {
        assert!(matches!(
            decode_product_input(b"{"),
            Err(DecodeError::Syntax(_))
        ));
        assert!(matches!(
            decode_product_input(b""),
            Err(DecodeError::Syntax(_))
        ));
        assert!(matches!(
            decode_product_input(b"[1,2]"),
            Err(DecodeError::NotAnObject)
        ));
        assert!(matches!(
            decode_product_input(&[0xff, 0xfe]),
            Err(DecodeError::Syntax(_))
        ));
    }
}
