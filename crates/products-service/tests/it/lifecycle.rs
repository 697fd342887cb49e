//! The service starts, answers `/health`, and stops cleanly: in-process via
//! its shutdown token, and as a real process on SIGTERM and SIGINT.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::common::{eventually, free_port, spawn_app, unique};

#[tokio::test]
async fn health_answers_ok_and_the_app_stops_when_asked() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    tokio::time::timeout(Duration::from_secs(10), app.stop())
        .await
        .expect("stops within 10 s")
        .expect("stops without error");
}

#[tokio::test]
async fn request_ids_are_returned() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/health")).send().await.unwrap();
    assert!(response.headers().contains_key("x-request-id"));
    let response = app
        .client
        .get(app.url("/health"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc-123");
}

async fn exits_cleanly_on(signal: &str) {
    let http_port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_products-service"))
        .env("HTTP_ADDR", format!("127.0.0.1:{http_port}"))
        .env("GRPC_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("METRICS_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("MONGO_DB", unique("test"))
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let health = format!("http://127.0.0.1:{http_port}/health");
    eventually(Duration::from_secs(20), || async {
        reqwest::get(&health)
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;

    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if started.elapsed() > Duration::from_secs(15) {
            child.kill().unwrap();
            panic!("did not exit within 15 s of SIG{signal}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "exit status {exit:?} after SIG{signal}");
    assert!(
        reqwest::get(&health).await.is_err(),
        "port still answers after exit"
    );
}

#[tokio::test]
async fn process_exits_cleanly_on_sigterm() {
    exits_cleanly_on("TERM").await;
}

#[tokio::test]
async fn process_exits_cleanly_on_sigint() {
    exits_cleanly_on("INT").await;
}
