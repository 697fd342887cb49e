//! MongoDB repository (official async driver).
//!
//! Works against real MongoDB 7 and FerretDB alike, so it sticks to what both
//! support: CRUD by `_id`, `$regex` with the `i` option, count, sort/skip/limit
//! and plain indexes (no text index, no transactions). Search text is escaped
//! so it is always matched literally.
//!
//! Besides the product fields, a document carries `rev` (a write counter: 1 on
//! create, +1 on every update and on delete; cache entries are ordered by it)
//! and `logPartition`/`logOffset`, the update-topic position of the last
//! Kafka update applied (a later update applies only past it: the log orders
//! updates, not clocks). A delete leaves a tombstone `{_id, deletedAt, rev}`,
//! so a redelivered create (insert with a known `_id`: duplicate key) or
//! update cannot bring the product back; tombstones are purged after the
//! command topics' retention (`mongo.tombstone_retention_hours`).
//!
//! With change events on, every write also stores its event in the document
//! (`event`, the embedded outbox of `crate::events`) and reports what it
//! stored to the [`EventRelay`]; writes run in a task of their own, so a
//! cancelled caller never leaves the relay guessing. [`outbox`] is the
//! relay's side of the database.
//!
//! [`document`] maps a product to its document and back; [`errors`]
//! classifies driver errors.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::{
    bson::{doc, oid::ObjectId, Document},
    error::ErrorKind,
    options::{ClientOptions, IndexOptions, Tls, TlsOptions},
    Client, Collection, Database, IndexModel,
};
use products_core::{
    app::{
        DeleteOutcome, InsertOutcome, PortError, ProductRepository, ProductUpdate, Revision,
        Stored, UpdateOrder, UpdateOutcome,
    },
    domain::{Product, ProductId, SearchPage, SearchQuery},
};

use tracing::Instrument;

use crate::{
    config::{ExposeSecret, MongoSettings},
    events::{EventKind, EventRelay, Ticket},
};

use self::{
    document::{
        bson_date, from_document, object_id, stored_event, to_document, update_changes, EventSlot,
        ProductDocument, DELETED_AT, EVENT, REV,
    },
    errors::{port_error, NAMESPACE_NOT_FOUND},
};

pub use self::errors::is_duplicate_key;
use self::writes::{insert_many_outcomes, outcome_views, settle_failed, Updated};

mod document;
mod errors;
mod outbox;
mod writes;

#[derive(Clone)]
pub struct MongoProductRepository {
    database: Database,
    products: Collection<ProductDocument>,
    /// The same collection, read as raw documents (products and tombstones).
    raw: Collection<Document>,
    /// The relays' checkpoints (`{collection}_event_relays`).
    relays: Collection<Document>,
    events: Option<EventRelay>,
}

impl MongoProductRepository {
    /// Creates the client; it connects lazily, so the service starts (and
    /// reports not-ready) while the database is down. TLS and credentials
    /// from the settings override those of the URI; secrets must have been
    /// resolved (`Settings::resolve_secrets`).
    pub async fn connect(settings: &MongoSettings) -> Result<Self, mongodb::error::Error> {
        let mut options = ClientOptions::parse(settings.uri.expose_secret()).await?;
        options.app_name = Some("products-service".to_owned());
        if settings.tls.enabled || settings.tls.ca_file.is_some() {
            let tls = TlsOptions::builder()
                .ca_file_path(settings.tls.ca_file.clone())
                .build();
            options.tls = Some(Tls::Enabled(tls));
        }
        let auth = &settings.auth;
        if auth.username.is_some() || auth.password.is_some() {
            let mut credential = options.credential.take().unwrap_or_default();
            if let Some(username) = &auth.username {
                credential.username = Some(username.clone());
            }
            if let Some(password) = &auth.password {
                credential.password = Some(password.expose_secret().to_owned());
            }
            options.credential = Some(credential);
        }
        options.server_selection_timeout =
            Some(Duration::from_millis(settings.server_selection_timeout_ms));
        options.connect_timeout = Some(Duration::from_millis(settings.connect_timeout_ms));
        let client = Client::with_options(options)?;
        let database = client.database(&settings.database);
        let products = database.collection(&settings.collection);
        let raw = database.collection(&settings.collection);
        let relays = database.collection(&format!("{}_event_relays", settings.collection));
        Ok(Self {
            database,
            products,
            raw,
            relays,
            events: None,
        })
    }

