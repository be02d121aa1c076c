//! The storage port's conformance suite: the same tests against every adapter.
//!
//! The DynamoDB adapter runs against a real DynamoDB emulator (moto's server)
//! on loopback, whose endpoint `scripts/test.sh` puts in
//! `SHOPSTREAM_TEST_DYNAMODB_ENDPOINT`. Each test gets its own table prefix.

use std::{collections::HashSet, sync::Arc};

use storage::{
    Cond, Key, Query, SortRange, Store, StoreError, Table, TxOp, Update, Value, dynamo::Dynamo,
    embedded::Embedded,
};

type Item = storage::Item;

struct Fixture {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

fn prefix() -> String {
    format!("t{}_", rand::random::<u64>())
}

async fn embedded() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::open(dir.path(), &prefix()).unwrap();
    Fixture {
        store: Arc::new(store),
        _dir: Some(dir),
    }
}

/// Connects to the emulator the test command started, or fails saying how to start one.
pub async fn dynamodb_client() -> aws_sdk_dynamodb::Client {
    let endpoint = std::env::var("SHOPSTREAM_TEST_DYNAMODB_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "SHOPSTREAM_TEST_DYNAMODB_ENDPOINT is not set: run the tests with ./scripts/test.sh, \
             or start moto's server yourself (`moto_server -H 127.0.0.1 -p 5000`) and set \
             SHOPSTREAM_TEST_DYNAMODB_ENDPOINT=http://127.0.0.1:5000"
        )
    });
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test",
            "test",
            None,
            None,
            "conformance",
        ))
        .load()
        .await;
    aws_sdk_dynamodb::Client::new(&config)
}

async fn dynamodb() -> Fixture {
    let store = Dynamo::new(dynamodb_client().await, &prefix());
    store
        .create_tables()
        .await
        .expect("create tables on the emulator");
    Fixture {
        store: Arc::new(store),
        _dir: None,
    }
}

fn item(pk: &str, sk: &str, attrs: &[(&str, Value)]) -> Item {
    let mut i = Key::new(pk, sk).to_item();
    for (k, v) in attrs {
        i.insert((*k).to_owned(), v.clone());
    }
    i
}

fn n(v: i64) -> Value {
    Value::N(v.to_string())
}

fn s(v: &str) -> Value {
    Value::S(v.to_owned())
}

fn num(item: &Item, attr: &str) -> i64 {
    match item.get(attr) {
        Some(Value::N(x)) => x.parse().unwrap(),
        other => panic!("{attr} is not a number: {other:?}"),
    }
}

async fn put_get_delete_round_trip(f: Fixture) {
    let st = &f.store;
    let key = Key::new("a", "1");
    let it = item(
        "a",
        "1",
        &[
            ("name", s("tee")),
            ("n", n(7)),
            ("ok", Value::Bool(true)),
            ("tags", Value::L(vec![s("x"), n(1)])),
        ],
    );
    st.put(Table::Products, it.clone(), None).await.unwrap();
    assert_eq!(
        st.get(Table::Products, &key).await.unwrap(),
        Some(it.clone())
    );
    // Tables are separate namespaces.
    assert_eq!(st.get(Table::Users, &key).await.unwrap(), None);
    let old = st.delete(Table::Products, &key, None).await.unwrap();
    assert_eq!(old, Some(it));
    assert_eq!(st.get(Table::Products, &key).await.unwrap(), None);
    assert_eq!(st.delete(Table::Products, &key, None).await.unwrap(), None);
}

