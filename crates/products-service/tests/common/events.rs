//! Reading the change-event topic in tests: every record parsed into the
//! CloudEvents attributes the contract promises (docs/EVENTS.md).

use std::{collections::HashMap, time::Duration};

use rdkafka::{message::OwnedMessage, Message};
use serde_json::Value;

use super::kafka::{header, try_read_all};

/// One record of the events topic.
#[derive(Debug, Clone)]
pub struct SeenEvent {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub id: String,
    pub kind: String,
    pub subject: String,
    pub rev: i64,
    pub headers: HashMap<String, String>,
    pub data: Option<Value>,
}

fn parse(message: &OwnedMessage) -> SeenEvent {
    let text = |key: &str| {
        header(message, key)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    let headers = message
        .headers()
        .map(|hs| {
            use rdkafka::message::Headers;
            hs.iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    SeenEvent {
        partition: message.partition(),
        offset: message.offset(),
        key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
        id: text("ce_id"),
        kind: text("ce_type"),
        subject: text("ce_subject"),
        rev: text("ce_productrev").parse().unwrap_or(-1),
        headers,
        data: message
            .payload()
            .map(|p| serde_json::from_slice(p).expect("event data is JSON")),
    }
}

/// Every event on `topic`, in partition then offset order; `None` while a
/// broker answers with an error (e.g. just restarted).
pub async fn read_events(brokers: &str, topic: &str) -> Option<Vec<SeenEvent>> {
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    let read = tokio::task::spawn_blocking(move || try_read_all(&brokers, &topic))
        .await
        .unwrap();
    let mut events: Vec<SeenEvent> = read.ok()?.iter().map(parse).collect();
    events.sort_by_key(|e| (e.partition, e.offset));
    Some(events)
}

/// The events of each product, in log order (one product's events are on
/// one partition).
pub fn by_product(events: &[SeenEvent]) -> HashMap<String, Vec<SeenEvent>> {
    let mut map: HashMap<String, Vec<SeenEvent>> = HashMap::new();
    for event in events {
        map.entry(event.subject.clone())
            .or_default()
            .push(event.clone());
    }
    map
}

/// The first copy of each `ce_id`, in log order: what a consumer that
/// de-duplicates by id sees.
pub fn first_copies(events: &[SeenEvent]) -> Vec<SeenEvent> {
    let mut seen = std::collections::HashSet::new();
    events
        .iter()
        .filter(|e| seen.insert(e.id.clone()))
        .cloned()
        .collect()
}

/// Polls the topic until `done` holds for its events (or fails after
/// `deadline`, showing what was there).
pub async fn wait_for_events(
    brokers: &str,
    topic: &str,
    deadline: Duration,
    done: impl Fn(&[SeenEvent]) -> bool,
) -> Vec<SeenEvent> {
    let until = std::time::Instant::now() + deadline;
    loop {
        let events = read_events(brokers, topic).await.unwrap_or_default();
        if done(&events) {
            return events;
        }
        assert!(
            std::time::Instant::now() < until,
            "events on {topic} not as expected within {deadline:?}: {} events: {:#?}",
            events.len(),
            events.iter().rev().take(10).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Checks one product's events against the contract: per distinct id, revs
/// 1, 2, … without gaps, created first, deleted (a tombstone) only last;
/// every copy of an id identical in kind and rev. Returns the first copies.
pub fn assert_product_history(product: &str, events: &[SeenEvent]) -> Vec<SeenEvent> {
    let partitions: std::collections::HashSet<i32> = events.iter().map(|e| e.partition).collect();
    assert_eq!(
        partitions.len(),
        1,
        "{product}: events on one partition: {events:#?}"
    );
    let mut by_id: HashMap<&str, &SeenEvent> = HashMap::new();
    for event in events {
        assert_eq!(event.key, product, "key = product id");
        if let Some(first) = by_id.insert(&event.id, event) {
            assert_eq!(
                (first.rev, &first.kind),
                (event.rev, &event.kind),
                "{product}: copies of {} differ",
                event.id
            );
        }
    }
    let firsts = first_copies(events);
    for (i, event) in firsts.iter().enumerate() {
        assert_eq!(
            event.rev,
            i as i64 + 1,
            "{product}: first copies in rev order without gaps: {firsts:#?}"
        );
        let expected_kind = match i {
            0 => "product.created",
            _ if event.kind == "product.deleted" => "product.deleted",
            _ => "product.updated",
        };
        assert_eq!(event.kind, expected_kind, "{product}: {firsts:#?}");
        if event.kind == "product.deleted" {
            assert_eq!(i, firsts.len() - 1, "{product}: nothing after the delete");
            assert!(event.data.is_none(), "a delete is a tombstone");
        } else {
            let data = event.data.as_ref().expect("state-carried event");
            assert_eq!(data["productId"], product);
        }
    }
    firsts
}
