//! Training from the store's interaction log: read the log, fit off the
//! async runtime, persist, swap in atomically; and the retrain loop, a task
//! that owns its own stop.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Instant,
};

use processors::state::{InteractionChunk, interaction, interactions_pk};
use recommender::model::{self, Hybrid};
use storage::{Query, Store, Table, blobs::Blobs};
use time::{Duration, OffsetDateTime, format_description::well_known::Rfc3339};

use crate::{
    attribution::Impressions,
    catalogue::{Catalogue, StoreCatalogue},
    model::{MODEL_KEY, Trained},
};

/// Why training (or loading) did not produce a model.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("reading the interaction log: {0}")]
    Store(#[from] storage::StoreError),
    /// The model could not be fitted (e.g. too little behaviour).
    #[error(transparent)]
    Fit(#[from] recommender::model::FitError),
    #[error("the persisted model is unreadable: {0}")]
    Unreadable(serde_json::Error),
    #[error("the model could not be encoded: {0}")]
    Encode(serde_json::Error),
    #[error("the training thread failed: {0}")]
    Thread(#[from] tokio::task::JoinError),
    #[error("a training run is already going on")]
    Busy,
}

/// The recommender service: the model being served, its training, and what
/// serving reads and counts.
#[derive(Debug)]
pub struct Recs {
    store: Arc<dyn Store>,
    blobs: Arc<dyn Blobs>,
    catalogue: Arc<dyn Catalogue>,
    trending: processors::read::TrendingLists,
    impressions: Impressions,
    current: RwLock<Option<Arc<Trained>>>,
    training: tokio::sync::Mutex<()>,
    /// How far back the training log is read.
    pub history_hours: i64,
}

/// Progress of a training run, for the CLI's bar.
pub type Progress = Arc<dyn Fn(&str) + Send + Sync>;

impl Recs {
    /// `history_hours` is at least 1 (the settings check it).
    pub fn new(
        store: Arc<dyn Store>,
        products: storage::products::Products,
        blobs: Arc<dyn Blobs>,
        history_hours: i64,
        impressions: Impressions,
    ) -> Self {
        let trending = processors::read::TrendingLists::new(store.clone());
        Self {
            catalogue: Arc::new(StoreCatalogue::new(
                store.clone(),
                products,
                trending.clone(),
            )),
            trending,
            impressions,
            store,
            blobs,
            current: RwLock::new(None),
            training: tokio::sync::Mutex::new(()),
            history_hours,
        }
    }

    /// What the live rules read.
    pub fn catalogue(&self) -> &dyn Catalogue {
        self.catalogue.as_ref()
    }

    /// The trending lists the catalogue reads (shared: one computation a
    /// window serves every reader).
    pub fn trending(&self) -> &processors::read::TrendingLists {
        &self.trending
    }

    /// Where responses count what they showed.
    pub fn impressions(&self) -> &Impressions {
        &self.impressions
    }

    /// The model being served, if there is one.
    pub fn current(&self) -> Option<Arc<Trained>> {
        self.current.read().ok().and_then(|g| g.clone())
    }

    fn swap(&self, t: Arc<Trained>) {
        if let Ok(mut g) = self.current.write() {
            *g = Some(t.clone());
        }
        metrics::gauge!("shopstream_model_trained_timestamp_seconds")
            .set(OffsetDateTime::now_utc().unix_timestamp() as f64);
        metrics::gauge!("shopstream_model_training_seconds").set(t.training_ms as f64 / 1000.0);
        metrics::gauge!("shopstream_model_items").set(t.items.len() as f64);
        metrics::gauge!("shopstream_model_interactions").set(t.interactions as f64);
        if let Some(v) = &t.report.validation {
            metrics::gauge!("shopstream_model_validation_ndcg_at_10").set(v.ndcg_at_10);
            metrics::gauge!("shopstream_model_validation_hr_at_10").set(v.hr_at_10);
        }
    }

    /// Loads the persisted model, if any; true when one was loaded.
    pub async fn load(&self) -> Result<bool, TrainError> {
        let Some(bytes) = self.blobs.get(MODEL_KEY).await? else {
            return Ok(false);
        };
        let t = tokio::task::spawn_blocking(move || serde_json::from_slice::<Trained>(&bytes))
            .await?
            .map_err(TrainError::Unreadable)?;
        self.swap(Arc::new(t.indexed()));
        Ok(true)
    }

    /// Reads the training log of the last `history_hours`, oldest first.
    /// Only hours with activity are read: the shop-wide per-minute counters,
    /// written in the same transactions as the log, tell which (one query
    /// instead of one per hour); sixteen hours are read at a time.
    pub async fn read_log(
        &self,
        now: OffsetDateTime,
    ) -> Result<Vec<processors::state::Interaction>, TrainError> {
        use futures::{StreamExt, TryStreamExt};
        let from = processors::state::minute_of(now - Duration::hours(self.history_hours));
        let to = processors::state::minute_of(now + Duration::hours(1));
        let pk = processors::state::minute_key(processors::state::ALL, &from).pk;
        let mut hours: Vec<String> = Vec::new();
        let mut q = Query {
            range: storage::SortRange::Between(from, to),
            limit: 1000,
            ..Query::default()
        };
        loop {
            let page = self.store.query(Table::Analytics, &pk, &q).await?;
            for item in &page.items {
                let hour = storage::Key::of(item)?
                    .sk
                    .chars()
                    .take(13)
                    .collect::<String>();
                if hours.last() != Some(&hour) {
                    hours.push(hour);
                }
            }
            match page.cursor {
                Some(c) => q.cursor = Some(c),
                None => break,
            }
        }
        let parts: Vec<Vec<processors::state::Interaction>> = futures::stream::iter(hours)
            .map(|hour| self.read_hour(hour))
            .buffered(16)
            .try_collect()
            .await?;
        let mut rows: Vec<_> = parts.into_iter().flatten().collect();
        rows.sort_by_key(|r| r.at);
        Ok(rows)
    }

    async fn read_hour(
        &self,
        hour: String,
    ) -> Result<Vec<processors::state::Interaction>, TrainError> {
        let pk = interactions_pk(&hour);
        let mut rows = Vec::new();
        let mut q = Query {
            limit: 1000,
            ..Query::default()
        };
        loop {
            let page = self.store.query(Table::Behaviour, &pk, &q).await?;
            for item in page.items {
                let chunk = InteractionChunk::from_item(item)?;
                rows.extend(chunk.rows);
            }
            match page.cursor {
                Some(c) => q.cursor = Some(c),
                None => return Ok(rows),
            }
        }
    }

    /// The category of each item, from one pass over the catalogue (pages
    /// of 1,000); empty for items not in it.
    async fn categories(&self, items: &[String]) -> Result<Vec<String>, TrainError> {
        let products = storage::products::Products::new(self.store.clone());
        let mut of: HashMap<String, String> = HashMap::new();
        let mut cursor = None;
        loop {
            let (page, next) = products
                .list(&storage::products::ProductFilter::default(), 1000, cursor)
                .await?;
            for p in page {
                of.insert(p.id.to_string(), p.category);
            }
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        Ok(items
            .iter()
            .map(|i| of.remove(i).unwrap_or_default())
            .collect())
    }

    /// Trains a model on the log, persists it and swaps it in. The fit runs
    /// on a blocking thread; serving goes on with the old model meanwhile.
    #[tracing::instrument(name = "model.train", skip_all, err(level = "info"))]
    pub async fn train(&self, progress: Progress) -> Result<Arc<Trained>, TrainError> {
        let Ok(_guard) = self.training.try_lock() else {
            return Err(TrainError::Busy);
        };
        let started = Instant::now();
        progress("reading the interaction log");
        let log = self.read_log(OffsetDateTime::now_utc()).await?;
        let p = progress.clone();
        let t = tokio::task::spawn_blocking(move || fit(&log, &*p)).await??;
        let mut t = t;
        progress("reading the catalogue's categories");
        t.categories = self.categories(&t.items).await?;
        t.training_ms = started.elapsed().as_millis() as u64;
        progress("saving the model");
        let bytes = serde_json::to_vec(&t).map_err(TrainError::Encode)?;
        self.blobs.put(MODEL_KEY, bytes, "application/json").await?;
        let t = Arc::new(t.indexed());
        self.swap(t.clone());
        tracing::info!(
            version = %t.version,
            interactions = t.interactions,
            items = t.items.len(),
            ms = t.training_ms,
            "recommender: new model"
        );
        Ok(t)
    }
}

/// Fits a model on interactions (oldest first).
pub fn fit(
    log: &[processors::state::Interaction],
    progress: &dyn Fn(&str),
) -> Result<Trained, TrainError> {
    let mut subjects: HashMap<&str, u32> = HashMap::new();
    let mut items: Vec<String> = Vec::new();
    let mut index: HashMap<&str, u32> = HashMap::new();
    let mut rows = Vec::with_capacity(log.len());
    for r in log {
        let n = subjects.len() as u32;
        let user = *subjects.entry(&r.subject).or_insert(n);
        let item = *index.entry(&r.product_id).or_insert_with(|| {
            items.push(r.product_id.clone());
            items.len() as u32 - 1
        });
        rows.push(recommender::data::Interaction {
            user,
            item,
            ts: r.at,
            kind: if r.kind == interaction::PURCHASE {
                recommender::data::Kind::Purchase
            } else {
                recommender::data::Kind::View
            },
        });
    }
    let (m, report) = Hybrid::fit(&rows, items.len(), model::Config::default(), progress)?;
    let together = bought_together(log, &index, items.len());
    let now = OffsetDateTime::now_utc();
    Ok(Trained {
        version: format!("m{}", now.unix_timestamp_nanos() / 1_000_000),
        trained_at: now.format(&Rfc3339).unwrap_or_default(),
        training_ms: 0,
        interactions: rows.len(),
        subjects: subjects.len(),
        items,
        report,
        model: m,
        categories: Vec::new(),
        together,
        index: HashMap::new(),
        hints: Vec::new(),
    })
}

/// Purchases by one subject this close together count as one basket.
pub const BASKET_GAP_MS: i64 = 60 * 60 * 1000;
/// Items kept per item in [`Trained::together`].
const TOGETHER_KEEP: usize = 20;
/// The most items of one basket that are paired (bounds the work).
const BASKET_CAP: usize = 50;

/// What is bought together: baskets are one subject's purchases with gaps
/// under [`BASKET_GAP_MS`]; a pair's score is its basket count over the
/// geometric mean of the two items' basket counts (cosine).
fn bought_together(
    log: &[processors::state::Interaction],
    index: &HashMap<&str, u32>,
    items: usize,
) -> Vec<Vec<(u32, f32)>> {
    let mut by_subject: HashMap<&str, Vec<(i64, u32)>> = HashMap::new();
    for r in log.iter().filter(|r| r.kind == interaction::PURCHASE) {
        if let Some(&i) = index.get(r.product_id.as_str()) {
            by_subject.entry(&r.subject).or_default().push((r.at, i));
        }
    }
    let mut baskets_of = vec![0u32; items];
    let mut pairs: HashMap<(u32, u32), u32> = HashMap::new();
    let mut close = |basket: &mut Vec<u32>| {
        basket.sort_unstable();
        basket.dedup();
        basket.truncate(BASKET_CAP);
        for (k, &a) in basket.iter().enumerate() {
            baskets_of[a as usize] += 1;
            for &b in &basket[k + 1..] {
                *pairs.entry((a, b)).or_default() += 1;
            }
        }
        basket.clear();
    };
    for buys in by_subject.values_mut() {
        buys.sort_unstable();
        let mut basket = Vec::new();
        let mut last = None;
        for &(at, i) in buys.iter() {
            if last.is_some_and(|l| at - l > BASKET_GAP_MS) {
                close(&mut basket);
            }
            basket.push(i);
            last = Some(at);
        }
        close(&mut basket);
    }
    let mut out = vec![Vec::new(); items];
    for ((a, b), n) in pairs {
        // In f32: the product of two large basket counts overflows a u32.
        let score =
            n as f32 / (baskets_of[a as usize] as f32 * baskets_of[b as usize] as f32).sqrt();
        out[a as usize].push((b, score));
        out[b as usize].push((a, score));
    }
    for l in &mut out {
        l.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
        l.truncate(TOGETHER_KEEP);
    }
    out
}

/// When the recommender retrains.
#[derive(Debug)]
pub struct Retrain {
    /// On a schedule (zero: never).
    pub every: std::time::Duration,
    /// When this many behaviour events (views, basket adds, purchases) were
    /// applied since the last run (zero: never).
    pub after_events: u64,
    /// The least time from one run's start to the next one that new events
    /// start: while a backlog is applied at many thousand events a second,
    /// the model is refitted at this pace rather than every
    /// `after_events`.
    pub min_gap: std::time::Duration,
    /// The bus, whose analytics ticks count the events applied.
    pub changes: tokio::sync::broadcast::Receiver<processors::changes::Change>,
}

impl Recs {
    /// Serves the persisted model at once, trains one if there is none, then
    /// retrains on the schedule and when enough new events arrived — off the
    /// request path throughout.
    pub async fn train_periodically(
        self: Arc<Self>,
        mut when: Retrain,
        mut stopped: tokio::sync::watch::Receiver<bool>,
    ) {
        let recs = self;
        use processors::changes::Change;
        use tokio::sync::broadcast::error::RecvError;
        let loaded = tokio::select! {
            loaded = recs.load() => loaded,
            _ = stopped.changed() => return,
        };
        let loaded = match loaded {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::warn!(error = %e, "recommender: the persisted model was not loaded");
                false
            }
        };
        let mut due = !loaded;
        let mut next = tokio::time::Instant::now() + when.every;
        let mut new_events = 0u64;
        // Enough new events arrived: retrain once `min_gap` has passed.
        let mut wanted = false;
        let mut last = tokio::time::Instant::now();
        loop {
            if due {
                due = false;
                wanted = false;
                new_events = 0;
                last = tokio::time::Instant::now();
                next = last + when.every;
                // A stop abandons the training: the model is swapped in only
                // once it is complete, so nothing is left half-done.
                let trained = tokio::select! {
                    trained = recs.train(Arc::new(|_| ())) => trained,
                    _ = stopped.changed() => return,
                };
                if let Err(e) = trained {
                    tracing::info!(error = %e, "recommender: no new model (popularity answers meanwhile)")
                }
            }
            let every = when.every;
            let gap_over = last + when.min_gap;
            let scheduled = async move {
                match (every.is_zero(), wanted) {
                    (_, true) if every.is_zero() || gap_over < next => {
                        tokio::time::sleep_until(gap_over).await
                    }
                    (true, false) => std::future::pending::<()>().await,
                    _ => tokio::time::sleep_until(next).await,
                }
            };
            tokio::select! {
                () = scheduled => due = true,
                change = when.changes.recv(), if when.after_events > 0 && !wanted => {
                    new_events += match change {
                        Ok(Change::AnalyticsTick { views, basket_adds, purchases, .. }) => {
                            (views + basket_adds + purchases).max(0) as u64
                        }
                        Ok(_) => 0,
                        // Missed changes were mostly ticks: count them as one
                        // event each, a lower bound.
                        Err(RecvError::Lagged(n)) => n,
                        Err(RecvError::Closed) => {
                            when.after_events = 0;
                            0
                        }
                    };
                    if new_events >= when.after_events {
                        tracing::info!(events = new_events, "recommender: enough new events, retraining");
                        wanted = true;
                    }
                }
                _ = stopped.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buy(subject: &str, product: &str, minutes: i64) -> processors::state::Interaction {
        processors::state::Interaction {
            subject: subject.into(),
            product_id: product.into(),
            kind: interaction::PURCHASE,
            at: minutes * 60_000,
        }
    }

    #[test]
    fn baskets_are_a_customers_purchases_close_together() {
        let log = vec![
            // u1 buys a and b together, and c a day later (another basket).
            buy("u1", "a", 0),
            buy("u1", "b", 0),
            buy("u1", "c", 24 * 60),
            // u2 buys a and b twenty minutes apart: one basket.
            buy("u2", "a", 0),
            buy("u2", "b", 20),
            // u3 buys a and c; a view is not a purchase.
            buy("u3", "a", 0),
            buy("u3", "c", 1),
            processors::state::Interaction {
                kind: interaction::VIEW,
                ..buy("u3", "b", 2)
            },
        ];
        let names = ["a", "b", "c"];
        let index: HashMap<&str, u32> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (*n, i as u32))
            .collect();
        let t = bought_together(&log, &index, 3);
        // a: 3 baskets, b: 2, c: 2 (u1's later basket holds c alone).
        // a–b: 2 baskets → 2/√6; a–c: 1 → 1/√6; b–c: none.
        assert_eq!(t[0].iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 2]);
        assert!((t[0][0].1 - 2.0 / 6f32.sqrt()).abs() < 1e-6);
        assert!((t[0][1].1 - 1.0 / 6f32.sqrt()).abs() < 1e-6);
        assert_eq!(t[1], vec![(0, t[0][0].1)]);
        assert_eq!(t[2], vec![(0, t[0][1].1)]);
    }
}
