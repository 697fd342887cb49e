//! gRPC helpers: a client of a test app, a valid create request.

use products_service::api::grpc::pb::{products_service_client::ProductsServiceClient, CreateReq};
use tonic::transport::Channel;

use super::{products::CATEGORY, TestApp};

impl TestApp {
    /// A plaintext gRPC client of this app.
    pub async fn grpc_client(&self) -> ProductsServiceClient<Channel> {
        ProductsServiceClient::connect(self.grpc_url())
            .await
            .unwrap()
    }
}

/// A valid `Create` request for a product called `name`.
pub fn create_req(name: &str) -> CreateReq {
    CreateReq {
        category_id: CATEGORY.to_owned(),
        name: name.to_owned(),
        description: "Made over gRPC".to_owned(),
        price: 12.5,
        image_url: "https://img.example.com/g.png".to_owned(),
        photos: vec!["https://img.example.com/g-1.png".to_owned()],
        quantity: 4,
        rating: 9,
    }
}
