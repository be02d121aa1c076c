//! The pipeline: a batch of raw records in, its effects and its new
//! checkpoint committed in one transaction out.
//!
//! The transaction is fenced: it carries the lease's owner and counter and the
//! checkpoint the batch started from as conditions. A worker that lost its
//! lease, or whose batch was already committed by someone else, cannot commit;
//! a crash before the commit replays the batch, a crash after it does not.
//! That gives exactly-once effects from an at-least-once stream.

use domain::clock::now_ms;
use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Instant,
};

use domain::{DeadLetterReason, Event, Rejection};
use storage::{Cond, Key, Store, StoreError, Table, TxOp, Update, Value, from_item, to_item};

use crate::{
    Bus, Change,
    fold::{Decoded, Folded, Needs, Origin, Snapshot, fold, fold_decided, needs},
    parts::{self, Note},
    state::{
        Alert, DeadLetter, Mark, NO_SUPPLIER, Profile, Stock, alert_key, dead_letter_key, mark_key,
        profile_key, stock_key,
    },
};

/// How often a batch is folded again after a concurrent change to an item it read.
const RETRIES: u32 = 20;
/// Room left in a transaction for the checkpoint's fence.
const FENCE_BYTES: usize = 4 * 1024;

/// The record as a dead letter of reason `unprocessable`, saying why.
fn unprocessable(record: &Decoded, why: &str) -> Decoded {
    Decoded {
        position: record.position.clone(),
        outcome: Err(Rejection::new(DeadLetterReason::Unprocessable, why)),
        raw: record.raw.clone(),
    }
}

/// One raw record from a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its position in the shard: an offset, or a sequence number (with a
    /// sub-sequence for de-aggregated records).
    pub position: String,
    pub data: Vec<u8>,
}

/// The lease a batch is committed under, and where the shard stood.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub stream: String,
    pub shard: String,
    pub owner: String,
    pub counter: u64,
    /// The checkpoint the batch starts after (`None`: the shard's start).
    pub from: Option<String>,
}

impl Checkpoint {
    pub fn lease_key(&self) -> Key {
        Key::new(self.stream.clone(), self.shard.clone())
    }

    /// The fence's condition: the lease is still ours and the checkpoint
    /// still where the batch started.
    fn fence(&self, also: Option<Cond>) -> Cond {
        let at = match &self.from {
            Some(from) => Cond::eq("checkpoint", from.as_str()),
            None => Cond::HasNot("checkpoint".into()),
        };
        let mut all = vec![
            Cond::eq("owner", self.owner.as_str()),
            Cond::eq("counter", self.counter),
            at,
        ];
        all.extend(also);
        Cond::And(all)
    }

    /// The fence: move the checkpoint to `to` only if the lease is still ours
    /// and the checkpoint is still where the batch started (and no batch is
    /// half committed: a note would be there).
    fn op(&self, to: &str) -> TxOp {
        TxOp::Update {
            table: Table::Leases,
            key: self.lease_key(),
            updates: vec![Update::set("checkpoint", to)],
            cond: Some(self.fence(Some(Cond::HasNot(parts::PENDING.into())))),
        }
    }

    /// The fence of a parted batch's first part: it writes the note.
    fn begin_parts(&self, note: &Note) -> TxOp {
        TxOp::Update {
            table: Table::Leases,
            key: self.lease_key(),
            updates: note.updates(),
            cond: Some(self.fence(Some(Cond::HasNot(parts::PENDING.into())))),
        }
    }

    /// The fence of a parted batch's middle part: the note is this batch's.
    fn check_parts(&self, note: &Note) -> TxOp {
        TxOp::Check {
            table: Table::Leases,
            key: self.lease_key(),
            cond: self.fence(Some(Cond::eq(parts::PENDING, note.end.as_str()))),
        }
    }

    /// The fence of a parted batch's last part: it moves the checkpoint to
    /// the batch's end and removes the note.
    fn finish_parts(&self, note: &Note) -> TxOp {
        let mut updates = vec![Update::set("checkpoint", note.end.as_str())];
        updates.extend(Note::removals());
        TxOp::Update {
            table: Table::Leases,
            key: self.lease_key(),
            updates,
            cond: Some(self.fence(Some(Cond::eq(parts::PENDING, note.end.as_str())))),
        }
    }
}

/// Why a batch was not committed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The lease is no longer ours, or the checkpoint moved: stop reading this
    /// shard; nothing of the batch was applied.
    #[error("fenced: the lease on {stream}/{shard} is no longer ours")]
    Fenced { stream: String, shard: String },
    /// A batch of this shard was half committed (see [`crate::parts`]) and
    /// must be replayed whole first: the records given end before its last
    /// one, at `until`. Read on to it and apply again.
    #[error("the half-committed batch on {stream}/{shard} ends at {until}; read on to it")]
    Incomplete {
        stream: String,
        shard: String,
        until: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a batch did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The checkpoint now stored.
    pub checkpoint: Option<String>,
    pub events: u64,
    pub dead_letters: u64,
    /// Events not applied again: their id was applied before.
    pub duplicates: u64,
    /// Transactions committed.
    pub commits: u64,
}

/// Applies batches to the store and tells the bus what changed.
#[derive(Clone, Debug)]
pub struct Pipeline {
    store: Arc<dyn Store>,
    bus: Bus,
    owned: Arc<Mutex<Owned>>,
    /// Held from a batch's snapshot to its effects being put in [`Owned`]:
    /// folds of the shards this worker holds follow one another, each on
    /// the state the one before left (its commit may still be in flight),
    /// so shards that touch the same items (a product's stock, from its
    /// stock events and from purchases on other shards) do not fail each
    /// other's commits.
    turn: Arc<tokio::sync::Mutex<()>>,
}

/// How many items of each kind [`Owned`] keeps at most.
pub const OWNED_ITEMS: usize = 200_000;

/// The kinds of item [`Owned`] keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Stock,
    Profile,
    Mark,
}

/// A fold whose effects are in [`Owned`] before its commit is known: a
/// later fold that builds on them commits only once this one has, and
/// folds again if this one did not. The fold holds the sender; a fold
/// dropped before its commit is known (its task aborted) counts as one
/// that did not commit.
type Ticket = tokio::sync::watch::Receiver<Option<bool>>;

