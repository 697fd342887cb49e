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

/// A change's event as kept in its document (`event`): the CloudEvent's
/// attributes and who publishes it; its data is the document itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct EventSlot {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    relay: String,
    seq: i64,
    time: mongodb::bson::DateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    traceparent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tracestate: Option<String>,
}

impl EventSlot {
    pub(super) fn of(meta: &EventMeta) -> Self {
        Self {
            id: meta.id.clone(),
            kind: meta.kind.as_str().to_owned(),
            relay: meta.relay.clone(),
            seq: i64::try_from(meta.seq).unwrap_or(i64::MAX),
            time: bson_date(meta.time),
            traceparent: meta.traceparent.clone(),
            tracestate: meta.tracestate.clone(),
        }
    }

    pub(super) fn to_bson(&self) -> mongodb::bson::Bson {
        mongodb::bson::to_bson(self).unwrap_or(mongodb::bson::Bson::Null)
    }

    /// `None` for a slot this version cannot read (written by a newer one).
    pub(super) fn meta(&self) -> Option<EventMeta> {
        Some(EventMeta {
            id: self.id.clone(),
            kind: EventKind::parse(&self.kind)?,
            relay: self.relay.clone(),
            seq: u64::try_from(self.seq).ok()?,
            time: DateTime::from_timestamp_millis(self.time.timestamp_millis())?,
            traceparent: self.traceparent.clone(),
            tracestate: self.tracestate.clone(),
        })
    }
}

/// The event a raw document (product or tombstone) holds, with the state it
/// describes: the product, or `None` for a tombstone.
pub(super) fn stored_event(document: Document) -> Result<Option<ChangeEvent>, PortError> {
    let Ok(slot) = document.get_document(EVENT) else {
        return Ok(None);
    };
    let slot: EventSlot = mongodb::bson::from_document(slot.clone())
        .map_err(|err| PortError::Internal(format!("unreadable event slot: {err}")))?;
    let Some(meta) = slot.meta() else {
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
