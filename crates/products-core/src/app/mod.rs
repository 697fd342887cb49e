//! The application layer: use cases and the ports (traits) they drive.
//!
//! Adapters in the service crate implement the ports (MongoDB repository,
//! Redis cache, Kafka publisher, ObjectId generator); delivery (REST, gRPC,
//! the Kafka consumer) calls the use cases on [`ProductService`] and maps
//! [`AppError`] to its protocol.

mod commands;
mod error;
mod ports;
mod service;

pub use commands::{
    ApplyOutcome, DeleteOutcome, LogPosition, ProductCommand, ProductUpdate, UpdateOrder,
    UpdateOutcome,
};
pub use error::AppError;
pub use ports::{
    CacheEntry, Clock, CommandPublisher, IdGenerator, InsertOutcome, NoCache, PortError,
    ProductCache, ProductRepository, ProductSearch, Revision, Stored, SystemClock,
};
pub use service::ProductService;

#[cfg(any(test, feature = "fakes"))]
pub mod fakes;
#[cfg(test)]
mod tests;