    /// Calls `visit` with every live product and its revision, read in
    /// batches: how the search index starts when there are no events to
    /// rebuild it from. A document that does not decode is logged and
    /// skipped. Returns how many were visited.
    #[tracing::instrument(name = "mongo.scan_live", skip_all, fields(db.system = "mongodb", db.operation = "find"), err)]
    pub async fn scan_live(
        &self,
        mut visit: impl FnMut(Product, u64) + Send,
    ) -> Result<u64, PortError> {
        let mut cursor = self
            .products
            .find(doc! { DELETED_AT: { "$exists": false } })
            .batch_size(1000)
            .await
            .map_err(port_error)?;
        let mut visited = 0;
        while let Some(document) = cursor.try_next().await.map_err(port_error)? {
            let rev = u64::try_from(document.rev).unwrap_or_default();
            match from_document(document) {
                Ok(product) => {
                    visit(product, rev);
                    visited += 1;
                }
                Err(err) => tracing::warn!(error = %err, "stored product skipped"),
            }
        }
        Ok(visited)
    }

    /// The service's database (other collections share the client's pool).
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// The same repository, storing an event with every change and handing
    /// it to `relay`.
    pub fn with_events(&self, relay: EventRelay) -> Self {
        Self {
            events: Some(relay),
            ..self.clone()
        }
    }

    async fn ticket(&self, id: &ProductId, kind: EventKind) -> Option<Ticket> {
        match &self.events {
            Some(relay) => Some(relay.reserve(id, kind).await),
            None => None,
        }
    }

    /// Runs a write to completion in its own task: the caller may be
    /// cancelled (a request timeout), the write and its ticket are not.
    async fn detached<T, F>(&self, write: F) -> Result<T, PortError>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, PortError>> + Send + 'static,
    {
        tokio::spawn(write.in_current_span())
            .await
            .map_err(|err| PortError::Internal(format!("write task failed: {err}")))?
    }

    /// Creates the indexes search and listing rely on, those missing only,
    /// one per command. Sending them together when some exist already
    /// crashes FerretDB 1.24's `createIndexes` (a panic that drops the
    /// connection and whatever else was in flight on it), and skipping
    /// existing ones makes a restart on a populated collection cost one
    /// `listIndexes`. Retried by the caller until the database answers.
    #[tracing::instrument(skip(self), err)]
    pub async fn ensure_indexes(&self) -> Result<(), PortError> {
        let existing = match self.products.list_index_names().await {
            Ok(names) => names,
            // No collection yet: nothing exists.
            Err(err) if matches!(err.kind.as_ref(), ErrorKind::Command(e) if e.code == NAMESPACE_NOT_FOUND) => {
                Vec::new()
            }
            Err(err) => return Err(port_error(err)),
        };
        let wanted = [
            (doc! { "categoryId": 1 }, "categoryId_1"),
            (doc! { "name": 1, "_id": 1 }, "name_1__id_1"),
        ];
        for (keys, name) in wanted {
            if existing.iter().any(|e| e == name) {
                continue;
            }
            let index = IndexModel::builder()
                .keys(keys)
                .options(IndexOptions::builder().name(name.to_owned()).build())
                .build();
            self.products
                .create_index(index)
                .await
                .map_err(port_error)?;
            tracing::info!(index = name, "index created");
        }
        Ok(())
    }

