//! Liveness (`/health`: the process answers) and readiness (`/ready`: every
//! dependency answers) probes. Readiness runs the probes concurrently, each
//! bounded by a timeout, and lists each one's state.

use std::{collections::BTreeMap, future::Future, pin::Pin, sync::Arc, time::Duration};

use axum::{extract::State, http::StatusCode, Json};
use serde::Serialize;

use super::AppState;

type ProbeFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// A named reachability check of one dependency.
#[derive(Clone)]
pub struct Probe {
    name: &'static str,
    check: Arc<dyn Fn() -> ProbeFuture + Send + Sync>,
}

impl Probe {
    pub fn new<F, Fut>(name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Self {
            name,
            check: Arc::new(move || Box::pin(check())),
        }
    }
}

/// The dependencies that must answer for the service to take traffic.
pub struct Readiness {
    probes: Vec<Probe>,
    timeout: Duration,
}

impl Readiness {
    pub fn new(probes: Vec<Probe>, timeout: Duration) -> Self {
        Self { probes, timeout }
    }

    /// Each probe's result by name; `Ok` when it answered in time.
    pub async fn check(&self) -> BTreeMap<&'static str, Result<(), String>> {
        let checks = self.probes.iter().map(|probe| async move {
            let result = tokio::time::timeout(self.timeout, (probe.check)())
                .await
                .unwrap_or_else(|_| Err("timed out".to_owned()));
            (probe.name, result)
        });
        futures::future::join_all(checks)
            .await
            .into_iter()
            .collect()
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct HealthBody {
    #[schema(example = "ok")]
    status: &'static str,
    /// Per dependency: "up" or "down".
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    checks: BTreeMap<&'static str, &'static str>,
}

#[utoipa::path(get, path = "/health", tag = "health",
    responses((status = 200, description = "The process is alive", body = HealthBody)))]
pub async fn live() -> Json<HealthBody> {
    Json(HealthBody {
        status: "ok",
        checks: BTreeMap::new(),
    })
}

#[utoipa::path(get, path = "/ready", tag = "health",
    responses(
        (status = 200, description = "All dependencies reachable", body = HealthBody),
        (status = 503, description = "A dependency is unreachable", body = HealthBody),
    ))]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<HealthBody>) {
    let results = state.readiness.check().await;
    let mut all_up = true;
    let checks = results
        .into_iter()
        .map(|(name, result)| {
            if let Err(err) = &result {
                all_up = false;
                tracing::warn!(dependency = name, error = %err, "readiness probe failed");
            }
            (name, if result.is_ok() { "up" } else { "down" })
        })
        .collect();
    let (status, word) = if all_up {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    };
    (
        status,
        Json(HealthBody {
            status: word,
            checks,
        }),
    )
}
