//! Use-case tests against in-memory fakes of the ports (no I/O).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};

use futures::executor::block_on;

use super::*;
use crate::domain::*;

#[derive(Default)]
struct InMemoryRepository {
    products: Mutex<HashMap<ProductId, Product>>,
    reads: AtomicUsize,
    down: AtomicBool,
}

impl InMemoryRepository {
    fn check_up(&self) -> Result<(), PortError> {
        if self.down.load(Ordering::SeqCst) {
            Err(PortError::Unavailable("database down".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl ProductRepository for InMemoryRepository {
    async fn insert(&self, product: &Product) -> Result<InsertOutcome, PortError> {
        self.check_up()?;
        let mut products = self.products.lock().unwrap();
        if products.contains_key(&product.id) {
            return Ok(InsertOutcome::AlreadyExists);
        }
        products.insert(product.id.clone(), product.clone());
        Ok(InsertOutcome::Inserted)
    }

    async fn update(&self, update: &ProductUpdate) -> Result<UpdateOutcome, PortError> {
        self.check_up()?;
        let mut products = self.products.lock().unwrap();
        let Some(stored) = products.get_mut(&update.id) else {
            return Ok(UpdateOutcome::NotFound);
        };
        if stored.updated_at > update.updated_at {
            return Ok(UpdateOutcome::Stale);
        }
        *stored = Product::from_draft(
            update.id.clone(),
            update.draft.clone(),
            stored.created_at,
            update.updated_at,
        );
        Ok(UpdateOutcome::Applied(stored.clone()))
    }

    async fn find_by_id(&self, id: &ProductId) -> Result<Option<Product>, PortError> {
        self.check_up()?;
        self.reads.fetch_add(1, Ordering::SeqCst);
        Ok(self.products.lock().unwrap().get(id).cloned())
    }

    async fn search(&self, query: &SearchQuery) -> Result<SearchPage, PortError> {
        self.check_up()?;
        let needle = query.text.as_str().to_lowercase();
        let mut hits: Vec<Product> = self
            .products
            .lock()
            .unwrap()
            .values()
            .filter(|p| {
                p.name.as_str().to_lowercase().contains(&needle)
                    || p.description.as_str().to_lowercase().contains(&needle)
            })
            .cloned()
            .collect();
        hits.sort_by(|a, b| a.id.cmp(&b.id));
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

    async fn delete(&self, id: &ProductId) -> Result<bool, PortError> {
        self.check_up()?;
        Ok(self.products.lock().unwrap().remove(id).is_some())
    }

    async fn ping(&self) -> Result<(), PortError> {
        self.check_up()
    }
}

#[derive(Default)]
struct InMemoryCache {
    entries: Mutex<HashMap<ProductId, Product>>,
    broken: AtomicBool,
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
    async fn get(&self, id: &ProductId) -> Result<Option<Product>, PortError> {
        self.check()?;
        Ok(self.entries.lock().unwrap().get(id).cloned())
    }
    async fn put(&self, product: &Product) -> Result<(), PortError> {
        self.check()?;
        self.entries
            .lock()
            .unwrap()
            .insert(product.id.clone(), product.clone());
        Ok(())
    }
    async fn remove(&self, id: &ProductId) -> Result<(), PortError> {
        self.check()?;
        self.entries.lock().unwrap().remove(id);
        Ok(())
    }
}

#[derive(Default)]
struct RecordingPublisher {
    commands: Mutex<Vec<ProductCommand>>,
    down: AtomicBool,
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

#[derive(Default)]
struct SequentialIds(AtomicU32);

impl IdGenerator for SequentialIds {
    fn next_id(&self) -> ProductId {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        ProductId::parse(&format!("{n:024x}")).unwrap()
    }
}

/// Starts at a fixed instant and advances one second per reading.
struct SteppingClock(Mutex<DateTime<Utc>>);

impl Clock for SteppingClock {
    fn now(&self) -> DateTime<Utc> {
        let mut now = self.0.lock().unwrap();
        *now += chrono::Duration::seconds(1);
        *now
    }
}

struct Fixture {
    service: ProductService,
    repository: Arc<InMemoryRepository>,
    cache: Arc<InMemoryCache>,
    publisher: Arc<RecordingPublisher>,
}

fn fixture() -> Fixture {
    let repository = Arc::new(InMemoryRepository::default());
    let cache = Arc::new(InMemoryCache::default());
    let publisher = Arc::new(RecordingPublisher::default());
    let clock = SteppingClock(Mutex::new(
        Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
    ));
    let service = ProductService::new(
        repository.clone(),
        cache.clone(),
        publisher.clone(),
        Arc::new(SequentialIds::default()),
        Arc::new(clock),
    );
    Fixture {
        service,
        repository,
        cache,
        publisher,
    }
}

fn raw(name: &str) -> UnvalidatedProduct {
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

#[test]
fn create_assigns_id_and_timestamps_then_get_reads_it() {
    let f = fixture();
    let created = block_on(f.service.create(raw("Desk lamp"))).unwrap();
    assert_eq!(created.id.as_str(), "000000000000000000000001");
    assert_eq!(created.created_at, created.updated_at);
    let read = block_on(f.service.get(created.id.as_str())).unwrap();
    assert_eq!(read, created);
}

#[test]
fn create_rejects_invalid_input_and_stores_nothing() {
    let f = fixture();
    let err = block_on(f.service.create(UnvalidatedProduct::default())).unwrap_err();
    let AppError::Validation(errors) = err else {
        panic!("expected validation error, got {err:?}")
    };
    assert!(errors.fields().len() >= 5);
    assert!(f.repository.products.lock().unwrap().is_empty());
}

#[test]
fn second_get_is_served_from_cache() {
    let f = fixture();
    let id = block_on(f.service.create(raw("Desk lamp"))).unwrap().id;
    block_on(f.service.get(id.as_str())).unwrap();
    block_on(f.service.get(id.as_str())).unwrap();
    assert_eq!(f.repository.reads.load(Ordering::SeqCst), 1);
}

#[test]
fn update_changes_fields_keeps_created_at_and_invalidates_cache() {
    let f = fixture();
    let created = block_on(f.service.create(raw("Desk lamp"))).unwrap();
    block_on(f.service.get(created.id.as_str())).unwrap();
    assert!(f.cache.entries.lock().unwrap().contains_key(&created.id));
    let updated = block_on(f.service.update(created.id.as_str(), raw("Floor lamp"))).unwrap();
    assert_eq!(updated.name.as_str(), "Floor lamp");
    assert_eq!(updated.created_at, created.created_at);
    assert!(!f.cache.entries.lock().unwrap().contains_key(&created.id));
    let read = block_on(f.service.get(created.id.as_str())).unwrap();
    assert_eq!(read.name.as_str(), "Floor lamp");
}

#[test]
fn update_of_missing_product_is_not_found_not_upsert() {
    let f = fixture();
    let err = block_on(f.service.update("65a1f0c2e4b0a1b2c3d4e5f6", raw("Ghost"))).unwrap_err();
    assert!(matches!(err, AppError::NotFound(_)), "{err:?}");
    assert!(f.repository.products.lock().unwrap().is_empty());
}

#[test]
fn update_reports_bad_id_and_bad_fields_together() {
    let f = fixture();
    let err = block_on(f.service.update("nope", raw("x"))).unwrap_err();
    let AppError::Validation(errors) = err else {
        panic!("expected validation error")
    };
    let fields: Vec<&str> = errors.fields().iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["productId", "name"]);
}

#[test]
fn delete_then_get_is_not_found_and_second_delete_too() {
    let f = fixture();
    let id = block_on(f.service.create(raw("Desk lamp"))).unwrap().id;
    block_on(f.service.get(id.as_str())).unwrap();
    block_on(f.service.delete(id.as_str())).unwrap();
    assert!(matches!(
        block_on(f.service.get(id.as_str())),
        Err(AppError::NotFound(_))
    ));
    assert!(matches!(
        block_on(f.service.delete(id.as_str())),
        Err(AppError::NotFound(_))
    ));
}

#[test]
fn broken_cache_degrades_to_the_repository() {
    let f = fixture();
    let id = block_on(f.service.create(raw("Desk lamp"))).unwrap().id;
    f.cache.broken.store(true, Ordering::SeqCst);
    assert!(block_on(f.service.get(id.as_str())).is_ok());
    assert!(block_on(f.service.update(id.as_str(), raw("Floor lamp"))).is_ok());
    assert!(block_on(f.service.delete(id.as_str())).is_ok());
}

#[test]
fn database_down_is_unavailable_and_transient() {
    let f = fixture();
    f.repository.down.store(true, Ordering::SeqCst);
    let err = block_on(f.service.create(raw("Desk lamp"))).unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(block_on(f.service.database_ready()).is_err());
}

#[test]
fn search_pages_through_matches() {
    let f = fixture();
    for i in 0..5 {
        block_on(f.service.create(raw(&format!("Lamp {i}")))).unwrap();
    }
    block_on(f.service.create(raw("Chair"))).unwrap();
    let query = SearchQuery::parse(Some("LAMP"), Some(2), Some(2)).unwrap();
    let page = block_on(f.service.search(query)).unwrap();
    assert_eq!(page.total_count, 5);
    assert_eq!(page.total_pages(), 3);
    assert_eq!(page.products.len(), 2);
    assert!(page.has_more());
}

#[test]
fn invalid_id_is_a_validation_error() {
    let f = fixture();
    let err = block_on(f.service.get("ObjectID(\"x\")")).unwrap_err();
    assert!(matches!(err, AppError::Validation(_)));
}

#[test]
fn submit_create_publishes_a_valid_product_and_stores_nothing() {
    let f = fixture();
    let id = block_on(f.service.submit_create(raw("Queued lamp"))).unwrap();
    let commands = f.publisher.commands.lock().unwrap();
    let [ProductCommand::Create(product)] = commands.as_slice() else {
        panic!("expected one create, got {commands:?}")
    };
    assert_eq!(product.id, id);
    assert!(f.repository.products.lock().unwrap().is_empty());
}

#[test]
fn submit_rejects_invalid_input_without_publishing() {
    let f = fixture();
    assert!(block_on(f.service.submit_create(UnvalidatedProduct::default())).is_err());
    assert!(block_on(f.service.submit_update("bad", raw("ok name"))).is_err());
    assert!(f.publisher.commands.lock().unwrap().is_empty());
}

#[test]
fn submit_with_broker_down_is_unavailable() {
    let f = fixture();
    f.publisher.down.store(true, Ordering::SeqCst);
    let err = block_on(f.service.submit_create(raw("Lamp"))).unwrap_err();
    assert!(err.is_transient());
}

#[test]
fn applying_a_create_twice_is_a_duplicate() {
    let f = fixture();
    block_on(f.service.submit_create(raw("Lamp"))).unwrap();
    let command = f.publisher.commands.lock().unwrap()[0].clone();
    assert_eq!(
        block_on(f.service.apply(&command)).unwrap(),
        ApplyOutcome::Applied
    );
    assert_eq!(
        block_on(f.service.apply(&command)).unwrap(),
        ApplyOutcome::Duplicate
    );
    assert_eq!(f.repository.products.lock().unwrap().len(), 1);
}

#[test]
fn an_older_update_never_overwrites_a_newer_one() {
    let f = fixture();
    let id = block_on(f.service.submit_create(raw("Lamp v0"))).unwrap();
    block_on(f.service.submit_update(id.as_str(), raw("Lamp v1"))).unwrap();
    block_on(f.service.submit_update(id.as_str(), raw("Lamp v2"))).unwrap();
    let commands = f.publisher.commands.lock().unwrap().clone();
    block_on(f.service.apply(&commands[0])).unwrap();
    assert_eq!(
        block_on(f.service.apply(&commands[2])).unwrap(),
        ApplyOutcome::Applied
    );
    // v1 replayed after v2: superseded.
    assert_eq!(
        block_on(f.service.apply(&commands[1])).unwrap(),
        ApplyOutcome::Duplicate
    );
    let stored = block_on(f.service.get(id.as_str())).unwrap();
    assert_eq!(stored.name.as_str(), "Lamp v2");
}

#[test]
fn an_update_before_its_create_is_not_found_then_applies() {
    let f = fixture();
    let id = block_on(f.service.submit_create(raw("Lamp"))).unwrap();
    block_on(f.service.submit_update(id.as_str(), raw("Lamp renamed"))).unwrap();
    let commands = f.publisher.commands.lock().unwrap().clone();
    let err = block_on(f.service.apply(&commands[1])).unwrap_err();
    assert!(matches!(err, AppError::NotFound(_)));
    block_on(f.service.apply(&commands[0])).unwrap();
    assert_eq!(
        block_on(f.service.apply(&commands[1])).unwrap(),
        ApplyOutcome::Applied
    );
}

#[test]
fn applying_an_update_invalidates_the_cache() {
    let f = fixture();
    let product = block_on(f.service.create(raw("Lamp"))).unwrap();
    block_on(f.service.get(product.id.as_str())).unwrap();
    block_on(
        f.service
            .submit_update(product.id.as_str(), raw("Lamp renamed")),
    )
    .unwrap();
    let command = f.publisher.commands.lock().unwrap()[0].clone();
    block_on(f.service.apply(&command)).unwrap();
    assert!(!f.cache.entries.lock().unwrap().contains_key(&product.id));
}

fn created_products(f: &Fixture, names: &[&str]) -> Vec<Product> {
    for name in names {
        block_on(f.service.submit_create(raw(name))).unwrap();
    }
    f.publisher
        .commands
        .lock()
        .unwrap()
        .iter()
        .map(|c| match c {
            ProductCommand::Create(p) => p.clone(),
            ProductCommand::Update(_) => panic!("only creates were submitted"),
        })
        .collect()
}

#[test]
fn a_batch_of_creates_applies_each_once_in_order() {
    let f = fixture();
    let products = created_products(&f, &["Lamp", "Desk", "Chair"]);
    block_on(
        f.service
            .apply(&ProductCommand::Create(products[1].clone())),
    )
    .unwrap();
    let outcomes = block_on(f.service.apply_creates(&products)).unwrap();
    assert_eq!(
        outcomes.into_iter().map(Result::ok).collect::<Vec<_>>(),
        vec![
            Some(ApplyOutcome::Applied),
            Some(ApplyOutcome::Duplicate),
            Some(ApplyOutcome::Applied)
        ]
    );
    assert_eq!(f.repository.products.lock().unwrap().len(), 3);
}

#[test]
fn within_a_batch_the_first_create_of_an_id_wins() {
    let f = fixture();
    let mut products = created_products(&f, &["First lamp"]);
    let mut replay = products[0].clone();
    replay.name = ProductName::parse("Second lamp").unwrap();
    products.push(replay);
    let outcomes = block_on(f.service.apply_creates(&products)).unwrap();
    assert_eq!(
        outcomes.into_iter().map(Result::ok).collect::<Vec<_>>(),
        vec![Some(ApplyOutcome::Applied), Some(ApplyOutcome::Duplicate)]
    );
    let stored = block_on(f.service.get(products[0].id.as_str())).unwrap();
    assert_eq!(stored.name.as_str(), "First lamp");
}

#[test]
fn a_batch_with_the_database_down_fails_whole_and_transient() {
    let f = fixture();
    let products = created_products(&f, &["Lamp", "Desk"]);
    f.repository.down.store(true, Ordering::SeqCst);
    let err = block_on(f.service.apply_creates(&products)).unwrap_err();
    assert!(err.is_transient());
    f.repository.down.store(false, Ordering::SeqCst);
    let outcomes = block_on(f.service.apply_creates(&products)).unwrap();
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, Ok(ApplyOutcome::Applied))));
}
