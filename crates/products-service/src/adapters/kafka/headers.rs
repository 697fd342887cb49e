//! Record headers: W3C `traceparent`/`tracestate` so a trace continues across
//! Kafka, plus a message id and the content type. Every consumed record goes
//! through [`sanitized`] first: rdkafka panics on a header name that is not
//! UTF-8, which any producer can send.

use std::{borrow::Cow, ffi::CStr};

use opentelemetry::propagation::{Extractor, Injector};
use rdkafka::{
    bindings::{rd_kafka_header_cnt, rd_kafka_header_get_all, rd_kafka_headers_t},
    message::{BorrowedHeaders, Header, Headers, OwnedHeaders, OwnedMessage},
    types::RDKafkaRespErr,
    Message,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub const MESSAGE_ID: &str = "message-id";
pub const CONTENT_TYPE: &str = "content-type";
pub const JSON: &str = "application/json";

/// Headers for a new record: a fresh message id, the content type, and the
/// current span's trace context.
pub fn outgoing(message_id: &str) -> OwnedHeaders {
    let mut headers = HeaderInjector(
        OwnedHeaders::new()
            .insert(Header {
                key: MESSAGE_ID,
                value: Some(message_id),
            })
            .insert(Header {
                key: CONTENT_TYPE,
                value: Some(JSON),
            }),
    );
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut headers);
    });
    headers.0
}

/// The trace context a record carries (empty when it has none).
pub fn trace_context(headers: Option<&BorrowedHeaders>) -> opentelemetry::Context {
    match headers {
        Some(headers) => opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderExtractor(headers))
        }),
        None => opentelemetry::Context::new(),
    }
}

/// The value of the last header named `key`, as UTF-8.
pub fn text<'a>(headers: Option<&'a BorrowedHeaders>, key: &str) -> Option<&'a str> {
    headers?
        .iter()
        .filter(|h| h.key == key)
        .last()
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// The raw value of the last header named `key`.
pub fn bytes<'a>(headers: Option<&'a BorrowedHeaders>, key: &str) -> Option<&'a [u8]> {
    headers?
        .iter()
        .filter(|h| h.key == key)
        .last()
        .and_then(|h| h.value)
}

/// The record with every header name valid UTF-8, names that are not made so
/// lossily (U+FFFD); values are kept as they are. rdkafka's `Headers` methods
/// (`iter`, `get`, ...) unwrap each name as UTF-8, so without this one such
/// header would panic the partition worker on every redelivery. A record
/// whose names are all UTF-8 (every well-behaved producer's) is returned as is.
pub fn sanitized(message: OwnedMessage) -> OwnedMessage {
    let Some(headers) = message.headers() else {
        return message;
    };
    let entries = raw_entries(headers.as_borrowed());
    if entries
        .iter()
        .all(|(name, _)| matches!(name, Cow::Borrowed(_)))
    {
        return message;
    }
    tracing::warn!(
        topic = message.topic(),
        partition = message.partition(),
        offset = message.offset(),
        "record has header names that are not UTF-8; replaced lossily"
    );
    let mut clean = OwnedHeaders::new_with_capacity(entries.len());
    for (name, value) in &entries {
        clean = clean.insert(Header {
            key: name,
            value: *value,
        });
    }
    message.replace_headers(Some(clean))
}

/// Each header's name (lossily decoded) and value, read through librdkafka
/// directly because rdkafka's own accessor panics on a non-UTF-8 name.
fn raw_entries(headers: &BorrowedHeaders) -> Vec<(Cow<'_, str>, Option<&[u8]>)> {
    // rdkafka hands out `&BorrowedHeaders` as the native `rd_kafka_headers_t`
    // pointer itself (`BorrowedHeaders::from_native_ptr` is that cast).
    let native = std::ptr::from_ref(headers).cast::<rd_kafka_headers_t>();
    // SAFETY: `native` points to the headers list `headers` borrows, alive for
    // this call; librdkafka only reads it.
    let count = unsafe { rd_kafka_header_cnt(native) };
    (0..count)
        .filter_map(|idx| {
            let mut name = std::ptr::null();
            let mut value = std::ptr::null();
            let mut size = 0;
            // SAFETY: as above; idx < count; the out-pointers are valid.
            let err =
                unsafe { rd_kafka_header_get_all(native, idx, &mut name, &mut value, &mut size) };
            if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
                return None;
            }
            // SAFETY: librdkafka returns a NUL-terminated name and `size` bytes
            // of value (or null), owned by the headers list borrowed above.
            let name = String::from_utf8_lossy(unsafe { CStr::from_ptr(name) }.to_bytes());
            let value = (!value.is_null())
                .then(|| unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) });
            Some((name, value))
        })
        .collect()
}

