//! Property tests of the decoder and the fold over hostile input: arbitrary
//! bytes and structurally wrong envelopes never panic, and every record of a
//! batch is either applied, dropped as a re-send, or dead-lettered — with a
//! dead letter that always fits in an item.

use domain::Event;
use processors::{
    Record,
    fold::{Origin, Snapshot, fold, needs},
    pipeline::decode,
};
use proptest::prelude::*;
use serde_json::{Value, json};
use storage::{TxOp, expr::item_size, port::MAX_ITEM_BYTES};

/// Every event type, and two that are not.
fn event_type() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        prop::sample::select(domain::event::EVENT_TYPES),
        Just("coupon.redeemed"),
        Just(""),
    ]
}

/// Any JSON value, a few levels deep, leaning to the values events hold.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
        Just(json!("01a20b21-0093-7604-86da-d989b0c4de47")),
        Just(json!("2026-11-23T10:05:30Z")),
        Just(json!("9.99")),
        Just(json!("EUR")),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("product_id".to_owned()),
                    Just("session_id".to_owned()),
                    Just("user_id".to_owned()),
                    Just("delta".to_owned()),
                    Just("quantity".to_owned()),
                    Just("lines".to_owned()),
                    Just("order_id".to_owned()),
                    ".{0,12}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Envelopes with the right keys and wrong values, missing keys and extra
/// ones.
fn envelope() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::option::of(prop_oneof![
            Just(json!("01a20b21-0093-7604-86da-d989b0c4de99")),
            json_value()
        ]),
        prop::option::of(prop_oneof![
            event_type().prop_map(|t| json!(t)),
            json_value()
        ]),
        prop::option::of(prop_oneof![
            Just(json!("2026-11-23T10:05:30Z")),
            json_value()
        ]),
        prop::option::of(prop_oneof![Just(json!("test")), json_value()]),
        prop::option::of(prop_oneof![Just(json!(1)), json_value()]),
        prop::option::of(json_value()),
    )
        .prop_map(|(id, kind, at, source, version, data)| {
            let mut o = serde_json::Map::new();
            for (k, v) in [
                ("id", id),
                ("type", kind),
                ("occurred_at", at),
                ("source", source),
                ("version", version),
                ("data", data),
            ] {
                if let Some(v) = v {
                    o.insert(k.to_owned(), v);
                }
            }
            serde_json::to_vec(&Value::Object(o)).unwrap()
        })
}

fn record() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..600),
        envelope(),
        // Valid events.
        (0i64..50, any::<u64>()).prop_map(|(d, id)| serde_json::to_vec(&json!({
            "id": uuid::Uuid::from_u64_pair(id, d as u64), "type": "stock.adjusted",
            "occurred_at": "2026-11-23T10:05:30Z", "source": "prop",
            "data": {"product_id": "01a20b21-0093-7604-86da-d989b0c4de47", "delta": d + 1, "reason": "received"}
        }))
        .unwrap()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = Event::decode(&bytes);
    }

    #[test]
    fn wrong_envelopes_are_refused_with_a_reason_or_decode_round_trip(raw in envelope()) {
        match Event::decode(&raw) {
            Ok(e) => {
                let again = Event::decode(&serde_json::to_vec(&e).unwrap()).unwrap();
                prop_assert_eq!(again, e);
            }
            Err(r) => prop_assert!(!r.reason.as_str().is_empty()),
        }
    }

    #[test]
    fn every_record_is_applied_dropped_or_dead_lettered(
        batch in prop::collection::vec(record(), 1..40),
        repeat in any::<bool>(),
    ) {
        let mut data = batch;
        if repeat {
            // A producer's re-send within the batch.
            let again = data[0].clone();
            data.push(again);
        }
        let n = data.len() as u64;
        let records: Vec<Record> = data
            .into_iter()
            .enumerate()
            .map(|(i, data)| Record { position: i.to_string(), data })
            .collect();
        let decoded = decode(records);
        // A snapshot where every item the fold needs is absent.
        let needs = needs(&decoded);
        let snapshot = Snapshot {
            stock: needs.products.into_iter().map(|p| (p, None)).collect(),
            profiles: needs.subjects.into_iter().map(|s| (s, None)).collect(),
            marks: needs.marks.into_iter().map(|m| (m, None)).collect(),
        };
        let origin = Origin { stream: "log", shard: "0", now_ms: 1_796_000_000_000 };
        let folded = fold(&decoded, &snapshot, &origin);
        let applied: u64 = folded.applied.values().sum();
        let dead: u64 = folded.dead.values().sum();
        let dups: u64 = folded.duplicates.values().sum();
        prop_assert_eq!(applied + dead + dups, n);
        let letters: Vec<_> = folded
            .ops
            .iter()
            .filter_map(|op| match op {
                TxOp::Put { table: storage::Table::DeadLetters, item, .. } => Some(item),
                _ => None,
            })
            .collect();
        prop_assert_eq!(letters.len() as u64, dead);
        for item in letters {
            prop_assert!(item_size(item) <= MAX_ITEM_BYTES);
        }
    }
}
