//! The embedded adapter: one redb file, durable on every commit.
//!
//! redb allows one write transaction at a time, and each durable commit costs
//! an fsync. So all writes go through a single writer thread that takes every
//! write waiting in its queue, applies them one after another inside one redb
//! transaction, and commits once for all of them (group commit). Each write's
//! condition is checked against the state left by the writes before it, so the
//! result is the same as applying them one at a time, at a fraction of the
//! fsyncs. Reads use redb's MVCC snapshots and never wait for the writer.

use std::{
    collections::{HashMap, HashSet},
    ops::Bound,
    path::{Path, PathBuf},
    sync::{Arc, mpsc},
    thread,
};

use async_trait::async_trait;
use redb::{
    Database, ReadableDatabase, ReadableTable, TableDefinition, TableError, WriteTransaction,
};
use tokio::sync::oneshot;

use crate::{
    StoreError, StoreResult, Table,
    expr::{apply_updates, check_key, check_size, check_transaction_size, holds},
    port::{Cond, Item, Key, MAX_PAGE, PK, Page, Query, SK, SortRange, Store, TxOp, Update, Value},
};

/// The file the embedded store keeps in the data directory.
pub const FILE_NAME: &str = "shopstream.redb";
/// The most writes one commit takes from the queue.
const MAX_GROUP: usize = 512;

type RedbKey<'a> = (&'a str, &'a str);

#[derive(Debug)]
struct Inner {
    db: Database,
    path: PathBuf,
    /// Physical table name for each logical table.
    names: HashMap<Table, String>,
}

impl Inner {
    fn def(&self, table: Table) -> TableDefinition<'_, RedbKey<'static>, &'static [u8]> {
        TableDefinition::new(&self.names[&table])
    }
}

/// How many reads [`Store::get_many`] does on the calling task; more go to
/// the blocking pool.
const INLINE_READS: usize = 256;

/// The embedded store. Cheap to clone; the file is closed when the last clone
/// is dropped.
#[derive(Clone, Debug)]
pub struct Embedded {
    inner: Arc<Inner>,
    writer: mpsc::Sender<Job>,
}

enum Write {
    Put(Table, Item, Option<Cond>),
    Update(Table, Key, Vec<Update>, Option<Cond>),
    Delete(Table, Key, Option<Cond>),
    Transact(Vec<TxOp>),
}

enum Output {
    Done,
    Item(Item),
    Old(Option<Item>),
}

struct Job {
    write: Write,
    reply: oneshot::Sender<StoreResult<Output>>,
}

impl Embedded {
    /// Opens (or creates) the store in `data_dir`, with its tables.
    pub fn open(data_dir: &Path, table_prefix: &str) -> StoreResult<Self> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot create data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        let path = data_dir.join(FILE_NAME);
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse { path: path.clone() },
            e => StoreError::Unavailable(format!("cannot open {}: {e}", path.display())),
        })?;
        let names = Table::ALL
            .iter()
            .map(|t| (*t, format!("{table_prefix}{}", t.name())))
            .collect();
        let inner = Arc::new(Inner { db, path, names });
        let (writer, queue) = mpsc::channel();
        let store = Self {
            inner: inner.clone(),
            writer,
        };
        thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || write_loop(&inner, &queue))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        store.create_tables_now()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn create_tables_now(&self) -> StoreResult<()> {
        let txn = self.inner.db.begin_write().map_err(unavailable)?;
        for t in Table::ALL {
            txn.open_table(self.inner.def(t)).map_err(unavailable)?;
        }
        txn.commit().map_err(unavailable)
    }

    async fn submit(&self, write: Write) -> StoreResult<Output> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(Job { write, reply })
            .map_err(|_| StoreError::Unavailable("the store writer has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the store writer has stopped".into()))?
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn write_loop(inner: &Inner, queue: &mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let count = jobs.len();
        let (writes, replies): (Vec<Write>, Vec<_>) =
            jobs.into_iter().map(|j| (j.write, j.reply)).unzip();
        let outcome = (|| {
            let txn = inner.db.begin_write().map_err(unavailable)?;
            let outputs: Vec<_> = {
                let mut open = Open::new(inner, &txn);
                writes.into_iter().map(|w| apply(&mut open, w)).collect()
            };
            txn.commit().map_err(unavailable)?;
            Ok::<_, StoreError>(outputs)
        })();
        metrics::histogram!("shopstream_store_commit_seconds", "backend" => "embedded")
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!("shopstream_store_commit_writes", "backend" => "embedded")
            .record(count as f64);
        match outcome {
            Ok(outputs) => {
                for (reply, out) in replies.into_iter().zip(outputs) {
                    let _ = reply.send(out);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "embedded store commit failed");
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Unavailable(e.to_string())));
                }
            }
        }
    }
}

