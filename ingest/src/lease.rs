//! Shard leases in the store, KCL-style: one item per shard with its owner, a
//! counter that grows whenever the lease is taken or renewed, the checkpoint,
//! the parent shards and whether the shard is finished. Every change is
//! conditional on the counter, so two workers never both believe they hold a
//! lease; the pipeline's commit is conditional on it too, which fences a
//! worker that lost its lease mid-batch.
//!
//! **Expiry never compares clocks across hosts.** As the KCL does, a worker
//! deems another's lease lapsed when it has seen the lease's counter stay
//! the same for the failover time on its *own* monotonic clock; renewals bump
//! the counter. (`expires_at` is still written, by the holder's clock, for
//! people reading the lease table; no decision uses it.) So an instance
//! whose wall clock is off takes no lease that is being renewed.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use processors::Checkpoint;
use serde::{Deserialize, Serialize};
use storage::{Cond, Key, Query, Store, StoreError, Table, Update, Value, from_item, to_item};

/// One shard's lease.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default)]
    pub counter: u64,
    /// Milliseconds since the Unix epoch when the owner's hold lapses, by the
    /// owner's clock: for display only (see the module docs).
    #[serde(default)]
    pub expires_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    #[serde(default)]
    pub parents: Vec<String>,
    /// The shard was read to its end (`SHARD_END`).
    #[serde(default)]
    pub finished: bool,
}

/// A lease together with where it lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub stream: String,
    pub shard: String,
    pub lease: Lease,
}

impl Held {
    /// The fence the pipeline commits under.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            stream: self.stream.clone(),
            shard: self.shard.clone(),
            owner: self.lease.owner.clone().unwrap_or_default(),
            counter: self.lease.counter,
            from: self.lease.checkpoint.clone(),
        }
    }
}

pub use domain::clock::now_ms;

/// Takes, renews and releases leases for one worker.
#[derive(Clone, Debug)]
pub struct Leases {
    store: Arc<dyn Store>,
    owner: String,
    failover: Duration,
    /// Each other worker's lease as last seen: its counter, and since when
    /// (on this worker's monotonic clock) the counter has stayed so.
    seen: Arc<Mutex<Sightings>>,
}

/// (stream, shard) → (counter, seen unchanged since).
type Sightings = HashMap<(String, String), (u64, Instant)>;

impl Leases {
    pub fn new(store: Arc<dyn Store>, owner: impl Into<String>, failover: Duration) -> Self {
        Self {
            store,
            owner: owner.into(),
            failover,
            seen: Arc::default(),
        }
    }

