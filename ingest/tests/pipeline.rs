//! The pipeline on a real store (embedded, and DynamoDB through moto's
//! server): effects are exactly once under replays and lost leases, bad
//! records are dead-lettered while the good ones around them apply, stock
//! never goes negative from a purchase, and low-stock alerts fire once per
//! crossing.

use std::{sync::Arc, time::Duration};

use ingest::{Leases, lease::Held};
use processors::{
    Bus, Change, CommitError, Pipeline, Record,
    state::{ALL, Counters, Stock, minute_key, stock_key, trend_hour_key},
};
use serde_json::{Value, json};
use storage::{Query, Store, Table, dynamo::Dynamo, embedded::Embedded, from_item};

struct Fixture {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

fn prefix() -> String {
    format!("p{}_", uuid::Uuid::new_v4().simple())
}

async fn embedded() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    Fixture {
        store: Arc::new(Embedded::open(dir.path(), &prefix()).unwrap()),
        _dir: Some(dir),
    }
}

async fn dynamodb() -> Fixture {
    let endpoint = std::env::var("SHOPSTREAM_TEST_DYNAMODB_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "SHOPSTREAM_TEST_DYNAMODB_ENDPOINT is not set: run the tests with ./scripts/test.sh, or start \
             moto's server (`moto_server -H 127.0.0.1 -p 5000`) and set SHOPSTREAM_TEST_DYNAMODB_ENDPOINT=http://127.0.0.1:5000"
        )
    });
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "t",
        ))
        .load()
        .await;
    let store = Dynamo::new(aws_sdk_dynamodb::Client::new(&config), &prefix());
    store.create_tables().await.unwrap();
    Fixture {
        store: Arc::new(store),
        _dir: None,
    }
}

const P1: &str = "01a20b21-0093-7604-86da-d989b0c4de47";
const P2: &str = "01a20b21-0093-7604-86da-d989b0c4de48";

fn event(kind: &str, data: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": uuid::Uuid::now_v7(), "type": kind, "occurred_at": "2026-11-23T10:05:30Z",
        "source": "test", "data": data
    }))
    .unwrap()
}

fn records(from: u64, data: Vec<Vec<u8>>) -> Vec<Record> {
    data.into_iter()
        .enumerate()
        .map(|(i, data)| Record {
            position: (from + i as u64).to_string(),
            data,
        })
        .collect()
}

