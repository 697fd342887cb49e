//! Loading: the compiled-in defaults, then an optional file, then `APP__…`
//! variables, then the well-known variables (`HTTP_ADDR`, `MONGO_URI`, …).

use std::path::Path;

use super::Settings;

/// The defaults, compiled in so the binary runs from any directory.
const DEFAULTS: &str = include_str!("../../../../config/default.yaml");

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
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{test_env as env, ExposeSecret, KafkaSecurityProtocol, LogFormat, Settings};

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
        assert_eq!(s.mongo.uri.expose_secret(), "mongodb://127.0.0.1:1");
        assert_eq!(s.mongo.database, "other");
        assert_eq!(s.kafka.brokers, "127.0.0.1:19092");
        assert_eq!(s.redis.url.expose_secret(), "redis://127.0.0.1:1");
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
