//! The Product JSON of the README's "APIs" section (camelCase, as the Go
//! original): the product's id and timestamps around its [`DraftJson`].
//!
//! Encoding is plain serde. Decoding client input goes through
//! `serde_json::Value` instead (`super::fields`), so that a wrong type in one
//! field ("price": "cheap") is reported next to every other bad field rather
//! than aborting the whole body at the first serde error. Cache entries
//! (Redis, the hot read path) decode with serde, streaming (see
//! [`ProductJson`]'s `Deserialize`).

use chrono::{DateTime, Utc};
use products_core::domain::{
    Product, ProductDraft, ProductId, UnvalidatedProduct, ValidationErrors,
};
use serde::{
    de::{self, MapAccess},
    Deserialize, Deserializer, Serialize,
};

use super::{
    around::{self, deserialize_around, once},
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

/// As serde's `flatten` would read it, but streaming (see `super::around`).
impl<'de> Deserialize<'de> for ProductJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (draft, own): (DraftJson, OwnFields) = deserialize_around(deserializer)?;
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

impl<'de> around::OwnFields<'de> for OwnFields {
    fn read<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            PRODUCT_ID => once(map, &mut self.product_id, PRODUCT_ID),
            CREATED_AT => once(map, &mut self.created_at, CREATED_AT),
            UPDATED_AT => once(map, &mut self.updated_at, UPDATED_AT),
            _ => Ok(false),
        }
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
