//! Protobuf <-> domain conversions. proto3 cannot tell an absent string from
//! an empty one, so empty strings count as "not given".

use products_core::domain::{Product, SearchPage, UnvalidatedProduct};
use prost_types::Timestamp;

use super::pb;

fn non_empty(s: String) -> Option<String> {
    (!s.trim().is_empty()).then_some(s)
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

impl From<pb::CreateReq> for UnvalidatedProduct {
    fn from(r: pb::CreateReq) -> Self {
        Self {
            category_id: non_empty(r.category_id),
            name: non_empty(r.name),
            description: non_empty(r.description),
            price: Some(r.price),
            image_url: non_empty(r.image_url),
            photos: r.photos,
            quantity: Some(r.quantity),
            rating: Some(r.rating),
        }
    }
}

/// Splits an update request into the product id and its new fields (the
/// fields follow the same rules as a create's).
pub fn update_request(r: pb::UpdateReq) -> (String, UnvalidatedProduct) {
    let fields = pb::CreateReq {
        category_id: r.category_id,
        name: r.name,
        description: r.description,
        price: r.price,
        image_url: r.image_url,
        photos: r.photos,
        quantity: r.quantity,
        rating: r.rating,
    };
    (r.product_id, fields.into())
}

impl From<&Product> for pb::Product {
    fn from(product: &Product) -> Self {
        let p = &product.draft;
        Self {
            product_id: product.id.to_string(),
            category_id: p.category_id.to_string(),
            name: p.name.to_string(),
            description: p.description.to_string(),
            price: p.price.value(),
            image_url: p
                .image_url
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            photos: p.photos.iter().map(ToString::to_string).collect(),
            quantity: p.quantity.value(),
            rating: p.rating.value(),
            created_at: Some(timestamp(product.created_at)),
            updated_at: Some(timestamp(product.updated_at)),
        }
    }
}

impl From<&SearchPage> for pb::SearchRes {
    fn from(page: &SearchPage) -> Self {
        let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        Self {
            total_count: int(page.total_count),
            total_pages: int(page.total_pages()),
            page: int(page.page),
            size: int(page.size),
            has_more: page.has_more(),
            products: page.products.iter().map(pb::Product::from).collect(),
        }
    }
}
