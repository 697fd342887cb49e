//! Product change events (docs/EVENTS.md): every stored change publishes one
//! CloudEvent on the events topic, in order per product, none lost across a
//! SIGKILL, a broker outage or several replicas.

use std::{collections::HashMap, time::Duration};

use futures::{future::join_all, StreamExt};
use products_service::api::grpc::pb::{
    products_service_client::ProductsServiceClient, DeleteReq, UpdateReq,
};
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{
    events::{assert_product_history, by_product, first_copies, wait_for_events, SeenEvent},
    grpc::create_req,
    processes::PrivateKafka,
    products::{accepted_id, create_product, product_body, update_product, CATEGORY},
    replica::Replica,
    spawn_app_with, test_settings, unique,
};

fn update_req(id: &str, name: &str) -> UpdateReq {
    let create = create_req(name);
    UpdateReq {
        product_id: id.to_owned(),
        category_id: CATEGORY.to_owned(),
        name: name.to_owned(),
        description: create.description,
        price: create.price,
        image_url: create.image_url,
        photos: create.photos,
        quantity: create.quantity,
        rating: create.rating,
    }
}

/// Creates a product over gRPC (straight to the database); its id.
async fn grpc_create(
    grpc: &mut ProductsServiceClient<tonic::transport::Channel>,
    name: &str,
) -> String {
    grpc.create(create_req(name))
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap()
        .product_id
}

