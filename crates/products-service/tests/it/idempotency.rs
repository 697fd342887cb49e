//! `Idempotency-Key` on REST writes, against the real service and stack:
//! a retried POST replays the first answer and stores one product; another
//! request with the key is a 422; concurrent requests with one key run the
//! handler once; keys are per caller with auth on; PUT and DELETE replay;
//! the MongoDB key store when Redis is off; keys expire; 503 when the store
//! is down; a 5xx answer frees the key. Every test has its own database and
//! key prefix.

use futures::future::join_all;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

use crate::common::{
    free_port,
    mongo::product_count,
    products::{accepted_id, create_product, product_body, wait_for_product},
    spawn_app, spawn_app_with, test_settings, unique, TestApp,
};

const REPLAYED: &str = "idempotent-replayed";

fn replayed(response: &Response) -> bool {
    response
        .headers()
        .get(REPLAYED)
        .is_some_and(|v| v == "true")
}

fn location(response: &Response) -> Option<String> {
    response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The status, `Location`, replay flag and body of an answer.
async fn answer(response: Response) -> (StatusCode, Option<String>, bool, Value) {
    let status = response.status();
    let location = location(&response);
    let replayed = replayed(&response);
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, location, replayed, body)
}

/// A retried POST gets the first answer and the catalog gets one product.
async fn retried_post_stores_one_product(app: &TestApp) {
    let key = unique("key");
    let body = product_body(&unique("Retried mug"));
    let (status, first_location, was_replayed, first) =
        answer(app.post_product_keyed(&key, &body).await).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert!(!was_replayed);
    let id = first["productId"].as_str().unwrap().to_owned();

    for _ in 0..2 {
        let (status, location, was_replayed, again) =
            answer(app.post_product_keyed(&key, &body).await).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{again}");
        assert!(was_replayed, "a retry is a replay");
        assert_eq!(again, first);
        assert_eq!(location, first_location);
    }
    wait_for_product(app, &id, |_| true).await;
    assert_eq!(product_count(&app.settings).await, 1);

    // Same key, another body (or route): not the same request.
    let other = product_body(&unique("Another mug"));
    let response = app.post_product_keyed(&key, &other).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["status"], 422);
    assert_eq!(
        app.put_product_keyed(&key, &id, &body).await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

/// Many requests with one key at once: the handler runs once; every other
/// answer is a 409 (still in progress) or a replay of that one answer.
async fn concurrent_requests_run_once(app: &TestApp) {
    let key = unique("key");
    let body = product_body(&unique("Concurrent mug"));
    let answers =
        join_all((0..6).map(|_| async { answer(app.post_product_keyed(&key, &body).await).await }))
            .await;
    let executed: Vec<_> = answers
        .iter()
        .filter(|(status, _, replayed, _)| *status == StatusCode::ACCEPTED && !replayed)
        .collect();
    let statuses: Vec<_> = answers
        .iter()
        .map(|(s, _, r, _)| (s.as_u16(), *r))
        .collect();
    println!("concurrent answers (status, replayed): {statuses:?}");
    assert_eq!(executed.len(), 1, "{answers:?}");
    let first = &executed[0].3;
    for (status, _, was_replayed, body) in &answers {
        match *status {
            StatusCode::ACCEPTED => assert!(body == first, "{answers:?}"),
            StatusCode::CONFLICT => {
                assert!(!was_replayed);
                assert_eq!(body["status"], 409);
            }
            other => panic!("unexpected {other}: {answers:?}"),
        }
    }
    let id = first["productId"].as_str().unwrap();
    wait_for_product(app, id, |_| true).await;
}

#[tokio::test]
async fn a_retried_post_replays_the_first_answer_and_stores_one_product() {
    let app = spawn_app().await;
    retried_post_stores_one_product(&app).await;
}

#[tokio::test]
async fn concurrent_requests_with_one_key_run_the_handler_once() {
    let app = spawn_app().await;
    concurrent_requests_run_once(&app).await;
}

#[tokio::test]
async fn with_redis_disabled_keys_live_in_mongodb() {
    let mut settings = test_settings();
    settings.redis.enabled = false;
    let app = spawn_app_with(settings).await;
    retried_post_stores_one_product(&app).await;
    concurrent_requests_run_once(&app).await;
}

#[tokio::test]
async fn put_and_delete_replay_their_first_answer() {
    let app = spawn_app().await;
    let created = create_product(&app, &product_body(&unique("Put target"))).await;
    let id = created["productId"].as_str().unwrap().to_owned();

    let key = unique("put");
    let body = product_body("Renamed once");
    let first = answer(app.put_product_keyed(&key, &id, &body).await).await;
    assert_eq!(first.0, StatusCode::ACCEPTED, "{first:?}");
    let again = answer(app.put_product_keyed(&key, &id, &body).await).await;
    assert!(again.2, "replayed");
    assert_eq!((again.0, &again.1, &again.3), (first.0, &first.1, &first.3));
    assert_eq!(
        app.put_product_keyed(&key, &id, &product_body("Renamed twice"))
            .await
            .status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    wait_for_product(&app, &id, |p| p["name"] == "Renamed once").await;

    let key = unique("delete");
    let first = app.delete_product_keyed(&key, &id).await;
    assert_eq!(first.status(), StatusCode::NO_CONTENT);
    assert!(!replayed(&first));
    // Without a key a second delete is a 404; with the key it is the first answer.
    let again = app.delete_product_keyed(&key, &id).await;
    assert_eq!(again.status(), StatusCode::NO_CONTENT);
    assert!(replayed(&again));
    assert_eq!(
        app.delete_product(&id).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn requests_without_a_key_are_untouched_and_bad_keys_are_400() {
    let app = spawn_app().await;
    let body = product_body(&unique("Unkeyed"));
    let a = accepted_id(app.post_product(&body).await).await;
    let b = accepted_id(app.post_product(&body).await).await;
    assert_ne!(a, b, "no key, no deduplication");

    let long = "k".repeat(256);
    for bad in ["\"unterminated", "two words", "\"\"", long.as_str()] {
        let response = app
            .client
            .post(app.url("/api/v1/products"))
            .header("idempotency-key", bad)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        let error: Value = response.json().await.unwrap();
        assert!(
            error["error"].as_str().unwrap().contains("Idempotency-Key"),
            "{error}"
        );
    }
    // A bare token (a UUID, as many clients send) is accepted too.
    let response = app
        .client
        .post(app.url("/api/v1/products"))
        .header("idempotency-key", "8e03978e-40d5-43e8-bc93-6894a57f9324")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);

    // A validation error is an answer too: stored and replayed.
    let key = unique("invalid");
    let invalid = json!({"name": "x"});
    let first = answer(app.post_product_keyed(&key, &invalid).await).await;
    assert_eq!(first.0, StatusCode::BAD_REQUEST);
    let again = answer(app.post_product_keyed(&key, &invalid).await).await;
    assert_eq!((again.0, again.2, &again.3), (first.0, true, &first.3));
}

#[tokio::test]
async fn keys_are_scoped_to_the_caller_when_auth_is_on() {
    const SECRET: &str = "idempotency-test-secret-0123456789abcdef";
    let api_key = format!("key-{}", unique("idem"));
    let mut settings = test_settings();
    settings.auth.enabled = true;
    settings.auth.jwt.algorithm = Algorithm::HS256;
    settings.auth.jwt.secret = Some(SECRET.into());
    settings.auth.api_keys = vec![api_key.clone().into()];
    let app = spawn_app_with(settings).await;
    let token = |sub: &str| {
        let claims = json!({
            "sub": sub,
            "exp": chrono::Utc::now().timestamp() + 300,
            "scope": "products:write",
        });
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let key = unique("shared");
    let body = product_body(&unique("Scoped mug"));
    let post = |bearer: String| {
        app.client
            .post(app.url("/api/v1/products"))
            .bearer_auth(bearer)
            .header("idempotency-key", format!("\"{key}\""))
            .json(&body)
            .send()
    };
    let mut ids = Vec::new();
    for caller in [token("alice"), token("bob"), api_key.clone()] {
        let first = post(caller.clone()).await.unwrap();
        assert!(!replayed(&first));
        let id = accepted_id(first).await;
        let again = post(caller).await.unwrap();
        assert!(replayed(&again), "the same caller gets its own answer back");
        assert_eq!(accepted_id(again).await, id);
        ids.push(id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "each caller has its own key space: {ids:?}");
    // A refused caller claims nothing.
    let anonymous = app
        .client
        .post(app.url("/api/v1/products"))
        .header("idempotency-key", format!("\"{key}\""))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_unreachable_key_store_refuses_keyed_writes_with_503() {
    let mut settings = test_settings();
    settings.redis.url = format!("redis://127.0.0.1:{}", free_port()).into();
    let app = spawn_app_with(settings).await;
    let body = product_body(&unique("Unsure mug"));
    let response = app.post_product_keyed(&unique("down"), &body).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["status"], 503);
    assert!(
        error["error"].as_str().unwrap().contains("idempotency"),
        "{error}"
    );
    // Without a key the write does not need the store (the cache degrades).
    assert_eq!(app.post_product(&body).await.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_server_error_frees_the_key_for_a_retry() {
    let mut settings = test_settings();
    settings.kafka.brokers = format!("127.0.0.1:{}", free_port());
    settings.kafka.producer.delivery_timeout_ms = 1000;
    let app = spawn_app_with(settings).await;
    let key = unique("retry");
    let body = product_body(&unique("Unconfirmed mug"));
    for attempt in 0..2 {
        let (status, _, was_replayed, error) =
            answer(app.post_product_keyed(&key, &body).await).await;
        // Not 409 and not a replay: the first 503 released the key.
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "attempt {attempt}: {error}"
        );
        assert!(!was_replayed);
    }
}

/// Once `ttl_seconds` has passed a key is free again: the same request runs
/// anew (Redis expires it; MongoDB treats the expired entry as absent).
async fn expired_keys_are_free_again(redis_enabled: bool) {
    let mut settings = test_settings();
    settings.redis.enabled = redis_enabled;
    settings.idempotency.ttl_seconds = 1;
    let app = spawn_app_with(settings).await;
    let key = unique("expiring");
    let body = product_body(&unique("Expiring mug"));
    let first = accepted_id(app.post_product_keyed(&key, &body).await).await;
    let started = std::time::Instant::now();
    loop {
        let response = app.post_product_keyed(&key, &body).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        if !replayed(&response) {
            assert_ne!(
                accepted_id(response).await,
                first,
                "a new request, a new id"
            );
            break;
        }
        assert_eq!(accepted_id(response).await, first);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the key did not expire"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn expired_keys_are_free_again_in_redis() {
    expired_keys_are_free_again(true).await;
}

#[tokio::test]
async fn expired_keys_are_free_again_in_mongodb() {
    expired_keys_are_free_again(false).await;
}
