//! The OpenAPI document, generated from the handlers' annotations, and the
//! Swagger UI that renders it. The UI's assets are compiled into the binary
//! (`utoipa-swagger-ui` with `vendored`), so it works with no internet; the
//! online validator is switched off for the same reason.

use axum::Router;
use utoipa::OpenApi;
use utoipa_swagger_ui::{Config, SwaggerUi};

use super::{error, health, products};
use crate::codec::ProductJson;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "products-service",
        description = "Product catalog. Reads answer from MongoDB (cached in Redis); writes are validated, then accepted into the Kafka command pipeline (202) and applied by the consumer group. gRPC and Kafka are described in the README.",
    ),
    paths(
        products::create,
        products::update,
        products::get_by_id,
        products::search,
        products::delete,
        health::live,
        health::ready,
    ),
    components(schemas(
        ProductJson,
        products::ProductInput,
        products::SearchResponse,
        products::AcceptedResponse,
        error::ErrorBody,
        error::Cause,
        health::HealthBody,
    )),
    tags(
        (name = "products", description = "Manage the catalog"),
        (name = "health", description = "Probes"),
    )
)]
pub struct ApiDoc;

pub const OPENAPI_PATH: &str = "/api-docs/openapi.json";

/// Serves `/api-docs/openapi.json` and Swagger UI under `/swagger/`.
pub fn swagger_ui() -> Router {
    let config = Config::new([OPENAPI_PATH]).validator_url("none");
    Router::new().merge(
        SwaggerUi::new("/swagger")
            .url(OPENAPI_PATH, ApiDoc::openapi())
            .config(config),
    )
}
