//! The application layer: use cases and the ports (traits) they drive.
//!
//! Adapters in the service crate implement the ports (MongoDB repository,
//! Redis cache, ObjectId generator); delivery (REST, gRPC, Kafka) calls the
//! use cases on [`ProductService`] and maps [`AppError`] to its protocol.

mod error;
mod ports;
mod service;

pub use error::AppError;
pub use ports::{
    Clock, IdGenerator, InsertOutcome, NoCache, PortError, ProductCache, ProductRepository,
    SystemClock,
};
pub use service::ProductService;

#[cfg(test)]
mod tests;
