//! The idempotency key store (`crate::idempotency::IdempotencyStore`) on
//! shared infrastructure, so every replica sees every key and keys survive a
//! restart:
//!
//! - [`redis`]: the default; one Lua script per step (claim, complete,
//!   release), keys `{idempotency.key_prefix}{scoped key}` with a TTL.
//! - [`mongo`]: when `redis.enabled` is false; a collection of its own
//!   (`idempotency.mongo_collection`), only ever queried by `_id`, with an
//!   `expiresAt` field (an expired entry counts as absent: FerretDB enforces
//!   no TTL index).

pub mod mongo;
pub mod redis;

pub use self::{mongo::MongoKeyStore, redis::RedisKeyStore};
