//! Building an [`Authenticator`] from [`AuthSettings`]: the JWT key (inline
//! or from a file, checked against the one algorithm accepted) and the API
//! keys (inline and from a file). A configuration that cannot work is an
//! [`AuthConfigError`] and the service does not start. Files are read by
//! `config::read_secret_file`, as every other `*_file` setting.

use std::{path::Path, sync::Arc};

use jsonwebtoken::{AlgorithmFamily, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretSlice, SecretString};

use super::{Authenticator, JwtVerifier};
use crate::config::{read_secret_file, AuthSettings, SecretFileError};

/// Shortest HMAC secret accepted (RFC 7518 §3.2: at least the hash size).
const MIN_SECRET_BYTES: usize = 32;
/// Shortest static API key accepted.
const MIN_API_KEY_CHARS: usize = 16;

/// A configuration that cannot work; the service refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("{what}: {source}")]
    File {
        what: &'static str,
        #[source]
        source: SecretFileError,
    },
    #[error("auth.jwt: {0}")]
    Jwt(String),
    #[error("auth.api_keys: {0}")]
    ApiKeys(String),
    #[error("auth is enabled but neither a JWT key nor an API key is configured")]
    NothingConfigured,
}

fn read_file(what: &'static str, path: &Path) -> Result<SecretString, AuthConfigError> {
    read_secret_file(path).map_err(|source| AuthConfigError::File { what, source })
}

/// The inline value, else the file's content, else nothing.
fn inline_or_file(
    what: &'static str,
    inline: Option<&SecretString>,
    file: Option<&Path>,
) -> Result<Option<SecretString>, AuthConfigError> {
    match (inline, file) {
        (Some(value), _) => Ok(Some(value.clone())),
        (None, Some(path)) => read_file(what, path).map(Some),
        (None, None) => Ok(None),
    }
}

impl Authenticator {
    /// `None` when auth is disabled: every request is let through.
    pub fn from_settings(settings: &AuthSettings) -> Result<Option<Arc<Self>>, AuthConfigError> {
        if !settings.enabled {
            return Ok(None);
        }
        // Only the backend this crate enables is linked; installing it
        // explicitly keeps another crate's feature choice from changing it.
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();

        let jwt = Self::jwt_verifier(settings)?;
        let mut api_keys: Vec<SecretString> = settings.api_keys.clone();
        if let Some(path) = &settings.api_keys_file {
            api_keys.extend(
                read_file("API keys", path)?
                    .expose_secret()
                    .lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty() && !line.starts_with('#'))
                    .map(SecretString::from),
            );
        }
        if let Some(short) = api_keys
            .iter()
            .position(|k| k.expose_secret().chars().count() < MIN_API_KEY_CHARS)
        {
            return Err(AuthConfigError::ApiKeys(format!(
                "key #{} is shorter than {MIN_API_KEY_CHARS} characters",
                short + 1
            )));
        }
        if jwt.is_none() && api_keys.is_empty() {
            return Err(AuthConfigError::NothingConfigured);
        }
        Ok(Some(Arc::new(Self {
            protect_reads: settings.protect_reads,
            scope_claim: settings.scope_claim.clone(),
            write_scope: settings.write_scope.clone(),
            jwt,
            api_keys: api_keys
                .iter()
                .map(|key| SecretSlice::from(key.expose_secret().as_bytes().to_vec()))
                .collect(),
        })))
    }

    fn jwt_verifier(settings: &AuthSettings) -> Result<Option<JwtVerifier>, AuthConfigError> {
        let jwt = &settings.jwt;
        let algorithm = jwt.algorithm;
        let family = algorithm.family();
        let has_secret = jwt.secret.is_some() || jwt.secret_file.is_some();
        let has_public_key = jwt.public_key_pem.is_some() || jwt.public_key_file.is_some();
        if (family == AlgorithmFamily::Hmac && has_public_key)
            || (family != AlgorithmFamily::Hmac && has_secret)
        {
            return Err(AuthConfigError::Jwt(format!(
                "{algorithm:?} verifies with {}",
                if family == AlgorithmFamily::Hmac {
                    "a secret (secret/secret_file), not a public key"
                } else {
                    "a public key (public_key_pem/public_key_file), not a secret"
                }
            )));
        }
        let key = if family == AlgorithmFamily::Hmac {
            let Some(secret) = inline_or_file(
                "JWT secret",
                jwt.secret.as_ref(),
                jwt.secret_file.as_deref(),
            )?
            else {
                return Ok(None);
            };
            // A trailing newline from `echo > file` is not part of the secret.
            let secret = secret.expose_secret().trim_end_matches(['\r', '\n']);
            if secret.len() < MIN_SECRET_BYTES {
                return Err(AuthConfigError::Jwt(format!(
                    "the {algorithm:?} secret must be at least {MIN_SECRET_BYTES} bytes"
                )));
            }
            DecodingKey::from_secret(secret.as_bytes())
        } else {
            let Some(pem) = inline_or_file(
                "JWT public key",
                jwt.public_key_pem.as_ref(),
                jwt.public_key_file.as_deref(),
            )?
            else {
                return Ok(None);
            };
            let pem = pem.expose_secret().as_bytes();
            let parsed = match family {
                AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(pem),
                AlgorithmFamily::Ec => DecodingKey::from_ec_pem(pem),
                _ => DecodingKey::from_ed_pem(pem),
            };
            parsed.map_err(|e| {
                AuthConfigError::Jwt(format!("public key is not a {algorithm:?} PEM key: {e}"))
            })?
        };

        let mut validation = Validation::new(algorithm);
        validation.leeway = jwt.leeway_secs;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(issuer) = &jwt.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &jwt.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            // Without a configured audience, a token's `aud` is not checked.
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Ok(Some(JwtVerifier { key, validation }))
    }
}
