//! Kafka with SASL/SCRAM: a private broker whose SASL_PLAINTEXT listener
//! accepts SCRAM-SHA-512 for one user. The service, given that user and its
//! password in a secret file, produces and consumes through it (a REST write
//! is applied); with a wrong password it reports Kafka not ready.

use std::time::Duration;

use crate::common::{
    eventually,
    processes::PrivateKafka,
    products::{create_product, product_body},
    spawn_app_with, test_settings,
};
use products_service::config::{KafkaSecurityProtocol, Settings};

const USER: &str = "products";
const PASSWORD: &str = "scram-test-password";

fn sasl_settings(kafka: &PrivateKafka, password_file: &std::path::Path) -> Settings {
    let mut settings = test_settings();
    settings.kafka.brokers = kafka.sasl_brokers();
    let security = &mut settings.kafka.security;
    security.protocol = KafkaSecurityProtocol::SaslPlaintext;
    security.sasl.mechanism = "SCRAM-SHA-512".to_owned();
    security.sasl.username = Some(USER.to_owned());
    security.sasl.password_file = Some(password_file.to_owned());
    settings
}

#[tokio::test]
async fn the_pipeline_runs_over_sasl_scram_with_a_password_file() {
    let kafka = PrivateKafka::start_with_scram(Some((USER, PASSWORD))).await;
    let secrets = tempfile::tempdir().unwrap();
    let good = secrets.path().join("kafka-password");
    std::fs::write(&good, format!("{PASSWORD}\n")).unwrap();
    let bad = secrets.path().join("wrong-password");
    std::fs::write(&bad, "not-the-password").unwrap();

    let app = spawn_app_with(sasl_settings(&kafka, &good)).await;
    let created = create_product(&app, &product_body("Scram saucepan")).await;
    assert_eq!(created["name"], "Scram saucepan");
    eventually(Duration::from_secs(20), || async {
        app.client
            .get(app.url("/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    app.stop().await.unwrap();

    let wrong = spawn_app_with(sasl_settings(&kafka, &bad)).await;
    let ready = wrong.client.get(wrong.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["kafka"], "down", "{body}");
    assert_eq!(body["checks"]["mongodb"], "up", "{body}");
    wrong.stop().await.unwrap();
}
