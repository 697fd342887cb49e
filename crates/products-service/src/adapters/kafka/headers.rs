//! Record headers: W3C `traceparent`/`tracestate` so a trace continues across
//! Kafka, plus a message id and the content type.

use opentelemetry::propagation::{Extractor, Injector};
use rdkafka::message::{BorrowedHeaders, Header, Headers, OwnedHeaders};
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
