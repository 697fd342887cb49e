//! Redis cache-aside store for products, keyed `{prefix}{productId}`. A value
//! is `{revision}|{Product JSON}`, or `{revision}|` for a product that was
//! deleted (kept `deleted_ttl_seconds`, so reads of a deleted id stay cheap
//! and a racing reader cannot cache it back). Writes go through one Lua
//! script that sets the entry only if the cache holds no entry of the same
//! or a later revision: atomic in Redis, so concurrent readers and writers
//! end with the newest version whatever their order.
//!
//! The connection ([`LazyRedis`]) is made lazily and re-made after failures
//! (at most one attempt per second), so the service starts and keeps serving
//! while Redis is down: every operation is bounded by a timeout and reports
//! `Unavailable`, which the use cases log and bypass.

use async_trait::async_trait;
use products_core::{
    app::{CacheEntry, PortError, ProductCache, Revision},
    domain::ProductId,
};
use redis::{aio::ConnectionManager, AsyncCommands};

use super::redis_connection::LazyRedis;
use crate::{codec::ProductJson, config::RedisSettings};

/// KEYS[1] = key; ARGV = revision, value, ttl seconds. Sets unless the held
/// entry's revision (the digits before `|`) is the same or later; an entry
/// in another format counts as older. Returns 1 if set.
const PUT_IF_NEWER: &str = r"
local held = redis.call('GET', KEYS[1])
if held then
  local revision = tonumber(string.match(held, '^(%d+)|'))
  if revision and revision >= tonumber(ARGV[1]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 'EX', ARGV[3])
return 1
";

pub struct RedisProductCache {
    redis: LazyRedis,
    put_if_newer: redis::Script,
    ttl_seconds: u64,
    deleted_ttl_seconds: u64,
    key_prefix: String,
}

impl RedisProductCache {
    /// Checks the URL (and reads the TLS CA file) only; no connection is made
    /// until first use (see [`LazyRedis`]).
    pub fn new(settings: &RedisSettings) -> Result<Self, redis::RedisError> {
        Ok(Self {
            redis: LazyRedis::new(settings)?,
            put_if_newer: redis::Script::new(PUT_IF_NEWER),
            ttl_seconds: settings.ttl_seconds.max(1),
            deleted_ttl_seconds: settings.deleted_ttl_seconds.max(1),
            key_prefix: settings.key_prefix.clone(),
        })
    }

    fn key(&self, id: &ProductId) -> String {
        format!("{}{}", self.key_prefix, id)
    }

    /// Runs one command with the configured timeout.
    async fn run<T>(
        &self,
        command: impl AsyncFnOnce(ConnectionManager) -> redis::RedisResult<T>,
    ) -> Result<T, PortError> {
        self.redis.run(command).await
    }

    /// Reachability check for readiness probes.
    pub async fn ping(&self) -> Result<(), PortError> {
        self.redis.ping().await
    }
}

fn count(result: &'static str) {
    metrics::counter!("cache_requests_total", "cache" => "redis", "result" => result).increment(1);
}

#[async_trait]
impl ProductCache for RedisProductCache {
    #[tracing::instrument(name = "redis.get", skip_all, fields(db.system = "redis", product_id = %id))]
    async fn get(&self, id: &ProductId) -> Result<Option<CacheEntry>, PortError> {
        let key = self.key(id);
        let raw: Option<Vec<u8>> = match self.run(async |mut c| c.get(&key).await).await {
            Ok(raw) => raw,
            Err(err) => {
                count("error");
                return Err(err);
            }
        };
        let Some(raw) = raw else {
            count("miss");
            return Ok(None);
        };
        // An entry that no longer decodes (older format, tampering) is a miss.
        match decode_entry(&raw) {
            Ok(entry) => {
                count("hit");
                Ok(Some(entry))
            }
            Err(err) => {
                tracing::warn!(error = %err, "ignoring undecodable cache entry");
                count("miss");
                Ok(None)
            }
        }
    }

    #[tracing::instrument(name = "redis.put_if_newer", skip_all, fields(db.system = "redis", product_id = %id, revision))]
    async fn put(
        &self,
        id: &ProductId,
        entry: &CacheEntry,
        revision: Revision,
    ) -> Result<(), PortError> {
        let key = self.key(id);
        let (value, ttl) = match entry {
            CacheEntry::Product(product) => (
                serde_json::to_vec(&ProductJson::from(product))
                    .map_err(|e| PortError::Internal(e.to_string()))?,
                self.ttl_seconds,
            ),
            CacheEntry::Deleted => (Vec::new(), self.deleted_ttl_seconds),
        };
        let script = &self.put_if_newer;
        self.run(async |mut c| {
            script
                .key(&key)
                .arg(revision)
                .arg(value)
                .arg(ttl)
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await
        .map(drop)
        .inspect_err(|_| count("error"))
    }
}

/// `{revision}|{json}` or `{revision}|` (deleted).
fn decode_entry(raw: &[u8]) -> Result<CacheEntry, String> {
    let separator = raw
        .iter()
        .position(|&b| b == b'|')
        .ok_or("no revision prefix")?;
    let (revision, rest) = raw.split_at(separator);
    if revision.is_empty() || !revision.iter().all(u8::is_ascii_digit) {
        return Err("bad revision prefix".to_owned());
    }
    let json = &rest[1..];
    if json.is_empty() {
        return Ok(CacheEntry::Deleted);
    }
    serde_json::from_slice::<ProductJson>(json)
        .map_err(|e| e.to_string())
        .and_then(|json| json.into_product().map_err(|e| e.to_string()))
        .map(CacheEntry::Product)
}

#[cfg(test)]
mod tests {
    use super::{decode_entry, RedisProductCache};
    use products_core::app::CacheEntry;

    #[test]
    fn entries_carry_a_revision_and_deleted_is_empty() {
        assert_eq!(decode_entry(b"7|"), Ok(CacheEntry::Deleted));
        assert!(
            decode_entry(b"{\"productId\":1}").is_err(),
            "old format is a miss"
        );
        assert!(decode_entry(b"x|").is_err());
        assert!(decode_entry(b"3|{not json").is_err());
    }
    use crate::config::Settings;

    /// Neither a bad URL nor an unreachable server echoes the password.
    #[tokio::test]
    async fn errors_do_not_echo_credentials() {
        let mut settings = Settings::load_from(None, Vec::new()).unwrap().redis;
        settings.url = "redis://:url-hunter2@127.0.0.1:notaport".into();
        let err = RedisProductCache::new(&settings)
            .err()
            .expect("invalid port");
        assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");

        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        settings.url = format!("redis://:url-hunter2@127.0.0.1:{port}").into();
        settings.auth.password = Some("auth-hunter2".into());
        let cache = RedisProductCache::new(&settings).unwrap();
        let err = cache.ping().await.unwrap_err();
        assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
    }

    #[test]
    fn a_missing_ca_file_is_an_error() {
        let mut settings = Settings::load_from(None, Vec::new()).unwrap().redis;
        settings.url = "rediss://127.0.0.1:6380".into();
        settings.tls_ca_file = Some("/nonexistent/ca.pem".into());
        assert!(RedisProductCache::new(&settings).is_err());
    }
}
