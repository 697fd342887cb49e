//! Swagger UI renders the operations list in a real headless Chromium, with
//! every asset served by the service itself (the browser runs with background
//! networking off; no address but loopback is reachable or needed).

use std::time::Duration;

use crate::common::{spawn_app, unique};

#[tokio::test]
async fn swagger_ui_renders_every_operation_offline() {
    let app = spawn_app().await;
    let chromium = std::env::var("CHROMIUM_BIN").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let profile = std::env::temp_dir().join(unique("chromium-profile"));
    let output = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--virtual-time-budget=20000",
                "--dump-dom",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(app.url("/swagger/index.html"))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("chromium finishes within 90 s")
    .unwrap_or_else(|e| panic!("cannot run {chromium}: {e} (make stack-up installs it)"));
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        dom.contains("opblock-summary-path"),
        "no operations rendered; stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for path in [
        "/api/v1/products",
        "/api/v1/products/search",
        "/api/v1/products/{id}",
        "/health",
        "/ready",
    ] {
        assert!(
            dom.contains(&format!("data-path=\"{path}\"")),
            "{path} not rendered"
        );
    }
    for method in [
        "opblock-post",
        "opblock-get",
        "opblock-put",
        "opblock-delete",
    ] {
        assert!(dom.contains(method), "{method} not rendered");
    }
    // The bearer scheme gives the page an "Authorize" button, and the
    // operations that accept a token a lock.
    assert!(dom.contains("btn authorize"), "no Authorize button");
    assert!(dom.contains("authorization__btn"), "no lock on operations");
}
