//! Redis cache-aside store for products, keyed `{prefix}{productId}`, values
//! in the public Product JSON, each with a TTL.
//!
//! The connection is made lazily and re-made after failures (at most one
//! attempt per second), so the service starts and keeps serving while Redis
//! is down: every operation is bounded by a timeout and reports
//! `Unavailable`, which the use cases log and bypass.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use products_core::{
    app::{PortError, ProductCache},
    domain::{Product, ProductId},
};
use redis::{aio::ConnectionManager, AsyncCommands, IntoConnectionInfo};

use crate::{codec::ProductJson, config::RedisSettings};

const RECONNECT_INTERVAL: Duration = Duration::from_secs(1);

fn client(settings: &RedisSettings) -> Result<redis::Client, redis::RedisError> {
    let mut info = settings.url.as_str().into_connection_info()?;
    let auth = &settings.auth;
    if auth.username.is_some() || auth.password.is_some() {
        let mut redis_settings = info.redis_settings().clone();
        if let Some(username) = &auth.username {
            redis_settings = redis_settings.set_username(username);
        }
        if let Some(password) = &auth.password {
            redis_settings = redis_settings.set_password(password.expose());
        }
        info = info.set_redis_settings(redis_settings);
    }
    match &settings.tls_ca_file {
        Some(path) => {
            let root_cert = std::fs::read(path).map_err(|err| {
                redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "cannot read the Redis TLS CA file",
                    format!("{}: {err}", path.display()),
                ))
            })?;
            redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            )
        }
        None => redis::Client::open(info),
    }
}

pub struct RedisProductCache {
    client: redis::Client,
    state: Mutex<ConnectionState>,
    ttl_seconds: u64,
    timeout: Duration,
    key_prefix: String,
}

#[derive(Default)]
struct ConnectionState {
    connection: Option<ConnectionManager>,
    last_failure: Option<Instant>,
}

impl RedisProductCache {
    /// Checks the URL (and reads the TLS CA file) only; no connection is made
    /// until first use. A `rediss://` URL means TLS; credentials in the
    /// settings override those of the URL (secrets must have been resolved).
    pub fn new(settings: &RedisSettings) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: client(settings)?,
            state: Mutex::new(ConnectionState::default()),
            ttl_seconds: settings.ttl_seconds.max(1),
            timeout: Duration::from_millis(settings.timeout_ms.max(1)),
            key_prefix: settings.key_prefix.clone(),
        })
    }

    fn key(&self, id: &ProductId) -> String {
        format!("{}{}", self.key_prefix, id)
    }

    async fn connection(&self) -> Result<ConnectionManager, PortError> {
        {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(conn) = &state.connection {
                return Ok(conn.clone());
            }
            if state
                .last_failure
                .is_some_and(|t| t.elapsed() < RECONNECT_INTERVAL)
            {
                return Err(PortError::Unavailable("redis: reconnect backoff".into()));
            }
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1);
        let connected = tokio::time::timeout(
            self.timeout,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match connected {
            Ok(Ok(conn)) => {
                state.connection = Some(conn.clone());
                Ok(conn)
            }
            Ok(Err(err)) => {
                state.last_failure = Some(Instant::now());
                Err(PortError::Unavailable(format!("redis: {err}")))
            }
            Err(_) => {
                state.last_failure = Some(Instant::now());
                Err(PortError::Unavailable("redis: connect timed out".into()))
            }
        }
    }

    /// Runs one command with the configured timeout.
    async fn run<T>(
        &self,
        command: impl AsyncFnOnce(ConnectionManager) -> redis::RedisResult<T>,
    ) -> Result<T, PortError> {
        let conn = self.connection().await?;
        match tokio::time::timeout(self.timeout, command(conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(PortError::Unavailable(format!("redis: {err}"))),
            Err(_) => Err(PortError::Unavailable("redis: command timed out".into())),
        }
    }

    /// Reachability check for readiness probes.
    pub async fn ping(&self) -> Result<(), PortError> {
        self.run(async |mut conn| redis::cmd("PING").query_async::<String>(&mut conn).await)
            .await
            .map(drop)
    }
}

fn count(result: &'static str) {
    metrics::counter!("cache_requests_total", "cache" => "redis", "result" => result).increment(1);
}

#[async_trait]
impl ProductCache for RedisProductCache {
    #[tracing::instrument(name = "redis.get", skip_all, fields(db.system = "redis", product_id = %id))]
    async fn get(&self, id: &ProductId) -> Result<Option<Product>, PortError> {
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
        match serde_json::from_slice::<ProductJson>(&raw)
            .map_err(|e| e.to_string())
            .and_then(|json| json.into_product().map_err(|e| e.to_string()))
        {
            Ok(product) => {
                count("hit");
                Ok(Some(product))
            }
            Err(err) => {
                tracing::warn!(error = %err, "dropping undecodable cache entry");
                count("miss");
                Ok(None)
            }
        }
    }

    #[tracing::instrument(name = "redis.set", skip_all, fields(db.system = "redis", product_id = %product.id))]
    async fn put(&self, product: &Product) -> Result<(), PortError> {
        let key = self.key(&product.id);
        let value = serde_json::to_vec(&ProductJson::from(product))
            .map_err(|e| PortError::Internal(e.to_string()))?;
        let ttl = self.ttl_seconds;
        self.run(async |mut c| c.set_ex::<_, _, ()>(&key, value, ttl).await)
            .await
            .inspect_err(|_| count("error"))
    }

    #[tracing::instrument(name = "redis.del", skip_all, fields(db.system = "redis", product_id = %id))]
    async fn remove(&self, id: &ProductId) -> Result<(), PortError> {
        let key = self.key(id);
        self.run(async |mut c| c.del::<_, ()>(&key).await)
            .await
            .inspect_err(|_| count("error"))
    }
}

#[cfg(test)]
mod tests {
    use super::RedisProductCache;
    use crate::config::{Secret, Settings};

    /// Neither a bad URL nor an unreachable server echoes the password.
    #[tokio::test]
    async fn errors_do_not_echo_credentials() {
        let mut settings = Settings::load_from(None, Vec::new()).unwrap().redis;
        settings.url = "redis://:url-hunter2@127.0.0.1:notaport".to_owned();
        let err = RedisProductCache::new(&settings)
            .err()
            .expect("invalid port");
        assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");

        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        settings.url = format!("redis://:url-hunter2@127.0.0.1:{port}");
        settings.auth.password = Some(Secret::new("auth-hunter2"));
        let cache = RedisProductCache::new(&settings).unwrap();
        let err = cache.ping().await.unwrap_err();
        assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
    }

    #[test]
    fn a_missing_ca_file_is_an_error() {
        let mut settings = Settings::load_from(None, Vec::new()).unwrap().redis;
        settings.url = "rediss://127.0.0.1:6380".to_owned();
        settings.tls_ca_file = Some("/nonexistent/ca.pem".into());
        assert!(RedisProductCache::new(&settings).is_err());
    }
}