type RedbTable<'t> = redb::Table<'t, RedbKey<'static>, &'static [u8]>;

/// The tables of one write transaction, each opened once (a commit of a
/// pipeline batch touches thousands of items in a handful of tables).
struct Open<'t> {
    inner: &'t Inner,
    txn: &'t WriteTransaction,
    tables: HashMap<Table, RedbTable<'t>>,
    /// Reused for each item's encoding.
    buf: Vec<u8>,
}

impl<'t> Open<'t> {
    fn new(inner: &'t Inner, txn: &'t WriteTransaction) -> Self {
        Self {
            inner,
            txn,
            tables: HashMap::new(),
            buf: Vec::with_capacity(4096),
        }
    }

    fn table(&mut self, table: Table) -> StoreResult<&mut RedbTable<'t>> {
        match self.tables.entry(table) {
            std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(e) => {
                let t = self
                    .txn
                    .open_table(self.inner.def(table))
                    .map_err(unavailable)?;
                Ok(e.insert(t))
            }
        }
    }
}

fn read_item(open: &mut Open<'_>, table: Table, key: &Key) -> StoreResult<Option<Item>> {
    let t = open.table(table)?;
    let got = t
        .get((key.pk.as_str(), key.sk.as_str()))
        .map_err(unavailable)?;
    got.map(|v| decode(v.value())).transpose()
}

/// The item at `key` with only the attributes `cond` names: what checking
/// the condition needs (a profile's condition reads its version, not its
/// body).
fn read_for(
    open: &mut Open<'_>,
    table: Table,
    key: (&str, &str),
    cond: &Cond,
) -> StoreResult<Option<Item>> {
    let mut names = Vec::new();
    cond.attributes(&mut names);
    let t = open.table(table)?;
    let got = t.get(key).map_err(unavailable)?;
    got.map(|v| crate::codec::decode_only(v.value(), &names))
        .transpose()
}

/// The key attributes of an item, borrowed.
fn item_key(item: &Item) -> StoreResult<(&str, &str)> {
    match (item.get(PK), item.get(SK)) {
        (Some(Value::S(pk)), Some(Value::S(sk))) => Ok((pk, sk)),
        _ => Err(StoreError::Invalid(
            "an item needs string attributes `pk` and `sk`".into(),
        )),
    }
}

fn decode(bytes: &[u8]) -> StoreResult<Item> {
    crate::codec::decode(bytes)
}

/// What one operation would do, checked against its condition and the size
/// limit, before anything is written.
struct Plan {
    table: Table,
    /// The key, but for a put (its key is in the item).
    key: Option<Key>,
    /// The item as it is, read whole only where the caller gets it back (a
    /// delete's old item).
    current: Option<Item>,
    /// The item as it will be (`None`: deleted).
    next: Option<Item>,
    /// False for a condition check, which writes nothing.
    writes: bool,
}

