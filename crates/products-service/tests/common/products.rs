//! Product fixtures shared by the API tests.

use serde_json::{json, Value};

pub const CATEGORY: &str = "65a1f0c2e4b0a1b2c3d4e5f7";

/// A valid create/update body.
pub fn product_body(name: &str) -> Value {
    json!({
        "categoryId": CATEGORY,
        "name": name,
        "description": "A product used by tests",
        "price": 19.99,
        "imageUrl": "https://img.example.com/p.png",
        "photos": ["https://img.example.com/p-1.png", "https://img.example.com/p-2.png"],
        "quantity": 5,
        "rating": 7
    })
}

/// The `field` names listed in an error body's `causes`.
pub fn cause_fields(body: &Value) -> Vec<String> {
    body["causes"]
        .as_array()
        .map(|causes| {
            causes
                .iter()
                .filter_map(|c| c["field"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
