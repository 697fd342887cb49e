//! TLS on the REST and gRPC listeners, against the real service: a CA and a
//! server certificate are made at test time by the binary's `gen-cert` (the
//! `make cert` path); clients trusting that CA get through, plaintext
//! clients and clients trusting another CA do not. Also the header read
//! timeout: a client that sends half a request, or nothing, is cut off.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use products_service::api::grpc::pb::{
    products_service_client::ProductsServiceClient, GetByIdReq, SearchReq,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::common::{
    grpc::create_req,
    products::{create_product, product_body},
    spawn_app_with, spawn_app_with_client, test_settings, TestApp,
};

/// Runs `products-service gen-cert --out DIR` and returns DIR's files.
fn gen_cert(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_products-service"))
        .args(["gen-cert", "--out"])
        .arg(dir)
        .args(["--days", "2"])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run products-service gen-cert");
    assert!(status.success(), "gen-cert failed: {status}");
    (
        dir.join("ca.crt"),
        dir.join("server.crt"),
        dir.join("server.key"),
    )
}

struct TlsApp {
    app: TestApp,
    ca_pem: Vec<u8>,
    _certs: tempfile::TempDir,
}

async fn spawn_tls_app() -> TlsApp {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = gen_cert(certs.path());
    let mut settings = test_settings();
    for tls in [&mut settings.http.tls, &mut settings.grpc.tls] {
        tls.enabled = true;
        tls.cert_file = cert.clone();
        tls.key_file = key.clone();
    }
    let ca_pem = std::fs::read(&ca).unwrap();
    let app = spawn_app_with_client(settings, https_client(&ca_pem)).await;
    TlsApp {
        app,
        ca_pem,
        _certs: certs,
    }
}

/// A reqwest client trusting only `ca_pem`.
fn https_client(ca_pem: &[u8]) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).unwrap())
}

fn grpc_endpoint(app: &TestApp, ca_pem: &[u8]) -> Endpoint {
    Endpoint::from_shared(format!("https://{}", app.grpc_addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca_pem))
                .domain_name("localhost"),
        )
        .unwrap()
}

