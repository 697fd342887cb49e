//! Who may call the product APIs: bearer tokens that are either JWTs
//! (verified against the configured key, one algorithm, `exp` enforced,
//! `iss`/`aud` when configured) or static API keys (compared in constant
//! time). Protocol-independent: REST and gRPC map [`AuthError`] to 401/403 and
//! Unauthenticated/PermissionDenied. Tokens and keys are never logged.

use std::{collections::HashMap, path::Path, sync::Arc};

use jsonwebtoken::{AlgorithmFamily, DecodingKey, Validation};
use serde_json::Value;
use subtle::{Choice, ConstantTimeEq};

use crate::config::AuthSettings;

/// Shortest HMAC secret accepted (RFC 7518 §3.2: at least the hash size).
const MIN_SECRET_BYTES: usize = 32;
/// Shortest static API key accepted.
const MIN_API_KEY_CHARS: usize = 16;

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer …` at all (401).
    #[error("missing bearer token")]
    Missing,
    /// A token that is malformed, badly signed, expired or for someone else
    /// (401). The reason is logged at debug level, never sent.
    #[error("invalid or expired token")]
    Invalid,
    /// A valid token without the scope the operation needs (403).
    #[error("token lacks the scope {0}")]
    Forbidden(String),
}

/// A configuration that cannot work; the service refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("cannot read {what} from {path}: {source}")]
    File {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("auth.jwt: {0}")]
    Jwt(String),
    #[error("auth.api_keys: {0}")]
    ApiKeys(String),
    #[error("auth is enabled but neither a JWT key nor an API key is configured")]
    NothingConfigured,
}

/// Who made the request, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `sub` of a JWT, or `api-key` for a static key.
    pub subject: String,
    scopes: Scopes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Scopes {
    /// Static API keys may do everything.
    All,
    Listed(Vec<String>),
}

impl Principal {
    pub fn has_scope(&self, scope: &str) -> bool {
        match &self.scopes {
            Scopes::All => true,
            Scopes::Listed(scopes) => scopes.iter().any(|s| s == scope),
        }
    }
}

struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

/// Verifies bearer tokens and decides whether they allow an [`Access`].
pub struct Authenticator {
    protect_reads: bool,
    scope_claim: String,
    write_scope: String,
    jwt: Option<JwtVerifier>,
    api_keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("protect_reads", &self.protect_reads)
            .field("write_scope", &self.write_scope)
            .field("jwt", &self.jwt.is_some())
            .field("api_keys", &self.api_keys.len())
            .finish()
    }
}

fn read_file(what: &'static str, path: &Path) -> Result<String, AuthConfigError> {
    std::fs::read_to_string(path).map_err(|source| AuthConfigError::File {
        what,
        path: path.display().to_string(),
        source,
    })
}

/// The inline value, else the file's content, else nothing.
fn inline_or_file(
    what: &'static str,
    inline: Option<&String>,
    file: Option<&Path>,
) -> Result<Option<String>, AuthConfigError> {
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
        let mut api_keys: Vec<String> = settings.api_keys.clone();
        if let Some(path) = &settings.api_keys_file {
            api_keys.extend(
                read_file("API keys", path)?
                    .lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty() && !line.starts_with('#'))
                    .map(str::to_owned),
            );
        }
        if let Some(short) = api_keys
            .iter()
            .position(|k| k.chars().count() < MIN_API_KEY_CHARS)
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
            api_keys: api_keys.into_iter().map(String::into_bytes).collect(),
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
            let secret = secret.trim_end_matches(['\r', '\n']);
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
            let pem = pem.as_bytes();
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

    /// Whether this access needs a token at all.
    pub fn requires_token(&self, access: Access) -> bool {
        access == Access::Write || self.protect_reads
    }

    /// Checks the `Authorization` header value (or gRPC `authorization`
    /// metadata) for `access`.
    pub fn authorize(
        &self,
        authorization: Option<&str>,
        access: Access,
    ) -> Result<Option<Principal>, AuthError> {
        if !self.requires_token(access) {
            return Ok(None);
        }
        let principal = self.authenticate(authorization)?;
        if access == Access::Write && !principal.has_scope(&self.write_scope) {
            return Err(AuthError::Forbidden(self.write_scope.clone()));
        }
        Ok(Some(principal))
    }

    /// Who the bearer token names, if it is valid.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        let token = bearer_token(authorization.ok_or(AuthError::Missing)?)?;
        if self.is_api_key(token) {
            return Ok(Principal {
                subject: "api-key".to_owned(),
                scopes: Scopes::All,
            });
        }
        let Some(jwt) = &self.jwt else {
            return Err(AuthError::Invalid);
        };
        let claims =
            jsonwebtoken::decode::<HashMap<String, Value>>(token, &jwt.key, &jwt.validation)
                .map_err(|e| {
                    tracing::debug!(reason = %e, "bearer token rejected");
                    AuthError::Invalid
                })?
                .claims;
        Ok(Principal {
            subject: claims
                .get("sub")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            scopes: Scopes::Listed(scopes(claims.get(&self.scope_claim))),
        })
    }

    /// Compares against every key without stopping at a match, each in
    /// constant time, so timing tells nothing about which bytes matched.
    fn is_api_key(&self, token: &str) -> bool {
        let token = token.as_bytes();
        self.api_keys
            .iter()
            .fold(Choice::from(0), |found, key| {
                found | key.as_slice().ct_eq(token)
            })
            .into()
    }

    /// The scope a write needs (for `WWW-Authenticate`).
    pub fn write_scope(&self) -> &str {
        &self.write_scope
    }
}

/// `Bearer <token>` (scheme case-insensitive, RFC 6750 §2.1).
fn bearer_token(header: &str) -> Result<&str, AuthError> {
    let (scheme, token) = header.trim().split_once(' ').ok_or(AuthError::Invalid)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::Invalid);
    }
    Ok(token)
}

/// A scope claim: `"a b c"` (OAuth 2) or `["a", "b"]` (as `scp`/`roles` often are).
fn scopes(claim: Option<&Value>) -> Vec<String> {
    match claim {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    use serde_json::json;

    use super::*;
    use crate::config::Settings;

    const SECRET: &str = "unit-test-secret-unit-test-secret-0123";
    const API_KEY: &str = "unit-test-api-key-0123456789";

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn settings() -> AuthSettings {
        let mut auth = Settings::load_from(None, Vec::new()).unwrap().auth;
        auth.enabled = true;
        auth.jwt.secret = Some(SECRET.to_owned());
        auth.jwt.issuer = Some("https://issuer.test".to_owned());
        auth.jwt.audience = Some("products".to_owned());
        auth.api_keys = vec![API_KEY.to_owned()];
        auth
    }

    fn authenticator(settings: &AuthSettings) -> Arc<Authenticator> {
        Authenticator::from_settings(settings).unwrap().unwrap()
    }

    fn claims() -> serde_json::Map<String, Value> {
        json!({
            "sub": "alice",
            "iss": "https://issuer.test",
            "aud": "products",
            "exp": now() + 300,
            "scope": "openid products:write",
        })
        .as_object()
        .unwrap()
        .clone()
    }

    fn hs256(claims: &serde_json::Map<String, Value>) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    #[test]
    fn disabled_means_no_authenticator() {
        let mut s = settings();
        s.enabled = false;
        assert!(Authenticator::from_settings(&s).unwrap().is_none());
    }

    #[test]
    fn valid_token_with_scope_may_write() {
        let auth = authenticator(&settings());
        let principal = auth
            .authorize(Some(&bearer(&hs256(&claims()))), Access::Write)
            .unwrap()
            .unwrap();
        assert_eq!(principal.subject, "alice");
        // The scheme is case-insensitive.
        assert!(auth
            .authorize(Some(&format!("bearer {}", hs256(&claims()))), Access::Write)
            .is_ok());
    }

    #[test]
    fn scope_claim_may_be_an_array_and_renamed() {
        let mut s = settings();
        s.scope_claim = "scp".to_owned();
        let auth = authenticator(&s);
        let mut c = claims();
        c.remove("scope");
        c.insert("scp".into(), json!(["products:read", "products:write"]));
        assert!(auth
            .authorize(Some(&bearer(&hs256(&c))), Access::Write)
            .is_ok());
    }

    #[test]
    fn missing_scope_is_forbidden_but_may_read() {
        let mut s = settings();
        s.protect_reads = true;
        let auth = authenticator(&s);
        let mut c = claims();
        c.insert("scope".into(), json!("products:read"));
        let header = bearer(&hs256(&c));
        assert_eq!(
            auth.authorize(Some(&header), Access::Write),
            Err(AuthError::Forbidden("products:write".into()))
        );
        assert!(auth.authorize(Some(&header), Access::Read).is_ok());
    }

    #[test]
    fn reads_are_public_unless_protected() {
        let auth = authenticator(&settings());
        assert_eq!(auth.authorize(None, Access::Read), Ok(None));
        assert_eq!(auth.authorize(None, Access::Write), Err(AuthError::Missing));
        let mut s = settings();
        s.protect_reads = true;
        let auth = authenticator(&s);
        assert_eq!(auth.authorize(None, Access::Read), Err(AuthError::Missing));
    }

    #[test]
    fn bad_tokens_are_invalid() {
        let auth = authenticator(&settings());
        let expired = {
            let mut c = claims();
            // Beyond the 30 s leeway.
            c.insert("exp".into(), json!(now() - 120));
            hs256(&c)
        };
        let within_leeway = {
            let mut c = claims();
            c.insert("exp".into(), json!(now() - 5));
            hs256(&c)
        };
        let wrong_issuer = {
            let mut c = claims();
            c.insert("iss".into(), json!("https://evil.test"));
            hs256(&c)
        };
        let wrong_audience = {
            let mut c = claims();
            c.insert("aud".into(), json!("billing"));
            hs256(&c)
        };
        let no_exp = {
            let mut c = claims();
            c.remove("exp");
            hs256(&c)
        };
        let not_yet = {
            let mut c = claims();
            c.insert("nbf".into(), json!(now() + 600));
            hs256(&c)
        };
        let other_key = encode(
            &Header::new(Algorithm::HS256),
            &claims(),
            &EncodingKey::from_secret(b"another-secret-another-secret-0123456"),
        )
        .unwrap();
        let other_alg = encode(
            &Header::new(Algorithm::HS512),
            &claims(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        let unsigned = {
            let token = hs256(&claims());
            let (unsigned, _) = token.rsplit_once('.').unwrap();
            format!("{unsigned}.")
        };
        for (what, header) in [
            ("expired", bearer(&expired)),
            ("wrong issuer", bearer(&wrong_issuer)),
            ("wrong audience", bearer(&wrong_audience)),
            ("no exp", bearer(&no_exp)),
            ("not yet valid", bearer(&not_yet)),
            ("other key", bearer(&other_key)),
            ("other algorithm", bearer(&other_alg)),
            ("no signature", bearer(&unsigned)),
            ("garbage", bearer("not-a-token")),
            ("empty", "Bearer ".to_owned()),
            ("basic", "Basic dXNlcjpwYXNz".to_owned()),
            ("no scheme", hs256(&claims())),
            ("wrong api key", bearer("unit-test-api-key-0123456788")),
        ] {
            assert_eq!(
                auth.authorize(Some(&header), Access::Write),
                Err(AuthError::Invalid),
                "{what}"
            );
        }
        assert!(auth
            .authorize(Some(&bearer(&within_leeway)), Access::Write)
            .is_ok());
    }

    #[test]
    fn api_keys_come_inline_or_from_a_file() {
        let dir = std::env::temp_dir().join(format!("auth-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("keys");
        std::fs::write(&file, "# rotated 2026-01\n\nfile-api-key-0123456789\n").unwrap();
        let mut s = settings();
        s.api_keys_file = Some(file);
        let auth = authenticator(&s);
        for key in [API_KEY, "file-api-key-0123456789"] {
            let p = auth
                .authorize(Some(&bearer(key)), Access::Write)
                .unwrap()
                .unwrap();
            assert_eq!(p.subject, "api-key");
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn unusable_configurations_are_refused() {
        let mut s = settings();
        s.api_keys = vec!["short".to_owned()];
        assert!(matches!(
            Authenticator::from_settings(&s),
            Err(AuthConfigError::ApiKeys(_))
        ));
        let mut s = settings();
        s.jwt.secret = Some("too-short".to_owned());
        assert!(matches!(
            Authenticator::from_settings(&s),
            Err(AuthConfigError::Jwt(_))
        ));
        let mut s = settings();
        s.jwt.secret = None;
        s.api_keys.clear();
        assert!(matches!(
            Authenticator::from_settings(&s),
            Err(AuthConfigError::NothingConfigured)
        ));
        let mut s = settings();
        s.jwt.algorithm = Algorithm::ES256;
        assert!(
            matches!(
                Authenticator::from_settings(&s),
                Err(AuthConfigError::Jwt(_))
            ),
            "ES256 with a secret"
        );
        s.jwt.secret = None;
        s.jwt.public_key_pem = Some("not a pem".to_owned());
        assert!(matches!(
            Authenticator::from_settings(&s),
            Err(AuthConfigError::Jwt(_))
        ));
        let mut s = settings();
        s.jwt.secret = None;
        s.jwt.secret_file = Some("/nonexistent/secret".into());
        let err = Authenticator::from_settings(&s).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/secret"), "{err}");
    }

    fn verifies_against_a_public_key(
        algorithm: Algorithm,
        key_algorithm: &'static rcgen::SignatureAlgorithm,
    ) {
        let key = rcgen::KeyPair::generate_for(key_algorithm).unwrap();
        let mut s = settings();
        s.jwt.algorithm = algorithm;
        s.jwt.secret = None;
        s.jwt.public_key_pem = Some(key.public_key_pem());
        let auth = authenticator(&s);
        let private = key.serialize_pem();
        let signing_key = match algorithm.family() {
            AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(private.as_bytes()),
            _ => EncodingKey::from_ec_pem(private.as_bytes()),
        }
        .unwrap();
        let token = encode(&Header::new(algorithm), &claims(), &signing_key).unwrap();
        assert!(auth.authorize(Some(&bearer(&token)), Access::Write).is_ok());
        // An HS256 token "signed" with the public key is the classic
        // algorithm-confusion attack: only the configured algorithm passes.
        let confused = encode(
            &Header::new(Algorithm::HS256),
            &claims(),
            &EncodingKey::from_secret(key.public_key_pem().as_bytes()),
        )
        .unwrap();
        assert_eq!(
            auth.authorize(Some(&bearer(&confused)), Access::Write),
            Err(AuthError::Invalid)
        );
    }

    #[test]
    fn es256_tokens_verify_against_a_public_key() {
        verifies_against_a_public_key(Algorithm::ES256, &rcgen::PKCS_ECDSA_P256_SHA256);
    }

    #[test]
    fn rs256_tokens_verify_against_a_public_key() {
        verifies_against_a_public_key(Algorithm::RS256, &rcgen::PKCS_RSA_SHA256);
    }

    #[test]
    fn debug_output_shows_no_keys() {
        let auth = authenticator(&settings());
        let debug = format!("{auth:?}");
        assert!(
            !debug.contains(API_KEY) && !debug.contains(SECRET),
            "{debug}"
        );
    }
}
