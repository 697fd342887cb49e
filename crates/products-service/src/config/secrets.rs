//! Credentials. Every secret setting (passwords, URIs that may carry them,
//! the JWT secret and key, API keys) is a [`SecretString`] from `secrecy`:
//! `Debug` shows `[REDACTED]`, and the value is read only through
//! [`ExposeSecret::expose_secret`] where it is handed to a client library.
//! [`read_secret_file`] is the one reader of `*_file` settings, for these
//! credentials and for `api::auth` alike.

use std::path::{Path, PathBuf};

pub use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::Settings;

/// A user name and password given inline or, better, as a file mounted at
/// runtime (`password_file`, which wins over `password`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<SecretString>,
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

/// Reads a secret from `path`. One trailing newline (`\n` or `\r\n`) is
/// dropped, as files written by `echo` or editors end with one.
pub fn read_secret_file(path: &Path) -> Result<SecretString, SecretFileError> {
    let content = std::fs::read_to_string(path).map_err(|source| SecretFileError {
        path: path.to_owned(),
        source,
    })?;
    let trimmed = content
        .strip_suffix('\n')
        .map(|s| s.strip_suffix('\r').unwrap_or(s))
        .unwrap_or(&content);
    Ok(SecretString::from(trimmed))
}

/// Replaces `secret` with the content of `file`, if one is set.
fn resolve(secret: &mut Option<SecretString>, file: Option<&Path>) -> Result<(), SecretFileError> {
    if let Some(path) = file {
        *secret = Some(read_secret_file(path)?);
    }
    Ok(())
}

impl Credentials {
    /// Reads `password_file` (if set) into `password`.
    pub fn resolve(&mut self) -> Result<(), SecretFileError> {
        resolve(&mut self.password, self.password_file.as_deref())
    }
}

impl Settings {
    /// Reads every `*_file` password into its value. Called once at startup
    /// (and by [`crate::server::Application::build`]); fails naming the file
    /// that cannot be read. (The JWT key and API key files are read when the
    /// authenticator is built, by the same [`read_secret_file`].)
    pub fn resolve_secrets(&mut self) -> Result<(), SecretFileError> {
        self.mongo.auth.resolve()?;
        self.redis.auth.resolve()?;
        let sasl = &mut self.kafka.security.sasl;
        resolve(&mut sasl.password, sasl.password_file.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{test_env as env, KafkaSecurityProtocol, Settings};
    use super::{ExposeSecret, SecretString};

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
        assert_eq!(
            s.auth.jwt.secret.as_ref().map(ExposeSecret::expose_secret),
            Some("hunter2-jwt-secret")
        );
        s.auth.api_keys = vec!["hunter2-api-key".into()];
        s.auth.jwt.public_key_pem = Some("hunter2-pem".into());
        let debug = format!("{s:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("[REDACTED]"), "{debug}");
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
            s.mongo
                .auth
                .password
                .as_ref()
                .map(ExposeSecret::expose_secret),
            Some("mongo-password-secret")
        );
        assert_eq!(
            s.redis
                .auth
                .password
                .as_ref()
                .map(ExposeSecret::expose_secret),
            Some("redis-password-secret")
        );
        assert_eq!(
            s.kafka
                .security
                .sasl
                .password
                .as_ref()
                .map(ExposeSecret::expose_secret),
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
            assert!(debug.contains("[REDACTED]"));
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
        let expose =
            |secret: &Option<SecretString>| secret.as_ref().map(|s| s.expose_secret().to_owned());
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
