//! The typed settings, one struct per section of `config/default.yaml`.

use std::{net::SocketAddr, path::PathBuf};

use serde::Deserialize;

use super::{Credentials, SecretString};

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub http: HttpSettings,
    pub grpc: GrpcSettings,
    pub metrics: MetricsSettings,
    pub mongo: MongoSettings,
    pub redis: RedisSettings,
    pub kafka: KafkaSettings,
    pub events: EventsSettings,
    pub search: SearchSettings,
    pub telemetry: TelemetrySettings,
    pub auth: AuthSettings,
    pub rate_limit: RateLimitSettings,
    pub idempotency: IdempotencySettings,
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
#[derive(Debug, Clone, Deserialize)]
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
    pub api_keys: Vec<SecretString>,
    /// A file with one API key per line (`#` comments and blank lines ignored).
    pub api_keys_file: Option<PathBuf>,
}

/// JWT verification; active when a key (secret or public key) is configured.
#[derive(Debug, Clone, Deserialize)]
pub struct JwtSettings {
    /// The one accepted algorithm: HS256/384/512, RS256/384/512, PS256/384/512,
    /// ES256/384 or EdDSA. Tokens signed otherwise are rejected.
    pub algorithm: jsonwebtoken::Algorithm,
    /// HMAC secret (HS*), inline or from a file. Never logged.
    pub secret: Option<SecretString>,
    pub secret_file: Option<PathBuf>,
    /// PEM public key (RS*, PS*, ES*, EdDSA), inline or from a file. Not a
    /// secret, but not logged either.
    pub public_key_pem: Option<SecretString>,
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

/// `Idempotency-Key` on REST writes. Keys live in Redis, or in MongoDB when
/// `redis.enabled` is false.
#[derive(Debug, Clone, Deserialize)]
pub struct IdempotencySettings {
    /// `false`: the header is ignored.
    pub enabled: bool,
    /// How long a completed request's answer is replayed for its key.
    pub ttl_seconds: u64,
    /// How long a key stays "in progress" if its request never finishes (a
    /// crashed replica); keep it above `http.request_timeout_ms`.
    pub in_progress_ttl_ms: u64,
    /// A key-store call slower than this counts as the store being down (503).
    pub store_timeout_ms: u64,
    /// Prefix of the Redis keys.
    pub key_prefix: String,
    /// The MongoDB collection used when Redis is disabled.
    pub mongo_collection: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MetricsSettings {
    pub addr: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MongoSettings {
    /// May hold credentials: never logged.
    pub uri: SecretString,
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

#[derive(Debug, Clone, Deserialize)]
pub struct RedisSettings {
    pub enabled: bool,
    /// May hold a password: never logged.
    pub url: SecretString,
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
    pub password: Option<SecretString>,
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

/// Product change events (docs/EVENTS.md): one CloudEvent per stored change
/// on `topic`, published through the documents' embedded outbox.
#[derive(Debug, Clone, Deserialize)]
pub struct EventsSettings {
    pub enabled: bool,
    pub topic: String,
    /// The CloudEvents `source` attribute.
    pub source: String,
    /// The topic is created compacted with these when missing.
    pub partitions: i32,
    /// `retention.ms` of the topic; -1 keeps the latest event of every
    /// product for ever (compaction still drops superseded ones).
    pub retention_ms: i64,
    /// librdkafka `linger.ms` of the event producer.
    pub linger_ms: u64,
    pub relay: RelaySettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RelaySettings {
    /// A relay whose heartbeat has not changed for this long is dead: its
    /// events are published by the others.
    pub lease_ms: u64,
    /// How often the relay saves how far it got (and looks at the others).
    pub checkpoint_interval_ms: u64,
    /// Events stored and not yet acknowledged, at most; writes wait beyond.
    pub max_pending: usize,
}

/// Search (docs/SEARCH.md): from an in-memory index each replica keeps,
/// fed by the change events, or from the database.
#[derive(Debug, Clone, Deserialize)]
pub struct SearchSettings {
    /// Answer searches from the index (needs `events.enabled`); false: every
    /// search scans the database.
    pub index: bool,
    /// `/ready` reports the index `degraded` (it still answers) once it has
    /// not been known complete for this long.
    pub stale_after_ms: u64,
}
