//! Typed configuration: `config/default.yaml`, then an optional override
//! file, then environment variables. Loaded once at startup into [`Settings`];
//! nothing else in the service reads the environment.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub http: HttpSettings,
    pub grpc: GrpcSettings,
    pub metrics: MetricsSettings,
    pub mongo: MongoSettings,
    pub redis: RedisSettings,
    pub kafka: KafkaSettings,
    pub telemetry: TelemetrySettings,
    pub auth: AuthSettings,
    pub rate_limit: RateLimitSettings,
    pub shutdown_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    pub addr: SocketAddr,
    pub body_limit_bytes: usize,
    pub request_timeout_ms: u64,
    pub cors_allowed_origins: Vec<String>,
    /// API requests in flight at once; more are shed with 503 (0 = no limit).
    pub max_concurrent_requests: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GrpcSettings {
    pub addr: SocketAddr,
    pub max_message_bytes: usize,
    pub request_timeout_ms: u64,
    /// Product RPCs in flight at once; more are shed with `Unavailable`
    /// (0 = no limit).
    pub max_concurrent_requests: usize,
}

/// Who may call the product APIs (REST and gRPC). Off by default.
#[derive(Clone, Deserialize)]
pub struct AuthSettings {
    pub enabled: bool,
    /// Reads (get, search) need a valid token too; by default they are public.
    pub protect_reads: bool,
    /// The claim that lists a token's scopes (a space-separated string or an
    /// array of strings), and the scope a write needs.
    pub scope_claim: String,
    pub write_scope: String,
    pub jwt: JwtSettings,
    /// Static API keys, sent as bearer tokens; they may write. Never logged.
    pub api_keys: Vec<String>,
    /// A file with one API key per line (`#` comments and blank lines ignored).
    pub api_keys_file: Option<PathBuf>,
}

/// JWT verification; active when a key (secret or public key) is configured.
#[derive(Clone, Deserialize)]
pub struct JwtSettings {
    /// The one accepted algorithm: HS256/384/512, RS256/384/512, PS256/384/512,
    /// ES256/384 or EdDSA. Tokens signed otherwise are rejected.
    pub algorithm: jsonwebtoken::Algorithm,
    /// HMAC secret (HS*), inline or from a file. Never logged.
    pub secret: Option<String>,
    pub secret_file: Option<PathBuf>,
    /// PEM public key (RS*, PS*, ES*, EdDSA), inline or from a file.
    pub public_key_pem: Option<String>,
    pub public_key_file: Option<PathBuf>,
    /// When set, tokens must carry this `iss` / `aud`.
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway_secs: u64,
}

