//! A change event as a Kafka record, CloudEvents 1.0 binary content mode
//! (the Kafka protocol binding): attributes in `ce_*` headers, the data
//! (the product's REST JSON) as the value, `null` for a delete so that log
//! compaction drops the product in the end. Key = product id.

use rdkafka::message::{Header, OwnedHeaders};

use super::ChangeEvent;
use crate::codec::ProductJson;

pub const SPEC_VERSION: &str = "1.0";
/// Extension attribute: the product's revision after the change (1 on
/// create, +1 per update and on delete), so a consumer can order or drop
/// copies without trusting clocks.
pub const PRODUCT_REV: &str = "ce_productrev";

/// The parts of one record, owned, so a send can be retried.
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub key: String,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(&'static str, String)>,
}

impl EventRecord {
    pub fn of(event: &ChangeEvent, source: &str) -> Result<Self, serde_json::Error> {
        let meta = &event.meta;
        let mut headers = vec![
            ("ce_specversion", SPEC_VERSION.to_owned()),
            ("ce_id", meta.id.clone()),
            ("ce_source", source.to_owned()),
            ("ce_type", meta.kind.as_str().to_owned()),
            (
                "ce_time",
                meta.time
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            ),
            ("ce_subject", event.product_id.to_string()),
            (PRODUCT_REV, event.rev.to_string()),
        ];
        let payload = match &event.state {
            Some(product) => {
                headers.push(("content-type", "application/json".to_owned()));
                Some(serde_json::to_vec(&ProductJson::from(product))?)
            }
            None => None,
        };
        if let Some(traceparent) = &meta.traceparent {
            headers.push(("traceparent", traceparent.clone()));
        }
        if let Some(tracestate) = &meta.tracestate {
            headers.push(("tracestate", tracestate.clone()));
        }
        Ok(Self {
            key: event.product_id.to_string(),
            payload,
            headers,
        })
    }

    pub fn kafka_headers(&self) -> OwnedHeaders {
        self.headers
            .iter()
            .fold(OwnedHeaders::new(), |headers, (key, value)| {
                headers.insert(Header {
                    key,
                    value: Some(value.as_bytes()),
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use products_core::domain::ProductId;

    use super::EventRecord;
    use crate::events::{ChangeEvent, EventKind, EventMeta};

    fn event(state: bool) -> ChangeEvent {
        let product_id: ProductId = "5f1a2b3c4d5e6f7a8b9c0d1e".parse().unwrap();
        let time = chrono::Utc.timestamp_millis_opt(1_700_000_000_123).unwrap();
        let product = products_core::domain::Product {
            id: product_id.clone(),
            draft: products_core::domain::ProductDraft::parse(
                products_core::domain::UnvalidatedProduct {
                    category_id: Some("5f1a2b3c4d5e6f7a8b9c0d1f".to_owned()),
                    name: Some("Mug".to_owned()),
                    description: Some("A mug".to_owned()),
                    price: Some(3.5),
                    image_url: None,
                    photos: Vec::new(),
                    quantity: Some(1),
                    rating: Some(4),
                },
            )
            .unwrap(),
            created_at: time,
            updated_at: time,
        };
        ChangeEvent {
            meta: EventMeta {
                id: "e-1".to_owned(),
                kind: if state {
                    EventKind::Updated
                } else {
                    EventKind::Deleted
                },
                relay: "r".to_owned(),
                seq: 1,
                time,
                traceparent: Some(
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned(),
                ),
                tracestate: None,
            },
            product_id,
            rev: 2,
            state: state.then_some(product),
        }
    }

    fn header<'a>(record: &'a EventRecord, key: &str) -> Option<&'a str> {
        record
            .headers
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_change_is_a_binary_mode_cloudevent_with_the_rest_json() {
        let record = EventRecord::of(&event(true), "/products-service").unwrap();
        assert_eq!(record.key, "5f1a2b3c4d5e6f7a8b9c0d1e");
        assert_eq!(header(&record, "ce_specversion"), Some("1.0"));
        assert_eq!(header(&record, "ce_id"), Some("e-1"));
        assert_eq!(header(&record, "ce_source"), Some("/products-service"));
        assert_eq!(header(&record, "ce_type"), Some("product.updated"));
        assert_eq!(header(&record, "ce_time"), Some("2023-11-14T22:13:20.123Z"));
        assert_eq!(
            header(&record, "ce_subject"),
            Some("5f1a2b3c4d5e6f7a8b9c0d1e")
        );
        assert_eq!(header(&record, "ce_productrev"), Some("2"));
        assert_eq!(header(&record, "content-type"), Some("application/json"));
        assert!(header(&record, "traceparent").is_some());
        let json: serde_json::Value =
            serde_json::from_slice(record.payload.as_ref().unwrap()).unwrap();
        assert_eq!(json["productId"], "5f1a2b3c4d5e6f7a8b9c0d1e");
        assert_eq!(json["name"], "Mug");
    }

    #[test]
    fn a_delete_is_a_tombstone() {
        let record = EventRecord::of(&event(false), "/p").unwrap();
        assert_eq!(header(&record, "ce_type"), Some("product.deleted"));
        assert!(record.payload.is_none());
        assert_eq!(header(&record, "content-type"), None);
    }
}
