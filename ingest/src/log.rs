//! The embedded event log: partitioned, durable, append-only, readable from
//! any offset. Records are the events' JSON, as on every other stream.
//!
//! An append takes the partition's next offset from an atomic counter and then
//! writes the record at that offset.

use std::{
    hash::{Hash, Hasher},
    sync::Arc,
};

use async_trait::async_trait;
use domain::Event;
use storage::{Key, Query, SortRange, Store, StoreError, Table, Value, port::PK};

use crate::{EventSink, PublishError};

/// The number of partitions a new log has.
pub const DEFAULT_PARTITIONS: u32 = 4;

/// One record read back from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub partition: u32,
    pub offset: u64,
    pub key: String,
    pub data: Vec<u8>,
}

#[derive(Clone, Debug)]
pub struct StoreLog {
    store: Arc<dyn Store>,
    partitions: u32,
}

fn partition_pk(p: u32) -> String {
    format!("log#{p}")
}

fn offset_sk(offset: u64) -> String {
    format!("{offset:020}")
}

impl StoreLog {
    pub fn new(store: Arc<dyn Store>, partitions: u32) -> Self {
        Self {
            store,
            partitions: partitions.max(1),
        }
    }

    /// The partition a key's records go to: stable across runs and versions.
    pub fn partition_of(&self, key: &str) -> u32 {
        // FNV-1a: fixed, unlike std's randomly seeded hasher.
        let mut h = Fnv(0xcbf2_9ce4_8422_2325);
        key.hash(&mut h);
        (h.finish() % u64::from(self.partitions)) as u32
    }

    /// Appends one record and returns its partition and offset.
    pub async fn append(&self, key: &str, data: Vec<u8>) -> Result<(u32, u64), StoreError> {
        let partition = self.partition_of(key);
        let pk = partition_pk(partition);
        let next = self
            .store
            .add(Table::Log, &Key::new(&pk, "head"), "next", 1)
            .await?;
        let offset = (next - 1) as u64;
        let mut item = Key::new(&pk, offset_sk(offset)).to_item();
        item.insert("key".into(), Value::S(key.to_owned()));
        item.insert("data".into(), Value::B(data));
        self.store.put(Table::Log, item, None).await?;
        Ok((partition, offset))
    }

    /// Up to `limit` records of a partition from `from` on, in order.
    pub async fn read(
        &self,
        partition: u32,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let query = Query {
            range: SortRange::Between(offset_sk(from), offset_sk(u64::MAX >> 1)),
            limit,
            ..Query::default()
        };
        let page = self
            .store
            .query(Table::Log, &partition_pk(partition), &query)
            .await?;
        page.items
            .into_iter()
            .map(|item| {
                let key = Key::of(&item)?;
                let offset = key
                    .sk
                    .parse()
                    .map_err(|_| StoreError::Corrupt(format!("log offset {}", key.sk)))?;
                match (item.get("key"), item.get("data"), item.get(PK)) {
                    (Some(Value::S(k)), Some(Value::B(d)), Some(_)) => Ok(Record {
                        partition,
                        offset,
                        key: k.clone(),
                        data: d.clone(),
                    }),
                    _ => Err(StoreError::Corrupt(format!(
                        "log record {partition}/{offset}"
                    ))),
                }
            })
            .collect()
    }
}

#[async_trait]
impl EventSink for StoreLog {
    async fn publish(&self, events: &[Event]) -> Result<(), PublishError> {
        for e in events {
            let data = serde_json::to_vec(e)?;
            self.append(&e.payload.partition_key(), data).await?;
        }
        Ok(())
    }
}

struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use domain::{EventPayload, ProductId};
    use storage::embedded::Embedded;

    use super::*;

    #[tokio::test]
    async fn appended_events_read_back_in_order_per_partition() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(Embedded::open(dir.path(), "").unwrap());
        let log = StoreLog::new(store, DEFAULT_PARTITIONS);
        let product = ProductId::new();
        let events: Vec<Event> = (0..5)
            .map(|_| {
                Event::new(
                    "test",
                    EventPayload::ProductDeleted {
                        product_id: product,
                    },
                )
            })
            .collect();
        log.publish(&events).await.unwrap();
        let p = log.partition_of(&product.to_string());
        let records = log.read(p, 0, 100).await.unwrap();
        assert_eq!(
            records.iter().map(|r| r.offset).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4]
        );
        let decoded: Vec<Event> = records
            .iter()
            .map(|r| serde_json::from_slice(&r.data).unwrap())
            .collect();
        assert_eq!(decoded, events);
        assert_eq!(log.read(p, 3, 100).await.unwrap().len(), 2);
        for other in (0..DEFAULT_PARTITIONS).filter(|q| *q != p) {
            assert!(log.read(other, 0, 10).await.unwrap().is_empty());
        }
    }
}
