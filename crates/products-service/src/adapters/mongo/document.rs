//! The MongoDB document of a product (the Go original's field names, plus
//! `rev`, the log position of the last applied update and, once deleted,
//! `deletedAt`): the one mapping between [`Product`] and what is stored. The
//! client's fields are written once, in [`DraftDocument`]: the document
//! flattens it, an update's `$set`/`$unset` and a tombstone's `$unset`
//! ([`PRODUCT_FIELDS`]) are derived from it.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use mongodb::bson::{doc, oid::ObjectId, Document};
use products_core::{
    app::{PortError, ProductUpdate, UpdateOrder},
    domain::{
        CategoryId, Description, HttpUrl, Price, Product, ProductDraft, ProductId, ProductName,
        Quantity, Rating,
    },
};
use serde::{
    de::{self, MapAccess},
    Deserialize, Deserializer, Serialize,
};

use crate::{
    codec::around::{self, deserialize_around, once},
    events::{ChangeEvent, EventKind, EventMeta},
};

/// How a product is stored (field names as the Go original stored them).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ProductDocument {
    #[serde(rename = "_id")]
    id: ObjectId,
    #[serde(flatten)]
    draft: DraftDocument,
    created_at: mongodb::bson::DateTime,
    updated_at: mongodb::bson::DateTime,
    /// Write counter; absent on documents written before it existed (0).
    #[serde(default)]
    pub(super) rev: i64,
    /// The event of the last change (the embedded outbox, `events`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) event: Option<EventSlot>,
}

/// As serde's `flatten` would read it, but streaming (see
/// `codec::around`): stored products are read on every cache miss and search.
impl<'de> Deserialize<'de> for ProductDocument {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (draft, own): (DraftDocument, OwnFields) = deserialize_around(deserializer)?;
        let required = de::Error::missing_field;
        Ok(ProductDocument {
            id: own.id.ok_or_else(|| required(ID))?,
            draft,
            created_at: own.created_at.ok_or_else(|| required(CREATED_AT))?,
            updated_at: own.updated_at.ok_or_else(|| required(UPDATED_AT))?,
            rev: own.rev.unwrap_or_default(),
            event: own.event.flatten(),
        })
    }
}

/// [`ProductDocument`]'s fields beyond the draft's (its `Serialize` names
/// them from the struct; a test holds the two to the same names).
const ID: &str = "_id";
const CREATED_AT: &str = "createdAt";
const UPDATED_AT: &str = "updatedAt";

#[derive(Default)]
struct OwnFields {
    id: Option<ObjectId>,
    created_at: Option<mongodb::bson::DateTime>,
    updated_at: Option<mongodb::bson::DateTime>,
    rev: Option<i64>,
    /// `null` reads as no event, as with a derived `Option` field.
    event: Option<Option<EventSlot>>,
}

impl<'de> around::OwnFields<'de> for OwnFields {
    fn read<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            ID => once(map, &mut self.id, ID),
            CREATED_AT => once(map, &mut self.created_at, CREATED_AT),
            UPDATED_AT => once(map, &mut self.updated_at, UPDATED_AT),
            REV => once(map, &mut self.rev, REV),
            EVENT => once(map, &mut self.event, EVENT),
            _ => Ok(false),
        }
    }
}

/// A [`ProductDraft`] as stored: the fields a client controls.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DraftDocument {
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
}

impl From<&ProductDraft> for DraftDocument {
    fn from(d: &ProductDraft) -> Self {
        Self {
            category_id: ObjectId::from_bytes(d.category_id.to_bytes()),
            name: d.name.to_string(),
            description: d.description.to_string(),
            price: d.price.value(),
            image_url: d.image_url.as_ref().map(ToString::to_string),
            photos: d.photos.iter().map(ToString::to_string).collect(),
            quantity: d.quantity.value(),
            rating: d.rating.value(),
        }
    }
}

