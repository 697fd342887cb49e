//! Smoke tests of the local stack itself (`make stack-up`): each component is
//! the real thing, reachable on loopback from Rust.

use std::time::Duration;

use crate::common::{unique, JAEGER_QUERY, KAFKA, MONGO_URI, PROMETHEUS, REDIS_URL};
use mongodb::bson::{doc, Document};
use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{Consumer, StreamConsumer},
    producer::{FutureProducer, FutureRecord},
    ClientConfig, Message,
};

#[tokio::test]
async fn kafka_produces_and_consumes_on_a_fresh_topic() {
    let topic = unique("smoke");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", KAFKA)
        .create()
        .unwrap();
    let created = admin
        .create_topics(
            &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap();
    assert!(created[0].is_ok(), "{created:?}");

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", KAFKA)
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap();
    let delivery = producer
        .send(
            FutureRecord::to(&topic).key("k").payload("hello kafka"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    assert_eq!((delivery.partition, delivery.offset), (0, 0));

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", KAFKA)
        .set("group.id", unique("smoke-group"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("a message within 30 s")
        .unwrap();
    assert_eq!(message.payload(), Some(&b"hello kafka"[..]));
    assert_eq!(message.key(), Some(&b"k"[..]));
}

#[tokio::test]
async fn mongodb_protocol_server_inserts_and_finds() {
    let client = mongodb::Client::with_uri_str(MONGO_URI).await.unwrap();
    let db = client.database(&unique("smoke"));
    let collection = db.collection::<Document>("things");
    collection
        .insert_one(doc! { "_id": 1, "name": "widget" })
        .await
        .unwrap();
    let found = collection
        .find_one(doc! { "name": "widget" })
        .await
        .unwrap()
        .expect("document found");
    assert_eq!(found.get_i32("_id").unwrap(), 1);
    db.drop().await.unwrap();
}

#[tokio::test]
async fn redis_sets_and_gets() {
    let client = redis::Client::open(REDIS_URL).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = unique("smoke");
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("value")
        .arg("EX")
        .arg(60)
        .query_async(&mut conn)
        .await
        .unwrap();
    let value: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(value, "value");
}

#[tokio::test]
async fn prometheus_is_ready() {
    let response = reqwest::get(format!("{PROMETHEUS}/-/ready")).await.unwrap();
    assert!(response.status().is_success(), "{response:?}");
}

#[tokio::test]
async fn jaeger_query_api_answers() {
    let response = reqwest::get(format!("{JAEGER_QUERY}/api/services"))
        .await
        .unwrap();
    assert!(response.status().is_success(), "{response:?}");
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body.get("data").is_some(), "unexpected body {body}");
}
