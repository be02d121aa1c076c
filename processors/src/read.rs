//! Reading what the processors keep, for the API.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use storage::{Key, Query, SortRange, Store, StoreError, Table, from_item};
use time::{Duration, OffsetDateTime};

use crate::state::{
    ALL, Alert, Counters, DeadLetter, Profile, Stock, alert_key, hour_of, minute_key, minute_of,
    profile_key, reco_key, stock_key, trend_hour_key,
};

/// One product's stock, if any event has touched it.
pub async fn stock(store: &dyn Store, product_id: &str) -> Result<Option<Stock>, StoreError> {
    store
        .get(Table::Inventory, &stock_key(product_id))
        .await?
        .map(from_item)
        .transpose()
}

/// One page of a partition, highest sort key (newest) first.
async fn newest_first(
    store: &dyn Store,
    table: Table,
    pk: &str,
    limit: usize,
    cursor: Option<String>,
) -> Result<storage::Page, StoreError> {
    let query = Query {
        limit,
        cursor,
        descending: true,
        ..Query::default()
    };
    store.query(table, pk, &query).await
}

/// A supplier's low-stock alerts, newest first, a page at a time.
pub async fn alerts(
    store: &dyn Store,
    supplier_id: &str,
    limit: usize,
    cursor: Option<String>,
) -> Result<(Vec<Alert>, Option<String>), StoreError> {
    let page = newest_first(
        store,
        Table::Alerts,
        &alert_key(supplier_id, "").pk,
        limit,
        cursor,
    )
    .await?;
    let alerts = page
        .items
        .into_iter()
        .map(from_item)
        .collect::<Result<_, _>>()?;
    Ok((alerts, page.cursor))
}

/// A subject's behaviour profile (`user:{id}` or `session:{id}`); empty
/// when it has none yet.
pub async fn profile(store: &dyn Store, subject: &str) -> Result<Profile, StoreError> {
    Ok(
        match store.get(Table::Behaviour, &profile_key(subject)).await? {
            Some(item) => Profile::from_item(item)?,
            None => Profile::default(),
        },
    )
}

/// One row of recommendation attribution: a model version's totals
/// (`source` empty) or one source's within it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttributionRow {
    pub model_version: String,
    /// The candidate source, or `None` for the version's totals.
    pub source: Option<String>,
    pub responses: i64,
    pub impressions: i64,
    pub clicks: i64,
    pub basket_adds: i64,
    pub purchases: i64,
}

/// Every attribution row, newest model version first.
pub async fn attribution(store: &dyn Store) -> Result<Vec<AttributionRow>, StoreError> {
    let pk = reco_key("", None).pk;
    let mut q = Query {
        limit: 1000,
        descending: true,
        ..Query::default()
    };
    let mut out = Vec::new();
    loop {
        let page = store.query(Table::Analytics, &pk, &q).await?;
        for item in &page.items {
            let n = |a: &str| match item.get(a) {
                Some(storage::Value::N(v)) => v.parse::<i64>().unwrap_or(0),
                _ => 0,
            };
            let sk = Key::of(item)?.sk;
            let (model_version, source) = match sk.split_once('#') {
                Some((v, s)) => (v.to_owned(), Some(s.to_owned())),
                None => (sk, None),
            };
            out.push(AttributionRow {
                model_version,
                source,
                responses: n("responses"),
                impressions: n("impressions"),
                clicks: n("clicks"),
                basket_adds: n("basket_adds"),
                purchases: n("purchases"),
            });
        }
        match page.cursor {
            Some(c) => q.cursor = Some(c),
            None => return Ok(out),
        }
    }
}