    /// Whether this worker may take `lease` now: nobody holds it, or its
    /// holder has not renewed it (its counter stood still) for the failover
    /// time as this worker's own clock measures it. Call it with every fresh
    /// read of the lease.
    pub fn lapsed(&self, stream: &str, shard: &str, lease: &Lease) -> bool {
        if lease.owner.is_none() {
            return true;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let key = (stream.to_owned(), shard.to_owned());
        match seen.get(&key) {
            Some((counter, since)) if *counter == lease.counter => since.elapsed() >= self.failover,
            _ => {
                seen.insert(key, (lease.counter, Instant::now()));
                false
            }
        }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub fn failover(&self) -> Duration {
        self.failover
    }

    fn key(stream: &str, shard: &str) -> Key {
        Key::new(stream, shard)
    }

    /// Creates the shard's lease if it has none. Idempotent (after a merge,
    /// both parents may report the same child).
    pub async fn ensure(
        &self,
        stream: &str,
        shard: &str,
        parents: Vec<String>,
    ) -> Result<(), StoreError> {
        let lease = Lease {
            parents,
            ..Lease::default()
        };
        match self
            .store
            .put(
                Table::Leases,
                to_item(&Self::key(stream, shard), &lease)?,
                Some(Cond::NotExists),
            )
            .await
        {
            Ok(()) | Err(StoreError::ConditionFailed) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn get(&self, stream: &str, shard: &str) -> Result<Option<Lease>, StoreError> {
        self.store
            .get(Table::Leases, &Self::key(stream, shard))
            .await?
            .map(from_item)
            .transpose()
    }

    /// Every lease of a stream, by shard id.
    pub async fn list(&self, stream: &str) -> Result<Vec<(String, Lease)>, StoreError> {
        let mut out = Vec::new();
        let mut query = Query {
            limit: 1000,
            ..Query::default()
        };
        loop {
            let page = self.store.query(Table::Leases, stream, &query).await?;
            for item in page.items {
                let key = Key::of(&item)?;
                out.push((key.sk, from_item(item)?));
            }
            match page.cursor {
                Some(c) => query.cursor = Some(c),
                None => return Ok(out),
            }
        }
    }

    /// Takes the lease if `seen` is still its state. `None` if someone else
    /// changed it first.
    pub async fn take(
        &self,
        stream: &str,
        shard: &str,
        seen: &Lease,
    ) -> Result<Option<Held>, StoreError> {
        let expires_at = now_ms() + self.failover.as_millis() as i64;
        let r = self
            .store
            .update(
                Table::Leases,
                &Self::key(stream, shard),
                vec![
                    Update::set("owner", self.owner.as_str()),
                    Update::add("counter", 1),
                    Update::set("expires_at", expires_at),
                ],
                Some(Cond::And(vec![
                    Cond::Exists,
                    Cond::eq("counter", seen.counter),
                ])),
            )
            .await;
        match r {
            Ok(item) => Ok(Some(Held {
                stream: stream.into(),
                shard: shard.into(),
                lease: from_item(item)?,
            })),
            Err(StoreError::ConditionFailed) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn mine(held: &Held) -> Cond {
        Cond::And(vec![
            Cond::eq("owner", held.lease.owner.clone().unwrap_or_default()),
            Cond::eq("counter", held.lease.counter),
        ])
    }

    /// Extends the hold: bumps the counter, which is what other workers
    /// watch (so `held` fences later commits with the new counter). False if
    /// the lease was taken from us.
    pub async fn renew(&self, held: &mut Held) -> Result<bool, StoreError> {
        let expires_at = now_ms() + self.failover.as_millis() as i64;
        let r = self
            .store
            .update(
                Table::Leases,
                &Self::key(&held.stream, &held.shard),
                vec![
                    Update::add("counter", 1),
                    Update::set("expires_at", expires_at),
                ],
                Some(Self::mine(held)),
            )
            .await;
        match r {
            Ok(item) => {
                held.lease = from_item(item)?;
                Ok(true)
            }
            Err(StoreError::ConditionFailed) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up so another worker can take it at once.
    pub async fn release(&self, held: &Held) -> Result<(), StoreError> {
        let r = self
            .store
            .update(
                Table::Leases,
                &Self::key(&held.stream, &held.shard),
                vec![
                    Update::Remove("owner".into()),
                    Update::Set("expires_at".into(), Value::N("0".into())),
                ],
                Some(Self::mine(held)),
            )
            .await;
        match r {
            Ok(_) | Err(StoreError::ConditionFailed) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Marks a shard that no longer exists as finished, whoever holds its
    /// lease: there is nothing left in it to read.
    pub async fn finish_gone(&self, stream: &str, shard: &str) -> Result<(), StoreError> {
        let r = self
            .store
            .update(
                Table::Leases,
                &Self::key(stream, shard),
                vec![Update::Set("finished".into(), Value::Bool(true))],
                Some(Cond::Exists),
            )
            .await;
        match r {
            Ok(_) | Err(StoreError::ConditionFailed) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Marks the shard read to its end, so its children may start.
    pub async fn finish(&self, held: &Held) -> Result<bool, StoreError> {
        let r = self
            .store
            .update(
                Table::Leases,
                &Self::key(&held.stream, &held.shard),
                vec![Update::Set("finished".into(), Value::Bool(true))],
                Some(Self::mine(held)),
            )
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(StoreError::ConditionFailed) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
