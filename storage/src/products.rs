//! The product catalogue on the storage port.
//!
//! A product is written as one canonical item (`product` / `{id}`), a copy in
//! its category's partition and one in its supplier's (so filtered listings
//! are single-partition queries), and a uniqueness marker for its SKU. All of
//! them change in one transaction, guarded by the product's version.

use std::sync::Arc;

use domain::{Product, ProductId};

use crate::{Cond, Key, Query, Store, StoreError, Table, TxOp, from_item, port::to_item};

const CANONICAL: &str = "product";

fn canonical(id: ProductId) -> Key {
    Key::new(CANONICAL, id.to_string())
}
fn by_category(category: &str, id: ProductId) -> Key {
    Key::new(format!("category#{category}"), id.to_string())
}
fn by_supplier(supplier: &str, id: ProductId) -> Key {
    Key::new(format!("supplier#{supplier}"), id.to_string())
}
fn sku_marker(sku: &str) -> Key {
    Key::new(format!("sku#{sku}"), "sku")
}
/// The partition naming every category a product was ever filed under.
const CATEGORIES: &str = "categories";
fn category_marker(category: &str) -> Key {
    Key::new(CATEGORIES, category)
}
/// Set once every existing product's category is in [`CATEGORIES`].
fn categories_indexed() -> Key {
    Key::new("categories#indexed", "v1")
}
/// How many products one search request reads at most before it answers
/// with what it found and a cursor to read on from.
pub const SEARCH_SCAN: usize = 1000;

