//! The services themselves: every one declared, mounts and build context
//! present, ports published on loopback, start order, addresses by service
//! name, and the image the service is built into.
use std::collections::BTreeSet;

use serde_yaml::Value;

use super::{
    default_config, default_port, host_and_port, model::Compose, port_number, read, repo_root,
    scalar, socket_addr, MONGO_INDEXES, REQUIRED_SERVICES, SERVICE,
};

/// The service's listeners: environment variable, section of `config/default.yaml`.
const LISTENERS: [(&str, &str); 3] = [
    ("HTTP_ADDR", "http"),
    ("GRPC_ADDR", "grpc"),
    ("METRICS_ADDR", "metrics"),
];

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

    for (var, section) in LISTENERS {
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
    for (_, section) in LISTENERS {
        let port = default_port(&config, section);
        assert!(
            exposed.contains(&port),
            "Dockerfile must EXPOSE {port} ({section}.addr); exposes {exposed:?}"
        );
    }
    for (var, section) in LISTENERS {
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
