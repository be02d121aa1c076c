//! A store that passes every call to a real one, except the transactions a
//! rule refuses: for fault tests of the code above the port (a record whose
//! effects the store refuses for good, an outage on some items). Not used
//! by the service itself.

use std::sync::Arc;

use async_trait::async_trait;

use crate::{Cond, Item, Key, Page, Query, Store, StoreError, StoreResult, Table, TxOp, Update};

/// What a rule says of a transaction: `Some(error)` to refuse it.
pub type Rule = dyn Fn(&[TxOp]) -> Option<StoreError> + Send + Sync;

/// A real store with faults injected into [`Store::transact`].
pub struct Faulty {
    inner: Arc<dyn Store>,
    rule: Box<Rule>,
    /// The most operations a transaction holds, if fewer than the inner
    /// store's (so that a test on the embedded store sees batches
    /// committed in parts, as on DynamoDB).
    max_ops: Option<usize>,
    /// The most bytes a transaction holds, likewise.
    max_bytes: Option<usize>,
}

impl std::fmt::Debug for Faulty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faulty")
            .field("inner", &self.inner)
            .finish()
    }
}

impl Faulty {
    pub fn new(
        inner: Arc<dyn Store>,
        rule: impl Fn(&[TxOp]) -> Option<StoreError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            inner,
            rule: Box::new(rule),
            max_ops: None,
            max_bytes: None,
        }
    }

    /// Transactions hold at most `n` operations (enforced, not only said).
    pub fn with_max_ops(mut self, n: usize) -> Self {
        self.max_ops = Some(n);
        self
    }

    /// Transactions hold at most `n` bytes (enforced, not only said).
    pub fn with_max_bytes(mut self, n: usize) -> Self {
        self.max_bytes = Some(n);
        self
    }
}

/// Whether any operation writes the item at `key` of `table`.
pub fn touches(ops: &[TxOp], table: Table, key: &Key) -> bool {
    ops.iter().any(|op| {
        op.table_and_key()
            .is_ok_and(|(t, k)| t == table && &k == key)
    })
}

#[async_trait]
impl Store for Faulty {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn create_tables(&self) -> StoreResult<()> {
        self.inner.create_tables().await
    }
    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }
    async fn get(&self, table: Table, key: &Key) -> StoreResult<Option<Item>> {
        self.inner.get(table, key).await
    }
    async fn get_many(&self, table: Table, keys: &[Key]) -> StoreResult<Vec<Option<Item>>> {
        self.inner.get_many(table, keys).await
    }
    async fn put(&self, table: Table, item: Item, cond: Option<Cond>) -> StoreResult<()> {
        self.inner.put(table, item, cond).await
    }
    async fn update(
        &self,
        table: Table,
        key: &Key,
        updates: Vec<Update>,
        cond: Option<Cond>,
    ) -> StoreResult<Item> {
        self.inner.update(table, key, updates, cond).await
    }
    async fn delete(
        &self,
        table: Table,
        key: &Key,
        cond: Option<Cond>,
    ) -> StoreResult<Option<Item>> {
        self.inner.delete(table, key, cond).await
    }
    async fn query(&self, table: Table, pk: &str, query: &Query) -> StoreResult<Page> {
        self.inner.query(table, pk, query).await
    }
    async fn transact(&self, ops: Vec<TxOp>) -> StoreResult<()> {
        if ops.len() > self.max_transaction_ops() {
            return Err(StoreError::Invalid(format!(
                "a transaction takes at most {} operations, not {}",
                self.max_transaction_ops(),
                ops.len()
            )));
        }
        crate::expr::check_transaction_size(&ops, self.max_transaction_bytes())?;
        if let Some(e) = (self.rule)(&ops) {
            return Err(e);
        }
        self.inner.transact(ops).await
    }
    fn max_transaction_ops(&self) -> usize {
        let inner = self.inner.max_transaction_ops();
        self.max_ops.map_or(inner, |n| n.min(inner))
    }
    fn max_transaction_bytes(&self) -> usize {
        let inner = self.inner.max_transaction_bytes();
        self.max_bytes.map_or(inner, |n| n.min(inner))
    }
}
