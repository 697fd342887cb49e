//! New product ids as MongoDB ObjectIds (timestamp + random + counter).

use mongodb::bson::oid::ObjectId;
use products_core::{app::IdGenerator, domain::ProductId};

#[derive(Debug, Default, Clone, Copy)]
pub struct ObjectIdGenerator;

impl IdGenerator for ObjectIdGenerator {
    fn next_id(&self) -> ProductId {
        ProductId::from_bytes(ObjectId::new().bytes())
    }
}
