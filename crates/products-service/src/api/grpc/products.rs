//! `ProductsService` RPC handlers. Writes call the use cases directly (as the
//! Go original's gRPC writes did).

use products_core::{app::ProductService, domain::SearchQuery};
use tonic::{Request, Response, Status};

use super::{
    convert::update_request,
    pb::{self, products_service_server::ProductsService},
    status::{from_app_error, invalid_argument},
};

#[derive(Clone)]
pub struct ProductsGrpc {
    products: ProductService,
}

impl ProductsGrpc {
    pub fn new(products: ProductService) -> Self {
        Self { products }
    }
}

#[tonic::async_trait]
impl ProductsService for ProductsGrpc {
    async fn create(
        &self,
        request: Request<pb::CreateReq>,
    ) -> Result<Response<pb::CreateRes>, Status> {
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
        self.products
            .delete(&request.into_inner().product_id)
            .await
            .map_err(from_app_error)?;
        Ok(Response::new(pb::DeleteRes {}))
    }
}
