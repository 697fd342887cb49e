//! Typed configuration: `config/default.yaml`, then an optional override
//! file, then environment variables. Loaded once at startup into [`Settings`];
//! nothing else in the service reads the environment.

use std::{net::SocketAddr, path::Path};

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
    pub shutdown_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    pub addr: SocketAddr,
    pub body_limit_bytes: usize,
    pub request_timeout_ms: u64,
    pub cors_allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GrpcSettings {
    pub addr: SocketAddr,
    pub max_message_bytes: usize,
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
    /// Topic config `min.insync.replicas` for the topics we create: with
    /// acks=all a write is acknowledged only once this many replicas have it.
    pub min_insync_replicas: i32,
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
        let s = Settings::load_from(
            None,
            env(&[
                ("MONGO_URI", "mongodb://user:hunter2@127.0.0.1"),
                ("REDIS_URL", "redis://:hunter2@127.0.0.1"),
            ]),
        )
        .unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
