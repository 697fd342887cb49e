//! The use cases: create, update, get, search and delete products.
//!
//! Reads go cache-aside (cache, then repository, then fill the cache); writes
//! go to the repository and invalidate the cache. A failing cache is logged
//! and bypassed: it can slow a request down but never fail it.

use std::sync::Arc;

use crate::domain::{
    Product, ProductDraft, ProductId, SearchPage, SearchQuery, UnvalidatedProduct, ValidationErrors,
};

use super::{AppError, Clock, IdGenerator, InsertOutcome, ProductCache, ProductRepository};

/// Entry point of every use case; cheap to clone and share across tasks.
#[derive(Clone)]
pub struct ProductService {
    repository: Arc<dyn ProductRepository>,
    cache: Arc<dyn ProductCache>,
    ids: Arc<dyn IdGenerator>,
    clock: Arc<dyn Clock>,
}

impl ProductService {
    pub fn new(
        repository: Arc<dyn ProductRepository>,
        cache: Arc<dyn ProductCache>,
        ids: Arc<dyn IdGenerator>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            repository,
            cache,
            ids,
            clock,
        }
    }

    /// Validates, assigns a new id and timestamps, stores.
    #[tracing::instrument(name = "usecase.create_product", skip_all, err(level = "info"))]
    pub async fn create(&self, raw: UnvalidatedProduct) -> Result<Product, AppError> {
        let draft = ProductDraft::parse(raw)?;
        let product = Product::new(self.ids.next_id(), draft, self.clock.now());
        match self.repository.insert(&product).await? {
            InsertOutcome::Inserted => Ok(product),
            // A fresh ObjectId colliding means the generator is broken.
            InsertOutcome::AlreadyExists => Err(AppError::Internal(format!(
                "generated id {} already exists",
                product.id
            ))),
        }
    }

    /// Replaces the fields of an existing product; NotFound if there is none.
    #[tracing::instrument(name = "usecase.update_product", skip(self, raw), err(level = "info"))]
    pub async fn update(&self, id: &str, raw: UnvalidatedProduct) -> Result<Product, AppError> {
        let id = ProductId::parse(id).map_err(|m| ValidationErrors::single("productId", m));
        let (id, draft) = match (id, ProductDraft::parse(raw)) {
            (Ok(id), Ok(draft)) => (id, draft),
            (Err(id_error), Err(field_errors)) => return Err(id_error.merged(field_errors).into()),
            (Err(errors), _) | (_, Err(errors)) => return Err(errors.into()),
        };
        let updated = self
            .repository
            .update(&id, &draft, self.clock.now())
            .await?
            .ok_or_else(|| AppError::NotFound(id.clone()))?;
        self.invalidate(&id).await;
        Ok(updated)
    }

    /// Reads one product, from the cache when it has it.
    #[tracing::instrument(name = "usecase.get_product", skip(self), err(level = "info"))]
    pub async fn get(&self, id: &str) -> Result<Product, AppError> {
        let id = parse_id(id)?;
        match self.cache.get(&id).await {
            Ok(Some(product)) => return Ok(product),
            Ok(None) => {}
            Err(err) => tracing::warn!(error = %err, "cache read failed; reading the database"),
        }
        let product = self
            .repository
            .find_by_id(&id)
            .await?
            .ok_or_else(|| AppError::NotFound(id.clone()))?;
        if let Err(err) = self.cache.put(&product).await {
            tracing::warn!(error = %err, "cache write failed");
        }
        Ok(product)
    }

    /// Case-insensitive literal substring search over name and description.
    #[tracing::instrument(name = "usecase.search_products", skip(self), err(level = "info"))]
    pub async fn search(&self, query: SearchQuery) -> Result<SearchPage, AppError> {
        Ok(self.repository.search(&query).await?)
    }

    /// Deletes a product; NotFound if there was none.
    #[tracing::instrument(name = "usecase.delete_product", skip(self), err(level = "info"))]
    pub async fn delete(&self, id: &str) -> Result<(), AppError> {
        let id = parse_id(id)?;
        if !self.repository.delete(&id).await? {
            return Err(AppError::NotFound(id));
        }
        self.invalidate(&id).await;
        Ok(())
    }

    /// Whether the database answers (for readiness and health checks).
    pub async fn database_ready(&self) -> Result<(), AppError> {
        Ok(self.repository.ping().await?)
    }

    async fn invalidate(&self, id: &ProductId) {
        // A failed invalidation leaves a stale entry until its TTL ends.
        if let Err(err) = self.cache.remove(id).await {
            tracing::warn!(error = %err, product_id = %id, "cache invalidation failed");
        }
    }
}

fn parse_id(id: &str) -> Result<ProductId, AppError> {
    ProductId::parse(id).map_err(|message| ValidationErrors::single("productId", message).into())
}
