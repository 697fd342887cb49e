//! Metrics, dashboards and traces: Prometheus scrapes the service and loads
//! its rules, Grafana provisions the datasource and dashboards that chart
//! the service's metrics, the service exports traces to Jaeger.
use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value as Json;
use serde_yaml::Value;

use crate::common::all_panels;

use super::{
    files_in, host_and_port, model::Compose, read, scalar, socket_addr, str_list, yaml_entries_in,
    yaml_file, DASHBOARD_METRICS, GRAFANA_DASHBOARD_PROVIDERS, GRAFANA_DATASOURCES,
    PROMETHEUS_DEFAULT_CONFIG, SERVICE,
};

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
    let datasources = yaml_entries_in(&datasource_dir, "datasources");
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
    for (file, provider) in yaml_entries_in(&provider_dir, "providers") {
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
    assert!(
        !dashboard_files.is_empty(),
        "{} must load at least one JSON dashboard",
        provider_dir.display()
    );

    let mut exprs = Vec::new();
    let mut uids = BTreeSet::new();
    for file in &dashboard_files {
        let shown = file.display();
        let dashboard: Json = serde_json::from_str(&read(file))
            .unwrap_or_else(|err| panic!("{shown} is not valid JSON: {err}"));
        if let Some(uid) = dashboard.get("uid").and_then(Json::as_str) {
            assert!(
                uids.insert(uid.to_owned()),
                "{shown}: dashboard uid {uid} is used twice"
            );
        }
        let panels = all_panels(&dashboard);
        assert!(!panels.is_empty(), "{shown} has no panels");
        let mut ids = BTreeSet::new();
        for panel in panels {
            let title = panel
                .get("title")
                .and_then(Json::as_str)
                .unwrap_or("<untitled>");
            if let Some(id) = panel.get("id").and_then(Json::as_u64) {
                assert!(ids.insert(id), "{shown}: panel id {id} is used twice");
            }
            let kind = panel.get("type").and_then(Json::as_str).unwrap_or("");
            if matches!(kind, "row" | "text" | "news" | "dashlist") {
                continue;
            }
            let targets = panel
                .get("targets")
                .and_then(Json::as_array)
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| panic!("{shown}: panel `{title}` has no targets"));
            for target in targets {
                let expr = target
                    .get("expr")
                    .and_then(Json::as_str)
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
                if let Some(uid) = datasource.get("uid").and_then(Json::as_str) {
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