/// Whether the fold of `ticket` committed, once that is known.
async fn committed(ticket: &Ticket) -> bool {
    let mut rx = ticket.clone();
    matches!(
        rx.wait_for(Option::is_some).await.as_deref(),
        Ok(Some(true))
    )
}

/// Whether the fold of `ticket` is known not to have committed.
fn failed(ticket: &Ticket) -> bool {
    match *ticket.borrow() {
        Some(ok) => !ok,
        None => ticket.has_changed().is_err(),
    }
}

/// The items this worker's folds read (stock, profiles, seen marks), as
/// its last fold left them: a batch reads from the store only the items
/// not here. Every operation built from them is still conditional on the
/// item's version, so an item someone else changed (the API, the sweeper,
/// another instance) fails the commit; the failed fold's items are
/// forgotten and it folds again from fresh reads. A fold's effects are
/// kept as soon as it is folded, under a [`Ticket`] until its commit is
/// known, and a fold that took such an item waits for that commit before
/// its own (so an uncommitted state can never be the base of a commit:
/// versions only match the state they were read with). This is a cache of
/// what the fences check, never a source of truth. Dropped when a commit is
/// fenced (the lease moved), and when a kind outgrows [`OWNED_ITEMS`].
#[derive(Debug, Default)]
struct Owned {
    state: Snapshot,
    /// Items in `state` that are a fold's effects not known to be
    /// committed yet.
    /// One map per [`Kind`], so a lookup borrows the key.
    pending: [HashMap<String, Ticket>; 3],
}

/// The items one fold put in [`Owned`] before its commit.
#[derive(Debug, Default)]
struct Speculated {
    keys: Vec<(Kind, String)>,
}

impl Owned {
    fn keep(&mut self, after: Snapshot) {
        fn keep<T>(into: &mut HashMap<String, Option<T>>, from: HashMap<String, Option<T>>) {
            if into.len() + from.len() > OWNED_ITEMS {
                into.clear();
            }
            into.extend(from);
        }
        keep(&mut self.state.stock, after.stock);
        keep(&mut self.state.profiles, after.profiles);
        keep(&mut self.state.marks, after.marks);
    }

    /// Keeps a fold's effects under `ticket`; the stock stays in `after`
    /// too (the bus is told of it after the commit).
    fn speculate(&mut self, after: &mut Snapshot, ticket: &Ticket) -> Speculated {
        let mut keys =
            Vec::with_capacity(after.stock.len() + after.profiles.len() + after.marks.len());
        keys.extend(after.stock.keys().map(|k| (Kind::Stock, k.clone())));
        keys.extend(after.profiles.keys().map(|k| (Kind::Profile, k.clone())));
        keys.extend(after.marks.keys().map(|k| (Kind::Mark, k.clone())));
        for k in &keys {
            self.pending[k.0 as usize].insert(k.1.clone(), ticket.clone());
        }
        self.keep(Snapshot {
            stock: after.stock.clone(),
            profiles: std::mem::take(&mut after.profiles),
            marks: std::mem::take(&mut after.marks),
        });
        Speculated { keys }
    }

    /// Once a speculated fold's commit is known: its items are no longer
    /// pending, and if it did not commit they are forgotten (a fold that
    /// built on them waits for this one and folds again).
    fn settle(
        &mut self,
        spec: Speculated,
        done: &tokio::sync::watch::Sender<Option<bool>>,
        committed: bool,
    ) {
        let mine = done.subscribe();
        for (kind, key) in spec.keys {
            let pending = &mut self.pending[kind as usize];
            if pending.get(&key).is_some_and(|t| t.same_channel(&mine)) {
                pending.remove(&key);
            }
            if !committed {
                self.forget(kind, &key);
            }
        }
        done.send_replace(Some(committed));
    }

    fn forget(&mut self, kind: Kind, key: &str) {
        match kind {
            Kind::Stock => drop(self.state.stock.remove(key)),
            Kind::Profile => drop(self.state.profiles.remove(key)),
            Kind::Mark => drop(self.state.marks.remove(key)),
        }
    }
}

/// Moves the keys of `keys` that `from` keeps out of `keys`, copying
/// their items into `into` and noting the ticket of any that is pending.
fn take_owned<T: Clone>(
    from: &HashMap<String, Option<T>>,
    keys: &mut std::collections::BTreeSet<String>,
    into: &mut HashMap<String, Option<T>>,
    pending: &HashMap<String, Ticket>,
    builds_on: &mut Vec<Ticket>,
) {
    keys.retain(|k| {
        let Some(v) = from.get(k) else {
            return true;
        };
        if let Some(t) = pending.get(k) {
            if failed(t) {
                // The effects of a fold that will never commit: read.
                return true;
            }
            if !builds_on.iter().any(|b| b.same_channel(t)) {
                builds_on.push(t.clone());
            }
        }
        into.insert(k.clone(), v.clone());
        false
    });
}

/// Whether every fold of `tickets` committed, once that is known.
async fn all_committed(tickets: &[Ticket]) -> bool {
    let mut all = true;
    for t in tickets {
        all &= committed(t).await;
    }
    all
}

/// How a parted commit failed.
enum PartsError {
    /// Before any part landed.
    NoneCommitted(StoreError),
    /// After some parts landed: the batch is to be replayed.
    Midway(StoreError),
    /// The lease moved.
    Fenced,
}

/// What a commit wrote: store writes, DynamoDB write units, transactions.
#[derive(Clone, Copy, Debug, Default)]
struct Committed {
    writes: u64,
    units: u64,
    transactions: u64,
}