async fn stock(store: &dyn Store, id: &str) -> Stock {
    from_item(
        store
            .get(Table::Inventory, &stock_key(id))
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap()
}

/// The shop's counters of the test events' minute, or a product's of their
/// hour.
async fn counters(store: &dyn Store, scope: &str) -> Counters {
    let key = if scope == ALL {
        minute_key(ALL, "2026-11-23T10:05")
    } else {
        trend_hour_key("2026-11-23T10", scope)
    };
    match store.get(Table::Analytics, &key).await.unwrap() {
        Some(item) => Counters::from_item(&item),
        None => Counters::default(),
    }
}

async fn lease(leases: &Leases, shard: &str) -> Held {
    leases.ensure("s", shard, vec![]).await.unwrap();
    let l = leases.get("s", shard).await.unwrap().unwrap();
    leases
        .take("s", shard, &l)
        .await
        .unwrap()
        .expect("lease taken")
}

async fn replay_and_zombie_commits_are_refused(f: Fixture) {
    let bus = Bus::default();
    let pipeline = Pipeline::new(f.store.clone(), bus.clone());
    let a = Leases::new(f.store.clone(), "worker-a", Duration::from_secs(10));
    let b = Leases::new(f.store.clone(), "worker-b", Duration::from_secs(10));
    let mut held_a = lease(&a, "0").await;

    let batch = records(
        0,
        vec![
            event(
                "stock.adjusted",
                json!({"product_id": P1, "delta": 10, "reason": "received"}),
            ),
            event(
                "browse.viewed",
                json!({"session_id": "s1", "product_id": P1}),
            ),
            event(
                "basket.added",
                json!({"session_id": "s1", "product_id": P1, "quantity": 1}),
            ),
        ],
    );
    let applied = pipeline
        .apply(&held_a.checkpoint(), batch.clone())
        .await
        .unwrap();
    assert_eq!(applied.checkpoint.as_deref(), Some("2"));
    assert_eq!(applied.events, 3);
    assert_eq!(stock(f.store.as_ref(), P1).await.on_hand, 10);

    // The same batch again, from the same starting checkpoint (a worker that
    // crashed after committing and did not see its commit): refused.
    let replay = pipeline.apply(&held_a.checkpoint(), batch.clone()).await;
    assert!(
        matches!(replay, Err(CommitError::Fenced { .. })),
        "{replay:?}"
    );
    held_a.lease.checkpoint = applied.checkpoint.clone();

    // B takes the lease while A still holds a batch: A's commit is refused.
    let seen = b.get("s", "0").await.unwrap().unwrap();
    let held_b = b
        .take("s", "0", &seen)
        .await
        .unwrap()
        .expect("b takes over");
    assert_eq!(held_b.lease.checkpoint.as_deref(), Some("2"));
    let next = records(
        3,
        vec![event(
            "stock.adjusted",
            json!({"product_id": P1, "delta": 5, "reason": "received"}),
        )],
    );
    let zombie = pipeline.apply(&held_a.checkpoint(), next.clone()).await;
    assert!(
        matches!(zombie, Err(CommitError::Fenced { .. })),
        "{zombie:?}"
    );
    assert!(
        !a.renew(&mut held_a).await.unwrap(),
        "a cannot renew a lease it lost"
    );
    pipeline.apply(&held_b.checkpoint(), next).await.unwrap();

    let s = stock(f.store.as_ref(), P1).await;
    assert_eq!(
        (s.on_hand, s.available),
        (15, 15),
        "each adjustment applied exactly once"
    );
    let c = counters(f.store.as_ref(), P1).await;
    assert_eq!((c.views, c.basket_adds), (1, 1));
    let shop = counters(f.store.as_ref(), "all").await;
    assert_eq!((shop.views, shop.basket_adds), (1, 1));
}

async fn bad_records_are_dead_lettered_and_the_rest_applies(f: Fixture) {
    let pipeline = Pipeline::new(f.store.clone(), Bus::default());
    let leases = Leases::new(f.store.clone(), "w", Duration::from_secs(10));
    let held = lease(&leases, "0").await;
    let batch = records(
        0,
        vec![
            b"{not json".to_vec(),
            event(
                "stock.adjusted",
                json!({"product_id": P1, "delta": 4, "reason": "received"}),
            ),
            event("stock.teleported", json!({"product_id": P1})),
            event(
                "stock.adjusted",
                json!({"product_id": P1, "reason": "received"}),
            ),
            event(
                "basket.added",
                json!({"user_id": "u", "product_id": P1, "quantity": -1}),
            ),
            vec![b'x'; domain::event::MAX_EVENT_BYTES + 1],
            event(
                "stock.adjusted",
                json!({"product_id": P1, "delta": 3, "reason": "received"}),
            ),
        ],
    );
    let applied = pipeline.apply(&held.checkpoint(), batch).await.unwrap();
    assert_eq!((applied.events, applied.dead_letters), (2, 5));
    assert_eq!(
        applied.checkpoint.as_deref(),
        Some("6"),
        "the shard moves past bad records"
    );
    assert_eq!(stock(f.store.as_ref(), P1).await.on_hand, 7);
    let page = f
        .store
        .query(Table::DeadLetters, "dead", &Query::default())
        .await
        .unwrap();
    let mut reasons: Vec<(String, String)> = page
        .items
        .into_iter()
        .map(|i| {
            let d: processors::state::DeadLetter = from_item(i).unwrap();
            (d.position, d.reason)
        })
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            ("0".into(), "malformed_json".into()),
            ("2".into(), "unknown_type".into()),
            ("3".into(), "invalid_payload".into()),
            ("4".into(), "negative_quantity".into()),
            ("5".into(), "oversized".into()),
        ]
    );
}

async fn purchases_never_drive_stock_negative_and_counts_respect_sequence(f: Fixture) {
    let pipeline = Pipeline::new(f.store.clone(), Bus::default());
    let leases = Leases::new(f.store.clone(), "w", Duration::from_secs(10));
    let mut held = lease(&leases, "0").await;
    let mut at = 0;
    let mut apply = async |data: Vec<Vec<u8>>| {
        let n = data.len() as u64;
        let a = pipeline
            .apply(&held.checkpoint(), records(at, data))
            .await
            .unwrap();
        held.lease.checkpoint = a.checkpoint;
        at += n;
    };
    apply(vec![
        event("stock.counted", json!({"product_id": P1, "on_hand": 5, "sequence": 10})),
        event("stock.counted", json!({"product_id": P1, "on_hand": 99, "sequence": 9})),
        event("purchase.completed", json!({"order_id": "o1", "user_id": "u1", "total": "39.96", "currency": "EUR",
            "lines": [{"product_id": P1, "quantity": 3, "unit_price": "9.99"}, {"product_id": P2, "quantity": 1, "unit_price": "9.99"}]})),
    ])
    .await;
    let s1 = stock(f.store.as_ref(), P1).await;
    assert_eq!(
        (s1.on_hand, s1.available, s1.backorder, s1.counted_seq),
        (2, 2, 0, 10),
        "the older count is ignored"
    );
    let s2 = stock(f.store.as_ref(), P2).await;
    assert_eq!(
        (s2.on_hand, s2.backorder),
        (0, 1),
        "no stock: a backorder, not a negative count"
    );
    apply(vec![event(
        "purchase.completed",
        json!({"order_id": "o2", "user_id": "u1", "total": "49.95", "currency": "EUR",
        "lines": [{"product_id": P1, "quantity": 5, "unit_price": "9.99"}]}),
    )])
    .await;
    let s1 = stock(f.store.as_ref(), P1).await;
    assert_eq!((s1.on_hand, s1.backorder), (0, 3));
    let shop = counters(f.store.as_ref(), "all").await;
    assert_eq!((shop.purchases, shop.units), (2, 9));
    assert_eq!(shop.revenue.to_string(), "89.91");
}

