//! Static checks of the Docker path. No Docker engine is needed: the test reads
//! `docker-compose.yml`, the `Dockerfile` and every file they mount (Prometheus,
//! Grafana, MongoDB init) and checks that they agree with each other and with
//! the service's defaults in `config/default.yaml`.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde_yaml::{Mapping, Value};

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

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

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

#[derive(Debug, Clone, PartialEq, Eq)]
struct Published {
    host_ip: Option<String>,
    host_port: Option<u16>,
    container_port: u16,
}

#[derive(Debug, Clone)]
struct Mount {
    source: String,
    target: String,
}

impl Mount {
    fn is_relative_bind(&self) -> bool {
        self.source.starts_with("./") || self.source.starts_with("../")
    }
    fn is_absolute_bind(&self) -> bool {
        self.source.starts_with('/')
    }
}

struct Compose {
    root: PathBuf,
    doc: Value,
}

impl Compose {
    fn load() -> Self {
        let root = repo_root();
        let doc = yaml_file(&root.join("docker-compose.yml"));
        Self { root, doc }
    }

    fn services(&self) -> &Mapping {
        self.doc
            .get("services")
            .and_then(Value::as_mapping)
            .expect("docker-compose.yml has no `services` mapping")
    }

    fn service_names(&self) -> Vec<String> {
        self.services()
            .keys()
            .map(|k| scalar(k, "service name"))
            .collect()
    }

    fn service(&self, name: &str) -> &Value {
        self.services()
            .get(name)
            .unwrap_or_else(|| panic!("docker-compose.yml has no service `{name}`"))
    }

    fn env(&self, name: &str) -> BTreeMap<String, String> {
        let what = format!("services.{name}.environment");
        match self.service(name).get("environment") {
            None => BTreeMap::new(),
            Some(Value::Mapping(map)) => map
                .iter()
                .map(|(k, v)| (scalar(k, &what), scalar(v, &what)))
                .collect(),
            Some(Value::Sequence(items)) => items
                .iter()
                .map(|item| {
                    let item = scalar(item, &what);
                    match item.split_once('=') {
                        Some((k, v)) => (k.to_owned(), v.to_owned()),
                        None => (item, String::new()),
                    }
                })
                .collect(),
            Some(other) => panic!("{what}: expected a mapping or a list, found {other:?}"),
        }
    }

    fn env_var(&self, name: &str, key: &str) -> String {
        self.env(name)
            .remove(key)
            .unwrap_or_else(|| panic!("services.{name}.environment must set {key}"))
    }

    fn ports(&self, name: &str) -> Vec<Published> {
        let Some(ports) = self.service(name).get("ports") else {
            return Vec::new();
        };
        let ports = ports
            .as_sequence()
            .unwrap_or_else(|| panic!("services.{name}.ports must be a list"));
        ports
            .iter()
            .map(|port| match port {
                Value::Mapping(long) => {
                    let field = |key: &str| long.get(key).map(|v| scalar(v, "port field"));
                    let target = field("target").unwrap_or_else(|| {
                        panic!("services.{name}.ports: long syntax needs `target`")
                    });
                    Published {
                        host_ip: field("host_ip"),
                        host_port: field("published").map(|p| port_number(&p, &target)),
                        container_port: port_number(&target, &target),
                    }
                }
                other => {
                    let spec = scalar(other, "port");
                    let without_protocol =
                        spec.split('/').next().unwrap_or(spec.as_str()).to_owned();
                    let parts: Vec<&str> = without_protocol.split(':').collect();
                    let (host_ip, host_port, container) = match parts.as_slice() {
                        [container] => (None, None, *container),
                        [host, container] => (None, Some(*host), *container),
                        [ip, host, container] => (Some(*ip), Some(*host), *container),
                        _ => panic!("services.{name}.ports: cannot parse `{spec}`"),
                    };
                    Published {
                        host_ip: host_ip.map(str::to_owned),
                        host_port: host_port
                            .filter(|h| !h.is_empty())
                            .map(|h| port_number(h, &spec)),
                        container_port: port_number(container, &spec),
                    }
                }
            })
            .collect()
    }

    /// Container ports a service makes reachable: `ports` and `expose`.
    fn container_ports(&self, name: &str) -> BTreeSet<u16> {
        let mut ports: BTreeSet<u16> = self
            .ports(name)
            .into_iter()
            .map(|p| p.container_port)
            .collect();
        for exposed in str_list(self.service(name).get("expose"), "expose") {
            let exposed = exposed
                .split('/')
                .next()
                .unwrap_or(exposed.as_str())
                .to_owned();
            ports.insert(port_number(&exposed, &exposed));
        }
        ports
    }

