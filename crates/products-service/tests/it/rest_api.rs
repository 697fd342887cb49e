//! REST API against the real local stack: every route, happy paths, each
//! validation error, pagination edges, literal search, cache behaviour and
//! malformed input.

use std::time::Duration;

use crate::common::{
    eventually,
    products::{cause_fields, create_product, product_body, update_product, wait_for_product},
    spawn_app, spawn_app_with, test_settings, TestApp, REDIS_URL,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn get(app: &TestApp, id: &str) -> (StatusCode, Value) {
    let response = app.get_product(id).await;
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn search(app: &TestApp, query: &str) -> (StatusCode, Value) {
    let response = app.search_products(query).await;
    let status = response.status();
    (status, response.json().await.unwrap())
}

/// The raw cache entry: `{revision}|{product JSON}`, or `{revision}|` once
/// deleted.
async fn cache_entry(app: &TestApp, id: &str) -> Option<String> {
    let client = redis::Client::open(REDIS_URL).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{}{id}", app.settings.redis.key_prefix);
    redis::cmd("GET")
        .arg(key)
        .query_async::<Option<String>>(&mut conn)
        .await
        .unwrap()
}

async fn cached(app: &TestApp, id: &str) -> bool {
    cache_entry(app, id)
        .await
        .is_some_and(|entry| !entry.ends_with('|'))
}

#[tokio::test]
async fn post_is_accepted_then_readable_and_put_changes_it() {
    let app = spawn_app().await;
    let response = app.post_product(&product_body("Coffee mug")).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let accepted: Value = response.json().await.unwrap();
    let id = accepted["productId"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 24);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(location, format!("/api/v1/products/{id}"));

    let created = wait_for_product(&app, &id, |_| true).await;
    assert_eq!(created["productId"], id.as_str());
    assert_eq!(created["name"], "Coffee mug");
    assert_eq!(created["price"], 19.99);
    assert_eq!(created["photos"].as_array().unwrap().len(), 2);
    assert_eq!(created["createdAt"], created["updatedAt"]);

    let response = app
        .client
        .put(app.url(&location))
        .json(&product_body("Tea mug"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(response.headers()["location"].to_str().unwrap(), location);
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["productId"], id.as_str());
    let updated = wait_for_product(&app, &id, |p| p["name"] == "Tea mug").await;
    assert_eq!(updated["createdAt"], created["createdAt"]);
    assert_ne!(updated["updatedAt"], created["updatedAt"]);
}

#[tokio::test]
async fn empty_object_lists_every_required_field() {
    let app = spawn_app().await;
    let response = app.post_product(&json!({})).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], 400);
    assert_eq!(
        cause_fields(&body),
        ["categoryId", "name", "description", "price", "quantity"]
    );
}

#[tokio::test]
async fn each_validation_rule_is_enforced() {
    let app = spawn_app().await;
    let cases: Vec<(&str, Value)> = vec![
        ("name", json!("ab")),
        ("name", json!("x".repeat(251))),
        ("description", json!("ab")),
        ("description", json!("d".repeat(501))),
        ("price", json!(0)),
        ("price", json!(-5.5)),
        ("price", json!("cheap")),
        ("quantity", json!(-1)),
        ("quantity", json!(1.5)),
        ("rating", json!(11)),
        ("rating", json!(-1)),
        ("categoryId", json!("not-an-object-id")),
        ("categoryId", json!(42)),
        ("imageUrl", json!("not a url")),
        ("imageUrl", json!("ftp://files.example.com/x.png")),
        ("photos", json!("https://img.example.com/a.png")),
    ];
    for (field, value) in cases {
        let mut body = product_body("Valid name");
        body[field] = value.clone();
        let response = app.post_product(&body).await;
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{field} = {value}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(cause_fields(&body), [field], "{field} = {value}: {body}");
    }
    let mut body = product_body("Valid name");
    body["photos"] = json!(["https://ok.example.com/1.png", "nope"]);
    let response = app.post_product(&body).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(cause_fields(&body), ["photos[1]"]);
}

#[tokio::test]
async fn unknown_and_invalid_ids() {
    let app = spawn_app().await;
    let (status, body) = get(&app, "65a1f0c2e4b0a1b2c3d4e5f6").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["status"], 404);
    for bad in [
        "123",
        "zzzzzzzzzzzzzzzzzzzzzzzz",
        "ObjectID(%2265a1f0c2e4b0a1b2c3d4e5f6%22)",
    ] {
        let (status, body) = get(&app, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(cause_fields(&body), ["productId"]);
    }
}

#[tokio::test]
async fn update_changes_the_product_and_keeps_created_at() {
    let app = spawn_app().await;
    let created = create_product(&app, &product_body("Old name")).await;
    let id = created["productId"].as_str().unwrap();
    let mut changed = product_body("New name");
    changed["price"] = json!(5);
    changed.as_object_mut().unwrap().remove("imageUrl");
    let updated = update_product(&app, id, &changed).await;
    assert_eq!(updated["productId"], id);
    assert_eq!(updated["price"], 5.0);
    assert!(updated.get("imageUrl").is_none(), "{updated}");
    assert_eq!(updated["createdAt"], created["createdAt"]);
}

#[tokio::test]
async fn update_with_bad_id_and_fields_reports_both() {
    let app = spawn_app().await;
    let mut body = product_body("x");
    body["rating"] = json!(99);
    let response = app.put_product("nope", &body).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(cause_fields(&body), ["productId", "name", "rating"]);
}

#[tokio::test]
async fn delete_then_get_is_404_and_delete_again_is_404() {
    let app = spawn_app().await;
    let created = create_product(&app, &product_body("Doomed")).await;
    let id = created["productId"].as_str().unwrap();
    let response = app.delete_product(id).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.get_product(id).await.status(), 404);
    assert_eq!(app.delete_product(id).await.status(), 404);
}