struct HeaderInjector(OwnedHeaders);

impl Injector for HeaderInjector {
    fn set(&mut self, key: &str, value: String) {
        // `insert` consumes the headers and returns the extended set.
        let headers = std::mem::replace(&mut self.0, OwnedHeaders::new());
        self.0 = headers.insert(Header {
            key,
            value: Some(&value),
        });
    }
}

struct HeaderExtractor<'a>(&'a BorrowedHeaders);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        text(Some(self.0), key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|h| h.key).collect()
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::{bindings::rd_kafka_header_add, Timestamp};

    use super::*;

    /// Headers as any producer can send them: names as raw bytes.
    fn raw_headers(entries: &[(&[u8], Option<&[u8]>)]) -> OwnedHeaders {
        let headers = OwnedHeaders::new_with_capacity(entries.len());
        let native = std::ptr::from_ref(headers.as_borrowed())
            .cast::<rd_kafka_headers_t>()
            .cast_mut();
        for (name, value) in entries {
            let (value_ptr, value_len) = value.map_or((std::ptr::null(), 0), |v| {
                (v.as_ptr().cast(), v.len() as isize)
            });
            // SAFETY: `native` is the live list `headers` owns; librdkafka copies.
            unsafe {
                rd_kafka_header_add(
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

    fn record(headers: OwnedHeaders) -> OwnedMessage {
        OwnedMessage::new(
            Some(b"{}".to_vec()),
            None,
            "create-product".to_owned(),
            Timestamp::NotAvailable,
            0,
            7,
            Some(headers),
        )
    }

    const NAMES: &[(&[u8], Option<&[u8]>)] = &[
        (b"message-id", Some(b"m-1")),
        (b"\xffbad\xfe", Some(b"\x00\xff")),
        (b"traceparent", None),
    ];

    /// Regression (found by fuzz/kafka_command): a header name that is not
    /// UTF-8 panicked every reader of the headers, so the partition worker.
    #[test]
    fn non_utf8_header_names_are_made_readable() {
        let message = sanitized(record(raw_headers(NAMES)));
        let headers = message.headers().map(OwnedHeaders::as_borrowed);
        let entries: Vec<(&str, Option<&[u8]>)> = headers
            .into_iter()
            .flat_map(|h| h.iter())
            .map(|h| (h.key, h.value))
            .collect();
        assert_eq!(
            entries,
            [
                ("message-id", Some(&b"m-1"[..])),
                ("\u{fffd}bad\u{fffd}", Some(&b"\x00\xff"[..])),
                ("traceparent", None),
            ]
        );
        assert_eq!(text(headers, MESSAGE_ID), Some("m-1"));
        let _ = trace_context(headers);
        assert_eq!((message.offset(), message.payload()), (7, Some(&b"{}"[..])));
    }

    /// Why `sanitized` exists: rdkafka itself still panics on such a name.
    /// When this fails, rdkafka copes and `sanitized` can go.
    #[test]
    fn rdkafka_panics_on_a_non_utf8_header_name() {
        let headers = raw_headers(NAMES);
        let read = std::panic::catch_unwind(|| headers.as_borrowed().iter().count());
        assert!(read.is_err());
    }

    #[test]
    fn utf8_headers_pass_unchanged() {
        let message = sanitized(record(raw_headers(&[(b"message-id", Some(b"m-2"))])));
        let headers = message.headers().map(OwnedHeaders::as_borrowed);
        assert_eq!(text(headers, MESSAGE_ID), Some("m-2"));
        let bare = OwnedMessage::new(None, None, "t".into(), Timestamp::NotAvailable, 0, 0, None);
        assert!(sanitized(bare).headers().is_none());
    }
}
