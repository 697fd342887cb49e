//! Search from the in-memory index (docs/SEARCH.md), against the real
//! stack: changes are searchable within the freshness bound, the index
//! answers as the database does (literal, case insensitive, Unicode simple
//! folding), a restarted replica rebuilds the same index, two replicas agree
//! after a burst of writes, search keeps answering through a broker
//! outage while `/ready` says the index is stale, and partitions added to
//! the events topic are read without a restart.

use std::time::{Duration, Instant};

use futures::future::join_all;
use mongodb::bson::oid::ObjectId;
use products_service::api::grpc::pb::{
    products_service_client::ProductsServiceClient, CreateReq, DeleteReq, UpdateReq,
};
use proptest::{
    strategy::{Strategy, ValueTree},
    test_runner::TestRunner,
};
use serde_json::Value;
use tonic::transport::Channel;

use crate::common::{
    eventually,
    grpc::create_req,
    kafka::{produce, producer},
    metric_sum,
    processes::PrivateKafka,
    products::CATEGORY,
    replica::Replica,
    spawn_app_with, test_settings, unique, KAFKA,
};

/// The contract: a stored change is searchable within 1 s.
const FRESHNESS: Duration = Duration::from_secs(1);

fn update_of(id: &str, create: CreateReq) -> UpdateReq {
    UpdateReq {
        product_id: id.to_owned(),
        category_id: CATEGORY.to_owned(),
        name: create.name,
        description: create.description,
        price: create.price,
        image_url: create.image_url,
        photos: create.photos,
        quantity: create.quantity,
        rating: create.rating,
    }
}

fn product(name: &str, description: &str) -> CreateReq {
    CreateReq {
        description: description.to_owned(),
        ..create_req(name)
    }
}

async fn create(grpc: &mut ProductsServiceClient<Channel>, request: CreateReq) -> String {
    grpc.create(request)
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap()
        .product_id
}

