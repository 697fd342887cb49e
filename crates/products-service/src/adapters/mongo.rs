//! MongoDB repository (official async driver).
//!
//! Works against real MongoDB 7 and FerretDB alike, so it sticks to what both
//! support: CRUD by `_id`, `$regex` with the `i` option, count, sort/skip/limit
//! and plain indexes (no text index, no transactions). Search text is escaped
//! so it is always matched literally.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::{
    bson::{doc, oid::ObjectId, Document},
    error::{ErrorKind, WriteFailure},
    options::{ClientOptions, IndexOptions, ReturnDocument, Tls, TlsOptions},
    Client, Collection, Database, IndexModel,
};
use products_core::{
    app::{InsertOutcome, PortError, ProductRepository, ProductUpdate, UpdateOutcome},
    domain::{
        CategoryId, Description, HttpUrl, Price, Product, ProductId, ProductName, Quantity, Rating,
        SearchPage, SearchQuery,
    },
};
use serde::{Deserialize, Serialize};

use crate::config::MongoSettings;

/// How a product is stored (field names as the Go original stored them).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProductDocument {
    #[serde(rename = "_id")]
    id: ObjectId,
    category_id: ObjectId,
    name: String,
    description: String,
    price: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image_url: Option<String>,
    #[serde(default)]
    photos: Vec<String>,
    quantity: i64,
    rating: i64,
    created_at: mongodb::bson::DateTime,
    updated_at: mongodb::bson::DateTime,
}

#[derive(Clone)]
pub struct MongoProductRepository {
    database: Database,
    products: Collection<ProductDocument>,
}

impl MongoProductRepository {
    /// Creates the client; it connects lazily, so the service starts (and
    /// reports not-ready) while the database is down. TLS and credentials
    /// from the settings override those of the URI; secrets must have been
    /// resolved (`Settings::resolve_secrets`).
    pub async fn connect(settings: &MongoSettings) -> Result<Self, mongodb::error::Error> {
        let mut options = ClientOptions::parse(&settings.uri).await?;
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
                credential.password = Some(password.expose().to_owned());
            }
            options.credential = Some(credential);
        }
        options.server_selection_timeout =
            Some(Duration::from_millis(settings.server_selection_timeout_ms));
        options.connect_timeout = Some(Duration::from_millis(settings.connect_timeout_ms));
        let client = Client::with_options(options)?;
        let database = client.database(&settings.database);
        let products = database.collection(&settings.collection);
        Ok(Self { database, products })
    }

    /// Creates the indexes search and listing rely on; idempotent (creating an
    /// existing index with the same spec is a no-op on both servers).
    #[tracing::instrument(skip(self), err)]
    pub async fn ensure_indexes(&self) -> Result<(), PortError> {
        let index = |keys: Document, name: &str| {
            IndexModel::builder()
                .keys(keys)
                .options(IndexOptions::builder().name(name.to_owned()).build())
                .build()
        };
        self.products
            .create_indexes([
                index(doc! { "categoryId": 1 }, "categoryId_1"),
                index(doc! { "name": 1, "_id": 1 }, "name_1__id_1"),
            ])
            .await
            .map_err(port_error)?;
        Ok(())
    }

    pub async fn drop_database(&self) -> Result<(), PortError> {
        self.database.drop().await.map_err(port_error)
    }

    /// Applies `changes` unless the stored product holds a newer version.
    /// Conditional on the version, so a replayed or older update never
    /// overwrites a newer state; one round trip in the common case.
    async fn update_versioned(
        &self,
        id: ObjectId,
        version: mongodb::bson::DateTime,
        changes: Document,
    ) -> Result<UpdateOutcome, PortError> {
        // Not matched: the product is missing, holds a newer version, or was
        // created between the two round trips (its create racing in on the
        // other topic). Only a newer stored version makes the update stale; a
        // product that appeared in between gets the update again.
        for _ in 0..3 {
            let updated = self
                .products
                .find_one_and_update(
                    doc! { "_id": id, "updatedAt": { "$lte": version } },
                    changes.clone(),
                )
                .return_document(ReturnDocument::After)
                .upsert(false)
                .await
                .map_err(port_error)?;
            if let Some(document) = updated {
                return Ok(UpdateOutcome::Applied(from_document(document)?));
            }
            let stored = self
                .products
                .find_one(doc! { "_id": id })
                .await
                .map_err(port_error)?;
            match stored {
                None => return Ok(UpdateOutcome::NotFound),
                Some(stored) if stored.updated_at > version => return Ok(UpdateOutcome::Stale),
                Some(_) => {}
            }
        }
        Err(PortError::Unavailable(format!(
            "product {} kept changing during the update",
            id.to_hex()
        )))
    }
}

