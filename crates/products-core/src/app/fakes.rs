//! In-memory fakes of the ports, for unit tests of the use cases and of the
//! command pipeline's applier (the service crate enables them with the
//! `fakes` feature in its dev-dependencies). They keep the same contracts
//! as the real adapters: tombstones, revisions, log-ordered updates.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};

use super::*;
use crate::domain::*;

/// One stored id: the product (or its tombstone), revision and the last
/// update-topic position applied.
#[derive(Debug, Clone)]
pub struct Row {
    pub product: Option<Product>,
    pub revision: Revision,
    pub position: Option<LogPosition>,
}

/// A repository in a `HashMap`; `down` makes every call `Unavailable`,
/// `reject` makes writes `Rejected`.
#[derive(Default)]
pub struct InMemoryRepository {
    pub rows: Mutex<HashMap<ProductId, Row>>,
    pub reads: AtomicUsize,
    pub down: AtomicBool,
    pub reject: AtomicBool,
}

impl InMemoryRepository {
    fn check_up(&self) -> Result<(), PortError> {
        if self.down.load(Ordering::SeqCst) {
            Err(PortError::Unavailable("database down".into()))
        } else {
            Ok(())
        }
    }

    fn check_write(&self) -> Result<(), PortError> {
        self.check_up()?;
        if self.reject.load(Ordering::SeqCst) {
            Err(PortError::Rejected("document too large".into()))
        } else {
            Ok(())
        }
    }

    /// Live products.
    pub fn live(&self) -> Vec<Product> {
        let rows = self.rows.lock().unwrap();
        rows.values().filter_map(|r| r.product.clone()).collect()
    }

    pub fn live_product(&self, id: &ProductId) -> Option<Product> {
        let rows = self.rows.lock().unwrap();
        rows.get(id).and_then(|r| r.product.clone())
    }
}

#[async_trait]
impl ProductRepository for InMemoryRepository {
    async fn insert(&self, product: &Product) -> Result<InsertOutcome, PortError> {
        self.check_write()?;
        let mut rows = self.rows.lock().unwrap();
        if rows.contains_key(&product.id) {
            return Ok(InsertOutcome::AlreadyExists);
        }
        rows.insert(
            product.id.clone(),
            Row {
                product: Some(product.clone()),
                revision: 1,
                position: None,
            },
        );
        Ok(InsertOutcome::Inserted)
    }

    async fn update(
        &self,
        update: &ProductUpdate,
        order: UpdateOrder,
    ) -> Result<UpdateOutcome, PortError> {
        self.check_write()?;
        let mut rows = self.rows.lock().unwrap();
        let Some(row) = rows.get_mut(&update.id) else {
            return Ok(UpdateOutcome::NotFound);
        };
        let Some(stored) = &row.product else {
            return Ok(UpdateOutcome::Deleted);
        };
        if let UpdateOrder::Log(position) = order {
            if row.position.is_some_and(|applied| {
                applied.partition == position.partition && applied.offset >= position.offset
            }) {
                return Ok(UpdateOutcome::Stale);
            }
            row.position = Some(position);
        }
        let product = Product {
            id: update.id.clone(),
            draft: update.draft.clone(),
            created_at: stored.created_at,
            updated_at: update.updated_at,
        };
        row.product = Some(product.clone());
        row.revision += 1;
        Ok(UpdateOutcome::Applied(product, row.revision))
    }

    async fn find_by_id(&self, id: &ProductId) -> Result<Option<Stored>, PortError> {
        self.check_up()?;
        self.reads.fetch_add(1, Ordering::SeqCst);
        let rows = self.rows.lock().unwrap();
        Ok(rows.get(id).map(|row| match &row.product {
            Some(product) => Stored::Live(product.clone(), row.revision),
            None => Stored::Deleted(row.revision),
        }))
    }

    async fn search(&self, query: &SearchQuery) -> Result<SearchPage, PortError> {
        self.check_up()?;
        let needle = query.text.as_str().to_lowercase();
        let mut hits: Vec<Product> = self
            .live()
            .into_iter()
            .filter(|p| {
                p.draft.name.as_str().to_lowercase().contains(&needle)
                    || p.draft
                        .description
                        .as_str()
                        .to_lowercase()
                        .contains(&needle)
            })
            .collect();
        hits.sort_by(|a, b| (a.draft.name.as_str(), &a.id).cmp(&(b.draft.name.as_str(), &b.id)));
        let total_count = hits.len() as u64;
        let products = hits
            .into_iter()
            .skip(query.offset() as usize)
            .take(query.size as usize)
            .collect();
        Ok(SearchPage {
            total_count,
            page: query.page,
            size: query.size,
            products,
        })
    }

