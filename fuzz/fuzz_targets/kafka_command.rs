//! Fuzz target: a Kafka record as the command consumer receives it — any
//! payload, key, headers (names as raw bytes: the wire allows any, rdkafka's
//! safe API does not), timestamp, partition and offset — through the
//! consumer's own steps: header sanitising, the headers it reads for its span
//! and trace context, and `decode_message`.
//!
//! Properties: nothing panics; a decoded command re-encodes
//! (`encode_command`) to a payload that decodes to the same command; a
//! decoded create is a product the Redis cache can store and read back.
#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use products_core::app::ProductCommand;
use products_service::{
    adapters::kafka::headers,
    codec::{decode_command, encode_command, CommandKind, ProductJson},
    pipeline::{decode_message, message_origin},
};
use rdkafka::{
    message::{BorrowedHeaders, Headers, OwnedHeaders, OwnedMessage},
    Message, Timestamp,
};

const CREATE_TOPIC: &str = "products.create";
const UPDATE_TOPIC: &str = "products.update";

/// A record decoded from the fuzzer's bytes (seeds: fuzz/corpus/kafka_command,
/// written by fuzz/seeds.py):
/// flags u8 (bit 0 create topic, bit 1 has timestamp, bit 2 has key, bit 3
/// has payload, bits 4-5 header count), timestamp i64 BE, partition i32 BE,
/// offset i64 BE, then per header: name length u8, name, value length u8
/// (255 = no value), value; then key length u8 and key when present; the
/// rest is the payload.
struct Record {
    create: bool,
    timestamp_ms: Option<i64>,
    partition: i32,
    offset: i64,
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
}

fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if data.len() < n {
        return None;
    }
    let (head, rest) = data.split_at(n);
    *data = rest;
    Some(head)
}

fn take_array<const N: usize>(data: &mut &[u8]) -> Option<[u8; N]> {
    take(data, N)?.try_into().ok()
}

impl Record {
    fn parse(mut data: &[u8]) -> Option<Self> {
        let data = &mut data;
        let [flags] = take_array::<1>(data)?;
        let timestamp = i64::from_be_bytes(take_array(data)?);
        let partition = i32::from_be_bytes(take_array(data)?);
        let offset = i64::from_be_bytes(take_array(data)?);
        let mut headers = Vec::new();
        for _ in 0..(flags >> 4) & 3 {
            let [len] = take_array::<1>(data)?;
            let name = take(data, len.into())?.to_vec();
            let value = match take_array::<1>(data)? {
                [255] => None,
                [len] => Some(take(data, len.into())?.to_vec()),
            };
            headers.push((name, value));
        }
        let key = if flags & 4 != 0 {
            let [len] = take_array::<1>(data)?;
            Some(take(data, len.into())?.to_vec())
        } else {
            None
        };
        Some(Self {
            create: flags & 1 != 0,
            timestamp_ms: (flags & 2 != 0).then_some(timestamp),
            partition,
            offset,
            headers,
            key,
            payload: (flags & 8 != 0).then(|| data.to_vec()),
        })
    }
}

/// Headers with names given as bytes, added through librdkafka's C API as
/// the consumer would receive them from the broker.
fn raw_headers(entries: &[(Vec<u8>, Option<Vec<u8>>)]) -> OwnedHeaders {
    let headers = OwnedHeaders::new_with_capacity(entries.len());
    // rdkafka's BorrowedHeaders reference *is* the native rd_kafka_headers_t
    // pointer (that is how rdkafka itself converts between them).
    let native = headers.as_borrowed() as *const BorrowedHeaders
        as *mut rdkafka::bindings::rd_kafka_headers_t;
    for (name, value) in entries {
        let (value_ptr, value_len) = match value {
            Some(v) => (v.as_ptr().cast(), v.len() as isize),
            None => (std::ptr::null(), 0),
        };
        // SAFETY: `native` is a live headers list owned by `headers`;
        // librdkafka copies name and value.
        unsafe {
            rdkafka::bindings::rd_kafka_header_add(
                native,
                name.as_ptr().cast(),
                name.len() as isize,
                value_ptr,
                value_len,
            );
        }
    }
    headers
}

fuzz_target!(|data: &[u8]| {
    let Some(record) = Record::parse(data) else {
        return;
    };
    static PROPAGATOR: Once = Once::new();
    PROPAGATOR.call_once(|| {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        )
    });

    let topic = if record.create {
        CREATE_TOPIC
    } else {
        UPDATE_TOPIC
    };
    let timestamp = record
        .timestamp_ms
        .map_or(Timestamp::NotAvailable, Timestamp::CreateTime);
    let message = OwnedMessage::new(
        record.payload,
        record.key,
        topic.to_owned(),
        timestamp,
        record.partition,
        record.offset,
        Some(raw_headers(&record.headers)),
    );

    // What the consumer does with every record it receives.
    let message = headers::sanitized(message);
    let borrowed = message.headers().map(OwnedHeaders::as_borrowed);
    let _ = headers::text(borrowed, headers::MESSAGE_ID);
    let _ = headers::trace_context(borrowed);
    if let Some(h) = borrowed {
        let _ = h.iter().count();
    }
    let Ok(command) = decode_message(&message, CREATE_TOPIC) else {
        return;
    };

    let kind = if record.create {
        CommandKind::Create
    } else {
        CommandKind::Update
    };
    let again = decode_command(kind, &encode_command(&command), message_origin(&message))
        .expect("a decoded command re-encodes to a valid payload");
    assert_eq!(again, command, "re-encoding changed the command");

    if let ProductCommand::Create(product) = &command {
        let cached = serde_json::to_vec(&ProductJson::from(product)).expect("encodes");
        let read_back: ProductJson = serde_json::from_slice(&cached).expect("cache entry decodes");
        assert_eq!(
            read_back.into_product().as_ref(),
            Ok(product),
            "cache round trip changed the product"
        );
    }
});
