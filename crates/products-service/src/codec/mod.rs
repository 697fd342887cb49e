//! Wire formats shared by several edges: the public Product JSON (REST bodies,
//! Kafka payloads, Redis cache entries) and its tolerant decoder.

mod product_json;

pub use product_json::{decode_product_input, DecodeError, ProductJson};