impl Plan {
    fn write(&self, open: &mut Open<'_>) -> StoreResult<()> {
        if !self.writes {
            return Ok(());
        }
        let key = match (&self.key, &self.next) {
            (Some(k), _) => (k.pk.as_str(), k.sk.as_str()),
            (None, Some(item)) => item_key(item)?,
            (None, None) => return Ok(()),
        };
        let mut buf = std::mem::take(&mut open.buf);
        let t = open.table(self.table)?;
        let written = match &self.next {
            Some(item) => {
                buf.clear();
                crate::codec::encode_into(&mut buf, item);
                t.insert(key, buf.as_slice()).map(drop)
            }
            None => t.remove(key).map(drop),
        };
        open.buf = buf;
        written.map_err(unavailable)
    }
}

/// Checks `op` against its condition and plans its write. A put's size was
/// checked by its caller (`put`, or [`check_transaction`]); an update's
/// result is checked here.
fn plan(open: &mut Open<'_>, op: TxOp) -> StoreResult<Plan> {
    let failed = |cond: &Option<Cond>, current: Option<&Item>| {
        cond.as_ref().is_some_and(|c| !holds(c, current))
    };
    match op {
        TxOp::Put { table, item, cond } => {
            // An unconditional put needs nothing of the item as it was.
            if let Some(c) = &cond {
                let current = read_for(open, table, item_key(&item)?, c)?;
                if !holds(c, current.as_ref()) {
                    return Err(StoreError::ConditionFailed);
                }
            }
            Ok(Plan {
                table,
                key: None,
                current: None,
                next: Some(item),
                writes: true,
            })
        }
        TxOp::Update {
            table,
            key,
            updates,
            cond,
        } => {
            let current = read_item(open, table, &key)?;
            if failed(&cond, current.as_ref()) {
                return Err(StoreError::ConditionFailed);
            }
            let next = apply_updates(&key, current, updates)?;
            check_size(&next)?;
            Ok(Plan {
                table,
                key: Some(key),
                current: None,
                next: Some(next),
                writes: true,
            })
        }
        TxOp::Delete { table, key, cond } => {
            let current = read_item(open, table, &key)?;
            if failed(&cond, current.as_ref()) {
                return Err(StoreError::ConditionFailed);
            }
            Ok(Plan {
                table,
                key: Some(key),
                current,
                next: None,
                writes: true,
            })
        }
        TxOp::Check { table, key, cond } => {
            let current = read_for(open, table, (&key.pk, &key.sk), &cond)?;
            if !holds(&cond, current.as_ref()) {
                return Err(StoreError::ConditionFailed);
            }
            Ok(Plan {
                table,
                key: Some(key),
                current: None,
                next: None,
                writes: false,
            })
        }
    }
}

fn apply(open: &mut Open<'_>, write: Write) -> StoreResult<Output> {
    match write {
        Write::Put(table, item, cond) => {
            plan(open, TxOp::Put { table, item, cond })?.write(open)?;
            Ok(Output::Done)
        }
        Write::Update(table, key, updates, cond) => {
            let op = TxOp::Update {
                table,
                key,
                updates,
                cond,
            };
            let p = plan(open, op)?;
            p.write(open)?;
            Ok(Output::Item(p.next.unwrap_or_default()))
        }
        Write::Delete(table, key, cond) => {
            let p = plan(open, TxOp::Delete { table, key, cond })?;
            if p.current.is_some() {
                p.write(open)?;
            }
            Ok(Output::Old(p.current))
        }
        Write::Transact(ops) => {
            let mut plans = Vec::with_capacity(ops.len());
            let mut failed = Vec::new();
            for (i, op) in ops.into_iter().enumerate() {
                match plan(open, op) {
                    Ok(p) => plans.push(p),
                    Err(StoreError::ConditionFailed) => failed.push(i),
                    Err(e) => return Err(e),
                }
            }
            if !failed.is_empty() {
                return Err(StoreError::TransactionCanceled { failed });
            }
            for p in &plans {
                p.write(open)?;
            }
            Ok(Output::Done)
        }
    }
}

/// The embedded store's transactions are bounded by memory, not by a
/// service limit; this keeps one commit's work reasonable.
pub const EMBEDDED_MAX_TRANSACTION_OPS: usize = 60_000;

