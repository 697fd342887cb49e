//! Idempotency keys for REST writes: the key-store port and what it stores.
//!
//! `api/http/idempotency` parses the `Idempotency-Key` header, claims the key
//! here before the handler runs and stores the handler's answer after it;
//! `adapters/idempotency` implements the port on Redis and, when Redis is
//! disabled, on a MongoDB collection. Protocol-independent: it knows
//! requests only as a [`Fingerprint`] and answers only as a
//! [`StoredResponse`].
//!
//! Keys are never stored or logged in clear: a store sees only
//! [`ScopedKey`], the SHA-256 of the caller's scope and the key.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// SHA-256 of `bytes`, as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    to_hex(Sha256::digest(bytes).as_slice())
}

/// A key as a store sees it: SHA-256 of (caller scope, key), in hex. Two
/// callers sending the same key get different scoped keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopedKey(String);

impl ScopedKey {
    /// `scope` is the caller's identity (`anonymous` without auth); the
    /// NUL separator keeps (scope, key) pairs from colliding.
    pub fn new(scope: &str, key: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(scope.as_bytes());
        hasher.update([0u8]);
        hasher.update(key.as_bytes());
        Self(to_hex(hasher.finalize().as_slice()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What makes two requests "the same": method, path and the SHA-256 of the
/// body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(String);

impl Fingerprint {
    pub fn of(method: &str, path: &str, body: &[u8]) -> Self {
        Self(format!("{method} {path} sha256:{}", sha256_hex(body)))
    }
}

/// The parts of an answer that are replayed: status, `Location`,
/// `Content-Type` and the body (our bodies are JSON text or empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredResponse {
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default)]
    pub body: String,
}

/// What a store holds for a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// The claim's random token: only its owner may complete or release it.
    pub token: String,
    pub fingerprint: Fingerprint,
    /// `None` while the first request is in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<StoredResponse>,
}

/// A key this request now owns (in progress), to complete or release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub key: ScopedKey,
    pub token: String,
    pub fingerprint: Fingerprint,
}

impl Claim {
    /// A claim with a fresh random token.
    pub fn new(key: ScopedKey, fingerprint: Fingerprint) -> Self {
        Self {
            key,
            // 12 bytes: time, random per process, counter: unique across replicas.
            token: mongodb::bson::oid::ObjectId::new().to_hex(),
            fingerprint,
        }
    }

    /// The entry that marks this claim in progress.
    pub fn pending_entry(&self) -> Entry {
        Entry {
            token: self.token.clone(),
            fingerprint: self.fingerprint.clone(),
            response: None,
        }
    }

    /// The entry that stores `response` under this claim.
    pub fn completed_entry(&self, response: StoredResponse) -> Entry {
        Entry {
            response: Some(response),
            ..self.pending_entry()
        }
    }
}

/// The result of trying to claim a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The key was free: this request runs and then completes or releases.
    Claimed(Claim),
    /// The key is held (in progress or completed) by an earlier request.
    Held(Entry),
}

/// Why the key store could not answer. Every failure means "unknown", so the
/// caller refuses the write (503) rather than risk running it twice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyStoreError {
    /// Unreachable, timed out, or refused the operation.
    #[error("idempotency key store unavailable: {0}")]
    Unavailable(String),
    /// A stored entry that does not decode.
    #[error("idempotency key store holds an undecodable entry: {0}")]
    Corrupt(String),
}

/// Where keys live, shared by every replica.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Atomically: if `claim.key` is free (absent or expired), marks it in
    /// progress for `lock_ttl` and answers `Claimed`; else answers what it
    /// holds.
    async fn claim(&self, claim: Claim, lock_ttl: Duration) -> Result<ClaimOutcome, KeyStoreError>;

    /// Stores `response` under `claim` for `ttl`, if the claim still holds
    /// the key (a claim that expired meanwhile stores nothing).
    async fn complete(
        &self,
        claim: &Claim,
        response: StoredResponse,
        ttl: Duration,
    ) -> Result<(), KeyStoreError>;

    /// Frees the key if `claim` still holds it, so a retry runs again.
    async fn release(&self, claim: &Claim) -> Result<(), KeyStoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoped_keys_differ_by_scope_and_key_and_hide_both() {
        let a = ScopedKey::new("anonymous", "k1");
        assert_eq!(a, ScopedKey::new("anonymous", "k1"));
        assert_ne!(a, ScopedKey::new("jwt:alice", "k1"));
        assert_ne!(a, ScopedKey::new("anonymous", "k2"));
        // The separator: ("ab", "c") is not ("a", "bc").
        assert_ne!(ScopedKey::new("ab", "c"), ScopedKey::new("a", "bc"));
        assert_eq!(a.as_str().len(), 64);
        assert!(!a.as_str().contains("k1"));
    }

    #[test]
    fn fingerprints_cover_method_path_and_body() {
        let f = Fingerprint::of("POST", "/api/v1/products", b"{}");
        assert_eq!(f, Fingerprint::of("POST", "/api/v1/products", b"{}"));
        assert_ne!(f, Fingerprint::of("PUT", "/api/v1/products", b"{}"));
        assert_ne!(f, Fingerprint::of("POST", "/api/v1/products/x", b"{}"));
        assert_ne!(f, Fingerprint::of("POST", "/api/v1/products", b"{ }"));
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn entries_round_trip_as_json() {
        let claim = Claim::new(ScopedKey::new("s", "k"), Fingerprint::of("POST", "/", b""));
        let done = claim.completed_entry(StoredResponse {
            status: 202,
            location: Some("/api/v1/products/1".into()),
            content_type: Some("application/json".into()),
            body: "{\"productId\":\"1\"}".into(),
        });
        let json = serde_json::to_string(&done).unwrap();
        assert_eq!(serde_json::from_str::<Entry>(&json).unwrap(), done);
        let pending = serde_json::to_string(&claim.pending_entry()).unwrap();
        assert!(!pending.contains("response"), "{pending}");
        assert_ne!(
            claim.token,
            Claim::new(claim.key.clone(), claim.fingerprint.clone()).token
        );
    }
}