    fn mounts(&self, name: &str) -> Vec<Mount> {
        let Some(volumes) = self.service(name).get("volumes") else {
            return Vec::new();
        };
        let volumes = volumes
            .as_sequence()
            .unwrap_or_else(|| panic!("services.{name}.volumes must be a list"));
        volumes
            .iter()
            .map(|volume| match volume {
                Value::Mapping(long) => {
                    let field = |key: &str| {
                        long.get(key)
                            .map(|v| scalar(v, "volume field"))
                            .unwrap_or_default()
                    };
                    Mount {
                        source: field("source"),
                        target: field("target"),
                    }
                }
                other => {
                    let spec = scalar(other, "volume");
                    let mut parts = spec.split(':');
                    let source = parts.next().unwrap_or_default().to_owned();
                    match parts.next() {
                        Some(target) => Mount {
                            source,
                            target: target.to_owned(),
                        },
                        // An anonymous volume: only a container path.
                        None => Mount {
                            source: String::new(),
                            target: source,
                        },
                    }
                }
            })
            .collect()
    }

    /// The host file behind `container_path` in service `name`, through its
    /// relative bind mounts (the mount itself or a directory containing it).
    fn host_path(&self, name: &str, container_path: &str) -> PathBuf {
        for mount in self.mounts(name).iter().filter(|m| m.is_relative_bind()) {
            let target = mount.target.trim_end_matches('/');
            if container_path == target {
                return self.root.join(&mount.source);
            }
            if let Some(rest) = container_path.strip_prefix(&format!("{target}/")) {
                return self.root.join(&mount.source).join(rest);
            }
        }
        panic!("services.{name}: no bind mount from the repository provides {container_path}")
    }

    fn depends_on(&self, name: &str) -> BTreeMap<String, String> {
        match self.service(name).get("depends_on") {
            None => BTreeMap::new(),
            Some(Value::Sequence(items)) => items
                .iter()
                .map(|i| (scalar(i, "depends_on"), "service_started".to_owned()))
                .collect(),
            Some(Value::Mapping(map)) => map
                .iter()
                .map(|(k, v)| {
                    let condition = v
                        .get("condition")
                        .map_or_else(|| "service_started".to_owned(), |c| scalar(c, "condition"));
                    (scalar(k, "depends_on"), condition)
                })
                .collect(),
            Some(other) => panic!("services.{name}.depends_on: unexpected {other:?}"),
        }
    }

