//! The use cases: create, update, get, search and delete products directly
//! (gRPC), submit writes as commands (REST, through Kafka) and apply commands
//! (the Kafka consumer).
//!
//! Reads go cache-aside (cache, then repository, then fill the cache); writes
//! go to the repository and then put their result in the cache (a deleted
//! product as a short-lived "deleted" entry). Every cache write carries the
//! stored revision and never replaces a later one, so a slow reader cannot
//! put back an old version. A failing cache is logged and bypassed: it can
//! slow a request down but never fail it.

use std::sync::Arc;

use crate::domain::{
    Product, ProductDraft, ProductId, SearchPage, SearchQuery, UnvalidatedProduct, ValidationErrors,
};

use super::{
    AppError, ApplyOutcome, CacheEntry, Clock, CommandPublisher, DeleteOutcome, IdGenerator,
    InsertOutcome, LogPosition, ProductCache, ProductCommand, ProductRepository, ProductSearch,
    ProductUpdate, Revision, Stored, UpdateOrder, UpdateOutcome,
};

/// Entry point of every use case; cheap to clone and share across tasks.
#[derive(Clone)]
pub struct ProductService {
    repository: Arc<dyn ProductRepository>,
    cache: Arc<dyn ProductCache>,
    publisher: Arc<dyn CommandPublisher>,
    ids: Arc<dyn IdGenerator>,
    clock: Arc<dyn Clock>,
    /// Where searches go when not to the repository.
    search: Option<Arc<dyn ProductSearch>>,
}

