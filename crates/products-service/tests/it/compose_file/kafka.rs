//! The three Kafka brokers form one KRaft quorum the service bootstraps
//! from, and `kafka-init` creates the service's topics as the service would.
use std::collections::{BTreeMap, BTreeSet};

use super::{comma_set, model::Compose, port_number, str_list, BROKERS, DEFAULT_TOPICS, SERVICE};

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
        let roles = comma_set(&get("KAFKA_PROCESS_ROLES"));
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
    let service_brokers = compose.env_set(SERVICE, "KAFKA_BROKERS");
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
    let bootstrap = compose.env_set("kafka-init", "BOOTSTRAP_SERVERS");
    assert_eq!(
        bootstrap,
        compose.env_set(SERVICE, "KAFKA_BROKERS"),
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
