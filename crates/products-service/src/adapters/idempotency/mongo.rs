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
    error::{ErrorKind, WriteFailure},
    options::{ClientOptions, Tls, TlsOptions},
    Client, Collection,
};
use serde::{Deserialize, Serialize};

use crate::{
    config::{ExposeSecret, MongoSettings},
    idempotency::{Claim, ClaimOutcome, Entry, IdempotencyStore, KeyStoreError, StoredResponse},
};

const DUPLICATE_KEY: i32 = 11000;

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
    /// A client of its own for the database of `settings` (it connects
    /// lazily); the keys go into `collection`. Secrets must have been
    /// resolved.
    pub async fn connect(
        settings: &MongoSettings,
        collection: &str,
    ) -> Result<Self, mongodb::error::Error> {
        let mut options = ClientOptions::parse(settings.uri.expose_secret()).await?;
        options.app_name = Some("products-service-idempotency".to_owned());
        if settings.tls.enabled || settings.tls.ca_file.is_some() {
            let tls = TlsOptions::builder()
                .ca_file_path(settings.tls.ca_file.clone())
                .build();
            options.tls = Some(Tls::Enabled(tls));
        }
        let auth = &settings.auth;
        if auth.username.is_some() || auth.password.is_some() {
            let mut credential = options.credential.take().unwrap_or_default();
            if let Some(username) = &auth.username {
                credential.username = Some(username.clone());
            }
            if let Some(password) = &auth.password {
                credential.password = Some(password.expose_secret().to_owned());
            }
            options.credential = Some(credential);
        }
        options.server_selection_timeout =
            Some(Duration::from_millis(settings.server_selection_timeout_ms));
        options.connect_timeout = Some(Duration::from_millis(settings.connect_timeout_ms));
        let client = Client::with_options(options)?;
        Ok(Self {
            keys: client.database(&settings.database).collection(collection),
        })
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

fn is_duplicate_key(err: &mongodb::error::Error) -> bool {
    match err.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == DUPLICATE_KEY,
        ErrorKind::Command(e) => e.code == DUPLICATE_KEY,
        _ => false,
    }
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