    fn has_healthcheck(&self, name: &str) -> bool {
        self.service(name).get("healthcheck").is_some_and(|h| {
            h.get("test").is_some() && h.get("disable") != Some(&Value::Bool(true))
        })
    }
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

fn yaml_files_in(dir: &Path) -> Vec<PathBuf> {
    files_in(dir, &["yml", "yaml"])
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

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn compose_declares_every_service_and_no_obsolete_version_key() {
    let compose = Compose::load();
    let names = compose.service_names();
    for required in REQUIRED_SERVICES {
        assert!(
            names.iter().any(|n| n == required),
            "docker-compose.yml must define service `{required}` (has: {names:?})"
        );
    }
    assert!(
        compose.doc.get("version").is_none(),
        "docker-compose.yml: the top-level `version` key is obsolete in the Compose spec; remove it"
    );
    for name in &names {
        let service = compose.service(name);
        assert!(
            service.get("image").is_some() || service.get("build").is_some(),
            "service `{name}` needs an `image` or a `build`"
        );
    }
}

#[test]
fn bind_mounts_named_volumes_and_build_context_exist() {
    let compose = Compose::load();
    let declared_volumes: BTreeSet<String> = compose
        .doc
        .get("volumes")
        .and_then(Value::as_mapping)
        .map(|m| m.keys().map(|k| scalar(k, "volume name")).collect())
        .unwrap_or_default();

    for name in compose.service_names() {
        for mount in compose.mounts(&name) {
            if mount.is_relative_bind() {
                let host = compose.root.join(&mount.source);
                assert!(
                    host.exists(),
                    "services.{name}.volumes: bind-mounted host path {} does not exist \
                     (docker would create an empty directory in its place)",
                    mount.source
                );
            } else if !mount.is_absolute_bind() && !mount.source.is_empty() {
                assert!(
                    declared_volumes.contains(&mount.source),
                    "services.{name}.volumes: named volume `{}` is not declared under the top-level `volumes`",
                    mount.source
                );
            }
        }
    }

    let build = compose.service(SERVICE).get("build").unwrap_or_else(|| {
        panic!("services.{SERVICE} must be built from the repository (`build`)")
    });
    let (context, dockerfile) = match build {
        Value::String(context) => (context.clone(), "Dockerfile".to_owned()),
        Value::Mapping(_) => (
            build
                .get("context")
                .map_or_else(|| ".".to_owned(), |c| scalar(c, "build.context")),
            build.get("dockerfile").map_or_else(
                || "Dockerfile".to_owned(),
                |d| scalar(d, "build.dockerfile"),
            ),
        ),
        other => panic!("services.{SERVICE}.build: unexpected {other:?}"),
    };
    let context = compose.root.join(context);
    assert!(
        context.join("Cargo.toml").is_file() && context.join("Cargo.lock").is_file(),
        "services.{SERVICE}.build.context {} must be the workspace root (Cargo.toml + Cargo.lock)",
        context.display()
    );
    assert!(
        context.join(&dockerfile).is_file(),
        "services.{SERVICE}.build.dockerfile {dockerfile} does not exist in {}",
        context.display()
    );

    // The build context must keep what `cargo build` needs.
    let dockerignore = compose.root.join(".dockerignore");
    if dockerignore.is_file() {
        for line in read(&dockerignore).lines().map(str::trim) {
            let pattern = line.trim_end_matches('/');
            for needed in [
                "*",
                "crates",
                "proto",
                "config",
                "Cargo.toml",
                "Cargo.lock",
                "rust-toolchain.toml",
            ] {
                assert_ne!(
                    pattern, needed,
                    ".dockerignore excludes `{line}`, which the Docker build needs"
                );
            }
        }
    }
}

#[test]
fn service_binds_all_interfaces_on_its_default_ports_and_publishes_them() {
    let compose = Compose::load();
    let config = default_config();
    let published = compose.ports(SERVICE);

    for (var, section) in [
        ("HTTP_ADDR", "http"),
        ("GRPC_ADDR", "grpc"),
        ("METRICS_ADDR", "metrics"),
    ] {
        let expected = default_port(&config, section);
        let addr = socket_addr(&compose.env_var(SERVICE, var), var);
        assert!(
            addr.ip().is_unspecified(),
            "services.{SERVICE}.environment.{var} = {addr}: in a container it must bind 0.0.0.0 \
             (loopback is unreachable through published ports)"
        );
        assert_eq!(
            addr.port(),
            expected,
            "services.{SERVICE}.environment.{var}: port must equal the default {section}.addr port \
             in config/default.yaml"
        );
        let mapping = published
            .iter()
            .find(|p| p.container_port == expected)
            .unwrap_or_else(|| {
                panic!("services.{SERVICE}.ports must publish container port {expected} ({var}); has {published:?}")
            });
        assert_eq!(
            mapping.host_port,
            Some(expected),
            "services.{SERVICE}.ports: container port {expected} ({var}) must be published on the same host port"
        );
    }

    // The image itself carries the same container defaults.
    let dockerfile = read(&compose.root.join("Dockerfile"));
    let exposed: BTreeSet<u16> = dockerfile
        .lines()
        .filter_map(|l| l.trim().strip_prefix("EXPOSE "))
        .flat_map(|ports| ports.split_whitespace())
        .map(|p| port_number(p.split('/').next().unwrap_or(p), p))
        .collect();
    for section in ["http", "grpc", "metrics"] {
        let port = default_port(&config, section);
        assert!(
            exposed.contains(&port),
            "Dockerfile must EXPOSE {port} ({section}.addr); exposes {exposed:?}"
        );
    }
    for (var, section) in [
        ("HTTP_ADDR", "http"),
        ("GRPC_ADDR", "grpc"),
        ("METRICS_ADDR", "metrics"),
    ] {
        let expected = format!("{var}=0.0.0.0:{}", default_port(&config, section));
        assert!(
            dockerfile.contains(&expected),
            "Dockerfile must set ENV {expected} so the image works without compose"
        );
    }
}

#[test]
fn published_ports_bind_loopback_only() {
    let compose = Compose::load();
    for name in compose.service_names() {
        for port in compose.ports(&name) {
            assert_eq!(
                port.host_ip.as_deref(),
                Some("127.0.0.1"),
                "services.{name}.ports: {port:?} must be bound to 127.0.0.1 like every other published port"
            );
        }
    }
}

#[test]
fn prometheus_scrapes_the_service_metrics_port() {
    let compose = Compose::load();
    let metrics_port =
        socket_addr(&compose.env_var(SERVICE, "METRICS_ADDR"), "METRICS_ADDR").port();

    let command = str_list(
        compose.service("prometheus").get("command"),
        "prometheus command",
    );
    let config_path = command
        .iter()
        .find_map(|arg| arg.strip_prefix("--config.file="))
        .unwrap_or(PROMETHEUS_DEFAULT_CONFIG)
        .to_owned();
    let config_file = compose.host_path("prometheus", &config_path);
    let config = yaml_file(&config_file);
    let shown = config_file.display();

    let scrape_configs = config
        .get("scrape_configs")
        .and_then(Value::as_sequence)
        .unwrap_or_else(|| panic!("{shown} has no scrape_configs list"));
    let mut targets = BTreeMap::new();
    for job in scrape_configs {
        let job_name = job
            .get("job_name")
            .map(|j| scalar(j, "job_name"))
            .unwrap_or_default();
        let metrics_path = job
            .get("metrics_path")
            .map_or_else(|| "/metrics".to_owned(), |p| scalar(p, "metrics_path"));
        for static_config in job
            .get("static_configs")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            for target in str_list(static_config.get("targets"), "targets") {
                targets.insert(target, (job_name.clone(), metrics_path.clone()));
            }
        }
    }
    let wanted = format!("{SERVICE}:{metrics_port}");
    let (job, path) = targets.get(&wanted).unwrap_or_else(|| {
        panic!(
            "{shown} must scrape {wanted} (the container port of METRICS_ADDR); targets: {:?}",
            targets.keys().collect::<Vec<_>>()
        )
    });
    assert_eq!(path, "/metrics", "{shown}: job {job} must scrape /metrics");
    assert!(
        targets.contains_key("node-exporter:9100"),
        "{shown} must scrape node-exporter:9100"
    );
    for target in targets.keys() {
        let (host, _) = host_and_port(target);
        assert!(
            host == "localhost" || compose.service_names().contains(&host),
            "{shown}: scrape target {target} is not a compose service"
        );
    }
    let node_exporter_port = host_and_port("node-exporter:9100").1;
    assert!(
        compose
            .container_ports("node-exporter")
            .contains(&node_exporter_port)
            || compose.service("node-exporter").get("ports").is_none(),
        "node-exporter must listen on {node_exporter_port}"
    );

    // Every rule file Prometheus loads is mounted, parses and has `groups`.
    let rule_files = str_list(config.get("rule_files"), "rule_files");
    assert!(
        !rule_files.is_empty(),
        "{shown} must load the alert rules (rule_files)"
    );
    for rule_file in rule_files {
        let host = compose.host_path("prometheus", &rule_file);
        let rules = yaml_file(&host);
        assert!(
            rules.get("groups").and_then(Value::as_sequence).is_some(),
            "{}: a Prometheus rule file needs a `groups` list (may be empty)",
            host.display()
        );
    }
}

#[test]
fn grafana_provisions_the_prometheus_datasource_and_dashboards() {
    let compose = Compose::load();
    let prometheus_port = 9090;
    assert!(
        compose
            .container_ports("prometheus")
            .contains(&prometheus_port),
        "services.prometheus must publish its port {prometheus_port}"
    );

    // Datasources.
    let datasource_dir = compose.host_path("grafana", GRAFANA_DATASOURCES);
    let mut datasources = Vec::new();
    for file in yaml_files_in(&datasource_dir) {
        let doc = yaml_file(&file);
        for ds in doc
            .get("datasources")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            datasources.push((file.clone(), ds.clone()));
        }
    }
    let (file, prometheus) = datasources
        .iter()
        .find(|(_, ds)| ds.get("type").and_then(Value::as_str) == Some("prometheus"))
        .unwrap_or_else(|| {
            panic!(
                "{} provisions no prometheus datasource",
                datasource_dir.display()
            )
        });
    let url = prometheus
        .get("url")
        .map(|u| scalar(u, "url"))
        .unwrap_or_default();
    assert_eq!(
        url.trim_end_matches('/'),
        format!("http://prometheus:{prometheus_port}"),
        "{}: the prometheus datasource must point at the prometheus service",
        file.display()
    );
    assert_eq!(
        prometheus.get("uid").and_then(Value::as_str),
        Some("prometheus"),
        "{}: dashboards refer to the prometheus datasource by uid `prometheus`",
        file.display()
    );
    assert_eq!(
        prometheus.get("isDefault").and_then(Value::as_bool),
        Some(true),
        "{}: the prometheus datasource must be the default",
        file.display()
    );
    let datasource_uids: BTreeSet<String> = datasources
        .iter()
        .filter_map(|(_, ds)| ds.get("uid").and_then(Value::as_str).map(str::to_owned))
        .collect();

