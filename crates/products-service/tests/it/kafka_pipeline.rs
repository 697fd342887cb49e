//! The Kafka command pipeline against the real local Kafka and FerretDB:
//! bulk idempotency and ordering, poison messages, database and broker
//! outages, a crash mid-stream, and replaying dead letters.

use std::{
    collections::HashMap,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use chrono::{TimeZone, Utc};
use mongodb::bson::oid::ObjectId;
use products_service::config::{ExposeSecret, Settings};
use rdkafka::Message;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{
    eventually, free_port,
    kafka::{header, produce, producer, read_all, read_all_async, wait_for_zero_lag},
    mongo::{product_count, stored_products, wait_for_count},
    processes::{PrivateFerretDb, PrivateKafka},
    products::{
        accepted_id, kafka_create_payload, kafka_update_payload, product_body, wait_for_product,
    },
    spawn_app, spawn_app_with, test_settings, KAFKA,
};

fn update_payload(id: &str, name: &str, version: i64) -> Vec<u8> {
    let updated_at = Utc.timestamp_opt(1_800_000_000 + version, 0).unwrap();
    kafka_update_payload(id, name, &updated_at.to_rfc3339())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_creates_apply_exactly_once_and_updates_in_order() {
    let app = spawn_app().await;
    let topics = &app.settings.kafka.topics;
    let kafka = producer(KAFKA);
    let ids: Vec<String> = (0..1600).map(|_| ObjectId::new().to_hex()).collect();

    // 1,600 distinct creates; then, once those are acknowledged (so they come
    // first in their partitions), 200 exact duplicates of a message and 200
    // repeated keys with other content (a create of an existing id is a no-op).
    let mut first = Vec::new();
    let mut again = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        first.push((id.clone(), kafka_create_payload(id, &format!("Bulk {i}"))));
    }
    for (i, id) in ids.iter().enumerate().take(200) {
        again.push((id.clone(), kafka_create_payload(id, &format!("Bulk {i}"))));
    }
    for id in ids.iter().skip(200).take(200) {
        again.push((
            id.clone(),
            kafka_create_payload(id, "Repeated key, must lose"),
        ));
    }
    assert_eq!(first.len() + again.len(), 2000);
    for sends in [&first, &again] {
        let futures = sends
            .iter()
            .map(|(key, payload)| produce(&kafka, &topics.create, Some(key), payload, &[]));
        futures::future::join_all(futures).await;
    }
    wait_for_count(&app.settings, 1600, Duration::from_secs(120)).await;

    // Five updates each for 100 products, in order on their partitions.
    let kafka = &kafka;
    for version in 1..=5 {
        let futures = ids.iter().take(100).map(|id| {
            let payload = update_payload(id, &format!("Version {version}"), version);
            async move { produce(kafka, &topics.update, Some(id), &payload, &[]).await }
        });
        futures::future::join_all(futures).await;
    }
    wait_for_zero_lag(KAFKA, &app.settings).await;

    let stored = stored_products(&app.settings).await;
    assert_eq!(stored.len(), 1600);
    for (i, id) in ids.iter().enumerate() {
        let name = stored[id].get_str("name").unwrap();
        let expected = if i < 100 {
            "Version 5".to_owned()
        } else {
            format!("Bulk {i}")
        };
        assert_eq!(name, expected, "product {i}");
    }
    assert!(
        read_all(KAFKA, &topics.dead_letter).is_empty(),
        "nothing dead-lettered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_whole_and_the_stream_goes_on() {
    let mut settings = test_settings();
    settings.kafka.consumer.workers = 2; // capped concurrency across partitions
    let app = spawn_app_with(settings).await;
    let topics = &app.settings.kafka.topics;
    let kafka = producer(KAFKA);
    let mut invalid_fields: Value =
        serde_json::from_slice(&kafka_create_payload(&ObjectId::new().to_hex(), "ok name"))
            .unwrap();
    invalid_fields["price"] = json!(-1);
    let garbage: Vec<u8> = (0..1_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let poison: Vec<(&str, Vec<u8>)> = vec![
        ("not-json", b"this is not json {".to_vec()),
        ("wrong-shape", br#"{"hello": ["world"]}"#.to_vec()),
        ("invalid-fields", invalid_fields.to_string().into_bytes()),
        ("garbage-1mb", garbage),
    ];

    let mut good_ids = Vec::new();
    let mut poison_positions = HashMap::new();
    for (i, (label, payload)) in poison.iter().enumerate() {
        for _ in 0..3 {
            let id = ObjectId::new().to_hex();
            let key = id.clone();
            produce(
                &kafka,
                &topics.create,
                Some(&key),
                &kafka_create_payload(&id, &format!("Good {i}")),
                &[],
            )
            .await;
            good_ids.push(id);
        }
        let key = format!("poison-{label}");
        let position = produce(
            &kafka,
            &topics.create,
            Some(&key),
            payload,
            &[("x-test-label", label)],
        )
        .await;
        poison_positions.insert(label.to_string(), (key, position));
    }
    // Legacy format: plain product JSON, no key, no headers.
    let legacy = br#"{"categoryId":"65a1f0c2e4b0a1b2c3d4e5f7","name":"Legacy product",
        "description":"As the Go original sent it","price":3,"quantity":1}"#;
    produce(&kafka, &topics.create, None, legacy, &[]).await;

    wait_for_count(
        &app.settings,
        good_ids.len() as u64 + 1,
        Duration::from_secs(60),
    )
    .await;
    wait_for_zero_lag(KAFKA, &app.settings).await;

    let letters = read_all(KAFKA, &topics.dead_letter);
    assert_eq!(
        letters.len(),
        poison.len(),
        "one dead letter per poison message"
    );
    for (label, payload) in &poison {
        let (key, (partition, offset)) = &poison_positions[*label];
        let letter = letters
            .iter()
            .find(|m| m.key() == Some(key.as_bytes()))
            .unwrap_or_else(|| panic!("{label} not dead-lettered"));
        assert_eq!(
            letter.payload(),
            Some(payload.as_slice()),
            "{label}: original bytes"
        );
        assert_eq!(
            header(letter, "x-test-label"),
            Some(label.as_bytes()),
            "original headers kept"
        );
        assert_eq!(
            header(letter, "kafka_dlt-original-topic"),
            Some(topics.create.as_bytes())
        );
        assert_eq!(
            header(letter, "kafka_dlt-original-partition"),
            Some(&partition.to_be_bytes()[..])
        );
        assert_eq!(
            header(letter, "kafka_dlt-original-offset"),
            Some(&offset.to_be_bytes()[..])
        );
        assert_eq!(
            header(letter, "kafka_dlt-original-timestamp").map(<[u8]>::len),
            Some(8)
        );
        assert_eq!(
            header(letter, "kafka_dlt-original-consumer-group"),
            Some(app.settings.kafka.group_id.as_bytes())
        );
        assert_eq!(
            header(letter, "kafka_dlt-exception-fqcn"),
            Some(&b"products_service::InvalidPayload"[..])
        );
        assert!(!header(letter, "kafka_dlt-exception-message")
            .unwrap()
            .is_empty());
        assert_eq!(
            header(letter, "kafka_deliveryAttempt"),
            Some(&1i32.to_be_bytes()[..])
        );
    }
    let stored = stored_products(&app.settings).await;
    for id in &good_ids {
        assert!(stored.contains_key(id), "good message {id} applied");
    }
    assert!(stored
        .values()
        .any(|d| d.get_str("name") == Ok("Legacy product")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_mid_stream_loses_and_dead_letters_nothing() {
    let mut db = PrivateFerretDb::start().await;
    let mut settings = test_settings();
    settings.mongo.uri = db.uri().into();
    settings.redis.enabled = false;
    let app = spawn_app_with(settings).await;
    let topics = app.settings.kafka.topics.clone();
    let kafka = producer(KAFKA);

    let stream = {
        let kafka = kafka.clone();
        let topic = topics.create.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                let id = ObjectId::new().to_hex();
                produce(
                    &kafka,
                    &topic,
                    Some(&id),
                    &kafka_create_payload(&id, &format!("Stream {i}")),
                    &[],
                )
                .await;
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        })
    };
    eventually(Duration::from_secs(30), || async {
        product_count(&app.settings).await >= 30
    })
    .await;
    db.stop();
    tokio::time::sleep(Duration::from_secs(10)).await; // the outage itself
    db.restart().await;
    stream.await.unwrap();

    wait_for_count(&app.settings, 300, Duration::from_secs(90)).await;
    wait_for_zero_lag(KAFKA, &app.settings).await;
    assert!(
        read_all(KAFKA, &topics.dead_letter).is_empty(),
        "nothing dead-lettered"
    );
}

/// The real binary, with the Kafka settings of `settings` in its environment.
fn service_command(settings: &Settings) -> Command {
    let kafka = &settings.kafka;
    let mut command = Command::new(env!("CARGO_BIN_EXE_products-service"));
    command
        .env("KAFKA_BROKERS", &kafka.brokers)
        .env("KAFKA_GROUP_ID", &kafka.group_id)
        .env("KAFKA_TOPIC_CREATE", &kafka.topics.create)
        .env("KAFKA_TOPIC_UPDATE", &kafka.topics.update)
        .env("KAFKA_TOPIC_DEAD_LETTER", &kafka.topics.dead_letter);
    command
}

/// The real service, configured like `settings` through its environment.
fn start_service(settings: &Settings) -> Child {
    service_command(settings)
        .env("HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("GRPC_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("METRICS_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("MONGO_URI", settings.mongo.uri.expose_secret())
        .env("MONGO_DB", &settings.mongo.database)
        .env("REDIS_ENABLED", "false")
        .env("APP__KAFKA__CONSUMER__RETRY_MAX_ATTEMPTS", "2")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_then_restart_applies_every_product_once() {
    let settings = test_settings();
    let mut service = start_service(&settings);
    let kafka = producer(KAFKA);
    let ids: Vec<String> = (0..2000).map(|_| ObjectId::new().to_hex()).collect();
    let futures = ids.iter().enumerate().map(|(i, id)| {
        let payload = kafka_create_payload(id, &format!("Crash {i}"));
        let kafka = kafka.clone();
        let topic = settings.kafka.topics.create.clone();
        async move { produce(&kafka, &topic, Some(id), &payload, &[]).await }
    });
    // The service creates the topics; retry producing until they exist.
    eventually(Duration::from_secs(30), || async {
        product_count(&settings).await > 0 || {
            let topic = settings.kafka.topics.create.clone();
            tokio::task::spawn_blocking(move || {
                use rdkafka::consumer::Consumer;
                let c: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
                    .set("bootstrap.servers", KAFKA)
                    .create()
                    .unwrap();
                c.fetch_metadata(Some(&topic), Duration::from_secs(2))
                    .is_ok_and(|m| {
                        m.topics()
                            .iter()
                            .any(|t| t.error().is_none() && !t.partitions().is_empty())
                    })
            })
            .await
            .unwrap()
        }
    })
    .await;
    futures::future::join_all(futures).await;

    eventually(Duration::from_secs(60), || async {
        product_count(&settings).await >= 200
    })
    .await;
    service.kill().unwrap(); // SIGKILL
    service.wait().unwrap();
    let at_kill = product_count(&settings).await;

    let mut restarted = start_service(&settings);
    wait_for_count(&settings, 2000, Duration::from_secs(120)).await;
    restarted.kill().unwrap();
    restarted.wait().unwrap();
    let stored = stored_products(&settings).await;
    assert_eq!(stored.len(), 2000, "killed at {at_kill}");
    for id in &ids {
        assert!(stored.contains_key(id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_loss_answers_503_and_loses_no_accepted_write() {
    let mut broker = PrivateKafka::start().await;
    let mut settings = test_settings();
    settings.kafka.brokers = broker.brokers();
    settings.kafka.producer.delivery_timeout_ms = 3000;
    let app = spawn_app_with(settings).await;
    let post = |name: String| {
        app.client
            .post(app.url("/api/v1/products"))
            .json(&product_body(&name))
            .send()
    };

    let mut accepted = Vec::new();
    for i in 0..5 {
        let response = post(format!("Before loss {i}")).await.unwrap();
        accepted.push(accepted_id(response).await);
    }
    wait_for_product(&app, &accepted[0], |_| true).await;

    broker.kill();
    let mut refused = 0;
    for i in 0..3 {
        let started = Instant::now();
        let response = post(format!("During loss {i}")).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "answered in bounded time"
        );
        match response.status() {
            StatusCode::SERVICE_UNAVAILABLE => refused += 1,
            // A write the broker acknowledged before it died is fine too.
            StatusCode::ACCEPTED => accepted.push(accepted_id(response).await),
            other => panic!("unexpected {other}"),
        }
    }
    assert!(refused > 0, "writes are refused while the broker is gone");
    let ready = app.client.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);

    broker.restart().await;
    eventually(Duration::from_secs(60), || async {
        post("After restart".to_owned())
            .await
            .is_ok_and(|r| r.status() == StatusCode::ACCEPTED)
    })
    .await;
    for id in &accepted {
        wait_for_product(&app, id, |_| true).await;
    }
}

fn replay_dlq(settings: &Settings, args: &[&str]) -> String {
    let output = service_command(settings)
        .arg("replay-dlq")
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "replay-dlq failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_dead_letter_is_replayed_and_applied() {
    let mut settings = test_settings();
    settings.kafka.consumer.not_found_wait_ms = 500;
    let app = spawn_app_with(settings).await;
    let topics = &app.settings.kafka.topics;
    let kafka = producer(KAFKA);

    // An update for a product that does not exist: waits, then dead-lettered.
    let id = ObjectId::new().to_hex();
    produce(
        &kafka,
        &topics.update,
        Some(&id),
        &update_payload(&id, "Replayed name", 1),
        &[],
    )
    .await;
    eventually(Duration::from_secs(30), || async {
        read_all_async(KAFKA, &topics.dead_letter).await.len() == 1
    })
    .await;
    let letter = &read_all(KAFKA, &topics.dead_letter)[0];
    assert_eq!(
        header(letter, "kafka_dlt-exception-fqcn"),
        Some(&b"products_service::ProductNotFound"[..])
    );
    let attempts = i32::from_be_bytes(
        header(letter, "kafka_deliveryAttempt")
            .unwrap()
            .try_into()
            .unwrap(),
    );
    assert!(attempts >= 2, "tried, waited, tried again: {attempts}");

    // The fix: the product now exists.
    produce(
        &kafka,
        &topics.create,
        Some(&id),
        &kafka_create_payload(&id, "Original name"),
        &[],
    )
    .await;
    wait_for_product(&app, &id, |p| p["name"] == "Original name").await;

    let dry = replay_dlq(&app.settings, &["--dry-run", "--key", &id]);
    assert!(dry.contains("would replay 1"), "{dry}");
    let other = replay_dlq(&app.settings, &["--key", &ObjectId::new().to_hex()]);
    assert!(other.contains("replayed 0"), "{other}");
    assert_eq!(
        read_all(KAFKA, &topics.update).len(),
        1,
        "nothing published yet"
    );

    let replayed = replay_dlq(
        &app.settings,
        &["--key", &id, "--error-contains", "NotFound"],
    );
    assert!(replayed.contains("replayed 1"), "{replayed}");
    let updated = wait_for_product(&app, &id, |p| p["name"] == "Replayed name").await;
    assert_eq!(updated["productId"], id.as_str());
    let republished = read_all(KAFKA, &topics.update);
    assert_eq!(republished.len(), 2);
    assert!(
        header(&republished[1], "kafka_dlt-exception-fqcn").is_none(),
        "the failure's headers are not replayed"
    );
    assert_eq!(
        header(&republished[1], "kafka_dlt-original-offset"),
        Some(&republished[0].offset().to_be_bytes()[..]),
        "the record keeps its place in the order of its product's updates"
    );
}

/// A dead letter as the service writes it: the record and its origin.
async fn dead_letter_of_create(settings: &Settings, id: &str, name: &str) {
    use rdkafka::{message::Header, producer::FutureRecord};
    let topics = &settings.kafka.topics;
    let headers = rdkafka::message::OwnedHeaders::new()
        .insert(Header {
            key: "kafka_dlt-original-topic",
            value: Some(topics.create.as_bytes()),
        })
        .insert(Header {
            key: "kafka_dlt-original-partition",
            value: Some(&0i32.to_be_bytes()[..]),
        })
        .insert(Header {
            key: "kafka_dlt-original-offset",
            value: Some(&7i64.to_be_bytes()[..]),
        })
        .insert(Header {
            key: "kafka_dlt-exception-fqcn",
            value: Some(&b"products_service::RetriesExhausted"[..]),
        });
    let payload = kafka_create_payload(id, name);
    crate::common::kafka::send(
        &producer(KAFKA),
        FutureRecord::to(&topics.dead_letter)
            .key(id)
            .payload(&payload)
            .headers(headers),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_twice_replays_each_dead_letter_once() {
    let app = spawn_app().await;
    let topics = app.settings.kafka.topics.clone();
    let ids: Vec<String> = (0..3).map(|_| ObjectId::new().to_hex()).collect();
    for (i, id) in ids.iter().enumerate() {
        dead_letter_of_create(&app.settings, id, &format!("Lettered {i}")).await;
    }
    let first = replay_dlq(&app.settings, &[]);
    assert!(first.contains("replayed 3"), "{first}");
    let second = replay_dlq(&app.settings, &[]);
    assert!(second.contains("replayed 0"), "{second}");
    for id in &ids {
        wait_for_product(&app, id, |_| true).await;
    }
    assert_eq!(
        read_all(KAFKA, &topics.create).len(),
        3,
        "each replayed once"
    );

    // A new letter after that: the next run replays it alone.
    let late = ObjectId::new().to_hex();
    dead_letter_of_create(&app.settings, &late, "Lettered late").await;
    let third = replay_dlq(&app.settings, &[]);
    assert!(third.contains("replayed 1"), "{third}");
    // --from-beginning forces a full replay; applying stays idempotent.
    let full = replay_dlq(&app.settings, &["--from-beginning"]);
    assert!(full.contains("replayed 4"), "{full}");
    wait_for_product(&app, &late, |_| true).await;
    assert_eq!(read_all(KAFKA, &topics.create).len(), 8);
    wait_for_zero_lag(KAFKA, &app.settings).await;
    assert_eq!(product_count(&app.settings).await, 4);
}