    async fn delete(&self, id: &ProductId) -> Result<(DeleteOutcome, Revision), PortError> {
        self.check_write()?;
        let mut rows = self.rows.lock().unwrap();
        let row = rows.entry(id.clone()).or_insert(Row {
            product: None,
            revision: 0,
            position: None,
        });
        row.revision += 1;
        let outcome = match row.product.take() {
            Some(_) => DeleteOutcome::Deleted,
            None => DeleteOutcome::NothingToDelete,
        };
        Ok((outcome, row.revision))
    }

    async fn ping(&self) -> Result<(), PortError> {
        self.check_up()
    }
}

/// A cache in a `HashMap` with the same compare-and-set `put` as Redis;
/// `broken` makes every call fail.
#[derive(Default)]
pub struct InMemoryCache {
    pub entries: Mutex<HashMap<ProductId, (CacheEntry, Revision)>>,
    pub broken: AtomicBool,
}

impl InMemoryCache {
    fn check(&self) -> Result<(), PortError> {
        if self.broken.load(Ordering::SeqCst) {
            Err(PortError::Unavailable("cache down".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl ProductCache for InMemoryCache {
    async fn get(&self, id: &ProductId) -> Result<Option<CacheEntry>, PortError> {
        self.check()?;
        Ok(self.entries.lock().unwrap().get(id).map(|(e, _)| e.clone()))
    }
    async fn put(
        &self,
        id: &ProductId,
        entry: &CacheEntry,
        revision: Revision,
    ) -> Result<(), PortError> {
        self.check()?;
        let mut entries = self.entries.lock().unwrap();
        if entries.get(id).is_none_or(|(_, held)| *held < revision) {
            entries.insert(id.clone(), (entry.clone(), revision));
        }
        Ok(())
    }
}

/// Records what was published; `down` makes publishing `Unavailable`.
#[derive(Default)]
pub struct RecordingPublisher {
    pub commands: Mutex<Vec<ProductCommand>>,
    pub down: AtomicBool,
}

#[async_trait]
impl CommandPublisher for RecordingPublisher {
    async fn publish(&self, command: &ProductCommand) -> Result<(), PortError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(PortError::Unavailable("broker down".into()));
        }
        self.commands.lock().unwrap().push(command.clone());
        Ok(())
    }
}

/// Ids 1, 2, 3, ... as 24-hex.
#[derive(Default)]
pub struct SequentialIds(AtomicU32);

impl IdGenerator for SequentialIds {
    fn next_id(&self) -> ProductId {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        ProductId::from_bytes({
            let mut bytes = [0u8; 12];
            bytes[8..].copy_from_slice(&n.to_be_bytes());
            bytes
        })
    }
}

/// Starts at a fixed instant and advances one second per reading.
pub struct SteppingClock(Mutex<DateTime<Utc>>);

impl Default for SteppingClock {
    fn default() -> Self {
        Self(Mutex::new(
            Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5)
                .single()
                .unwrap_or_default(),
        ))
    }
}

impl Clock for SteppingClock {
    fn now(&self) -> DateTime<Utc> {
        let mut now = self.0.lock().unwrap();
        *now += chrono::Duration::seconds(1);
        *now
    }
}

/// A `ProductService` wired to the fakes, with handles on each of them.
pub struct Fixture {
    pub service: ProductService,
    pub repository: Arc<InMemoryRepository>,
    pub cache: Arc<InMemoryCache>,
    pub publisher: Arc<RecordingPublisher>,
}

impl Default for Fixture {
    fn default() -> Self {
        let repository = Arc::new(InMemoryRepository::default());
        let cache = Arc::new(InMemoryCache::default());
        let publisher = Arc::new(RecordingPublisher::default());
        let service = ProductService::new(
            repository.clone(),
            cache.clone(),
            publisher.clone(),
            Arc::new(SequentialIds::default()),
            Arc::new(SteppingClock::default()),
        );
        Self {
            service,
            repository,
            cache,
            publisher,
        }
    }
}

/// Valid input with this name.
pub fn raw_product(name: &str) -> UnvalidatedProduct {
    UnvalidatedProduct {
        category_id: Some("65a1f0c2e4b0a1b2c3d4e5f6".into()),
        name: Some(name.into()),
        description: Some("Something to sell".into()),
        price: Some(12.5),
        image_url: None,
        photos: vec![],
        quantity: Some(1),
        rating: Some(5),
    }
}
