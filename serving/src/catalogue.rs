//! The catalogue port: what the live rules read about products — the
//! product, its available stock, the newest in a category, what is trending
//! — with the store adapter and an in-memory one for tests.

use std::{
    collections::HashMap,
    fmt::Debug,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use async_trait::async_trait;
use domain::{Product, ProductId};
use storage::{Store, StoreError, products::Products};
use time::Duration;

/// What the rules read. Every method reads live state.
#[async_trait]
pub trait Catalogue: Send + Sync + Debug {
    /// The product, or `None` when the id names none (unknown, deleted, or
    /// not a product id at all).
    async fn product(&self, id: &str) -> Result<Option<Product>, StoreError>;
    /// Units that can be sold now (0 for a product without stock).
    async fn available(&self, id: &str) -> Result<i64, StoreError>;
    /// A category's newest products, newest first.
    async fn newest_in_category(
        &self,
        category: &str,
        limit: usize,
    ) -> Result<Vec<Product>, StoreError>;
    /// The shop's newest products, newest first.
    async fn newest(&self, limit: usize) -> Result<Vec<Product>, StoreError>;
    /// The most active products over the last `window`, with their trend
    /// score (`processors::state::Counters::trend_score`), highest first.
    async fn trending(
        &self,
        window: Duration,
        limit: usize,
    ) -> Result<Vec<(String, i64)>, StoreError>;
}

/// The catalogue in the store.
#[derive(Clone, Debug)]
pub struct StoreCatalogue {
    store: Arc<dyn Store>,
    products: Products,
    trending: processors::read::TrendingLists,
}

impl StoreCatalogue {
    /// `products` is the API's, so that the rules read products through
    /// its read cache; `trending` is shared with whoever else lists trending
    /// products, so one computation serves them all.
    pub fn new(
        store: Arc<dyn Store>,
        products: Products,
        trending: processors::read::TrendingLists,
    ) -> Self {
        Self {
            products,
            trending,
            store,
        }
    }
}

#[async_trait]
impl Catalogue for StoreCatalogue {
    async fn product(&self, id: &str) -> Result<Option<Product>, StoreError> {
        match id.parse::<ProductId>() {
            Ok(pid) => self.products.get_cached(pid).await,
            Err(_) => Ok(None),
        }
    }

    async fn available(&self, id: &str) -> Result<i64, StoreError> {
        Ok(processors::read::stock(self.store.as_ref(), id)
            .await?
            .map_or(0, |s| s.available))
    }

    async fn newest_in_category(
        &self,
        category: &str,
        limit: usize,
    ) -> Result<Vec<Product>, StoreError> {
        self.products.newest_in_category(category, limit).await
    }

    async fn newest(&self, limit: usize) -> Result<Vec<Product>, StoreError> {
        self.products.newest(limit).await
    }

    async fn trending(
        &self,
        window: Duration,
        limit: usize,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let ranked = self.trending.get(window, limit).await?;
        Ok(ranked
            .into_iter()
            .map(|(id, c)| (id, c.trend_score()))
            .collect())
    }
}

/// A catalogue in memory, for tests of the rules. Counts product reads, so
/// tests can see what the rules skipped without reading.
#[derive(Debug, Default)]
pub struct MemoryCatalogue {
    products: Mutex<HashMap<String, (Product, i64)>>,
    trending: Mutex<Vec<(String, i64)>>,
    reads: AtomicUsize,
}

impl MemoryCatalogue {
    /// The newest `limit` products that `keep` keeps, newest first (by id
    /// on equal times, as the store's time-ordered ids sort).
    fn newest_where(
        &self,
        limit: usize,
        keep: impl Fn(&Product) -> bool,
    ) -> Result<Vec<Product>, StoreError> {
        let m = self.products.lock().map_err(|_| Self::poisoned())?;
        let mut list: Vec<Product> = m
            .values()
            .filter(|(p, _)| keep(p))
            .map(|(p, _)| p.clone())
            .collect();
        list.sort_by_key(|p| std::cmp::Reverse((p.created_at, p.id)));
        list.truncate(limit);
        Ok(list)
    }

    /// Adds (or replaces) a product with its available stock.
    pub fn put(&self, product: Product, available: i64) {
        if let Ok(mut m) = self.products.lock() {
            m.insert(product.id.to_string(), (product, available));
        }
    }

    /// Removes a product, as a deletion does.
    pub fn delete(&self, id: &str) {
        if let Ok(mut m) = self.products.lock() {
            m.remove(id);
        }
    }

    /// Sets what is trending, highest first.
    pub fn set_trending(&self, ranked: Vec<(String, i64)>) {
        if let Ok(mut t) = self.trending.lock() {
            *t = ranked;
        }
    }

    /// How many product reads were made.
    pub fn product_reads(&self) -> usize {
        self.reads.load(Ordering::Relaxed)
    }

    fn poisoned() -> StoreError {
        StoreError::Corrupt("the in-memory catalogue's lock is poisoned".into())
    }
}

#[async_trait]
impl Catalogue for MemoryCatalogue {
    async fn product(&self, id: &str) -> Result<Option<Product>, StoreError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let m = self.products.lock().map_err(|_| Self::poisoned())?;
        Ok(m.get(id).map(|(p, _)| p.clone()))
    }

    async fn available(&self, id: &str) -> Result<i64, StoreError> {
        let m = self.products.lock().map_err(|_| Self::poisoned())?;
        Ok(m.get(id).map_or(0, |(_, n)| *n))
    }

    async fn newest_in_category(
        &self,
        category: &str,
        limit: usize,
    ) -> Result<Vec<Product>, StoreError> {
        self.newest_where(limit, |p| p.category == category)
    }

    async fn newest(&self, limit: usize) -> Result<Vec<Product>, StoreError> {
        self.newest_where(limit, |_| true)
    }

    async fn trending(
        &self,
        _window: Duration,
        limit: usize,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let t = self.trending.lock().map_err(|_| Self::poisoned())?;
        Ok(t.iter().take(limit).cloned().collect())
    }
}
