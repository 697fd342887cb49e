//! `docker-compose.yml` as the checks read it: services, their environment,
//! published ports, mounts, dependencies and healthchecks.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
};

use serde_yaml::{Mapping, Value};

use super::{comma_set, port_number, repo_root, scalar, str_list, yaml_file};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub host_ip: Option<String>,
    pub host_port: Option<u16>,
    pub container_port: u16,
}

#[derive(Debug, Clone)]
pub struct Mount {
    pub source: String,
    pub target: String,
}

impl Mount {
    pub fn is_relative_bind(&self) -> bool {
        self.source.starts_with("./") || self.source.starts_with("../")
    }
    pub fn is_absolute_bind(&self) -> bool {
        self.source.starts_with('/')
    }
}

pub struct Compose {
    pub root: PathBuf,
    pub doc: Value,
}

impl Compose {
    pub fn load() -> Self {
        let root = repo_root();
        let doc = yaml_file(&root.join("docker-compose.yml"));
        Self { root, doc }
    }

    pub fn services(&self) -> &Mapping {
        self.doc
            .get("services")
            .and_then(Value::as_mapping)
            .expect("docker-compose.yml has no `services` mapping")
    }

    pub fn service_names(&self) -> Vec<String> {
        self.services()
            .keys()
            .map(|k| scalar(k, "service name"))
            .collect()
    }

    pub fn service(&self, name: &str) -> &Value {
        self.services()
            .get(name)
            .unwrap_or_else(|| panic!("docker-compose.yml has no service `{name}`"))
    }

    pub fn env(&self, name: &str) -> BTreeMap<String, String> {
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

    pub fn env_var(&self, name: &str, key: &str) -> String {
        self.env(name)
            .remove(key)
            .unwrap_or_else(|| panic!("services.{name}.environment must set {key}"))
    }

    /// A comma-separated environment variable of service `name` as a set.
    pub fn env_set(&self, name: &str, key: &str) -> BTreeSet<String> {
        comma_set(&self.env_var(name, key))
    }

    pub fn ports(&self, name: &str) -> Vec<Published> {
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
    pub fn container_ports(&self, name: &str) -> BTreeSet<u16> {
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

    pub fn mounts(&self, name: &str) -> Vec<Mount> {
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
    pub fn host_path(&self, name: &str, container_path: &str) -> PathBuf {
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

    pub fn depends_on(&self, name: &str) -> BTreeMap<String, String> {
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

    pub fn has_healthcheck(&self, name: &str) -> bool {
        self.service(name).get("healthcheck").is_some_and(|h| {
            h.get("test").is_some() && h.get("disable") != Some(&Value::Bool(true))
        })
    }
}