#[async_trait]
impl ProductRepository for MongoProductRepository {
    #[tracing::instrument(name = "mongo.insert", skip_all, fields(db.system = "mongodb", db.operation = "insert", product_id = %product.id), err)]
    async fn insert(&self, product: &Product) -> Result<InsertOutcome, PortError> {
        let started = Instant::now();
        let result = self.products.insert_one(to_document(product)).await;
        observe("insert", started);
        match result {
            Ok(_) => Ok(InsertOutcome::Inserted),
            Err(err) if is_duplicate_key(&err) => Ok(InsertOutcome::AlreadyExists),
            Err(err) => Err(port_error(err)),
        }
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
        let started = Instant::now();
        let result = self
            .products
            .insert_many(products.iter().map(to_document))
            .ordered(false)
            .await;
        observe("insert_many", started);
        let mut outcomes: Vec<Result<InsertOutcome, PortError>> =
            vec![Ok(InsertOutcome::Inserted); products.len()];
        let err = match result {
            Ok(_) => return Ok(outcomes),
            Err(err) => err,
        };
        let ErrorKind::InsertMany(failure) = err.kind.as_ref() else {
            return Err(port_error(err));
        };
        if failure.write_concern_error.is_some() {
            // Written but not as durably as asked: unknown, so retry it all.
            return Err(port_error(err));
        }
        for write_error in failure.write_errors.iter().flatten() {
            let Some(outcome) = outcomes.get_mut(write_error.index) else {
                return Err(PortError::Internal(format!(
                    "insert_many reported an error at index {} of {}",
                    write_error.index,
                    products.len()
                )));
            };
            *outcome = if write_error.code == DUPLICATE_KEY {
                Ok(InsertOutcome::AlreadyExists)
            } else {
                Err(PortError::Internal(format!(
                    "insert of product {} failed: {} ({})",
                    products[write_error.index].id, write_error.message, write_error.code
                )))
            };
        }
        Ok(outcomes)
    }

    #[tracing::instrument(name = "mongo.update", skip_all, fields(db.system = "mongodb", db.operation = "findAndModify", product_id = %update.id), err)]
    async fn update(&self, update: &ProductUpdate) -> Result<UpdateOutcome, PortError> {
        let started = Instant::now();
        let draft = &update.draft;
        let mut set = doc! {
            "categoryId": ObjectId::from_bytes(draft.category_id.to_bytes()),
            "name": draft.name.as_str(),
            "description": draft.description.as_str(),
            "price": draft.price.value(),
            "photos": draft.photos.iter().map(HttpUrl::as_str).collect::<Vec<_>>(),
            "quantity": draft.quantity.value(),
            "rating": draft.rating.value(),
            "updatedAt": bson_date(update.updated_at),
        };
        let changes = match &draft.image_url {
            Some(url) => {
                set.insert("imageUrl", url.as_str());
                doc! { "$set": set }
            }
            None => doc! { "$set": set, "$unset": { "imageUrl": "" } },
        };
        let outcome = self
            .update_versioned(object_id(&update.id), bson_date(update.updated_at), changes)
            .await;
        observe("update", started);
        outcome
    }

    #[tracing::instrument(name = "mongo.find_by_id", skip_all, fields(db.system = "mongodb", db.operation = "find", product_id = %id), err)]
    async fn find_by_id(&self, id: &ProductId) -> Result<Option<Product>, PortError> {
        let started = Instant::now();
        let result = self.products.find_one(doc! { "_id": object_id(id) }).await;
        observe("find_by_id", started);
        result.map_err(port_error)?.map(from_document).transpose()
    }