    // Anonymous viewing: no login needed.
    let env = compose.env("grafana");
    assert_eq!(
        env.get("GF_AUTH_ANONYMOUS_ENABLED").map(String::as_str),
        Some("true"),
        "grafana must enable anonymous access (GF_AUTH_ANONYMOUS_ENABLED=true)"
    );
    assert_eq!(
        env.get("GF_AUTH_ANONYMOUS_ORG_ROLE").map(String::as_str),
        Some("Viewer"),
        "grafana anonymous users must be Viewers only"
    );

    // Dashboard providers and the dashboards they load.
    let provider_dir = compose.host_path("grafana", GRAFANA_DASHBOARD_PROVIDERS);
    let mut dashboard_files = Vec::new();
    for file in yaml_files_in(&provider_dir) {
        let doc = yaml_file(&file);
        for provider in doc
            .get("providers")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            let path = provider
                .get("options")
                .and_then(|o| o.get("path"))
                .map(|p| scalar(p, "providers.options.path"))
                .unwrap_or_else(|| panic!("{}: provider without options.path", file.display()));
            let host_dir = compose.host_path("grafana", &path);
            assert!(
                host_dir.is_dir(),
                "{}: provider path {path} must be a mounted directory ({} is not)",
                file.display(),
                host_dir.display()
            );
            dashboard_files.extend(files_in(&host_dir, &["json"]));
        }
    }
    assert!(
        !dashboard_files.is_empty(),
        "{} must load at least one JSON dashboard",
        provider_dir.display()
    );

    let mut exprs = Vec::new();
    let mut uids = BTreeSet::new();
    for file in &dashboard_files {
        let shown = file.display();
        let dashboard: serde_json::Value = serde_json::from_str(&read(file))
            .unwrap_or_else(|err| panic!("{shown} is not valid JSON: {err}"));
        if let Some(uid) = dashboard.get("uid").and_then(serde_json::Value::as_str) {
            assert!(
                uids.insert(uid.to_owned()),
                "{shown}: dashboard uid {uid} is used twice"
            );
        }
        let mut panels: Vec<&serde_json::Value> = dashboard
            .get("panels")
            .and_then(serde_json::Value::as_array)
            .map(|p| p.iter().collect())
            .unwrap_or_default();
        assert!(!panels.is_empty(), "{shown} has no panels");
        let mut ids = BTreeSet::new();
        while let Some(panel) = panels.pop() {
            // Rows may nest their (collapsed) panels.
            if let Some(nested) = panel.get("panels").and_then(serde_json::Value::as_array) {
                panels.extend(nested);
            }
            let title = panel
                .get("title")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("<untitled>");
            if let Some(id) = panel.get("id").and_then(serde_json::Value::as_u64) {
                assert!(ids.insert(id), "{shown}: panel id {id} is used twice");
            }
            let kind = panel
                .get("type")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("");
            if matches!(kind, "row" | "text" | "news" | "dashlist") {
                continue;
            }
            let targets = panel
                .get("targets")
                .and_then(serde_json::Value::as_array)
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| panic!("{shown}: panel `{title}` has no targets"));
            for target in targets {
                let expr = target
                    .get("expr")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("")
                    .trim();
                assert!(
                    !expr.is_empty(),
                    "{shown}: panel `{title}` has a target without `expr`"
                );
                exprs.push(expr.to_owned());
            }
            for datasource in std::iter::once(panel.get("datasource"))
                .chain(targets.iter().map(|t| t.get("datasource")))
                .flatten()
            {
                if let Some(uid) = datasource.get("uid").and_then(serde_json::Value::as_str) {
                    assert!(
                        uid.starts_with('$') || datasource_uids.contains(uid),
                        "{shown}: panel `{title}` uses datasource uid `{uid}`, which is not provisioned \
                         ({datasource_uids:?})"
                    );
                }
            }
        }
    }
    for metric in DASHBOARD_METRICS {
        assert!(
            exprs.iter().any(|e| e.contains(metric)),
            "the dashboards must chart `{metric}`"
        );
    }

    if let Some(home) = env.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH") {
        let host = compose.host_path("grafana", home);
        assert!(
            host.is_file(),
            "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH {home} is {}, which does not exist",
            host.display()
        );
    }
}

