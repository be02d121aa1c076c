//! KPL record aggregation, as the Kinesis Producer Library writes it: the
//! magic bytes `F3 89 9A C2`, a protobuf `AggregatedRecord`, then the MD5 of
//! the protobuf bytes. One Kinesis record then carries many user records,
//! which share the Kinesis sequence number and are told apart by their index
//! (the sub-sequence number).
//!
//! A record that has the magic bytes but a wrong digest or an unreadable
//! message is passed on whole, as the KCL does — the pipeline then
//! dead-letters it with its reason.

use md5::{Digest, Md5};
use prost::Message;

/// The four bytes every aggregated record starts with.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
const DIGEST_LEN: usize = 16;

/// `AggregatedRecord` of the KPL's `messages.proto`.
#[derive(Clone, PartialEq, Message)]
pub struct AggregatedRecord {
    #[prost(string, repeated, tag = "1")]
    pub partition_key_table: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub explicit_hash_key_table: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    pub records: Vec<UserRecord>,
}

/// `Record` of the KPL's `messages.proto`: one user record.
#[derive(Clone, PartialEq, Message)]
pub struct UserRecord {
    #[prost(uint64, required, tag = "1")]
    pub partition_key_index: u64,
    #[prost(uint64, optional, tag = "2")]
    pub explicit_hash_key_index: Option<u64>,
    #[prost(bytes = "vec", required, tag = "3")]
    pub data: Vec<u8>,
    #[prost(message, repeated, tag = "4")]
    pub tags: Vec<Tag>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Tag {
    #[prost(string, required, tag = "1")]
    pub key: String,
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

/// The user records in one Kinesis record's data: the aggregated ones, or
/// the data itself if it is not a valid aggregate.
pub fn deaggregate(data: &[u8]) -> Deaggregated<'_> {
    if data.len() > MAGIC.len() + DIGEST_LEN && data[..MAGIC.len()] == MAGIC {
        let body = &data[MAGIC.len()..data.len() - DIGEST_LEN];
        let digest = &data[data.len() - DIGEST_LEN..];
        if Md5::digest(body).as_slice() == digest
            && let Ok(agg) = AggregatedRecord::decode(body)
            && agg
                .records
                .iter()
                .all(|r| (r.partition_key_index as usize) < agg.partition_key_table.len())
        {
            return Deaggregated::Aggregate(agg.records.into_iter().map(|r| r.data).collect());
        }
    }
    Deaggregated::Plain(data)
}

/// What [`deaggregate`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Deaggregated<'a> {
    Plain(&'a [u8]),
    Aggregate(Vec<Vec<u8>>),
}

/// Builds an aggregated record from (partition key, data) pairs, the way the
/// KPL does. Used by tests and by producers that want fewer, bigger records.
pub fn aggregate(records: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut keys: Vec<String> = Vec::new();
    let mut user = Vec::with_capacity(records.len());
    for (key, data) in records {
        let index = match keys.iter().position(|k| k == key) {
            Some(i) => i,
            None => {
                keys.push(key.clone());
                keys.len() - 1
            }
        };
        user.push(UserRecord {
            partition_key_index: index as u64,
            explicit_hash_key_index: None,
            data: data.clone(),
            tags: Vec::new(),
        });
    }
    let body = AggregatedRecord {
        partition_key_table: keys,
        explicit_hash_key_table: Vec::new(),
        records: user,
    }
    .encode_to_vec();
    let mut out = Vec::with_capacity(MAGIC.len() + body.len() + DIGEST_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&body);
    out.extend_from_slice(Md5::digest(&body).as_slice());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregate_round_trips() {
        let records = vec![
            ("a".to_owned(), b"one".to_vec()),
            ("b".to_owned(), b"two".to_vec()),
            ("a".to_owned(), b"three".to_vec()),
        ];
        let data = aggregate(&records);
        assert_eq!(data[..4], MAGIC);
        assert_eq!(
            deaggregate(&data),
            Deaggregated::Aggregate(vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()])
        );
    }

    #[test]
    fn plain_records_pass_through() {
        let json = br#"{"type":"x"}"#;
        assert_eq!(deaggregate(json), Deaggregated::Plain(json));
        assert_eq!(deaggregate(&MAGIC), Deaggregated::Plain(&MAGIC[..]));
    }

    #[test]
    fn a_wrong_digest_leaves_the_record_whole() {
        let mut data = aggregate(&[("k".to_owned(), b"x".to_vec())]);
        let last = data.len() - 1;
        data[last] ^= 1;
        assert_eq!(deaggregate(&data), Deaggregated::Plain(&data[..]));
    }

    #[test]
    fn a_partition_key_index_out_of_range_is_not_an_aggregate() {
        let body = AggregatedRecord {
            partition_key_table: vec![],
            explicit_hash_key_table: vec![],
            records: vec![UserRecord {
                partition_key_index: 3,
                explicit_hash_key_index: None,
                data: b"x".to_vec(),
                tags: vec![],
            }],
        }
        .encode_to_vec();
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(&body);
        data.extend_from_slice(Md5::digest(&body).as_slice());
        assert_eq!(deaggregate(&data), Deaggregated::Plain(&data[..]));
    }
}
