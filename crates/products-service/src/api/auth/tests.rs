//! Unit tests of the authenticator: tokens, scopes, keys, configurations.

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

use std::sync::Arc;

use jsonwebtoken::AlgorithmFamily;

use super::*;
use crate::config::{AuthSettings, Settings};

const SECRET: &str = "unit-test-secret-unit-test-secret-0123";
const API_KEY: &str = "unit-test-api-key-0123456789";

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn settings() -> AuthSettings {
    let mut auth = Settings::load_from(None, Vec::new()).unwrap().auth;
    auth.enabled = true;
    auth.jwt.secret = Some(SECRET.into());
    auth.jwt.issuer = Some("https://issuer.test".to_owned());
    auth.jwt.audience = Some("products".to_owned());
    auth.api_keys = vec![API_KEY.into()];
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
    s.api_keys = vec!["short".into()];
    assert!(matches!(
        Authenticator::from_settings(&s),
        Err(AuthConfigError::ApiKeys(_))
    ));
    let mut s = settings();
    s.jwt.secret = Some("too-short".into());
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
    s.jwt.public_key_pem = Some("not a pem".into());
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
    s.jwt.public_key_pem = Some(key.public_key_pem().into());
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

#[test]
fn each_api_key_and_each_subject_is_a_caller_of_its_own() {
    let mut s = settings();
    s.api_keys.push("second-api-key-0123456789".into());
    let auth = authenticator(&s);
    let caller = |header: &str| auth.authenticate(Some(header)).unwrap().caller().to_owned();
    let first = caller(&bearer(API_KEY));
    assert_ne!(first, caller(&bearer("second-api-key-0123456789")));
    assert!(
        !first.contains(API_KEY),
        "the key itself is not the caller id"
    );
    let alice = caller(&bearer(&hs256(&claims())));
    let mut bob = claims();
    bob.insert("sub".into(), json!("bob"));
    assert_ne!(alice, caller(&bearer(&hs256(&bob))));
    assert_eq!(alice, caller(&bearer(&hs256(&claims()))), "stable");
}
