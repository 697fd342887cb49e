//! Reads of a test app's MongoDB collection, straight from the database
//! (not through the service): what is stored, how much, one document.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use mongodb::bson::{doc, oid::ObjectId, Document};
use products_service::config::{ExposeSecret, Settings};

async fn collection(settings: &Settings) -> mongodb::Collection<Document> {
    mongodb::Client::with_uri_str(settings.mongo.uri.expose_secret())
        .await
        .unwrap()
        .database(&settings.mongo.database)
        .collection::<Document>(&settings.mongo.collection)
}

/// How many products the app's database holds.
pub async fn product_count(settings: &Settings) -> u64 {
    collection(settings)
        .await
        .count_documents(doc! {})
        .await
        .unwrap_or(0)
}

/// Every stored document (tombstones included), by hex id.
pub async fn stored_products(settings: &Settings) -> HashMap<String, Document> {
    use futures::TryStreamExt;
    collection(settings)
        .await
        .find(doc! {})
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.get_object_id("_id").unwrap().to_hex(), d))
        .collect()
}

/// The stored document of product `id`, if any.
pub async fn stored_document(settings: &Settings, id: &str) -> Option<Document> {
    collection(settings)
        .await
        .find_one(doc! { "_id": ObjectId::parse_str(id).unwrap() })
        .await
        .unwrap()
}

/// Waits until exactly `expected` products are stored; fails at once if
/// there are more, and after `deadline` if there are still fewer.
pub async fn wait_for_count(settings: &Settings, expected: u64, deadline: Duration) {
    let started = Instant::now();
    loop {
        let count = product_count(settings).await;
        if count == expected {
            return;
        }
        assert!(
            count < expected,
            "{count} products, more than the {expected} expected"
        );
        assert!(
            started.elapsed() < deadline,
            "only {count} of {expected} products after {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
