//! Who may call the product APIs: bearer tokens that are either JWTs
//! (verified against the configured key, one algorithm, `exp` enforced,
//! `iss`/`aud` when configured) or static API keys (compared in constant
//! time). Protocol-independent: REST and gRPC map [`AuthError`] to 401/403 and
//! Unauthenticated/PermissionDenied. Tokens and keys are never logged.
//!
//! [`keys`] builds the [`Authenticator`] from the settings (key files,
//! algorithm checks).

use std::collections::HashMap;

use jsonwebtoken::{DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretSlice};
use serde_json::Value;
use subtle::{Choice, ConstantTimeEq};

pub use self::keys::AuthConfigError;

mod keys;

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

/// Who made the request, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `sub` of a JWT, or `api-key` for a static key.
    pub subject: String,
    scopes: Scopes,
    /// Who this is, for scoping what callers keep apart (idempotency keys):
    /// `jwt:{iss}:{sub}`, or `api-key:{SHA-256 of the key}` so that each key
    /// is a caller of its own. Not a secret, but not logged either.
    caller: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Scopes {
    /// Static API keys may do everything.
    All,
    Listed(Vec<String>),
}

impl Principal {
    /// The caller's identity (see the field); stable across requests.
    pub fn caller(&self) -> &str {
        &self.caller
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        match &self.scopes {
            Scopes::All => true,
            Scopes::Listed(scopes) => scopes.iter().any(|s| s == scope),
        }
    }
}

#[derive(Debug)]
pub(super) struct JwtVerifier {
    pub(super) key: DecodingKey,
    pub(super) validation: Validation,
}

/// Verifies bearer tokens and decides whether they allow an [`Access`].
/// `Debug` shows no key: `DecodingKey` and `SecretSlice` redact theirs.
#[derive(Debug)]
pub struct Authenticator {
    pub(super) protect_reads: bool,
    pub(super) scope_claim: String,
    pub(super) write_scope: String,
    pub(super) jwt: Option<JwtVerifier>,
    pub(super) api_keys: Vec<SecretSlice<u8>>,
}

impl Authenticator {
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
                caller: format!(
                    "api-key:{}",
                    crate::idempotency::sha256_hex(token.as_bytes())
                ),
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
        let claim = |name: &str| claims.get(name).and_then(Value::as_str).unwrap_or_default();
        Ok(Principal {
            subject: claim("sub").to_owned(),
            scopes: Scopes::Listed(scopes(claims.get(&self.scope_claim))),
            caller: format!(
                "jwt:{}:{}:{}",
                claim("iss").len(),
                claim("iss"),
                claim("sub")
            ),
        })
    }

    /// Compares against every key without stopping at a match, each in
    /// constant time, so timing tells nothing about which bytes matched.
    fn is_api_key(&self, token: &str) -> bool {
        let token = token.as_bytes();
        self.api_keys
            .iter()
            .fold(Choice::from(0), |found, key| {
                found | key.expose_secret().ct_eq(token)
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
mod tests;
