//! Static checks of the Docker path. No Docker engine is needed: the test reads
//! `docker-compose.yml`, the `Dockerfile` and every file they mount (Prometheus,
//! Grafana, MongoDB init) and checks that they agree with each other and with
//! the service's defaults in `config/default.yaml`.
//!
//! By what they check: [`services`] (services, mounts, ports, start order,
//! the image), [`kafka`] (the KRaft quorum and the topics),
//! [`observability`] (Prometheus, Grafana, Jaeger). [`model`] reads the
//! compose file.

mod kafka;
mod model;
mod observability;
mod services;

use std::{
    collections::BTreeSet,
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde_yaml::Value;

use crate::common::{read, repo_root};

const REQUIRED_SERVICES: &[&str] = &[
    "products-service",
    "mongodb",
    "kafka1",
    "kafka2",
    "kafka3",
    "kafka-init",
    "redis",
    "prometheus",
    "grafana",
    "jaeger",
    "kafka-ui",
    "node-exporter",
];
const BROKERS: &[&str] = &["kafka1", "kafka2", "kafka3"];
const SERVICE: &str = "products-service";
const DEFAULT_TOPICS: &[&str] = &["create-product", "update-product", "dead-letter-queue"];
const MONGO_INDEXES: &[&str] = &["categoryId_1", "name_1__id_1"];
/// Metrics the starter dashboard must draw (names as the service exports them).
const DASHBOARD_METRICS: &[&str] = &[
    "http_requests_total",
    "http_request_duration_seconds_bucket",
    "mongodb_operation_duration_seconds_bucket",
    "cache_requests_total",
    "build_info",
    "process_resident_memory_bytes",
];
const PROMETHEUS_DEFAULT_CONFIG: &str = "/etc/prometheus/prometheus.yml";
const GRAFANA_DATASOURCES: &str = "/etc/grafana/provisioning/datasources";
const GRAFANA_DASHBOARD_PROVIDERS: &str = "/etc/grafana/provisioning/dashboards";

/// Parses a YAML file and resolves `<<` merge keys (docker compose does too).
fn yaml_file(path: &Path) -> Value {
    let mut value: Value = serde_yaml::from_str(&read(path))
        .unwrap_or_else(|err| panic!("{} is not valid YAML: {err}", path.display()));
    value
        .apply_merge()
        .unwrap_or_else(|err| panic!("{}: invalid `<<` merge key: {err}", path.display()));
    value
}

/// A YAML scalar as compose reads it (environment values may be numbers or booleans).
fn scalar(value: &Value, what: &str) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => panic!("{what}: expected a scalar, found {other:?}"),
    }
}

fn str_list(value: Option<&Value>, what: &str) -> Vec<String> {
    match value {
        None => Vec::new(),
        Some(Value::Sequence(items)) => items.iter().map(|item| scalar(item, what)).collect(),
        Some(other) => vec![scalar(other, what)],
    }
}

fn port_number(text: &str, spec: &str) -> u16 {
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("`{text}` in port spec `{spec}` is not a single port number"))
}

/// The port of a `host:port` or `scheme://host:port[/path]` string.
fn host_and_port(address: &str) -> (String, u16) {
    let rest = address.split_once("://").map_or(address, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    let (host, port) = authority
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("`{address}` has no explicit port"));
    (host.to_owned(), port_number(port, address))
}

/// A comma-separated list (brokers, roles) as a set of trimmed items.
fn comma_set(text: &str) -> BTreeSet<String> {
    text.split(',').map(|item| item.trim().to_owned()).collect()
}

fn default_config() -> Value {
    yaml_file(&repo_root().join("config/default.yaml"))
}

/// The port of `section.addr` in config/default.yaml.
fn default_port(config: &Value, section: &str) -> u16 {
    let addr = config
        .get(section)
        .and_then(|s| s.get("addr"))
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("config/default.yaml has no {section}.addr string"));
    addr.parse::<SocketAddr>()
        .unwrap_or_else(|err| panic!("config/default.yaml {section}.addr `{addr}`: {err}"))
        .port()
}

fn socket_addr(text: &str, what: &str) -> SocketAddr {
    text.parse()
        .unwrap_or_else(|err| panic!("{what} `{text}` is not an ip:port address: {err}"))
}

/// Every entry of the `key` list in each YAML file of `dir`, with its file
/// (Grafana's provisioning directories: `datasources`, `providers`).
fn yaml_entries_in(dir: &Path, key: &str) -> Vec<(PathBuf, Value)> {
    let mut entries = Vec::new();
    for file in files_in(dir, &["yml", "yaml"]) {
        let doc = yaml_file(&file);
        for entry in doc
            .get(key)
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            entries.push((file.clone(), entry.clone()));
        }
    }
    entries
}

fn files_in(dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("cannot list {}: {err}", dir.display()))
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| {
            path.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| extensions.contains(&e))
        })
        .collect();
    files.sort();
    files
}
