//! The storage port: what DynamoDB offers and the domain needs, and nothing
//! more, so that both adapters can keep the same contract.
//!
//! # Contract
//! - Every item has a string partition key `pk` and a string sort key `sk`.
//! - Reads are strongly consistent: a read after a write sees it.
//! - A write with a condition writes only if the condition holds on the item as
//!   it is at that moment; otherwise it fails with
//!   [`StoreError::ConditionFailed`] and changes nothing.
//! - [`Store::update`] creates the item if it is missing (as DynamoDB does);
//!   add [`Cond::Exists`] to refuse that. `Update::Add` is atomic.
//! - [`Store::transact`] applies all its operations or none; at most
//!   [`Store::max_transaction_ops`] operations (DynamoDB: 100), at most one
//!   per item.
//! - Items larger than [`MAX_ITEM_BYTES`] (DynamoDB's size rules) are refused
//!   with [`StoreError::ItemTooLarge`] by both adapters; keys longer than
//!   [`MAX_PARTITION_KEY_BYTES`] / [`MAX_SORT_KEY_BYTES`] with
//!   [`StoreError::KeyTooLarge`]; a transaction whose items add up to more
//!   than [`Store::max_transaction_bytes`] with
//!   [`StoreError::TransactionTooLarge`]. These errors are permanent
//!   ([`StoreError::is_permanent`]): retrying the same request cannot help.
//! - [`Store::query`] returns a partition's items in sort-key order, a page at
//!   a time; following `Page::cursor` returns every item exactly once.

use std::collections::HashMap;

use async_trait::async_trait;
use serde::{Serialize, de::DeserializeOwned};

use crate::{StoreError, StoreResult, Table};

/// One attribute value, in DynamoDB's type system.
pub type Value = serde_dynamo::AttributeValue;
/// One item: attribute names to values, keys included.
pub type Item = HashMap<String, Value>;

/// DynamoDB's item size limit (400 KB).
pub const MAX_ITEM_BYTES: usize = 400 * 1024;
/// DynamoDB's limit on operations in one transaction.
pub const MAX_TRANSACTION_OPS: usize = 100;
/// DynamoDB's limit on the items of one transaction together (4 MB).
pub const MAX_TRANSACTION_BYTES: usize = 4 * 1024 * 1024;
/// DynamoDB's limit on a partition key value.
pub const MAX_PARTITION_KEY_BYTES: usize = 2048;
/// DynamoDB's limit on a sort key value.
pub const MAX_SORT_KEY_BYTES: usize = 1024;
/// The largest page a query returns.
pub const MAX_PAGE: usize = 1_000;

pub const PK: &str = "pk";
pub const SK: &str = "sk";

/// An item's primary key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub pk: String,
    pub sk: String,
}

impl Key {
    pub fn new(pk: impl Into<String>, sk: impl Into<String>) -> Self {
        Self {
            pk: pk.into(),
            sk: sk.into(),
        }
    }

    /// The key of an item, if it has one.
    pub fn of(item: &Item) -> StoreResult<Self> {
        match (item.get(PK), item.get(SK)) {
            (Some(Value::S(pk)), Some(Value::S(sk))) => Ok(Self::new(pk.clone(), sk.clone())),
            _ => Err(StoreError::Invalid(
                "an item needs string attributes `pk` and `sk`".into(),
            )),
        }
    }

    pub fn to_item(&self) -> Item {
        Item::from([
            (PK.to_owned(), Value::S(self.pk.clone())),
            (SK.to_owned(), Value::S(self.sk.clone())),
        ])
    }
}

/// A condition on an item, checked atomically with the write it guards.
#[derive(Clone, Debug, PartialEq)]
pub enum Cond {
    /// The item exists.
    Exists,
    /// The item does not exist.
    NotExists,
    /// The attribute exists.
    Has(String),
    /// The attribute does not exist.
    HasNot(String),
    /// The attribute equals the value.
    Eq(String, Value),
    /// The attribute exists and differs from the value.
    Ne(String, Value),
    /// Comparisons: numbers numerically, strings by their bytes. An attribute
    /// that is missing or of another type never compares true.
    Lt(String, Value),
    Le(String, Value),
    Gt(String, Value),
    Ge(String, Value),
    And(Vec<Cond>),
    Or(Vec<Cond>),
}