#[test]
fn service_exports_traces_to_the_jaeger_otlp_grpc_port() {
    let compose = Compose::load();
    let endpoint = compose.env_var(SERVICE, "OTEL_EXPORTER_OTLP_ENDPOINT");
    assert!(
        endpoint.starts_with("http://"),
        "OTEL_EXPORTER_OTLP_ENDPOINT `{endpoint}` must be an http:// URL (OTLP gRPC, plaintext)"
    );
    let (host, port) = host_and_port(&endpoint);
    assert_eq!(
        host, "jaeger",
        "OTEL_EXPORTER_OTLP_ENDPOINT must point at the jaeger service"
    );
    assert_eq!(
        port, 4317,
        "OTEL_EXPORTER_OTLP_ENDPOINT must use OTLP gRPC (4317)"
    );
    let jaeger_ports = compose.container_ports("jaeger");
    for wanted in [4317, 16686] {
        assert!(
            jaeger_ports.contains(&wanted),
            "services.jaeger must expose {wanted}; has {jaeger_ports:?}"
        );
    }
    assert_eq!(
        compose.env_var(SERVICE, "OTEL_SERVICE_NAME"),
        SERVICE,
        "traces should be reported as {SERVICE}"
    );
}

#[test]
fn kafka_brokers_form_one_consistent_kraft_quorum() {
    let compose = Compose::load();
    let mut node_ids = BTreeMap::new();
    let mut voters_lines = BTreeSet::new();
    let mut cluster_ids = BTreeSet::new();
    let mut internal_addresses = BTreeSet::new();
    let mut external_ports = BTreeSet::new();

    for broker in BROKERS {
        let env = compose.env(broker);
        let get = |key: &str| {
            env.get(key)
                .cloned()
                .unwrap_or_else(|| panic!("services.{broker}.environment must set {key}"))
        };
        let node_id: u32 = get("KAFKA_NODE_ID")
            .parse()
            .unwrap_or_else(|_| panic!("services.{broker}: KAFKA_NODE_ID must be a number"));
        if let Some(other) = node_ids.insert(node_id, broker.to_string()) {
            panic!("KAFKA_NODE_ID {node_id} is used by both {other} and {broker}");
        }
        let roles: BTreeSet<String> = get("KAFKA_PROCESS_ROLES")
            .split(',')
            .map(|r| r.trim().to_owned())
            .collect();
        assert!(
            roles.contains("broker") && roles.contains("controller"),
            "services.{broker}: KAFKA_PROCESS_ROLES must be broker,controller (combined mode)"
        );
        voters_lines.insert(get("KAFKA_CONTROLLER_QUORUM_VOTERS"));
        cluster_ids.insert(get("CLUSTER_ID"));

        // listeners: NAME://host:port
        let parse_listeners = |key: &str| -> BTreeMap<String, (String, u16)> {
            get(key)
                .split(',')
                .map(|listener| {
                    let (name, address) = listener.trim().split_once("://").unwrap_or_else(|| {
                        panic!("services.{broker}.{key}: bad listener `{listener}`")
                    });
                    let (host, port) = address.rsplit_once(':').unwrap_or_else(|| {
                        panic!("services.{broker}.{key}: `{listener}` has no port")
                    });
                    (
                        name.to_owned(),
                        (host.to_owned(), port_number(port, listener)),
                    )
                })
                .collect()
        };
        let listeners = parse_listeners("KAFKA_LISTENERS");
        let advertised = parse_listeners("KAFKA_ADVERTISED_LISTENERS");
        let protocol_map: BTreeSet<String> = get("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP")
            .split(',')
            .filter_map(|entry| {
                entry
                    .split_once(':')
                    .map(|(name, _)| name.trim().to_owned())
            })
            .collect();
        for name in listeners.keys() {
            assert!(
                protocol_map.contains(name),
                "services.{broker}: listener {name} is missing from KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"
            );
        }
        let controller_name = get("KAFKA_CONTROLLER_LISTENER_NAMES");
        let inter_broker = get("KAFKA_INTER_BROKER_LISTENER_NAME");
        let controller_port = listeners
            .get(&controller_name)
            .unwrap_or_else(|| panic!("services.{broker}: no {controller_name} listener"))
            .1;

        // This node's voter entry: id@host:controller_port, host = this service.
        let voters_line = get("KAFKA_CONTROLLER_QUORUM_VOTERS");
        let own_voter = format!("{node_id}@{broker}:{controller_port}");
        assert!(
            voters_line.split(',').any(|v| v.trim() == own_voter),
            "services.{broker}: KAFKA_CONTROLLER_QUORUM_VOTERS `{voters_line}` must contain `{own_voter}`"
        );

        // Inter-broker listener: advertised as this service's name, same port as bound.
        let (host, port) = advertised
            .get(&inter_broker)
            .unwrap_or_else(|| panic!("services.{broker}: {inter_broker} is not advertised"));
        assert_eq!(
            host, broker,
            "services.{broker}: the {inter_broker} listener must be advertised as {broker}"
        );
        assert_eq!(
            Some(*port),
            listeners.get(&inter_broker).map(|l| l.1),
            "services.{broker}: {inter_broker} advertised and bound ports differ"
        );
        internal_addresses.insert(format!("{host}:{port}"));

        // Every other advertised listener is for the host: published 1:1 on loopback.
        let published = compose.ports(broker);
        for (name, (host, port)) in advertised.iter().filter(|(n, _)| **n != inter_broker) {
            assert!(
                host == "127.0.0.1" || host == "localhost",
                "services.{broker}: external listener {name} must be advertised on 127.0.0.1/localhost, not {host}"
            );
            assert_eq!(
                listeners.get(name).map(|l| l.1),
                Some(*port),
                "services.{broker}: {name} advertised port differs from its bound port"
            );
            assert!(
                published
                    .iter()
                    .any(|p| p.container_port == *port && p.host_port == Some(*port)),
                "services.{broker}: external listener port {port} must be published as {port}:{port}"
            );
            assert!(
                external_ports.insert(*port),
                "external listener port {port} is used by two brokers"
            );
        }

        // Replication settings fit a three-node cluster.
        let number = |key: &str| -> Option<u32> {
            env.get(key).map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("services.{broker}.{key} must be a number"))
            })
        };
        let brokers = BROKERS.len() as u32;
        for key in [
            "KAFKA_DEFAULT_REPLICATION_FACTOR",
            "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
            "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        ] {
            let rf = number(key).unwrap_or_else(|| panic!("services.{broker} must set {key}"));
            assert!(
                (1..=brokers).contains(&rf),
                "services.{broker}.{key} = {rf} must be between 1 and the broker count {brokers}"
            );
        }
        let rf = number("KAFKA_DEFAULT_REPLICATION_FACTOR").unwrap_or(1);
        if let Some(min_isr) = number("KAFKA_MIN_INSYNC_REPLICAS") {
            assert!(
                min_isr < rf || rf == 1,
                "services.{broker}: min.insync.replicas {min_isr} must be below the replication factor {rf}, \
                 or losing one broker stops acks=all producers"
            );
        }
        assert!(
            compose.has_healthcheck(broker),
            "services.{broker} needs a healthcheck (products-service waits for it)"
        );
    }

    assert_eq!(
        voters_lines.len(),
        1,
        "all brokers must share one KAFKA_CONTROLLER_QUORUM_VOTERS: {voters_lines:?}"
    );
    assert_eq!(
        cluster_ids.len(),
        1,
        "all brokers must share one CLUSTER_ID: {cluster_ids:?}"
    );
    let voters_line = voters_lines.into_iter().next().unwrap_or_default();
    let voter_ids: BTreeSet<u32> = voters_line
        .split(',')
        .map(|voter| {
            voter
                .trim()
                .split_once('@')
                .and_then(|(id, _)| id.parse().ok())
                .unwrap_or_else(|| panic!("bad voter `{voter}` in KAFKA_CONTROLLER_QUORUM_VOTERS"))
        })
        .collect();
    assert_eq!(
        voter_ids.len(),
        3,
        "the KRaft quorum must have 3 voters: {voters_line}"
    );
    assert_eq!(
        voter_ids,
        node_ids.keys().copied().collect::<BTreeSet<_>>(),
        "the voters must be exactly the brokers' node ids"
    );

    // The service bootstraps from every broker's internal listener.
    let service_brokers: BTreeSet<String> = compose
        .env_var(SERVICE, "KAFKA_BROKERS")
        .split(',')
        .map(|b| b.trim().to_owned())
        .collect();
    assert_eq!(
        service_brokers, internal_addresses,
        "services.{SERVICE}.environment.KAFKA_BROKERS must list every broker's internal listener"
    );
}

