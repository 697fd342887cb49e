//! OpenAPI conformance: schemathesis (PyPI, installed into the stack cache's
//! venv by scripts/install-prereqs.sh) generates requests from the live
//! service's `/api-docs/openapi.json` — valid and invalid — and checks that
//! no answer is a 5xx and every answer matches what the document declares
//! (status code, content type, body schema).
//!
//! Bounded by `SCHEMATHESIS_MAX_EXAMPLES` (examples per operation, default
//! 100); `SCHEMATHESIS_SEED` replays a run (the seed is printed).

use std::{path::PathBuf, time::Instant};

use crate::common::{
    products::{create_product, product_body},
    spawn_app, stack_cache,
};

/// The checks run on every response.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance";

fn schemathesis() -> PathBuf {
    std::env::var_os("SCHEMATHESIS")
        .map_or_else(|| stack_cache().join("venv/bin/st"), PathBuf::from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_requests_get_declared_answers_and_no_server_errors() {
    let st = schemathesis();
    assert!(
        st.is_file(),
        "schemathesis not found at {} — run scripts/install-prereqs.sh \
         (it installs scripts/requirements-schemathesis.txt into that venv), \
         or point SCHEMATHESIS at an `st` binary",
        st.display()
    );

    let app = spawn_app().await;
    // A few real products, so searches and reads also answer with data.
    let mut ids = Vec::new();
    for name in ["Coffee mug", "Tea pot", "Espresso cup"] {
        let product = create_product(&app, &product_body(name)).await;
        ids.push(product["productId"].as_str().unwrap_or_default().to_owned());
    }

    let max_examples =
        std::env::var("SCHEMATHESIS_MAX_EXAMPLES").unwrap_or_else(|_| "100".to_owned());
    let mut command = tokio::process::Command::new(&st);
    command
        .arg("run")
        .arg(app.url("/api-docs/openapi.json"))
        .args(["--checks", CHECKS])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--max-examples", &max_examples])
        // One worker: hypothesis builds ASTs that CPython 3.11 races on across threads
        // ("AST constructor recursion depth mismatch").
        .args(["--workers", "1"])
        .args(["--request-timeout", "10"])
        .args(["--max-failures", "20"])
        // A JUnit report for CI; it and schemathesis' own cache (.schemathesis/)
        // go under target/, not into the source tree.
        .args(["--report", "junit"])
        .arg("--report-junit-path")
        .arg(concat!(
            env!("CARGO_TARGET_TMPDIR"),
            "/schemathesis-junit.xml"
        ))
        .current_dir(env!("CARGO_TARGET_TMPDIR"))
        .env("NO_COLOR", "1")
        .kill_on_drop(true);
    if let Ok(seed) = std::env::var("SCHEMATHESIS_SEED") {
        command.args(["--seed", &seed]);
    }

    let started = Instant::now();
    let output = command.output().await.unwrap_or_else(|e| {
        panic!("could not run {}: {e}", st.display());
    });
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("schemathesis ({elapsed:.1?}, seeded products {ids:?}):\n{stdout}\n{stderr}");

    assert!(
        output.status.success(),
        "schemathesis found non-conforming answers ({}); its report is above",
        output.status
    );
    app.stop().await.expect("service stops cleanly");
}

/// Regression (found by schemathesis): a page whose offset does not fit the
/// i64 MongoDB's `skip` takes was a 500; any page past the last is empty.
#[tokio::test]
async fn a_page_far_past_the_last_is_empty_not_a_server_error() {
    let app = spawn_app().await;
    create_product(&app, &product_body("Far page mug")).await;
    app.wait_for_search("", 1).await;
    for page in ["9223372036854775806", "9223372036854775807", "2"] {
        let response = app
            .client
            .get(app.url(&format!("/api/v1/products/search?page={page}&size=100")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "page {page}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["totalCount"], 1, "page {page}: {body}");
        assert_eq!(body["products"], serde_json::json!([]), "page {page}");
        assert_eq!(body["hasMore"], false, "page {page}");
    }
}
