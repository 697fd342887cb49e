//! Product fixtures shared by the API tests: payloads, and `TestApp`
//! methods for each REST product route.

use std::time::{Duration, Instant};

use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

use super::TestApp;

/// One method per REST product route; each sends the request and returns
/// the answer unread.
impl TestApp {
    /// The URL of product `id`.
    pub fn product_url(&self, id: &str) -> String {
        self.url(&format!("/api/v1/products/{id}"))
    }

    /// `POST /api/v1/products` with `body`.
    pub async fn post_product(&self, body: &Value) -> Response {
        self.client
            .post(self.url("/api/v1/products"))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// `PUT /api/v1/products/{id}` with `body`.
    pub async fn put_product(&self, id: &str, body: &Value) -> Response {
        self.client
            .put(self.product_url(id))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// `GET /api/v1/products/{id}`.
    pub async fn get_product(&self, id: &str) -> Response {
        self.client.get(self.product_url(id)).send().await.unwrap()
    }

    /// `DELETE /api/v1/products/{id}`.
    pub async fn delete_product(&self, id: &str) -> Response {
        self.client
            .delete(self.product_url(id))
            .send()
            .await
            .unwrap()
    }

    /// `POST /api/v1/products` with `body` and `Idempotency-Key: "{key}"`.
    pub async fn post_product_keyed(&self, key: &str, body: &Value) -> Response {
        self.client
            .post(self.url("/api/v1/products"))
            .header("idempotency-key", format!("\"{key}\""))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// `PUT /api/v1/products/{id}` with `body` and `Idempotency-Key: "{key}"`.
    pub async fn put_product_keyed(&self, key: &str, id: &str, body: &Value) -> Response {
        self.client
            .put(self.product_url(id))
            .header("idempotency-key", format!("\"{key}\""))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// `DELETE /api/v1/products/{id}` with `Idempotency-Key: "{key}"`.
    pub async fn delete_product_keyed(&self, key: &str, id: &str) -> Response {
        self.client
            .delete(self.product_url(id))
            .header("idempotency-key", format!("\"{key}\""))
            .send()
            .await
            .unwrap()
    }

    /// `GET /api/v1/products/search?{query}` (`query` already URL-encoded).
    pub async fn search_products(&self, query: &str) -> Response {
        self.client
            .get(self.url(&format!("/api/v1/products/search?{query}")))
            .send()
            .await
            .unwrap()
    }
}

impl TestApp {
    /// Polls the search `query` (URL-encoded) until it finds `total`
    /// products (searches answer from the index, which follows the stored
    /// changes within the freshness bound); the last page.
    pub async fn wait_for_search(&self, query: &str, total: u64) -> Value {
        let mut last = Value::Null;
        let started = Instant::now();
        while started.elapsed() < SEARCH_FRESHNESS_DEADLINE {
            let response = self.search_products(query).await;
            assert_eq!(response.status(), StatusCode::OK, "search {query}");
            last = response.json().await.unwrap();
            if last["totalCount"] == total {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("search {query}: not {total} results within {SEARCH_FRESHNESS_DEADLINE:?}: {last}");
    }
}

impl TestApp {
    /// Waits until `/ready` reports the search index up: rebuilt, so
    /// searches and changes from now on go through it.
    pub async fn wait_search_index_ready(&self) {
        super::eventually(Duration::from_secs(60), || async {
            self.get_json("/ready").await["checks"]["search_index"] == "up"
        })
        .await;
    }
}

/// How long a test waits for a change to be searchable. The contract is 1 s
/// (p99 at 1,000 writes/s, measured by `make bench`); tests run many apps at
/// once on a small machine, so they allow more.
pub const SEARCH_FRESHNESS_DEADLINE: Duration = Duration::from_secs(10);

/// The id in a 202's `{productId}` body.
pub async fn accepted_id(response: Response) -> String {
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    response.json::<Value>().await.unwrap()["productId"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub const CATEGORY: &str = "65a1f0c2e4b0a1b2c3d4e5f7";

/// A create command's payload as producers send it: the product JSON with
/// its id and timestamps.
pub fn kafka_create_payload(id: &str, name: &str) -> Vec<u8> {
    json!({
        "productId": id,
        "categoryId": CATEGORY,
        "name": name,
        "description": "Produced straight to Kafka",
        "price": 1.5,
        "photos": [],
        "quantity": 1,
        "rating": 3,
        "createdAt": "2026-01-01T00:00:00Z",
        "updatedAt": "2026-01-01T00:00:00Z"
    })
    .to_string()
    .into_bytes()
}

/// An update command's payload, `updated_at` as RFC 3339.
pub fn kafka_update_payload(id: &str, name: &str, updated_at: &str) -> Vec<u8> {
    json!({
        "productId": id,
        "categoryId": CATEGORY,
        "name": name,
        "description": "Updated straight through Kafka",
        "price": 2.5,
        "quantity": 2,
        "rating": 4,
        "updatedAt": updated_at
    })
    .to_string()
    .into_bytes()
}

/// A valid create/update body.
pub fn product_body(name: &str) -> Value {
    json!({
        "categoryId": CATEGORY,
        "name": name,
        "description": "A product used by tests",
        "price": 19.99,
        "imageUrl": "https://img.example.com/p.png",
        "photos": ["https://img.example.com/p-1.png", "https://img.example.com/p-2.png"],
        "quantity": 5,
        "rating": 7
    })
}

/// The `field` names listed in an error body's `causes`.
pub fn cause_fields(body: &Value) -> Vec<String> {
    body["causes"]
        .as_array()
        .map(|causes| {
            causes
                .iter()
                .filter_map(|c| c["field"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// POSTs a product (202 Accepted, through Kafka) and waits until the
/// consumer applied it; returns it as `GET` answers.
pub async fn create_product(app: &TestApp, body: &Value) -> Value {
    let response = app.post_product(body).await;
    assert_eq!(response.status(), 202, "{:?}", response.text().await);
    let accepted: Value = response.json().await.unwrap();
    let id = accepted["productId"].as_str().unwrap().to_owned();
    wait_for_product(app, &id, |_| true).await
}

/// Polls `GET /api/v1/products/{id}` until it answers 200 with a product
/// that satisfies `condition`, and returns that product.
pub async fn wait_for_product(
    app: &TestApp,
    id: &str,
    condition: impl Fn(&Value) -> bool,
) -> Value {
    let url = app.product_url(id);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    while Instant::now() < deadline {
        if let Ok(response) = app.client.get(&url).send().await {
            let status = response.status();
            if status == 200 {
                let product: Value = response.json().await.unwrap();
                if condition(&product) {
                    return product;
                }
                last = Some(product.to_string());
            } else {
                last = Some(status.to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("product {id} not as expected within 30 s; last answer: {last:?}")
}

/// PUTs new fields (202 Accepted) and waits until the change is visible.
pub async fn update_product(app: &TestApp, id: &str, body: &Value) -> Value {
    let response = app.put_product(id, body).await;
    assert_eq!(response.status(), 202, "{:?}", response.text().await);
    let name = body["name"].clone();
    wait_for_product(app, id, |p| p["name"] == name).await
}
