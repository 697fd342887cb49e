//! Liveness (`/health`: the process answers) and readiness (`/ready`: every
//! dependency answers) probes. Readiness runs the probes concurrently, each
//! bounded by a timeout, and lists each one's state: `up`, `down` (not
//! ready), or `degraded` (ready, with a warning: the search index answering
//! from an older state), with the reason in `details` for the probes that
//! give one.

use std::{collections::BTreeMap, future::Future, pin::Pin, sync::Arc, time::Duration};

use axum::{extract::State, http::StatusCode, Json};
use serde::Serialize;

use super::AppState;

/// A probe's answer: `Err` = down; `Ok(Some(warning))` = degraded.
pub type ProbeResult = Result<Option<String>, String>;

type ProbeFuture = Pin<Box<dyn Future<Output = ProbeResult> + Send>>;

/// A named reachability check of one dependency.
#[derive(Clone)]
pub struct Probe {
    name: &'static str,
    check: Arc<dyn Fn() -> ProbeFuture + Send + Sync>,
    /// Whether `/ready` shows the reason (messages the service wrote, not a
    /// driver's error text, which is logged instead).
    explains: bool,
}

impl Probe {
    pub fn new<F, Fut>(name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let check = Arc::new(check);
        Self {
            name,
            check: Arc::new(move || {
                let check = check.clone();
                Box::pin(async move { check().await.map(|()| None) })
            }),
            explains: false,
        }
    }

    /// A probe that can also answer degraded, and whose reasons `/ready`
    /// shows.
    pub fn explained<F, Fut>(name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ProbeResult> + Send + 'static,
    {
        Self {
            name,
            check: Arc::new(move || Box::pin(check())),
            explains: true,
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

    /// Each probe's result by name (`Err` when it did not answer in time),
    /// and whether its reason is shown.
    pub async fn check(&self) -> BTreeMap<&'static str, (ProbeResult, bool)> {
        let checks = self.probes.iter().map(|probe| async move {
            let result = tokio::time::timeout(self.timeout, (probe.check)())
                .await
                .unwrap_or_else(|_| Err("timed out".to_owned()));
            (probe.name, (result, probe.explains))
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
    /// Per dependency: "up", "down" or "degraded" (ready, with a warning).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    checks: BTreeMap<&'static str, &'static str>,
    /// Why a check is down or degraded, for the checks that say.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    details: BTreeMap<&'static str, String>,
}

#[utoipa::path(get, path = "/health", tag = "health",
    responses((status = 200, description = "The process is alive", body = HealthBody)))]
pub async fn live() -> Json<HealthBody> {
    Json(HealthBody {
        status: "ok",
        checks: BTreeMap::new(),
        details: BTreeMap::new(),
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
    let mut details = BTreeMap::new();
    let checks = results
        .into_iter()
        .map(|(name, (result, explains))| {
            let (word, reason) = match result {
                Ok(None) => ("up", None),
                Ok(Some(warning)) => ("degraded", Some(warning)),
                Err(err) => {
                    all_up = false;
                    tracing::warn!(dependency = name, error = %err, "readiness probe failed");
                    ("down", Some(err))
                }
            };
            if let (true, Some(reason)) = (explains, reason) {
                details.insert(name, reason);
            }
            (name, word)
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
            details,
        }),
    )
}
