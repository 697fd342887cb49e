//! The event relay's side of the database ([`RelayStore`]): one small
//! document per relay in `{collection}_event_relays` (its checkpoint and
//! heartbeat), and the reads a relay needs from the product collection.
//! Only `_id` lookups, except [`RelayStore::events_of`], which scans the
//! collection once per dead relay (FerretDB pushes down nothing else).

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use products_core::{app::PortError, domain::ProductId};

use super::{
    document::{object_id, stored_event, EventSlot, EVENT},
    errors::port_error,
    MongoProductRepository,
};
use crate::events::{ChangeEvent, RelayRecord, RelayStore};

const THROUGH: &str = "through";
const BEAT: &str = "beat";
const STOPPED: &str = "stopped";
const SWEPT_BY: &str = "sweptBy";

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn record_of(document: &Document) -> Option<RelayRecord> {
    let number = |key: &str| {
        document
            .get_i64(key)
            .ok()
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or_default()
    };
    Some(RelayRecord {
        id: document.get_str("_id").ok()?.to_owned(),
        through: number(THROUGH),
        beat: number(BEAT),
        stopped: document.get_bool(STOPPED).unwrap_or(false),
        swept_by: document.get_str(SWEPT_BY).ok().map(str::to_owned),
    })
}

#[async_trait]
impl RelayStore for MongoProductRepository {
    #[tracing::instrument(level = "debug", skip_all, fields(relay = %record.id), err)]
    async fn save_relay(&self, record: &RelayRecord) -> Result<(), PortError> {
        self.relays
            .update_one(
                doc! { "_id": &record.id },
                doc! { "$set": {
                    THROUGH: as_i64(record.through),
                    BEAT: as_i64(record.beat),
                    STOPPED: record.stopped,
                } },
            )
            .upsert(true)
            .await
            .map(drop)
            .map_err(port_error)
    }

    async fn relays(&self) -> Result<Vec<RelayRecord>, PortError> {
        let documents: Vec<Document> = self
            .relays
            .find(doc! {})
            .await
            .map_err(port_error)?
            .try_collect()
            .await
            .map_err(port_error)?;
        Ok(documents.iter().filter_map(record_of).collect())
    }

    #[tracing::instrument(skip(self), err)]
    async fn claim_sweep(&self, relay: &str, sweeper: &str) -> Result<bool, PortError> {
        let result = self
            .relays
            .update_one(
                doc! { "_id": relay, SWEPT_BY: { "$exists": false } },
                doc! { "$set": { SWEPT_BY: sweeper } },
            )
            .await
            .map_err(port_error)?;
        Ok(result.modified_count == 1)
    }

    #[tracing::instrument(skip(self), err)]
    async fn events_of(&self, relay: &str, after: u64) -> Result<Vec<ChangeEvent>, PortError> {
        // Relay ids are hex: the prefix needs no escaping. The sequence is
        // compared here, after reading.
        let pattern = format!("^{}", EventSlot::prefix_of(relay));
        let filter = doc! { EVENT: { "$regex": pattern } };
        let documents: Vec<Document> = self
            .raw
            .find(filter)
            .await
            .map_err(port_error)?
            .try_collect()
            .await
            .map_err(port_error)?;
        let mut events = Vec::with_capacity(documents.len());
        for document in documents {
            match stored_event(document) {
                Ok(Some(event)) if event.meta.seq > after => events.push(event),
                Ok(_) => {}
                Err(err) => tracing::error!(error = %err, "a swept event is unreadable; skipped"),
            }
        }
        // Their relay's order.
        events.sort_by_key(|e| e.meta.seq);
        Ok(events)
    }

    async fn last_event(&self, id: &ProductId) -> Result<Option<ChangeEvent>, PortError> {
        let document = self
            .raw
            .find_one(doc! { "_id": object_id(id) })
            .await
            .map_err(port_error)?;
        match document {
            Some(document) => stored_event(document),
            None => Ok(None),
        }
    }

    async fn finish_sweep(&self, relay: &str) -> Result<(), PortError> {
        self.relays
            .update_one(doc! { "_id": relay }, doc! { "$set": { STOPPED: true } })
            .await
            .map(drop)
            .map_err(port_error)
    }
}
