//! gRPC API against the real local stack, through a client generated from
//! `proto/products.proto`: every RPC, status codes with field details, health
//! and reflection (also through the real `grpcurl`).

use std::path::PathBuf;

use products_service::api::grpc::pb::{CreateReq, DeleteReq, GetByIdReq, SearchReq, UpdateReq};
use tokio::process::Command;
use tonic::{transport::Channel, Code};
use tonic_types::StatusExt;

use crate::common::{eventually, grpc::create_req, products::CATEGORY, spawn_app, stack_cache};

#[tokio::test]
async fn create_get_update_search_delete() {
    let app = spawn_app().await;
    let mut grpc = app.grpc_client().await;

    let created = grpc
        .create(create_req("Grpc kettle"))
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!(
        created.product_id.len(),
        24,
        "bare hex id, not ObjectID(\"…\")"
    );
    assert_eq!(created.name, "Grpc kettle");
    assert_eq!(created.category_id, CATEGORY);
    assert!(created.created_at.is_some() && created.updated_at.is_some());

    let read = grpc
        .get_by_id(GetByIdReq {
            product_id: created.product_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!(read, created);

    let updated = grpc
        .update(UpdateReq {
            product_id: created.product_id.clone(),
            category_id: CATEGORY.to_owned(),
            name: "Grpc teapot".to_owned(),
            description: "Renamed over gRPC".to_owned(),
            price: 20.0,
            image_url: String::new(),
            photos: vec![],
            quantity: 0,
            rating: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!(updated.name, "Grpc teapot");
    assert_eq!(updated.image_url, "");
    assert_eq!(updated.created_at, created.created_at);

    grpc.create(create_req("Another teapot")).await.unwrap();
    app.wait_for_search("search=teapot", 2).await;
    let found = grpc
        .search(SearchReq {
            search: "TEAPOT".to_owned(),
            page: 1,
            size: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.total_count, 2);
    assert_eq!(found.total_pages, 2);
    assert_eq!(found.page, 1);
    assert_eq!(found.size, 1);
    assert!(found.has_more);
    assert_eq!(found.products.len(), 1);

    grpc.delete(DeleteReq {
        product_id: created.product_id.clone(),
    })
    .await
    .unwrap();
    let gone = grpc
        .get_by_id(GetByIdReq {
            product_id: created.product_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
}

#[tokio::test]
async fn invalid_input_is_invalid_argument_with_every_field() {
    let app = spawn_app().await;
    let mut grpc = app.grpc_client().await;
    let status = grpc
        .create(CreateReq {
            category_id: "bad".to_owned(),
            name: "x".to_owned(),
            price: -1.0,
            rating: 42,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let details = status.get_error_details();
    let fields: Vec<&str> = details
        .bad_request()
        .expect("BadRequest detail")
        .field_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert_eq!(
        fields,
        ["categoryId", "name", "description", "price", "rating"]
    );

    for id in ["", "123", "ObjectID(\"65a1f0c2e4b0a1b2c3d4e5f6\")"] {
        let status = grpc
            .get_by_id(GetByIdReq {
                product_id: id.to_owned(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{id:?}");
    }
    let status = grpc
        .search(SearchReq {
            search: String::new(),
            page: -1,
            size: 10,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn missing_products_are_not_found() {
    let app = spawn_app().await;
    let mut grpc = app.grpc_client().await;
    let id = "65a1f0c2e4b0a1b2c3d4e5f6".to_owned();
    let status = grpc
        .update(UpdateReq {
            product_id: id.clone(),
            category_id: CATEGORY.to_owned(),
            name: "Ghost".to_owned(),
            description: "Not there".to_owned(),
            price: 1.0,
            quantity: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = grpc.delete(DeleteReq { product_id: id }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn health_reports_serving() {
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let app = spawn_app().await;
    let channel = Channel::from_shared(app.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    eventually(std::time::Duration::from_secs(10), || {
        let mut health = health.clone();
        async move {
            health
                .check(HealthCheckRequest {
                    service: "productsService.ProductsService".to_owned(),
                })
                .await
                .is_ok_and(|r| r.into_inner().status == 1)
        }
    })
    .await;
    let overall = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(overall.status, 1, "SERVING");
}

fn grpcurl() -> PathBuf {
    if let Ok(path) = std::env::var("GRPCURL_BIN") {
        return path.into();
    }
    stack_cache().join("bin/grpcurl")
}

/// Runs grpcurl without blocking the test's runtime (the service under test
/// runs on the same runtime).
async fn run_grpcurl(args: &[&str]) -> String {
    let binary = grpcurl();
    let output = Command::new(&binary)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}); make stack-up installs it",
                binary.display()
            )
        });
    assert!(
        output.status.success(),
        "grpcurl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn grpcurl_lists_and_calls_through_reflection() {
    let app = spawn_app().await;
    let addr = app.grpc_addr.to_string();
    let services = run_grpcurl(&["-plaintext", &addr, "list"]).await;
    assert!(
        services.contains("productsService.ProductsService"),
        "{services}"
    );
    assert!(services.contains("grpc.health.v1.Health"), "{services}");

    let methods = run_grpcurl(&[
        "-plaintext",
        &addr,
        "list",
        "productsService.ProductsService",
    ])
    .await;
    for method in ["Create", "Update", "GetByID", "Search", "Delete"] {
        assert!(
            methods.contains(&format!("ProductsService.{method}")),
            "{methods}"
        );
    }

    let body = serde_json::json!({
        "CategoryID": CATEGORY, "Name": "Curl lamp", "Description": "Made by grpcurl",
        "Price": 3.5, "Quantity": 2, "Rating": 1
    })
    .to_string();
    let created = run_grpcurl(&[
        "-plaintext",
        "-d",
        &body,
        &addr,
        "productsService.ProductsService/Create",
    ])
    .await;
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    let id = created["Product"]["ProductID"].as_str().unwrap().to_owned();
    let read = run_grpcurl(&[
        "-plaintext",
        "-d",
        &serde_json::json!({ "ProductID": id }).to_string(),
        &addr,
        "productsService.ProductsService/GetByID",
    ])
    .await;
    assert!(read.contains("Curl lamp"), "{read}");
}
