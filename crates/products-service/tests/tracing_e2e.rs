//! End-to-end tracing against the real local Jaeger: one REST POST is one
//! trace from the HTTP span through Kafka into MongoDB; a gRPC caller's trace
//! continues; log lines carry the trace id.

mod common;

use std::{
    collections::HashMap,
    io::Write,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use common::{products::product_body, spawn_app_with, test_settings, unique, JAEGER_QUERY};
use products_service::{
    api::grpc::pb::{products_service_client::ProductsServiceClient, GetByIdReq},
    config::{LogFormat, Settings},
    telemetry::{self, TelemetryGuard},
};
use serde_json::Value;

/// Log lines written by the service in this test binary.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Telemetry {
    guard: TelemetryGuard,
    logs: CapturedLogs,
    service: String,
}

/// Telemetry is process-wide: set up once, exporting to the local Jaeger.
fn telemetry() -> &'static Telemetry {
    static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();
    TELEMETRY.get_or_init(|| {
        // SAFETY: set before any other thread reads the environment.
        unsafe { std::env::set_var("RUST_LOG", "info,tower_http=debug") };
        let mut settings = test_settings().telemetry;
        settings.otlp_endpoint = Some("http://127.0.0.1:4317".to_owned());
        settings.service_name = unique("products-test");
        settings.log_format = LogFormat::Json;
        let logs = CapturedLogs::default();
        let writer = logs.clone();
        // The OTLP exporter needs a Tokio runtime of its own (tests each have one).
        let runtime = Box::leak(Box::new(tokio::runtime::Runtime::new().unwrap()));
        let _entered = runtime.enter();
        let guard = telemetry::init_with_writer(&settings, move || writer.clone()).unwrap();
        Telemetry {
            guard,
            logs,
            service: settings.service_name,
        }
    })
}

fn settings() -> Settings {
    let mut settings = test_settings();
    settings.telemetry.service_name = telemetry().service.clone();
    settings
}

fn new_trace() -> (String, String) {
    let trace_id = format!("{:032x}", rand_u128());
    let parent = format!("{:016x}", rand_u128() as u64);
    let traceparent = format!("00-{trace_id}-{parent}-01");
    (trace_id, traceparent)
}

fn rand_u128() -> u128 {
    let a = mongodb::bson::oid::ObjectId::new().bytes();
    let b = mongodb::bson::oid::ObjectId::new().bytes();
    let mut bytes = [0u8; 16];
    bytes[..12].copy_from_slice(&a);
    bytes[12..].copy_from_slice(&b[8..]);
    u128::from_be_bytes(bytes) | 1
}

