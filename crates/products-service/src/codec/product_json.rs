//! The Product JSON of the README's "APIs" section (camelCase, as the Go
//! original).
//!
//! Encoding is a plain serde struct. Decoding client input goes through
//! `serde_json::Value` instead, so that a wrong type in one field ("price":
//! "cheap") is reported next to every other bad field rather than aborting
//! the whole body at the first serde error.

use chrono::{DateTime, Utc};
use products_core::domain::{
    CategoryId, Description, HttpUrl, Price, Product, ProductId, ProductName, Quantity, Rating,
    UnvalidatedProduct, ValidationErrors,
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

impl From<&Product> for ProductJson {
    fn from(p: &Product) -> Self {
        Self {
            product_id: p.id.to_string(),
            category_id: p.category_id.to_string(),
            name: p.name.to_string(),
            description: p.description.to_string(),
            price: p.price.value(),
            image_url: p.image_url.as_ref().map(ToString::to_string),
            photos: p.photos.iter().map(ToString::to_string).collect(),
            quantity: p.quantity.value(),
            rating: p.rating.value(),
            created_at: p.created_at,
            updated_at: p.updated_at,
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
        Ok(Product {
            id: field("productId", ProductId::parse(&self.product_id))?,
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