    #[tracing::instrument(name = "mongo.search", skip_all, fields(db.system = "mongodb", db.operation = "find", page = query.page, size = query.size), err)]
    async fn search(&self, query: &SearchQuery) -> Result<SearchPage, PortError> {
        let started = Instant::now();
        let filter = if query.text.is_empty() {
            doc! {}
        } else {
            let pattern = literal_pattern(query.text.as_str());
            doc! { "$or": [
                { "name": { "$regex": &pattern, "$options": "i" } },
                { "description": { "$regex": &pattern, "$options": "i" } },
            ] }
        };
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
    async fn delete(&self, id: &ProductId) -> Result<bool, PortError> {
        let started = Instant::now();
        let result = self
            .products
            .delete_one(doc! { "_id": object_id(id) })
            .await;
        observe("delete", started);
        Ok(result.map_err(port_error)?.deleted_count > 0)
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

fn bson_date(t: DateTime<Utc>) -> mongodb::bson::DateTime {
    mongodb::bson::DateTime::from_millis(t.timestamp_millis())
}

fn object_id(id: &ProductId) -> ObjectId {
    ObjectId::from_bytes(id.to_bytes())
}

fn to_document(p: &Product) -> ProductDocument {
    ProductDocument {
        id: object_id(&p.id),
        category_id: ObjectId::from_bytes(p.category_id.to_bytes()),
        name: p.name.to_string(),
        description: p.description.to_string(),
        price: p.price.value(),
        image_url: p.image_url.as_ref().map(ToString::to_string),
        photos: p.photos.iter().map(ToString::to_string).collect(),
        quantity: p.quantity.value(),
        rating: p.rating.value(),
        created_at: bson_date(p.created_at),
        updated_at: bson_date(p.updated_at),
    }
}

/// Stored data is re-validated: a document written by another tool that breaks
/// the rules is reported as corrupt instead of served.
fn from_document(d: ProductDocument) -> Result<Product, PortError> {
    let id = d.id.to_hex();
    let corrupt = |field: &str, msg: String| {
        PortError::Internal(format!("stored product {id} has invalid {field}: {msg}"))
    };
    let date = |dt: mongodb::bson::DateTime| {
        DateTime::from_timestamp_millis(dt.timestamp_millis()).unwrap_or_default()
    };
    Ok(Product {
        id: ProductId::from_bytes(d.id.bytes()),
        category_id: CategoryId::from_bytes(d.category_id.bytes()),
        name: ProductName::parse(&d.name).map_err(|m| corrupt("name", m))?,
        description: Description::parse(&d.description).map_err(|m| corrupt("description", m))?,
        price: Price::parse(d.price).map_err(|m| corrupt("price", m))?,
        image_url: d
            .image_url
            .as_deref()
            .map(HttpUrl::parse)
            .transpose()
            .map_err(|m| corrupt("imageUrl", m))?,
        photos: d
            .photos
            .iter()
            .map(|u| HttpUrl::parse(u))
            .collect::<Result<_, _>>()
            .map_err(|m| corrupt("photos", m))?,
        quantity: Quantity::parse(d.quantity).map_err(|m| corrupt("quantity", m))?,
        rating: Rating::parse(d.rating).map_err(|m| corrupt("rating", m))?,
        created_at: date(d.created_at),
        updated_at: date(d.updated_at),
    })
}

const DUPLICATE_KEY: i32 = 11000;

fn is_duplicate_key(err: &mongodb::error::Error) -> bool {
    match err.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == DUPLICATE_KEY,
        ErrorKind::Command(e) => e.code == DUPLICATE_KEY,
        _ => false,
    }
}

/// Connection-level failures are worth retrying; everything else is a bug or
/// bad data. The driver's message can name hosts, never credentials.
fn port_error(err: mongodb::error::Error) -> PortError {
    match err.kind.as_ref() {
        ErrorKind::ServerSelection { .. }
        | ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. } => PortError::Unavailable(err.to_string()),
        _ if err.contains_label("RetryableWriteError")
            || err.contains_label("TransientTransactionError") =>
        {
            PortError::Unavailable(err.to_string())
        }
        _ => PortError::Internal(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::{literal_pattern, MongoProductRepository};
    use crate::config::{Secret, Settings};
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
        settings.uri = "mongodb://products:uri-hunter2@127.0.0.1:99999/".to_owned();
        let err = MongoProductRepository::connect(&settings)
            .await
            .err()
            .expect("port out of range");
        assert!(!format!("{err} {err:?}").contains("uri-hunter2"), "{err:?}");

        settings.uri = format!(
            "mongodb://products:uri-hunter2@127.0.0.1:{}/",
            closed_port()
        );
        settings.auth.password = Some(Secret::new("auth-hunter2"));
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
