//! Idempotency keys in a MongoDB collection of their own (used when Redis is
//! disabled). A document is `crate::idempotency::Entry` plus `_id` (the
//! scoped key) and `expiresAt`. Every read, claim and conditional write goes
//! by `_id` (the only filter FerretDB 1.24 pushes down; the token condition
//! is checked on that one document). FerretDB enforces no TTL index and has
//! no transactions, so an expired entry counts as absent: a claim that
//! finds one deletes it (if it is still that entry) and inserts again; the
//! `_id` unique index decides between racing claims.

use std::time::Duration;

use async_trait::async_trait;
use mongodb::{
    bson::{doc, DateTime},
    Collection, Database,
};
use serde::{Deserialize, Serialize};

use crate::{
    adapters::mongo::is_duplicate_key,
    idempotency::{Claim, ClaimOutcome, Entry, IdempotencyStore, KeyStoreError, StoredResponse},
};

/// Claim attempts when the entry found keeps expiring or vanishing between
/// our insert and our read (racing claims).
const CLAIM_ATTEMPTS: usize = 3;

#[derive(Debug, Serialize, Deserialize)]
struct KeyDocument {
    #[serde(rename = "_id")]
    id: String,
    #[serde(rename = "expiresAt")]
    expires_at: DateTime,
    #[serde(flatten)]
    entry: Entry,
}

pub struct MongoKeyStore {
    keys: Collection<KeyDocument>,
}

impl MongoKeyStore {
    /// The keys go into `collection` of the service's database (the
    /// repository's client: one connection pool).
    pub fn new(database: &Database, collection: &str) -> Self {
        Self {
            keys: database.collection(collection),
        }
    }

    /// Deletes the expired entries (a full scan on FerretDB: run it rarely);
    /// how many.
    #[tracing::instrument(skip(self), err)]
    pub async fn purge_expired(&self) -> Result<u64, KeyStoreError> {
        let result = self
            .keys
            .delete_many(doc! { "expiresAt": { "$lt": DateTime::now() } })
            .await
            .map_err(unavailable)?;
        Ok(result.deleted_count)
    }

    fn document(claim: &Claim, entry: Entry, ttl: Duration) -> KeyDocument {
        let ttl = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        KeyDocument {
            id: claim.key.as_str().to_owned(),
            expires_at: DateTime::from_millis(
                DateTime::now().timestamp_millis().saturating_add(ttl),
            ),
            entry,
        }
    }
}

fn unavailable(err: mongodb::error::Error) -> KeyStoreError {
    KeyStoreError::Unavailable(err.to_string())
}

#[async_trait]
impl IdempotencyStore for MongoKeyStore {
    #[tracing::instrument(name = "mongo.idempotency_claim", skip_all, fields(db.system = "mongodb"), err)]
    async fn claim(&self, claim: Claim, lock_ttl: Duration) -> Result<ClaimOutcome, KeyStoreError> {
        let id = claim.key.as_str().to_owned();
        for _ in 0..CLAIM_ATTEMPTS {
            let pending = Self::document(&claim, claim.pending_entry(), lock_ttl);
            match self.keys.insert_one(&pending).await {
                Ok(_) => return Ok(ClaimOutcome::Claimed(claim)),
                Err(err) if is_duplicate_key(&err) => {}
                Err(err) => return Err(unavailable(err)),
            }
            let held = self
                .keys
                .find_one(doc! { "_id": &id })
                .await
                .map_err(unavailable)?;
            match held {
                // Released or purged since our insert: try again.
                None => {}
                Some(held) if held.expires_at <= DateTime::now() => {
                    // Expired: remove that very entry (not a newer claim's).
                    self.keys
                        .delete_one(doc! { "_id": &id, "token": &held.entry.token })
                        .await
                        .map_err(unavailable)?;
                }
                Some(held) => return Ok(ClaimOutcome::Held(held.entry)),
            }
        }
        Err(KeyStoreError::Unavailable(
            "idempotency key contended: no stable entry after retries".into(),
        ))
    }

    #[tracing::instrument(name = "mongo.idempotency_complete", skip_all, fields(db.system = "mongodb", status = response.status), err)]
    async fn complete(
        &self,
        claim: &Claim,
        response: StoredResponse,
        ttl: Duration,
    ) -> Result<(), KeyStoreError> {
        let done = Self::document(claim, claim.completed_entry(response), ttl);
        let result = self
            .keys
            .replace_one(
                doc! { "_id": claim.key.as_str(), "token": &claim.token },
                &done,
            )
            .await
            .map_err(unavailable)?;
        if result.matched_count == 0 {
            tracing::warn!("idempotency claim expired before its request finished");
        }
        Ok(())
    }

    #[tracing::instrument(name = "mongo.idempotency_release", skip_all, fields(db.system = "mongodb"), err)]
    async fn release(&self, claim: &Claim) -> Result<(), KeyStoreError> {
        self.keys
            .delete_one(doc! { "_id": claim.key.as_str(), "token": &claim.token })
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
