//! The consumer group when members come and go, against the real local
//! Kafka: cooperative (incremental) rebalancing moves only the partitions
//! that must move and settles — no endless rebalancing from commits made
//! during one (librdkafka#4059) — with every command applied and every
//! offset committed; and a revocation that waits for a worker stuck on the
//! database never stalls the service's HTTP.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use crate::common::{
    eventually,
    kafka::{lag, produce, producer, read_all},
    mongo::product_count,
    processes::PrivateFerretDb,
    products::kafka_create_payload,
    replica::{wait_group_settled, Replica},
    spawn_app_with, test_settings, unique, KAFKA,
};
use mongodb::bson::oid::ObjectId;
use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    ClientConfig,
};

/// Produces creates to `topic` until `stop`, about 100 a second; the count.
fn produce_steadily(topic: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let producer = producer(KAFKA);
        let mut sent = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let id = ObjectId::new().to_hex();
            let payload = kafka_create_payload(&id, &format!("Steady {sent}"));
            produce(&producer, &topic, Some(&id), &payload, &[]).await;
            sent += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        sent
    })
}

async fn metric_of(http: &reqwest::Client, replicas: &[&Replica], name: &str) -> Vec<f64> {
    let mut values = Vec::new();
    for replica in replicas {
        values.push(replica.metric(http, name).await);
    }
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_rebalances_move_only_what_must_move_and_settle() {
    let mut settings = test_settings();
    settings.kafka.partitions = 12; // the default: 24 partitions in all
    let all_partitions = 24.0;
    let log_dir = std::env::temp_dir().join(unique("rebalance"));
    std::fs::create_dir_all(&log_dir).unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // Dynamic membership: every join and leave rebalances.
    let env = || vec![];
    let mut a = Replica::start(0, &settings, &log_dir, env());
    a.wait_ready(&http).await;
    let mut b = Replica::start(1, &settings, &log_dir, env());
    b.wait_ready(&http).await;
    let stop = Arc::new(AtomicBool::new(false));
    let producing = produce_steadily(settings.kafka.topics.create.clone(), stop.clone());

    wait_group_settled(&http, &[&a, &b], Duration::from_secs(3)).await;
    let owned = metric_of(&http, &[&a, &b], "kafka_consumer_assigned_partitions").await;
    assert_eq!(owned.iter().sum::<f64>(), all_partitions, "{owned:?}");
    let revoked_before =
        metric_of(&http, &[&a, &b], "kafka_consumer_revoked_partitions_total").await;

    // A third member joins: it gets its share, and only that share was
    // revoked from the others (eager rebalancing revokes all 24).
    let mut c = Replica::start(2, &settings, &log_dir, env());
    c.wait_ready(&http).await;
    eventually(Duration::from_secs(60), || async {
        c.metric(&http, "kafka_consumer_assigned_partitions").await > 0.0
    })
    .await;
    wait_group_settled(&http, &[&a, &b, &c], Duration::from_secs(3)).await;
    let owned = metric_of(&http, &[&a, &b, &c], "kafka_consumer_assigned_partitions").await;
    assert_eq!(owned.iter().sum::<f64>(), all_partitions, "{owned:?}");
    let revoked_after =
        metric_of(&http, &[&a, &b], "kafka_consumer_revoked_partitions_total").await;
    let revoked: f64 = revoked_after
        .iter()
        .zip(&revoked_before)
        .map(|(after, before)| after - before)
        .sum();
    eprintln!(
        "rebalance: after the join, partitions owned {owned:?}; revoked from the others {revoked}"
    );
    assert!(
        revoked <= owned[2],
        "{revoked} partitions revoked from the others for {} that moved",
        owned[2]
    );

    // It leaves (SIGTERM: it commits and leaves the group); the others take
    // its partitions back and the group settles again.
    c.terminate().await;
    wait_group_settled(&http, &[&a, &b], Duration::from_secs(3)).await;
    eventually(Duration::from_secs(60), || async {
        metric_of(&http, &[&a, &b], "kafka_consumer_assigned_partitions")
            .await
            .iter()
            .sum::<f64>()
            == all_partitions
    })
    .await;

    // Every command applied, every offset committed, nothing dead-lettered.
    stop.store(true, Ordering::SeqCst);
    let sent = producing.await.unwrap();
    assert!(sent > 0);
    eventually(Duration::from_secs(60), || async {
        product_count(&settings).await == sent
    })
    .await;
    let (group, topic) = (
        settings.kafka.group_id.clone(),
        settings.kafka.topics.create.clone(),
    );
    eventually(Duration::from_secs(30), || {
        let (group, topic) = (group.clone(), topic.clone());
        async move {
            tokio::task::spawn_blocking(move || lag(KAFKA, &group, &topic))
                .await
                .unwrap()
                == 0
        }
    })
    .await;
    let dead_letter_topic = settings.kafka.topics.dead_letter.clone();
    let letters = tokio::task::spawn_blocking(move || read_all(KAFKA, &dead_letter_topic))
        .await
        .unwrap();
    assert!(letters.is_empty(), "{} dead letters", letters.len());
    let rebalances = metric_of(&http, &[&a, &b], "kafka_consumer_rebalances_total").await;
    eprintln!("rebalance: {sent} creates applied; rebalance events per replica {rebalances:?}");
    a.terminate().await;
    b.terminate().await;
    let _ = std::fs::remove_dir_all(&log_dir);
}

/// A group member that is not the service: joins `group` (cooperative, as
/// the service is), polls until `leave`, then closes. The partitions it got.
fn join_group(
    group: String,
    topics: Vec<String>,
    leave: Arc<AtomicBool>,
) -> thread::JoinHandle<usize> {
    thread::spawn(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", KAFKA)
            .set("group.id", &group)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).unwrap();
        let mut most = 0;
        while !leave.load(Ordering::SeqCst) {
            // Records it gets are not committed: the service re-reads them.
            let _ = consumer.poll(Duration::from_millis(100));
            most = most.max(consumer.assignment().map_or(0, |a| a.count()));
        }
        most
    })
}