    pub async fn drop_database(&self) -> Result<(), PortError> {
        self.database.drop().await.map_err(port_error)
    }

    /// Deletes tombstones older than `cutoff` (after the command topics'
    /// retention no record can bring their product back); how many.
    #[tracing::instrument(skip(self), err)]
    pub async fn purge_tombstones(&self, cutoff: DateTime<Utc>) -> Result<u64, PortError> {
        let result = self
            .raw
            .delete_many(doc! { DELETED_AT: { "$lt": bson_date(cutoff) } })
            .await
            .map_err(port_error)?;
        Ok(result.deleted_count)
    }

    /// The product or its tombstone.
    async fn find_stored(&self, id: ObjectId) -> Result<Option<Stored>, PortError> {
        let Some(document) = self
            .raw
            .find_one(doc! { "_id": id })
            .await
            .map_err(port_error)?
        else {
            return Ok(None);
        };
        if document.contains_key(DELETED_AT) {
            let revision = revision_of(document.get_i64(REV).unwrap_or_default());
            return Ok(Some(Stored::Deleted(revision)));
        }
        let product: ProductDocument = mongodb::bson::from_document(document).map_err(|err| {
            PortError::Internal(format!(
                "stored product {} is unreadable: {err}",
                id.to_hex()
            ))
        })?;
        let revision = revision_of(product.rev);
        Ok(Some(Stored::Live(from_document(product)?, revision)))
    }
}

#[async_trait]
impl ProductRepository for MongoProductRepository {
    #[tracing::instrument(name = "mongo.insert", skip_all, fields(db.system = "mongodb", db.operation = "insert", product_id = %product.id), err)]
    async fn insert(&self, product: &Product) -> Result<InsertOutcome, PortError> {
        let ticket = self.ticket(&product.id, EventKind::Created).await;
        let mut document = to_document(product);
        document.event = ticket.as_ref().map(|t| EventSlot::of(t.meta()));
        let products = self.products.clone();
        let product = product.clone();
        self.detached(async move {
            let started = Instant::now();
            let result = products.insert_one(document).await;
            observe("insert", started);
            match result {
                Ok(_) => {
                    if let Some(ticket) = ticket {
                        ticket.stored(1, Some(product), None);
                    }
                    Ok(InsertOutcome::Inserted)
                }
                Err(err) if is_duplicate_key(&err) => {
                    if let Some(ticket) = ticket {
                        ticket.not_stored();
                    }
                    Ok(InsertOutcome::AlreadyExists)
                }
                Err(err) => {
                    settle_failed(ticket, &err);
                    Err(port_error(err))
                }
            }
        })
        .await
    }

    /// One unordered `insert_many`: the server inserts what it can, and each
    /// duplicate `_id` comes back as a write error at its index (a replayed
    /// create: already applied).
    #[tracing::instrument(name = "mongo.insert_many", skip_all, fields(db.system = "mongodb", db.operation = "insert", db.operation.batch.size = products.len()), err)]
    async fn insert_many(
        &self,
        products: &[Product],
    ) -> Result<Vec<Result<InsertOutcome, PortError>>, PortError> {
        if products.is_empty() {
            return Ok(Vec::new());
        }
        // A batch takes its events' pending slots at once, so it may not
        // hold more than the relay's capacity: larger ones go in parts.
        if let Some(relay) = &self.events {
            if products.len() > relay.capacity() {
                let mut outcomes = Vec::with_capacity(products.len());
                for part in products.chunks(relay.capacity()) {
                    outcomes.extend(self.insert_many(part).await?);
                }
                return Ok(outcomes);
            }
        }
        let tickets: Vec<Option<Ticket>> = match &self.events {
            Some(relay) => {
                let ids: Vec<ProductId> = products.iter().map(|p| p.id.clone()).collect();
                relay
                    .reserve_batch(&ids, EventKind::Created)
                    .await
                    .into_iter()
                    .map(Some)
                    .collect()
            }
            None => products.iter().map(|_| None).collect(),
        };
        let documents: Vec<ProductDocument> = products
            .iter()
            .zip(&tickets)
            .map(|(product, ticket)| {
                let mut document = to_document(product);
                document.event = ticket.as_ref().map(|t| EventSlot::of(t.meta()));
                document
            })
            .collect();
        let collection = self.products.clone();
        let products = products.to_vec();
        self.detached(async move {
            let started = Instant::now();
            let result = collection.insert_many(documents).ordered(false).await;
            observe("insert_many", started);
            let outcomes = insert_many_outcomes(result, &products);
            for ((ticket, outcome), product) in tickets
                .into_iter()
                .zip(outcome_views(&outcomes, products.len()))
                .zip(products)
            {
                let Some(ticket) = ticket else { continue };
                match outcome {
                    Some(Ok(InsertOutcome::Inserted)) => ticket.stored(1, Some(product), None),
                    Some(Ok(InsertOutcome::AlreadyExists)) => ticket.not_stored(),
                    // Failed alone or with the batch: it may be there.
                    Some(Err(_)) | None => ticket.unknown(),
                }
            }
            outcomes
        })
        .await
    }

