//! Reading what the processors keep, for the API.

use std::collections::BTreeMap;

use storage::{Key, Query, SortRange, Store, StoreError, Table, from_item};
use time::{Duration, OffsetDateTime};

use crate::state::{
    ALL, Alert, Counters, DeadLetter, Profile, Stock, alert_key, hour_of, minute_key, minute_of,
    profile_key, reco_key, stock_key,
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

/// Per-minute counters of a scope (a product id, or all products) over the
/// last `minutes` minutes up to `now`, oldest first; minutes without activity
/// are left out.
pub async fn minutes(
    store: &dyn Store,
    scope: Option<&str>,
    now: OffsetDateTime,
    minutes: i64,
) -> Result<Vec<(String, Counters)>, StoreError> {
    let key = minute_key(scope.unwrap_or(ALL), "");
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

/// The products with the most activity over a window ending now: purchases
/// weigh most, then basket adds, then views.
pub async fn trending(
    store: &dyn Store,
    now: OffsetDateTime,
    window: Duration,
    limit: usize,
) -> Result<Vec<(String, Counters)>, StoreError> {
    let hourly = window > Duration::hours(2);
    let buckets: Vec<String> = if hourly {
        (0..window.whole_hours())
            .map(|h| format!("trend#h#{}", hour_of(now - Duration::hours(h))))
            .collect()
    } else {
        (0..window.whole_minutes())
            .map(|m| format!("trend#m#{}", minute_of(now - Duration::minutes(m))))
            .collect()
    };
    let mut totals: BTreeMap<String, Counters> = BTreeMap::new();
    for pk in buckets {
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
                    .add(&Counters::from_item(item));
            }
            match page.cursor {
                Some(c) => query.cursor = Some(c),
                None => break,
            }
        }
    }
    let mut ranked: Vec<(String, Counters)> = totals.into_iter().collect();
    ranked.sort_by(|a, b| {
        b.1.trend_score()
            .cmp(&a.1.trend_score())
            .then_with(|| a.0.cmp(&b.0))
    });
    ranked.truncate(limit);
    Ok(ranked)
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