/// Why a catalogue write was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProductError {
    #[error("no such product")]
    NotFound,
    #[error("the product was changed by someone else (version {current} is current)")]
    VersionMismatch { current: u64 },
    #[error("another product has sku {0:?}")]
    DuplicateSku(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Which products a listing returns.
#[derive(Clone, Debug, Default)]
pub struct ProductFilter {
    pub category: Option<String>,
    pub supplier_id: Option<String>,
    /// Only products whose name contains this, ignoring case (lowercase).
    pub name_contains: Option<String>,
}

impl ProductFilter {
    fn keeps(&self, p: &Product) -> bool {
        (self.supplier_id.is_none() || p.supplier_id == self.supplier_id)
            && self
                .name_contains
                .as_deref()
                .is_none_or(|q| p.name.to_lowercase().contains(q))
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CategoryMarker {
    name: String,
}

#[derive(Clone, Debug)]
pub struct Products {
    store: Arc<dyn Store>,
    cache: Arc<ReadCache>,
}

/// What [`Products::import`] did with a product, and the product as stored.
#[derive(Clone, Debug, PartialEq)]
pub enum Imported {
    Created(Product),
    Updated(Product),
    Unchanged(Product),
}

/// The most products [`ReadCache`] holds; when full it starts over.
pub const READ_CACHE_ITEMS: usize = 100_000;

/// Products as last read or written, for [`Products::get_cached`]. Writes
/// through the same [`Products`] update it; a change made elsewhere (another
/// instance, an import) reaches it as a `product_changed` on the change bus,
/// whose subscriber calls [`Products::forget`] (or [`Products::forget_all`]
/// when it missed changes). A read that began before a forget does not put
/// what it read (the epoch moved), so a forgotten version never comes back.
#[derive(Debug, Default)]
struct ReadCache {
    items: std::sync::RwLock<std::collections::HashMap<ProductId, Arc<Product>>>,
    epoch: std::sync::atomic::AtomicU64,
}

impl ReadCache {
    fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    fn get(&self, id: ProductId) -> Option<Arc<Product>> {
        let items = self.items.read().unwrap_or_else(|e| e.into_inner());
        items.get(&id).cloned()
    }

    /// Keeps `p` unless something was forgotten since `epoch`, or a newer
    /// version is kept.
    fn put(&self, p: &Product, epoch: Option<u64>) {
        let mut items = self.items.write().unwrap_or_else(|e| e.into_inner());
        if epoch.is_some_and(|e| e != self.epoch()) {
            return;
        }
        if items
            .get(&p.id)
            .is_some_and(|kept| kept.version > p.version)
        {
            return;
        }
        if items.len() >= READ_CACHE_ITEMS && !items.contains_key(&p.id) {
            items.clear();
        }
        items.insert(p.id, Arc::new(p.clone()));
    }

    fn forget(&self, id: Option<ProductId>) {
        let mut items = self.items.write().unwrap_or_else(|e| e.into_inner());
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        match id {
            Some(id) => {
                items.remove(&id);
            }
            None => items.clear(),
        }
    }
}

#[derive(serde::Serialize)]
struct SkuMarker<'a> {
    product_id: &'a str,
}

impl Products {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            cache: Arc::default(),
        }
    }

    /// A product, from memory when this instance has read or written it
    /// since it last changed (see [`ReadCache`]); for reads that may trail a
    /// change made on another instance by the pipeline's delay. Writes read
    /// with [`Products::get`].
    pub async fn get_cached(&self, id: ProductId) -> Result<Option<Product>, StoreError> {
        if let Some(p) = self.cache.get(id) {
            metrics::counter!("shopstream_product_cache_total", "result" => "hit").increment(1);
            return Ok(Some(Product::clone(&p)));
        }
        metrics::counter!("shopstream_product_cache_total", "result" => "miss").increment(1);
        let epoch = self.cache.epoch();
        let got = self.get(id).await?;
        if let Some(p) = &got {
            self.cache.put(p, Some(epoch));
        }
        Ok(got)
    }

    /// Drops a product from the read cache (it changed elsewhere).
    pub fn forget(&self, id: ProductId) {
        self.cache.forget(Some(id));
    }

    /// Empties the read cache (changes may have been missed).
    pub fn forget_all(&self) {
        self.cache.forget(None);
    }

    /// Every item a product is stored as, with its key.
    fn items(p: &Product) -> Result<Vec<(Key, crate::Item)>, StoreError> {
        // Serialised once; the copies differ only in their key.
        let item = to_item(&canonical(p.id), p)?;
        let copy = |key: Key| {
            let mut copy = item.clone();
            copy.extend(key.to_item());
            (key, copy)
        };
        let mut out = vec![copy(by_category(&p.category, p.id))];
        if let Some(s) = &p.supplier_id {
            out.push(copy(by_supplier(s, p.id)));
        }
        out.insert(0, (canonical(p.id), item));
        let marker = category_marker(&p.category);
        let name = CategoryMarker {
            name: p.category.clone(),
        };
        out.push((marker.clone(), to_item(&marker, &name)?));
        Ok(out)
    }

    fn marker(p: &Product) -> Result<crate::Item, StoreError> {
        to_item(
            &sku_marker(&p.sku),
            &SkuMarker {
                product_id: &p.id.to_string(),
            },
        )
    }

    /// Stores a new product; refuses a taken SKU.
    pub async fn create(&self, p: &Product) -> Result<(), ProductError> {
        let mut ops = vec![TxOp::Put {
            table: Table::Products,
            item: Self::marker(p)?,
            cond: Some(Cond::NotExists),
        }];
        for (i, (_, item)) in Self::items(p)?.into_iter().enumerate() {
            let cond = (i == 0).then_some(Cond::NotExists);
            ops.push(TxOp::Put {
                table: Table::Products,
                item,
                cond,
            });
        }
        match self.store.transact(ops).await {
            Ok(()) => {
                self.cache.put(p, None);
                Ok(())
            }
            Err(StoreError::TransactionCanceled { failed }) if failed.contains(&0) => {
                Err(ProductError::DuplicateSku(p.sku.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Stores a catalogue import: each product that does not exist yet is
    /// created, and one that does (same id) is replaced when it changed
    /// (version + 1, `created_at` and an uploaded image kept). New products
    /// go in transactions of as many as the store takes; when one is
    /// refused (a SKU another product holds), its products are retried one
    /// by one, so a bad row loses no other. Per product, in order: what was
    /// done and the product as stored, or why it was refused.
    pub async fn import(&self, products: Vec<Product>) -> Vec<Result<Imported, ProductError>> {
        use futures::{StreamExt, stream};
        let current: Vec<Result<Option<Product>, StoreError>> = stream::iter(&products)
            .map(|p| self.get(p.id))
            .buffered(64)
            .collect()
            .await;
        let mut out: Vec<Option<Result<Imported, ProductError>>> =
            (0..products.len()).map(|_| None).collect();
        let mut fresh = Vec::new();
        for (i, (mut p, old)) in products.into_iter().zip(current).enumerate() {
            match old {
                Err(e) => out[i] = Some(Err(e.into())),
                Ok(None) => fresh.push((i, p)),
                Ok(Some(old)) => {
                    p.created_at = old.created_at;
                    if p.image_url.is_none() {
                        p.image_url.clone_from(&old.image_url);
                    }
                    let same = Product {
                        updated_at: old.updated_at,
                        version: old.version,
                        ..p.clone()
                    };
                    out[i] = Some(if same == old {
                        Ok(Imported::Unchanged(old))
                    } else {
                        p.version = old.version + 1;
                        self.update(&old, &p).await.map(|()| Imported::Updated(p))
                    });
                }
            }
        }
        let (max_ops, max_bytes) = (
            self.store.max_transaction_ops(),
            self.store.max_transaction_bytes(),
        );
        let mut chunk: Vec<(usize, Product)> = Vec::new();
        let mut ops: Vec<TxOp> = Vec::new();
        let mut markers = std::collections::HashSet::new();
        let mut bytes = 0;
        for (i, p) in fresh {
            let mut mine = self.create_ops(&p, &mut markers);
            if let Ok(m) = &mine
                && !chunk.is_empty()
                && (ops.len() + m.len() > max_ops
                    || bytes + crate::expr::transaction_size(m) > max_bytes)
            {
                let (c, o) = (std::mem::take(&mut chunk), std::mem::take(&mut ops));
                self.create_chunk(c, o, &mut out).await;
                markers.clear();
                bytes = 0;
                // Its category marker may have been left out as already in
                // the chunk just sent.
                mine = self.create_ops(&p, &mut markers);
            }
            match mine {
                Err(e) => out[i] = Some(Err(e)),
                Ok(m) => {
                    bytes += crate::expr::transaction_size(&m);
                    ops.extend(m);
                    chunk.push((i, p));
                }
            }
        }
        if !chunk.is_empty() {
            self.create_chunk(chunk, ops, &mut out).await;
        }
        out.into_iter()
            .map(|r| r.unwrap_or(Err(ProductError::NotFound)))
            .collect()
    }

    /// The operations that create `p`, leaving out a category marker
    /// already in `markers` (a transaction touches an item once).
    fn create_ops(
        &self,
        p: &Product,
        markers: &mut std::collections::HashSet<String>,
    ) -> Result<Vec<TxOp>, ProductError> {
        let mut ops = vec![TxOp::Put {
            table: Table::Products,
            item: Self::marker(p)?,
            cond: Some(Cond::NotExists),
        }];
        for (i, (key, item)) in Self::items(p)?.into_iter().enumerate() {
            if key.pk == CATEGORIES && !markers.insert(key.sk.clone()) {
                continue;
            }
            ops.push(TxOp::Put {
                table: Table::Products,
                item,
                cond: (i == 0).then_some(Cond::NotExists),
            });
        }
        Ok(ops)
    }

    async fn create_chunk(
        &self,
        chunk: Vec<(usize, Product)>,
        ops: Vec<TxOp>,
        out: &mut [Option<Result<Imported, ProductError>>],
    ) {
        match self.store.transact(ops).await {
            Ok(()) => {
                for (i, p) in chunk {
                    out[i] = Some(Ok(Imported::Created(p)));
                }
            }
            // A condition (a SKU taken) or a permanent refusal (an item too
            // large): one product is at fault, so each is tried alone.
            Err(e) if e.is_permanent() || matches!(e, StoreError::TransactionCanceled { .. }) => {
                for (i, p) in chunk {
                    out[i] = Some(self.create(&p).await.map(|()| Imported::Created(p)));
                }
            }
            Err(e) => {
                let why = e.to_string();
                for (i, _) in chunk {
                    out[i] = Some(Err(StoreError::Unavailable(why.clone()).into()));
                }
            }
        }
    }

    pub async fn get(&self, id: ProductId) -> Result<Option<Product>, StoreError> {
        self.store
            .get(Table::Products, &canonical(id))
            .await?
            .map(from_item)
            .transpose()
    }

    /// The newest `limit` products of a category, newest first (product ids
    /// are time-ordered UUIDv7s, and the category copies are keyed by id).
    pub async fn newest_in_category(
        &self,
        category: &str,
        limit: usize,
    ) -> Result<Vec<Product>, StoreError> {
        self.newest_under(&format!("category#{category}"), limit)
            .await
    }

    /// The newest `limit` products of the whole catalogue, newest first.
    pub async fn newest(&self, limit: usize) -> Result<Vec<Product>, StoreError> {
        self.newest_under(CANONICAL, limit).await
    }

    /// The newest `limit` products under a partition keyed by product id
    /// (time-ordered UUIDv7s), newest first.
    async fn newest_under(&self, pk: &str, limit: usize) -> Result<Vec<Product>, StoreError> {
        let query = Query {
            limit,
            descending: true,
            ..Query::default()
        };
        self.store
            .query(Table::Products, pk, &query)
            .await?
            .items
            .into_iter()
            .map(from_item)
            .collect()
    }

    /// One page of products, oldest first. `cursor` is the last id of the
    /// previous page.
    pub async fn list(
        &self,
        filter: &ProductFilter,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<(Vec<Product>, Option<String>), StoreError> {
        let pk = match (&filter.category, &filter.supplier_id) {
            (Some(c), _) => format!("category#{c}"),
            (None, Some(s)) => format!("supplier#{s}"),
            (None, None) => CANONICAL.to_owned(),
        };
        let mut query = Query {
            limit,
            cursor,
            ..Query::default()
        };
        let mut products = Vec::with_capacity(limit);
        // Filtering by both category and supplier reads the category partition
        // and keeps the supplier's products, page after page until one is full.
        // A name search reads at most SEARCH_SCAN products, then answers with
        // what it found and a cursor where it stopped.
        let mut scanned = 0;
        loop {
            let page = self.store.query(Table::Products, &pk, &query).await?;
            scanned += page.items.len();
            for item in page.items {
                let p: Product = from_item(item)?;
                if filter.keeps(&p) {
                    products.push(p);
                }
            }
            let budget_left = filter.name_contains.is_none() || scanned < SEARCH_SCAN;
            match page.cursor {
                Some(c) if products.len() < limit && budget_left => query.cursor = Some(c),
                other => {
                    let next = if products.len() > limit {
                        products.truncate(limit);
                        products.last().map(|p| p.id.to_string())
                    } else {
                        other
                    };
                    return Ok((products, next));
                }
            }
            query.limit = if filter.name_contains.is_some() {
                100.min(SEARCH_SCAN - scanned)
            } else {
                limit - products.len()
            };
        }
    }

    /// Every category with at least one product, in name order.
    pub async fn categories(&self) -> Result<Vec<String>, StoreError> {
        let mut names = Vec::new();
        let mut query = Query::default();
        loop {
            let page = self
                .store
                .query(Table::Products, CATEGORIES, &query)
                .await?;
            for item in page.items {
                names.push(from_item::<CategoryMarker>(item)?.name);
            }
            match page.cursor {
                Some(c) => query.cursor = Some(c),
                None => break,
            }
        }
        // A category whose last product was deleted or moved keeps its
        // marker; it is left out here (16 categories looked at at a time).
        use futures::StreamExt;
        let pages: Vec<Result<crate::Page, StoreError>> =
            futures::stream::iter(names.iter().cloned().map(|n| {
                let store = self.store.clone();
                async move {
                    let one = Query {
                        limit: 1,
                        ..Query::default()
                    };
                    store
                        .query(Table::Products, &format!("category#{n}"), &one)
                        .await
                }
            }))
            .buffered(16)
            .collect()
            .await;
        let mut out = Vec::with_capacity(names.len());
        for (name, page) in names.into_iter().zip(pages) {
            if !page?.items.is_empty() {
                out.push(name);
            }
        }
        Ok(out)
    }

    /// Files every product's category in the category list, once per store
    /// (products written before the list existed). Reads the whole
    /// catalogue: run it off the request path.
    pub async fn index_categories(&self) -> Result<usize, StoreError> {
        if self
            .store
            .get(Table::Products, &categories_indexed())
            .await?
            .is_some()
        {
            return Ok(0);
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut query = Query::default();
        loop {
            let page = self.store.query(Table::Products, CANONICAL, &query).await?;
            for item in page.items {
                seen.insert(from_item::<Product>(item)?.category);
            }
            match page.cursor {
                Some(c) => query.cursor = Some(c),
                None => break,
            }
        }
        for name in &seen {
            let key = category_marker(name);
            let item = to_item(&key, &CategoryMarker { name: name.clone() })?;
            self.store.put(Table::Products, item, None).await?;
        }
        let flag = to_item(&categories_indexed(), &serde_json::json!({"done": true}))?;
        self.store.put(Table::Products, flag, None).await?;
        Ok(seen.len())
    }

    /// Replaces `old` with `new` (same id), if `old` is still the current
    /// version. `new.version` must be `old.version + 1`.
    pub async fn update(&self, old: &Product, new: &Product) -> Result<(), ProductError> {
        debug_assert_eq!(old.id, new.id);
        debug_assert_eq!(new.version, old.version + 1);
        let mut ops = vec![];
        for (i, (_, item)) in Self::items(new)?.into_iter().enumerate() {
            let cond = (i == 0).then(|| Cond::eq("version", old.version));
            ops.push(TxOp::Put {
                table: Table::Products,
                item,
                cond,
            });
        }
        if old.category != new.category {
            ops.push(TxOp::Delete {
                table: Table::Products,
                key: by_category(&old.category, old.id),
                cond: None,
            });
        }
        if let Some(s) = &old.supplier_id
            && new.supplier_id.as_ref() != Some(s)
        {
            ops.push(TxOp::Delete {
                table: Table::Products,
                key: by_supplier(s, old.id),
                cond: None,
            });
        }
        let sku_op = if old.sku != new.sku {
            ops.push(TxOp::Delete {
                table: Table::Products,
                key: sku_marker(&old.sku),
                cond: Some(Cond::eq("product_id", old.id.to_string())),
            });
            ops.push(TxOp::Put {
                table: Table::Products,
                item: Self::marker(new)?,
                cond: Some(Cond::NotExists),
            });
            Some(ops.len() - 1)
        } else {
            None
        };
        match self.store.transact(ops).await {
            Ok(()) => {
                self.cache.put(new, None);
                Ok(())
            }
            Err(StoreError::TransactionCanceled { failed }) => {
                if failed.contains(&0) {
                    Err(self.stale(old.id).await)
                } else if sku_op.is_some_and(|i| failed.contains(&i)) {
                    Err(ProductError::DuplicateSku(new.sku.clone()))
                } else {
                    Err(StoreError::TransactionCanceled { failed }.into())
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the product if `p` is still its current version.
    pub async fn delete(&self, p: &Product) -> Result<(), ProductError> {
        let mut ops = vec![
            TxOp::Delete {
                table: Table::Products,
                key: canonical(p.id),
                cond: Some(Cond::eq("version", p.version)),
            },
            TxOp::Delete {
                table: Table::Products,
                key: by_category(&p.category, p.id),
                cond: None,
            },
            TxOp::Delete {
                table: Table::Products,
                key: sku_marker(&p.sku),
                cond: Some(Cond::eq("product_id", p.id.to_string())),
            },
        ];
        if let Some(s) = &p.supplier_id {
            ops.push(TxOp::Delete {
                table: Table::Products,
                key: by_supplier(s, p.id),
                cond: None,
            });
        }
        match self.store.transact(ops).await {
            Ok(()) => {
                self.cache.forget(Some(p.id));
                Ok(())
            }
            Err(StoreError::TransactionCanceled { failed }) if failed.contains(&0) => {
                Err(self.stale(p.id).await)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn stale(&self, id: ProductId) -> ProductError {
        match self.get(id).await {
            Ok(Some(current)) => ProductError::VersionMismatch {
                current: current.version,
            },
            Ok(None) => ProductError::NotFound,
            Err(e) => e.into(),
        }
    }

    /// Whether the catalogue has no product at all.
    pub async fn is_empty(&self) -> Result<bool, StoreError> {
        let page = self
            .store
            .query(
                Table::Products,
                CANONICAL,
                &Query {
                    limit: 1,
                    ..Query::default()
                },
            )
            .await?;
        Ok(page.items.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{ProductDraft, product::DraftMode};

    fn product(sku: &str) -> Product {
        let body = serde_json::json!({"sku": sku, "name": "Socks", "price": "9.99",
            "currency": "EUR", "category": "socks"});
        ProductDraft::parse(&body, DraftMode::Create)
            .unwrap()
            .into_product(ProductId::new(), domain::now())
    }

    #[tokio::test]
    async fn the_read_cache_follows_writes_and_forgets_what_changed_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(crate::embedded::Embedded::open(dir.path(), "").unwrap());
        let here = Products::new(store.clone());
        let elsewhere = Products::new(store);
        let p = product("S-1");
        here.create(&p).await.unwrap();
        assert_eq!(here.get_cached(p.id).await.unwrap().unwrap().version, 1);
        // A write through this instance is seen at once.
        let mut v2 = p.clone();
        v2.name = "Wool socks".into();
        v2.version = 2;
        here.update(&p, &v2).await.unwrap();
        assert_eq!(
            here.get_cached(p.id).await.unwrap().unwrap().name,
            "Wool socks"
        );
        // A write elsewhere is not, until the change arrives.
        let mut v3 = v2.clone();
        v3.name = "Merino socks".into();
        v3.version = 3;
        elsewhere.update(&v2, &v3).await.unwrap();
        assert_eq!(here.get_cached(p.id).await.unwrap().unwrap().version, 2);
        here.forget(p.id);
        assert_eq!(here.get_cached(p.id).await.unwrap().unwrap().version, 3);
        // A read that began before a forget does not put what it read.
        let epoch = here.cache.epoch();
        here.forget_all();
        here.cache.put(&v2, Some(epoch));
        assert!(here.cache.get(p.id).is_none());
        // Nor does an older version replace a newer one.
        here.cache.put(&v3, None);
        here.cache.put(&v2, None);
        assert_eq!(here.cache.get(p.id).unwrap().version, 3);
        // A delete here forgets it; an unknown id is not cached.
        here.delete(&v3).await.unwrap();
        assert!(here.get_cached(p.id).await.unwrap().is_none());
        assert!(here.cache.get(p.id).is_none());
    }
}