    #[tracing::instrument(name = "mongo.update", skip_all, fields(db.system = "mongodb", db.operation = "findAndModify", product_id = %update.id), err)]
    async fn update(
        &self,
        update: &ProductUpdate,
        order: UpdateOrder,
    ) -> Result<UpdateOutcome, PortError> {
        let ticket = self.ticket(&update.id, EventKind::Updated).await;
        let mut changes = update_changes(update, order);
        if let (Some(ticket), Ok(set)) = (&ticket, changes.get_document_mut("$set")) {
            set.insert(EVENT, EventSlot::of(ticket.meta()).to_bson());
        }
        let repository = self.clone();
        let update = update.clone();
        self.detached(async move {
            let started = Instant::now();
            let outcome = repository
                .update_ordered(object_id(&update.id), order, changes)
                .await;
            observe("update", started);
            match outcome {
                Ok(Updated::Applied(before)) => {
                    let prior = stored_event(before.clone()).ok().flatten();
                    let before: ProductDocument =
                        mongodb::bson::from_document(before).map_err(|err| {
                            PortError::Internal(format!(
                                "stored product {} is unreadable: {err}",
                                update.id
                            ))
                        })?;
                    let revision = revision_of(before.rev + 1);
                    let created_at = from_document(before)?.created_at;
                    let product = Product {
                        id: update.id.clone(),
                        draft: update.draft.clone(),
                        created_at,
                        updated_at: update.updated_at,
                    };
                    if let Some(ticket) = ticket {
                        let rev = i64::try_from(revision).unwrap_or(i64::MAX);
                        ticket.stored(rev, Some(product.clone()), prior);
                    }
                    Ok(UpdateOutcome::Applied(product, revision))
                }
                Ok(Updated::Not(outcome)) => {
                    if let Some(ticket) = ticket {
                        ticket.not_stored();
                    }
                    Ok(outcome)
                }
                Err(err) => Err(err.settle(ticket)),
            }
        })
        .await
    }

    #[tracing::instrument(name = "mongo.find_by_id", skip_all, fields(db.system = "mongodb", db.operation = "find", product_id = %id), err)]
    async fn find_by_id(&self, id: &ProductId) -> Result<Option<Stored>, PortError> {
        let started = Instant::now();
        let result = self.find_stored(object_id(id)).await;
        observe("find_by_id", started);
        result
    }

