//! One lazily made, self-healing Redis connection, shared by the adapters
//! that talk to Redis (the product cache, the idempotency key store).
//!
//! The connection is made on first use and re-made after failures (at most
//! one attempt per second), so the service starts and keeps serving while
//! Redis is down; every command is bounded by the configured timeout and
//! fails with `Unavailable`. Credentials and TLS come from the settings.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use products_core::app::PortError;
use redis::{aio::ConnectionManager, IntoConnectionInfo};

use crate::config::{ExposeSecret, RedisSettings};

const RECONNECT_INTERVAL: Duration = Duration::from_secs(1);

fn client(settings: &RedisSettings) -> Result<redis::Client, redis::RedisError> {
    let mut info = settings.url.expose_secret().into_connection_info()?;
    let auth = &settings.auth;
    if auth.username.is_some() || auth.password.is_some() {
        let mut redis_settings = info.redis_settings().clone();
        if let Some(username) = &auth.username {
            redis_settings = redis_settings.set_username(username);
        }
        if let Some(password) = &auth.password {
            redis_settings = redis_settings.set_password(password.expose_secret());
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

/// A Redis client whose connection is made when first needed.
pub struct LazyRedis {
    client: redis::Client,
    state: Mutex<ConnectionState>,
    timeout: Duration,
}

#[derive(Default)]
struct ConnectionState {
    connection: Option<ConnectionManager>,
    last_failure: Option<Instant>,
}

impl LazyRedis {
    /// Checks the URL (and reads the TLS CA file) only; no connection is made
    /// until first use. A `rediss://` URL means TLS; credentials in the
    /// settings override those of the URL (secrets must have been resolved).
    pub fn new(settings: &RedisSettings) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: client(settings)?,
            state: Mutex::new(ConnectionState::default()),
            timeout: Duration::from_millis(settings.timeout_ms.max(1)),
        })
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
    pub async fn run<T>(
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