async fn refused_conditional_write_leaves_item_unchanged(f: Fixture) {
    let st = &f.store;
    let key = Key::new("c", "1");
    let original = item("c", "1", &[("v", n(1)), ("name", s("first"))]);
    st.put(Table::Products, original.clone(), Some(Cond::NotExists))
        .await
        .unwrap();

    let again = st
        .put(
            Table::Products,
            item("c", "1", &[("v", n(9))]),
            Some(Cond::NotExists),
        )
        .await;
    assert!(
        matches!(again, Err(StoreError::ConditionFailed)),
        "{again:?}"
    );

    let stale = st
        .update(
            Table::Products,
            &key,
            vec![Update::set("name", "second"), Update::add("v", 1)],
            Some(Cond::eq("v", 5i64)),
        )
        .await;
    assert!(
        matches!(stale, Err(StoreError::ConditionFailed)),
        "{stale:?}"
    );

    let del = st
        .delete(Table::Products, &key, Some(Cond::eq("name", "other")))
        .await;
    assert!(matches!(del, Err(StoreError::ConditionFailed)), "{del:?}");

    let missing = st
        .update(
            Table::Products,
            &Key::new("c", "2"),
            vec![Update::add("v", 1)],
            Some(Cond::Exists),
        )
        .await;
    assert!(
        matches!(missing, Err(StoreError::ConditionFailed)),
        "{missing:?}"
    );
    assert_eq!(
        st.get(Table::Products, &Key::new("c", "2")).await.unwrap(),
        None
    );

    assert_eq!(st.get(Table::Products, &key).await.unwrap(), Some(original));

    // And a condition that holds does write.
    let updated = st
        .update(
            Table::Products,
            &key,
            vec![Update::set("name", "second"), Update::add("v", 1)],
            Some(Cond::And(vec![
                Cond::eq("v", 1i64),
                Cond::Ge("v".into(), n(0)),
            ])),
        )
        .await
        .unwrap();
    assert_eq!(updated.get("name"), Some(&s("second")));
    assert_eq!(num(&updated, "v"), 2);
}

async fn failing_transaction_changes_nothing(f: Fixture) {
    let st = &f.store;
    st.put(Table::Products, item("t", "a", &[("stock", n(5))]), None)
        .await
        .unwrap();
    st.put(Table::Products, item("t", "b", &[("stock", n(1))]), None)
        .await
        .unwrap();

    let reserve = |qa: i64, qb: i64| {
        vec![
            TxOp::Update {
                table: Table::Products,
                key: Key::new("t", "a"),
                updates: vec![Update::add("stock", -qa)],
                cond: Some(Cond::ge("stock", qa)),
            },
            TxOp::Update {
                table: Table::Products,
                key: Key::new("t", "b"),
                updates: vec![Update::add("stock", -qb)],
                cond: Some(Cond::ge("stock", qb)),
            },
            TxOp::Put {
                table: Table::Users,
                item: item("order", "1", &[("qa", n(qa))]),
                cond: Some(Cond::NotExists),
            },
        ]
    };
    let refused = st.transact(reserve(2, 2)).await;
    match refused {
        Err(StoreError::TransactionCanceled { failed }) => assert_eq!(failed, vec![1]),
        other => panic!("expected a cancelled transaction, got {other:?}"),
    }
    assert_eq!(
        num(
            &st.get(Table::Products, &Key::new("t", "a"))
                .await
                .unwrap()
                .unwrap(),
            "stock"
        ),
        5
    );
    assert_eq!(
        num(
            &st.get(Table::Products, &Key::new("t", "b"))
                .await
                .unwrap()
                .unwrap(),
            "stock"
        ),
        1
    );
    assert_eq!(
        st.get(Table::Users, &Key::new("order", "1")).await.unwrap(),
        None
    );

    // A check on a missing item fails the whole transaction too.
    let checked = st
        .transact(vec![
            TxOp::Check {
                table: Table::Products,
                key: Key::new("t", "zzz"),
                cond: Cond::Exists,
            },
            TxOp::Delete {
                table: Table::Products,
                key: Key::new("t", "a"),
                cond: None,
            },
        ])
        .await;
    assert!(
        matches!(checked, Err(StoreError::TransactionCanceled { .. })),
        "{checked:?}"
    );
    assert!(
        st.get(Table::Products, &Key::new("t", "a"))
            .await
            .unwrap()
            .is_some()
    );

    st.transact(reserve(2, 1)).await.unwrap();
    assert_eq!(
        num(
            &st.get(Table::Products, &Key::new("t", "a"))
                .await
                .unwrap()
                .unwrap(),
            "stock"
        ),
        3
    );
    assert_eq!(
        num(
            &st.get(Table::Products, &Key::new("t", "b"))
                .await
                .unwrap()
                .unwrap(),
            "stock"
        ),
        0
    );
    assert!(
        st.get(Table::Users, &Key::new("order", "1"))
            .await
            .unwrap()
            .is_some()
    );

    // The same item twice in one transaction is refused before it is sent.
    let twice = st
        .transact(vec![
            TxOp::Delete {
                table: Table::Products,
                key: Key::new("t", "a"),
                cond: None,
            },
            TxOp::Delete {
                table: Table::Products,
                key: Key::new("t", "a"),
                cond: None,
            },
        ])
        .await;
    assert!(matches!(twice, Err(StoreError::Invalid(_))), "{twice:?}");
}