#[tokio::test]
async fn rest_and_grpc_work_over_tls_for_a_client_trusting_the_ca() {
    let TlsApp { app, ca_pem, .. } = spawn_tls_app().await;
    assert!(app.http.starts_with("https://"));

    let health = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    // REST write (through Kafka) and reads, all over HTTPS.
    let created = create_product(&app, &product_body("Tls teapot")).await;
    let id = created["productId"].as_str().unwrap();
    assert_eq!(app.get_product(id).await.status(), 200);
    // Search follows the change events, within its freshness bound.
    app.wait_for_search("search=tls%20teapot", 1).await;

    // gRPC over TLS: create, then read back the REST-created product too.
    let channel = grpc_endpoint(&app, &ca_pem).connect().await.unwrap();
    let mut grpc = ProductsServiceClient::new(channel);
    let made = grpc
        .create(create_req("Tls kettle"))
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    let read = grpc
        .get_by_id(GetByIdReq {
            product_id: made.product_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!(read.name, "Tls kettle");
    let rest_made = grpc
        .get_by_id(GetByIdReq {
            product_id: id.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!(rest_made.name, "Tls teapot");
    app.wait_for_search("search=tls%20kettle", 1).await;
    let searched = grpc
        .search(SearchReq {
            search: "tls kettle".to_owned(),
            page: 1,
            size: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(searched.total_count, 1);

    app.stop().await.unwrap();
}

#[tokio::test]
async fn plaintext_clients_are_refused_on_tls_ports() {
    let TlsApp { app, .. } = spawn_tls_app().await;
    let plain_http = format!("http://{}/health", app.http.trim_start_matches("https://"));
    let answer = reqwest::Client::new()
        .get(&plain_http)
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(
        answer.is_err(),
        "plaintext HTTP got an answer on the TLS port: {answer:?}"
    );

    let plain_grpc = Endpoint::from_shared(format!("http://{}", app.grpc_addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10));
    let outcome = match plain_grpc.connect().await {
        Err(err) => Err(err.to_string()),
        Ok(channel) => ProductsServiceClient::new(channel)
            .get_by_id(GetByIdReq {
                product_id: "65a1f0c2e4b0a1b2c3d4e5f8".to_owned(),
            })
            .await
            .map(drop)
            .map_err(|status| status.to_string()),
    };
    assert!(outcome.is_err(), "plaintext gRPC succeeded on the TLS port");

    // The listeners survive the failed handshakes.
    let health = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_client_trusting_another_ca_fails_the_handshake() {
    let TlsApp { app, .. } = spawn_tls_app().await;
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _, _) = gen_cert(other.path());
    let other_ca_pem = std::fs::read(other_ca).unwrap();

    let stranger = https_client(&other_ca_pem)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let answer = stranger.get(app.url("/health")).send().await;
    let err = answer.expect_err("a client not trusting the CA got an answer");
    assert!(
        err.is_connect(),
        "not a connection (handshake) error: {err:?}"
    );

    let outcome = match grpc_endpoint(&app, &other_ca_pem).connect().await {
        Err(err) => Err(err.to_string()),
        Ok(channel) => ProductsServiceClient::new(channel)
            .get_by_id(GetByIdReq {
                product_id: "65a1f0c2e4b0a1b2c3d4e5f8".to_owned(),
            })
            .await
            .map(drop)
            .map_err(|status| status.to_string()),
    };
    assert!(
        outcome.is_err(),
        "gRPC client not trusting the CA succeeded"
    );
    app.stop().await.unwrap();
}

/// Reads until the server closes the connection; returns how long that took
/// and what arrived, or panics when `limit` passes with the connection open.
async fn wait_for_close(stream: &mut TcpStream, limit: Duration) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => panic!("connection still open after {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return (started.elapsed(), received),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn slow_clients_are_cut_off_after_the_header_read_timeout() {
    let timeout = Duration::from_millis(500);
    let mut settings = test_settings();
    settings.http.header_read_timeout_ms = timeout.as_millis() as u64;
    let app = spawn_app_with(settings).await;
    let addr = app.http.trim_start_matches("http://").to_owned();

    // Half a request: the request line and one header, never the blank line.
    let mut partial = TcpStream::connect(&addr).await.unwrap();
    partial
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    // A client that connects and says nothing at all.
    let mut silent = TcpStream::connect(&addr).await.unwrap();

    let (elapsed, received) = wait_for_close(&mut partial, Duration::from_secs(10)).await;
    assert!(
        elapsed >= timeout / 2,
        "closed after {elapsed:?}, before the timeout"
    );
    assert!(
        !String::from_utf8_lossy(&received).contains("200 OK"),
        "a half request was answered"
    );
    let (elapsed, _) = wait_for_close(&mut silent, Duration::from_secs(10)).await;
    assert!(elapsed < Duration::from_secs(5));

    // A complete request on a kept-alive connection is still answered, and
    // the idle connection after it is closed too.
    let mut complete = TcpStream::connect(&addr).await.unwrap();
    complete
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let (_, received) = wait_for_close(&mut complete, Duration::from_secs(10)).await;
    assert!(
        String::from_utf8_lossy(&received).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&received)
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_client_that_never_starts_the_tls_handshake_is_cut_off() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = gen_cert(certs.path());
    let mut settings = test_settings();
    settings.http.header_read_timeout_ms = 500;
    settings.http.tls.enabled = true;
    settings.http.tls.cert_file = cert;
    settings.http.tls.key_file = key;
    let app = spawn_app_with_client(settings, https_client(&std::fs::read(ca).unwrap())).await;
    let addr = app.http.trim_start_matches("https://").to_owned();

    let mut silent = TcpStream::connect(&addr).await.unwrap();
    let (elapsed, _) = wait_for_close(&mut silent, Duration::from_secs(10)).await;
    assert!(elapsed < Duration::from_secs(5));
    app.stop().await.unwrap();
}