/// A page of stock, by product id; `below_threshold` keeps only products whose
/// available stock is under their low-stock threshold.
pub async fn stock_page(
    store: &dyn Store,
    limit: usize,
    cursor: Option<String>,
    below_threshold: bool,
) -> Result<(Vec<(String, Stock)>, Option<String>), StoreError> {
    let mut query = Query {
        limit,
        cursor,
        ..Query::default()
    };
    let mut out = Vec::new();
    loop {
        let page = store.query(Table::Inventory, "inventory", &query).await?;
        for item in page.items {
            let id = Key::of(&item)?.sk;
            let s: Stock = from_item(item)?;
            let below = s.low_stock_threshold.is_some_and(|t| s.available < t);
            if !s.deleted && (!below_threshold || below) {
                out.push((id, s));
            }
        }
        match page.cursor {
            Some(c) if out.len() < limit => {
                query.cursor = Some(c);
                query.limit = limit - out.len();
            }
            next => return Ok((out, next)),
        }
    }
}

/// The shop's counters per minute over the last `minutes` minutes up to
/// `now`, oldest first; minutes without activity are left out.
pub async fn minutes(
    store: &dyn Store,
    now: OffsetDateTime,
    minutes: i64,
) -> Result<Vec<(String, Counters)>, StoreError> {
    let key = minute_key(ALL, "");
    let from = minute_of(now - Duration::minutes(minutes - 1));
    let to = minute_of(now);
    let page = store
        .query(
            Table::Analytics,
            &key.pk,
            &Query {
                range: SortRange::Between(from, to),
                limit: 1000,
                ..Query::default()
            },
        )
        .await?;
    page.items
        .into_iter()
        .map(|item| Ok((Key::of(&item)?.sk, Counters::from_item(&item))))
        .collect()
}

/// One product's counters per hour over the last `hours` hours up to `now`
/// (the current hour included), oldest first; hours without activity are
/// left out. They are the product's items in the hourly trending
/// partitions, read a few at a time.
pub async fn product_hours(
    store: &dyn Store,
    product_id: &str,
    now: OffsetDateTime,
    hours: i64,
) -> Result<Vec<(String, Counters)>, StoreError> {
    use futures::{StreamExt, TryStreamExt};
    let hours: Vec<String> = (0..hours)
        .rev()
        .map(|h| hour_of(now - Duration::hours(h)))
        .collect();
    let got: Vec<Option<(String, Counters)>> = futures::stream::iter(hours)
        .map(|hour| async move {
            let item = store
                .get(Table::Analytics, &trend_hour_key(&hour, product_id))
                .await?;
            Ok::<_, StoreError>(item.map(|i| (hour, Counters::from_item(&i))))
        })
        .buffered(16)
        .try_collect()
        .await?;
    Ok(got.into_iter().flatten().collect())
}

/// The products with the most activity over a window ending now: purchases
/// weigh most, then basket adds, then views. Counters are kept per hour, so
/// the window is a sliding-window estimate: the hours it covers whole, plus
/// the share of the oldest hour it still covers (at 10:15, a 1 h window is
/// 10:00-10:15 and three quarters of 9:00-10:00's counters), as rate
/// limiters estimate a sliding window from fixed ones.
pub async fn trending(
    store: &dyn Store,
    now: OffsetDateTime,
    window: Duration,
    limit: usize,
) -> Result<Vec<(String, Counters)>, StoreError> {
    let hours = window.whole_hours().max(1);
    let now = now.to_offset(time::UtcOffset::UTC);
    let into_hour = i64::from(now.minute()) * 60 + i64::from(now.second());
    let oldest_share = 1000 - into_hour * 1000 / 3600;
    let mut totals: BTreeMap<String, Counters> = BTreeMap::new();
    for h in 0..=hours {
        let share = if h == hours { oldest_share } else { 1000 };
        let pk = format!("trend#h#{}", hour_of(now - Duration::hours(h)));
        let mut query = Query {
            limit: 1000,
            ..Query::default()
        };
        loop {
            let page = store.query(Table::Analytics, &pk, &query).await?;
            for item in &page.items {
                totals
                    .entry(Key::of(item)?.sk)
                    .or_default()
                    .add_share(&Counters::from_item(item), share);
            }
            match page.cursor {
                Some(c) => query.cursor = Some(c),
                None => break,
            }
        }
    }
    let mut ranked: Vec<(String, Counters)> = totals
        .into_iter()
        .filter(|(_, c)| c.trend_score() > 0)
        .collect();
    ranked.sort_by(|a, b| {
        b.1.trend_score()
            .cmp(&a.1.trend_score())
            .then_with(|| a.0.cmp(&b.0))
    });
    ranked.truncate(limit);
    Ok(ranked)
}