/// Polls Jaeger until the trace holds spans with all `names`.
async fn wait_for_trace(trace_id: &str, names: &[&str]) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        telemetry().guard.flush();
        let url = format!("{JAEGER_QUERY}/api/traces/{trace_id}");
        if let Ok(response) = reqwest::get(&url).await {
            if response.status().is_success() {
                let body: Value = response.json().await.unwrap();
                let spans = body["data"][0]["spans"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                seen = spans
                    .iter()
                    .map(|s| s["operationName"].as_str().unwrap_or_default().to_owned())
                    .collect();
                if names.iter().all(|n| seen.iter().any(|s| s == n)) {
                    return spans;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("trace {trace_id} lacks some of {names:?}; saw {seen:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_rest_post_is_one_trace_from_http_through_kafka_into_mongodb() {
    telemetry();
    let app_settings = settings();
    let app = spawn_app_with(app_settings.clone()).await;
    let (trace_id, traceparent) = new_trace();
    let response = app
        .client
        .post(app.url("/api/v1/products"))
        .header("traceparent", &traceparent)
        .json(&product_body("Traced lamp"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["productId"]
        .as_str()
        .unwrap()
        .to_owned();
    common::products::wait_for_product(&app, &id, |_| true).await;

    let http = "POST /api/v1/products";
    let spans = wait_for_trace(
        &trace_id,
        &[
            http,
            "kafka.produce",
            "kafka.consume",
            "usecase.apply_command",
            "mongo.insert",
        ],
    )
    .await;
    let by_id: HashMap<&str, &Value> = spans
        .iter()
        .map(|s| (s["spanID"].as_str().unwrap(), s))
        .collect();
    let parent_of = |span: &Value| -> Option<&Value> {
        span["references"]
            .as_array()?
            .iter()
            .find(|r| r["refType"] == "CHILD_OF")
            .and_then(|r| by_id.get(r["spanID"].as_str()?).copied())
    };
    let ancestors = |name: &str| -> Vec<String> {
        let mut span = spans.iter().find(|s| s["operationName"] == name).unwrap();
        let mut chain = Vec::new();
        while let Some(parent) = parent_of(span) {
            chain.push(parent["operationName"].as_str().unwrap().to_owned());
            span = parent;
        }
        chain
    };
    for span in &spans {
        assert_eq!(
            span["traceID"],
            trace_id.as_str(),
            "one trace id throughout"
        );
    }
    assert!(ancestors("kafka.produce").contains(&http.to_owned()));
    assert_eq!(
        ancestors("kafka.consume").first().map(String::as_str),
        Some("kafka.produce")
    );
    let insert = ancestors("mongo.insert");
    assert_eq!(
        insert.first().map(String::as_str),
        Some("usecase.apply_command")
    );
    assert!(insert.contains(&"kafka.consume".to_owned()));
    assert_eq!(insert.last().map(String::as_str), Some(http), "{insert:?}");

    // A log line written while handling the request carries its trace id.
    let logs = String::from_utf8(telemetry().logs.0.lock().unwrap().clone()).unwrap();
    let traced: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["trace_id"] == trace_id.as_str())
        .collect();
    assert!(!traced.is_empty(), "no log line with trace_id {trace_id}");
    assert!(traced
        .iter()
        .all(|l| l["span_id"].as_str().is_some_and(|s| s.len() == 16)));

    // The product's change event carries the writer's trace context, and
    // the relay's publish span links to that trace (docs/EVENTS.md).
    let events = common::events::wait_for_events(
        common::KAFKA,
        &app_settings.events.topic,
        Duration::from_secs(30),
        |events| events.iter().any(|e| e.subject == id),
    )
    .await;
    let event = events.iter().find(|e| e.subject == id).unwrap();
    assert!(
        event
            .headers
            .get("traceparent")
            .is_some_and(|t| t.contains(&trace_id)),
        "{event:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        telemetry().guard.flush();
        let url = format!(
            "{JAEGER_QUERY}/api/traces?service={}&operation=product_events.publish&limit=200&lookback=1h",
            telemetry().service
        );
        let body: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        let linked = body["data"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|t| t["spans"].as_array().cloned().unwrap_or_default())
            .filter(|s| s["operationName"] == "product_events.publish")
            .any(|s| {
                s["references"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["traceID"] == trace_id.as_str()))
            });
        if linked {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no product_events.publish span links to trace {trace_id}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_continues_the_callers_trace() {
    telemetry();
    let app = spawn_app_with(settings()).await;
    let (trace_id, traceparent) = new_trace();
    let mut client = ProductsServiceClient::connect(app.grpc_url())
        .await
        .unwrap();
    let mut request = tonic::Request::new(GetByIdReq {
        product_id: "65a1f0c2e4b0a1b2c3d4e5f6".to_owned(),
    });
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    let status = client.get_by_id(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let spans = wait_for_trace(
        &trace_id,
        &[
            "/productsService.ProductsService/GetByID",
            // Not in the cache: the read's span (a cache hit has none).
            "usecase.get_product.read",
        ],
    )
    .await;
    let grpc = spans
        .iter()
        .find(|s| s["operationName"] == "/productsService.ProductsService/GetByID")
        .unwrap();
    let tags: HashMap<&str, &Value> = grpc["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["key"].as_str().unwrap(), &t["value"]))
        .collect();
    assert_eq!(tags["rpc.grpc.status_code"], "NotFound");
}
