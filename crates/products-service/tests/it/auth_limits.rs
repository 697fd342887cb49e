//! Authentication against the real service and local stack: bearer tokens
//! (ES256 JWTs signed with a key pair generated here, and static API keys) on
//! REST and gRPC writes and optionally reads; the OpenAPI security scheme.
//! The limits (message size, timeouts, shedding, rate) are in `limits.rs`.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use products_service::{
    api::grpc::pb::{DeleteReq, GetByIdReq, SearchReq},
    config::Settings,
};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tonic::Code;

use crate::common::{
    grpc::create_req,
    products::{accepted_id, product_body},
    spawn_app_with, test_settings, unique, TestApp,
};

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "products-service";
const NO_PRODUCT: &str = "65a1f0c2e4b0a1b2c3d4e5f6";

/// A key pair and an API key made for one test, written where the service
/// reads them (files, as production would).
struct Credentials {
    signing_key: EncodingKey,
    api_key: String,
    dir: std::path::PathBuf,
}

impl Credentials {
    fn generate() -> Self {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let dir = std::env::temp_dir().join(unique("auth"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("jwt.pem"), key.public_key_pem()).unwrap();
        let api_key = format!("key-{}{}", unique("a"), unique("b"));
        std::fs::write(dir.join("api-keys"), format!("# test keys\n\n{api_key}\n")).unwrap();
        Self {
            signing_key: EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap(),
            api_key,
            dir,
        }
    }

    fn settings(&self, protect_reads: bool) -> Settings {
        let mut settings = test_settings();
        let auth = &mut settings.auth;
        auth.enabled = true;
        auth.protect_reads = protect_reads;
        auth.jwt.algorithm = Algorithm::ES256;
        auth.jwt.public_key_file = Some(self.dir.join("jwt.pem"));
        auth.jwt.issuer = Some(ISSUER.to_owned());
        auth.jwt.audience = Some(AUDIENCE.to_owned());
        auth.api_keys_file = Some(self.dir.join("api-keys"));
        settings
    }

    /// A signed token: valid claims with the write scope, then `changes`
    /// applied (a `null` removes a claim).
    fn token(&self, changes: Value) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut claims = json!({
            "sub": "test-client",
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + 300,
            "scope": "products:read products:write",
        });
        for (name, value) in changes.as_object().unwrap() {
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(name);
            } else {
                claims[name] = value.clone();
            }
        }
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.signing_key).unwrap()
    }

    fn valid(&self) -> String {
        self.token(json!({}))
    }

    /// Tokens that must be refused with 401 / Unauthenticated.
    fn invalid_tokens(&self) -> Vec<(&'static str, String)> {
        let now = chrono::Utc::now().timestamp();
        vec![
            ("garbage", "garbage".to_owned()),
            ("expired", self.token(json!({"exp": now - 600}))),
            (
                "wrong issuer",
                self.token(json!({"iss": "https://evil.test"})),
            ),
            ("wrong audience", self.token(json!({"aud": "billing"}))),
            ("no audience", self.token(json!({"aud": null}))),
            ("wrong api key", format!("{}x", self.api_key)),
        ]
    }

    fn without_write_scope(&self) -> String {
        self.token(json!({"scope": "products:read"}))
    }
}

impl Drop for Credentials {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> reqwest::Response {
    let mut request = app.client.request(method.clone(), app.url(path));
    if method == reqwest::Method::POST || method == reqwest::Method::PUT {
        request = request.json(&product_body("Guarded lamp"));
    }
    if let Some(token) = token {
        request = request.header("authorization", bearer(token));
    }
    request.send().await.unwrap()
}

/// Asserts a refusal: status, the JSON error body and (for 401/403) the
/// RFC 6750 challenge.
async fn assert_refused(response: reqwest::Response, status: StatusCode, what: &str) {
    assert_eq!(response.status(), status, "{what}");
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(challenge.starts_with("Bearer"), "{what}: {challenge:?}");
    if status == StatusCode::FORBIDDEN {
        assert!(challenge.contains("insufficient_scope"), "{challenge}");
    }
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16(), "{what}: {body}");
    assert!(body["error"].is_string(), "{body}");
    assert_eq!(body["causes"], json!([]), "{body}");
}

