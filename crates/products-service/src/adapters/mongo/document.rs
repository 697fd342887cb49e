//! The MongoDB document of a product (the Go original's field names, plus
//! `rev`, the log position of the last applied update and, once deleted,
//! `deletedAt`): the one mapping between [`Product`] and what is stored.

use chrono::{DateTime, Utc};
use mongodb::bson::{doc, oid::ObjectId, Document};
use products_core::{
    app::{PortError, ProductUpdate, UpdateOrder},
    domain::{
        CategoryId, Description, HttpUrl, Price, Product, ProductDraft, ProductId, ProductName,
        Quantity, Rating,
    },
};
use serde::{Deserialize, Serialize};

use crate::events::{ChangeEvent, EventKind, EventMeta};

/// How a product is stored (field names as the Go original stored them).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ProductDocument {
    #[serde(rename = "_id")]
    id: ObjectId,
    category_id: ObjectId,
    name: String,
    description: String,
    price: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image_url: Option<String>,
    #[serde(default)]
    photos: Vec<String>,
    quantity: i64,
    rating: i64,
    created_at: mongodb::bson::DateTime,
    updated_at: mongodb::bson::DateTime,
    /// Write counter; absent on documents written before it existed (0).
    #[serde(default)]
    pub(super) rev: i64,
    /// The event of the last change (the embedded outbox, `events`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) event: Option<EventSlot>,
}

/// A change's event as kept in its document (`event`): who publishes it
/// and the CloudEvent's attributes, in one string
/// `relay|seq|id|type|time_ms|traceparent|tracestate` (its data is the
/// document itself). One string, not a subdocument: FerretDB's cost per
/// write grows with the number of fields (measured: a 7-field subdocument
/// added about 45 % to its CPU per insert), and nothing queries the parts
/// but the sweep, which matches the `relay|` prefix.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub(super) struct EventSlot(String);

impl EventSlot {
    pub(super) fn of(meta: &EventMeta) -> Self {
        Self(format!(
            "{}|{}|{}|{}|{}|{}|{}",
            meta.relay,
            meta.seq,
            meta.id,
            meta.kind.as_str(),
            meta.time.timestamp_millis(),
            meta.traceparent.as_deref().unwrap_or_default(),
            meta.tracestate.as_deref().unwrap_or_default(),
        ))
    }

    pub(super) fn to_bson(&self) -> mongodb::bson::Bson {
        mongodb::bson::Bson::String(self.0.clone())
    }

    /// The prefix every slot of `relay` starts with (the sweep's filter).
    pub(super) fn prefix_of(relay: &str) -> String {
        format!("{relay}|")
    }

    /// `None` for a slot this version cannot read (written by a newer one,
    /// or by hand).
    pub(super) fn meta(&self) -> Option<EventMeta> {
        let mut parts = self.0.splitn(7, '|');
        let relay = parts.next()?.to_owned();
        let seq = parts.next()?.parse().ok()?;
        let id = parts.next()?.to_owned();
        let kind = EventKind::parse(parts.next()?)?;
        let time = DateTime::from_timestamp_millis(parts.next()?.parse().ok()?)?;
        let text = |part: Option<&str>| part.filter(|p| !p.is_empty()).map(str::to_owned);
        let traceparent = text(parts.next());
        let tracestate = text(parts.next());
        Some(EventMeta {
            id,
            kind,
            relay,
            seq,
            time,
            traceparent,
            tracestate,
        })
    }
}

/// The event a raw document (product or tombstone) holds, with the state it
/// describes: the product, or `None` for a tombstone.
pub(super) fn stored_event(document: Document) -> Result<Option<ChangeEvent>, PortError> {
    let Ok(slot) = document.get_str(EVENT) else {
        return Ok(None);
    };
    let Some(meta) = EventSlot(slot.to_owned()).meta() else {
        return Ok(None);
    };
    let rev = document.get_i64(REV).unwrap_or_default();
    let id = document
        .get_object_id("_id")
        .map_err(|err| PortError::Internal(format!("document without an ObjectId: {err}")))?;
    let state = if document.contains_key(DELETED_AT) {
        None
    } else {
        let product: ProductDocument = mongodb::bson::from_document(document).map_err(|err| {
            PortError::Internal(format!(
                "stored product {} is unreadable: {err}",
                id.to_hex()
            ))
        })?;
        Some(from_document(product)?)
    };
    Ok(Some(ChangeEvent {
        meta,
        product_id: ProductId::from_bytes(id.bytes()),
        rev,
        state,
    }))
}

/// Field names beyond the product's own.
pub(super) const REV: &str = "rev";
pub(super) const DELETED_AT: &str = "deletedAt";
pub(super) const LOG_PARTITION: &str = "logPartition";
pub(super) const LOG_OFFSET: &str = "logOffset";
pub(super) const EVENT: &str = "event";
/// The product fields a tombstone drops.
pub(super) const PRODUCT_FIELDS: [&str; 10] = [
    "categoryId",
    "name",
    "description",
    "price",
    "imageUrl",
    "photos",
    "quantity",
    "rating",
    "createdAt",
    "updatedAt",
];

