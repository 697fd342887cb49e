//! Catalog documents written straight to the database (the bulk-insert
//! limit, the read catalogs).

use std::time::Instant;

use anyhow::Result;
use mongodb::bson::{doc, oid::ObjectId, DateTime as BsonDateTime, Document};
use products_service::{adapters::mongo::MongoProductRepository, config::MongoSettings};

use crate::{Opts, CATEGORY};

/// Batch sizes of the bulk-insert limit.
pub const BULK_BATCH_SIZES: [usize; 3] = [100, 1000, 5000];

fn product_doc(id: &ObjectId, i: usize, category: ObjectId, date: BsonDateTime) -> Document {
    doc! {
        "_id": *id,
        "categoryId": category,
        "name": format!("Bench widget-{i}"),
        "description": "Produced straight to Kafka by products-bench",
        "price": 1.5,
        "photos": [],
        "quantity": 1_i64,
        "rating": 3_i64,
        "createdAt": date,
        "updatedAt": date,
        "rev": 1_i64,
    }
}

/// Inserts the documents with `insert_many` in batches; the collection first
/// gets the service's own indexes (by the service's own code), so the limit
/// pays the same index maintenance per document as the service does.
pub async fn bulk_insert(
    opts: &Opts,
    db: &mongodb::Database,
    ids: &[ObjectId],
    batch: usize,
) -> Result<f64> {
    bulk_insert_with(opts, db, ids, batch, false).await
}

/// As [`bulk_insert`]; with `events`, each document has the `event` field the
/// service stores with events on (a created event's slot: one string,
/// docs/EVENTS.md).
pub async fn bulk_insert_with(
    opts: &Opts,
    db: &mongodb::Database,
    ids: &[ObjectId],
    batch: usize,
    events: bool,
) -> Result<f64> {
    let repository = MongoProductRepository::connect(&MongoSettings {
        uri: opts.mongo_uri.clone().into(),
        database: db.name().to_owned(),
        collection: "products".to_owned(),
        server_selection_timeout_ms: 5000,
        connect_timeout_ms: 5000,
        tombstone_retention_hours: 168,
        tls: Default::default(),
        auth: Default::default(),
    })
    .await?;
    repository
        .ensure_indexes()
        .await
        .map_err(|e| anyhow::anyhow!("creating the service's indexes: {e}"))?;
    let category = ObjectId::parse_str(CATEGORY)?;
    let date = BsonDateTime::parse_rfc3339_str("2026-01-01T00:00:00Z")?;
    let relay = ObjectId::new().to_hex();
    let docs: Vec<Document> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let mut d = product_doc(id, i, category, date);
            if events {
                // As the service stores it: `relay|seq|id|type|time_ms|traceparent|tracestate`.
                let event = format!(
                    "{relay}|{}|{}|product.created|{}||",
                    i + 1,
                    ObjectId::new().to_hex(),
                    date.timestamp_millis()
                );
                d.insert("event", event);
            }
            d
        })
        .collect();
    let coll = db.collection::<Document>("products");
    let start = Instant::now();
    for chunk in docs.chunks(batch) {
        coll.insert_many(chunk).await?;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// `items` in a random order (splitmix64 with `seed`: reproducible).
pub fn shuffled<T: Clone>(items: &[T], seed: u64) -> Vec<T> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut out = items.to_vec();
    for i in (1..out.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        out.swap(i, j);
    }
    out
}
