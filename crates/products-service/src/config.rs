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
    /// A connection whose request headers have not fully arrived this long
    /// after it was accepted (or after the previous request) is closed.
    pub header_read_timeout_ms: u64,
    pub tls: TlsSettings,
    /// API requests in flight at once; more are shed with 503 (0 = no limit).
    pub max_concurrent_requests: usize,
}

/// Server-side TLS of one listener (PEM files).
#[derive(Debug, Clone, Deserialize)]
pub struct TlsSettings {
    pub enabled: bool,
    /// Certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PKCS#8, PKCS#1 or SEC1 private key.
    pub key_file: PathBuf,
}

/// A password or other credential: deserialized like a string, never shown
/// by `Debug`. Read it with [`Secret::expose`] only where it is handed to a
/// client library.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A user name and password given inline or, better, as a file mounted at
/// runtime (`password_file`, which wins over `password`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
}

/// A secret file that could not be read. Names the file, never its content.
#[derive(Debug, thiserror::Error)]
#[error("cannot read secret file {path}: {source}")]
pub struct SecretFileError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl Credentials {
    /// Reads `password_file` (if set) into `password`.
    pub fn resolve(&mut self) -> Result<(), SecretFileError> {
        resolve_secret(&mut self.password, self.password_file.as_deref())
    }
}

/// Reads `file` (if set) into `secret`; one trailing newline is dropped, as
/// files written by `echo` or editors end with one.
fn resolve_secret(secret: &mut Option<Secret>, file: Option<&Path>) -> Result<(), SecretFileError> {
    if let Some(path) = file {
        let content = std::fs::read_to_string(path).map_err(|source| SecretFileError {
            path: path.to_owned(),
            source,
        })?;
        let trimmed = content
            .strip_suffix('\n')
            .map(|s| s.strip_suffix('\r').unwrap_or(s))
            .unwrap_or(&content);
        *secret = Some(Secret::new(trimmed));
    }
    Ok(())
}

#[derive(Debug, Clone, Deserialize)]
pub struct GrpcSettings {
    pub addr: SocketAddr,
    pub max_message_bytes: usize,
    pub tls: TlsSettings,
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
    /// How long a deleted product's tombstone is kept: at least the command
    /// topics' retention, so no record still in them can bring it back.
    pub tombstone_retention_hours: u64,
    pub tls: ClientTlsSettings,
    /// Overrides the user name / password of the URI when set.
    pub auth: Credentials,
}

/// Client-side TLS towards a dependency.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ClientTlsSettings {
    pub enabled: bool,
    /// PEM file of the CA(s) to trust instead of the system's roots.
    pub ca_file: Option<PathBuf>,
}

#[derive(Clone, Deserialize)]
pub struct RedisSettings {
    pub enabled: bool,
    /// May hold a password: never logged (see the `Debug` impl).
    pub url: String,
    pub ttl_seconds: u64,
    /// How long a "deleted" entry stays cached.
    pub deleted_ttl_seconds: u64,
    pub timeout_ms: u64,
    pub key_prefix: String,
    /// PEM CA(s) to trust for a `rediss://` URL (default: the system's roots).
    pub tls_ca_file: Option<PathBuf>,
    /// Overrides the user name / password of the URL when set.
    pub auth: Credentials,
}

#[derive(Debug, Clone, Deserialize)]
pub struct KafkaSettings {
    pub brokers: String,
    pub group_id: String,
    pub topics: KafkaTopics,
    pub partitions: i32,
    pub replication_factor: i32,
    /// Topic config `min.insync.replicas` for the topics we create: with
    /// acks=all a write is acknowledged only once this many replicas have it.
    pub min_insync_replicas: i32,
    /// `max.message.bytes` of the dead-letter topic we create: room for any
    /// record the command topics accept plus the provenance headers.
    pub dead_letter_max_message_bytes: usize,
    pub producer: ProducerSettings,
    pub consumer: ConsumerSettings,
    pub security: KafkaSecurity,
}

