//! Use-case tests against in-memory fakes of the ports (no I/O).

use std::sync::atomic::Ordering;

use futures::executor::block_on;

use super::fakes::{raw_product as raw, Fixture};
use super::*;
use crate::domain::*;

fn fixture() -> Fixture {
    Fixture::default()
}

/// A position on the update topic (partition 0).
fn at(offset: i64) -> LogPosition {
    LogPosition {
        partition: 0,
        offset,
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
    assert!(f.repository.live().is_empty());
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
fn update_changes_fields_keeps_created_at_and_caches_the_new_version() {
    let f = fixture();
    let created = block_on(f.service.create(raw("Desk lamp"))).unwrap();
    block_on(f.service.get(created.id.as_str())).unwrap();
    assert!(f.cache.entries.lock().unwrap().contains_key(&created.id));
    let updated = block_on(f.service.update(created.id.as_str(), raw("Floor lamp"))).unwrap();
    assert_eq!(updated.draft.name.as_str(), "Floor lamp");
    assert_eq!(updated.created_at, created.created_at);
    let reads = f.repository.reads.load(Ordering::SeqCst);
    let read = block_on(f.service.get(created.id.as_str())).unwrap();
    assert_eq!(read.draft.name.as_str(), "Floor lamp");
    assert_eq!(
        f.repository.reads.load(Ordering::SeqCst),
        reads,
        "served from the cache"
    );
}

#[test]
fn a_slow_reader_cannot_put_an_older_version_back_in_the_cache() {
    let f = fixture();
    let id = block_on(f.service.create(raw("Desk lamp"))).unwrap().id;
    // A reader read revision 1 before the update, and puts it after.
    let Some(Stored::Live(old, old_revision)) = block_on(f.repository.find_by_id(&id)).unwrap()
    else {
        panic!("stored")
    };
    block_on(f.service.update(id.as_str(), raw("Floor lamp"))).unwrap();
    block_on(f.cache.put(&id, &CacheEntry::Product(old), old_revision)).unwrap();
    let read = block_on(f.service.get(id.as_str())).unwrap();
    assert_eq!(read.draft.name.as_str(), "Floor lamp");
}

#[test]
fn update_of_missing_product_is_not_found_not_upsert() {
    let f = fixture();
    let err = block_on(f.service.update("65a1f0c2e4b0a1b2c3d4e5f6", raw("Ghost"))).unwrap_err();
    assert!(matches!(err, AppError::NotFound(_)), "{err:?}");
    assert!(f.repository.live().is_empty());
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
fn a_deleted_product_is_cached_as_deleted_and_not_read_again() {
    let f = fixture();
    let id = block_on(f.service.create(raw("Desk lamp"))).unwrap().id;
    block_on(f.service.get(id.as_str())).unwrap();
    block_on(f.service.delete(id.as_str())).unwrap();
    let reads = f.repository.reads.load(Ordering::SeqCst);
    assert!(matches!(
        block_on(f.service.get(id.as_str())),
        Err(AppError::NotFound(_))
    ));
    assert_eq!(f.repository.reads.load(Ordering::SeqCst), reads);
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

/// An index that finds one product, once it is built.
struct OneHitIndex {
    built: bool,
}

#[async_trait::async_trait]
impl ProductSearch for OneHitIndex {
    async fn search(&self, query: &SearchQuery) -> Result<Option<SearchPage>, PortError> {
        Ok(self.built.then(|| SearchPage {
            total_count: 1,
            page: query.page,
            size: query.size,
            products: vec![],
        }))
    }
}

#[test]
fn a_search_index_answers_searches_once_built_else_the_repository() {
    let f = fixture();
    block_on(f.service.create(raw("Lamp"))).unwrap();
    let query = SearchQuery::parse(Some("lamp"), None, None).unwrap();
    let built = f
        .service
        .clone()
        .with_search(std::sync::Arc::new(OneHitIndex { built: true }));
    let other = SearchQuery::parse(Some("nothing like it"), None, None).unwrap();
    assert_eq!(block_on(built.search(other)).unwrap().total_count, 1);
    let building = f
        .service
        .clone()
        .with_search(std::sync::Arc::new(OneHitIndex { built: false }));
    let page = block_on(building.search(query)).unwrap();
    assert_eq!(page.products[0].draft.name.as_str(), "Lamp");
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
    assert!(f.repository.live().is_empty());
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
        block_on(f.service.apply(&command, at(0))).unwrap(),
        ApplyOutcome::Applied
    );
    assert_eq!(
        block_on(f.service.apply(&command, at(0))).unwrap(),
        ApplyOutcome::Duplicate
    );
    assert_eq!(f.repository.live().len(), 1);
}

#[test]
fn a_redelivered_update_never_overwrites_a_later_one() {
    let f = fixture();
    let id = block_on(f.service.submit_create(raw("Lamp v0"))).unwrap();
    block_on(f.service.submit_update(id.as_str(), raw("Lamp v1"))).unwrap();
    block_on(f.service.submit_update(id.as_str(), raw("Lamp v2"))).unwrap();
    let commands = f.publisher.commands.lock().unwrap().clone();
    block_on(f.service.apply(&commands[0], at(0))).unwrap();
    assert_eq!(
        block_on(f.service.apply(&commands[1], at(1))).unwrap(),
        ApplyOutcome::Applied
    );
    assert_eq!(
        block_on(f.service.apply(&commands[2], at(2))).unwrap(),
        ApplyOutcome::Applied
    );
    // v1 redelivered after v2: its position was applied already.
    assert_eq!(
        block_on(f.service.apply(&commands[1], at(1))).unwrap(),
        ApplyOutcome::Duplicate
    );
    let stored = block_on(f.service.get(id.as_str())).unwrap();
    assert_eq!(stored.draft.name.as_str(), "Lamp v2");
}

#[test]
fn an_update_before_its_create_is_not_found_then_applies() {
    let f = fixture();
    let id = block_on(f.service.submit_create(raw("Lamp"))).unwrap();
    block_on(f.service.submit_update(id.as_str(), raw("Lamp renamed"))).unwrap();
    let commands = f.publisher.commands.lock().unwrap().clone();
    let err = block_on(f.service.apply(&commands[1], at(7))).unwrap_err();
    assert!(matches!(err, AppError::NotFound(_)));
    block_on(f.service.apply(&commands[0], at(3))).unwrap();
    assert_eq!(
        block_on(f.service.apply(&commands[1], at(7))).unwrap(),
        ApplyOutcome::Applied
    );
}

#[test]
fn applying_an_update_puts_the_new_version_in_the_cache() {
    let f = fixture();
    let product = block_on(f.service.create(raw("Lamp"))).unwrap();
    block_on(f.service.get(product.id.as_str())).unwrap();
    block_on(
        f.service
            .submit_update(product.id.as_str(), raw("Lamp renamed")),
    )
    .unwrap();
    let command = f.publisher.commands.lock().unwrap()[0].clone();
    block_on(f.service.apply(&command, at(0))).unwrap();
    let cached = f.cache.entries.lock().unwrap().get(&product.id).cloned();
    let Some((CacheEntry::Product(cached), 2)) = cached else {
        panic!("expected revision 2 cached, got {cached:?}")
    };
    assert_eq!(cached.draft.name.as_str(), "Lamp renamed");
}

#[test]
fn the_log_orders_updates_not_their_timestamps() {
    let f = fixture();
    let id = block_on(f.service.submit_create(raw("Lamp"))).unwrap();
    block_on(f.service.submit_update(id.as_str(), raw("Lamp first"))).unwrap();
    block_on(f.service.submit_update(id.as_str(), raw("Lamp second"))).unwrap();
    let mut commands = f.publisher.commands.lock().unwrap().clone();
    // The second update carries the older clock (another replica's).
    if let (ProductCommand::Update(first), ProductCommand::Update(second)) =
        (commands[1].clone(), &mut commands[2])
    {
        second.updated_at = first.updated_at - chrono::Duration::seconds(5);
    }
    block_on(f.service.apply(&commands[0], at(0))).unwrap();
    block_on(f.service.apply(&commands[1], at(10))).unwrap();
    assert_eq!(
        block_on(f.service.apply(&commands[2], at(11))).unwrap(),
        ApplyOutcome::Applied
    );
    let stored = block_on(f.service.get(id.as_str())).unwrap();
    assert_eq!(stored.draft.name.as_str(), "Lamp second");
}

#[test]
fn a_deleted_product_never_comes_back() {
    let f = fixture();
    let id = block_on(f.service.submit_create(raw("Lamp"))).unwrap();
    block_on(f.service.submit_update(id.as_str(), raw("Lamp renamed"))).unwrap();
    let commands = f.publisher.commands.lock().unwrap().clone();
    block_on(f.service.apply(&commands[0], at(0))).unwrap();
    block_on(f.service.delete(id.as_str())).unwrap();
    assert_eq!(
        block_on(f.service.apply(&commands[0], at(0))).unwrap(),
        ApplyOutcome::Duplicate
    );
    assert_eq!(
        block_on(f.service.apply(&commands[1], at(1))).unwrap(),
        ApplyOutcome::Deleted
    );
    assert!(matches!(
        block_on(f.service.get(id.as_str())),
        Err(AppError::NotFound(_))
    ));
}

#[test]
fn a_delete_before_the_create_is_applied_keeps_it_deleted() {
    let f = fixture();
    let id = block_on(f.service.submit_create(raw("Lamp"))).unwrap();
    let command = f.publisher.commands.lock().unwrap()[0].clone();
    assert!(matches!(
        block_on(f.service.delete(id.as_str())),
        Err(AppError::NotFound(_))
    ));
    block_on(f.service.apply(&command, at(0))).unwrap();
    assert!(matches!(
        block_on(f.service.get(id.as_str())),
        Err(AppError::NotFound(_))
    ));
    assert!(f.repository.live().is_empty());
}

#[test]
fn a_direct_update_does_not_make_a_log_update_stale() {
    let f = fixture();
    let id = block_on(f.service.submit_create(raw("Lamp"))).unwrap();
    block_on(f.service.submit_update(id.as_str(), raw("Lamp from Kafka"))).unwrap();
    let commands = f.publisher.commands.lock().unwrap().clone();
    block_on(f.service.apply(&commands[0], at(0))).unwrap();
    block_on(f.service.update(id.as_str(), raw("Lamp from gRPC"))).unwrap();
    assert_eq!(
        block_on(f.service.apply(&commands[1], at(1))).unwrap(),
        ApplyOutcome::Applied
    );
    let stored = block_on(f.service.get(id.as_str())).unwrap();
    assert_eq!(stored.draft.name.as_str(), "Lamp from Kafka");
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
            .apply(&ProductCommand::Create(products[1].clone()), at(0)),
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
    assert_eq!(f.repository.live().len(), 3);
}

#[test]
fn within_a_batch_the_first_create_of_an_id_wins() {
    let f = fixture();
    let mut products = created_products(&f, &["First lamp"]);
    let mut replay = products[0].clone();
    replay.draft.name = ProductName::parse("Second lamp").unwrap();
    products.push(replay);
    let outcomes = block_on(f.service.apply_creates(&products)).unwrap();
    assert_eq!(
        outcomes.into_iter().map(Result::ok).collect::<Vec<_>>(),
        vec![Some(ApplyOutcome::Applied), Some(ApplyOutcome::Duplicate)]
    );
    let stored = block_on(f.service.get(products[0].id.as_str())).unwrap();
    assert_eq!(stored.draft.name.as_str(), "First lamp");
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

#[test]
fn a_redelivered_update_repairs_the_cache_a_crash_left_behind() {
    let f = fixture();
    let id = block_on(f.service.submit_create(raw("Lamp"))).unwrap();
    block_on(f.service.submit_update(id.as_str(), raw("Lamp first"))).unwrap();
    block_on(f.service.submit_update(id.as_str(), raw("Lamp second"))).unwrap();
    let commands = f.publisher.commands.lock().unwrap().clone();
    block_on(f.service.apply(&commands[0], at(0))).unwrap();
    block_on(f.service.apply(&commands[1], at(1))).unwrap();
    // The second update is written, then the replica dies before its cache
    // put: the cache still holds the first.
    let ProductCommand::Update(second) = &commands[2] else {
        panic!("expected an update")
    };
    block_on(f.repository.update(second, UpdateOrder::Log(at(2)))).unwrap();
    assert_eq!(
        block_on(f.service.get(id.as_str()))
            .unwrap()
            .draft
            .name
            .as_str(),
        "Lamp first"
    );
    // Its record was not settled, so the partition's next owner reads it again.
    assert_eq!(
        block_on(f.service.apply(&commands[2], at(2))).unwrap(),
        ApplyOutcome::Duplicate
    );
    assert_eq!(
        block_on(f.service.get(id.as_str()))
            .unwrap()
            .draft
            .name
            .as_str(),
        "Lamp second"
    );
}