/// The metrics of one commit.
fn record_commit(cp: &Checkpoint, started: Instant, records: usize, c: &Committed) {
    let Committed { writes, units, .. } = *c;
    let stream = cp.stream.clone();
    metrics::histogram!("shopstream_pipeline_commit_seconds", "stream" => stream.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::histogram!("shopstream_pipeline_batch_records", "stream" => stream.clone())
        .record(records as f64);
    metrics::counter!("shopstream_pipeline_store_writes_total", "stream" => stream.clone())
        .increment(writes);
    metrics::counter!("shopstream_pipeline_write_units_total", "stream" => stream).increment(units);
}

/// Decodes records into events or dead-letter reasons, keeping each
/// record's bytes.
pub fn decode(records: Vec<Record>) -> Vec<Decoded> {
    records
        .into_iter()
        .map(|r| Decoded {
            outcome: Event::decode(&r.data),
            position: r.position,
            raw: r.data,
        })
        .collect()
}

impl Pipeline {
    pub fn new(store: Arc<dyn Store>, bus: Bus) -> Self {
        Self {
            store,
            bus,
            owned: Arc::default(),
            turn: Arc::default(),
        }
    }

    fn owned(&self) -> std::sync::MutexGuard<'_, Owned> {
        // A panic while holding it leaves a cache, which is safe to reuse.
        self.owned.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Applies `records` (in shard order, all after `checkpoint.from`) and
    /// moves the checkpoint to the last one. Large batches are committed in
    /// as many transactions as the store needs, each with its own checkpoint.
    #[tracing::instrument(name = "pipeline.commit", skip_all, fields(records = records.len()), err(level = "debug"))]
    pub async fn apply(
        &self,
        checkpoint: &Checkpoint,
        records: Vec<Record>,
    ) -> Result<Applied, CommitError> {
        let mut applied = Applied {
            checkpoint: checkpoint.from.clone(),
            ..Applied::default()
        };
        if records.is_empty() {
            return Ok(applied);
        }
        let decoded: Arc<[Decoded]> = tokio::task::spawn_blocking(move || decode(records))
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?
            .into();
        let traces = crate::trace::BatchTraces::of(&decoded, &checkpoint.stream, &checkpoint.shard);
        let mut cp = checkpoint.clone();
        let mut start = 0;
        // A batch half committed (by a worker that crashed, or by this one
        // before an error): replayed first, exactly as it was folded.
        if let Some(note) = self.note(&cp).await? {
            let Some(end) = decoded.iter().position(|r| r.position == note.end) else {
                return Err(CommitError::Incomplete {
                    stream: cp.stream.clone(),
                    shard: cp.shard.clone(),
                    until: note.end,
                });
            };
            if note.firsts.len() != end + 1 {
                return Err(StoreError::Corrupt(format!(
                    "the note of the half-committed batch on {}/{} covers {} records, \
                     but {} lie between its checkpoint and its end",
                    cp.stream,
                    cp.shard,
                    note.firsts.len(),
                    end + 1
                ))
                .into());
            }
            let (mut folded, done) = self.replay(&cp, &decoded, 0, end + 1, &note).await?;
            self.committed(&mut cp, &mut applied, &mut folded, done, note.end, &traces)
                .await;
            start = end + 1;
        }
        let mut bound = decoded.len();
        while start < decoded.len() {
            let len = bound.min(decoded.len() - start);
            let (n, mut folded, next, done) = self.commit_prefix(&cp, &decoded, start, len).await?;
            bound = next.unwrap_or(usize::MAX);
            let to = decoded[start + n - 1].position.clone();
            self.committed(&mut cp, &mut applied, &mut folded, done, to, &traces)
                .await;
            start += n;
        }
        Ok(applied)
    }

    /// The items a fold of `records` reads: from [`Owned`], and from the
    /// store where they are not there; with the tickets of the folds whose
    /// uncommitted effects it took.
    async fn snapshot(&self, records: &[Decoded]) -> Result<(Snapshot, Vec<Ticket>), StoreError> {
        let mut needs = needs(records);
        let mut known = Snapshot::default();
        let mut builds_on: Vec<Ticket> = Vec::new();
        {
            let owned = self.owned();
            let (state, pending) = (&owned.state, &owned.pending);
            let b = &mut builds_on;
            let stock = &pending[Kind::Stock as usize];
            take_owned(
                &state.stock,
                &mut needs.products,
                &mut known.stock,
                stock,
                b,
            );
            let profiles = &pending[Kind::Profile as usize];
            take_owned(
                &state.profiles,
                &mut needs.subjects,
                &mut known.profiles,
                profiles,
                b,
            );
            let marks = &pending[Kind::Mark as usize];
            take_owned(&state.marks, &mut needs.marks, &mut known.marks, marks, b);
        }
        let (read, _) = self.read(needs, None).await?;
        fn copy<T: Clone>(
            into: &mut HashMap<String, Option<T>>,
            from: &HashMap<String, Option<T>>,
        ) {
            into.extend(from.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        copy(&mut known.stock, &read.stock);
        copy(&mut known.profiles, &read.profiles);
        copy(&mut known.marks, &read.marks);
        // What was read is owned as much as what was written (the commit's
        // conditions check both): a prefix cut to fit a transaction, and the
        // next batch, fold from memory instead of reading again.
        self.owned().keep(read);
        Ok((known, builds_on))
    }

    /// Reads the items of `needs` from the store. With a mark (`(attr,
    /// end)`), also returns the items that carry it: written by the parted
    /// batch ending at `end` already.
    async fn read(
        &self,
        needs: Needs,
        mark: Option<(&str, &str)>,
    ) -> Result<(Snapshot, HashSet<(Table, Key)>), StoreError> {
        let reads = (needs.products.len() + needs.subjects.len() + needs.marks.len()) as u64;
        metrics::counter!("shopstream_pipeline_state_reads_total").increment(reads);
        let store = self.store.as_ref();
        let ids: Vec<String> = needs.products.into_iter().collect();
        let subjects: Vec<String> = needs.subjects.into_iter().collect();
        let seen: Vec<String> = needs.marks.into_iter().collect();
        let keys = |names: &[String], key: fn(&str) -> Key| {
            names.iter().map(|n| key(n)).collect::<Vec<_>>()
        };
        let (stock_keys, profile_keys, mark_keys) = (
            keys(&ids, stock_key),
            keys(&subjects, profile_key),
            keys(&seen, mark_key),
        );
        let (stock, profiles, marks) = tokio::try_join!(
            store.get_many(Table::Inventory, &stock_keys),
            store.get_many(Table::Behaviour, &profile_keys),
            store.get_many(Table::Behaviour, &mark_keys),
        )?;
        let mut done = HashSet::new();
        /// Decodes what was read, noting the items that carry the mark.
        fn collect<T>(
            names: Vec<String>,
            keys: Vec<Key>,
            items: Vec<Option<storage::Item>>,
            table: Table,
            decode: impl Fn(storage::Item) -> Result<T, StoreError>,
            mark: Option<(&str, &str)>,
            done: &mut HashSet<(Table, Key)>,
        ) -> Result<HashMap<String, Option<T>>, StoreError> {
            names
                .into_iter()
                .zip(keys)
                .zip(items)
                .map(|((name, key), item)| {
                    if let (Some(item), Some((attr, end))) = (&item, mark)
                        && parts::marked(item, attr, end)
                    {
                        done.insert((table, key));
                    }
                    Ok((name, item.map(&decode).transpose()?))
                })
                .collect()
        }
        let read = Snapshot {
            stock: collect(
                ids,
                stock_keys,
                stock,
                Table::Inventory,
                from_item::<Stock>,
                mark,
                &mut done,
            )?,
            profiles: collect(
                subjects,
                profile_keys,
                profiles,
                Table::Behaviour,
                Profile::from_item,
                mark,
                &mut done,
            )?,
            marks: collect(
                seen,
                mark_keys,
                marks,
                Table::Behaviour,
                from_item::<Mark>,
                mark,
                &mut done,
            )?,
        };
        Ok((read, done))
    }

    /// The note of a half-committed batch in the shard's lease, if any.
    async fn note(&self, cp: &Checkpoint) -> Result<Option<Note>, StoreError> {
        Ok(self
            .store
            .get(Table::Leases, &cp.lease_key())
            .await?
            .and_then(|lease| Note::of(&lease)))
    }

    /// Commits the longest prefix of `records` whose operations fit in one
    /// transaction, and returns its length, what it did, and how many of the
    /// records after it the next call should try at most (`None`: all):
    /// what fitted, or where the record a refusal points to must lie, so
    /// that finding it is a binary search.
    ///
    /// A prefix over the store's operation or byte limit is cut in
    /// proportion to the excess until it fits. A prefix the store refuses
    /// for good ([`StoreError::is_permanent`]: an item or key too large, an
    /// invalid request) is halved until the one record at fault is found; that record is dead-lettered
    /// as `unprocessable` with the store's error, so nothing stops the
    /// shard. Races retry from fresh reads; outages go back to the caller,
    /// which retries the batch with backoff.
    ///
    /// The records are `all[start..start + len]`; a batch's fold runs on the
    /// blocking pool (thousands of events are tens of milliseconds of work).
    async fn commit_prefix(
        &self,
        cp: &Checkpoint,
        all: &Arc<[Decoded]>,
        start: usize,
        len: usize,
    ) -> Result<(usize, Folded, Option<usize>, Committed), CommitError> {
        let records = &all[start..start + len];
        let (max_ops, max_bytes) = (
            self.store.max_transaction_ops(),
            self.store.max_transaction_bytes(),
        );
        let mut n = records.len();
        let mut attempt = 0;
        // The one record whose effects the store refused, and why.
        let mut refused: Option<(Decoded, String)> = None;
        // The smallest prefix the store refused, and whether one was cut to fit.
        let mut smallest_refused: Option<usize> = None;
        let mut cut_to_fit = false;
        // Commit this batch one transaction at a time (no parts): after the
        // store refused a parted commit's first part for good, so that the
        // record at fault is found.
        let mut single = false;
        loop {
            let origin = Origin {
                stream: &cp.stream,
                shard: &cp.shard,
                now_ms: now_ms(),
            };
            // Held until this fold's effects are in `Owned` (or it is
            // dropped); a dead letter alone reads nothing and needs no turn.
            let mut turn = None;
            let mut builds_on = Vec::new();
            let mut folded = match &refused {
                Some((record, why)) => fold(
                    std::slice::from_ref(&unprocessable(record, why)),
                    &Snapshot::default(),
                    &origin,
                ),
                None => {
                    turn = Some(self.turn.clone().lock_owned().await);
                    let snapshot;
                    (snapshot, builds_on) = self.snapshot(&records[..n]).await?;
                    let (all, stream, shard) = (all.clone(), cp.stream.clone(), cp.shard.clone());
                    let now_ms = origin.now_ms;
                    tokio::task::spawn_blocking(move || {
                        let origin = Origin {
                            stream: &stream,
                            shard: &shard,
                            now_ms,
                        };
                        fold(&all[start..start + n], &snapshot, &origin)
                    })
                    .await
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?
                }
            };
            let (bytes, units) = storage::expr::transaction_cost(&folded.ops);
            let too_big = folded.ops.len() + 1 > max_ops || bytes + FENCE_BYTES > max_bytes;
            if refused.is_none() && too_big && !single && n > 1 {
                // Every item once for the whole batch, in as many
                // transactions as it takes (see `crate::parts`).
                let note = Note {
                    end: records[n - 1].position.clone(),
                    at: origin.now_ms,
                    firsts: std::mem::take(&mut folded.firsts),
                };
                let Some((done, spec)) = self.hold(&mut folded.after, turn, &builds_on).await
                else {
                    attempt += 1;
                    self.retrying(cp, attempt)?;
                    continue;
                };
                let started = Instant::now();
                let ops = std::mem::take(&mut folded.ops);
                let result = self.commit_parts(cp, ops, &note, true).await;
                self.owned().settle(spec, &done, result.is_ok());
                match result {
                    Ok(done) => {
                        record_commit(cp, started, n, &done);
                        return Ok((n, folded, None, done));
                    }
                    Err(PartsError::Fenced) => return Err(self.fenced(cp)),
                    Err(PartsError::NoneCommitted(e)) if e.is_permanent() => {
                        tracing::debug!(records = n, error = %e, "the store refused a parted batch; committing it a transaction at a time");
                        single = true;
                    }
                    Err(PartsError::NoneCommitted(e)) if e.is_contention() => {
                        attempt += 1;
                        self.retrying(cp, attempt)?;
                        tokio::time::sleep(std::time::Duration::from_millis(
                            u64::from(attempt) * 5,
                        ))
                        .await;
                    }
                    Err(PartsError::Midway(e)) if e.is_contention() => {
                        let (folded, done) = self.replay(cp, all, start, n, &note).await?;
                        return Ok((n, folded, None, done));
                    }
                    // The reader retries; the note makes that a replay.
                    Err(PartsError::NoneCommitted(e) | PartsError::Midway(e)) => {
                        return Err(e.into());
                    }
                }
                continue;
            }
            if refused.is_none() && too_big {
                if n > 1 {
                    // Cut in proportion to how far over the limits the fold
                    // is (a 10,000-record batch on DynamoDB's 100-item
                    // transactions is a cut of 99 %, not seven halvings);
                    // effects grow slower than records, so this may take a
                    // second step.
                    let ratio = f64::min(
                        max_ops as f64 / (folded.ops.len() + 1) as f64,
                        max_bytes as f64 / (bytes + FENCE_BYTES) as f64,
                    );
                    n = ((n as f64 * ratio * 0.9) as usize).clamp(1, n - 1);
                    cut_to_fit = true;
                    continue;
                }
                // One record alone touches more than a transaction holds.
                let why = format!(
                    "its effects are {} operations and about {bytes} bytes; one transaction on \
                     this backend holds {max_ops} operations and {max_bytes} bytes",
                    folded.ops.len()
                );
                refused = Some((records[0].clone(), why));
                continue;
            }
            let to = records[n - 1].position.clone();
            let fence = folded.ops.len();
            let mut ops = std::mem::take(&mut folded.ops);
            ops.push(cp.op(&to));
            let units = units + storage::expr::transaction_write_units(&ops[fence..]);
            let Some((done, spec)) = self.hold(&mut folded.after, turn, &builds_on).await else {
                attempt += 1;
                self.retrying(cp, attempt)?;
                continue;
            };
            let started = Instant::now();
            let result = self.store.transact(ops).await;
            self.owned().settle(spec, &done, result.is_ok());
            match result {
                Ok(()) => {
                    let done = Committed {
                        writes: fence as u64 + 1,
                        units,
                        transactions: 1,
                    };
                    record_commit(cp, started, n, &done);
                    let next = match smallest_refused {
                        Some(m) if m > n => Some(m - n),
                        _ if cut_to_fit => Some(n),
                        _ => None,
                    };
                    return Ok((n, folded, next, done));
                }
                Err(StoreError::TransactionCanceled { failed }) if failed.contains(&fence) => {
                    return Err(self.fenced(cp));
                }
                Err(e) if e.is_permanent() && refused.is_none() => {
                    metrics::counter!("shopstream_pipeline_refused_total", "stream" => cp.stream.clone()).increment(1);
                    smallest_refused = Some(n);
                    if n > 1 {
                        tracing::debug!(records = n, error = %e, "the store refused a batch; halving it to find the record at fault");
                        n = n.div_ceil(2).min(n - 1);
                    } else {
                        tracing::warn!(position = %records[0].position, error = %e,
                            "the store refused a record's effects; dead-lettering it as unprocessable");
                        refused = Some((records[0].clone(), e.to_string()));
                    }
                }
                Err(e) if e.is_contention() && attempt < RETRIES => {
                    // An item the fold read changed meanwhile: its items
                    // are forgotten (settled above), so they are read again.
                    attempt += 1;
                    metrics::counter!("shopstream_pipeline_retries_total", "stream" => cp.stream.clone()).increment(1);
                    tokio::time::sleep(std::time::Duration::from_millis(u64::from(attempt) * 5))
                        .await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Keeps a fold's effects in [`Owned`] under a new ticket, gives up the
    /// turn, and waits for the folds whose uncommitted effects it took: a
    /// fold commits only after them. `None` (its effects forgotten again) if
    /// one of them did not commit: the fold must be done again.
    async fn hold(
        &self,
        after: &mut Snapshot,
        turn: Option<tokio::sync::OwnedMutexGuard<()>>,
        builds_on: &[Ticket],
    ) -> Option<(tokio::sync::watch::Sender<Option<bool>>, Speculated)> {
        let (done, ticket) = tokio::sync::watch::channel(None);
        let spec = self.owned().speculate(after, &ticket);
        drop(turn);
        if all_committed(builds_on).await {
            Some((done, spec))
        } else {
            self.owned().settle(spec, &done, false);
            None
        }
    }

    /// After records up to `to` committed: counts what they did into
    /// `applied`, runs [`Self::after_commit`], and moves the checkpoint.
    async fn committed(
        &self,
        cp: &mut Checkpoint,
        applied: &mut Applied,
        folded: &mut Folded,
        done: Committed,
        to: String,
        traces: &crate::trace::BatchTraces,
    ) {
        applied.events += folded.applied.values().sum::<u64>();
        applied.dead_letters += folded.dead.values().sum::<u64>();
        applied.duplicates += folded.duplicates.values().sum::<u64>();
        applied.commits += done.transactions;
        self.after_commit(cp, folded, traces).await;
        cp.from = Some(to.clone());
        applied.checkpoint = Some(to);
    }

    /// Forgets what this worker kept (the lease moved) and says so.
    fn fenced(&self, cp: &Checkpoint) -> CommitError {
        *self.owned() = Owned::default();
        metrics::counter!("shopstream_pipeline_fenced_total", "stream" => cp.stream.clone())
            .increment(1);
        CommitError::Fenced {
            stream: cp.stream.clone(),
            shard: cp.shard.clone(),
        }
    }

    /// Counts a retry, or gives up after [`RETRIES`].
    fn retrying(&self, cp: &Checkpoint, attempt: u32) -> Result<(), CommitError> {
        if attempt > RETRIES {
            return Err(StoreError::Conflict(format!(
                "the batch on {}/{} kept losing races with other writers",
                cp.stream, cp.shard
            ))
            .into());
        }
        metrics::counter!("shopstream_pipeline_retries_total", "stream" => cp.stream.clone())
            .increment(1);
        Ok(())
    }

    /// Commits a batch's operations in as many transactions as the store
    /// needs (see [`crate::parts`]): each marked and fenced on the note, the
    /// first writing the note when `fresh`, the last moving the checkpoint
    /// to the note's end and removing it. Returns the writes and write
    /// units. An operation refused only because its item carries the
    /// batch's mark is applied already and dropped; one the store refuses
    /// for good once parts have landed is dead-lettered, so the shard moves on.
    async fn commit_parts(
        &self,
        cp: &Checkpoint,
        mut ops: Vec<TxOp>,
        note: &Note,
        fresh: bool,
    ) -> Result<Committed, PartsError> {
        let attr = parts::marker_attr(&cp.stream, &cp.shard);
        let blind = parts::mark(&mut ops, &attr, &note.end);
        let room = FENCE_BYTES + note.size();
        let all = parts::split(
            ops,
            blind,
            self.store.max_transaction_ops().saturating_sub(1).max(1),
            self.store.max_transaction_bytes().saturating_sub(room),
        );
        let last = all.len() - 1;
        let mut landed = !fresh;
        let lost = |landed: bool, e: StoreError| {
            if landed {
                PartsError::Midway(e)
            } else {
                PartsError::NoneCommitted(e)
            }
        };
        let (mut writes, mut units, mut transactions) = (0, 0, 0);
        for (i, (mut part, mut blind)) in all.into_iter().enumerate() {
            let fence = if i == last {
                cp.finish_parts(note)
            } else if i == 0 && fresh {
                cp.begin_parts(note)
            } else {
                cp.check_parts(note)
            };
            loop {
                if part.is_empty() && i != last {
                    break;
                }
                part.push(fence.clone());
                let tx_units = storage::expr::transaction_write_units(&part);
                let result = self.store.transact(part.clone()).await;
                part.pop();
                match result {
                    Ok(()) => {
                        writes +=
                            part.len() as u64 + u64::from(!matches!(fence, TxOp::Check { .. }));
                        units += tx_units;
                        transactions += 1;
                        landed = true;
                        break;
                    }
                    Err(StoreError::TransactionCanceled { failed })
                        if failed.contains(&part.len()) =>
                    {
                        return Err(PartsError::Fenced);
                    }
                    Err(StoreError::TransactionCanceled { failed })
                        if !failed.is_empty()
                            && failed.iter().all(|j| blind.get(*j) == Some(&true)) =>
                    {
                        metrics::counter!("shopstream_pipeline_replay_skipped_total", "stream" => cp.stream.clone())
                            .increment(failed.len() as u64);
                        (part, blind) = part
                            .into_iter()
                            .zip(blind)
                            .enumerate()
                            .filter(|(k, _)| !failed.contains(k))
                            .map(|(_, kept)| kept)
                            .unzip();
                    }
                    Err(e) if e.is_permanent() && landed => {
                        tracing::warn!(stream = %cp.stream, shard = %cp.shard, error = %e,
                            "the store refused part of a half-committed batch; committing its items one at a time");
                        for (op, b) in std::mem::take(&mut part)
                            .into_iter()
                            .zip(std::mem::take(&mut blind))
                        {
                            writes += self.commit_alone(cp, note, op, b, &attr).await?;
                        }
                    }
                    Err(e) => return Err(lost(landed, e)),
                }
            }
        }
        Ok(Committed {
            writes,
            units,
            transactions,
        })
    }

    /// Commits one operation of a half-committed batch alone; if the store
    /// refuses it for good, a dead letter saying which item and why takes
    /// its place. Returns the writes.
    async fn commit_alone(
        &self,
        cp: &Checkpoint,
        note: &Note,
        op: TxOp,
        blind: bool,
        attr: &str,
    ) -> Result<u64, PartsError> {
        let target = parts::target(&op);
        let e = match self.store.transact(vec![op, cp.check_parts(note)]).await {
            Ok(()) => return Ok(1),
            Err(StoreError::TransactionCanceled { failed }) if failed.contains(&1) => {
                return Err(PartsError::Fenced);
            }
            Err(StoreError::TransactionCanceled { .. }) if blind => return Ok(0),
            Err(e) if e.is_permanent() => e,
            Err(e) => return Err(PartsError::Midway(e)),
        };
        let what = target.map_or_else(
            || "an item without a key".to_owned(),
            |(table, key)| format!("{table:?} item {}/{}", key.pk, key.sk),
        );
        tracing::warn!(stream = %cp.stream, shard = %cp.shard, item = %what, error = %e,
            "the store refused a batch's effect on one item; dead-lettering it as unprocessable");
        let position = format!("{}/{what}", note.end);
        let letter = DeadLetter::new(
            DeadLetterReason::Unprocessable.as_str(),
            &format!(
                "the store refused the effect of the batch ending at {} on {what}: {e}",
                note.end
            ),
            (&cp.stream, &cp.shard, &position),
            note.at,
            &[],
        );
        let key = dead_letter_key(note.at, &cp.stream, &cp.shard, &position);
        let mut ops = vec![TxOp::Put {
            table: Table::DeadLetters,
            item: to_item(&key, &letter).map_err(PartsError::Midway)?,
            cond: None,
        }];
        parts::mark(&mut ops, attr, &note.end);
        ops.push(cp.check_parts(note));
        match self.store.transact(ops).await {
            Ok(()) => {
                metrics::counter!("shopstream_events_dead_lettered_total", "reason" => DeadLetterReason::Unprocessable.as_str(), "stream" => cp.stream.clone())
                    .increment(1);
                Ok(1)
            }
            Err(StoreError::TransactionCanceled { failed }) if failed.contains(&1) => {
                Err(PartsError::Fenced)
            }
            // Written by an earlier try of this batch.
            Err(StoreError::TransactionCanceled { .. }) => Ok(0),
            Err(e) => Err(PartsError::Midway(e)),
        }
    }

    /// Replays the half-committed batch `all[start..start + len]` that
    /// `note` describes: folds it with the note's decisions and clock from
    /// fresh reads, leaves out the items its mark says are written, and
    /// commits the rest in parts, the last one moving the checkpoint. Holds
    /// the turn throughout (a replay is rare, and what this worker kept may
    /// predate the parts that landed).
    async fn replay(
        &self,
        cp: &Checkpoint,
        all: &Arc<[Decoded]>,
        start: usize,
        len: usize,
        note: &Note,
    ) -> Result<(Folded, Committed), CommitError> {
        metrics::counter!("shopstream_pipeline_replays_total", "stream" => cp.stream.clone())
            .increment(1);
        tracing::info!(stream = %cp.stream, shard = %cp.shard, end = %note.end, records = len,
            "replaying a half-committed batch");
        let _turn = self.turn.clone().lock_owned().await;
        let attr = parts::marker_attr(&cp.stream, &cp.shard);
        let mut attempt = 0;
        loop {
            *self.owned() = Owned::default();
            let (read, done) = self
                .read(needs(&all[start..start + len]), Some((&attr, &note.end)))
                .await?;
            let (records, stream, shard) = (all.clone(), cp.stream.clone(), cp.shard.clone());
            let (firsts, now_ms) = (note.firsts.clone(), note.at);
            let (mut folded, read) = tokio::task::spawn_blocking(move || {
                let origin = Origin {
                    stream: &stream,
                    shard: &shard,
                    now_ms,
                };
                let records = &records[start..start + len];
                (fold_decided(records, &read, &origin, Some(&firsts)), read)
            })
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            // The items written already are as they were read.
            folded
                .ops
                .retain(|op| parts::target(op).is_none_or(|t| !done.contains(&t)));
            let is_done = |table: Table, key: Key| done.contains(&(table, key));
            for (id, v) in read.stock {
                if is_done(Table::Inventory, stock_key(&id)) {
                    folded.after.stock.insert(id, v);
                }
            }
            for (s, v) in read.profiles {
                if is_done(Table::Behaviour, profile_key(&s)) {
                    folded.after.profiles.insert(s, v);
                }
            }
            for (k, v) in read.marks {
                if is_done(Table::Behaviour, mark_key(&k)) {
                    folded.after.marks.insert(k, v);
                }
            }
            let started = Instant::now();
            let ops = std::mem::take(&mut folded.ops);
            match self.commit_parts(cp, ops, note, false).await {
                Ok(done) => {
                    record_commit(cp, started, len, &done);
                    self.owned().keep(Snapshot {
                        stock: folded.after.stock.clone(),
                        profiles: std::mem::take(&mut folded.after.profiles),
                        marks: std::mem::take(&mut folded.after.marks),
                    });
                    return Ok((folded, done));
                }
                Err(PartsError::Fenced) => return Err(self.fenced(cp)),
                Err(PartsError::Midway(e) | PartsError::NoneCommitted(e)) if e.is_contention() => {
                    attempt += 1;
                    self.retrying(cp, attempt)?;
                    tokio::time::sleep(std::time::Duration::from_millis(u64::from(attempt) * 5))
                        .await;
                }
                Err(PartsError::Midway(e) | PartsError::NoneCommitted(e)) => return Err(e.into()),
            }
        }
    }

    /// Counts, publishes and checks what a commit did.
    async fn after_commit(
        &self,
        cp: &Checkpoint,
        folded: &mut Folded,
        traces: &crate::trace::BatchTraces,
    ) {
        for (kind, n) in &folded.applied {
            metrics::counter!("shopstream_events_applied_total", "type" => *kind, "stream" => cp.stream.clone())
                .increment(*n);
        }
        for (kind, n) in &folded.duplicates {
            metrics::counter!("shopstream_events_duplicate_total", "type" => *kind, "stream" => cp.stream.clone())
                .increment(*n);
        }
        for (reason, n) in &folded.dead {
            metrics::counter!("shopstream_events_dead_lettered_total", "reason" => *reason, "stream" => cp.stream.clone())
                .increment(*n);
        }
        for id in &folded.catalogue {
            self.bus.publish(Change::ProductChanged {
                product_id: id.clone(),
            });
        }
        let mut changed_since = Vec::new();
        for id in &folded.products {
            let stock = match folded.after.stock.get(id) {
                Some(Some(stock)) => stock.clone(),
                _ => match self.store.get(Table::Inventory, &stock_key(id)).await {
                    Ok(Some(item)) => match from_item::<Stock>(item) {
                        Ok(stock) => stock,
                        Err(_) => continue,
                    },
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, product_id = %id, "cannot read stock after commit");
                        continue;
                    }
                },
            };
            let mut change = Change::stock(id, &stock);
            if let Change::StockLevel { traceparent, .. } = &mut change {
                *traceparent = traces.for_product(id);
            }
            self.bus.publish(change);
            match check_alert(self.store.as_ref(), &self.bus, id, &stock).await {
                Ok(false) => {}
                Ok(true) => changed_since.push(id.clone()),
                Err(e) => {
                    // It may have written: read the item again next time.
                    changed_since.push(id.clone());
                    tracing::warn!(error = %e, product_id = %id, "low-stock check failed; the sweeper retries it");
                }
            }
        }
        {
            // The fold's effects are kept already; an alert's change moved
            // the item's version past them.
            let mut owned = self.owned();
            for id in changed_since {
                owned.forget(Kind::Stock, &id);
            }
        }
        for (minute, c) in &folded.ticks {
            self.bus.publish(Change::AnalyticsTick {
                minute: minute.clone(),
                views: c.views,
                basket_adds: c.basket_adds,
                purchases: c.purchases,
            });
        }
        for (version, [clicks, basket_adds, purchases]) in &folded.recommendations {
            self.bus.publish(Change::RecommendationTick {
                model_version: version.clone(),
                clicks: *clicks,
                basket_adds: *basket_adds,
                purchases: *purchases,
            });
        }
        for s in &folded.subjects {
            self.bus
                .publish(Change::ProfileUpdated { subject: s.clone() });
        }
    }
}

/// Raises one alert when a product's available stock has fallen below its
/// threshold since the last alert, and re-arms once it is back at or above.
/// Idempotent: run after every commit and by the sweeper. Returns whether
/// it changed the stock item (each change moves its version, so a fold
/// that read the item before fails its fence and reads it again).
pub async fn check_alert(
    store: &dyn Store,
    bus: &Bus,
    product_id: &str,
    stock: &Stock,
) -> Result<bool, StoreError> {
    let Some(threshold) = stock.low_stock_threshold else {
        return Ok(false);
    };
    if stock.deleted {
        return Ok(false);
    }
    let key = stock_key(product_id);
    if stock.available < threshold && stock.alert_armed {
        let at = now_ms();
        let supplier = stock
            .supplier_id
            .clone()
            .unwrap_or_else(|| NO_SUPPLIER.to_owned());
        let alert = Alert {
            id: format!("{at:013}-{product_id}"),
            product_id: product_id.to_owned(),
            product_name: stock.name.clone(),
            supplier_id: supplier.clone(),
            available: stock.available,
            threshold,
            at,
            acknowledged: false,
        };
        let ops = vec![
            TxOp::Update {
                table: Table::Inventory,
                key,
                updates: vec![
                    Update::Set("alert_armed".into(), Value::Bool(false)),
                    Update::add("version", 1),
                ],
                cond: Some(Cond::And(vec![
                    Cond::Eq("alert_armed".into(), Value::Bool(true)),
                    Cond::Lt("available".into(), Value::N(threshold.to_string())),
                ])),
            },
            TxOp::Put {
                table: Table::Alerts,
                item: to_item(&alert_key(&supplier, &alert.id), &alert)?,
                cond: None,
            },
            // Delivered to the supplier by the outbox relay: written with
            // the crossing, so exactly one delivery is owed per crossing.
            crate::outbox::put(crate::outbox::Work::SupplierAlert {
                alert: alert.clone(),
            })?,
        ];
        match store.transact(ops).await {
            Ok(()) => {
                metrics::counter!("shopstream_low_stock_alerts_total").increment(1);
                bus.publish(Change::LowStockAlert(alert));
                Ok(true)
            }
            // Another worker raised it, or stock moved back: nothing to do.
            Err(StoreError::TransactionCanceled { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    } else if stock.available >= threshold && !stock.alert_armed {
        let r = store
            .update(
                Table::Inventory,
                &key,
                vec![
                    Update::Set("alert_armed".into(), Value::Bool(true)),
                    Update::add("version", 1),
                ],
                Some(Cond::And(vec![
                    Cond::Exists,
                    Cond::Ge("available".into(), Value::N(threshold.to_string())),
                    Cond::Or(vec![
                        Cond::HasNot("alert_armed".into()),
                        Cond::Eq("alert_armed".into(), Value::Bool(false)),
                    ]),
                ])),
            )
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(StoreError::ConditionFailed) => Ok(false),
            Err(e) => Err(e),
        }
    } else {
        Ok(false)
    }
}

/// Marks a supplier's alert as seen; `None` when the supplier has no such
/// alert.
pub async fn acknowledge_alert(
    store: &dyn Store,
    supplier_id: &str,
    id: &str,
) -> Result<Option<crate::state::Alert>, StoreError> {
    match store
        .update(
            storage::Table::Alerts,
            &crate::state::alert_key(supplier_id, id),
            vec![storage::Update::set("acknowledged", true)],
            Some(storage::Cond::Exists),
        )
        .await
    {
        Ok(item) => Ok(Some(storage::from_item(item)?)),
        Err(StoreError::ConditionFailed) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Runs [`check_alert`] over every product's stock: catches a crossing whose
/// alert check a crash interrupted after the commit.
pub async fn sweep_alerts(store: &dyn Store, bus: &Bus) -> Result<usize, StoreError> {
    let mut query = storage::Query {
        limit: 500,
        ..storage::Query::default()
    };
    let mut checked = 0;
    loop {
        let page = store.query(Table::Inventory, "inventory", &query).await?;
        for item in page.items {
            let key = Key::of(&item)?;
            let stock: Stock = from_item(item)?;
            check_alert(store, bus, &key.sk, &stock).await?;
            checked += 1;
        }
        match page.cursor {
            Some(c) => query.cursor = Some(c),
            None => return Ok(checked),
        }
    }
}

/// Merges an anonymous session's behaviour into a user's (on login): the
/// lists interleaved newest first and bounded, the counts added, the session's
/// profile deleted — in one transaction, retried if the pipeline wrote either
/// profile meanwhile. Returns false if the session had no profile.
pub async fn merge_profiles(
    store: &dyn Store,
    session: &str,
    user: &str,
) -> Result<bool, StoreError> {
    use crate::state::{PURCHASES, RECENT, Touch};
    fn merged(
        a: &std::collections::VecDeque<Touch>,
        b: &std::collections::VecDeque<Touch>,
        max: usize,
    ) -> std::collections::VecDeque<Touch> {
        let mut all: Vec<Touch> = a.iter().chain(b.iter()).cloned().collect();
        all.sort_by_key(|t| std::cmp::Reverse(t.at));
        all.truncate(max);
        all.into()
    }
    let (from_key, into_key) = (profile_key(session), profile_key(user));
    let mut tries = storage::Contention::new(RETRIES);
    while tries.next().await {
        let Some(from_item_) = store.get(Table::Behaviour, &from_key).await? else {
            return Ok(false);
        };
        let from = Profile::from_item(from_item_)?;
        let into_raw = store.get(Table::Behaviour, &into_key).await?;
        let into: Option<Profile> = into_raw.clone().map(Profile::from_item).transpose()?;
        let base = into.clone().unwrap_or_default();
        let next = Profile {
            recent_views: merged(&base.recent_views, &from.recent_views, RECENT),
            basket_adds: merged(&base.basket_adds, &from.basket_adds, RECENT),
            purchases: merged(&base.purchases, &from.purchases, PURCHASES),
            views: base.views + from.views,
            adds: base.adds + from.adds,
            orders: base.orders + from.orders,
            version: base.version + 1,
            // The session's ids stay with the session's key, which its
            // events are keyed on; the user's own stay with the user.
            seen: base.seen.clone(),
        };
        let into_cond = match &into {
            Some(p) => Cond::eq("version", p.version),
            None => Cond::NotExists,
        };
        let mut item = next.to_item(&into_key)?;
        // The user's shard's replay must still see what its batch wrote.
        if let Some(raw) = &into_raw {
            parts::copy_markers(raw, &mut item);
        }
        let ops = vec![
            TxOp::Put {
                table: Table::Behaviour,
                item,
                cond: Some(into_cond),
            },
            TxOp::Delete {
                table: Table::Behaviour,
                key: from_key.clone(),
                cond: Some(Cond::eq("version", from.version)),
            },
        ];
        match store.transact(ops).await {
            Ok(()) => return Ok(true),
            Err(e) if e.is_contention() => {}
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict(format!(
        "merging {session} into {user} kept conflicting"
    )))
}

/// Runs [`sweep_alerts`] at start and then `every`, until `stopped` turns
/// true: raises alerts whose check a crash interrupted.
pub async fn sweep_alerts_periodically(
    store: std::sync::Arc<dyn Store>,
    bus: Bus,
    every: std::time::Duration,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        match sweep_alerts(store.as_ref(), &bus).await {
            Ok(n) => tracing::debug!(products = n, "low-stock sweep done"),
            Err(e) => tracing::warn!(error = %e, "low-stock sweep failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stopped.changed() => return,
        }
    }
}
