//! Search from an in-memory index in each replica (docs/SEARCH.md).
//!
//! [`ProductIndex`] holds the live products in a
//! [`products_search::SearchIndex`] and answers the `search` use case (it
//! implements the [`ProductSearch`] port). [`feed::IndexFeed`] keeps it
//! current: it reads every partition of the change-events topic (no
//! consumer group: each replica reads all of it), from the beginning at
//! start, so a replica rebuilds its index from the compacted topic, or from
//! the database when the topic is empty. [`SyncStatus`] says how current
//! the index is, for `/ready`, the metrics and the alert.

pub mod feed;
mod status;

use std::sync::{PoisonError, RwLock};

use async_trait::async_trait;
use products_core::{
    app::{PortError, ProductSearch},
    domain::{Product, SearchPage, SearchQuery},
};
use products_search::SearchIndex;

pub use feed::IndexFeed;
pub use status::SyncStatus;

/// The search index of this replica and how current it is.
#[derive(Default)]
pub struct ProductIndex {
    index: RwLock<SearchIndex<Product>>,
    status: SyncStatus,
}

impl ProductIndex {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn status(&self) -> &SyncStatus {
        &self.status
    }

    /// Stores `product` at revision `rev`; false if the index holds that
    /// revision or a later one already.
    pub fn upsert(&self, product: Product, rev: u64) -> bool {
        let id = product.id.to_string();
        let (name, description) = (
            product.draft.name.as_str().to_owned(),
            product.draft.description.as_str().to_owned(),
        );
        self.write().upsert(&id, rev, &name, &description, product)
    }

    /// Removes the product, deleted at revision `rev`; false if the index
    /// holds that revision or a later one already.
    pub fn remove(&self, id: &str, rev: u64) -> bool {
        self.write().remove(id, rev)
    }

    /// Live products in the index.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, SearchIndex<Product>> {
        // The index is changed only by whole calls into `SearchIndex`, which
        // do not panic on any input: a poisoned lock still holds an index.
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, SearchIndex<Product>> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl ProductSearch for ProductIndex {
    /// `None` until the index has been rebuilt at start (the database
    /// answers meanwhile).
    #[tracing::instrument(name = "search_index.search", skip_all, fields(matches))]
    async fn search(&self, query: &SearchQuery) -> Result<Option<SearchPage>, PortError> {
        if !self.status.rebuilt() {
            return Ok(None);
        }
        let offset = usize::try_from(query.offset()).unwrap_or(usize::MAX);
        let limit = usize::try_from(query.size).unwrap_or(usize::MAX);
        let hits = self.read().search(query.text.as_str(), offset, limit);
        tracing::Span::current().record("matches", hits.total);
        Ok(Some(SearchPage {
            total_count: hits.total as u64,
            page: query.page,
            size: query.size,
            products: hits.values,
        }))
    }
}

#[cfg(test)]
mod tests {
    use products_core::{
        app::{fakes::raw_product, ProductSearch},
        domain::{Product, ProductDraft, ProductId, SearchQuery},
    };

    use super::ProductIndex;

    fn product(id: u8, name: &str) -> Product {
        let draft = ProductDraft::parse(raw_product(name)).unwrap();
        Product::new(ProductId::from_bytes([id; 12]), draft, chrono::Utc::now())
    }

    #[tokio::test]
    async fn answers_the_search_contract_from_the_index() {
        let index = ProductIndex::new();
        let all = SearchQuery::parse(None, None, None).unwrap();
        assert_eq!(index.search(&all).await.unwrap(), None, "not rebuilt yet");
        index.status().synced(std::time::Instant::now());
        for i in 1..=5 {
            assert!(index.upsert(product(i, &format!("Lamp {i}")), 1));
        }
        assert!(index.upsert(product(9, "Chair"), 1));
        assert!(index.remove(&ProductId::from_bytes([5; 12]).to_string(), 2));
        let query = SearchQuery::parse(Some("LAMP"), Some(2), Some(2)).unwrap();
        let page = index.search(&query).await.unwrap().unwrap();
        assert_eq!(page.total_count, 4);
        assert_eq!((page.page, page.size, page.total_pages()), (2, 2, 2));
        let names: Vec<&str> = page
            .products
            .iter()
            .map(|p| p.draft.name.as_str())
            .collect();
        assert_eq!(names, ["Lamp 3", "Lamp 4"]);
        assert!(!page.has_more());
        // A page far past the end, as any page number a client may send.
        let query = SearchQuery::parse(Some("lamp"), Some(i64::MAX), Some(100)).unwrap();
        assert!(index
            .search(&query)
            .await
            .unwrap()
            .unwrap()
            .products
            .is_empty());
    }
}