impl Cond {
    /// Adds the names of the attributes the condition reads to `out`.
    pub fn attributes<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Cond::Exists | Cond::NotExists => {}
            Cond::Has(a)
            | Cond::HasNot(a)
            | Cond::Eq(a, _)
            | Cond::Ne(a, _)
            | Cond::Lt(a, _)
            | Cond::Le(a, _)
            | Cond::Gt(a, _)
            | Cond::Ge(a, _) => out.push(a),
            Cond::And(cs) | Cond::Or(cs) => cs.iter().for_each(|c| c.attributes(out)),
        }
    }

    pub fn eq(attr: &str, v: impl Into<ValueOf>) -> Self {
        Cond::Eq(attr.to_owned(), v.into().0)
    }
    pub fn ge(attr: &str, v: impl Into<ValueOf>) -> Self {
        Cond::Ge(attr.to_owned(), v.into().0)
    }
}

/// One change to an item's attributes.
#[derive(Clone, Debug, PartialEq)]
pub enum Update {
    Set(String, Value),
    /// Adds a number to a number attribute (a missing one counts as zero).
    Add(String, Value),
    Remove(String),
}

impl Update {
    pub fn set(attr: &str, v: impl Into<ValueOf>) -> Self {
        Update::Set(attr.to_owned(), v.into().0)
    }
    pub fn add(attr: &str, delta: i64) -> Self {
        Update::Add(attr.to_owned(), Value::N(delta.to_string()))
    }
}

/// Converts plain Rust values into [`Value`]s for conditions and updates.
#[derive(Debug)]
pub struct ValueOf(pub Value);

impl From<&str> for ValueOf {
    fn from(s: &str) -> Self {
        Self(Value::S(s.to_owned()))
    }
}
impl From<String> for ValueOf {
    fn from(s: String) -> Self {
        Self(Value::S(s))
    }
}
impl From<i64> for ValueOf {
    fn from(n: i64) -> Self {
        Self(Value::N(n.to_string()))
    }
}
impl From<u64> for ValueOf {
    fn from(n: u64) -> Self {
        Self(Value::N(n.to_string()))
    }
}
impl From<bool> for ValueOf {
    fn from(b: bool) -> Self {
        Self(Value::Bool(b))
    }
}
impl From<Value> for ValueOf {
    fn from(v: Value) -> Self {
        Self(v)
    }
}

/// Which sort keys of a partition a query returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SortRange {
    #[default]
    All,
    BeginsWith(String),
    /// Inclusive at both ends.
    Between(String, String),
}

/// A query of one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub range: SortRange,
    /// At most this many items (capped at [`MAX_PAGE`]).
    pub limit: usize,
    /// The sort key of the last item of the previous page.
    pub cursor: Option<String>,
    /// Newest (largest sort key) first.
    pub descending: bool,
}

impl Default for Query {
    fn default() -> Self {
        Self {
            range: SortRange::All,
            limit: 100,
            cursor: None,
            descending: false,
        }
    }
}

/// One page of a query.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Page {
    pub items: Vec<Item>,
    /// Present when more items may follow: pass it as the next query's cursor.
    pub cursor: Option<String>,
}

impl Page {
    /// A page from what an adapter read: up to `limit` items, one more to
    /// see whether others follow (or `more`, when the backend itself says
    /// so). The cursor is the sort key of the last item kept.
    pub fn cut(mut items: Vec<Item>, limit: usize, more: bool) -> Self {
        let cursor = if items.len() > limit || (more && !items.is_empty()) {
            items.truncate(limit);
            match items.last().and_then(|i| i.get(SK)) {
                Some(Value::S(sk)) => Some(sk.clone()),
                _ => None,
            }
        } else {
            None
        };
        Self { items, cursor }
    }
}

/// One operation of a transaction.
#[derive(Clone, Debug, PartialEq)]
pub enum TxOp {
    Put {
        table: Table,
        item: Item,
        cond: Option<Cond>,
    },
    Update {
        table: Table,
        key: Key,
        updates: Vec<Update>,
        cond: Option<Cond>,
    },
    Delete {
        table: Table,
        key: Key,
        cond: Option<Cond>,
    },
    /// Writes nothing; the transaction fails unless the condition holds.
    Check { table: Table, key: Key, cond: Cond },
}