#[test]
fn kafka_init_creates_the_service_topics_on_every_broker() {
    let compose = Compose::load();
    let env = compose.env("kafka-init");
    let topics: BTreeSet<String> = env
        .get("TOPICS")
        .expect("services.kafka-init.environment must set TOPICS")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    for topic in DEFAULT_TOPICS {
        assert!(
            topics.contains(*topic),
            "kafka-init must create topic {topic} (TOPICS = {topics:?})"
        );
    }
    let rf: usize = env
        .get("REPLICATION_FACTOR")
        .and_then(|v| v.parse().ok())
        .expect("services.kafka-init.environment.REPLICATION_FACTOR must be a number");
    assert!(
        (1..=BROKERS.len()).contains(&rf),
        "kafka-init replication factor {rf} must not exceed the {} brokers",
        BROKERS.len()
    );
    if let Some(min_isr) = env
        .get("MIN_INSYNC_REPLICAS")
        .and_then(|v| v.parse::<usize>().ok())
    {
        assert!(
            min_isr <= rf,
            "kafka-init: min.insync.replicas {min_isr} > replication factor {rf}"
        );
    }
    // The service creates a missing topic the same way.
    let service_env = compose.env(SERVICE);
    for (service_key, init_key) in [
        ("APP__KAFKA__REPLICATION_FACTOR", "REPLICATION_FACTOR"),
        ("APP__KAFKA__MIN_INSYNC_REPLICAS", "MIN_INSYNC_REPLICAS"),
    ] {
        assert_eq!(
            service_env.get(service_key),
            env.get(init_key),
            "services.{SERVICE}.environment.{service_key} must match kafka-init's {init_key}"
        );
    }
    let bootstrap: BTreeSet<String> = env
        .get("BOOTSTRAP_SERVERS")
        .expect("services.kafka-init.environment must set BOOTSTRAP_SERVERS")
        .split(',')
        .map(|b| b.trim().to_owned())
        .collect();
    let service_brokers: BTreeSet<String> = compose
        .env_var(SERVICE, "KAFKA_BROKERS")
        .split(',')
        .map(|b| b.trim().to_owned())
        .collect();
    assert_eq!(
        bootstrap, service_brokers,
        "kafka-init and {SERVICE} must use the same brokers"
    );
    let depends = compose.depends_on("kafka-init");
    for broker in BROKERS {
        assert_eq!(
            depends.get(*broker).map(String::as_str),
            Some("service_healthy"),
            "kafka-init must wait for {broker} to be healthy"
        );
    }
    let script = str_list(compose.service("kafka-init").get("command"), "command").join("\n");
    assert!(
        script.contains("--if-not-exists"),
        "kafka-init must create topics with --if-not-exists so restarts succeed"
    );
}

