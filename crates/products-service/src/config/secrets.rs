//! Credentials: [`Secret`] (never shown by `Debug`), user/password pairs,
//! the resolution of `*_file` settings, and the redacting `Debug` of the
//! settings that hold secrets.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{AuthSettings, JwtSettings, MongoSettings, RedisSettings, Settings};

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

impl Settings {
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

#[cfg(test)]
mod tests {
    use super::super::{test_env as env, KafkaSecurityProtocol, Secret, Settings};

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
}