/// Refuses transactions larger than `max` or touching an item twice (which
/// DynamoDB refuses too), so both adapters agree.
pub(crate) fn check_transaction(ops: &[TxOp], max: usize, max_bytes: usize) -> StoreResult<()> {
    if ops.is_empty() || ops.len() > max {
        return Err(StoreError::Invalid(format!(
            "a transaction takes 1 to {max} operations, not {}",
            ops.len()
        )));
    }
    let mut seen = HashSet::new();
    for op in ops {
        let (table, key) = op.table_and_key()?;
        // The writer does not check a put's size again.
        if let TxOp::Put { item, .. } = op {
            check_size(item)?;
        }
        if !seen.insert((table, key.clone())) {
            return Err(StoreError::Invalid(format!(
                "a transaction may touch an item once: {table} {key:?} appears twice"
            )));
        }
    }
    check_transaction_size(ops, max_bytes)
}

/// The most bytes one embedded transaction carries: far more than
/// DynamoDB's 4 MB, as its operation limit is, but bounded so that one
/// commit's memory is.
pub const EMBEDDED_MAX_TRANSACTION_BYTES: usize = 64 * 1024 * 1024;

#[async_trait]
impl Store for Embedded {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn create_tables(&self) -> StoreResult<()> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.create_tables_now())
            .await
            .map_err(unavailable)?
    }

    async fn ping(&self) -> StoreResult<()> {
        self.inner.db.begin_read().map(drop).map_err(unavailable)
    }

    async fn get(&self, table: Table, key: &Key) -> StoreResult<Option<Item>> {
        check_key(key)?;
        // A point read from a snapshot takes microseconds: no need to leave the task.
        let txn = self.inner.db.begin_read().map_err(unavailable)?;
        let t = match txn.open_table(self.inner.def(table)) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(unavailable(e)),
        };
        let got = t
            .get((key.pk.as_str(), key.sk.as_str()))
            .map_err(unavailable)?;
        got.map(|v| decode(v.value())).transpose()
    }

    async fn get_many(&self, table: Table, keys: &[Key]) -> StoreResult<Vec<Option<Item>>> {
        for k in keys {
            check_key(k)?;
        }
        // One snapshot for all: a batch's thousands of reads are
        // milliseconds, so a large set is read off the async workers.
        let read = move |inner: &Inner, keys: &[Key]| -> StoreResult<Vec<Option<Item>>> {
            let txn = inner.db.begin_read().map_err(unavailable)?;
            let t = match txn.open_table(inner.def(table)) {
                Ok(t) => t,
                Err(TableError::TableDoesNotExist(_)) => return Ok(vec![None; keys.len()]),
                Err(e) => return Err(unavailable(e)),
            };
            keys.iter()
                .map(|k| {
                    t.get((k.pk.as_str(), k.sk.as_str()))
                        .map_err(unavailable)?
                        .map(|v| decode(v.value()))
                        .transpose()
                })
                .collect()
        };
        if keys.len() <= INLINE_READS {
            return read(&self.inner, keys);
        }
        let (inner, keys) = (self.inner.clone(), keys.to_vec());
        tokio::task::spawn_blocking(move || read(&inner, &keys))
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?
    }

    async fn put(&self, table: Table, item: Item, cond: Option<Cond>) -> StoreResult<()> {
        Key::of(&item)?;
        check_size(&item)?;
        self.submit(Write::Put(table, item, cond)).await.map(drop)
    }

    async fn update(
        &self,
        table: Table,
        key: &Key,
        updates: Vec<Update>,
        cond: Option<Cond>,
    ) -> StoreResult<Item> {
        check_key(key)?;
        match self
            .submit(Write::Update(table, key.clone(), updates, cond))
            .await?
        {
            Output::Item(item) => Ok(item),
            _ => Err(StoreError::Unavailable("unexpected writer reply".into())),
        }
    }

    async fn delete(
        &self,
        table: Table,
        key: &Key,
        cond: Option<Cond>,
    ) -> StoreResult<Option<Item>> {
        check_key(key)?;
        match self.submit(Write::Delete(table, key.clone(), cond)).await? {
            Output::Old(old) => Ok(old),
            _ => Err(StoreError::Unavailable("unexpected writer reply".into())),
        }
    }

    #[tracing::instrument(name = "store.query", skip_all, fields(backend = "embedded", table = ?table), level = "debug")]
    async fn query(&self, table: Table, pk: &str, query: &Query) -> StoreResult<Page> {
        check_key(&Key::new(pk, ""))?;
        let inner = self.inner.clone();
        let pk = pk.to_owned();
        let query = query.clone();
        tokio::task::spawn_blocking(move || query_blocking(&inner, table, &pk, &query))
            .await
            .map_err(unavailable)?
    }

    fn max_transaction_ops(&self) -> usize {
        EMBEDDED_MAX_TRANSACTION_OPS
    }

    fn max_transaction_bytes(&self) -> usize {
        EMBEDDED_MAX_TRANSACTION_BYTES
    }

    #[tracing::instrument(name = "store.transact", skip_all, fields(backend = "embedded", ops = ops.len()), err(level = "debug"))]
    async fn transact(&self, ops: Vec<TxOp>) -> StoreResult<()> {
        check_transaction(
            &ops,
            EMBEDDED_MAX_TRANSACTION_OPS,
            EMBEDDED_MAX_TRANSACTION_BYTES,
        )?;
        self.submit(Write::Transact(ops)).await.map(drop)
    }
}

