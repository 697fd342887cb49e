//! Creates the command and dead-letter topics at startup when missing, with
//! the configured partitions, replication factor and `min.insync.replicas`
//! (and, for the dead-letter topic, a larger `max.message.bytes`), and the
//! compacted change-event topic. Existing topics keep their settings.

use std::time::Duration;

use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    types::RDKafkaErrorCode,
};

use crate::config::{EventsSettings, KafkaSettings};

#[tracing::instrument(skip_all, err)]
pub async fn ensure_topics(settings: &KafkaSettings) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=settings.replication_factor).contains(&settings.min_insync_replicas),
        "kafka.min_insync_replicas ({}) must be between 1 and kafka.replication_factor ({})",
        settings.min_insync_replicas,
        settings.replication_factor
    );
    let min_insync = settings.min_insync_replicas.to_string();
    let names = [
        &settings.topics.create,
        &settings.topics.update,
        &settings.topics.dead_letter,
    ];
    let dead_letter_max = settings.dead_letter_max_message_bytes.to_string();
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|name| {
            let topic = NewTopic::new(
                name,
                settings.partitions,
                TopicReplication::Fixed(settings.replication_factor),
            )
            .set("min.insync.replicas", &min_insync);
            // A dead letter is its record plus provenance headers: the
            // broker's default limit (1 MiB) would refuse a maximal one.
            if *name == &settings.topics.dead_letter {
                topic.set("max.message.bytes", &dead_letter_max)
            } else {
                topic
            }
        })
        .collect();
    create_topics(settings, &topics).await
}

/// The change-event topic: compacted (the latest event of each product is a
/// changelog to rebuild from; a delete's null value removes the product).
#[tracing::instrument(skip_all, err)]
pub async fn ensure_events_topic(
    settings: &KafkaSettings,
    events: &EventsSettings,
) -> anyhow::Result<()> {
    let min_insync = settings.min_insync_replicas.to_string();
    let retention = events.retention_ms.to_string();
    let topic = NewTopic::new(
        &events.topic,
        events.partitions,
        TopicReplication::Fixed(settings.replication_factor),
    )
    .set("cleanup.policy", "compact")
    .set("retention.ms", &retention)
    .set("min.insync.replicas", &min_insync);
    create_topics(settings, &[topic]).await
}

async fn create_topics(settings: &KafkaSettings, topics: &[NewTopic<'_>]) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = super::client_config(settings).create()?;
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(topics, &options).await? {
        match result {
            Ok(topic) => tracing::info!(topic, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("cannot create topic {topic}: {code}"),
        }
    }
    Ok(())
}
