//! `ProductsService` RPC handlers. Writes call the use cases directly (as the
//! Go original's gRPC writes did). Each call first passes the per-client rate
//! limit and the bearer-token check (`authorization` metadata), when enabled.

use std::sync::Arc;

use products_core::{app::ProductService, domain::SearchQuery};
use tonic::{Request, Response, Status};

use super::{
    convert::update_request,
    pb::{self, products_service_server::ProductsService},
    status::{from_app_error, from_auth_error, invalid_argument, rate_limited},
};
use crate::api::{
    auth::{Access, Authenticator},
    rate_limit::RateLimiter,
};

/// The gRPC front door: our implementation of the generated
/// `ProductsService` trait, calling the core's `ProductService`.
#[derive(Clone)]
pub struct GrpcProductsApi {
    products: ProductService,
    auth: Option<Arc<Authenticator>>,
    rate_limiter: Option<Arc<RateLimiter>>,
}

impl GrpcProductsApi {
    pub fn new(products: ProductService) -> Self {
        Self {
            products,
            auth: None,
            rate_limiter: None,
        }
    }

    /// Calls need a bearer token as `auth` says (`None`: no auth).
    pub fn with_auth(mut self, auth: Option<Arc<Authenticator>>) -> Self {
        self.auth = auth;
        self
    }

    /// Calls count against their client's rate limit (`None`: no limit).
    pub fn with_rate_limit(mut self, rate_limiter: Option<Arc<RateLimiter>>) -> Self {
        self.rate_limiter = rate_limiter;
        self
    }

    fn guard<T>(&self, request: &Request<T>, access: Access) -> Result<(), Status> {
        if let Some(limiter) = &self.rate_limiter {
            let client = request.remote_addr().map(|addr| addr.ip());
            limiter.check(client).map_err(rate_limited)?;
        }
        if let Some(auth) = &self.auth {
            // Metadata that is not text is present but invalid, not missing.
            let header = request
                .metadata()
                .get("authorization")
                .map(|v| v.to_str().unwrap_or_default());
            auth.authorize(header, access).map_err(from_auth_error)?;
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl ProductsService for GrpcProductsApi {
    async fn create(
        &self,
        request: Request<pb::CreateReq>,
    ) -> Result<Response<pb::CreateRes>, Status> {
        self.guard(&request, Access::Write)?;
        let product = self
            .products
            .create(request.into_inner().into())
            .await
            .map_err(from_app_error)?;
        Ok(Response::new(pb::CreateRes {
            product: Some((&product).into()),
        }))
    }

    async fn update(
        &self,
        request: Request<pb::UpdateReq>,
    ) -> Result<Response<pb::UpdateRes>, Status> {
        self.guard(&request, Access::Write)?;
        let (id, fields) = update_request(request.into_inner());
        let product = self
            .products
            .update(&id, fields)
            .await
            .map_err(from_app_error)?;
        Ok(Response::new(pb::UpdateRes {
            product: Some((&product).into()),
        }))
    }

    async fn get_by_id(
        &self,
        request: Request<pb::GetByIdReq>,
    ) -> Result<Response<pb::GetByIdRes>, Status> {
        self.guard(&request, Access::Read)?;
        let product = self
            .products
            .get(&request.into_inner().product_id)
            .await
            .map_err(from_app_error)?;
        Ok(Response::new(pb::GetByIdRes {
            product: Some((&product).into()),
        }))
    }

    async fn search(
        &self,
        request: Request<pb::SearchReq>,
    ) -> Result<Response<pb::SearchRes>, Status> {
        self.guard(&request, Access::Read)?;
        let r = request.into_inner();
        let query = SearchQuery::parse(Some(&r.search), Some(r.page), Some(r.size))
            .map_err(|e| invalid_argument(&e))?;
        let page = self.products.search(query).await.map_err(from_app_error)?;
        Ok(Response::new((&page).into()))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteReq>,
    ) -> Result<Response<pb::DeleteRes>, Status> {
        self.guard(&request, Access::Write)?;
        self.products
            .delete(&request.into_inner().product_id)
            .await
            .map_err(from_app_error)?;
        Ok(Response::new(pb::DeleteRes {}))
    }
}
