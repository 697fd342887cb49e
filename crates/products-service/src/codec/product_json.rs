//! The Product JSON of the README's "APIs" section (camelCase, as the Go
//! original).
//!
//! Encoding is a plain serde struct. Decoding client input goes through
//! `serde_json::Value` instead, so that a wrong type in one field ("price":
//! "cheap") is reported next to every other bad field rather than aborting
//! the whole body at the first serde error.

use chrono::{DateTime, Utc};
use products_core::domain::{
    CategoryId, Description, HttpUrl, Price, Product, ProductDraft, ProductId, ProductName,
    Quantity, Rating, UnvalidatedProduct, ValidationErrors,
};
use serde::{Deserialize, Serialize};

use super::fields::{parse_object, Fields};

/// A product as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductJson {
    #[schema(example = "65a1f0c2e4b0a1b2c3d4e5f6")]
    pub product_id: String,
    #[schema(example = "65a1f0c2e4b0a1b2c3d4e5f7")]
    pub category_id: String,
    #[schema(example = "Coffee mug")]
    pub name: String,
    #[schema(example = "Stoneware, 350 ml")]
    pub description: String,
    #[schema(example = 9.5)]
    pub price: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    #[serde(default)]
    pub photos: Vec<String>,
    pub quantity: i64,
    pub rating: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The body a client sends to create or update a product, for the OpenAPI
/// document. Decoding does not go through serde (see the module doc) but
/// through [`decode_product_input`]; a test holds the two to the same
/// fields and the same required ones.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductInput {
    /// 24-hex ObjectId of the category.
    #[schema(example = "65a1f0c2e4b0a1b2c3d4e5f7")]
    pub category_id: String,
    /// 3 to 250 characters.
    #[schema(example = "Coffee mug", min_length = 3, max_length = 250)]
    pub name: String,
    /// 3 to 500 characters.
    #[schema(example = "Stoneware, 350 ml", min_length = 3, max_length = 500)]
    pub description: String,
    /// Greater than 0.
    #[schema(example = 9.5, exclusive_minimum = 0)]
    pub price: f64,
    /// An http(s) URL.
    #[schema(example = "https://img.example.com/mug.png")]
    pub image_url: Option<String>,
    /// http(s) URLs, at most 50.
    pub photos: Option<Vec<String>>,
    #[schema(minimum = 0)]
    pub quantity: i64,
    /// 0 to 10; defaults to 0.
    #[schema(minimum = 0, maximum = 10)]
    pub rating: Option<i64>,
}

impl From<&Product> for ProductJson {
    fn from(product: &Product) -> Self {
        let p = &product.draft;
        Self {
            product_id: product.id.to_string(),
            category_id: p.category_id.to_string(),
            name: p.name.to_string(),
            description: p.description.to_string(),
            price: p.price.value(),
            image_url: p.image_url.as_ref().map(ToString::to_string),
            photos: p.photos.iter().map(ToString::to_string).collect(),
            quantity: p.quantity.value(),
            rating: p.rating.value(),
            created_at: product.created_at,
            updated_at: product.updated_at,
        }
    }
}

impl ProductJson {
    /// Rebuilds a domain product, re-checking every field (data read back from
    /// a cache or a message is input like any other).
    pub fn into_product(self) -> Result<Product, ValidationErrors> {
        fn field<T>(name: &str, parsed: Result<T, String>) -> Result<T, ValidationErrors> {
            parsed.map_err(|m| ValidationErrors::single(name.to_owned(), m))
        }
        let id = field("productId", ProductId::parse(&self.product_id))?;
        let draft = ProductDraft {
            category_id: field("categoryId", CategoryId::parse(&self.category_id))?,
            name: field("name", ProductName::parse(&self.name))?,
            description: field("description", Description::parse(&self.description))?,
            price: field("price", Price::parse(self.price))?,
            image_url: self
                .image_url
                .map(|u| field("imageUrl", HttpUrl::parse(&u)))
                .transpose()?,
            photos: self
                .photos
                .iter()
                .map(|u| field("photos", HttpUrl::parse(u)))
                .collect::<Result<_, _>>()?,
            quantity: field("quantity", Quantity::parse(self.quantity))?,
            rating: field("rating", Rating::parse(self.rating))?,
        };
        Ok(Product {
            id,
            draft,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
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
    let input = fields.product_input();
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
        let schema =
            serde_json::to_value(<ProductInput as utoipa::PartialSchema>::schema()).unwrap();
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