/// Waits until every product in `expected` has that many distinct events.
async fn wait_for_histories(
    brokers: &str,
    topic: &str,
    expected: &HashMap<String, usize>,
    deadline: Duration,
) -> HashMap<String, Vec<SeenEvent>> {
    let events = wait_for_events(brokers, topic, deadline, |events| {
        let products = by_product(events);
        expected.iter().all(|(id, count)| {
            products
                .get(id)
                .is_some_and(|e| first_copies(e).len() >= *count)
        })
    })
    .await;
    by_product(&events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_products_life_is_created_updated_deleted_in_order_as_cloudevents() {
    let settings = test_settings();
    let app = spawn_app_with(settings.clone()).await;
    let brokers = &settings.kafka.brokers;
    let topic = &settings.events.topic;

    let created = create_product(&app, &product_body("Event kettle")).await;
    let id = created["productId"].as_str().unwrap().to_owned();
    update_product(&app, &id, &product_body("Event kettle v2")).await;
    let deleted = app.delete_product(&id).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    // Deleting again changes nothing: no event.
    assert_eq!(
        app.delete_product(&id).await.status(),
        StatusCode::NOT_FOUND
    );
    let grpc_id = grpc_create(&mut app.grpc_client().await, "Event teapot").await;

    let expected = HashMap::from([(id.clone(), 3), (grpc_id.clone(), 1)]);
    let products = wait_for_histories(brokers, topic, &expected, Duration::from_secs(30)).await;

    let life = &products[&id];
    assert_eq!(life.len(), 3, "one event per change, no copies: {life:#?}");
    let firsts = assert_product_history(&id, life);
    let kinds: Vec<&str> = firsts.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["product.created", "product.updated", "product.deleted"]
    );
    assert_eq!(firsts[0].data.as_ref().unwrap()["name"], "Event kettle");
    assert_eq!(firsts[1].data.as_ref().unwrap()["name"], "Event kettle v2");
    assert_eq!(
        firsts[1].data.as_ref().unwrap()["createdAt"],
        created["createdAt"]
    );
    for event in life {
        let h = &event.headers;
        assert_eq!(h["ce_specversion"], "1.0");
        assert_eq!(h["ce_source"], "/products-service");
        assert_eq!(h["ce_subject"], id);
        assert!(
            chrono::DateTime::parse_from_rfc3339(&h["ce_time"]).is_ok(),
            "{h:?}"
        );
        assert_eq!(
            h.get("content-type").map(String::as_str),
            event.data.as_ref().map(|_| "application/json")
        );
    }
    let ids: std::collections::HashSet<&str> = life.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), 3, "a ce_id per change");

    // The service created the topic as a compacted changelog.
    let (policy, _) = crate::common::kafka::topic_config(brokers, topic, "cleanup.policy")
        .await
        .expect("the events topic exists");
    assert_eq!(policy, "compact");
    let (retention, _) = crate::common::kafka::topic_config(brokers, topic, "retention.ms")
        .await
        .unwrap();
    assert_eq!(retention, settings.events.retention_ms.to_string());

    let grpc_events = &products[&grpc_id];
    assert_eq!(grpc_events.len(), 1);
    assert_product_history(&grpc_id, grpc_events);
    assert_eq!(
        grpc_events[0].data.as_ref().unwrap()["name"],
        "Event teapot"
    );
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_during_a_broker_outage_arrive_after_it_in_order() {
    let mut broker = PrivateKafka::start().await;
    let mut settings = test_settings();
    settings.kafka.brokers = broker.brokers();
    let app = spawn_app_with(settings.clone()).await;
    let brokers = broker.brokers();
    let topic = settings.events.topic.clone();
    let mut grpc = app.grpc_client().await;

    let mut before = Vec::new();
    for i in 0..4 {
        before.push(grpc_create(&mut grpc, &format!("Before outage {i}")).await);
    }
    let expected: HashMap<String, usize> = before.iter().map(|id| (id.clone(), 1)).collect();
    wait_for_histories(&brokers, &topic, &expected, Duration::from_secs(60)).await;

    broker.kill();
    // gRPC writes go straight to the database: they succeed while the
    // broker is away, and their events wait.
    let mut during = Vec::new();
    for i in 0..10 {
        during.push(grpc_create(&mut grpc, &format!("During outage {i}")).await);
    }
    grpc.update(update_req(&before[0], "Renamed during outage"))
        .await
        .unwrap();
    grpc.delete(DeleteReq {
        product_id: before[1].clone(),
    })
    .await
    .unwrap();
    let pending = app.metrics_text().await;
    assert!(
        pending.contains("product_events_pending"),
        "pending events are reported"
    );

    broker.restart().await;
    let mut expected: HashMap<String, usize> = during.iter().map(|id| (id.clone(), 1)).collect();
    expected.insert(before[0].clone(), 2);
    expected.insert(before[1].clone(), 2);
    let products = wait_for_histories(&brokers, &topic, &expected, Duration::from_secs(90)).await;
    for (id, events) in &products {
        assert_product_history(id, events);
    }
    let renamed = first_copies(&products[&before[0]]);
    assert_eq!(renamed[1].kind, "product.updated");
    assert_eq!(
        renamed[1].data.as_ref().unwrap()["name"],
        "Renamed during outage"
    );
    assert_eq!(
        first_copies(&products[&before[1]])[1].kind,
        "product.deleted"
    );
    app.stop().await.unwrap();
}