impl DraftDocument {
    /// Stored data is re-validated: `corrupt` names the first broken field.
    fn into_draft(
        self,
        corrupt: impl Fn(&str, String) -> PortError,
    ) -> Result<ProductDraft, PortError> {
        let d = self;
        Ok(ProductDraft {
            category_id: CategoryId::from_bytes(d.category_id.bytes()),
            name: ProductName::parse(&d.name).map_err(|m| corrupt("name", m))?,
            description: Description::parse(&d.description)
                .map_err(|m| corrupt("description", m))?,
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
        })
    }

    /// The stored names of its fields, from its derived `Deserialize`.
    fn field_names() -> &'static [&'static str] {
        /// Hands a struct's deserializer nothing; keeps the field names it
        /// gives.
        struct Names<'a>(&'a mut &'static [&'static str]);
        impl<'de> Deserializer<'de> for Names<'_> {
            type Error = de::value::Error;
            fn deserialize_struct<V: de::Visitor<'de>>(
                self,
                _name: &'static str,
                fields: &'static [&'static str],
                _visitor: V,
            ) -> Result<V::Value, Self::Error> {
                *self.0 = fields;
                Err(de::Error::custom("names only"))
            }
            fn deserialize_any<V: de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
                Err(de::Error::custom("not a struct"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
                byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
                identifier ignored_any
            }
        }
        let mut names: &'static [&'static str] = &[];
        let _ = DraftDocument::deserialize(Names(&mut names));
        names
    }
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
/// The product fields a tombstone drops: the draft's and the timestamps.
pub(super) static PRODUCT_FIELDS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    let mut fields = DraftDocument::field_names().to_vec();
    fields.extend([CREATED_AT, UPDATED_AT]);
    fields
});

pub(super) fn bson_date(t: DateTime<Utc>) -> mongodb::bson::DateTime {
    mongodb::bson::DateTime::from_millis(t.timestamp_millis())
}

pub(super) fn object_id(id: &ProductId) -> ObjectId {
    ObjectId::from_bytes(id.to_bytes())
}

