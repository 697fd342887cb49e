//! Checks of the observability assets, no running stack needed:
//!
//! - `promtool check rules` / `promtool test rules` on `deploy/prometheus/alerts.yml`
//!   and its unit tests `alerts.test.yml`;
//! - `promtool check config` on both Prometheus configs;
//! - the Grafana dashboard: every panel queries the provisioned Prometheus
//!   datasource with a non-empty expression and only Grafana's built-in variables;
//! - every alert has unit tests where it fires and where it does not.
//!
//! Needs `promtool` (Debian package `prometheus`, installed by
//! `scripts/install-prereqs.sh`); set `PROMTOOL` to use another binary.
//!
//! ```sh
//! cargo test -p products-service --test it alert_rules::
//! ```

use std::{
    collections::BTreeSet,
    path::Path,
    process::{Command, Output},
};

use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

use crate::common::{all_panels, read, repo_root};

const ALERTS: &str = "deploy/prometheus/alerts.yml";
const ALERT_TESTS: &str = "deploy/prometheus/alerts.test.yml";
const LOCAL_CONFIG: &str = "deploy/prometheus/prometheus.local.yml";
const DOCKER_CONFIG: &str = "deploy/prometheus/prometheus.docker.yml";
const DASHBOARD: &str = "deploy/grafana/dashboards/products-service.json";
const DATASOURCE_UID: &str = "prometheus";
const SCRAPE_JOB: &str = "products-service";
/// Where tests register service instances on random ports (file_sd, relative
/// to the directory of prometheus.local.yml).
const FILE_SD_GLOB: &str = "../../.stack/prometheus-targets/*.json";
/// Variables Grafana itself defines; the dashboard must not need any other.
const GRAFANA_BUILTINS: &[&str] = &[
    "__rate_interval",
    "__interval",
    "__interval_ms",
    "__range",
    "__range_s",
    "__range_ms",
];

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn yaml(relative: &str) -> Yaml {
    let path = repo_root().join(relative);
    serde_yaml::from_str(&read(&path))
        .unwrap_or_else(|err| panic!("{} is not valid YAML: {err}", path.display()))
}

/// Runs promtool with `args` in `dir` and asserts that it succeeds, showing
/// its output otherwise.
fn promtool(dir: &Path, args: &[&str]) -> Output {
    let program = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".to_owned());
    let output = Command::new(&program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|err| {
            panic!(
                "cannot run `{program}` ({err}): install it with `apt-get install -y prometheus` \
                 or scripts/install-prereqs.sh, or point PROMTOOL at the binary"
            )
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "`{program} {}` in {} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        args.join(" "),
        dir.display(),
        output.status,
    );
    // Visible with --nocapture.
    println!("{program} {}:\n{stdout}{stderr}", args.join(" "));
    output
}

fn str_of<'a>(value: &'a Yaml, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Yaml::as_str)
}

fn seq<'a>(value: &'a Yaml, key: &str) -> &'a [Yaml] {
    value
        .get(key)
        .and_then(Yaml::as_sequence)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The `$name` / `${name}` / `[[name]]` variable references in a query.
fn variables(expr: &str) -> Vec<String> {
    let mut found = Vec::new();
    let bytes = expr.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            let braced = bytes.get(i + 1) == Some(&b'{');
            let start = if braced { i + 2 } else { i + 1 };
            let mut end = start;
            while end < bytes.len() && ident(bytes[end]) {
                end += 1;
            }
            // A bare `$` (a regex anchor in a PromQL string) is no variable.
            if end > start {
                found.push(expr[start..end].to_owned());
            }
            i = end.max(i + 1);
        } else if bytes[i..].starts_with(b"[[") {
            let end = expr[i..].find("]]").map_or(expr.len(), |e| i + e);
            found.push(expr[i + 2..end].to_owned());
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    found
}

// ---------------------------------------------------------------------------
// promtool
// ---------------------------------------------------------------------------