#[tokio::test]
async fn rest_writes_need_a_valid_token_with_the_write_scope() {
    let credentials = Credentials::generate();
    let app = spawn_app_with(credentials.settings(false)).await;
    use reqwest::Method;

    for (method, path) in [
        (Method::POST, "/api/v1/products".to_owned()),
        (Method::PUT, format!("/api/v1/products/{NO_PRODUCT}")),
        (Method::DELETE, format!("/api/v1/products/{NO_PRODUCT}")),
    ] {
        let response = send(&app, method.clone(), &path, None).await;
        assert_refused(response, StatusCode::UNAUTHORIZED, "no token").await;
        for (what, token) in credentials.invalid_tokens() {
            let response = send(&app, method.clone(), &path, Some(&token)).await;
            assert_refused(response, StatusCode::UNAUTHORIZED, what).await;
        }
        let response = send(
            &app,
            method.clone(),
            &path,
            Some(&credentials.without_write_scope()),
        )
        .await;
        assert_refused(response, StatusCode::FORBIDDEN, "no write scope").await;
    }

    // A Basic header is not a bearer token.
    let response = app
        .client
        .post(app.url("/api/v1/products"))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .json(&product_body("Guarded lamp"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // Allowed: a JWT with the scope, or an API key.
    for token in [credentials.valid(), credentials.api_key.clone()] {
        let created = send(&app, Method::POST, "/api/v1/products", Some(&token)).await;
        let id = accepted_id(created).await;
        let path = format!("/api/v1/products/{id}");
        let updated = send(&app, Method::PUT, &path, Some(&token)).await;
        assert_eq!(updated.status(), StatusCode::ACCEPTED);
        // Past authentication: the use case answers.
        let deleted = send(
            &app,
            Method::DELETE,
            &format!("/api/v1/products/{NO_PRODUCT}"),
            Some(&token),
        )
        .await;
        assert_eq!(deleted.status(), StatusCode::NOT_FOUND);
    }

    // Reads stay public by default.
    let read = send(
        &app,
        Method::GET,
        &format!("/api/v1/products/{NO_PRODUCT}"),
        None,
    )
    .await;
    assert_eq!(read.status(), StatusCode::NOT_FOUND);
    let search = send(&app, Method::GET, "/api/v1/products/search?search=x", None).await;
    assert_eq!(search.status(), StatusCode::OK);
}

#[tokio::test]
async fn protected_reads_need_a_valid_token_but_probes_and_docs_stay_public() {
    let credentials = Credentials::generate();
    let app = spawn_app_with(credentials.settings(true)).await;
    use reqwest::Method;

    for path in [
        "/api/v1/products/search?search=x".to_owned(),
        format!("/api/v1/products/{NO_PRODUCT}"),
    ] {
        let response = send(&app, Method::GET, &path, None).await;
        assert_refused(response, StatusCode::UNAUTHORIZED, "no token").await;
        for (what, token) in credentials.invalid_tokens() {
            let response = send(&app, Method::GET, &path, Some(&token)).await;
            assert_refused(response, StatusCode::UNAUTHORIZED, what).await;
        }
        // Reading needs no write scope.
        for token in [
            credentials.without_write_scope(),
            credentials.api_key.clone(),
        ] {
            let response = send(&app, Method::GET, &path, Some(&token)).await;
            assert!(
                [StatusCode::OK, StatusCode::NOT_FOUND].contains(&response.status()),
                "{path}: {}",
                response.status()
            );
        }
    }
    for path in [
        "/health",
        "/ready",
        "/api-docs/openapi.json",
        "/swagger/index.html",
    ] {
        let response = send(&app, Method::GET, path, None).await;
        assert_ne!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert!(!response.status().is_client_error(), "{path}");
    }

    // gRPC reads are protected the same way.
    let mut grpc = app.grpc_client().await;
    let search = || SearchReq {
        search: "x".to_owned(),
        page: 1,
        size: 10,
    };
    let err = grpc.search(search()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = grpc
        .get_by_id(with_token(
            GetByIdReq {
                product_id: NO_PRODUCT.to_owned(),
            },
            "garbage",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    grpc.search(with_token(search(), &credentials.without_write_scope()))
        .await
        .unwrap();
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", bearer(token).parse().unwrap());
    request
}

#[tokio::test]
async fn grpc_writes_need_a_valid_token_with_the_write_scope() {
    let credentials = Credentials::generate();
    let app = spawn_app_with(credentials.settings(false)).await;
    let mut grpc = app.grpc_client().await;

    let err = grpc.create(create_req("Grpc guarded")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    for (what, token) in credentials.invalid_tokens() {
        let err = grpc
            .create(with_token(create_req("Grpc guarded"), &token))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{what}: {err:?}");
        let err = grpc
            .delete(with_token(
                DeleteReq {
                    product_id: NO_PRODUCT.to_owned(),
                },
                &token,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{what}: {err:?}");
    }
    let err = grpc
        .create(with_token(
            create_req("Grpc guarded"),
            &credentials.without_write_scope(),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    for token in [credentials.valid(), credentials.api_key.clone()] {
        let created = grpc
            .create(with_token(create_req("Grpc guarded"), &token))
            .await
            .unwrap()
            .into_inner()
            .product
            .unwrap();
        // Reads are public by default.
        let read = grpc
            .get_by_id(GetByIdReq {
                product_id: created.product_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(read.product.unwrap().name, "Grpc guarded");
        let err = grpc
            .delete(DeleteReq {
                product_id: created.product_id.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
        grpc.delete(with_token(
            DeleteReq {
                product_id: created.product_id,
            },
            &token,
        ))
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn openapi_declares_the_bearer_scheme_on_writes() {
    let app = spawn_app_with(test_settings()).await;
    let doc = app.get_json("/api-docs/openapi.json").await;
    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "http", "{scheme}");
    assert_eq!(scheme["scheme"], "bearer", "{scheme}");
    assert_eq!(scheme["bearerFormat"], "JWT", "{scheme}");
    for (path, method) in [
        ("/api/v1/products", "post"),
        ("/api/v1/products/{id}", "put"),
        ("/api/v1/products/{id}", "delete"),
    ] {
        let operation = &doc["paths"][path][method];
        assert_eq!(
            operation["security"],
            json!([{"bearer": []}]),
            "{method} {path}"
        );
        for status in ["401", "403"] {
            assert!(
                operation["responses"][status].is_object(),
                "{method} {path} {status}"
            );
        }
    }
    // Reads: anonymous or with the token (required only with protect_reads).
    for (path, method) in [
        ("/api/v1/products/{id}", "get"),
        ("/api/v1/products/search", "get"),
    ] {
        let operation = &doc["paths"][path][method];
        assert_eq!(
            operation["security"],
            json!([{}, {"bearer": []}]),
            "{method} {path}"
        );
    }
    assert!(doc["paths"]["/health"]["get"]["security"].is_null());
}
