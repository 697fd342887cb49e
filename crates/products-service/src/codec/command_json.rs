//! Kafka command payloads: the Product JSON of the README's "APIs" section.
//!
//! A create carries the whole product (id and timestamps assigned by the
//! service that accepted it); an update carries the id, the new fields and
//! `updatedAt` (display time only: the record's position in the update topic
//! orders updates, see docs/ARCHITECTURE.md). Payloads from the Go
//! original — plain product JSON with no id or timestamps — are accepted:
//! the message's own timestamp stands in, and a create without an id gets one
//! derived from its position in the log, so redelivery of the same message
//! still maps to one product.

use chrono::{DateTime, Datelike, Utc};
use products_core::{
    app::{ProductCommand, ProductUpdate},
    domain::{Product, ProductDraft, ProductId, ValidationErrors},
};
use serde::Serialize;

use super::{
    fields::{parse_object, Fields},
    product_json::{CREATED_AT, PRODUCT_ID, UPDATED_AT},
    DecodeError, DraftJson, ProductJson,
};

/// Where a message sits in the log; used only for payloads lacking fields.
#[derive(Debug, Clone, Copy)]
pub struct MessageOrigin {
    pub timestamp: Option<DateTime<Utc>>,
    pub partition: i32,
    pub offset: i64,
}

impl MessageOrigin {
    /// A deterministic ObjectId: message time (seconds), partition, offset.
    fn derived_id(&self) -> ProductId {
        let seconds = self.timestamp.map_or(0, |t| t.timestamp()) as u32;
        let mut bytes = [0u8; 12];
        bytes[..4].copy_from_slice(&seconds.to_be_bytes());
        bytes[4..6].copy_from_slice(&(self.partition as u16).to_be_bytes());
        bytes[6..].copy_from_slice(&self.offset.to_be_bytes()[2..]);
        ProductId::from_bytes(bytes)
    }
}

/// The payload of an update command: the id, the new [`DraftJson`] and
/// `updatedAt` (a create's payload is the whole [`ProductJson`]).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UpdateJson<'a> {
    product_id: &'a str,
    #[serde(flatten)]
    draft: DraftJson,
    updated_at: DateTime<Utc>,
}

pub fn encode_command(command: &ProductCommand) -> Vec<u8> {
    let encoded = match command {
        ProductCommand::Create(product) => serde_json::to_vec(&ProductJson::from(product)),
        ProductCommand::Update(update) => serde_json::to_vec(&UpdateJson {
            product_id: update.id.as_str(),
            draft: DraftJson::from(&update.draft),
            updated_at: update.updated_at,
        }),
    };
    // Serialising plain structs of strings and numbers cannot fail.
    encoded.unwrap_or_default()
}

/// Which command a topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    Create,
    Update,
}

