//! Idempotency keys in Redis. An entry is the JSON of
//! `crate::idempotency::Entry` under `{prefix}{scoped key}`; a claim sets it
//! only if absent (`PX` = the in-progress TTL), completing replaces it with
//! the answer (`PX` = the key TTL) and releasing deletes it, both only while
//! the entry still carries the claim's token. Each step is one Lua script,
//! atomic in Redis.

use std::time::Duration;

use async_trait::async_trait;

use super::super::redis_connection::LazyRedis;
use crate::{
    config::RedisSettings,
    idempotency::{Claim, ClaimOutcome, Entry, IdempotencyStore, KeyStoreError, StoredResponse},
};

/// KEYS[1] = key; ARGV = pending entry, lock TTL (ms). Returns the entry held,
/// or nil after claiming.
const CLAIM: &str = r"
local held = redis.call('GET', KEYS[1])
if held then
  return held
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
";

/// KEYS[1] = key; ARGV = token, new entry (or '' to delete), TTL (ms).
/// Acts only if the held entry carries `token`. Returns 1 if it acted.
const IF_OWNED: &str = r"
local held = redis.call('GET', KEYS[1])
if not held then
  return 0
end
local ok, entry = pcall(cjson.decode, held)
if not ok or type(entry) ~= 'table' or entry.token ~= ARGV[1] then
  return 0
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
";

pub struct RedisKeyStore {
    redis: LazyRedis,
    key_prefix: String,
    claim: redis::Script,
    if_owned: redis::Script,
}

impl RedisKeyStore {
    /// Its own lazy connection to the Redis of `settings`; keys under
    /// `key_prefix`.
    pub fn new(settings: &RedisSettings, key_prefix: &str) -> Result<Self, redis::RedisError> {
        Ok(Self {
            redis: LazyRedis::new(settings)?,
            key_prefix: key_prefix.to_owned(),
            claim: redis::Script::new(CLAIM),
            if_owned: redis::Script::new(IF_OWNED),
        })
    }

    fn key(&self, claim: &Claim) -> String {
        format!("{}{}", self.key_prefix, claim.key.as_str())
    }

    async fn if_owned(
        &self,
        claim: &Claim,
        value: &str,
        ttl: Duration,
    ) -> Result<(), KeyStoreError> {
        let key = self.key(claim);
        let script = &self.if_owned;
        let acted = self
            .redis
            .run(async |mut c| {
                script
                    .key(&key)
                    .arg(&claim.token)
                    .arg(value)
                    .arg(millis(ttl))
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await
            .map_err(|e| KeyStoreError::Unavailable(e.to_string()))?;
        if acted == 0 {
            tracing::warn!("idempotency claim expired before its request finished");
        }
        Ok(())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn encode(entry: &Entry) -> Result<String, KeyStoreError> {
    serde_json::to_string(entry).map_err(|e| KeyStoreError::Corrupt(e.to_string()))
}

#[async_trait]
impl IdempotencyStore for RedisKeyStore {
    #[tracing::instrument(name = "redis.idempotency_claim", skip_all, fields(db.system = "redis"), err)]
    async fn claim(&self, claim: Claim, lock_ttl: Duration) -> Result<ClaimOutcome, KeyStoreError> {
        let key = self.key(&claim);
        let pending = encode(&claim.pending_entry())?;
        let script = &self.claim;
        let held = self
            .redis
            .run(async |mut c| {
                script
                    .key(&key)
                    .arg(&pending)
                    .arg(millis(lock_ttl))
                    .invoke_async::<Option<String>>(&mut c)
                    .await
            })
            .await
            .map_err(|e| KeyStoreError::Unavailable(e.to_string()))?;
        match held {
            None => Ok(ClaimOutcome::Claimed(claim)),
            Some(raw) => serde_json::from_str::<Entry>(&raw)
                .map(ClaimOutcome::Held)
                .map_err(|e| KeyStoreError::Corrupt(e.to_string())),
        }
    }

    #[tracing::instrument(name = "redis.idempotency_complete", skip_all, fields(db.system = "redis", status = response.status), err)]
    async fn complete(
        &self,
        claim: &Claim,
        response: StoredResponse,
        ttl: Duration,
    ) -> Result<(), KeyStoreError> {
        let value = encode(&claim.completed_entry(response))?;
        self.if_owned(claim, &value, ttl).await
    }

    #[tracing::instrument(name = "redis.idempotency_release", skip_all, fields(db.system = "redis"), err)]
    async fn release(&self, claim: &Claim) -> Result<(), KeyStoreError> {
        self.if_owned(claim, "", Duration::from_millis(1)).await
    }
}