/// Revocation waits for the revoked workers' step in hand; here that step
/// is a write to a frozen database (no answer until `apply_timeout_ms`).
/// The wait holds the consumer's own thread only: on a one-thread runtime
/// (this test's), HTTP keeps answering throughout.
#[tokio::test]
async fn a_revocation_waiting_for_a_stuck_worker_does_not_stall_http() {
    let db = PrivateFerretDb::start().await;
    let mut settings = test_settings();
    settings.mongo.uri = db.uri().into();
    settings.kafka.consumer.apply_timeout_ms = 3000;
    // Almost always inside an attempt, not between two.
    settings.kafka.consumer.retry_initial_backoff_ms = 1;
    settings.kafka.consumer.retry_max_backoff_ms = 5;
    let app = spawn_app_with(settings.clone()).await;
    eventually(Duration::from_secs(30), || async {
        app.client
            .get(app.url("/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;

    // Every partition's worker gets a create, stuck on the frozen database.
    db.freeze(true);
    let producer = producer(KAFKA);
    let mut ids = Vec::new();
    for n in 0..12 {
        let id = ObjectId::new().to_hex();
        let payload = kafka_create_payload(&id, &format!("Stuck {n}"));
        produce(
            &producer,
            &settings.kafka.topics.create,
            Some(&id),
            &payload,
            &[],
        )
        .await;
        ids.push(id);
    }
    // The first attempts time out: the pipeline reports itself blocked.
    eventually(Duration::from_secs(30), || async {
        app.client
            .get(app.url("/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE)
    })
    .await;

    // A second member joins: some partitions are revoked from the service,
    // whose workers are stuck in a write. Meanwhile /health is probed.
    let leave = Arc::new(AtomicBool::new(false));
    let member = join_group(
        settings.kafka.group_id.clone(),
        vec![
            settings.kafka.topics.create.clone(),
            settings.kafka.topics.update.clone(),
        ],
        leave.clone(),
    );
    let started = Instant::now();
    let mut last_answer = Instant::now();
    let mut worst_gap = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(8) {
        let answered = app
            .client
            .get(app.url("/health"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        assert!(answered, "/health did not answer");
        worst_gap = worst_gap.max(last_answer.elapsed());
        last_answer = Instant::now();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    leave.store(true, Ordering::SeqCst);
    let member_got = tokio::task::spawn_blocking(move || member.join().unwrap())
        .await
        .unwrap();
    assert!(member_got > 0, "the second member never got a partition");
    assert!(
        worst_gap < Duration::from_secs(1),
        "HTTP stalled {worst_gap:?} during the revocation"
    );

    // The database comes back: every create is applied, none lost.
    db.freeze(false);
    eventually(Duration::from_secs(60), || async {
        product_count(&settings).await == ids.len() as u64
    })
    .await;
    app.stop().await.unwrap();
}