pub fn decode_command(
    kind: CommandKind,
    payload: &[u8],
    origin: MessageOrigin,
) -> Result<ProductCommand, DecodeError> {
    let object = parse_object(payload)?;
    let mut fields = Fields::new(&object);
    let input = fields.draft();
    let product_id = fields.string(PRODUCT_ID);
    let created_at = fields.timestamp(CREATED_AT);
    let updated_at = fields.timestamp(UPDATED_AT);
    let type_errors = fields.finish().err();

    let id = match (product_id, kind) {
        (Some(raw), _) => {
            ProductId::parse(&raw).map_err(|m| ValidationErrors::single(PRODUCT_ID, m))
        }
        (None, CommandKind::Create) => Ok(origin.derived_id()),
        (None, CommandKind::Update) => Err(ValidationErrors::single(PRODUCT_ID, "is required")),
    };
    let draft = ProductDraft::parse(input);
    let (id, draft) = match (type_errors, id, draft) {
        (None, Ok(id), Ok(draft)) => (id, draft),
        (type_errors, id, draft) => {
            let all = [type_errors, id.err(), draft.err()]
                .into_iter()
                .flatten()
                .reduce(ValidationErrors::merged);
            return Err(all
                .unwrap_or_else(|| ValidationErrors::single("payload", "is invalid"))
                .into());
        }
    };
    // A record timestamp is whatever its producer set; one outside RFC 3339's
    // years (0000-9999) would give a product timestamps that no JSON client
    // (nor this codec) can read back, so it counts as absent.
    let fallback_time = origin
        .timestamp
        .filter(|t| (0..=9999).contains(&t.year()))
        .unwrap_or_else(Utc::now);
    Ok(match kind {
        CommandKind::Create => {
            let created_at = created_at.unwrap_or(fallback_time);
            let updated_at = updated_at.unwrap_or(created_at);
            ProductCommand::Create(Product {
                id,
                draft,
                created_at,
                updated_at,
            })
        }
        CommandKind::Update => ProductCommand::Update(ProductUpdate {
            id,
            draft,
            updated_at: updated_at.unwrap_or(fallback_time),
        }),
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn origin() -> MessageOrigin {
        MessageOrigin {
            timestamp: Some(Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap()),
            partition: 2,
            offset: 41,
        }
    }

    const LEGACY: &[u8] = br#"{"categoryId":"65a1f0c2e4b0a1b2c3d4e5f6","name":"Legacy mug",
        "description":"From the Go original","price":3.5,"quantity":1,"rating":2}"#;

    #[test]
    fn commands_round_trip() {
        let ProductCommand::Create(product) =
            decode_command(CommandKind::Create, LEGACY, origin()).unwrap()
        else {
            panic!("expected a create")
        };
        let create = ProductCommand::Create(product.clone());
        assert_eq!(
            decode_command(CommandKind::Create, &encode_command(&create), origin()).unwrap(),
            create
        );
        let update = ProductCommand::Update(ProductUpdate {
            id: product.id.clone(),
            draft: ProductDraft::parse(crate::codec::decode_product_input(LEGACY).unwrap())
                .unwrap(),
            updated_at: Utc.with_ymd_and_hms(2026, 5, 6, 7, 8, 9).unwrap(),
        });
        assert_eq!(
            decode_command(CommandKind::Update, &encode_command(&update), origin()).unwrap(),
            update
        );
    }

    #[test]
    fn legacy_create_gets_a_stable_id_from_its_position() {
        let first = decode_command(CommandKind::Create, LEGACY, origin()).unwrap();
        let again = decode_command(CommandKind::Create, LEGACY, origin()).unwrap();
        assert_eq!(first.product_id(), again.product_id());
        let elsewhere = MessageOrigin {
            offset: 42,
            ..origin()
        };
        let other = decode_command(CommandKind::Create, LEGACY, elsewhere).unwrap();
        assert_ne!(first.product_id(), other.product_id());
    }

    #[test]
    fn update_needs_an_id_and_reports_all_errors() {
        let err = decode_command(CommandKind::Update, br#"{"name":1}"#, origin()).unwrap_err();
        let DecodeError::Fields(errors) = err else {
            panic!("expected field errors")
        };
        let fields: Vec<&str> = errors.fields().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "name",
                "productId",
                "categoryId",
                "name",
                "description",
                "price",
                "quantity"
            ]
        );
    }

    /// Regression (found by fuzz/rest_product): an image URL within the
    /// limit as sent but not once normalised was accepted (202), then
    /// rejected by the consumer and dead-lettered. It is a 400 now.
    #[test]
    fn what_the_rest_edge_accepts_the_consumer_decodes() {
        let body = format!(
            r#"{{"categoryId":"65a1f0c2e4b0a1b2c3d4e5f6","name":"Mug","description":"A mug",
                "price":1,"quantity":1,"imageUrl":"http://a.com/{}"}}"#,
            "x ".repeat(1000)
        );
        let input = crate::codec::decode_product_input(body.as_bytes()).unwrap();
        let errors = ProductDraft::parse(input).unwrap_err();
        let fields: Vec<&str> = errors.fields().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["imageUrl"]);
    }

    /// Regression (found by fuzz/kafka_command): a legacy create in a record
    /// stamped year 10000+ got that as `createdAt`, which re-encodes as
    /// `+10000-...`, not RFC 3339: unreadable for clients and this codec.
    #[test]
    fn record_timestamps_beyond_rfc3339_are_not_used() {
        for millis in [i64::from(i32::MAX) * 1_000_000, -70_000_000_000_000] {
            let origin = MessageOrigin {
                timestamp: DateTime::from_timestamp_millis(millis),
                ..origin()
            };
            assert!(origin.timestamp.is_some());
            let command = decode_command(CommandKind::Create, LEGACY, origin).unwrap();
            let ProductCommand::Create(product) = &command else {
                panic!("expected a create")
            };
            assert!((0..=9999).contains(&product.created_at.year()));
            let again = decode_command(CommandKind::Create, &encode_command(&command), origin);
            assert_eq!(again.unwrap(), command);
        }
    }

    /// Regression (found by fuzz/kafka_command): serde_json's default float
    /// parser can be one ULP off, so a price came back from its own Kafka
    /// payload (or cache entry) changed; `float_roundtrip` is on now.
    #[test]
    fn prices_survive_the_round_trip_exactly() {
        for price in [
            5.555_555_555_555_554e43_f64,
            0.1 + 0.2,
            9.95,
            1e300,
            4.9e-324,
        ] {
            let body = String::from_utf8_lossy(LEGACY).replace("3.5", &format!("{price:e}"));
            let command = decode_command(CommandKind::Create, body.as_bytes(), origin()).unwrap();
            let ProductCommand::Create(product) = &command else {
                panic!("expected a create")
            };
            assert_eq!(product.draft.price.value().to_bits(), price.to_bits());
            let again = decode_command(CommandKind::Create, &encode_command(&command), origin());
            assert_eq!(again.unwrap(), command, "{price:e}");
        }
    }

    #[test]
    fn garbage_is_a_decode_error() {
        assert!(decode_command(CommandKind::Create, &[0xff; 64], origin()).is_err());
        assert!(decode_command(CommandKind::Create, b"[]", origin()).is_err());
    }
}