pub(super) fn bson_date(t: DateTime<Utc>) -> mongodb::bson::DateTime {
    mongodb::bson::DateTime::from_millis(t.timestamp_millis())
}

pub(super) fn object_id(id: &ProductId) -> ObjectId {
    ObjectId::from_bytes(id.to_bytes())
}

pub(super) fn to_document(p: &Product) -> ProductDocument {
    let d = &p.draft;
    ProductDocument {
        id: object_id(&p.id),
        category_id: ObjectId::from_bytes(d.category_id.to_bytes()),
        name: d.name.to_string(),
        description: d.description.to_string(),
        price: d.price.value(),
        image_url: d.image_url.as_ref().map(ToString::to_string),
        photos: d.photos.iter().map(ToString::to_string).collect(),
        quantity: d.quantity.value(),
        rating: d.rating.value(),
        created_at: bson_date(p.created_at),
        updated_at: bson_date(p.updated_at),
        rev: 1,
        event: None,
    }
}

/// Stored data is re-validated: a document written by another tool that breaks
/// the rules is reported as corrupt instead of served.
pub(super) fn from_document(d: ProductDocument) -> Result<Product, PortError> {
    let id = d.id.to_hex();
    let corrupt = |field: &str, msg: String| {
        PortError::Internal(format!("stored product {id} has invalid {field}: {msg}"))
    };
    let date = |dt: mongodb::bson::DateTime| {
        DateTime::from_timestamp_millis(dt.timestamp_millis()).unwrap_or_default()
    };
    let draft = ProductDraft {
        category_id: CategoryId::from_bytes(d.category_id.bytes()),
        name: ProductName::parse(&d.name).map_err(|m| corrupt("name", m))?,
        description: Description::parse(&d.description).map_err(|m| corrupt("description", m))?,
        price: Price::parse(d.price).map_err(|m| corrupt("price", m))?,
        image_url: d
            .image_url
            .as_deref()
            .map(HttpUrl::parse)
            .transpose()
            .map_err(|m| corrupt("imageUrl", m))?,
        photos: d
            .photos
            .iter()
            .map(|u| HttpUrl::parse(u))
            .collect::<Result<_, _>>()
            .map_err(|m| corrupt("photos", m))?,
        quantity: Quantity::parse(d.quantity).map_err(|m| corrupt("quantity", m))?,
        rating: Rating::parse(d.rating).map_err(|m| corrupt("rating", m))?,
    };
    Ok(Product {
        id: ProductId::from_bytes(d.id.bytes()),
        draft,
        created_at: date(d.created_at),
        updated_at: date(d.updated_at),
    })
}

/// The changes an update makes: the draft's fields and `updatedAt` set (an
/// absent image URL unset), `rev` incremented; a Kafka update also stores
/// its log position.
pub(super) fn update_changes(update: &ProductUpdate, order: UpdateOrder) -> Document {
    let draft = &update.draft;
    let mut set = doc! {
        "categoryId": ObjectId::from_bytes(draft.category_id.to_bytes()),
        "name": draft.name.as_str(),
        "description": draft.description.as_str(),
        "price": draft.price.value(),
        "photos": draft.photos.iter().map(HttpUrl::as_str).collect::<Vec<_>>(),
        "quantity": draft.quantity.value(),
        "rating": draft.rating.value(),
        "updatedAt": bson_date(update.updated_at),
    };
    if let UpdateOrder::Log(position) = order {
        set.insert(LOG_PARTITION, position.partition);
        set.insert(LOG_OFFSET, position.offset);
    }
    let mut changes = doc! { "$inc": { REV: 1_i64 } };
    match &draft.image_url {
        Some(url) => {
            set.insert("imageUrl", url.as_str());
        }
        None => {
            changes.insert("$unset", doc! { "imageUrl": "" });
        }
    }
    changes.insert("$set", set);
    changes
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::EventSlot;
    use crate::events::{EventKind, EventMeta};

    #[test]
    fn an_event_slot_reads_back_what_was_stored() {
        let mut meta = EventMeta {
            id: "6566f0c2e4b0a1b2c3d4e5f7".to_owned(),
            kind: EventKind::Deleted,
            relay: "6566f0c2e4b0a1b2c3d4e5f8".to_owned(),
            seq: 42,
            time: chrono::Utc.timestamp_millis_opt(1_700_000_000_123).unwrap(),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned()),
            tracestate: Some("vendor=a|b".to_owned()),
        };
        let slot = EventSlot::of(&meta);
        assert!(slot.0.starts_with(&EventSlot::prefix_of(&meta.relay)));
        assert_eq!(slot.meta(), Some(meta.clone()));
        meta.traceparent = None;
        meta.tracestate = None;
        assert_eq!(EventSlot::of(&meta).meta(), Some(meta));
        assert_eq!(EventSlot("garbage".to_owned()).meta(), None);
    }
}