/// Per-client (IP address) token bucket on the product APIs. Off by default.
#[derive(Debug, Clone, Deserialize)]
pub struct RateLimitSettings {
    pub enabled: bool,
    /// Sustained requests per second per client.
    pub per_second: u32,
    /// Requests a client may send at once above the sustained rate.
    pub burst: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MetricsSettings {
    pub addr: SocketAddr,
}

#[derive(Clone, Deserialize)]
pub struct MongoSettings {
    /// May hold credentials: never logged (see the `Debug` impl).
    pub uri: String,
    pub database: String,
    pub collection: String,
    pub server_selection_timeout_ms: u64,
    pub connect_timeout_ms: u64,
}

#[derive(Clone, Deserialize)]
pub struct RedisSettings {
    pub enabled: bool,
    /// May hold a password: never logged (see the `Debug` impl).
    pub url: String,
    pub ttl_seconds: u64,
    pub timeout_ms: u64,
    pub key_prefix: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct KafkaSettings {
    pub brokers: String,
    pub group_id: String,
    pub topics: KafkaTopics,
    pub partitions: i32,
    pub replication_factor: i32,
    pub producer: ProducerSettings,
    pub consumer: ConsumerSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct KafkaTopics {
    pub create: String,
    pub update: String,
    pub dead_letter: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ProducerSettings {
    pub compression: Compression,
    pub linger_ms: u64,
    pub batch_size_bytes: u64,
    pub delivery_timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ConsumerSettings {
    pub enabled: bool,
    pub workers: usize,
    pub partition_buffer: usize,
    pub retry_max_attempts: usize,
    pub retry_initial_backoff_ms: u64,
    pub retry_max_backoff_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TelemetrySettings {
    pub service_name: String,
    pub otlp_endpoint: Option<String>,
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

impl std::fmt::Debug for MongoSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoSettings")
            .field("uri", &"<redacted>")
            .field("database", &self.database)
            .field("collection", &self.collection)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("enabled", &self.enabled)
            .field("url", &"<redacted>")
            .field("ttl_seconds", &self.ttl_seconds)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("enabled", &self.enabled)
            .field("protect_reads", &self.protect_reads)
            .field("scope_claim", &self.scope_claim)
            .field("write_scope", &self.write_scope)
            .field("jwt", &self.jwt)
            .field(
                "api_keys",
                &format_args!("<{} redacted>", self.api_keys.len()),
            )
            .field("api_keys_file", &self.api_keys_file)
            .finish()
    }
}

impl std::fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |set: bool| if set { "<redacted>" } else { "<none>" };
        f.debug_struct("JwtSettings")
            .field("algorithm", &self.algorithm)
            .field("secret", &redacted(self.secret.is_some()))
            .field("secret_file", &self.secret_file)
            .field("public_key_pem", &redacted(self.public_key_pem.is_some()))
            .field("public_key_file", &self.public_key_file)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

/// The defaults, compiled in so the binary runs from any directory.
const DEFAULTS: &str = include_str!("../../../config/default.yaml");

/// Well-known environment variables (as the Go original and OpenTelemetry
/// name them) and the keys they override.
const ENV_OVERRIDES: &[(&str, &str)] = &[
    ("HTTP_ADDR", "http.addr"),
    ("GRPC_ADDR", "grpc.addr"),
    ("METRICS_ADDR", "metrics.addr"),
    ("MONGO_URI", "mongo.uri"),
    ("MONGO_DB", "mongo.database"),
    ("MONGO_COLLECTION", "mongo.collection"),
    ("KAFKA_BROKERS", "kafka.brokers"),
    ("KAFKA_GROUP_ID", "kafka.group_id"),
    ("KAFKA_TOPIC_CREATE", "kafka.topics.create"),
    ("KAFKA_TOPIC_UPDATE", "kafka.topics.update"),
    ("KAFKA_TOPIC_DEAD_LETTER", "kafka.topics.dead_letter"),
    ("REDIS_URL", "redis.url"),
    ("REDIS_ENABLED", "redis.enabled"),
    ("OTEL_SERVICE_NAME", "telemetry.service_name"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "telemetry.otlp_endpoint"),
    ("LOG_FORMAT", "telemetry.log_format"),
    ("AUTH_ENABLED", "auth.enabled"),
    ("AUTH_PROTECT_READS", "auth.protect_reads"),
    ("AUTH_API_KEYS_FILE", "auth.api_keys_file"),
    ("AUTH_JWT_ALGORITHM", "auth.jwt.algorithm"),
    ("AUTH_JWT_SECRET", "auth.jwt.secret"),
    ("AUTH_JWT_SECRET_FILE", "auth.jwt.secret_file"),
    ("AUTH_JWT_PUBLIC_KEY_FILE", "auth.jwt.public_key_file"),
    ("AUTH_JWT_ISSUER", "auth.jwt.issuer"),
    ("AUTH_JWT_AUDIENCE", "auth.jwt.audience"),
];

impl Settings {
    /// Defaults, then `file` if given, then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, config::ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// As [`Settings::load`] with an explicit environment (tests use this).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, config::ConfigError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Yaml));
        if let Some(file) = file {
            builder = builder.add_source(config::File::from(file).required(true));
        }
        let app_vars: config::Map<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with("APP__"))
            .cloned()
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("APP")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(app_vars)),
        );
        for (var, key) in ENV_OVERRIDES {
            if let Some((_, value)) = env.iter().find(|(k, v)| k == var && !v.is_empty()) {
                builder = builder.set_override(*key, value.as_str())?;
            }
        }
        builder.build()?.try_deserialize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_the_original_ports() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.http.addr.port(), 5007);
        assert_eq!(s.grpc.addr.port(), 5000);
        assert_eq!(s.metrics.addr.port(), 7070);
        assert!(s.telemetry.otlp_endpoint.is_none());
    }

