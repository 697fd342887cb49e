//! The OpenAPI document, generated from the handlers' annotations, and the
//! Swagger UI that renders it. The UI's assets are compiled into the binary
//! (`utoipa-swagger-ui` with `vendored`), so it works with no internet; the
//! online validator is switched off for the same reason. Writes declare the
//! bearer security scheme, so Swagger UI offers "Authorize" and sends the
//! token; reads declare it as optional (required only with
//! `auth.protect_reads`).

use axum::Router;
use utoipa::{
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    Modify, OpenApi,
};
use utoipa_swagger_ui::{Config, SwaggerUi};

use super::{error, health, products};
use crate::codec::{DraftJson, ProductJson};

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
        DraftJson,
        products::SearchResponse,
        products::AcceptedResponse,
        error::ErrorBody,
        error::Cause,
        health::HealthBody,
    )),
    tags(
        (name = "products", description = "Manage the catalog"),
        (name = "health", description = "Probes"),
    ),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

/// The name operations use to refer to the bearer scheme.
pub const BEARER_SCHEME: &str = "bearer";

/// Declares the bearer scheme: a JWT or a static API key.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A JWT with the write scope (`products:write` by default) or a static \
                         API key. Needed for writes when `auth.enabled`, and for reads too with \
                         `auth.protect_reads`.",
                    ))
                    .build(),
            ),
        );
    }
}

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