#[tokio::test]
async fn search_pages_through_matches_with_edges() {
    let app = spawn_app().await;
    for i in 0..5 {
        create_product(&app, &product_body(&format!("Lamp number {i}"))).await;
    }
    create_product(&app, &product_body("Chair")).await;
    app.wait_for_search("", 6).await;

    let (status, page1) = search(&app, "search=LAMP&page=1&size=2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page1["totalCount"], 5);
    assert_eq!(page1["totalPages"], 3);
    assert_eq!(page1["page"], 1);
    assert_eq!(page1["size"], 2);
    assert_eq!(page1["hasMore"], true);
    let names = |page: &Value| -> Vec<String> {
        page["products"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&page1), ["Lamp number 0", "Lamp number 1"]);

    let (_, page0) = search(&app, "search=lamp&page=0&size=2").await;
    assert_eq!(page0["page"], 1, "page 0 means the first page");
    assert_eq!(names(&page0), names(&page1));

    let (_, last) = search(&app, "search=lamp&page=3&size=2").await;
    assert_eq!(names(&last), ["Lamp number 4"]);
    assert_eq!(last["hasMore"], false);

    let (_, beyond) = search(&app, "search=lamp&page=9&size=2").await;
    assert_eq!(beyond["products"].as_array().unwrap().len(), 0);
    assert_eq!(beyond["hasMore"], false);
    assert_eq!(beyond["totalCount"], 5);

    let (_, huge) = search(&app, "search=lamp&size=1000000000").await;
    assert_eq!(huge["size"], 100, "size is capped");
    assert_eq!(huge["products"].as_array().unwrap().len(), 5);

    let (_, defaults) = search(&app, "").await;
    assert_eq!(defaults["totalCount"], 6);
    assert_eq!(
        (defaults["page"].clone(), defaults["size"].clone()),
        (json!(1), json!(10))
    );

    for bad in ["page=-1", "size=-3", "page=abc", "size=1.5"] {
        let (status, body) = search(&app, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(body["status"], 400);
    }
    let (_, both) = search(&app, "page=-1&size=x").await;
    assert_eq!(cause_fields(&both), ["page", "size"]);
}

#[tokio::test]
async fn search_text_is_literal_never_a_regex() {
    let app = spawn_app().await;
    for name in [
        "price .* tag",
        "group (a+)+$ tag",
        "bracket [ tag",
        "plain words",
    ] {
        create_product(&app, &product_body(name)).await;
    }
    app.wait_for_search("", 4).await;
    for (needle, expected) in [
        (".*", "price .* tag"),
        ("(a+)+$", "group (a+)+$ tag"),
        ("[", "bracket [ tag"),
    ] {
        let query = format!("search={}", urlencode(needle));
        let (status, page) = search(&app, &query).await;
        assert_eq!(status, StatusCode::OK, "{needle}");
        assert_eq!(page["totalCount"], 1, "{needle}: {page}");
        assert_eq!(page["products"][0]["name"], expected);
    }
    // Matches in the description too, case-insensitively.
    let (_, page) = search(&app, "search=USED%20BY%20TESTS").await;
    assert_eq!(page["totalCount"], 4);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn get_fills_the_cache_and_writes_replace_it() {
    let app = spawn_app().await;
    let created = create_product(&app, &product_body("Cached lamp")).await;
    let id = created["productId"].as_str().unwrap();
    // `create` polled GET until the product appeared, which cached it.
    assert!(cached(&app, id).await, "get fills the cache");
    let (_, from_cache) = get(&app, id).await;
    assert_eq!(from_cache, created, "a cache hit returns the same product");
    // Prove the hit comes from Redis: change the entry behind the service's back.
    let client = redis::Client::open(REDIS_URL).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{}{id}", app.settings.redis.key_prefix);
    let mut tampered = created.clone();
    tampered["name"] = json!("From the cache");
    let entry = cache_entry(&app, id).await.unwrap();
    let revision = entry.split('|').next().unwrap();
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(format!("{revision}|{tampered}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(get(&app, id).await.1["name"], "From the cache");

    // The consumer puts the new version (a later revision) in the cache when
    // it applies the update, so the new name shows up at once.
    let read = update_product(&app, id, &product_body("Renamed lamp")).await;
    assert_eq!(read["name"], "Renamed lamp");
    assert!(cached(&app, id).await, "read again, cached again");

    app.delete_product(id).await;
    assert!(!cached(&app, id).await, "delete replaces the entry");
    let entry = cache_entry(&app, id).await.unwrap();
    assert!(
        entry.ends_with('|'),
        "a deleted product is cached as deleted: {entry}"
    );
    assert_eq!(get(&app, id).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn cache_can_be_turned_off() {
    let mut settings = test_settings();
    settings.redis.enabled = false;
    let app = spawn_app_with(settings).await;
    let created = create_product(&app, &product_body("Uncached")).await;
    let id = created["productId"].as_str().unwrap();
    assert_eq!(get(&app, id).await.0, StatusCode::OK);
    assert!(!cached(&app, id).await);
    let ready = app.get_json("/ready").await;
    assert!(ready["checks"].get("redis").is_none(), "{ready}");
}

#[tokio::test]
async fn malformed_requests_get_clear_4xx_answers() {
    let app = spawn_app().await;
    let post = |body: Vec<u8>, content_type: Option<&'static str>| {
        let mut request = app.client.post(app.url("/api/v1/products")).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        request.send()
    };
    let json = Some("application/json");
    for (body, expected) in [
        (b"{\"name\": ".to_vec(), StatusCode::BAD_REQUEST),
        (b"".to_vec(), StatusCode::BAD_REQUEST),
        (b"[1, 2, 3]".to_vec(), StatusCode::BAD_REQUEST),
        (b"\"just a string\"".to_vec(), StatusCode::BAD_REQUEST),
        (vec![0xff, 0xfe, 0x7b, 0x7d], StatusCode::BAD_REQUEST),
        (vec![b'{'; 10 * 1024 * 1024], StatusCode::PAYLOAD_TOO_LARGE),
    ] {
        let response = post(body, json).await.unwrap();
        assert_eq!(response.status(), expected);
        let error: Value = response.json().await.expect("errors are JSON");
        assert_eq!(error["status"], expected.as_u16());
        assert!(!error["error"].as_str().unwrap().is_empty());
    }
    let response = post(b"{}".to_vec(), Some("text/plain")).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let response = post(b"{}".to_vec(), None).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let response = post(
        serde_json::to_vec(&product_body("Charset ok")).unwrap(),
        Some("application/json; charset=utf-8"),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);

    let response = app
        .client
        .patch(app.url("/api/v1/products/65a1f0c2e4b0a1b2c3d4e5f6"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["status"], 405);

    let response = app
        .client
        .get(app.url("/no/such/route"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["status"], 404);

    // Invalid UTF-8 in the path (percent-encoded) is a 400, not a panic.
    let response = app.get_product("%FF%FE").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // The service is still healthy after all of that.
    assert_eq!(
        app.client
            .get(app.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn ready_reports_each_dependency() {
    let app = spawn_app().await;
    // Not ready until the search index has read the events topic.
    eventually(Duration::from_secs(30), || async {
        let response = app.client.get(app.url("/ready")).send().await.unwrap();
        response.status() == StatusCode::OK
    })
    .await;
    let response = app.client.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["checks"]["search_index"], "up");
    assert_eq!(body["checks"]["mongodb"], "up");
    assert_eq!(body["checks"]["redis"], "up");
    assert_eq!(body["checks"]["kafka"], "up");
}

#[tokio::test]
async fn responses_are_compressed_when_asked() {
    let app = spawn_app().await;
    for i in 0..20 {
        create_product(&app, &product_body(&format!("Compressible {i}"))).await;
    }
    app.wait_for_search("", 20).await;
    let response = app
        .client
        .get(app.url("/api/v1/products/search?size=20"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-encoding"], "gzip");
}

#[tokio::test]
async fn openapi_document_lists_every_route() {
    let app = spawn_app().await;
    let doc = app.get_json("/api-docs/openapi.json").await;
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/v1/products", "post"),
        ("/api/v1/products/{id}", "get"),
        ("/api/v1/products/{id}", "put"),
        ("/api/v1/products/{id}", "delete"),
        ("/api/v1/products/search", "get"),
        ("/health", "get"),
        ("/ready", "get"),
    ] {
        assert!(paths[path].get(method).is_some(), "{method} {path} missing");
    }
    for schema in ["ProductJson", "ProductInput", "SearchResponse", "ErrorBody"] {
        assert!(
            doc["components"]["schemas"].get(schema).is_some(),
            "{schema} missing"
        );
    }
    let page = app
        .client
        .get(app.url("/swagger/index.html"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("swagger-ui"));
}

#[tokio::test]
async fn cors_allows_only_configured_origins() {
    let mut settings = test_settings();
    settings.http.cors_allowed_origins = vec!["https://shop.example.com".to_owned()];
    let app = spawn_app_with(settings).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/api/v1/products"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    let allowed = preflight("https://shop.example.com").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://shop.example.com"
    );
    let denied = preflight("https://evil.example.com").await.unwrap();
    assert!(!denied.headers().contains_key("access-control-allow-origin"));
}
