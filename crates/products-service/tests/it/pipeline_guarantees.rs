//! The command pipeline's guarantees where production breaks them, each
//! against the real local Kafka, FerretDB and Redis: updates of unknown
//! products do not hold up a partition; the log, not clocks, orders updates;
//! deleted products stay deleted; a long database outage dead-letters
//! nothing; a maximal poison record fits the dead-letter queue; readers do
//! not see stale products after a write is stored; shutdown is bounded.
//! (Replaying dead letters once is in `kafka_pipeline.rs`.)

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use mongodb::bson::oid::ObjectId;
use products_service::config::Settings;
use serde_json::{json, Value};

use crate::common::{
    eventually,
    kafka::{header, produce, producer, read_all_async},
    mongo::{product_count, stored_document},
    processes::PrivateFerretDb,
    products::{
        create_product, kafka_create_payload, kafka_update_payload, product_body, wait_for_product,
        CATEGORY, SEARCH_FRESHNESS_DEADLINE,
    },
    spawn_app_with, test_settings, KAFKA,
};

/// One partition per topic: every record shares a worker, so a test can
/// show that one product does not hold up another.
fn single_partition_settings() -> Settings {
    let mut settings = test_settings();
    settings.kafka.partitions = 1;
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_of_unknown_products_do_not_hold_up_other_products() {
    let mut settings = single_partition_settings();
    settings.kafka.consumer.not_found_wait_ms = 4000;
    let app = spawn_app_with(settings).await;
    let real = create_product(&app, &product_body("Real lamp")).await;
    let real_id = real["productId"].as_str().unwrap();

    let unknown: Vec<String> = (0..12).map(|_| ObjectId::new().to_hex()).collect();
    for id in &unknown {
        assert_eq!(
            app.put_product(id, &product_body("Ghost")).await.status(),
            202
        );
    }
    let started = Instant::now();
    assert_eq!(
        app.put_product(real_id, &product_body("Renamed lamp"))
            .await
            .status(),
        202
    );
    wait_for_product(&app, real_id, |p| p["name"] == "Renamed lamp").await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the real update took {took:?}"
    );

    // Once their wait runs out, the unknown ones are dead-lettered.
    let topic = app.settings.kafka.topics.dead_letter.clone();
    eventually(Duration::from_secs(30), || async {
        read_all_async(KAFKA, &topic).await.len() == unknown.len()
    })
    .await;
    for letter in read_all_async(KAFKA, &topic).await {
        assert_eq!(
            header(&letter, "kafka_dlt-exception-fqcn"),
            Some(&b"products_service::ProductNotFound"[..])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_of_the_update_topic_wins_over_timestamps() {
    let app = spawn_app_with(single_partition_settings()).await;
    let topics = app.settings.kafka.topics.clone();
    let kafka = producer(KAFKA);
    let id = ObjectId::new().to_hex();
    produce(
        &kafka,
        &topics.create,
        Some(&id),
        &kafka_create_payload(&id, "Clock lamp"),
        &[],
    )
    .await;
    wait_for_product(&app, &id, |_| true).await;

    // Two replicas with clocks 10 s apart: the later record carries the
    // earlier timestamp.
    produce(
        &kafka,
        &topics.update,
        Some(&id),
        &kafka_update_payload(&id, "First in the log", "2030-01-01T00:00:10Z"),
        &[],
    )
    .await;
    produce(
        &kafka,
        &topics.update,
        Some(&id),
        &kafka_update_payload(&id, "Second in the log", "2030-01-01T00:00:00Z"),
        &[],
    )
    .await;
    // Legacy (Go) format: no updatedAt at all, ordered by the log too.
    let legacy = json!({
        "productId": id, "categoryId": CATEGORY, "name": "Third, legacy",
        "description": "No timestamp", "price": 3.0, "quantity": 3, "rating": 1
    });
    produce(
        &kafka,
        &topics.update,
        Some(&id),
        legacy.to_string().as_bytes(),
        &[],
    )
    .await;
    let stored = wait_for_product(&app, &id, |p| p["name"] == "Third, legacy").await;
    assert_eq!(stored["productId"], id.as_str());
    let document = stored_document(&app.settings, &id).await.unwrap();
    assert_eq!(document.get_i64("rev").unwrap(), 4, "create + 3 updates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_product_stays_deleted_whatever_is_redelivered() {
    let app = spawn_app_with(single_partition_settings()).await;
    let topics = app.settings.kafka.topics.clone();
    let kafka = producer(KAFKA);
    let id = ObjectId::new().to_hex();
    let create = kafka_create_payload(&id, "Doomed lamp");
    produce(&kafka, &topics.create, Some(&id), &create, &[]).await;
    wait_for_product(&app, &id, |_| true).await;
    assert_eq!(app.delete_product(&id).await.status(), 204);

    // Its create and an update delivered again (a crash, a group reset, a
    // replay), and a product created behind them as a marker.
    produce(&kafka, &topics.create, Some(&id), &create, &[]).await;
    let update = kafka_update_payload(&id, "Doomed lamp returns", "2031-01-01T00:00:00Z");
    produce(&kafka, &topics.update, Some(&id), &update, &[]).await;

    // A delete that comes before its create is applied holds too.
    let early = ObjectId::new().to_hex();
    assert_eq!(app.delete_product(&early).await.status(), 404);
    produce(
        &kafka,
        &topics.create,
        Some(&early),
        &kafka_create_payload(&early, "Early lamp"),
        &[],
    )
    .await;

    let marker = ObjectId::new().to_hex();
    produce(
        &kafka,
        &topics.create,
        Some(&marker),
        &kafka_create_payload(&marker, "Marker lamp"),
        &[],
    )
    .await;
    produce(
        &kafka,
        &topics.update,
        Some(&marker),
        &kafka_update_payload(&marker, "Marker lamp updated", "2031-01-01T00:00:00Z"),
        &[],
    )
    .await;
    wait_for_product(&app, &marker, |p| p["name"] == "Marker lamp updated").await;

    for id in [&id, &early] {
        assert_eq!(app.get_product(id).await.status(), 404, "{id} came back");
    }
    // Search follows the stored changes within its freshness bound: wait
    // for the marker's update, then nothing deleted may be found with it.
    let names = |search: &Value| -> Vec<String> {
        search["products"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str().map(str::to_owned))
            .collect()
    };
    let started = Instant::now();
    let search = loop {
        let search = app
            .get_json("/api/v1/products/search?search=lamp&size=100")
            .await;
        if names(&search).contains(&"Marker lamp updated".to_owned())
            || started.elapsed() > SEARCH_FRESHNESS_DEADLINE
        {
            break search;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(names(&search), ["Marker lamp updated"], "{search}");
    assert_eq!(search["totalCount"], 1);
    assert!(read_all_async(KAFKA, &topics.dead_letter).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ninety_second_database_outage_dead_letters_nothing() {
    let mut db = PrivateFerretDb::start().await;
    let mut settings = test_settings();
    settings.mongo.uri = db.uri().into();
    settings.redis.enabled = false;
    settings.kafka.consumer.not_found_wait_ms = 2000;
    let app = spawn_app_with(settings).await;
    let topics = app.settings.kafka.topics.clone();
    let kafka = producer(KAFKA);

    // Creates, each followed by an update of the same product.
    let ids: Vec<String> = (0..120).map(|_| ObjectId::new().to_hex()).collect();
    let stream = {
        let (kafka, topics, ids) = (kafka.clone(), topics.clone(), ids.clone());
        tokio::spawn(async move {
            for (i, id) in ids.iter().enumerate() {
                produce(
                    &kafka,
                    &topics.create,
                    Some(id),
                    &kafka_create_payload(id, &format!("Outage {i}")),
                    &[],
                )
                .await;
                let update = kafka_update_payload(
                    id,
                    &format!("Outage {i} updated"),
                    "2030-01-01T00:00:00Z",
                );
                produce(&kafka, &topics.update, Some(id), &update, &[]).await;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        })
    };
    eventually(Duration::from_secs(30), || async {
        product_count(&app.settings).await >= 10
    })
    .await;
    db.stop();
    let outage = Instant::now();
    // Readiness says the pipeline is held up by a dependency. (The gauge
    // `kafka_consumer_blocked_partitions` says it too, but the metrics of the
    // apps this test binary runs side by side share one process-wide
    // registry, so it is checked in the applier's unit tests instead.)
    eventually(Duration::from_secs(20), || async {
        let ready = app.get_json("/ready").await;
        ready["checks"]["command_pipeline"] == "down"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(90).saturating_sub(outage.elapsed())).await;
    db.restart().await;
    stream.await.unwrap();

    for (i, id) in ids.iter().enumerate() {
        let name = format!("Outage {i} updated");
        wait_for_product(&app, id, |p| p["name"] == name.as_str()).await;
    }
    assert!(
        read_all_async(KAFKA, &topics.dead_letter).await.is_empty(),
        "an outage is not the messages' fault"
    );
    eventually(Duration::from_secs(10), || async {
        app.get_json("/ready").await["checks"]["command_pipeline"] == "up"
    })
    .await;
}

/// Bytes that do not compress (xorshift), so the record stays this large.
fn incompressible(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maximal_poison_record_is_dead_lettered_whole_and_the_next_is_applied() {
    let app = spawn_app_with(single_partition_settings()).await;
    let topics = app.settings.kafka.topics.clone();
    let kafka = producer(KAFKA);
    // As large as the command topic takes (the broker's default limit is
    // 1,048,588 bytes per batch): with the provenance headers added, the
    // dead letter is larger than that.
    let poison = incompressible(1_048_000);
    let key = ObjectId::new().to_hex();
    produce(
        &kafka,
        &topics.create,
        Some(&key),
        &poison,
        &[("trace-me", "yes")],
    )
    .await;
    let next = ObjectId::new().to_hex();
    produce(
        &kafka,
        &topics.create,
        Some(&next),
        &kafka_create_payload(&next, "After the poison"),
        &[],
    )
    .await;
    wait_for_product(&app, &next, |_| true).await;

    let letters = read_all_async(KAFKA, &topics.dead_letter).await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    use rdkafka::Message;
    assert_eq!(letter.payload(), Some(&poison[..]), "the bytes, whole");
    assert_eq!(letter.key(), Some(key.as_bytes()));
    assert_eq!(header(letter, "trace-me"), Some(&b"yes"[..]));
    assert_eq!(
        header(letter, "kafka_dlt-exception-fqcn"),
        Some(&b"products_service::InvalidPayload"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_every_stored_update_within_a_second() {
    let app = Arc::new(spawn_app_with(test_settings()).await);
    let created = create_product(&app, &product_body("Version 0")).await;
    let id = created["productId"].as_str().unwrap().to_owned();
    let done = tokio_util::sync::CancellationToken::new();
    // (when a read started, which version it returned)
    let reads: Arc<Mutex<Vec<(Instant, u32)>>> = Arc::default();
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let (app, id, done, reads) = (app.clone(), id.clone(), done.clone(), reads.clone());
            tokio::spawn(async move {
                let url = app.url(&format!("/api/v1/products/{id}"));
                while !done.is_cancelled() {
                    let started = Instant::now();
                    let product: Value = app
                        .client
                        .get(&url)
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    let version = product["name"].as_str().unwrap()["Version ".len()..]
                        .parse()
                        .unwrap();
                    reads.lock().unwrap().push((started, version));
                }
            })
        })
        .collect();

    let mut stored_at = Vec::new();
    for version in 1..=50u32 {
        assert_eq!(
            app.put_product(&id, &product_body(&format!("Version {version}")))
                .await
                .status(),
            202
        );
        let name = format!("Version {version}");
        let started = Instant::now();
        loop {
            let document = stored_document(&app.settings, &id).await.unwrap();
            if document.get_str("name") == Ok(name.as_str()) {
                stored_at.push((Instant::now(), version));
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{name} not stored"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    done.cancel();
    for reader in readers {
        reader.await.unwrap();
    }
    let reads = reads.lock().unwrap();
    let stale: Vec<_> = reads
        .iter()
        .filter(|(started, seen)| {
            let due = stored_at
                .iter()
                .filter(|(at, _)| *at + Duration::from_secs(1) <= *started)
                .map(|(_, version)| *version)
                .max()
                .unwrap_or(0);
            *seen < due
        })
        .collect();
    assert!(reads.len() > 100, "only {} reads", reads.len());
    assert!(
        stale.is_empty(),
        "{} of {} reads stale",
        stale.len(),
        reads.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_whatever_the_backlog() {
    let mut settings = single_partition_settings();
    settings.shutdown_timeout_secs = 5;
    let app = spawn_app_with(settings.clone()).await;
    let topics = app.settings.kafka.topics.clone();
    let kafka = producer(KAFKA);
    let ids: Vec<String> = (0..20).map(|_| ObjectId::new().to_hex()).collect();
    for id in &ids {
        produce(
            &kafka,
            &topics.create,
            Some(id),
            &kafka_create_payload(id, "Backlog lamp"),
            &[],
        )
        .await;
    }
    for id in &ids {
        wait_for_product(&app, id, |_| true).await;
    }
    // Updates are applied one by one: 4,000 make a backlog of many seconds
    // (an old consumer drained it all before stopping). Round by round, so
    // each product's updates are in the log in round order.
    for round in 0..200 {
        let sends = ids.iter().map(|id| {
            let payload =
                kafka_update_payload(id, &format!("Round {round}"), "2030-01-01T00:00:00Z");
            let (kafka, topic) = (&kafka, &topics.update);
            async move { produce(kafka, topic, Some(id), &payload, &[]).await }
        });
        futures::future::join_all(sends).await;
    }
    wait_for_product(&app, &ids[0], |p| p["name"] != "Backlog lamp").await;

    let stopping = Instant::now();
    app.stop().await.unwrap();
    let took = stopping.elapsed();
    assert!(took < Duration::from_secs(6), "stopping took {took:?}");

    // The next owner of the partition picks up where it stopped.
    let again = spawn_app_with(settings).await;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let mut names = Vec::new();
        for id in &ids {
            let url = again.url(&format!("/api/v1/products/{id}"));
            let product: Value = again
                .client
                .get(&url)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            names.push(product["name"].as_str().unwrap_or_default().to_owned());
        }
        if names.iter().all(|n| n == "Round 199") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all at the last round: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