/// How every Kafka client of the service authenticates and encrypts.
#[derive(Debug, Clone, Deserialize)]
pub struct KafkaSecurity {
    pub protocol: KafkaSecurityProtocol,
    /// PEM CA(s) to trust for `ssl` / `sasl_ssl` (librdkafka `ssl.ca.location`).
    pub ssl_ca_file: Option<PathBuf>,
    pub sasl: SaslSettings,
}

/// librdkafka `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaSecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl KafkaSecurityProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    pub fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct SaslSettings {
    /// SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN.
    pub mechanism: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Wins over `password`.
    pub password_file: Option<PathBuf>,
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
    /// Static membership (KIP-345): a replica restarted within the session
    /// timeout gets its partitions back without a rebalance.
    pub group_instance_id: Option<String>,
    pub session_timeout_ms: u64,
    /// librdkafka `partition.assignment.strategy`.
    pub assignment_strategy: String,
    pub workers: usize,
    /// Records buffered per partition before it is paused, in count...
    pub partition_buffer: usize,
    /// ... and in bytes (payload + key).
    pub partition_buffer_bytes: usize,
    /// Most creates applied in one `insert_many` (1 = one by one), in count...
    pub create_batch_max: usize,
    /// ... and in bytes.
    pub create_batch_max_bytes: usize,
    /// librdkafka's prefetch queue (`queued.max.messages.kbytes`).
    pub fetch_queue_kbytes: usize,
    /// How long an update waits for its product's create before it is
    /// dead-lettered as `ProductNotFound`.
    pub not_found_wait_ms: u64,
    /// Updates waiting per partition before the partition stops taking new
    /// records.
    pub waiting_updates_max: usize,
    /// Attempts in all for an unclassified (internal) error; dependency
    /// outages are retried for as long as they last.
    pub retry_max_attempts: usize,
    pub retry_initial_backoff_ms: u64,
    /// How long one attempt to apply a record may take before it counts as
    /// the database being unavailable (and is retried).
    pub apply_timeout_ms: u64,
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
            .field("tls", &self.tls)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("enabled", &self.enabled)
            .field("url", &"<redacted>")
            .field("ttl_seconds", &self.ttl_seconds)
            .field("deleted_ttl_seconds", &self.deleted_ttl_seconds)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("auth", &self.auth)
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
    ("HTTP_HEADER_READ_TIMEOUT_MS", "http.header_read_timeout_ms"),
    ("HTTP_TLS_ENABLED", "http.tls.enabled"),
    ("HTTP_TLS_CERT_FILE", "http.tls.cert_file"),
    ("HTTP_TLS_KEY_FILE", "http.tls.key_file"),
    ("GRPC_ADDR", "grpc.addr"),
    ("GRPC_TLS_ENABLED", "grpc.tls.enabled"),
    ("GRPC_TLS_CERT_FILE", "grpc.tls.cert_file"),
    ("GRPC_TLS_KEY_FILE", "grpc.tls.key_file"),
    ("METRICS_ADDR", "metrics.addr"),
    ("MONGO_URI", "mongo.uri"),
    ("MONGO_DB", "mongo.database"),
    ("MONGO_COLLECTION", "mongo.collection"),
    ("MONGO_TLS_ENABLED", "mongo.tls.enabled"),
    ("MONGO_TLS_CA_FILE", "mongo.tls.ca_file"),
    ("MONGO_USERNAME", "mongo.auth.username"),
    ("MONGO_PASSWORD", "mongo.auth.password"),
    ("MONGO_PASSWORD_FILE", "mongo.auth.password_file"),
    ("KAFKA_BROKERS", "kafka.brokers"),
    ("KAFKA_GROUP_ID", "kafka.group_id"),
    (
        "KAFKA_GROUP_INSTANCE_ID",
        "kafka.consumer.group_instance_id",
    ),
    ("KAFKA_TOPIC_CREATE", "kafka.topics.create"),
    ("KAFKA_TOPIC_UPDATE", "kafka.topics.update"),
    ("KAFKA_TOPIC_DEAD_LETTER", "kafka.topics.dead_letter"),
    ("KAFKA_SECURITY_PROTOCOL", "kafka.security.protocol"),
    ("KAFKA_SSL_CA_FILE", "kafka.security.ssl_ca_file"),
    ("KAFKA_SASL_MECHANISM", "kafka.security.sasl.mechanism"),
    ("KAFKA_SASL_USERNAME", "kafka.security.sasl.username"),
    ("KAFKA_SASL_PASSWORD", "kafka.security.sasl.password"),
    (
        "KAFKA_SASL_PASSWORD_FILE",
        "kafka.security.sasl.password_file",
    ),
    ("REDIS_URL", "redis.url"),
    ("REDIS_ENABLED", "redis.enabled"),
    ("REDIS_TLS_CA_FILE", "redis.tls_ca_file"),
    ("REDIS_USERNAME", "redis.auth.username"),
    ("REDIS_PASSWORD", "redis.auth.password"),
    ("REDIS_PASSWORD_FILE", "redis.auth.password_file"),
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

    /// Reads every `*_file` secret into its value. Called once at startup
    /// (and by [`crate::server::Application::build`]); fails naming the file
    /// that cannot be read.
    pub fn resolve_secrets(&mut self) -> Result<(), SecretFileError> {
        self.mongo.auth.resolve()?;
        self.redis.auth.resolve()?;
        let sasl = &mut self.kafka.security.sasl;
        resolve_secret(&mut sasl.password, sasl.password_file.as_deref())
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
    fn topic_replication_defaults_to_one_broker_and_is_overridable() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(
            (s.kafka.replication_factor, s.kafka.min_insync_replicas),
            (1, 1)
        );
        let s = Settings::load_from(
            None,
            env(&[
                ("APP__KAFKA__REPLICATION_FACTOR", "3"),
                ("APP__KAFKA__MIN_INSYNC_REPLICAS", "2"),
            ]),
        )
        .unwrap();
        assert_eq!(
            (s.kafka.replication_factor, s.kafka.min_insync_replicas),
            (3, 2)
        );
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

    /// Every secret setting, each with its own value: none may show in
    /// `Debug` (plain or pretty), all must reach the settings.
    #[test]
    fn every_secret_field_is_redacted() {
        let secrets = [
            ("MONGO_URI", "mongodb://u:mongo-uri-secret@127.0.0.1"),
            ("MONGO_PASSWORD", "mongo-password-secret"),
            ("REDIS_URL", "rediss://u:redis-url-secret@127.0.0.1"),
            ("REDIS_PASSWORD", "redis-password-secret"),
            ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
            ("KAFKA_SASL_PASSWORD", "kafka-sasl-secret"),
        ];
        let s = Settings::load_from(None, env(&secrets)).unwrap();
        assert_eq!(
            s.mongo.auth.password.as_ref().map(Secret::expose),
            Some("mongo-password-secret")
        );
        assert_eq!(
            s.redis.auth.password.as_ref().map(Secret::expose),
            Some("redis-password-secret")
        );
        assert_eq!(
            s.kafka.security.sasl.password.as_ref().map(Secret::expose),
            Some("kafka-sasl-secret")
        );
        assert_eq!(s.kafka.security.protocol, KafkaSecurityProtocol::SaslSsl);
        for debug in [format!("{s:?}"), format!("{s:#?}")] {
            for secret in [
                "mongo-uri-secret",
                "mongo-password-secret",
                "redis-url-secret",
                "redis-password-secret",
                "kafka-sasl-secret",
            ] {
                assert!(!debug.contains(secret), "{secret} in {debug}");
            }
            assert!(debug.contains("<redacted>"));
        }
    }

    #[test]
    fn password_files_are_read_and_stay_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, content: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            path.to_string_lossy().into_owned()
        };
        let mongo = file("mongo", "mongo-file-secret\n");
        let redis = file("redis", "redis-file-secret");
        let kafka = file("kafka", "kafka-file-secret\r\n");
        let mut s = Settings::load_from(
            None,
            env(&[
                ("MONGO_PASSWORD", "inline-loses"),
                ("MONGO_PASSWORD_FILE", &mongo),
                ("REDIS_PASSWORD_FILE", &redis),
                ("KAFKA_SASL_PASSWORD_FILE", &kafka),
            ]),
        )
        .unwrap();
        s.resolve_secrets().unwrap();
        let expose = |secret: &Option<Secret>| secret.as_ref().map(|s| s.expose().to_owned());
        assert_eq!(
            expose(&s.mongo.auth.password).as_deref(),
            Some("mongo-file-secret")
        );
        assert_eq!(
            expose(&s.redis.auth.password).as_deref(),
            Some("redis-file-secret")
        );
        assert_eq!(
            expose(&s.kafka.security.sasl.password).as_deref(),
            Some("kafka-file-secret")
        );
        let debug = format!("{s:?}");
        assert!(!debug.contains("file-secret"), "{debug}");
        // Resolving again (Application::build does) changes nothing.
        s.resolve_secrets().unwrap();
        assert_eq!(
            expose(&s.mongo.auth.password).as_deref(),
            Some("mongo-file-secret")
        );
    }

    #[test]
    fn a_missing_secret_file_names_the_file_not_a_secret() {
        let mut s = Settings::load_from(
            None,
            env(&[("KAFKA_SASL_PASSWORD_FILE", "/nonexistent/kafka-password")]),
        )
        .unwrap();
        let err = s.resolve_secrets().unwrap_err().to_string();
        assert!(err.contains("/nonexistent/kafka-password"), "{err}");
    }

    #[test]
    fn tls_is_off_by_default_and_switchable_by_environment() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert!(!s.http.tls.enabled && !s.grpc.tls.enabled);
        assert_eq!(s.http.header_read_timeout_ms, 10_000);
        assert_eq!(s.kafka.security.protocol, KafkaSecurityProtocol::Plaintext);
        let s = Settings::load_from(
            None,
            env(&[
                ("HTTP_TLS_ENABLED", "true"),
                ("HTTP_TLS_CERT_FILE", "/certs/http.crt"),
                ("HTTP_TLS_KEY_FILE", "/certs/http.key"),
                ("HTTP_HEADER_READ_TIMEOUT_MS", "1500"),
                ("GRPC_TLS_ENABLED", "true"),
                ("GRPC_TLS_CERT_FILE", "/certs/grpc.crt"),
                ("GRPC_TLS_KEY_FILE", "/certs/grpc.key"),
                ("MONGO_TLS_CA_FILE", "/certs/mongo-ca.pem"),
                ("REDIS_TLS_CA_FILE", "/certs/redis-ca.pem"),
                ("KAFKA_SSL_CA_FILE", "/certs/kafka-ca.pem"),
                ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-256"),
                ("KAFKA_SASL_USERNAME", "products"),
            ]),
        )
        .unwrap();
        assert!(s.http.tls.enabled && s.grpc.tls.enabled);
        assert_eq!(s.http.tls.cert_file, Path::new("/certs/http.crt"));
        assert_eq!(s.http.tls.key_file, Path::new("/certs/http.key"));
        assert_eq!(s.grpc.tls.cert_file, Path::new("/certs/grpc.crt"));
        assert_eq!(s.grpc.tls.key_file, Path::new("/certs/grpc.key"));
        assert_eq!(s.http.header_read_timeout_ms, 1500);
        assert_eq!(
            s.mongo.tls.ca_file.as_deref(),
            Some(Path::new("/certs/mongo-ca.pem"))
        );
        assert_eq!(
            s.redis.tls_ca_file.as_deref(),
            Some(Path::new("/certs/redis-ca.pem"))
        );
        assert_eq!(
            s.kafka.security.ssl_ca_file.as_deref(),
            Some(Path::new("/certs/kafka-ca.pem"))
        );
        assert_eq!(s.kafka.security.sasl.mechanism, "SCRAM-SHA-256");
        assert_eq!(s.kafka.security.sasl.username.as_deref(), Some("products"));
    }
}