#[test]
fn alert_rules_pass_promtool_check() {
    let output = promtool(&repo_root(), &["check", "rules", ALERTS]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("SUCCESS"),
        "promtool check rules {ALERTS} did not report SUCCESS:\n{text}"
    );
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    let dir = repo_root().join("deploy/prometheus");
    let file = Path::new(ALERT_TESTS)
        .file_name()
        .and_then(|f| f.to_str())
        .expect("file name");
    promtool(&dir, &["test", "rules", file]);
}

#[test]
fn local_prometheus_config_passes_promtool_check() {
    // Full check: rule files are resolved relative to the config file.
    promtool(&repo_root(), &["check", "config", LOCAL_CONFIG]);
}

#[test]
fn docker_prometheus_config_passes_promtool_check() {
    // Its rule file is a container path (/etc/prometheus/alerts.yml, mounted by
    // docker-compose.yml; compose_file/ checks the mount), which does not
    // exist here: check the syntax only. The rules themselves are checked above.
    promtool(
        &repo_root(),
        &["check", "config", "--syntax-only", DOCKER_CONFIG],
    );
}

#[test]
fn local_prometheus_discovers_instances_from_the_stack_folder() {
    let config = yaml(LOCAL_CONFIG);
    let job = seq(&config, "scrape_configs")
        .iter()
        .find(|job| str_of(job, "job_name") == Some(SCRAPE_JOB))
        .unwrap_or_else(|| panic!("{LOCAL_CONFIG} has no job {SCRAPE_JOB}"));
    let static_targets: Vec<&str> = seq(job, "static_configs")
        .iter()
        .flat_map(|c| seq(c, "targets"))
        .filter_map(Yaml::as_str)
        .collect();
    assert!(
        static_targets.contains(&"127.0.0.1:7070"),
        "{LOCAL_CONFIG}: job {SCRAPE_JOB} must keep the static target 127.0.0.1:7070, has {static_targets:?}"
    );
    let files: Vec<&str> = seq(job, "file_sd_configs")
        .iter()
        .flat_map(|c| seq(c, "files"))
        .filter_map(Yaml::as_str)
        .collect();
    assert!(
        files.contains(&FILE_SD_GLOB),
        "{LOCAL_CONFIG}: job {SCRAPE_JOB} must read file_sd targets from {FILE_SD_GLOB}, has {files:?}"
    );
    let rule_files: Vec<&str> = seq(&config, "rule_files")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(
        rule_files.contains(&"alerts.yml"),
        "{LOCAL_CONFIG} must load alerts.yml, has {rule_files:?}"
    );
}

// ---------------------------------------------------------------------------
// Alerts and their unit tests
// ---------------------------------------------------------------------------

#[test]
fn every_alert_is_labelled_annotated_and_unit_tested() {
    let rules = yaml(ALERTS);
    let tests = yaml(ALERT_TESTS);

    let mut alerts = Vec::new();
    for group in seq(&rules, "groups") {
        for rule in seq(group, "rules") {
            let Some(name) = str_of(rule, "alert") else {
                continue; // a recording rule
            };
            alerts.push(name.to_owned());
            assert!(
                rule.get("labels")
                    .and_then(|l| str_of(l, "severity"))
                    .is_some_and(|s| !s.trim().is_empty()),
                "{ALERTS}: alert {name} needs a `severity` label"
            );
            for key in ["summary", "description"] {
                assert!(
                    rule.get("annotations")
                        .and_then(|a| str_of(a, key))
                        .is_some_and(|s| !s.trim().is_empty()),
                    "{ALERTS}: alert {name} needs a `{key}` annotation"
                );
            }
        }
    }
    assert!(!alerts.is_empty(), "{ALERTS} defines no alerts");
    let unique: BTreeSet<&String> = alerts.iter().collect();
    assert_eq!(
        unique.len(),
        alerts.len(),
        "{ALERTS}: duplicate alert names {alerts:?}"
    );

    let tested_file = seq(&tests, "rule_files")
        .iter()
        .filter_map(Yaml::as_str)
        .any(|f| f == "alerts.yml");
    assert!(
        tested_file,
        "{ALERT_TESTS} must list alerts.yml in rule_files"
    );

    // alertname -> (has a case where it fires, has a case where it must not)
    let mut fires = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for test in seq(&tests, "tests") {
        for case in seq(test, "alert_rule_test") {
            let Some(name) = str_of(case, "alertname") else {
                continue;
            };
            if seq(case, "exp_alerts").is_empty() {
                silent.insert(name.to_owned());
            } else {
                fires.insert(name.to_owned());
            }
        }
    }
    for alert in &alerts {
        assert!(
            fires.contains(alert),
            "{ALERT_TESTS} has no case where {alert} fires (non-empty exp_alerts)"
        );
        assert!(
            silent.contains(alert),
            "{ALERT_TESTS} has no case where {alert} must stay quiet (exp_alerts: [])"
        );
    }
    for tested in fires.union(&silent) {
        assert!(
            alerts.contains(tested),
            "{ALERT_TESTS} tests {tested}, which {ALERTS} does not define"
        );
    }
}