/// The relay of a killed replica had events stored but unpublished (the
/// broker was away): after the restart, a live relay sweeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_a_killed_replica_had_not_published_are_published_by_the_next() {
    let mut broker = PrivateKafka::start().await;
    let mut settings = test_settings();
    settings.kafka.brokers = broker.brokers();
    let log_dir = std::env::temp_dir().join(unique("events-sweep"));
    std::fs::create_dir_all(&log_dir).unwrap();
    let http = reqwest::Client::new();
    let mut replica = Replica::start(0, &settings, &log_dir, Vec::new());
    replica.wait_ready(&http).await;
    let mut grpc = ProductsServiceClient::connect(format!("http://{}", replica.grpc))
        .await
        .unwrap();

    broker.kill();
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(grpc_create(&mut grpc, &format!("Unpublished {i}")).await);
    }
    replica.kill();
    broker.restart().await;
    replica.spawn(&settings);
    replica.wait_ready(&http).await;

    let expected: HashMap<String, usize> = ids.iter().map(|id| (id.clone(), 1)).collect();
    let products = wait_for_histories(
        &broker.brokers(),
        &settings.events.topic,
        &expected,
        Duration::from_secs(60),
    )
    .await;
    for id in &ids {
        let events = &products[id];
        assert_product_history(id, events);
        assert_eq!(events.len(), 1, "published once: {events:#?}");
    }
    replica.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_around_a_sigkill_each_have_their_created_event() {
    let settings = test_settings();
    let log_dir = std::env::temp_dir().join(unique("events-kill"));
    std::fs::create_dir_all(&log_dir).unwrap();
    let http = reqwest::Client::new();
    let mut replica = Replica::start(0, &settings, &log_dir, Vec::new());
    replica.wait_ready(&http).await;

    // 300 creates, 8 at a time, each retried until accepted; the replica is
    // killed (SIGKILL) once 100 are in and started again.
    let url = replica.url("/api/v1/products");
    let accepted_so_far = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = {
        let (http, url, counter) = (http.clone(), url.clone(), accepted_so_far.clone());
        tokio::spawn(async move {
            futures::stream::iter(0..300)
                .map(|i| {
                    let (http, url, counter) = (http.clone(), url.clone(), counter.clone());
                    async move {
                        let deadline = std::time::Instant::now() + Duration::from_secs(120);
                        loop {
                            assert!(
                                std::time::Instant::now() < deadline,
                                "create {i} never accepted"
                            );
                            let sent = http
                                .post(&url)
                                .json(&product_body(&format!("Kill {i}")))
                                .send()
                                .await;
                            if let Ok(response) = sent {
                                if response.status() == StatusCode::ACCEPTED {
                                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                    return accepted_id(response).await;
                                }
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                })
                .buffer_unordered(8)
                .collect::<Vec<String>>()
                .await
        })
    };
    crate::common::eventually(Duration::from_secs(60), || async {
        accepted_so_far.load(std::sync::atomic::Ordering::SeqCst) >= 100
    })
    .await;
    replica.kill();
    replica.spawn(&settings);
    replica.wait_ready(&http).await;
    let accepted = writer.await.unwrap();
    assert_eq!(accepted.len(), 300);

    // Every accepted create is applied; every stored product has exactly one
    // created event (copies only under the same id).
    for id in &accepted {
        crate::common::eventually(Duration::from_secs(60), || async {
            http.get(replica.url(&format!("/api/v1/products/{id}")))
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK)
        })
        .await;
    }
    let stored = crate::common::mongo::stored_products(&settings).await;
    let expected: HashMap<String, usize> = stored.keys().map(|id| (id.clone(), 1)).collect();
    let products = wait_for_histories(
        &settings.kafka.brokers,
        &settings.events.topic,
        &expected,
        Duration::from_secs(60),
    )
    .await;
    for id in stored.keys() {
        let firsts = assert_product_history(id, &products[id]);
        assert_eq!(firsts.len(), 1, "{id}: one change, one event");
    }
    for id in products.keys() {
        assert!(
            stored.contains_key(id),
            "an event without a stored change: {id}"
        );
    }
    replica.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_publish_every_change_once_and_in_order_per_product() {
    let settings = test_settings();
    let log_dir = std::env::temp_dir().join(unique("events-replicas"));
    std::fs::create_dir_all(&log_dir).unwrap();
    let http = reqwest::Client::new();
    let owned: Vec<Replica> = (0..3)
        .map(|i| Replica::start(i, &settings, &log_dir, Vec::new()))
        .collect();
    for replica in &owned {
        replica.wait_ready(&http).await;
    }
    let replicas = &owned;
    let http = &http;

    let get = |i: usize, id: String| async move {
        http.get(replicas[i % 3].url(&format!("/api/v1/products/{id}")))
            .send()
            .await
            .unwrap()
    };
    let wait_for_name = |i: usize, id: String, name: String| async move {
        crate::common::eventually(Duration::from_secs(60), || {
            let (id, name) = (id.clone(), name.clone());
            async move {
                let response = get(i, id).await;
                response.status() == StatusCode::OK
                    && response.json::<Value>().await.unwrap()["name"] == name.as_str()
            }
        })
        .await;
    };
    // Each product is written through all three replicas, one write at a
    // time (concurrent writers of one document are not atomic on FerretDB),
    // products concurrently.
    let life = |i: usize| async move {
        let created = http
            .post(replicas[i % 3].url("/api/v1/products"))
            .json(&product_body(&format!("Replicated {i}")))
            .send()
            .await
            .unwrap();
        let id = accepted_id(created).await;
        wait_for_name(i, id.clone(), format!("Replicated {i}")).await;
        let v1 = format!("Replicated {i} v1");
        let put = http
            .put(replicas[(i + 1) % 3].url(&format!("/api/v1/products/{id}")))
            .json(&product_body(&v1))
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), StatusCode::ACCEPTED);
        wait_for_name(i, id.clone(), v1).await;
        let v2 = format!("Replicated {i} v2");
        let mut grpc =
            ProductsServiceClient::connect(format!("http://{}", replicas[(i + 2) % 3].grpc))
                .await
                .unwrap();
        grpc.update(update_req(&id, &v2)).await.unwrap();
        let deleted = i.is_multiple_of(3);
        if deleted {
            let response = http
                .delete(replicas[(i + 1) % 3].url(&format!("/api/v1/products/{id}")))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::NO_CONTENT);
        }
        (id, deleted)
    };
    let products: Vec<(String, bool)> = join_all((0..24).map(life)).await;

    let expected: HashMap<String, usize> = products
        .iter()
        .map(|(id, deleted)| (id.clone(), if *deleted { 4 } else { 3 }))
        .collect();
    let seen = wait_for_histories(
        &settings.kafka.brokers,
        &settings.events.topic,
        &expected,
        Duration::from_secs(90),
    )
    .await;
    let mut copies = 0;
    for (i, (id, deleted)) in products.iter().enumerate() {
        let events = &seen[id];
        let firsts = assert_product_history(id, events);
        assert_eq!(firsts.len(), expected[id], "{id}: {firsts:#?}");
        copies += events.len() - firsts.len();
        let last = firsts.last().unwrap();
        if *deleted {
            assert_eq!(last.kind, "product.deleted");
            assert_eq!(get(i, id.clone()).await.status(), StatusCode::NOT_FOUND);
        } else {
            let now: Value = get(i, id.clone()).await.json().await.unwrap();
            assert_eq!(
                last.data.as_ref().unwrap(),
                &now,
                "the last event is the stored state"
            );
        }
    }
    assert_eq!(
        copies, 0,
        "no replica crashed, so no event is published twice"
    );
}

