//! Limits against the real service and local stack: gRPC message size,
//! page-size cap and timeout; load shedding over the concurrency limit; the
//! per-client rate limit.
//!
//! Requests are held in flight without sleeping in the service: their
//! bodies (REST) or request streams (gRPC) stay open, so the handlers wait.

use std::time::{Duration, Instant};

use products_service::api::grpc::pb::{
    products_service_client::ProductsServiceClient, GetByIdReq, SearchReq,
};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tonic::{codegen::http::uri::PathAndQuery, transport::Channel, Code};

use crate::common::{eventually, grpc::create_req, spawn_app_with, test_settings, unique, TestApp};

const NO_PRODUCT: &str = "65a1f0c2e4b0a1b2c3d4e5f6";

#[tokio::test]
async fn grpc_message_size_is_limited_both_ways_and_page_size_is_capped() {
    let mut settings = test_settings();
    settings.grpc.max_message_bytes = 4096;
    let app = spawn_app_with(settings).await;
    let mut grpc = app.grpc_client().await;

    // Request over the limit: refused before decoding.
    let mut huge = create_req("Huge");
    huge.description = "x".repeat(64 * 1024);
    let err = grpc.create(huge).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{err:?}"
    );
    assert!(err.message().contains("too large"), "{err:?}");

    // The server is fine: small messages still pass. Each product is about
    // 1 KiB in protobuf, so eight of them make a response over the limit.
    let tag = unique("big");
    for i in 0..8 {
        let mut req = create_req(&format!("{tag} {i}"));
        req.description = "d".repeat(480);
        req.photos = (0..10)
            .map(|p| format!("https://img.example.com/{tag}/{i}/{p}.png"))
            .collect();
        grpc.create(req).await.unwrap();
    }
    app.wait_for_search(&format!("search={tag}"), 8).await;
    let search = |size| SearchReq {
        search: tag.clone(),
        page: 1,
        size,
    };
    let page = grpc.search(search(2)).await.unwrap().into_inner();
    assert_eq!(page.total_count, 8);
    // Response over the limit: a clear error, not a broken connection.
    let err = grpc.search(search(8)).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{err:?}"
    );
    assert!(err.message().contains("too large"), "{err:?}");
    // Page size is capped at 100 whatever the client asks.
    let capped = grpc
        .search(SearchReq {
            search: "no such product anywhere".to_owned(),
            page: 1,
            size: 1_000_000,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(capped.size, 100);
    // And the same connection still serves.
    let err = grpc
        .get_by_id(GetByIdReq {
            product_id: NO_PRODUCT.to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

/// A `GetByID` whose request message never comes until `release` is
/// dropped: the server's handler waits for it, holding its slot.
type GetByIdReply =
    Result<tonic::Response<products_service::api::grpc::pb::GetByIdRes>, tonic::Status>;

fn held_grpc_call(
    channel: Channel,
) -> (
    tokio::sync::mpsc::Sender<GetByIdReq>,
    tokio::task::JoinHandle<GetByIdReply>,
) {
    let (release, messages) = tokio::sync::mpsc::channel::<GetByIdReq>(1);
    let call = tokio::spawn(async move {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        grpc.client_streaming(
            tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(messages)),
            PathAndQuery::from_static("/productsService.ProductsService/GetByID"),
            tonic_prost::ProstCodec::default(),
        )
        .await
    });
    (release, call)
}

#[tokio::test]
async fn grpc_calls_time_out() {
    let mut settings = test_settings();
    settings.grpc.request_timeout_ms = 300;
    let app = spawn_app_with(settings).await;
    let channel = Channel::from_shared(app.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let started = Instant::now();
    let (_release, call) = held_grpc_call(channel.clone());
    let err = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the server ends the call")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), Code::Cancelled, "{err:?}");
    assert!(err.message().contains("Timeout"), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Other calls are unaffected.
    let err = ProductsServiceClient::new(channel)
        .get_by_id(GetByIdReq {
            product_id: NO_PRODUCT.to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

/// A REST POST whose body stays open until the returned sender is dropped.
type BodyChunks = tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>;

fn held_rest_call(
    app: &TestApp,
) -> (
    BodyChunks,
    tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
) {
    let (release, chunks) = tokio::sync::mpsc::channel(1);
    // A first chunk makes the client send the request head at once.
    release
        .try_send(Ok(br#"{"name":"#.to_vec()))
        .expect("an empty channel has room");
    let request = app
        .client
        .post(app.url("/api/v1/products"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(
            tokio_stream::wrappers::ReceiverStream::new(chunks),
        ));
    (release, tokio::spawn(request.send()))
}

/// Keeps `slots` calls made by `hold` in flight until `is_shed` says a probe
/// was refused, i.e. the held calls fill every slot. A held call that was
/// itself shed (a probe had the slot at that moment) is replaced, and probes
/// wait a poll interval after new calls were started so those get there first.
async fn fill_slots<H, P>(
    slots: usize,
    mut hold: impl FnMut() -> (H, tokio::task::JoinHandle<P>),
    mut is_shed: impl AsyncFnMut() -> bool,
) -> Vec<(H, tokio::task::JoinHandle<P>)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut held = Vec::new();
    loop {
        held.retain(|(_, call): &(H, tokio::task::JoinHandle<P>)| !call.is_finished());
        while held.len() < slots {
            held.push(hold());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        if is_shed().await {
            return held;
        }
        assert!(
            Instant::now() < deadline,
            "the held calls never filled the slots"
        );
    }
}

#[tokio::test]
async fn over_the_concurrency_limit_requests_are_shed_at_once() {
    let mut settings = test_settings();
    settings.http.max_concurrent_requests = 2;
    settings.grpc.max_concurrent_requests = 2;
    settings.http.request_timeout_ms = 60_000;
    settings.grpc.request_timeout_ms = 60_000;
    let app = spawn_app_with(settings).await;
    let search = app.url("/api/v1/products/search?search=x");

    // REST: two requests hold both slots; the next is answered 503 at once.
    let held = fill_slots(
        2,
        || held_rest_call(&app),
        async || {
            app.client.get(&search).send().await.unwrap().status()
                == StatusCode::SERVICE_UNAVAILABLE
        },
    )
    .await;
    let started = Instant::now();
    let shed = app.client.get(&search).send().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(shed.headers()["retry-after"], "1");
    let body: Value = shed.json().await.unwrap();
    assert_eq!(body["status"], 503, "{body}");
    assert_eq!(body["causes"], json!([]), "{body}");
    // Probes are not counted: an overloaded instance is still alive.
    let health = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    // gRPC: the same with its own limit.
    let channel = Channel::from_shared(app.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = ProductsServiceClient::new(channel.clone());
    let get = || GetByIdReq {
        product_id: NO_PRODUCT.to_owned(),
    };
    let held_grpc = fill_slots(
        2,
        || held_grpc_call(channel.clone()),
        async || {
            let mut grpc = grpc.clone();
            grpc.get_by_id(get()).await.unwrap_err().code() == Code::Unavailable
        },
    )
    .await;
    let started = Instant::now();
    let err = grpc.get_by_id(get()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(serving.status, 1, "SERVING while shedding");

    // Release: the held calls finish (answered, not lost) and everything
    // answers normally again.
    for (release, call) in held {
        drop(release);
        let response = call.await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
    for (release, call) in held_grpc {
        drop(release);
        let status = call.await.unwrap().unwrap_err();
        assert_ne!(status.code(), Code::Unavailable, "{status:?}");
    }
    for _ in 0..5 {
        let ok = app.client.get(&search).send().await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        let err = grpc.get_by_id(get()).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
    }
}

#[tokio::test]
async fn over_the_rate_limit_a_client_gets_429_with_retry_after() {
    let mut settings = test_settings();
    settings.rate_limit.enabled = true;
    settings.rate_limit.per_second = 1;
    settings.rate_limit.burst = 3;
    let app = spawn_app_with(settings).await;
    let search = app.url("/api/v1/products/search?search=x");

    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(app.client.get(&search).send().await.unwrap());
    }
    let limited = statuses.pop().unwrap();
    for ok in statuses {
        assert_eq!(ok.status(), StatusCode::OK);
    }
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["status"], 429, "{body}");
    // Probes are not limited.
    let health = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    // The budget is per client across both APIs.
    let mut grpc = app.grpc_client().await;
    let err = grpc
        .search(SearchReq {
            search: "x".to_owned(),
            page: 1,
            size: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    // After waiting, the client is served again.
    eventually(Duration::from_secs(5), || async {
        app.client.get(&search).send().await.unwrap().status() == StatusCode::OK
    })
    .await;
}