#[test]
fn service_waits_for_healthy_dependencies() {
    let compose = Compose::load();
    let depends = compose.depends_on(SERVICE);
    for dependency in ["mongodb", "redis", "kafka1", "kafka2", "kafka3"] {
        assert_eq!(
            depends.get(dependency).map(String::as_str),
            Some("service_healthy"),
            "services.{SERVICE}.depends_on.{dependency} must use condition service_healthy"
        );
        assert!(
            compose.has_healthcheck(dependency),
            "services.{dependency} needs a healthcheck for service_healthy to work"
        );
    }
    assert_eq!(
        depends.get("kafka-init").map(String::as_str),
        Some("service_completed_successfully"),
        "services.{SERVICE} must start after kafka-init has created the topics"
    );
    for name in compose.service_names() {
        for (dependency, condition) in compose.depends_on(&name) {
            assert!(
                compose.service_names().contains(&dependency),
                "services.{name}.depends_on names unknown service {dependency}"
            );
            if condition == "service_healthy" {
                assert!(
                    compose.has_healthcheck(&dependency),
                    "services.{name} waits for {dependency} to be healthy, but it has no healthcheck"
                );
            }
        }
    }
}

#[test]
fn service_reaches_mongodb_and_redis_by_service_name() {
    let compose = Compose::load();
    let config = default_config();

    let mongo_uri = compose.env_var(SERVICE, "MONGO_URI");
    let (host, port) = host_and_port(&mongo_uri);
    assert_eq!(
        host, "mongodb",
        "MONGO_URI `{mongo_uri}` must point at the mongodb service"
    );
    assert_eq!(
        port, 27017,
        "MONGO_URI `{mongo_uri}` must use MongoDB's port"
    );
    assert!(
        compose
            .service("mongodb")
            .get("image")
            .and_then(Value::as_str)
            .is_some_and(|image| image.starts_with("mongo:7")),
        "the mongodb service must run MongoDB 7 (mongo:7)"
    );
    let default_db = config
        .get("mongo")
        .and_then(|m| m.get("database"))
        .and_then(Value::as_str)
        .unwrap_or("products");
    let db = compose
        .env(SERVICE)
        .get("MONGO_DB")
        .cloned()
        .unwrap_or_else(|| default_db.to_owned());
    let init = compose.host_path("mongodb", "/docker-entrypoint-initdb.d/10-init-indexes.js");
    let script = read(&init);
    assert!(
        script.contains(&format!("\"{db}\"")),
        "{} must create the indexes in database {db}",
        init.display()
    );
    for index in MONGO_INDEXES {
        assert!(
            script.contains(index),
            "{} must create index {index} (same name as the service creates at startup)",
            init.display()
        );
    }

    let redis_url = compose.env_var(SERVICE, "REDIS_URL");
    let (host, port) = host_and_port(&redis_url);
    assert_eq!(
        host, "redis",
        "REDIS_URL `{redis_url}` must point at the redis service"
    );
    assert_eq!(port, 6379, "REDIS_URL `{redis_url}` must use Redis's port");
}