#[tokio::test]
async fn events_can_be_turned_off() {
    let mut settings = test_settings();
    settings.events.enabled = false;
    let app = spawn_app_with(settings.clone()).await;
    let id = grpc_create(&mut app.grpc_client().await, "Silent").await;
    let document = crate::common::mongo::stored_document(&settings, &id)
        .await
        .unwrap();
    assert!(!document.contains_key("event"), "{document:?}");
    app.stop().await.unwrap();
}

/// Create batches larger than the relay's pending capacity, on several
/// partitions at once: each batch takes its slots at once (or in parts), so
/// no two batches each hold some slots and wait for the other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_batches_larger_than_the_relays_capacity_do_not_stall() {
    let mut settings = test_settings();
    settings.events.relay.max_pending = 8;
    // A stall would last until this timeout cancels the stuck batch.
    settings.kafka.consumer.apply_timeout_ms = 120_000;
    let app = spawn_app_with(settings.clone()).await;
    let ids: Vec<String> = futures::stream::iter(0..300)
        .map(|i| {
            let app = &app;
            async move {
                accepted_id(app.post_product(&product_body(&format!("Batch {i}"))).await).await
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let expected: HashMap<String, usize> = ids.iter().map(|id| (id.clone(), 1)).collect();
    let products = wait_for_histories(
        &settings.kafka.brokers,
        &settings.events.topic,
        &expected,
        Duration::from_secs(60),
    )
    .await;
    for id in &ids {
        assert_product_history(id, &products[id]);
    }
    app.stop().await.unwrap();
}
