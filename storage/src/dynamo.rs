//! The DynamoDB adapter. Items are stored as native DynamoDB attributes (one
//! table per logical table, string keys `pk` and `sk`), so a person can read
//! them in the console or with `aws dynamodb scan`.
//!
//! The client comes from the AWS SDK's default chain: `AWS_REGION`,
//! `AWS_ENDPOINT_URL` (LocalStack, moto or any emulator), credentials from the
//! environment, profile or instance role.

use std::{collections::HashMap, time::Duration};

use async_trait::async_trait;
use aws_sdk_dynamodb::{
    Client,
    error::{ProvideErrorMetadata, SdkError},
    operation::transact_write_items::TransactWriteItemsError,
    types::{
        AttributeDefinition, AttributeValue as Av, BillingMode, ConditionCheck, Delete,
        KeySchemaElement, KeyType, KeysAndAttributes, Put, ReturnValue, ScalarAttributeType,
        TableStatus, TransactWriteItem, Update as DdbUpdate,
    },
};

use crate::{
    StoreError, StoreResult, Table,
    embedded::check_transaction,
    expr::{check_key, check_size},
    port::{
        Cond, Item, Key, MAX_PAGE, MAX_TRANSACTION_BYTES, MAX_TRANSACTION_OPS, PK, Page, Query, SK,
        SortRange, Store, TxOp, Update, Value,
    },
};

/// How often a transaction that met a concurrent one is tried again.
const CONFLICT_RETRIES: u32 = 8;

/// The DynamoDB store.
#[derive(Clone, Debug)]
pub struct Dynamo {
    client: Client,
    prefix: String,
}