async fn low_stock_alerts_fire_once_per_crossing(f: Fixture) {
    let bus = Bus::default();
    let mut changes = bus.subscribe();
    let pipeline = Pipeline::new(f.store.clone(), bus);
    let leases = Leases::new(f.store.clone(), "w", Duration::from_secs(10));
    let mut held = lease(&leases, "0").await;
    let product = json!({"id": P1, "sku": "A", "name": "Tee", "price": "1", "currency": "EUR", "category": "c",
        "supplier_id": "acme", "low_stock_threshold": 5, "created_at": "2026-11-23T10:00:00Z",
        "updated_at": "2026-11-23T10:00:00Z", "version": 1, "attributes": {}, "description": ""});
    let adjust = |d: i64| {
        event(
            "stock.adjusted",
            json!({"product_id": P1, "delta": d, "reason": "r"}),
        )
    };
    let steps: Vec<Vec<Vec<u8>>> = vec![
        vec![event("product.upserted", product), adjust(10)], // 10: at or above, armed
        vec![adjust(-6)],                                     // 4: crossing, alert
        vec![adjust(-1)],                                     // 3: still below, no alert
        vec![adjust(10)],                                     // 13: re-armed
        vec![adjust(-12)],                                    // 1: crossing, alert
    ];
    let mut at = 0;
    for step in steps {
        let n = step.len() as u64;
        let a = pipeline
            .apply(&held.checkpoint(), records(at, step))
            .await
            .unwrap();
        held.lease.checkpoint = a.checkpoint;
        at += n;
    }
    let alerts = f
        .store
        .query(Table::Alerts, "supplier#acme", &Query::default())
        .await
        .unwrap()
        .items;
    let available: Vec<i64> = alerts
        .into_iter()
        .map(|i| from_item::<processors::state::Alert>(i).unwrap().available)
        .collect();
    assert_eq!(available, [4, 1]);
    let mut pushed = Vec::new();
    while let Ok(c) = changes.try_recv() {
        if let Change::LowStockAlert(a) = c {
            pushed.push(a.available);
        }
    }
    assert_eq!(pushed, [4, 1], "each alert is also published on the bus");
    // The sweeper finds nothing more to raise.
    processors::pipeline::sweep_alerts(f.store.as_ref(), &Bus::default())
        .await
        .unwrap();
    assert_eq!(
        f.store
            .query(Table::Alerts, "supplier#acme", &Query::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
}

async fn dead_letters(store: &dyn Store) -> Vec<processors::state::DeadLetter> {
    let mut out = Vec::new();
    let mut q = Query::default();
    loop {
        let page = store.query(Table::DeadLetters, "dead", &q).await.unwrap();
        out.extend(page.items.into_iter().map(|i| from_item(i).unwrap()));
        match page.cursor {
            Some(c) => q.cursor = Some(c),
            None => return out,
        }
    }
}

/// A valid record whose effects the store refuses for good is isolated
/// from its batch and dead-lettered as `unprocessable` with the store's
/// error; every other record of the batch commits and the shard moves on.
async fn a_record_the_store_refuses_is_isolated_and_the_rest_commits(f: Fixture) {
    // The store refuses, for good, every transaction writing P2's stock
    // (as DynamoDB refuses an item or a key too large).
    let refused = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = refused.clone();
    let store: Arc<dyn Store> =
        Arc::new(storage::faulty::Faulty::new(f.store.clone(), move |ops| {
            storage::faulty::touches(ops, Table::Inventory, &stock_key(P2)).then(|| {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                storage::StoreError::ItemTooLarge {
                    size: 500_000,
                    limit: storage::port::MAX_ITEM_BYTES,
                }
            })
        }));
    let pipeline = Pipeline::new(store.clone(), Bus::default());
    let leases = Leases::new(store.clone(), "w", Duration::from_secs(10));
    let held = lease(&leases, "0").await;
    let mut data = Vec::new();
    for i in 0..40 {
        let product = if i == 23 { P2 } else { P1 };
        data.push(event(
            "stock.adjusted",
            json!({"product_id": product, "delta": 1, "reason": "received"}),
        ));
    }
    let applied = pipeline
        .apply(&held.checkpoint(), records(0, data))
        .await
        .unwrap();
    assert_eq!(applied.checkpoint.as_deref(), Some("39"));
    assert_eq!((applied.events, applied.dead_letters), (39, 1));
    assert_eq!(stock(f.store.as_ref(), P1).await.on_hand, 39);
    assert!(
        f.store
            .get(Table::Inventory, &stock_key(P2))
            .await
            .unwrap()
            .is_none()
    );
    let dead = dead_letters(f.store.as_ref()).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].reason, "unprocessable");
    assert_eq!(dead[0].position, "23");
    assert!(
        dead[0].detail.contains("item too large"),
        "{}",
        dead[0].detail
    );
    assert!(
        dead[0].is_whole(),
        "a valid record is kept whole for a replay"
    );
    // Halving found it in about log2(40) refusals, not one per record.
    let refusals = refused.load(std::sync::atomic::Ordering::SeqCst);
    assert!((1..=8).contains(&refusals), "{refusals} refusals");
}