/// How many products a cached trending list keeps: the most any caller
/// asks for.
pub const TRENDING_KEPT: usize = 500;

/// [`trending`] for requests: computed at most once per window and
/// [`TrendingLists::TTL`], by one request; while it computes, the others
/// are served the list before (or wait for it, when there is none yet). A
/// window is a scan of its hour partitions (every product active in each
/// hour), far too much work for every request of an open endpoint.
#[derive(Clone, Debug)]
pub struct TrendingLists {
    store: Arc<dyn Store>,
    ttl: std::time::Duration,
    lists: Arc<std::sync::Mutex<HashMap<i64, Arc<Slot>>>>,
}

/// One window's list: the last computed, and the turn to compute it.
#[derive(Debug, Default)]
struct Slot {
    list: std::sync::Mutex<Option<Computed>>,
    computing: tokio::sync::Mutex<()>,
}

/// A trending list, and when it was computed.
type Computed = (std::time::Instant, Arc<Vec<(String, Counters)>>);

impl TrendingLists {
    /// How long a window's list is served before it is computed again
    /// (by [`TrendingLists::new`]).
    pub const TTL: std::time::Duration = std::time::Duration::from_secs(2);

    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::with_ttl(store, Self::TTL)
    }

    /// Lists served for `ttl` before they are computed again.
    pub fn with_ttl(store: Arc<dyn Store>, ttl: std::time::Duration) -> Self {
        Self {
            store,
            ttl,
            lists: Arc::default(),
        }
    }

    /// The most active products over the last `window` (at most
    /// [`TRENDING_KEPT`]), as of about [`TrendingLists::TTL`] ago.
    pub async fn get(
        &self,
        window: Duration,
        limit: usize,
    ) -> Result<Vec<(String, Counters)>, StoreError> {
        let hours = window.whole_hours().max(1);
        let slot = self
            .lists
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(hours)
            .or_default()
            .clone();
        let last = || slot.list.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let take = |list: &[(String, Counters)]| list.iter().take(limit).cloned().collect();
        let turn = match last() {
            Some((at, list)) if at.elapsed() < self.ttl => return Ok(take(&list)),
            // Another request is computing it: the list before will do.
            Some((_, list)) => match slot.computing.try_lock() {
                Ok(turn) => turn,
                Err(_) => return Ok(take(&list)),
            },
            None => slot.computing.lock().await,
        };
        // Computed while this one waited for its turn?
        if let Some((at, list)) = last()
            && at.elapsed() < self.ttl
        {
            return Ok(take(&list));
        }
        let list = Arc::new(
            trending(
                self.store.as_ref(),
                OffsetDateTime::now_utc(),
                window,
                TRENDING_KEPT,
            )
            .await?,
        );
        *slot.list.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((std::time::Instant::now(), list.clone()));
        drop(turn);
        Ok(take(&list))
    }
}

