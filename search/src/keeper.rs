//! Keeps the index current: builds it from the catalogue and the stock
//! levels on start, then follows the change bus. A `product_changed` is read
//! again from the catalogue (the bus says what changed, the store what it
//! now is); a stock level re-indexes its product only when it crosses
//! between in stock and out of stock. On AWS every instance runs its own
//! keeper: the bus carries the other instances' changes too (see
//! `processors::feed`).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use domain::{Product, ProductId};
use processors::changes::Change;
use storage::{
    StoreError,
    products::{ProductFilter, Products},
};
use tokio::{
    sync::{
        broadcast::{self, error::RecvError, error::TryRecvError},
        watch,
    },
    time::Instant,
};

use crate::index::{Doc, SearchError, SearchIndex};

/// Why a build or an update did not finish.
#[derive(Debug, thiserror::Error)]
pub enum KeepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] SearchError),
    #[error("the index writer panicked: {0}")]
    Panicked(#[from] tokio::task::JoinError),
}

/// The index's keeper, run as a worker.
#[derive(Debug)]
pub struct Keeper {
    pub index: Arc<SearchIndex>,
    pub products: Products,
    pub tables: processors::Tables,
    /// Subscribed before the build starts, so no change made during it is missed.
    pub changes: broadcast::Receiver<Change>,
    /// The shortest time between two commits; changes meanwhile wait and
    /// go in together.
    pub commit_every: Duration,
}

/// What the keeper knows of what is indexed.
#[derive(Debug, Default)]
struct Known {
    /// Each indexed product's category and whether it was indexed in stock.
    products: HashMap<ProductId, (String, bool)>,
    /// Whether each product is in stock, as its last stock level said (a
    /// level may come before its product).
    stock: HashMap<String, bool>,
    /// How many indexed products each category has.
    categories: BTreeMap<String, usize>,
}

impl Known {
    fn forget(&mut self, id: ProductId) {
        if let Some((category, _)) = self.products.remove(&id)
            && let Some(n) = self.categories.get_mut(&category)
        {
            *n -= 1;
            if *n == 0 {
                self.categories.remove(&category);
            }
        }
    }

    fn keep(&mut self, product: Product) -> Doc {
        self.forget(product.id);
        let in_stock = self
            .stock
            .get(&product.id.to_string())
            .copied()
            .unwrap_or(false);
        *self.categories.entry(product.category.clone()).or_default() += 1;
        self.products
            .insert(product.id, (product.category.clone(), in_stock));
        Doc { product, in_stock }
    }

    fn category_names(&self) -> Vec<String> {
        self.categories.keys().cloned().collect()
    }

    /// Notes a change; returns the product to read again, if any.
    fn note(&mut self, change: Change) -> Option<ProductId> {
        match change {
            Change::ProductChanged { product_id } => product_id.parse().ok(),
            Change::StockLevel {
                product_id,
                available,
                ..
            } => {
                let in_stock = available > 0;
                let id = product_id.parse().ok();
                self.stock.insert(product_id, in_stock);
                id.filter(|id| {
                    self.products
                        .get(id)
                        .is_some_and(|(_, indexed)| *indexed != in_stock)
                })
            }
            _ => None,
        }
    }
}