/// Dead letters are bounded: an oversized record keeps a prefix with its
/// length and SHA-256, so it fits; batches whose records together pass the
/// store's transaction size (DynamoDB: 4 MB) are split by bytes, and
/// everything commits.
async fn huge_and_many_bad_records_never_stop_the_shard(f: Fixture) {
    use sha2::Digest;
    let pipeline = Pipeline::new(f.store.clone(), Bus::default());
    let leases = Leases::new(f.store.clone(), "w", Duration::from_secs(10));
    let held = lease(&leases, "0").await;
    let huge: Vec<u8> = (0..350 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    let mut data = vec![huge.clone()];
    // 80 malformed records just under the event limit: kept whole, about
    // 80 KB each as a dead letter, 6 MB together.
    for i in 0..80u8 {
        let mut r = vec![b'{'; 60 * 1024];
        r[1] = i;
        data.push(r);
    }
    data.push(event(
        "stock.adjusted",
        json!({"product_id": P1, "delta": 5, "reason": "received"}),
    ));
    let applied = pipeline
        .apply(&held.checkpoint(), records(0, data))
        .await
        .unwrap();
    assert_eq!(applied.checkpoint.as_deref(), Some("81"));
    assert_eq!((applied.events, applied.dead_letters), (1, 81));
    if f.store.max_transaction_bytes() < 6 * 1024 * 1024 {
        assert!(
            applied.commits >= 2,
            "split into {} commits",
            applied.commits
        );
    }
    assert_eq!(stock(f.store.as_ref(), P1).await.on_hand, 5);
    let dead = dead_letters(f.store.as_ref()).await;
    assert_eq!(dead.len(), 81);
    let big = dead.iter().find(|d| d.position == "0").unwrap();
    assert_eq!(big.reason, "oversized");
    assert_eq!(big.raw_len, huge.len() as u64);
    assert_eq!(big.raw, huge[..processors::state::DEAD_LETTER_PREFIX_BYTES]);
    assert_eq!(big.raw_sha256, hex::encode(sha2::Sha256::digest(&huge)));
    assert!(!big.is_whole());
    assert!(
        dead.iter()
            .filter(|d| d.position != "0")
            .all(|d| d.is_whole() && d.reason == "malformed_json" && d.raw.len() == 60 * 1024)
    );
}

/// A producer's re-sends: the same event id in one batch, in a later batch
/// and on another shard applies once — stock, counters, behaviour and
/// purchases alike — and its re-sends are counted as duplicates.
async fn each_event_id_applies_once_across_batches_and_shards(f: Fixture) {
    let pipeline = Pipeline::new(f.store.clone(), Bus::default());
    let leases = Leases::new(f.store.clone(), "w", Duration::from_secs(10));
    let mut shard0 = lease(&leases, "0").await;
    let mut shard1 = lease(&leases, "1").await;
    let adjust = event(
        "stock.adjusted",
        json!({"product_id": P1, "delta": 10, "reason": "received"}),
    );
    let view = event(
        "browse.viewed",
        json!({"session_id": "s-dup", "product_id": P1}),
    );
    let purchase = event(
        "purchase.completed",
        json!({"order_id": "o-dup", "user_id": "u-dup",
            "lines": [{"product_id": P1, "quantity": 2, "unit_price": "2.50"}],
            "total": "5.00", "currency": "EUR"}),
    );
    let till = event(
        "purchase.completed",
        json!({"order_id": "till-dup",
            "lines": [{"product_id": P1, "quantity": 1, "unit_price": "2.50"}],
            "total": "2.50", "currency": "EUR"}),
    );
    let all = vec![adjust.clone(), view.clone(), purchase.clone(), till.clone()];
    // In one batch, twice.
    let mut first = all.clone();
    first.extend(all.clone());
    let applied = pipeline
        .apply(&shard0.checkpoint(), records(0, first))
        .await
        .unwrap();
    assert_eq!((applied.events, applied.duplicates), (4, 4));
    shard0.lease.checkpoint = applied.checkpoint;
    // In a later batch of the same shard.
    let applied = pipeline
        .apply(&shard0.checkpoint(), records(8, all.clone()))
        .await
        .unwrap();
    assert_eq!((applied.events, applied.duplicates), (0, 4));
    // On another shard (re-sent under another partition key, or after a
    // reshard).
    let applied = pipeline
        .apply(&shard1.checkpoint(), records(0, all))
        .await
        .unwrap();
    assert_eq!((applied.events, applied.duplicates), (0, 4));

    let s = stock(f.store.as_ref(), P1).await;
    assert_eq!(s.on_hand, 10 - 2 - 1);
    let c = counters(f.store.as_ref(), ALL).await;
    assert_eq!((c.views, c.purchases, c.units), (1, 2, 3));
    let profile = processors::state::Profile::from_item(
        f.store
            .get(
                Table::Behaviour,
                &processors::state::profile_key("session:s-dup"),
            )
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(profile.views, 1);
    // A new id for the same change applies: only re-sends are dropped.
    shard1.lease.checkpoint = applied.checkpoint;
    let again = event(
        "stock.adjusted",
        json!({"product_id": P1, "delta": 10, "reason": "received"}),
    );
    let applied = pipeline
        .apply(&shard1.checkpoint(), records(4, vec![again]))
        .await
        .unwrap();
    assert_eq!((applied.events, applied.duplicates), (1, 0));
    assert_eq!(stock(f.store.as_ref(), P1).await.on_hand, 17);
}

/// Shards fold one after another on the state the fold before left, before
/// its commit is known; a fold never commits on such a state unless that
/// commit went through. Here shard `a`'s fold builds on a stock item that
/// someone else changed meanwhile (so its commit fails), and shard `b`
/// folds on `a`'s effects while `a`'s commit is in flight: if `b` committed
/// on them (the versions match: the other writer's change moved the item
/// to the very version `a` expected to write), `a`'s event id would be
/// stored as applied with its effect lost.
async fn a_fold_never_commits_on_a_failed_folds_effects(f: Fixture) {
    use std::sync::atomic::{AtomicU32, Ordering};
    let slowed = Arc::new(AtomicU32::new(0));
    let store: Arc<dyn Store> = Arc::new(storage::faulty::Faulty::new(f.store.clone(), {
        let slowed = slowed.clone();
        move |ops| {
            // Shard a's second commit (its first try) takes its time.
            let fence = storage::Key::new("s", "a");
            if storage::faulty::touches(ops, Table::Leases, &fence)
                && slowed.fetch_add(1, Ordering::SeqCst) == 1
            {
                std::thread::sleep(Duration::from_millis(500));
            }
            None
        }
    }));
    let pipeline = Pipeline::new(store.clone(), Bus::default());
    let leases = Leases::new(store.clone(), "w", Duration::from_secs(10));
    let mut a = lease(&leases, "a").await;
    let b = lease(&leases, "b").await;
    let adjust = |delta: i64| {
        event(
            "stock.adjusted",
            json!({"product_id": P1, "delta": delta, "reason": "received"}),
        )
    };
    let applied = pipeline
        .apply(&a.checkpoint(), records(0, vec![adjust(10)]))
        .await
        .unwrap();
    a.lease.checkpoint = applied.checkpoint;
    // Another writer (the API, another instance) moves the item on.
    f.store
        .update(
            Table::Inventory,
            &stock_key(P1),
            vec![
                storage::Update::add("on_hand", 100),
                storage::Update::add("available", 100),
                storage::Update::add("version", 1),
            ],
            None,
        )
        .await
        .unwrap();
    let first = {
        let (pipeline, cp) = (pipeline.clone(), a.checkpoint());
        tokio::spawn(async move { pipeline.apply(&cp, records(1, vec![adjust(1)])).await })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while slowed.load(Ordering::SeqCst) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "shard a never committed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    pipeline
        .apply(&b.checkpoint(), records(0, vec![adjust(1000)]))
        .await
        .unwrap();
    let applied = first.await.unwrap().unwrap();
    assert_eq!((applied.events, applied.duplicates), (1, 0));
    let s = stock(f.store.as_ref(), P1).await;
    assert_eq!(
        (s.on_hand, s.available),
        (1111, 1111),
        "every adjustment applied once, on top of the other writer's"
    );
}

macro_rules! on_both_stores {
    ($($test:ident),* $(,)?) => {
        mod embedded_store {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $test() { super::$test(super::embedded().await).await; } )*
        }
        mod dynamodb_store {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $test() { super::$test(super::dynamodb().await).await; } )*
        }
    };
}

on_both_stores!(
    replay_and_zombie_commits_are_refused,
    bad_records_are_dead_lettered_and_the_rest_applies,
    purchases_never_drive_stock_negative_and_counts_respect_sequence,
    low_stock_alerts_fire_once_per_crossing,
    a_record_the_store_refuses_is_isolated_and_the_rest_commits,
    huge_and_many_bad_records_never_stop_the_shard,
    each_event_id_applies_once_across_batches_and_shards,
    a_fold_never_commits_on_a_failed_folds_effects,
);

async fn anonymous_behaviour_merges_into_the_user(f: Fixture) {
    let pipeline = Pipeline::new(f.store.clone(), Bus::default());
    let leases = Leases::new(f.store.clone(), "w", Duration::from_secs(10));
    let held = lease(&leases, "0").await;
    let at = |s: &str| format!("2026-11-23T10:05:{s}Z");
    let mk = |kind: &str, data: Value, t: &str| {
        serde_json::to_vec(&json!({"id": uuid::Uuid::now_v7(), "type": kind, "occurred_at": at(t), "source": "t", "data": data})).unwrap()
    };
    pipeline
        .apply(
            &held.checkpoint(),
            records(
                0,
                vec![
                    mk(
                        "browse.viewed",
                        json!({"user_id": "u1", "product_id": P1}),
                        "01",
                    ),
                    mk(
                        "browse.viewed",
                        json!({"session_id": "s9", "product_id": P2}),
                        "02",
                    ),
                    mk(
                        "basket.added",
                        json!({"session_id": "s9", "product_id": P2, "quantity": 1}),
                        "03",
                    ),
                ],
            ),
        )
        .await
        .unwrap();
    let session = processors::state::profile_key("session:s9");
    let user = processors::state::profile_key("user:u1");
    assert!(
        processors::pipeline::merge_profiles(f.store.as_ref(), "session:s9", "user:u1")
            .await
            .unwrap()
    );
    assert!(
        f.store
            .get(Table::Behaviour, &session)
            .await
            .unwrap()
            .is_none(),
        "the session's profile is gone"
    );
    let p = processors::state::Profile::from_item(
        f.store.get(Table::Behaviour, &user).await.unwrap().unwrap(),
    )
    .unwrap();
    let views: Vec<&str> = p
        .recent_views
        .iter()
        .map(|t| t.product_id.as_str())
        .collect();
    assert_eq!(views, [P2, P1], "newest first across both");
    assert_eq!((p.views, p.adds), (2, 1));
    assert!(
        !processors::pipeline::merge_profiles(f.store.as_ref(), "session:s9", "user:u1")
            .await
            .unwrap()
    );
}

mod merge {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_store() {
        super::anonymous_behaviour_merges_into_the_user(super::embedded().await).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dynamodb_store() {
        super::anonymous_behaviour_merges_into_the_user(super::dynamodb().await).await;
    }
}

/// A batch larger than a transaction is committed in parts (every item
/// written once for the whole batch). A crash after some parts landed, and
/// a new worker's replay of the batch (first with too few records, then
/// with more than the batch), leave every effect applied exactly once:
/// stock, the shop's and each product's counters, profiles, the anonymous
/// purchases' seen marks, the duplicates (within the batch and of an
/// earlier one) and the dead letter. `crash_at`: the transaction (after
/// the earlier batch) that fails as a crash would; 0 for none.
async fn a_batch_cut_between_its_parts_applies_once(f: Fixture, crash_at: usize) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let armed = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let (arm, seen) = (armed.clone(), calls.clone());
    let store: Arc<dyn Store> = Arc::new(
        storage::faulty::Faulty::new(f.store.clone(), move |_| {
            let n = if arm.load(Ordering::SeqCst) {
                seen.fetch_add(1, Ordering::SeqCst) + 1
            } else {
                0
            };
            (n == crash_at && n > 0).then(|| storage::StoreError::Unavailable("crashed".into()))
        })
        .with_max_ops(8),
    );
    let bus = Bus::default();
    let worker = Leases::new(store.clone(), "worker-a", Duration::from_secs(10));
    let held = lease(&worker, "0").await;
    let products: Vec<String> = (0..12u64)
        .map(|i| format!("01a20b21-0093-7604-86da-{:012x}", 0xd989_b0c4_e000 + i))
        .collect();
    let earlier: Vec<Vec<u8>> = products
        .iter()
        .map(|p| {
            event(
                "stock.adjusted",
                json!({"product_id": p, "delta": 50, "reason": "received"}),
            )
        })
        .collect();
    let crashed = Pipeline::new(store.clone(), bus.clone());
    let applied = crashed
        .apply(&held.checkpoint(), records(0, earlier.clone()))
        .await
        .unwrap();
    assert_eq!(applied.events, 12);
    let held = Held {
        lease: ingest::Lease {
            checkpoint: applied.checkpoint,
            ..held.lease
        },
        ..held
    };

    let (mut views, mut units) = (vec![0i64; 12], vec![0i64; 12]);
    let mut batch = Vec::new();
    for i in 0..60 {
        let p = i % 12;
        batch.push(event(
            "browse.viewed",
            json!({"session_id": format!("s{}", i % 8), "product_id": products[p]}),
        ));
        views[p] += 1;
    }
    for (i, p) in products.iter().enumerate() {
        batch.push(event(
            "basket.added",
            json!({"session_id": format!("s{}", i % 8), "product_id": p, "quantity": 1}),
        ));
    }
    for j in 0..10 {
        let (a, b) = (j % 12, (j + 5) % 12);
        let mut data = json!({"order_id": format!("o{j}"), "total": "30.00", "currency": "EUR",
            "lines": [{"product_id": products[a], "quantity": 1, "unit_price": "10.00"},
                      {"product_id": products[b], "quantity": 2, "unit_price": "10.00"}]});
        if j % 3 != 0 {
            data["user_id"] = json!(format!("u{}", j % 4));
        }
        batch.push(event("purchase.completed", data));
        units[a] += 1;
        units[b] += 2;
    }
    // A producer's retry within the batch, one of the earlier batch, and a
    // record that is no event.
    let again = batch[5].clone();
    batch.insert(30, again);
    batch.insert(40, earlier[3].clone());
    batch.insert(50, b"{not json".to_vec());
    let full = records(12, batch);
    let end = full.last().unwrap().position.clone();

    armed.store(true, Ordering::SeqCst);
    let after = crashed.apply(&held.checkpoint(), full.clone()).await;
    let parts = calls.load(Ordering::SeqCst);
    let lease_item = || async {
        store
            .get(Table::Leases, &storage::Key::new("s", "0"))
            .await
            .unwrap()
            .unwrap()
    };
    let mut checkpoint = held.checkpoint();
    if crash_at == 0 {
        let applied = after.unwrap();
        assert!(parts > 2, "the batch was committed in {parts} transactions");
        assert_eq!(
            (applied.events, applied.duplicates, applied.dead_letters),
            (82, 2, 1)
        );
        assert_eq!(applied.checkpoint.as_deref(), Some(end.as_str()));
    } else {
        assert!(
            matches!(
                after,
                Err(CommitError::Store(storage::StoreError::Unavailable(_)))
            ),
            "{after:?}"
        );
        assert!(
            lease_item().await.contains_key("pending"),
            "parts landed: the lease notes the batch"
        );
        // A new worker process (nothing in memory) takes the lease and reads
        // the shard from its checkpoint, which the crash did not move.
        let l = worker.get("s", "0").await.unwrap().unwrap();
        assert_eq!(l.checkpoint.as_deref(), Some("11"));
        let taken = worker.take("s", "0", &l).await.unwrap().unwrap();
        checkpoint = taken.checkpoint();
        let replay = Pipeline::new(store.clone(), bus.clone());
        match replay.apply(&checkpoint, full[..20].to_vec()).await {
            Err(CommitError::Incomplete { until, .. }) => assert_eq!(until, end),
            other => panic!("a replay that ends before the batch must read on: {other:?}"),
        }
        let mut longer = full.clone();
        longer.extend(records(
            12 + full.len() as u64,
            vec![event(
                "browse.viewed",
                json!({"session_id": "s0", "product_id": products[0]}),
            )],
        ));
        views[0] += 1;
        let applied = replay.apply(&checkpoint, longer.clone()).await.unwrap();
        assert_eq!(
            applied.checkpoint.as_deref(),
            Some(longer.last().unwrap().position.as_str())
        );
        // Zombie: the crashed worker's lease is gone.
        assert!(matches!(
            crashed.apply(&held.checkpoint(), full.clone()).await,
            Err(CommitError::Fenced { .. })
        ));
    }
    assert!(
        !lease_item().await.contains_key("pending"),
        "the note is gone"
    );

    let s = f.store.as_ref();
    for (i, p) in products.iter().enumerate() {
        let st = stock(s, p).await;
        assert_eq!(
            (st.on_hand, st.available, st.backorder),
            (50 - units[i], 50 - units[i], 0),
            "stock of product {i}"
        );
        let c = counters(s, p).await;
        assert_eq!((c.views, c.units), (views[i], units[i]), "counters of {i}");
    }
    let shop = counters(s, ALL).await;
    let total_views: i64 = views.iter().sum();
    assert_eq!(
        (shop.views, shop.basket_adds, shop.purchases, shop.units),
        (total_views, 12, 10, 30)
    );
    assert_eq!(shop.revenue.to_string(), "300");
    for k in 0..8usize {
        let p = processors::read::profile(s, &format!("session:s{k}"))
            .await
            .unwrap();
        let v = (0..60).filter(|i| i % 8 == k).count() as u64 + u64::from(k == 0 && crash_at > 0);
        let adds = (0..12).filter(|i| i % 8 == k).count() as u64;
        assert_eq!((p.views, p.adds), (v, adds), "profile of s{k}");
    }
    for u in 0..4 {
        let p = processors::read::profile(s, &format!("user:u{u}"))
            .await
            .unwrap();
        let orders = (0..10).filter(|j| j % 3 != 0 && j % 4 == u).count() as u64;
        assert_eq!(p.orders, orders, "orders of u{u}");
    }
    let letters = dead_letters(s).await;
    assert_eq!(letters.len(), 1, "one dead letter: {letters:?}");
    // The training log: every view and basket add of a session, and every
    // line of a user's purchase, once.
    let chunks = s
        .query(
            Table::Behaviour,
            &processors::state::interactions_pk("2026-11-23T10"),
            &Query::default(),
        )
        .await
        .unwrap();
    let rows: usize = chunks
        .items
        .into_iter()
        .map(|i| {
            processors::state::InteractionChunk::from_item(i)
                .unwrap()
                .rows
                .len()
        })
        .sum();
    assert_eq!(
        rows,
        60 + 12 + 12 + usize::from(crash_at > 0),
        "training-log rows"
    );
    // Anonymous purchases sent again after the batch are duplicates.
    let anon = full
        .iter()
        .filter(|r| {
            std::str::from_utf8(&r.data)
                .is_ok_and(|d| d.contains("purchase.completed") && !d.contains("user_id"))
        })
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(anon.len(), 4);
    let next_pos = f
        .store
        .get(Table::Leases, &storage::Key::new("s", "0"))
        .await
        .unwrap()
        .unwrap();
    let from: u64 = match next_pos.get("checkpoint") {
        Some(storage::Value::S(c)) => c.parse().unwrap(),
        other => panic!("checkpoint {other:?}"),
    };
    let resent: Vec<Vec<u8>> = anon.into_iter().map(|r| r.data).collect();
    let mut cp = checkpoint;
    cp.from = Some(from.to_string());
    let pipeline = Pipeline::new(store.clone(), bus);
    let applied = pipeline
        .apply(&cp, records(from + 1, resent))
        .await
        .unwrap();
    assert_eq!((applied.events, applied.duplicates), (0, 4));
}

mod parted {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_store_without_a_crash() {
        super::a_batch_cut_between_its_parts_applies_once(super::embedded().await, 0).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_store_crash_after_the_first_part() {
        super::a_batch_cut_between_its_parts_applies_once(super::embedded().await, 2).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_store_crash_before_the_last_part() {
        super::a_batch_cut_between_its_parts_applies_once(super::embedded().await, 6).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dynamodb_store_without_a_crash() {
        super::a_batch_cut_between_its_parts_applies_once(super::dynamodb().await, 0).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dynamodb_store_crash_after_the_first_part() {
        super::a_batch_cut_between_its_parts_applies_once(super::dynamodb().await, 2).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dynamodb_store_crash_before_the_last_part() {
        super::a_batch_cut_between_its_parts_applies_once(super::dynamodb().await, 6).await;
    }
}