fn query_blocking(inner: &Inner, table: Table, pk: &str, q: &Query) -> StoreResult<Page> {
    let txn = inner.db.begin_read().map_err(unavailable)?;
    let t = match txn.open_table(inner.def(table)) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(Page::default()),
        Err(e) => return Err(unavailable(e)),
    };
    // Every sort key of this partition lies in [(pk, ""), (pk + "\0", "")).
    let next_pk = format!("{pk}\0");
    let mut lo: Bound<RedbKey<'_>> = Bound::Included((pk, ""));
    let mut hi: Bound<RedbKey<'_>> = Bound::Excluded((next_pk.as_str(), ""));
    let prefix = match &q.range {
        SortRange::All => None,
        SortRange::BeginsWith(p) => {
            lo = Bound::Included((pk, p.as_str()));
            Some(p.as_str())
        }
        SortRange::Between(a, b) => {
            lo = Bound::Included((pk, a.as_str()));
            hi = Bound::Included((pk, b.as_str()));
            None
        }
    };
    if let Some(c) = q.cursor.as_deref() {
        if q.descending {
            hi = Bound::Excluded((pk, c));
        } else {
            lo = Bound::Excluded((pk, c));
        }
    }
    let limit = q.limit.clamp(1, MAX_PAGE);
    let range = t.range::<RedbKey<'_>>((lo, hi)).map_err(unavailable)?;
    let matches = |sk: &str| prefix.is_none_or(|p| sk.starts_with(p));
    let mut items = Vec::with_capacity(limit + 1);
    let mut push = |entry: Result<
        (
            redb::AccessGuard<'_, RedbKey<'static>>,
            redb::AccessGuard<'_, &'static [u8]>,
        ),
        redb::StorageError,
    >|
     -> StoreResult<bool> {
        let (k, v) = entry.map_err(unavailable)?;
        let sk = k.value().1;
        if !matches(sk) {
            // Ascending, past the prefix: done. Descending: not there yet.
            return Ok(q.descending);
        }
        items.push(decode(v.value())?);
        Ok(items.len() <= limit)
    };
    if q.descending {
        for entry in range.rev() {
            if !push(entry)? {
                break;
            }
        }
    } else {
        for entry in range {
            if !push(entry)? {
                break;
            }
        }
    }
    Ok(Page::cut(items, limit, false))
}
