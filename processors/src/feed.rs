//! The change feed: how instances sharing one store see each other's
//! changes. Each instance writes the [`Change`]s it publishes to a feed in
//! the store (`meta` / `feed#{10 s bucket}` / `{time}#{instance}#{n}`, kept
//! ten minutes by DynamoDB's TTL), and polls the feed for the other
//! instances' changes, which it publishes on its own bus — so a websocket
//! client sees every change, whichever instance applied it.
//!
//! The poll reads the last few seconds again each time and remembers what it
//! delivered, so a change written late (clock skew, a slow write) is still
//! delivered once. Delay: the poll interval plus one store round trip.

use domain::clock::now_ms;
use std::{collections::HashMap, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use storage::{Key, Query, SortRange, Store, StoreError, Table, TxOp, from_item, to_item};
use tokio::sync::{mpsc, watch};

use crate::{Bus, Change};

const BUCKET_MS: i64 = 10_000;
/// How far back each poll looks again.
const LOOKBACK_MS: i64 = 5_000;
const TTL_SECS: i64 = 600;

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    change: String,
    ttl: i64,
}

/// One instance's end of the feed.
#[derive(Clone, Debug)]
pub struct Feed {
    pub store: Arc<dyn Store>,
    pub instance: String,
    pub bus: Bus,
    pub poll: Duration,
}

impl Feed {
    /// Writes this instance's changes and delivers the others', until
    /// `stopped` changes.
    pub async fn run(self, mut stopped: watch::Receiver<bool>) {
        let changes = self.bus.attach_feed(4096);
        let writer = tokio::spawn(self.clone().write(changes));
        let mut delivered: HashMap<String, i64> = HashMap::new();
        loop {
            if let Err(e) = self.deliver(&mut delivered).await {
                tracing::warn!(error = %e, "change feed: poll failed");
            }
            tokio::select! {
                () = tokio::time::sleep(self.poll) => {}
                _ = stopped.changed() => break,
            }
        }
        writer.abort();
    }

    async fn write(self, mut changes: mpsc::Receiver<Change>) {
        let mut n: u64 = 0;
        while let Some(first) = changes.recv().await {
            let mut batch = vec![first];
            while batch.len() < 25 {
                match changes.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            let now = now_ms();
            let ops: Result<Vec<TxOp>, StoreError> = batch
                .iter()
                .map(|c| {
                    n += 1;
                    let key = Key::new(
                        format!("feed#{}", now / BUCKET_MS),
                        format!("{now:013}#{}#{n:010}", self.instance),
                    );
                    let entry = Entry {
                        change: serde_json::to_string(c)
                            .map_err(|e| StoreError::Invalid(e.to_string()))?,
                        ttl: now / 1000 + TTL_SECS,
                    };
                    Ok(TxOp::Put {
                        table: Table::Meta,
                        item: to_item(&key, &entry)?,
                        cond: None,
                    })
                })
                .collect();
            let result = match ops {
                Ok(ops) => self.store.transact(ops).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                metrics::counter!("shopstream_feed_write_failures_total").increment(1);
                tracing::warn!(error = %e, changes = batch.len(), "change feed: write failed; other instances miss these changes");
            }
        }
    }

    async fn deliver(&self, delivered: &mut HashMap<String, i64>) -> Result<(), StoreError> {
        let now = now_ms();
        let from = now - LOOKBACK_MS;
        delivered.retain(|_, at| *at >= from - LOOKBACK_MS);
        let mine = format!("#{}#", self.instance);
        for bucket in (from / BUCKET_MS)..=(now / BUCKET_MS) {
            let mut query = Query {
                range: SortRange::Between(format!("{from:013}"), "9999999999999~".into()),
                limit: 1000,
                ..Query::default()
            };
            loop {
                let page = self
                    .store
                    .query(Table::Meta, &format!("feed#{bucket}"), &query)
                    .await?;
                for item in page.items {
                    let key = Key::of(&item)?;
                    if key.sk.contains(&mine) || delivered.contains_key(&key.sk) {
                        continue;
                    }
                    let at = key.sk[..13].parse::<i64>().unwrap_or(now);
                    let entry: Entry = from_item(item)?;
                    match serde_json::from_str::<Change>(&entry.change) {
                        Ok(c) => {
                            metrics::counter!("shopstream_feed_delivered_total").increment(1);
                            self.bus.publish_remote(c);
                        }
                        Err(e) => tracing::warn!(error = %e, "change feed: unreadable entry"),
                    }
                    delivered.insert(key.sk, at);
                }
                match page.cursor {
                    Some(c) => query.cursor = Some(c),
                    None => break,
                }
            }
        }
        Ok(())
    }
}