    #[tracing::instrument(name = "mongo.search", skip_all, fields(db.system = "mongodb", db.operation = "find", page = query.page, size = query.size), err)]
    async fn search(&self, query: &SearchQuery) -> Result<SearchPage, PortError> {
        let started = Instant::now();
        let mut filter = doc! { DELETED_AT: { "$exists": false } };
        if !query.text.is_empty() {
            let pattern = literal_pattern(query.text.as_str());
            filter.insert(
                "$or",
                vec![
                    doc! { "name": { "$regex": &pattern, "$options": "i" } },
                    doc! { "description": { "$regex": &pattern, "$options": "i" } },
                ],
            );
        }
        let total_count = self
            .products
            .count_documents(filter.clone())
            .await
            .map_err(port_error)?;
        // A page past the last match is empty without asking (its offset may
        // not even fit the i64 the driver sends as `skip`).
        let documents: Vec<ProductDocument> = if query.offset() >= total_count {
            Vec::new()
        } else {
            self.products
                .find(filter)
                // `_id` breaks ties so pages never overlap or skip.
                .sort(doc! { "name": 1, "_id": 1 })
                .skip(query.offset())
                .limit(i64::try_from(query.size).unwrap_or(i64::MAX))
                .await
                .map_err(port_error)?
                .try_collect()
                .await
                .map_err(port_error)?
        };
        observe("search", started);
        Ok(SearchPage {
            total_count,
            page: query.page,
            size: query.size,
            products: documents
                .into_iter()
                .map(from_document)
                .collect::<Result<_, _>>()?,
        })
    }

    #[tracing::instrument(name = "mongo.delete", skip_all, fields(db.system = "mongodb", db.operation = "delete", product_id = %id), err)]
    async fn delete(&self, id: &ProductId) -> Result<(DeleteOutcome, Revision), PortError> {
        let ticket = self.ticket(id, EventKind::Deleted).await;
        let repository = self.clone();
        let id = id.clone();
        self.detached(async move {
            let started = Instant::now();
            let result = repository.delete_stored(&id, ticket).await;
            observe("delete", started);
            result
        })
        .await
    }

    async fn ping(&self) -> Result<(), PortError> {
        self.database
            .run_command(doc! { "ping": 1 })
            .await
            .map(drop)
            .map_err(port_error)
    }
}

fn observe(operation: &'static str, started: Instant) {
    metrics::histogram!("mongodb_operation_duration_seconds", "operation" => operation)
        .record(started.elapsed().as_secs_f64());
}

/// Escapes ASCII punctuation so the text is matched literally. Both PCRE
/// (MongoDB) and RE2 (FerretDB) read `\` + punctuation as that character.
fn literal_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if c.is_ascii_punctuation() {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern
}

fn revision_of(rev: i64) -> Revision {
    Revision::try_from(rev).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::{literal_pattern, MongoProductRepository};
    use crate::config::Settings;
    use products_core::app::ProductRepository;

    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// Neither a bad URI nor an unreachable server echoes the password.
    #[tokio::test]
    async fn errors_do_not_echo_credentials() {
        let mut settings = Settings::load_from(None, Vec::new()).unwrap().mongo;
        settings.uri = "mongodb://products:uri-hunter2@127.0.0.1:99999/".into();
        let err = MongoProductRepository::connect(&settings)
            .await
            .err()
            .expect("port out of range");
        assert!(!format!("{err} {err:?}").contains("uri-hunter2"), "{err:?}");

        settings.uri = format!(
            "mongodb://products:uri-hunter2@127.0.0.1:{}/",
            closed_port()
        )
        .into();
        settings.auth.password = Some("auth-hunter2".into());
        settings.server_selection_timeout_ms = 200;
        let repository = MongoProductRepository::connect(&settings).await.unwrap();
        let err = repository.ping().await.unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn regex_metacharacters_are_escaped() {
        assert_eq!(literal_pattern(".*"), r"\.\*");
        assert_eq!(literal_pattern("(a+)+$"), r"\(a\+\)\+\$");
        assert_eq!(literal_pattern("["), r"\[");
        assert_eq!(literal_pattern("mug 2 ü"), "mug 2 ü");
    }
}