/// `GET {base}/api/v1/products/search?search={text}&size=100` as
/// (totalCount, ids in page order).
async fn search_ids(http: &reqwest::Client, base: &str, text: &str) -> (u64, Vec<String>) {
    let response = http
        .get(format!("{base}/api/v1/products/search"))
        .query(&[("search", text), ("size", "100")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "search {text:?}");
    let page: Value = response.json().await.unwrap();
    let ids = page["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["productId"].as_str().unwrap().to_owned())
        .collect();
    (page["totalCount"].as_u64().unwrap(), ids)
}

/// How long until `condition` holds of the search for `text`; fails past
/// ten seconds.
async fn time_until(
    http: &reqwest::Client,
    base: &str,
    text: &str,
    condition: impl Fn(&(u64, Vec<String>)) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let answer = search_ids(http, base, text).await;
        if condition(&answer) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "search {text:?}: still {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_shows_up_changes_and_disappears_within_the_freshness_bound() {
    let app = spawn_app_with(test_settings()).await;
    let http = &app.client;
    let mut grpc = app.grpc_client().await;
    let tag = unique("fresh").replace('_', "");
    // Ready means rebuilt: from then on the index answers.
    app.wait_search_index_ready().await;

    let id = create(&mut grpc, product(&format!("Kettle {tag}"), "Steel")).await;
    let appeared = time_until(http, &app.http, &tag, |(total, ids)| {
        *total == 1 && ids.as_slice() == std::slice::from_ref(&id)
    })
    .await;

    let renamed = format!("Teapot {tag}");
    grpc.update(update_of(&id, product(&renamed, "Porcelain")))
        .await
        .unwrap();
    let changed = time_until(http, &app.http, "porcelain", |(total, _)| *total == 1).await;
    assert_eq!(search_ids(http, &app.http, "kettle").await.0, 0);
    assert_eq!(search_ids(http, &app.http, "STEEL").await.0, 0);

    grpc.delete(DeleteReq {
        product_id: id.clone(),
    })
    .await
    .unwrap();
    let gone = time_until(http, &app.http, &tag, |(total, _)| *total == 0).await;
    for (what, took) in [
        ("created", appeared),
        ("renamed", changed),
        ("deleted", gone),
    ] {
        assert!(took <= FRESHNESS, "{what}: searchable after {took:?}");
    }
    app.stop().await.unwrap();
}

/// Letters whose case forms differ (ASCII, accented, Greek with final
/// sigma, sharp s, the Kelvin sign and long s that fold with k and s) and
/// regex metacharacters.
const ALPHABET: &str = "[abkKsS .*()\\[\\]+?|^$\\\\{}ſ\u{212A}éÉσςΣßẞ]";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_answers_random_queries_as_the_database_does() {
    let settings = test_settings();
    let app = spawn_app_with(settings.clone()).await;
    // The same database, searched by scanning it: the reference answer.
    let mut scanning = settings.clone();
    scanning.search.index = false;
    let database = spawn_app_with(scanning).await;
    let mut grpc = app.grpc_client().await;

    let mut runner = TestRunner::deterministic();
    let text = format!("{ALPHABET}{{1,10}}");
    let catalog = proptest::collection::vec((text.as_str(), text.as_str()), 40)
        .new_tree(&mut runner)
        .unwrap()
        .current();
    let mut ids = Vec::new();
    for (name, description) in &catalog {
        // Names and descriptions must hold a letter (validation).
        ids.push(
            create(
                &mut grpc,
                product(&format!("Pro{name}"), &format!("Dol{description}")),
            )
            .await,
        );
    }
    // Some changes and deletes, so the index is more than its first state.
    for (i, id) in ids.iter().enumerate().step_by(5) {
        let (name, description) = &catalog[(i + 1) % catalog.len()];
        grpc.update(update_of(
            id,
            product(&format!("Qui{name}"), &format!("Dol{description}")),
        ))
        .await
        .unwrap();
    }
    for id in ids.iter().skip(3).step_by(7) {
        grpc.delete(DeleteReq {
            product_id: id.clone(),
        })
        .await
        .unwrap();
    }
    let live = ids.len() - ids.iter().skip(3).step_by(7).count();
    app.wait_for_search("", live as u64).await;

    let query = format!("{ALPHABET}{{1,4}}");
    let queries = proptest::collection::vec(query.as_str(), 60)
        .new_tree(&mut runner)
        .unwrap()
        .current();
    let mut matched = 0;
    for query in queries
        .iter()
        .chain(&["ss".to_owned(), "Σ".to_owned(), "k".to_owned()])
    {
        let from_database = search_ids(&app.client, &database.http, query).await;
        // The database's answer no longer changes; the index may still be
        // applying the last writes, so it has the freshness bound (and the
        // test's margin) to give the same answer, and never a different one.
        let started = Instant::now();
        loop {
            let from_index = search_ids(&app.client, &app.http, query).await;
            if from_index == from_database {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "query {query:?}: index {from_index:?}, database {from_database:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        matched += usize::from(from_database.0 > 0);
    }
    // The comparison means something only if queries found products.
    assert!(matched >= 10, "only {matched} queries matched anything");
    database.stop().await.unwrap();
    app.stop().await.unwrap();
}

/// Writes a burst through `grpc`: creates, renames, deletes; the ids left.
async fn burst(grpc: &mut ProductsServiceClient<Channel>, tag: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(create(grpc, product(&format!("{tag} item {i}"), "burst")).await);
    }
    for id in ids.iter().step_by(3) {
        grpc.update(update_of(
            id,
            product(&format!("{tag} renamed {id}"), "burst"),
        ))
        .await
        .unwrap();
    }
    let deleted: Vec<String> = ids.iter().skip(1).step_by(4).cloned().collect();
    for id in &deleted {
        grpc.delete(DeleteReq {
            product_id: id.clone(),
        })
        .await
        .unwrap();
    }
    ids.retain(|id| !deleted.contains(id));
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_agree_after_a_burst_and_a_restarted_one_rebuilds_the_same_index() {
    let settings = test_settings();
    let logs = tempfile::tempdir().unwrap();
    let mut replicas = [
        Replica::start(0, &settings, logs.path(), vec![]),
        Replica::start(1, &settings, logs.path(), vec![]),
    ];
    let http = reqwest::Client::new();
    for replica in &replicas {
        replica.wait_ready(&http).await;
    }
    let tag = unique("burst").replace('_', "");
    // Writes through both replicas at once.
    let writers = replicas.iter().enumerate().map(|(i, replica)| {
        let url = format!("http://{}", replica.grpc);
        let tag = format!("{tag} r{i}");
        async move {
            let mut grpc = ProductsServiceClient::connect(url).await.unwrap();
            burst(&mut grpc, &tag, 60).await
        }
    });
    let live: usize = join_all(writers).await.iter().map(Vec::len).sum();
    let queries = [
        tag.clone(),
        format!("{tag} r0"),
        "RENAMED".to_owned(),
        "item 1".to_owned(),
    ];
    let answers = |replica: &Replica| {
        let base = replica.url("");
        let http = http.clone();
        let queries = queries.clone();
        async move {
            let mut answers = Vec::new();
            for query in &queries {
                answers.push(search_ids(&http, &base, query).await);
            }
            answers
        }
    };
    let started = Instant::now();
    let agreed = loop {
        let (first, second) = (answers(&replicas[0]).await, answers(&replicas[1]).await);
        if first == second && first[0].0 == live as u64 {
            break first;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "replicas differ: {first:?} / {second:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(agreed[2].0 > 0 && agreed[3].0 > 0, "{agreed:?}");

    // A restarted replica reads the topic again and is ready only once it
    // has: it answers the same at once.
    replicas[1].kill();
    replicas[1].spawn(&settings);
    replicas[1].wait_ready(&http).await;
    assert_eq!(answers(&replicas[1]).await, agreed);
    eventually(Duration::from_secs(5), || async {
        replicas[1].metric(&http, "search_index_products").await >= live as f64
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_events_topic_fills_the_index_from_the_database() {
    let settings = test_settings();
    let mut writer = settings.clone();
    writer.events.enabled = false;
    // Products written with events off: they are only in the database.
    let before = spawn_app_with(writer).await;
    let mut grpc = before.grpc_client().await;
    let tag = unique("old").replace('_', "");
    for i in 0..5 {
        create(
            &mut grpc,
            product(&format!("{tag} {i}"), "from before events"),
        )
        .await;
    }
    before.stop().await.unwrap();

    let app = spawn_app_with(settings).await;
    app.wait_for_search(&format!("search={tag}"), 5).await;
    app.wait_search_index_ready().await;
    let mut grpc = app.grpc_client().await;
    create(&mut grpc, product(&format!("{tag} new"), "after")).await;
    app.wait_for_search(&format!("search={tag}"), 6).await;
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_answers_through_a_broker_outage_and_ready_says_it_is_stale() {
    let mut broker = PrivateKafka::start().await;
    let mut settings = test_settings();
    settings.kafka.brokers = broker.brokers();
    settings.search.stale_after_ms = 3000;
    let app = spawn_app_with(settings).await;
    let mut grpc = app.grpc_client().await;
    let tag = unique("outage").replace('_', "");
    app.wait_search_index_ready().await;
    create(&mut grpc, product(&format!("{tag} before"), "outage test")).await;
    app.wait_for_search(&format!("search={tag}"), 1).await;

    broker.kill();
    // Stored while the broker is away: not searchable until it is back,
    // and the index says how stale it may be.
    create(&mut grpc, product(&format!("{tag} during"), "outage test")).await;
    eventually(Duration::from_secs(30), || async {
        let ready = app.get_json("/ready").await;
        ready["checks"]["search_index"] == "degraded"
            && ready["details"]["search_index"]
                .as_str()
                .is_some_and(|d| d.contains("last known complete"))
    })
    .await;
    let (total, _) = search_ids(&app.client, &app.http, &tag).await;
    assert_eq!(total, 1, "search answers from the last state");

    broker.restart().await;
    app.wait_for_search(&format!("search={tag}"), 2).await;
    eventually(Duration::from_secs(30), || async {
        let ready = app.get_json("/ready").await;
        ready["checks"]["search_index"] == "up" && ready["details"].get("search_index").is_none()
    })
    .await;
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_events_are_skipped_and_the_index_keeps_following() {
    let settings = test_settings();
    let app = spawn_app_with(settings.clone()).await;
    app.wait_search_index_ready().await;
    let invalid = || async {
        metric_sum(
            &app.metrics_text().await,
            "search_index_events_total{outcome=\"invalid\"}",
        )
    };
    let before = invalid().await;
    // Three records no relay writes: data that is no product, no revision,
    // a revision that is no number (a record without a key the compacted
    // topic refuses itself). The feed logs, counts and skips each.
    let kafka = producer(KAFKA);
    let topic = &settings.events.topic;
    let id = ObjectId::new().to_hex();
    produce(
        &kafka,
        topic,
        Some(&id),
        b"not json",
        &[("ce_productrev", "1")],
    )
    .await;
    produce(&kafka, topic, Some(&id), br#"{"productId":"x"}"#, &[]).await;
    produce(
        &kafka,
        topic,
        Some(&id),
        b"null",
        &[("ce_productrev", "one")],
    )
    .await;

    let tag = unique("poison").replace('_', "");
    let mut grpc = app.grpc_client().await;
    create(
        &mut grpc,
        product(&format!("{tag} after"), "after the poison"),
    )
    .await;
    app.wait_for_search(&format!("search={tag}"), 1).await;
    eventually(Duration::from_secs(10), || async {
        invalid().await >= before + 3.0
    })
    .await;
    app.wait_search_index_ready().await;
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_added_to_the_events_topic_are_read_without_a_restart() {
    use rdkafka::{
        admin::{AdminClient, AdminOptions, NewPartitions},
        client::DefaultClientContext,
        message::{Header, Headers, Message, OwnedHeaders},
        producer::FutureRecord,
        ClientConfig,
    };

    let settings = test_settings();
    let app = spawn_app_with(settings.clone()).await;
    app.wait_search_index_ready().await;
    let topic = settings.events.topic.clone();
    let tag = unique("moved").replace('_', "");
    let mut grpc = app.grpc_client().await;
    let id = create(&mut grpc, product(&format!("{tag} before"), "one")).await;
    app.wait_for_search(&format!("search={tag}%20before"), 1)
        .await;

    // The product's event as the relay wrote it: its state and headers.
    let event = crate::common::kafka::read_all_async(KAFKA, &topic)
        .await
        .into_iter()
        .find(|m| m.key() == Some(id.as_bytes()))
        .expect("the create's event");
    let rev: u64 = std::str::from_utf8(
        crate::common::kafka::header(&event, "ce_productrev").expect("ce_productrev"),
    )
    .unwrap()
    .parse()
    .unwrap();

    // Two more partitions, while the service runs.
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", KAFKA)
        .create()
        .unwrap();
    let total = usize::try_from(settings.events.partitions).unwrap() + 2;
    let results = admin
        .create_partitions(
            &[NewPartitions::new(&topic, total)],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    // The product's next change lands on a new partition (as a key can
    // after the partition count changes): the index must read it.
    let mut state: Value = serde_json::from_slice(event.payload().unwrap()).unwrap();
    state["name"] = Value::from(format!("{tag} after"));
    let payload = serde_json::to_vec(&state).unwrap();
    let next_rev = (rev + 1).to_string();
    let mut headers = OwnedHeaders::new();
    for h in event.headers().unwrap().iter() {
        let value = if h.key == "ce_productrev" {
            Some(next_rev.as_bytes())
        } else {
            h.value
        };
        headers = headers.insert(Header { key: h.key, value });
    }
    let new_partition = i32::try_from(total).unwrap() - 1;
    crate::common::kafka::send(
        &producer(KAFKA),
        FutureRecord::to(&topic)
            .partition(new_partition)
            .key(id.as_str())
            .payload(&payload)
            .headers(headers),
    )
    .await;

    // Read at the feed's next question (one a second), not at a restart.
    app.wait_for_search(&format!("search={tag}%20after"), 1)
        .await;
    let before: Value = app
        .search_products(&format!("search={tag}%20before"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        before["totalCount"], 0,
        "the older state is replaced: {before}"
    );
    app.wait_search_index_ready().await;
    app.stop().await.unwrap();
}