pub(super) fn to_document(p: &Product) -> ProductDocument {
    ProductDocument {
        id: object_id(&p.id),
        draft: DraftDocument::from(&p.draft),
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
    Ok(Product {
        id: ProductId::from_bytes(d.id.bytes()),
        draft: d.draft.into_draft(corrupt)?,
        created_at: date(d.created_at),
        updated_at: date(d.updated_at),
    })
}

/// The changes an update makes: the draft's fields and `updatedAt` set (an
/// absent optional field, such as the image URL, unset), `rev` incremented;
/// a Kafka update also stores its log position.
pub(super) fn update_changes(update: &ProductUpdate, order: UpdateOrder) -> Document {
    let mut set = mongodb::bson::to_document(&DraftDocument::from(&update.draft))
        // Strings, numbers and ObjectIds always make a document.
        .expect("a DraftDocument serialises");
    let unset: Document = DraftDocument::field_names()
        .iter()
        .filter(|field| !set.contains_key(field))
        .map(|field| ((*field).to_owned(), "".into()))
        .collect();
    set.insert(UPDATED_AT, bson_date(update.updated_at));
    if let UpdateOrder::Log(position) = order {
        set.insert(LOG_PARTITION, position.partition);
        set.insert(LOG_OFFSET, position.offset);
    }
    let mut changes = doc! { "$inc": { REV: 1_i64 } };
    if !unset.is_empty() {
        changes.insert("$unset", unset);
    }
    changes.insert("$set", set);
    changes
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use products_core::{app::LogPosition, domain::UnvalidatedProduct};

    use super::*;

    fn product(image_url: Option<&str>) -> Product {
        let draft = ProductDraft::parse(UnvalidatedProduct {
            category_id: Some("65a1f0c2e4b0a1b2c3d4e5f7".into()),
            name: Some("Coffee mug".into()),
            description: Some("Stoneware".into()),
            price: Some(9.5),
            image_url: image_url.map(Into::into),
            photos: vec!["https://img.example.com/1.png".into()],
            quantity: Some(3),
            rating: Some(7),
        })
        .unwrap();
        let at = Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap();
        Product::new(
            ProductId::parse("65a1f0c2e4b0a1b2c3d4e5f6").unwrap(),
            draft,
            at,
        )
    }

    /// The stored document keeps the Go original's names and order, and
    /// reads back (from a `Document` and from raw BSON, as the driver does).
    #[test]
    fn documents_keep_their_shape_and_read_back() {
        let p = product(Some("https://img.example.com/mug.png"));
        let stored = mongodb::bson::to_document(&to_document(&p)).unwrap();
        let keys: Vec<&str> = stored.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "_id",
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
                "rev"
            ]
        );
        assert!(stored.get_object_id("categoryId").is_ok());
        assert!(stored.get_datetime("createdAt").is_ok());
        let from_doc: ProductDocument = mongodb::bson::from_document(stored.clone()).unwrap();
        assert_eq!(from_document(from_doc).unwrap(), p);
        let raw = mongodb::bson::to_vec(&stored).unwrap();
        let from_raw: ProductDocument = mongodb::bson::from_slice(&raw).unwrap();
        assert_eq!(from_document(from_raw).unwrap(), p);
        // What else a document holds is not the product's.
        let mut logged = stored.clone();
        logged.insert(LOG_PARTITION, 2);
        logged.insert(LOG_OFFSET, 41_i64);
        logged.insert(EVENT, mongodb::bson::Bson::Null);
        let logged: ProductDocument = mongodb::bson::from_document(logged).unwrap();
        assert!(logged.event.is_none());
        assert_eq!(from_document(logged).unwrap(), p);
        let mut no_id = stored.clone();
        no_id.remove("_id");
        let err = mongodb::bson::from_document::<ProductDocument>(no_id).unwrap_err();
        assert!(err.to_string().contains("_id"), "{err}");
        // Older documents: no rev, numbers stored as int32.
        let mut old = stored;
        old.remove(REV);
        old.insert("quantity", 3_i32);
        let old: ProductDocument = mongodb::bson::from_document(old).unwrap();
        assert_eq!(old.rev, 0);
        assert_eq!(from_document(old).unwrap(), p);
    }

    #[test]
    fn an_update_sets_the_draft_and_unsets_what_it_lacks() {
        let update = |image_url| ProductUpdate {
            id: product(None).id,
            draft: product(image_url).draft,
            updated_at: Utc.with_ymd_and_hms(2026, 5, 6, 7, 8, 9).unwrap(),
        };
        let position = LogPosition {
            partition: 2,
            offset: 41,
        };
        let changes = update_changes(&update(None), UpdateOrder::Log(position));
        assert_eq!(
            changes.get_document("$unset").unwrap(),
            &doc! { "imageUrl": "" }
        );
        let set = changes.get_document("$set").unwrap();
        let keys: Vec<&str> = set.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "categoryId",
                "name",
                "description",
                "price",
                "photos",
                "quantity",
                "rating",
                "updatedAt",
                "logPartition",
                "logOffset"
            ]
        );
        assert_eq!(changes.get_document("$inc").unwrap(), &doc! { REV: 1_i64 });
        let changes = update_changes(
            &update(Some("https://img.example.com/mug.png")),
            UpdateOrder::Direct,
        );
        assert!(changes.get("$unset").is_none());
        let set = changes.get_document("$set").unwrap();
        assert_eq!(
            set.get_str("imageUrl").unwrap(),
            "https://img.example.com/mug.png"
        );
        assert!(!set.contains_key(LOG_PARTITION));
    }

    #[test]
    fn a_tombstone_drops_every_product_field() {
        assert_eq!(
            *PRODUCT_FIELDS,
            [
                "categoryId",
                "name",
                "description",
                "price",
                "imageUrl",
                "photos",
                "quantity",
                "rating",
                "createdAt",
                "updatedAt"
            ]
        );
    }

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
