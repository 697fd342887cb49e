//! Where the time goes during one measured run: CPU seconds of the service
//! and of the load generator (wrk, ghz: this process's waited-for children),
//! and, with `BENCH_PERF_DIR` set, a `perf record` of the service.

use serde_json::{json, Value};

use crate::{round, service::Service, Opts};

/// CPU seconds (user + system) of the children this process has waited for.
fn children_cpu_secs() -> f64 {
    // SAFETY: getrusage(2) fills the zeroed struct we pass; no other effect.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// CPU used by the service and by the load generator between `start` and `stop`.
pub struct CpuWindow {
    service: Option<f64>,
    client: f64,
}

impl CpuWindow {
    pub fn start(svc: &Service) -> Self {
        Self {
            service: svc.cpu_secs(),
            client: children_cpu_secs(),
        }
    }

    /// `{service_cpu_secs, client_cpu_secs, service_cpu_us_per_request}`.
    pub fn stop(self, svc: &Service, requests: u64) -> Value {
        let service = svc.cpu_secs().zip(self.service).map(|(a, b)| a - b);
        let client = children_cpu_secs() - self.client;
        let per_request = service
            .filter(|_| requests > 0)
            .map(|s| round(s / requests as f64 * 1e6, 1));
        json!({
            "service_cpu_secs": service.map(|s| round(s, 2)),
            "client_cpu_secs": round(client, 2),
            "service_cpu_us_per_request": per_request,
        })
    }
}

/// With `BENCH_PERF_DIR` set: `perf record` of the service during the
/// measured run, into `<dir>/<name>.perf.data` (read it with
/// `perf report --stdio -i <file>`).
pub fn perf_record(opts: &Opts, svc: &Service, name: &str) -> Option<tokio::process::Child> {
    let dir = std::env::var("BENCH_PERF_DIR")
        .ok()
        .filter(|d| !d.is_empty())?;
    std::fs::create_dir_all(&dir).ok()?;
    let out = format!("{dir}/{name}.perf.data");
    let secs = opts.duration.as_secs().to_string();
    let pid = svc.pid().to_string();
    eprintln!("perf record -e cpu-clock -F 499 -g -p {pid} -o {out} -- sleep {secs}");
    tokio::process::Command::new("perf")
        .args([
            "record",
            "-e",
            "cpu-clock",
            "-F",
            "499",
            "-g",
            "-p",
            &pid,
            "-o",
            &out,
            "--",
            "sleep",
            &secs,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .inspect_err(|e| eprintln!("perf record: {e}"))
        .ok()
}

/// Waits for the `perf record` started by [`perf_record`], if any.
pub async fn perf_wait(perf: Option<tokio::process::Child>) {
    if let Some(mut p) = perf {
        let _ = p.wait().await;
    }
}
