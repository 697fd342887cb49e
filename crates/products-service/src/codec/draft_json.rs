//! The fields a client controls, in JSON: the one place their JSON names and
//! types are written. Every JSON form uses it: REST bodies (decoded through
//! [`super::fields`], which reads its field list from this type), responses,
//! Redis entries and Kafka payloads ([`super::ProductJson`],
//! [`super::command_json`] flatten it), and the OpenAPI body schema
//! (`ProductInput`, derived from it).

use products_core::domain::{ProductDraft, UnvalidatedProduct};
use serde::{Deserialize, Serialize};

/// The fields of a product that its client sets: the body of a create or an
/// update, and part of every product. `null` counts as absent.
// (A `ProductDraft` in JSON. Every field is optional as the decoder reads
// it; the schema marks what the rules require. Encoding a draft fills every
// field but `imageUrl`.)
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ProductInput)]
pub struct DraftJson {
    /// 24-hex ObjectId of the category.
    #[schema(value_type = String, required = true, example = "65a1f0c2e4b0a1b2c3d4e5f7")]
    pub category_id: Option<String>,
    /// 3 to 250 characters.
    #[schema(value_type = String, required = true, example = "Coffee mug", min_length = 3, max_length = 250)]
    pub name: Option<String>,
    /// 3 to 500 characters.
    #[schema(value_type = String, required = true, example = "Stoneware, 350 ml", min_length = 3, max_length = 500)]
    pub description: Option<String>,
    /// Greater than 0.
    #[schema(value_type = f64, required = true, example = 9.5, exclusive_minimum = 0)]
    pub price: Option<f64>,
    /// An http(s) URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "https://img.example.com/mug.png")]
    pub image_url: Option<String>,
    /// http(s) URLs, at most 50.
    #[serde(default)]
    pub photos: Vec<String>,
    #[schema(value_type = i64, required = true, minimum = 0)]
    pub quantity: Option<i64>,
    /// 0 to 10; defaults to 0.
    #[schema(minimum = 0, maximum = 10)]
    pub rating: Option<i64>,
}

impl From<&ProductDraft> for DraftJson {
    fn from(d: &ProductDraft) -> Self {
        Self {
            category_id: Some(d.category_id.to_string()),
            name: Some(d.name.to_string()),
            description: Some(d.description.to_string()),
            price: Some(d.price.value()),
            image_url: d.image_url.as_ref().map(ToString::to_string),
            photos: d.photos.iter().map(ToString::to_string).collect(),
            quantity: Some(d.quantity.value()),
            rating: Some(d.rating.value()),
        }
    }
}

impl From<DraftJson> for UnvalidatedProduct {
    fn from(d: DraftJson) -> Self {
        Self {
            category_id: d.category_id,
            name: d.name,
            description: d.description,
            price: d.price,
            image_url: d.image_url,
            photos: d.photos,
            quantity: d.quantity,
            rating: d.rating,
        }
    }
}