impl ProductService {
    pub fn new(
        repository: Arc<dyn ProductRepository>,
        cache: Arc<dyn ProductCache>,
        publisher: Arc<dyn CommandPublisher>,
        ids: Arc<dyn IdGenerator>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            repository,
            cache,
            publisher,
            ids,
            clock,
            search: None,
        }
    }

    /// Searches are answered by `search` instead of the repository.
    pub fn with_search(mut self, search: Arc<dyn ProductSearch>) -> Self {
        self.search = Some(search);
        self
    }

    /// Validates, assigns a new id and timestamps, stores.
    #[tracing::instrument(name = "usecase.create_product", skip_all, err(level = "info"))]
    pub async fn create(&self, raw: UnvalidatedProduct) -> Result<Product, AppError> {
        let product = self.new_product(raw)?;
        match self.repository.insert(&product).await? {
            InsertOutcome::Inserted => Ok(product),
            // A fresh ObjectId colliding means the generator is broken.
            InsertOutcome::AlreadyExists => Err(AppError::Internal(format!(
                "generated id {} already exists",
                product.id
            ))),
        }
    }

    /// Replaces the fields of an existing product now (a direct write, as
    /// gRPC does); NotFound if there is none or it was deleted. It leaves the
    /// product's log position alone, so updates from the command topic are
    /// neither lost nor reordered by it.
    #[tracing::instrument(name = "usecase.update_product", skip(self, raw), err(level = "info"))]
    pub async fn update(&self, id: &str, raw: UnvalidatedProduct) -> Result<Product, AppError> {
        let update = self.new_update(id, raw)?;
        match self.repository.update(&update, UpdateOrder::Direct).await? {
            UpdateOutcome::Applied(product, revision) => {
                self.cache_put(&update.id, CacheEntry::Product(product.clone()), revision)
                    .await;
                Ok(product)
            }
            UpdateOutcome::NotFound | UpdateOutcome::Deleted => Err(AppError::NotFound(update.id)),
            // Direct writes are not ordered by position; kept for completeness.
            UpdateOutcome::Stale => self.get(update.id.as_str()).await,
        }
    }

    /// Validates a create and hands it to the command pipeline; the product
    /// becomes readable once the consumer applies it.
    #[tracing::instrument(name = "usecase.submit_create", skip_all, err(level = "info"))]
    pub async fn submit_create(&self, raw: UnvalidatedProduct) -> Result<ProductId, AppError> {
        let product = self.new_product(raw)?;
        let id = product.id.clone();
        self.publisher
            .publish(&ProductCommand::Create(product))
            .await?;
        Ok(id)
    }

    /// Validates an update and hands it to the command pipeline.
    #[tracing::instrument(name = "usecase.submit_update", skip(self, raw), err(level = "info"))]
    pub async fn submit_update(
        &self,
        id: &str,
        raw: UnvalidatedProduct,
    ) -> Result<ProductId, AppError> {
        let update = self.new_update(id, raw)?;
        let id = update.id.clone();
        self.publisher
            .publish(&ProductCommand::Update(update))
            .await?;
        Ok(id)
    }

    /// Applies a command from the pipeline, idempotently; `position` is the
    /// record's place in its topic, which orders the updates of one product.
    /// An update of a product that does not exist (yet) is NotFound: its
    /// create may still be on its way on the other topic, so the caller
    /// tries it again later. A create or update of a deleted product is
    /// dropped (`Deleted`).
    #[tracing::instrument(
        name = "usecase.apply_command",
        skip_all,
        fields(command = command.kind(), product_id = %command.product_id()),
        err(level = "info")
    )]
    pub async fn apply(
        &self,
        command: &ProductCommand,
        position: LogPosition,
    ) -> Result<ApplyOutcome, AppError> {
        match command {
            ProductCommand::Create(product) => match self.repository.insert(product).await? {
                InsertOutcome::Inserted => Ok(ApplyOutcome::Applied),
                InsertOutcome::AlreadyExists => Ok(ApplyOutcome::Duplicate),
            },
            ProductCommand::Update(update) => {
                match self
                    .repository
                    .update(update, UpdateOrder::Log(position))
                    .await?
                {
                    UpdateOutcome::Applied(product, revision) => {
                        self.cache_put(&update.id, CacheEntry::Product(product), revision)
                            .await;
                        Ok(ApplyOutcome::Applied)
                    }
                    UpdateOutcome::Stale => {
                        // Seen again: the replica that applied it may have
                        // died between the write and the cache put.
                        self.refresh_cache(&update.id).await;
                        Ok(ApplyOutcome::Duplicate)
                    }
                    UpdateOutcome::Deleted => Ok(ApplyOutcome::Deleted),
                    UpdateOutcome::NotFound => Err(AppError::NotFound(update.id.clone())),
                }
            }
        }
    }

    /// Puts the stored version in the cache (never over a later one). A
    /// record is redelivered only if it was not settled, so whatever
    /// interrupted its first apply after the write is repaired here, not
    /// left to the cache TTL.
    async fn refresh_cache(&self, id: &ProductId) {
        if let Err(err) = self.read_through(id).await {
            tracing::warn!(error = %err, product_id = %id, "cache refresh read failed");
        }
    }

    /// Reads the stored version and puts it in the cache (a tombstone as
    /// "deleted"); the product if it is live.
    async fn read_through(&self, id: &ProductId) -> Result<Option<Product>, AppError> {
        match self.repository.find_by_id(id).await? {
            Some(Stored::Live(product, revision)) => {
                self.cache_put(id, CacheEntry::Product(product.clone()), revision)
                    .await;
                Ok(Some(product))
            }
            Some(Stored::Deleted(revision)) => {
                self.cache_put(id, CacheEntry::Deleted, revision).await;
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// Applies many creates at once (the consumer's batches): one outcome per
    /// product, in order. `Err` is a failure of the whole batch (retry it);
    /// a per-product `Err` concerns that product only. As one by one, the
    /// first create of an id wins and later ones are duplicates.
    #[tracing::instrument(
        name = "usecase.apply_creates",
        skip_all,
        fields(count = products.len()),
        err(level = "info")
    )]
    pub async fn apply_creates(
        &self,
        products: &[Product],
    ) -> Result<Vec<Result<ApplyOutcome, AppError>>, AppError> {
        // Repeated ids within the batch: only the first is sent.
        let mut seen = std::collections::HashSet::with_capacity(products.len());
        let first: Vec<bool> = products.iter().map(|p| seen.insert(&p.id)).collect();
        let outcomes = if first.iter().all(|&f| f) {
            self.repository.insert_many(products).await?
        } else {
            let unique: Vec<Product> = products
                .iter()
                .zip(&first)
                .filter(|(_, &f)| f)
                .map(|(p, _)| p.clone())
                .collect();
            self.repository.insert_many(&unique).await?
        };
        if outcomes.len() != seen.len() {
            return Err(AppError::Internal(format!(
                "repository answered {} outcomes for {} products",
                outcomes.len(),
                seen.len()
            )));
        }
        let mut outcomes = outcomes.into_iter();
        Ok(first
            .into_iter()
            .map(|is_first| match is_first {
                false => Ok(ApplyOutcome::Duplicate),
                true => match outcomes.next() {
                    Some(Ok(InsertOutcome::Inserted)) => Ok(ApplyOutcome::Applied),
                    Some(Ok(InsertOutcome::AlreadyExists)) => Ok(ApplyOutcome::Duplicate),
                    Some(Err(err)) => Err(err.into()),
                    None => Err(AppError::Internal("missing insert outcome".to_owned())),
                },
            })
            .collect())
    }

    /// Reads one product, from the cache when it has it.
    ///
    /// A cache hit is the hot read path: its span is at `debug`, so with the
    /// default trace filter (`info`) a cached read is the request's span alone.
    /// Every exported span costs the service ≈ 7 µs and the collector about as
    /// much again (BENCHMARKS.md, "the cost of tracing"). A miss opens
    /// `usecase.get_product.read` at `info`, with the database's span below it.
    // `product_id` as a string field: recording the argument itself would
    // format it with Debug, an allocation per read.
    #[tracing::instrument(
        name = "usecase.get_product",
        level = "debug",
        skip_all,
        fields(product_id = id),
        err(level = "info")
    )]
    pub async fn get(&self, id: &str) -> Result<Product, AppError> {
        let id = parse_id(id)?;
        match self.cache.get(&id).await {
            Ok(Some(CacheEntry::Product(product))) => return Ok(product),
            Ok(Some(CacheEntry::Deleted)) => return Err(AppError::NotFound(id)),
            Ok(None) => {}
            Err(err) => tracing::warn!(error = %err, "cache read failed; reading the database"),
        }
        self.get_uncached(&id).await
    }

    /// [`Self::get`] past the cache: the stored version, put in the cache.
    /// (Its error is logged once, by `get`.)
    #[tracing::instrument(
        name = "usecase.get_product.read",
        skip_all,
        fields(product_id = id.as_str())
    )]
    async fn get_uncached(&self, id: &ProductId) -> Result<Product, AppError> {
        match self.read_through(id).await? {
            Some(product) => Ok(product),
            None => Err(AppError::NotFound(id.clone())),
        }
    }

    /// Case-insensitive literal substring search over name and description,
    /// from the search index when there is one and it can answer.
    #[tracing::instrument(name = "usecase.search_products", skip(self), err(level = "info"))]
    pub async fn search(&self, query: SearchQuery) -> Result<SearchPage, AppError> {
        if let Some(index) = &self.search {
            if let Some(page) = index.search(&query).await? {
                return Ok(page);
            }
        }
        Ok(self.repository.search(&query).await?)
    }

    /// Deletes a product, leaving a tombstone so that no redelivered or
    /// replayed create or update brings it back; NotFound if nothing live was
    /// there (the tombstone is written all the same: a create still on its
    /// way will not appear).
    #[tracing::instrument(name = "usecase.delete_product", skip(self), err(level = "info"))]
    pub async fn delete(&self, id: &str) -> Result<(), AppError> {
        let id = parse_id(id)?;
        let (outcome, revision) = self.repository.delete(&id).await?;
        self.cache_put(&id, CacheEntry::Deleted, revision).await;
        match outcome {
            DeleteOutcome::Deleted => Ok(()),
            DeleteOutcome::NothingToDelete => Err(AppError::NotFound(id)),
        }
    }

    /// Whether the database answers (for readiness and health checks).
    pub async fn database_ready(&self) -> Result<(), AppError> {
        Ok(self.repository.ping().await?)
    }

    fn new_product(&self, raw: UnvalidatedProduct) -> Result<Product, AppError> {
        let draft = ProductDraft::parse(raw)?;
        Ok(Product::new(self.ids.next_id(), draft, self.clock.now()))
    }

    fn new_update(&self, id: &str, raw: UnvalidatedProduct) -> Result<ProductUpdate, AppError> {
        let id = ProductId::parse(id).map_err(|m| ValidationErrors::single("productId", m));
        match (id, ProductDraft::parse(raw)) {
            (Ok(id), Ok(draft)) => Ok(ProductUpdate {
                id,
                draft,
                updated_at: self.clock.now(),
            }),
            (Err(id_error), Err(field_errors)) => Err(id_error.merged(field_errors).into()),
            (Err(errors), _) | (_, Err(errors)) => Err(errors.into()),
        }
    }

    async fn cache_put(&self, id: &ProductId, entry: CacheEntry, revision: Revision) {
        // A failed write after a change leaves the previous entry until its
        // TTL ends: the cache is best-effort.
        if let Err(err) = self.cache.put(id, &entry, revision).await {
            tracing::warn!(error = %err, product_id = %id, "cache write failed");
        }
    }
}

fn parse_id(id: &str) -> Result<ProductId, AppError> {
    ProductId::parse(id).map_err(|message| ValidationErrors::single("productId", message).into())
}