// ---------------------------------------------------------------------------
// Grafana dashboard
// ---------------------------------------------------------------------------

#[test]
fn dashboard_panels_query_prometheus_with_builtin_variables_only() {
    let path = repo_root().join(DASHBOARD);
    let shown = path.display();
    let dashboard: Json = serde_json::from_str(&read(&path))
        .unwrap_or_else(|err| panic!("{shown} is not valid JSON: {err}"));

    assert_eq!(
        dashboard.get("uid").and_then(Json::as_str),
        Some("products-service"),
        "{shown}: the dashboard uid is products-service"
    );
    let custom_variables: Vec<&str> = dashboard
        .get("templating")
        .and_then(|t| t.get("list"))
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("name").and_then(Json::as_str))
        .collect();
    assert!(
        custom_variables.is_empty(),
        "{shown}: no template variables (the dashboard must work on first run), has {custom_variables:?}"
    );

    let panels = all_panels(&dashboard);
    let mut ids = BTreeSet::new();
    let mut queried = 0;
    for panel in &panels {
        let title = panel
            .get("title")
            .and_then(Json::as_str)
            .unwrap_or("<untitled>");
        if let Some(id) = panel.get("id").and_then(Json::as_u64) {
            assert!(ids.insert(id), "{shown}: panel id {id} is used twice");
        }
        let kind = panel.get("type").and_then(Json::as_str).unwrap_or("");
        if kind == "row" {
            continue;
        }
        let panel_uid = panel
            .get("datasource")
            .and_then(|d| d.get("uid"))
            .and_then(Json::as_str);
        let targets = panel
            .get("targets")
            .and_then(Json::as_array)
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| panic!("{shown}: panel `{title}` ({kind}) has no targets"));
        for target in targets {
            let ref_id = target.get("refId").and_then(Json::as_str).unwrap_or("?");
            let expr = target
                .get("expr")
                .and_then(Json::as_str)
                .unwrap_or("")
                .trim();
            assert!(
                !expr.is_empty(),
                "{shown}: panel `{title}` target {ref_id} has no `expr`"
            );
            let uid = target
                .get("datasource")
                .and_then(|d| d.get("uid"))
                .and_then(Json::as_str)
                .or(panel_uid);
            assert_eq!(
                uid,
                Some(DATASOURCE_UID),
                "{shown}: panel `{title}` target {ref_id} must use the datasource uid `{DATASOURCE_UID}`"
            );
            for variable in variables(expr) {
                assert!(
                    GRAFANA_BUILTINS.contains(&variable.as_str()),
                    "{shown}: panel `{title}` target {ref_id} uses `{variable}`, not a Grafana \
                     built-in ({GRAFANA_BUILTINS:?}): {expr}"
                );
            }
            queried += 1;
        }
    }
    assert!(queried > 0, "{shown} has no queries");
}

#[test]
fn variable_scanner_finds_references() {
    assert_eq!(
        variables("rate(x[$__rate_interval]) + y{a=\"${job}\"} + [[old]]"),
        vec!["__rate_interval", "job", "old"]
    );
    assert!(variables("sum(rate(x{route=~\"/é.*$\"}[5m:1m]))").is_empty());
}