async fn concurrent_atomic_increments_are_exact(f: Fixture) {
    let key = Key::new("counter", "hits");
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let st = f.store.clone();
            let key = key.clone();
            tokio::spawn(async move {
                for _ in 0..100 {
                    st.add(Table::Meta, &key, "n", 1).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let total = f.store.get(Table::Meta, &key).await.unwrap().unwrap();
    assert_eq!(num(&total, "n"), 3_200);
}

async fn concurrent_optimistic_updates_lose_nothing(f: Fixture) {
    let key = Key::new("doc", "1");
    f.store
        .put(
            Table::Meta,
            item(
                "doc",
                "1",
                &[("version", n(0)), ("writers", Value::L(vec![]))],
            ),
            None,
        )
        .await
        .unwrap();
    let tasks: Vec<_> = (0..32)
        .map(|w| {
            let st = f.store.clone();
            let key = key.clone();
            tokio::spawn(async move {
                let mut conflicts = 0u32;
                loop {
                    let cur = st.get(Table::Meta, &key).await.unwrap().unwrap();
                    let version = num(&cur, "version");
                    let Some(Value::L(mut writers)) = cur.get("writers").cloned() else {
                        panic!()
                    };
                    writers.push(Value::N(w.to_string()));
                    let r = st
                        .update(
                            Table::Meta,
                            &key,
                            vec![
                                Update::Set("writers".into(), Value::L(writers)),
                                Update::add("version", 1),
                            ],
                            Some(Cond::eq("version", version)),
                        )
                        .await;
                    match r {
                        Ok(_) => return conflicts,
                        Err(StoreError::ConditionFailed) => conflicts += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let doc = f.store.get(Table::Meta, &key).await.unwrap().unwrap();
    assert_eq!(num(&doc, "version"), 32);
    let Some(Value::L(writers)) = doc.get("writers") else {
        panic!()
    };
    let distinct: HashSet<String> = writers
        .iter()
        .map(|v| match v {
            Value::N(x) => x.clone(),
            _ => panic!(),
        })
        .collect();
    assert_eq!(
        distinct.len(),
        32,
        "every writer's update is kept exactly once"
    );
    assert_eq!(writers.len(), 32);
}

async fn paging_returns_every_item_once(f: Fixture) {
    let st = &f.store;
    for i in 0..257 {
        st.put(
            Table::Products,
            item("p", &format!("{i:05}"), &[("i", n(i))]),
            None,
        )
        .await
        .unwrap();
    }
    // Neighbouring partitions must not leak in.
    st.put(Table::Products, item("p0", "00000", &[]), None)
        .await
        .unwrap();
    st.put(Table::Products, item("o", "99999", &[]), None)
        .await
        .unwrap();

    for descending in [false, true] {
        let mut seen = Vec::new();
        let mut q = Query {
            limit: 25,
            descending,
            ..Query::default()
        };
        let mut pages = 0;
        loop {
            let page = st.query(Table::Products, "p", &q).await.unwrap();
            pages += 1;
            assert!(page.items.len() <= 25);
            seen.extend(page.items.iter().map(|i| num(i, "i")));
            match page.cursor {
                Some(c) => q.cursor = Some(c),
                None => break,
            }
            assert!(pages < 100, "paging does not end");
        }
        let mut expected: Vec<i64> = (0..257).collect();
        if descending {
            expected.reverse();
        }
        assert_eq!(seen, expected, "descending={descending}");
    }

    let prefixed = st
        .query(
            Table::Products,
            "p",
            &Query {
                range: SortRange::BeginsWith("0010".into()),
                limit: 100,
                ..Query::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        prefixed
            .items
            .iter()
            .map(|i| num(i, "i"))
            .collect::<Vec<_>>(),
        (100..110).collect::<Vec<_>>()
    );
    assert_eq!(prefixed.cursor, None);

    let between = st
        .query(
            Table::Products,
            "p",
            &Query {
                range: SortRange::Between("00010".into(), "00019".into()),
                limit: 5,
                descending: true,
                ..Query::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        between
            .items
            .iter()
            .map(|i| num(i, "i"))
            .collect::<Vec<_>>(),
        vec![19, 18, 17, 16, 15]
    );
    assert!(between.cursor.is_some());

    let empty = st
        .query(Table::Products, "nothing-here", &Query::default())
        .await
        .unwrap();
    assert!(empty.items.is_empty() && empty.cursor.is_none());
}

async fn oversized_item_is_refused_clearly(f: Fixture) {
    let st = &f.store;
    let big = item("big", "1", &[("blob", Value::S("x".repeat(401 * 1024)))]);
    let r = st.put(Table::Products, big.clone(), None).await;
    match r {
        Err(e @ StoreError::ItemTooLarge { .. }) => {
            assert!(e.to_string().contains("item too large"), "{e}");
        }
        other => panic!("expected ItemTooLarge, got {other:?}"),
    }
    let r = st
        .transact(vec![TxOp::Put {
            table: Table::Products,
            item: big,
            cond: None,
        }])
        .await;
    assert!(matches!(r, Err(StoreError::ItemTooLarge { .. })), "{r:?}");
    assert_eq!(
        st.get(Table::Products, &Key::new("big", "1"))
            .await
            .unwrap(),
        None
    );
    // Just under the limit is fine.
    let fits = item("big", "2", &[("blob", Value::S("x".repeat(390 * 1024)))]);
    st.put(Table::Products, fits, None).await.unwrap();
}

async fn long_keys_and_large_transactions_are_refused_as_permanent(f: Fixture) {
    let st = &f.store;
    // A partition key over 2,048 bytes, a sort key over 1,024: refused on
    // every call, before anything is written.
    let long_pk = Key::new("p".repeat(2049), "1");
    let long_sk = Key::new("p", "s".repeat(1025));
    for key in [&long_pk, &long_sk] {
        let r = st.put(Table::Products, key.to_item(), None).await;
        assert!(matches!(r, Err(StoreError::KeyTooLarge { .. })), "{r:?}");
        assert!(r.unwrap_err().is_permanent());
        let r = st.get(Table::Products, key).await;
        assert!(matches!(r, Err(StoreError::KeyTooLarge { .. })), "{r:?}");
        let r = st
            .update(Table::Products, key, vec![Update::add("n", 1)], None)
            .await;
        assert!(matches!(r, Err(StoreError::KeyTooLarge { .. })), "{r:?}");
        let r = st
            .transact(vec![TxOp::Update {
                table: Table::Products,
                key: key.clone(),
                updates: vec![Update::add("n", 1)],
                cond: None,
            }])
            .await;
        assert!(matches!(r, Err(StoreError::KeyTooLarge { .. })), "{r:?}");
    }
    let r = st
        .query(Table::Products, &"p".repeat(2049), &Query::default())
        .await;
    assert!(matches!(r, Err(StoreError::KeyTooLarge { .. })), "{r:?}");
    // Exactly at the limits is fine.
    let at = Key::new("p".repeat(2048), "s".repeat(1024));
    st.put(Table::Products, at.to_item(), None).await.unwrap();
    assert!(st.get(Table::Products, &at).await.unwrap().is_some());

    // Items that each fit but together exceed what one transaction takes:
    // refused whole, nothing written.
    let max = st.max_transaction_bytes();
    let each = 390 * 1024;
    let n = (max / each + 1).min(st.max_transaction_ops());
    if n * each > max {
        let ops: Vec<TxOp> = (0..n)
            .map(|i| TxOp::Put {
                table: Table::Products,
                item: item(
                    "tx-big",
                    &i.to_string(),
                    &[("blob", Value::S("x".repeat(each)))],
                ),
                cond: None,
            })
            .collect();
        let r = st.transact(ops).await;
        assert!(
            matches!(r, Err(StoreError::TransactionTooLarge { .. })),
            "{r:?}"
        );
        assert!(r.unwrap_err().is_permanent());
        let page = st
            .query(Table::Products, "tx-big", &Query::default())
            .await
            .unwrap();
        assert!(page.items.is_empty());
    }
    assert!(
        max >= storage::port::MAX_TRANSACTION_BYTES,
        "a backend takes at least DynamoDB's 4 MB"
    );
    // Races and outages are not permanent.
    assert!(!StoreError::TransactionCanceled { failed: vec![0] }.is_permanent());
    assert!(!StoreError::Unavailable("x".into()).is_permanent());
}

/// Many reads at once: every key answered in the order asked, missing items
/// as `None`, a key asked twice answered twice, more keys than one DynamoDB
/// `BatchGetItem` takes (100) and than the embedded store reads inline
/// (256), and what a write just did is seen.
async fn many_reads_answer_every_key_in_order(f: Fixture) {
    let st = &f.store;
    for i in (0..300).step_by(2) {
        st.put(
            Table::Inventory,
            item("inv", &format!("{i:04}"), &[("n", n(i))]),
            None,
        )
        .await
        .unwrap();
    }
    let mut keys: Vec<Key> = (0..300)
        .rev()
        .map(|i| Key::new("inv", format!("{i:04}")))
        .collect();
    keys.push(Key::new("inv", "0010"));
    let got = st.get_many(Table::Inventory, &keys).await.unwrap();
    assert_eq!(got.len(), keys.len());
    for (k, g) in keys.iter().zip(&got) {
        let i: i64 = k.sk.parse().unwrap();
        match g {
            Some(it) => {
                assert_eq!(i % 2, 0, "{k:?} was never written");
                assert_eq!(it.get("n"), Some(&n(i)));
                assert_eq!(Key::of(it).unwrap(), *k);
            }
            None => assert_eq!(i % 2, 1, "{k:?} was written"),
        }
    }
    st.update(
        Table::Inventory,
        &Key::new("inv", "0001"),
        vec![Update::add("n", 5)],
        None,
    )
    .await
    .unwrap();
    let again = st
        .get_many(Table::Inventory, &[Key::new("inv", "0001")])
        .await
        .unwrap();
    assert_eq!(again[0].as_ref().and_then(|i| i.get("n")), Some(&n(5)));
    assert!(st.get_many(Table::Inventory, &[]).await.unwrap().is_empty());
    // Tables are separate namespaces.
    let other = st.get_many(Table::Products, &keys[..3]).await.unwrap();
    assert!(other.iter().all(Option::is_none));
}

async fn create_tables_is_idempotent(f: Fixture) {
    f.store.create_tables().await.unwrap();
    f.store.create_tables().await.unwrap();
    f.store.ping().await.unwrap();
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod embedded_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    super::$test(super::embedded().await).await;
                }
            )*
        }
        mod dynamodb_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    super::$test(super::dynamodb().await).await;
                }
            )*
        }
    };
}

conformance!(
    put_get_delete_round_trip,
    refused_conditional_write_leaves_item_unchanged,
    failing_transaction_changes_nothing,
    concurrent_atomic_increments_are_exact,
    concurrent_optimistic_updates_lose_nothing,
    paging_returns_every_item_once,
    oversized_item_is_refused_clearly,
    long_keys_and_large_transactions_are_refused_as_permanent,
    many_reads_answer_every_key_in_order,
    create_tables_is_idempotent,
);

#[test]
fn a_second_process_gets_a_clear_in_use_error() {
    // redb's file lock is per process; a second handle in this process stands in for it.
    let dir = tempfile::tempdir().unwrap();
    let _first = Embedded::open(dir.path(), "").unwrap();
    let second = Embedded::open(dir.path(), "").unwrap_err();
    assert!(matches!(second, StoreError::InUse { .. }), "{second:?}");
    assert!(
        second
            .to_string()
            .contains("in use by another shopstream process")
    );
}