impl Dynamo {
    /// One `BatchGetItem` of at most 100 distinct keys, strongly
    /// consistent, asking again for the keys DynamoDB left unprocessed
    /// (throttling, or its 16 MB response limit) with backoff.
    async fn batch_get(&self, table: &str, keys: &[&Key]) -> StoreResult<Vec<Item>> {
        let mut pending: Vec<HashMap<String, Av>> = keys.iter().map(|k| key_av(k)).collect();
        let mut out = Vec::with_capacity(keys.len());
        let mut attempt = 0u32;
        while !pending.is_empty() {
            let request = KeysAndAttributes::builder()
                .set_keys(Some(pending))
                .consistent_read(true)
                .build()
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            let got = self
                .client
                .batch_get_item()
                .request_items(table, request)
                .send()
                .await
                .map_err(map_err)?;
            out.extend(
                got.responses
                    .and_then(|mut r| r.remove(table))
                    .unwrap_or_default()
                    .into_iter()
                    .map(from_av),
            );
            pending = got
                .unprocessed_keys
                .and_then(|mut u| u.remove(table))
                .map(|k| k.keys)
                .unwrap_or_default();
            if !pending.is_empty() {
                attempt += 1;
                if attempt > 10 {
                    return Err(StoreError::Unavailable(format!(
                        "{} keys of {table} stayed unprocessed after {attempt} tries",
                        pending.len()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(25 << attempt.min(6))).await;
            }
        }
        Ok(out)
    }
    /// Uses the SDK's default configuration chain.
    pub async fn from_env(table_prefix: &str) -> Self {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::new(Client::new(&config), table_prefix)
    }

    pub fn new(client: Client, table_prefix: &str) -> Self {
        Self {
            client,
            prefix: table_prefix.to_owned(),
        }
    }

    fn table(&self, t: Table) -> String {
        format!("{}{}", self.prefix, t.name())
    }

    async fn wait_active(&self, name: &str) -> StoreResult<()> {
        for _ in 0..120 {
            let out = self
                .client
                .describe_table()
                .table_name(name)
                .send()
                .await
                .map_err(map_err)?;
            if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(StoreError::Unavailable(format!(
            "table {name} did not become active in 60 s"
        )))
    }
}

fn to_av(item: Item) -> HashMap<String, Av> {
    item.into_iter().map(|(k, v)| (k, Av::from(v))).collect()
}

/// The most keys one `BatchGetItem` takes.
const BATCH_GET_KEYS: usize = 100;
/// How many `BatchGetItem` requests [`Dynamo::get_many`] keeps in flight.
const BATCH_GETS_AT_ONCE: usize = 4;

fn from_av(item: HashMap<String, Av>) -> Item {
    item.into_iter().map(|(k, v)| (k, Value::from(v))).collect()
}

fn key_av(key: &Key) -> HashMap<String, Av> {
    HashMap::from([
        (PK.to_owned(), Av::S(key.pk.clone())),
        (SK.to_owned(), Av::S(key.sk.clone())),
    ])
}

fn map_err<E: ProvideErrorMetadata + std::fmt::Debug>(e: SdkError<E>) -> StoreError {
    let code = e.code().unwrap_or_default().to_owned();
    let message = e.message().unwrap_or_default().to_owned();
    match code.as_str() {
        "ConditionalCheckFailedException" => StoreError::ConditionFailed,
        "ValidationException" if message.to_lowercase().contains("size") => {
            StoreError::ItemTooLarge {
                size: 0,
                limit: crate::port::MAX_ITEM_BYTES,
            }
        }
        "ValidationException" | "SerializationException" => StoreError::Invalid(message),
        "ResourceNotFoundException" => StoreError::Unavailable(format!(
            "{message} (run `shopstream init` to create the tables)"
        )),
        "TransactionConflictException" => StoreError::Conflict(message),
        "" => StoreError::Unavailable(format!("{e:?}")),
        _ => StoreError::Unavailable(format!("{code}: {message}")),
    }
}

/// Builds expression strings with `#n` name and `:v` value placeholders.
#[derive(Default)]
struct Expr {
    names: HashMap<String, String>,
    values: HashMap<String, Av>,
}

impl Expr {
    fn name(&mut self, attr: &str) -> String {
        if let Some((k, _)) = self.names.iter().find(|(_, v)| *v == attr) {
            return k.clone();
        }
        let k = format!("#n{}", self.names.len());
        self.names.insert(k.clone(), attr.to_owned());
        k
    }

    fn value(&mut self, v: &Value) -> String {
        let k = format!(":v{}", self.values.len());
        self.values.insert(k.clone(), Av::from(v.clone()));
        k
    }

    fn cond(&mut self, c: &Cond) -> String {
        let mut cmp = |a: &str, op: &str, v: &Value| {
            let (n, v) = (self.name(a), self.value(v));
            format!("{n} {op} {v}")
        };
        match c {
            Cond::Eq(a, v) => cmp(a, "=", v),
            Cond::Lt(a, v) => cmp(a, "<", v),
            Cond::Le(a, v) => cmp(a, "<=", v),
            Cond::Gt(a, v) => cmp(a, ">", v),
            Cond::Ge(a, v) => cmp(a, ">=", v),
            Cond::Ne(a, v) => {
                let n = self.name(a);
                let v = self.value(v);
                format!("(attribute_exists({n}) AND {n} <> {v})")
            }
            Cond::Exists => format!("attribute_exists({})", self.name(PK)),
            Cond::NotExists => format!("attribute_not_exists({})", self.name(PK)),
            Cond::Has(a) => format!("attribute_exists({})", self.name(a)),
            Cond::HasNot(a) => format!("attribute_not_exists({})", self.name(a)),
            Cond::And(cs) | Cond::Or(cs) if cs.is_empty() => {
                // An empty AND holds; an empty OR does not. Compare the key with itself.
                let n = self.name(PK);
                if matches!(c, Cond::And(_)) {
                    format!("(attribute_exists({n}) OR attribute_not_exists({n}))")
                } else {
                    format!("(attribute_exists({n}) AND attribute_not_exists({n}))")
                }
            }
            Cond::And(cs) => self.join(cs, " AND "),
            Cond::Or(cs) => self.join(cs, " OR "),
        }
    }

    fn join(&mut self, cs: &[Cond], sep: &str) -> String {
        let parts: Vec<String> = cs.iter().map(|c| self.cond(c)).collect();
        format!("({})", parts.join(sep))
    }

    fn update(&mut self, updates: &[Update]) -> StoreResult<Option<String>> {
        let (mut set, mut add, mut remove) = (Vec::new(), Vec::new(), Vec::new());
        for u in updates {
            match u {
                Update::Set(a, _) | Update::Add(a, _) | Update::Remove(a) if a == PK || a == SK => {
                    return Err(StoreError::Invalid(format!(
                        "cannot update key attribute {a}"
                    )));
                }
                Update::Set(a, v) => {
                    let (n, v) = (self.name(a), self.value(v));
                    set.push(format!("{n} = {v}"));
                }
                Update::Add(a, v @ Value::N(_)) => {
                    let (n, v) = (self.name(a), self.value(v));
                    add.push(format!("{n} {v}"));
                }
                Update::Add(a, _) => {
                    return Err(StoreError::Invalid(format!("can only add a number to {a}")));
                }
                Update::Remove(a) => remove.push(self.name(a)),
            }
        }
        let mut parts = Vec::new();
        if !set.is_empty() {
            parts.push(format!("SET {}", set.join(", ")));
        }
        if !add.is_empty() {
            parts.push(format!("ADD {}", add.join(", ")));
        }
        if !remove.is_empty() {
            parts.push(format!("REMOVE {}", remove.join(", ")));
        }
        Ok((!parts.is_empty()).then(|| parts.join(" ")))
    }

    fn names(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.clone())
    }

    fn values(&self) -> Option<HashMap<String, Av>> {
        (!self.values.is_empty()).then(|| self.values.clone())
    }
}

#[async_trait]
impl Store for Dynamo {
    fn backend(&self) -> &'static str {
        "dynamodb"
    }

    async fn create_tables(&self) -> StoreResult<()> {
        for t in Table::ALL {
            let name = self.table(t);
            let created = self
                .client
                .create_table()
                .table_name(&name)
                .billing_mode(BillingMode::PayPerRequest)
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name(PK)
                        .attribute_type(ScalarAttributeType::S)
                        .build()
                        .map_err(|e| StoreError::Invalid(e.to_string()))?,
                )
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name(SK)
                        .attribute_type(ScalarAttributeType::S)
                        .build()
                        .map_err(|e| StoreError::Invalid(e.to_string()))?,
                )
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name(PK)
                        .key_type(KeyType::Hash)
                        .build()
                        .map_err(|e| StoreError::Invalid(e.to_string()))?,
                )
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name(SK)
                        .key_type(KeyType::Range)
                        .build()
                        .map_err(|e| StoreError::Invalid(e.to_string()))?,
                )
                .send()
                .await;
            match created {
                Ok(_) => {
                    tracing::info!(table = %name, "created table");
                    if let Some(ttl) = t.ttl_attribute() {
                        self.wait_active(&name).await?;
                        if let Err(e) = self
                            .client
                            .update_time_to_live()
                            .table_name(&name)
                            .time_to_live_specification(
                                aws_sdk_dynamodb::types::TimeToLiveSpecification::builder()
                                    .attribute_name(ttl)
                                    .enabled(true)
                                    .build()
                                    .map_err(|e| StoreError::Invalid(e.to_string()))?,
                            )
                            .send()
                            .await
                        {
                            tracing::warn!(table = %name, error = %map_err(e), "cannot enable TTL");
                        }
                    }
                }
                Err(e) if e.code() == Some("ResourceInUseException") => {
                    tracing::debug!(table = %name, "table exists");
                }
                Err(e) => return Err(map_err(e)),
            }
            self.wait_active(&name).await?;
        }
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        self.client
            .describe_table()
            .table_name(self.table(Table::Meta))
            .send()
            .await
            .map(drop)
            .map_err(map_err)
    }

    async fn get(&self, table: Table, key: &Key) -> StoreResult<Option<Item>> {
        check_key(key)?;
        let out = self
            .client
            .get_item()
            .table_name(self.table(table))
            .set_key(Some(key_av(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(map_err)?;
        Ok(out.item.map(from_av))
    }

    #[tracing::instrument(name = "store.get_many", skip_all, fields(backend = "dynamodb", keys = keys.len()), err(level = "debug"))]
    async fn get_many(&self, table: Table, keys: &[Key]) -> StoreResult<Vec<Option<Item>>> {
        use futures::{StreamExt, TryStreamExt};
        let mut unique: Vec<&Key> = keys.iter().collect();
        unique.sort();
        unique.dedup();
        for k in &unique {
            check_key(k)?;
        }
        let name = self.table(table);
        let reads: Vec<_> = unique
            .chunks(BATCH_GET_KEYS)
            .map(|chunk| Box::pin(self.batch_get(&name, chunk)))
            .collect();
        let found: Vec<Vec<Item>> = futures::stream::iter(reads)
            .buffered(BATCH_GETS_AT_ONCE)
            .try_collect()
            .await?;
        let mut by_key: HashMap<Key, Item> = HashMap::with_capacity(unique.len());
        for item in found.into_iter().flatten() {
            by_key.insert(Key::of(&item)?, item);
        }
        Ok(keys.iter().map(|k| by_key.get(k).cloned()).collect())
    }

    async fn put(&self, table: Table, item: Item, cond: Option<Cond>) -> StoreResult<()> {
        Key::of(&item)?;
        check_size(&item)?;
        let mut e = Expr::default();
        let cond = cond.map(|c| e.cond(&c));
        self.client
            .put_item()
            .table_name(self.table(table))
            .set_item(Some(to_av(item)))
            .set_condition_expression(cond)
            .set_expression_attribute_names(e.names())
            .set_expression_attribute_values(e.values())
            .send()
            .await
            .map(drop)
            .map_err(map_err)
    }

    async fn update(
        &self,
        table: Table,
        key: &Key,
        updates: Vec<Update>,
        cond: Option<Cond>,
    ) -> StoreResult<Item> {
        check_key(key)?;
        let mut e = Expr::default();
        let update = e.update(&updates)?;
        let cond = cond.map(|c| e.cond(&c));
        let out = self
            .client
            .update_item()
            .table_name(self.table(table))
            .set_key(Some(key_av(key)))
            .set_update_expression(update)
            .set_condition_expression(cond)
            .set_expression_attribute_names(e.names())
            .set_expression_attribute_values(e.values())
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(map_err)?;
        Ok(out.attributes.map(from_av).unwrap_or_else(|| key.to_item()))
    }

    async fn delete(
        &self,
        table: Table,
        key: &Key,
        cond: Option<Cond>,
    ) -> StoreResult<Option<Item>> {
        check_key(key)?;
        let mut e = Expr::default();
        let cond = cond.map(|c| e.cond(&c));
        let out = self
            .client
            .delete_item()
            .table_name(self.table(table))
            .set_key(Some(key_av(key)))
            .set_condition_expression(cond)
            .set_expression_attribute_names(e.names())
            .set_expression_attribute_values(e.values())
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(map_err)?;
        Ok(out.attributes.map(from_av))
    }

    #[tracing::instrument(name = "store.query", skip_all, fields(backend = "dynamodb", table = ?table), level = "debug")]
    async fn query(&self, table: Table, pk: &str, q: &Query) -> StoreResult<Page> {
        check_key(&Key::new(pk, ""))?;
        let limit = q.limit.clamp(1, MAX_PAGE);
        let mut e = Expr::default();
        let pk_name = e.name(PK);
        let pk_value = e.value(&Value::S(pk.to_owned()));
        let key_cond = match &q.range {
            SortRange::All => format!("{pk_name} = {pk_value}"),
            SortRange::BeginsWith(p) => {
                let sk_name = e.name(SK);
                let p = e.value(&Value::S(p.clone()));
                format!("{pk_name} = {pk_value} AND begins_with({sk_name}, {p})")
            }
            SortRange::Between(a, b) => {
                let sk_name = e.name(SK);
                let a = e.value(&Value::S(a.clone()));
                let b = e.value(&Value::S(b.clone()));
                format!("{pk_name} = {pk_value} AND {sk_name} BETWEEN {a} AND {b}")
            }
        };
        // One more than asked for tells whether another page follows.
        let out = self
            .client
            .query()
            .table_name(self.table(table))
            .key_condition_expression(key_cond)
            .set_expression_attribute_names(e.names())
            .set_expression_attribute_values(e.values())
            .set_exclusive_start_key(q.cursor.as_ref().map(|c| key_av(&Key::new(pk, c.clone()))))
            .scan_index_forward(!q.descending)
            .consistent_read(true)
            .limit(i32::try_from(limit + 1).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(map_err)?;
        let more = out.last_evaluated_key.is_some();
        let items: Vec<Item> = out
            .items
            .unwrap_or_default()
            .into_iter()
            .map(from_av)
            .collect();
        Ok(Page::cut(items, limit, more))
    }

    #[tracing::instrument(name = "store.transact", skip_all, fields(backend = "dynamodb", ops = ops.len()), err(level = "debug"))]
    async fn transact(&self, ops: Vec<TxOp>) -> StoreResult<()> {
        check_transaction(&ops, MAX_TRANSACTION_OPS, MAX_TRANSACTION_BYTES)?;
        let mut items = Vec::with_capacity(ops.len());
        for op in &ops {
            let mut e = Expr::default();
            let item = match op {
                TxOp::Put { table, item, cond } => {
                    check_size(item)?;
                    let cond = cond.as_ref().map(|c| e.cond(c));
                    TransactWriteItem::builder().put(
                        Put::builder()
                            .table_name(self.table(*table))
                            .set_item(Some(to_av(item.clone())))
                            .set_condition_expression(cond)
                            .set_expression_attribute_names(e.names())
                            .set_expression_attribute_values(e.values())
                            .build()
                            .map_err(|e| StoreError::Invalid(e.to_string()))?,
                    )
                }
                TxOp::Update {
                    table,
                    key,
                    updates,
                    cond,
                } => {
                    let update = e.update(updates)?.ok_or_else(|| {
                        StoreError::Invalid(
                            "a transactional update needs at least one change".into(),
                        )
                    })?;
                    let cond = cond.as_ref().map(|c| e.cond(c));
                    TransactWriteItem::builder().update(
                        DdbUpdate::builder()
                            .table_name(self.table(*table))
                            .set_key(Some(key_av(key)))
                            .update_expression(update)
                            .set_condition_expression(cond)
                            .set_expression_attribute_names(e.names())
                            .set_expression_attribute_values(e.values())
                            .build()
                            .map_err(|e| StoreError::Invalid(e.to_string()))?,
                    )
                }
                TxOp::Delete { table, key, cond } => {
                    let cond = cond.as_ref().map(|c| e.cond(c));
                    TransactWriteItem::builder().delete(
                        Delete::builder()
                            .table_name(self.table(*table))
                            .set_key(Some(key_av(key)))
                            .set_condition_expression(cond)
                            .set_expression_attribute_names(e.names())
                            .set_expression_attribute_values(e.values())
                            .build()
                            .map_err(|e| StoreError::Invalid(e.to_string()))?,
                    )
                }
                TxOp::Check { table, key, cond } => {
                    let cond = e.cond(cond);
                    TransactWriteItem::builder().condition_check(
                        ConditionCheck::builder()
                            .table_name(self.table(*table))
                            .set_key(Some(key_av(key)))
                            .condition_expression(cond)
                            .set_expression_attribute_names(e.names())
                            .set_expression_attribute_values(e.values())
                            .build()
                            .map_err(|e| StoreError::Invalid(e.to_string()))?,
                    )
                }
            };
            items.push(item.build());
        }
        let mut attempt = 0;
        loop {
            let sent = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            let err = match sent {
                Ok(_) => return Ok(()),
                Err(err) => err,
            };
            let reasons = match err.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(c)) => c
                    .cancellation_reasons()
                    .iter()
                    .map(|r| r.code().unwrap_or("None").to_owned())
                    .collect::<Vec<_>>(),
                _ => return Err(map_err(err)),
            };
            let failed: Vec<usize> = reasons
                .iter()
                .enumerate()
                .filter(|(_, c)| c.as_str() == "ConditionalCheckFailed")
                .map(|(i, _)| i)
                .collect();
            if !failed.is_empty() {
                return Err(StoreError::TransactionCanceled { failed });
            }
            let conflict = reasons.is_empty()
                || reasons
                    .iter()
                    .any(|c| c == "TransactionConflict" || c == "ThrottlingError");
            if !conflict {
                if reasons.iter().any(|c| c == "ValidationError") {
                    return Err(StoreError::Invalid(format!(
                        "transaction refused: {reasons:?}"
                    )));
                }
                return Err(StoreError::Unavailable(format!(
                    "transaction cancelled: {reasons:?}"
                )));
            }
            attempt += 1;
            if attempt > CONFLICT_RETRIES {
                return Err(StoreError::Conflict(format!(
                    "gave up after {attempt} attempts: {reasons:?}"
                )));
            }
            let backoff = 10u64 << attempt.min(6);
            let jitter = rand::random_range(0..backoff);
            tokio::time::sleep(Duration::from_millis(backoff / 2 + jitter)).await;
        }
    }
}