    #[test]
    fn well_known_variables_override() {
        let s = Settings::load_from(
            None,
            env(&[
                ("HTTP_ADDR", "127.0.0.1:1"),
                ("GRPC_ADDR", "127.0.0.1:2"),
                ("METRICS_ADDR", "127.0.0.1:3"),
                ("MONGO_URI", "mongodb://127.0.0.1:1"),
                ("MONGO_DB", "other"),
                ("KAFKA_BROKERS", "127.0.0.1:19092"),
                ("REDIS_URL", "redis://127.0.0.1:1"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
                ("OTEL_SERVICE_NAME", "svc"),
            ]),
        )
        .unwrap();
        assert_eq!(s.http.addr.port(), 1);
        assert_eq!(s.grpc.addr.port(), 2);
        assert_eq!(s.metrics.addr.port(), 3);
        assert_eq!(s.mongo.uri, "mongodb://127.0.0.1:1");
        assert_eq!(s.mongo.database, "other");
        assert_eq!(s.kafka.brokers, "127.0.0.1:19092");
        assert_eq!(s.redis.url, "redis://127.0.0.1:1");
        assert_eq!(
            s.telemetry.otlp_endpoint.as_deref(),
            Some("http://127.0.0.1:4317")
        );
        assert_eq!(s.telemetry.service_name, "svc");
    }

    #[test]
    fn nested_keys_override_through_app_prefix() {
        let s = Settings::load_from(
            None,
            env(&[
                ("APP__REDIS__TTL_SECONDS", "7"),
                ("APP__TELEMETRY__LOG_FORMAT", "json"),
            ]),
        )
        .unwrap();
        assert_eq!(s.redis.ttl_seconds, 7);
        assert_eq!(s.telemetry.log_format, LogFormat::Json);
    }

    #[test]
    fn bad_values_are_errors_not_panics() {
        assert!(Settings::load_from(None, env(&[("HTTP_ADDR", "not-an-addr")])).is_err());
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let mut s = Settings::load_from(
            None,
            env(&[
                ("MONGO_URI", "mongodb://user:hunter2@127.0.0.1"),
                ("REDIS_URL", "redis://:hunter2@127.0.0.1"),
                ("AUTH_JWT_SECRET", "hunter2-jwt-secret"),
            ]),
        )
        .unwrap();
        assert_eq!(s.auth.jwt.secret.as_deref(), Some("hunter2-jwt-secret"));
        s.auth.api_keys = vec!["hunter2-api-key".to_owned()];
        s.auth.jwt.public_key_pem = Some("hunter2-pem".to_owned());
        let debug = format!("{s:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("<1 redacted>"));
    }

    #[test]
    fn auth_is_off_by_default_and_configurable_from_the_environment() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert!(!s.auth.enabled);
        assert!(!s.auth.protect_reads);
        assert!(!s.rate_limit.enabled);
        let s = Settings::load_from(
            None,
            env(&[
                ("AUTH_ENABLED", "true"),
                ("AUTH_PROTECT_READS", "true"),
                ("AUTH_JWT_ALGORITHM", "ES256"),
                ("AUTH_JWT_PUBLIC_KEY_FILE", "/run/secrets/jwt.pem"),
                ("AUTH_JWT_ISSUER", "https://issuer.example"),
                ("AUTH_JWT_AUDIENCE", "products"),
                ("AUTH_API_KEYS_FILE", "/run/secrets/api-keys"),
                ("APP__RATE_LIMIT__ENABLED", "true"),
                ("APP__HTTP__MAX_CONCURRENT_REQUESTS", "7"),
            ]),
        )
        .unwrap();
        assert!(s.auth.enabled && s.auth.protect_reads && s.rate_limit.enabled);
        assert_eq!(s.auth.jwt.algorithm, jsonwebtoken::Algorithm::ES256);
        assert_eq!(
            s.auth.jwt.public_key_file.as_deref(),
            Some(Path::new("/run/secrets/jwt.pem"))
        );
        assert_eq!(s.auth.jwt.issuer.as_deref(), Some("https://issuer.example"));
        assert_eq!(s.auth.jwt.audience.as_deref(), Some("products"));
        assert_eq!(
            s.auth.api_keys_file.as_deref(),
            Some(Path::new("/run/secrets/api-keys"))
        );
        assert_eq!(s.http.max_concurrent_requests, 7);
    }
}
