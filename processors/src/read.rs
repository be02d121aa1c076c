//! Reading what the processors keep, for the API.

use std::collections::BTreeMap;

use storage::{Key, Query, SortRange, Store, StoreError, Table, from_item};
use time::{Duration, OffsetDateTime};

use crate::state::{ALL, Counters, DeadLetter, Stock, hour_of, minute_key, minute_of, stock_key};

/// One product's stock, if any event has touched it.
pub async fn stock(store: &dyn Store, product_id: &str) -> Result<Option<Stock>, StoreError> {
    store
        .get(Table::Inventory, &stock_key(product_id))
        .await?
        .map(from_item)
        .transpose()
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
    let score = |c: &Counters| c.purchases * 10 + c.basket_adds * 3 + c.views;
    ranked.sort_by(|a, b| score(&b.1).cmp(&score(&a.1)).then_with(|| a.0.cmp(&b.0)));
    ranked.truncate(limit);
    Ok(ranked)
}

/// A page of dead letters, newest first.
pub async fn dead_letters(
    store: &dyn Store,
    limit: usize,
    cursor: Option<String>,
) -> Result<(Vec<(String, DeadLetter)>, Option<String>), StoreError> {
    let page = store
        .query(
            Table::DeadLetters,
            "dead",
            &Query {
                limit,
                cursor,
                descending: true,
                ..Query::default()
            },
        )
        .await?;
    let items = page
        .items
        .into_iter()
        .map(|item| Ok((Key::of(&item)?.sk, from_item(item)?)))
        .collect::<Result<_, StoreError>>()?;
    Ok((items, page.cursor))
}
