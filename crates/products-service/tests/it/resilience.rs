//! Dependencies failing under a running service. Each test stops a private
//! Redis or FerretDB instance of its own, so other tests are not disturbed.

use std::time::{Duration, Instant};

use crate::common::{
    eventually,
    processes::{PrivateFerretDb, PrivateRedis},
    products::{create_product, product_body, update_product, wait_for_product},
    spawn_app_with, status_of, test_settings,
};
use products_service::{api::grpc::pb::GetByIdReq, config::ExposeSecret};
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test]
async fn redis_outage_degrades_to_mongodb() {
    let mut redis = PrivateRedis::start().await;
    let mut settings = test_settings();
    settings.redis.url = redis.url().into();
    let app = spawn_app_with(settings).await;

    let created = create_product(&app, &product_body("Cache victim")).await;
    let id = created["productId"].as_str().unwrap().to_owned();
    assert_eq!(app.get_product(&id).await.status(), 200);

    redis.stop();

    let started = Instant::now();
    let read = app.get_product(&id).await;
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(read.json::<Value>().await.unwrap(), created);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a dead cache must not stall reads"
    );
    let read = update_product(&app, &id, &product_body("Still updatable")).await;
    assert_eq!(read["name"], "Still updatable");
    assert_eq!(app.search_products("search=still").await.status(), 200);
    assert_eq!(app.delete_product(&id).await.status(), 204);

    let ready = app.get_json("/ready").await;
    assert_eq!(ready["checks"]["redis"], "down");
    assert_eq!(ready["checks"]["mongodb"], "up");

    let metrics = app.metrics_text().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("cache_requests_total") && l.contains("result=\"error\"")),
        "cache errors are counted"
    );
}

#[tokio::test]
async fn mongodb_outage_answers_503_and_unavailable_then_recovers() {
    let mut db = PrivateFerretDb::start().await;
    let mut settings = test_settings();
    settings.mongo.uri = db.uri().into();
    settings.redis.enabled = false; // every read must hit the database
    let app = spawn_app_with(settings).await;
    let created = create_product(&app, &product_body("Survivor")).await;
    let id = created["productId"].as_str().unwrap().to_owned();
    let mut grpc = app.grpc_client().await;

    db.stop();

    let started = Instant::now();
    let response = app.get_product(&id).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_secs(10), "bounded wait");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], 503);
    assert!(
        !body["error"].as_str().unwrap().contains("127.0.0.1"),
        "no internals leak: {body}"
    );
    // Writes still go through Kafka: accepted now, applied after recovery.
    let response = app
        .post_product(&product_body("Written during the outage"))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let during: Value = response.json().await.unwrap();
    assert_eq!(
        status_of(app.client.get(app.url("/ready"))).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let status = grpc
        .get_by_id(GetByIdReq {
            product_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);

    let channel = tonic::transport::Channel::from_shared(app.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel);
    let health_is = |wanted: i32| {
        let health = health.clone();
        move || {
            let mut health = health.clone();
            async move {
                health
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: "productsService.ProductsService".to_owned(),
                    })
                    .await
                    .is_ok_and(|r| r.into_inner().status == wanted)
            }
        }
    };
    eventually(Duration::from_secs(15), health_is(2)).await; // NOT_SERVING

    db.restart().await;

    eventually(Duration::from_secs(30), || async {
        app.client
            .get(app.product_url(&id))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    let read = app.get_json(&format!("/api/v1/products/{id}")).await;
    assert_eq!(read, created, "recovered without restarting the service");
    let applied = wait_for_product(&app, during["productId"].as_str().unwrap(), |_| true).await;
    assert_eq!(applied["name"], "Written during the outage");
    assert_eq!(status_of(app.client.get(app.url("/ready"))).await, 200);
    eventually(Duration::from_secs(15), health_is(1)).await; // SERVING
}

/// The service creates its indexes at every start. On a populated database
/// that already has them, a second start must create none and fail nothing
/// (FerretDB 1.24 crashed on a `createIndexes` naming existing indexes).
#[tokio::test]
async fn starting_twice_on_a_populated_database_keeps_the_indexes() {
    use products_service::adapters::mongo::MongoProductRepository;
    let settings = test_settings();
    let repository = MongoProductRepository::connect(&settings.mongo)
        .await
        .unwrap();
    let client = mongodb::Client::with_uri_str(settings.mongo.uri.expose_secret())
        .await
        .unwrap();
    let collection = client
        .database(&settings.mongo.database)
        .collection::<mongodb::bson::Document>(&settings.mongo.collection);
    let documents: Vec<_> = (0..500)
        .map(|i| mongodb::bson::doc! { "name": format!("Populated {i}") })
        .collect();
    collection.insert_many(documents).await.unwrap();
    repository.ensure_indexes().await.unwrap();
    let first = collection.list_index_names().await.unwrap();
    repository.ensure_indexes().await.unwrap();
    let second = collection.list_index_names().await.unwrap();
    for name in ["categoryId_1", "name_1__id_1"] {
        assert!(first.iter().any(|n| n == name), "{first:?}");
    }
    assert_eq!(first, second);
    // The connection pool is healthy: nothing was dropped mid-flight.
    assert_eq!(
        collection
            .count_documents(mongodb::bson::doc! {})
            .await
            .unwrap(),
        500
    );
    repository.drop_database().await.unwrap();
}