/// A page of dead letters, newest first.
pub async fn dead_letters(
    store: &dyn Store,
    limit: usize,
    cursor: Option<String>,
) -> Result<(Vec<(String, DeadLetter)>, Option<String>), StoreError> {
    let page = newest_first(store, Table::DeadLetters, "dead", limit, cursor).await?;
    let items = page
        .items
        .into_iter()
        .map(|item| Ok((Key::of(&item)?.sk, from_item(item)?)))
        .collect::<Result<_, StoreError>>()?;
    Ok((items, page.cursor))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use storage::{Update, embedded::Embedded};
    use time::macros::datetime;

    use super::*;

    async fn count(store: &dyn Store, hour: &str, product: &str, views: i64) {
        store
            .update(
                Table::Analytics,
                &trend_hour_key(hour, product),
                vec![Update::Add(
                    "views".into(),
                    storage::Value::N(views.to_string()),
                )],
                None,
            )
            .await
            .unwrap();
    }

    fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(Embedded::open(dir.path(), "").unwrap());
        (dir, store)
    }

    #[tokio::test]
    async fn a_window_takes_the_share_of_its_oldest_hour_it_still_covers() {
        let (_dir, store) = store();
        count(store.as_ref(), "2026-11-23T10", "a", 10).await;
        count(store.as_ref(), "2026-11-23T09", "b", 40).await;
        count(store.as_ref(), "2026-11-23T09", "c", 1).await;
        count(store.as_ref(), "2026-11-23T08", "d", 1_000).await;
        // At 10:15 the last hour is 10:00-10:15 and 9:15-10:00: three
        // quarters of 9:00's counters; 8:00 is out of the window.
        let now = datetime!(2026-11-23 10:15 UTC);
        let ranked = trending(store.as_ref(), now, Duration::hours(1), 10)
            .await
            .unwrap();
        let views: Vec<(&str, i64)> = ranked.iter().map(|(p, c)| (p.as_str(), c.views)).collect();
        assert_eq!(views, vec![("b", 30), ("a", 10), ("c", 1)]);
        // At 10:59 almost nothing of 9:00 is left: c's one view rounds away.
        let late = trending(
            store.as_ref(),
            datetime!(2026-11-23 10:59 UTC),
            Duration::hours(1),
            10,
        )
        .await
        .unwrap();
        let views: Vec<(&str, i64)> = late.iter().map(|(p, c)| (p.as_str(), c.views)).collect();
        assert_eq!(views, vec![("a", 10), ("b", 1)]);
        // A day's window covers 8:00 whole.
        let day = trending(store.as_ref(), now, Duration::hours(24), 1)
            .await
            .unwrap();
        assert_eq!(day[0].0, "d");
    }

    #[tokio::test]
    async fn requests_share_a_list_until_it_is_older_than_its_ttl() {
        let (_dir, store) = store();
        let hour = hour_of(OffsetDateTime::now_utc());
        count(store.as_ref(), &hour, "a", 3).await;
        let cached = TrendingLists::with_ttl(store.clone(), std::time::Duration::from_secs(3600));
        let fresh = TrendingLists::with_ttl(store.clone(), std::time::Duration::ZERO);
        let names = |l: Vec<(String, Counters)>| l.into_iter().map(|(p, _)| p).collect::<Vec<_>>();
        assert_eq!(
            names(cached.get(Duration::hours(1), 10).await.unwrap()),
            ["a"]
        );
        count(store.as_ref(), &hour, "b", 5).await;
        // Within the ttl the list computed first is served, cut to the limit
        // asked; each window has its own.
        assert_eq!(
            names(cached.get(Duration::hours(1), 10).await.unwrap()),
            ["a"]
        );
        assert_eq!(
            names(cached.get(Duration::hours(24), 1).await.unwrap()),
            ["b"]
        );
        assert_eq!(
            names(fresh.get(Duration::hours(1), 10).await.unwrap()),
            ["b", "a"]
        );
    }

    #[tokio::test]
    async fn a_products_hours_are_its_trending_items_oldest_first() {
        let (_dir, store) = store();
        count(store.as_ref(), "2026-11-23T10", "a", 2).await;
        count(store.as_ref(), "2026-11-23T08", "a", 5).await;
        count(store.as_ref(), "2026-11-23T07", "a", 7).await;
        count(store.as_ref(), "2026-11-23T10", "b", 9).await;
        let now = datetime!(2026-11-23 10:30 UTC);
        let hours = product_hours(store.as_ref(), "a", now, 3).await.unwrap();
        let got: Vec<(&str, i64)> = hours.iter().map(|(h, c)| (h.as_str(), c.views)).collect();
        assert_eq!(got, vec![("2026-11-23T08", 5), ("2026-11-23T10", 2)]);
    }
}
