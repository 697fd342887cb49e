//! Adapters: implementations of the app layer's ports on real infrastructure.
//!
//! - [`mongo`]: `ProductRepository` on MongoDB (or a wire-compatible server).
//! - [`redis_cache`]: `ProductCache` on Redis, degrading to "miss" when down.
//! - [`object_id`]: `IdGenerator` producing MongoDB ObjectIds.
//! - [`idempotency`]: the REST `Idempotency-Key` store on Redis or MongoDB;
//!   [`redis_connection`]: the lazy Redis connection it shares with the cache.
//! - [`kafka`]: `CommandPublisher` on Kafka, the command consumer, the
//!   dead-letter queue and its replay.

pub mod idempotency;
pub mod kafka;
pub mod mongo;
pub mod object_id;
pub mod redis_cache;
pub mod redis_connection;