impl TxOp {
    pub fn table_and_key(&self) -> StoreResult<(Table, Key)> {
        match self {
            TxOp::Put { table, item, .. } => Ok((*table, Key::of(item)?)),
            TxOp::Update { table, key, .. }
            | TxOp::Delete { table, key, .. }
            | TxOp::Check { table, key, .. } => Ok((*table, key.clone())),
        }
    }
}

/// How many reads [`Store::get_many`]'s default keeps in flight.
pub const GET_MANY_AT_ONCE: usize = 32;

/// The storage port. See the module documentation for the contract.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Which backend this is, for logs and metrics.
    fn backend(&self) -> &'static str;

    /// Creates the tables if they do not exist. Idempotent.
    async fn create_tables(&self) -> StoreResult<()>;

    /// Succeeds if the store can serve requests.
    async fn ping(&self) -> StoreResult<()>;

    async fn get(&self, table: Table, key: &Key) -> StoreResult<Option<Item>>;

    /// Reads many items of one table, strongly consistent like
    /// [`Store::get`]: one entry per key, in the order of `keys`, `None`
    /// where the item does not exist. The default reads [`GET_MANY_AT_ONCE`]
    /// items at a time; DynamoDB reads 100 per request (`BatchGetItem`), so
    /// a batch's thousands of reads neither flood the connection pool nor
    /// cost a round trip each.
    async fn get_many(&self, table: Table, keys: &[Key]) -> StoreResult<Vec<Option<Item>>> {
        use futures::{StreamExt, TryStreamExt};
        let reads: Vec<_> = keys.iter().map(|k| self.get(table, k)).collect();
        futures::stream::iter(reads)
            .buffered(GET_MANY_AT_ONCE)
            .try_collect()
            .await
    }

    async fn put(&self, table: Table, item: Item, cond: Option<Cond>) -> StoreResult<()>;

    /// Applies the updates and returns the item as it is afterwards.
    async fn update(
        &self,
        table: Table,
        key: &Key,
        updates: Vec<Update>,
        cond: Option<Cond>,
    ) -> StoreResult<Item>;

    /// Deletes the item and returns it as it was, if it existed.
    async fn delete(
        &self,
        table: Table,
        key: &Key,
        cond: Option<Cond>,
    ) -> StoreResult<Option<Item>>;

    async fn query(&self, table: Table, pk: &str, query: &Query) -> StoreResult<Page>;

    async fn transact(&self, ops: Vec<TxOp>) -> StoreResult<()>;

    /// The most operations one [`Store::transact`] takes on this backend.
    fn max_transaction_ops(&self) -> usize {
        MAX_TRANSACTION_OPS
    }

    /// The most bytes the items of one [`Store::transact`] may add up to
    /// on this backend (as [`crate::expr::transaction_size`] counts them).
    fn max_transaction_bytes(&self) -> usize {
        MAX_TRANSACTION_BYTES
    }

    /// Atomically adds `delta` to a number attribute and returns the new value.
    async fn add(&self, table: Table, key: &Key, attr: &str, delta: i64) -> StoreResult<i64> {
        let item = self
            .update(table, key, vec![Update::add(attr, delta)], None)
            .await?;
        match item.get(attr) {
            Some(Value::N(n)) => n
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("{attr} is not an integer: {n}"))),
            _ => Err(StoreError::Corrupt(format!("{attr} missing after add"))),
        }
    }
}

/// Serialises a value into an item under a key. The value's own fields must
/// not be named `pk` or `sk`.
pub fn to_item<T: Serialize>(key: &Key, value: &T) -> StoreResult<Item> {
    let mut item: Item = serde_dynamo::to_item(value)
        .map_err(|e| StoreError::Invalid(format!("cannot store value: {e}")))?;
    item.extend(key.to_item());
    Ok(item)
}

/// Reads a value back from an item (its key attributes are ignored).
pub fn from_item<T: DeserializeOwned>(mut item: Item) -> StoreResult<T> {
    item.remove(PK);
    item.remove(SK);
    serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt(e.to_string()))
}