#[test]
fn dockerfile_matches_the_pinned_toolchain_and_runs_unprivileged() {
    let root = repo_root();
    let toolchain = read(&root.join("rust-toolchain.toml"));
    let channel = toolchain
        .lines()
        .find_map(|l| l.trim().strip_prefix("channel")?.trim().strip_prefix('='))
        .map(|value| value.trim().trim_matches('"').to_owned())
        .expect("rust-toolchain.toml has no channel");

    let dockerfile = read(&root.join("Dockerfile"));
    let rust_version = dockerfile
        .lines()
        .find_map(|l| l.trim().strip_prefix("ARG RUST_VERSION="))
        .map(|v| v.trim().to_owned())
        .expect("Dockerfile must declare ARG RUST_VERSION=<toolchain>");
    assert_eq!(
        rust_version, channel,
        "Dockerfile RUST_VERSION must equal the channel pinned in rust-toolchain.toml"
    );

    // The last USER (the runtime stage's) must not be root.
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("USER "))
        .map(|u| u.trim().to_owned())
        .expect("Dockerfile must switch to a non-root USER");
    let name = user.split(':').next().unwrap_or(&user);
    assert!(
        name != "root" && name != "0",
        "the runtime image must run as a non-root user, not {user}"
    );
    assert!(
        dockerfile
            .lines()
            .any(|l| l.trim().starts_with("ENTRYPOINT") && l.contains("products-service")),
        "Dockerfile ENTRYPOINT must run the products-service binary"
    );
}