impl Keeper {
    pub async fn run(mut self, mut stopped: watch::Receiver<bool>) {
        let mut known = Known::default();
        let mut dirty: HashSet<ProductId> = HashSet::new();
        let mut rebuild = true;
        let mut last_commit = Instant::now();
        loop {
            if rebuild {
                let built = tokio::select! {
                    _ = stopped.wait_for(|stop| *stop) => return,
                    built = self.build(&mut known) => built,
                };
                match built {
                    Ok(n) => {
                        rebuild = false;
                        dirty.clear();
                        last_commit = Instant::now();
                        tracing::info!(products = n, "built the search index");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not build the search index; trying again in a second");
                        tokio::select! {
                            _ = stopped.wait_for(|stop| *stop) => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        }
                    }
                }
            }
            if dirty.is_empty() {
                tokio::select! {
                    _ = stopped.wait_for(|stop| *stop) => return,
                    change = self.changes.recv() => match change {
                        Ok(c) => dirty.extend(known.note(c)),
                        Err(RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "the search index missed changes; rebuilding it");
                            metrics::counter!("shopstream_search_rebuilds_total", "reason" => "lagged").increment(1);
                            rebuild = true;
                            continue;
                        }
                        Err(RecvError::Closed) => return,
                    },
                }
            } else {
                // Changes keep arriving while the commit interval runs out:
                // they wait in the bus and go in together.
                let due = last_commit + self.commit_every;
                tokio::select! {
                    _ = stopped.wait_for(|stop| *stop) => return,
                    _ = tokio::time::sleep_until(due) => {}
                }
            }
            loop {
                match self.changes.try_recv() {
                    Ok(c) => dirty.extend(known.note(c)),
                    Err(TryRecvError::Lagged(n)) => {
                        tracing::warn!(
                            missed = n,
                            "the search index missed changes; rebuilding it"
                        );
                        metrics::counter!("shopstream_search_rebuilds_total", "reason" => "lagged")
                            .increment(1);
                        rebuild = true;
                        break;
                    }
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                }
            }
            if rebuild || dirty.is_empty() || Instant::now() < last_commit + self.commit_every {
                continue;
            }
            let ids: Vec<ProductId> = dirty.drain().collect();
            match self.update(&mut known, &ids).await {
                Ok(()) => last_commit = Instant::now(),
                Err(KeepError::Store(e)) => {
                    // Read again at the next round.
                    tracing::warn!(error = %e, products = ids.len(), "could not read changed products for the search index");
                    dirty.extend(ids);
                    last_commit = Instant::now();
                }
                Err(e) => {
                    tracing::error!(error = %e, "the search index failed a write; rebuilding it");
                    metrics::counter!("shopstream_search_rebuilds_total", "reason" => "failed")
                        .increment(1);
                    rebuild = true;
                }
            }
        }
    }

    /// Reads the catalogue and the stock levels and indexes them anew.
    async fn build(&mut self, known: &mut Known) -> Result<usize, KeepError> {
        let mut stock = HashMap::new();
        let mut cursor = None;
        loop {
            let (page, next) = self.tables.stock_page(1000, cursor, false).await?;
            stock.extend(page.into_iter().map(|(id, s)| (id, s.available > 0)));
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let mut products = Vec::new();
        let mut cursor = None;
        loop {
            let (page, next) = self
                .products
                .list(&ProductFilter::default(), 500, cursor)
                .await?;
            products.extend(page);
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        *known = Known {
            stock,
            ..Known::default()
        };
        let docs: Vec<Doc> = products.into_iter().map(|p| known.keep(p)).collect();
        let (n, names, index) = (docs.len(), known.category_names(), self.index.clone());
        tokio::task::spawn_blocking(move || {
            index.clear()?;
            index.upsert(&docs)?;
            index.commit(&names)
        })
        .await??;
        Ok(n)
    }

    /// Indexes the products as the catalogue now has them (a deleted one is
    /// removed).
    async fn update(&mut self, known: &mut Known, ids: &[ProductId]) -> Result<(), KeepError> {
        use futures::{StreamExt, TryStreamExt};
        let products = self.products.clone();
        let read: Vec<(ProductId, Option<Product>)> = futures::stream::iter(ids.iter().copied())
            .map(|id| {
                let products = products.clone();
                async move { Ok::<_, StoreError>((id, products.get(id).await?)) }
            })
            .buffered(16)
            .try_collect()
            .await?;
        let mut docs = Vec::new();
        let mut gone = Vec::new();
        for (id, product) in read {
            match product {
                Some(p) => docs.push(known.keep(p)),
                None => {
                    known.forget(id);
                    gone.push(id);
                }
            }
        }
        let (names, index) = (known.category_names(), self.index.clone());
        tokio::task::spawn_blocking(move || {
            index.upsert(&docs)?;
            index.delete(&gone);
            index.commit(&names)
        })
        .await??;
        Ok(())
    }
}
