//! What every source must do, written once and run on the embedded log,
//! Kinesis and Kafka (see `main.rs`).

use std::{collections::HashMap, time::Duration};

use serde_json::json;

use crate::harness::{Deadline, Fixture, Kind, adjustments, event, owned, products};

/// One bad record of each dead-letter reason, to put among good ones.
fn bad_records(product: &str) -> Vec<(String, Vec<u8>)> {
    vec![
        ("x".into(), b"{not json".to_vec()),
        ("x".into(), event("coupon.redeemed", json!({}))),
        (
            "x".into(),
            event("stock.adjusted", json!({"product_id": product})),
        ),
        (
            "x".into(),
            event(
                "basket.added",
                json!({"session_id": "s", "product_id": product, "quantity": -2}),
            ),
        ),
        ("x".into(), vec![b' '; 70 * 1024]),
        (
            "x".into(),
            serde_json::to_vec(
                &json!({"id": uuid::Uuid::now_v7(), "version": 9, "type": "stock.adjusted",
                "occurred_at": "2026-11-23T10:05:30Z", "source": "t", "data": {}}),
            )
            .unwrap(),
        ),
    ]
}

/// Good records apply once and bad ones are dead-lettered with their
/// reason; a stopped consumer releases its leases with their checkpoints,
/// and a new member reads on from them, applying nothing twice.
pub async fn good_and_bad_records_apply_once_across_a_restart(kind: Kind) {
    let f = Fixture::new(kind, 3).await;
    let ps = products(6);
    let mut want = HashMap::new();
    let mut records = adjustments(&ps, 300, &mut want);
    let bad = bad_records(&ps[0]);
    for (i, b) in bad.iter().enumerate() {
        records.insert(10 + i * 40, b.clone());
    }
    f.sink().publish_raw(&records).await.unwrap();

    let a = f.start("member-a", Duration::from_secs(10));
    f.wait_totals(&want).await;
    let mut reasons: Vec<_> = f
        .dead_letters()
        .await
        .into_iter()
        .map(|d| d.reason)
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "invalid_payload",
            "malformed_json",
            "negative_quantity",
            "oversized",
            "unknown_type",
            "unsupported_version"
        ]
    );
    a.stop().await;
    let leases = f.lease_list().await;
    assert_eq!(leases.len(), 3, "{leases:?}");
    for (shard, l) in &leases {
        assert!(
            l.owner.is_none(),
            "{shard} still held after the stop: {l:?}"
        );
    }
    assert!(leases.iter().any(|(_, l)| l.checkpoint.is_some()));

    // More events, typed, through the sink; a new member reads on from the
    // stored checkpoints.
    let more: Vec<domain::Event> = adjustments(&ps, 60, &mut want)
        .iter()
        .map(|(_, d)| serde_json::from_slice(d).unwrap())
        .collect();
    f.sink().publish(&more).await.unwrap();
    let b = f.start("member-b", Duration::from_secs(10));
    f.wait_totals(&want).await;
    f.settle(&mut want).await;
    assert_eq!(f.dead_letters().await.len(), bad.len());
    b.stop().await;
}

/// A member whose lease someone else takes (a new owner after a rebalance
/// or a failover) has its next batch refused, applies nothing of it, and
/// reads on from the checkpoint once the lease is its own again.
pub async fn a_member_whose_lease_is_taken_is_fenced(kind: Kind) {
    let f = Fixture::new(kind, 1).await;
    let failover = Duration::from_secs(3);
    let ps = products(2);
    let mut want = HashMap::new();
    f.sink()
        .publish_raw(&adjustments(&ps, 100, &mut want))
        .await
        .unwrap();
    let a = f.start("member-a", failover);
    f.wait_totals(&want).await;
    let (shard, seen) = f.lease_list().await.remove(0);
    let intruder = ingest::Leases::new(f.store.clone(), "intruder", failover);
    let taken = intruder
        .take(&f.stream(), &shard, &seen)
        .await
        .unwrap()
        .expect("taken");
    assert_eq!(taken.lease.counter, seen.counter + 1);
    f.sink()
        .publish_raw(&adjustments(&ps, 100, &mut want))
        .await
        .unwrap();
    f.wait_totals(&want).await;
    f.settle(&mut want).await;
    let lease = f.leases().get(&f.stream(), &shard).await.unwrap().unwrap();
    assert_eq!(lease.owner.as_deref(), Some("member-a"));
    assert!(lease.counter >= seen.counter + 2, "{lease:?}");
    a.stop().await;
}

/// A member that dies (no release, no last commit) has its partitions
/// taken by the one left, which applies everything exactly once.
pub async fn a_member_that_dies_is_taken_over(kind: Kind) {
    let f = Fixture::new(kind, 4).await;
    let failover = Duration::from_secs(3);
    let ps = products(12);
    let mut want = HashMap::new();
    f.sink()
        .publish_raw(&adjustments(&ps, 240, &mut want))
        .await
        .unwrap();
    let b = f.start("member-b", failover);
    f.wait_totals(&want).await;
    let a = f.start("member-a", failover);
    b.kill().await;
    f.sink()
        .publish_raw(&adjustments(&ps, 240, &mut want))
        .await
        .unwrap();
    f.wait_owned("member-a", 4).await;
    f.wait_totals(&want).await;
    f.settle(&mut want).await;
    a.stop().await;
}

/// Two members of a group share the partitions evenly (the embedded log
/// has one process, so it has no balancing to test).
pub async fn two_members_split_the_partitions(kind: Kind) {
    let f = Fixture::new(kind, 4).await;
    let ps = products(16);
    let mut want = HashMap::new();
    f.sink()
        .publish_raw(&adjustments(&ps, 400, &mut want))
        .await
        .unwrap();
    let a = f.start("member-a", Duration::from_secs(3));
    let b = f.start("member-b", Duration::from_secs(3));
    let deadline = Deadline::start();
    loop {
        let seen = f.lease_list().await;
        if owned(&seen, "member-a") == 2 && owned(&seen, "member-b") == 2 {
            break;
        }
        assert!(
            deadline.wait().await,
            "the members did not split the partitions: {seen:?}"
        );
    }
    f.wait_totals(&want).await;
    f.settle(&mut want).await;
    a.stop().await;
    b.stop().await;
}

/// An outage of the store for one product's items holds that product's
/// partition only: it retries with backoff while the others go on, and
/// once the store is back everything is applied exactly once.
pub async fn a_failing_partition_holds_only_itself(kind: Kind) {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering::SeqCst},
    };

    use processors::state::stock_key;
    use storage::{StoreError, Table, faulty::Faulty};

    let f = Fixture::new(kind, 4).await;
    let ps = products(12);
    let sick = products(1).remove(0);
    let down = Arc::new(AtomicBool::new(true));
    let refused = Arc::new(AtomicU32::new(0));
    let store = {
        let (down, refused, key) = (down.clone(), refused.clone(), stock_key(&sick));
        Arc::new(Faulty::new(f.store.clone(), move |ops| {
            (down.load(SeqCst) && storage::faulty::touches(ops, Table::Inventory, &key)).then(
                || {
                    refused.fetch_add(1, SeqCst);
                    StoreError::Unavailable("injected outage".into())
                },
            )
        }))
    };
    let mut want = HashMap::new();
    let mut records = adjustments(&ps, 240, &mut want);
    let mut sick_want = HashMap::new();
    for (i, r) in adjustments(std::slice::from_ref(&sick), 60, &mut sick_want)
        .into_iter()
        .enumerate()
    {
        records.insert(i * 4, r);
    }
    f.sink().publish_raw(&records).await.unwrap();
    let a = f.start_through("member-a", Duration::from_secs(10), store);
    // Products on other partitions than the sick one reach their totals
    // while it is down; nothing of the sick product is applied.
    let deadline = Deadline::start();
    loop {
        let mut done = 0;
        for (p, n) in &want {
            if f.on_hand(p).await == *n {
                done += 1;
            }
        }
        if done > 0 && refused.load(SeqCst) >= 3 {
            break;
        }
        assert!(
            deadline.wait().await,
            "no partition went on while one was failing ({done} done, {} refusals)",
            refused.load(SeqCst)
        );
    }
    assert_eq!(f.on_hand(&sick).await, 0);
    down.store(false, SeqCst);
    want.extend(sick_want);
    f.wait_totals(&want).await;
    f.settle(&mut want).await;
    a.stop().await;
}

/// Nothing stops a partition: a 350 KB record that is not JSON, and a valid
/// record whose effects the store refuses for good, are dead-lettered (the
/// first kept as a bounded prefix) and the records after them apply.
pub async fn poison_records_are_dead_lettered_and_the_partition_moves_on(kind: Kind) {
    use std::sync::Arc;

    use processors::state::stock_key;
    use storage::{StoreError, Table, faulty::Faulty};

    let f = Fixture::new(kind, 1).await;
    let ps = products(3);
    let refused = products(1).remove(0);
    let store = {
        let key = stock_key(&refused);
        Arc::new(Faulty::new(f.store.clone(), move |ops| {
            storage::faulty::touches(ops, Table::Inventory, &key).then_some(
                StoreError::ItemTooLarge {
                    size: 500_000,
                    limit: storage::port::MAX_ITEM_BYTES,
                },
            )
        }))
    };
    let mut want = HashMap::new();
    let mut records = adjustments(&ps, 30, &mut want);
    records.insert(5, ("x".into(), vec![b'#'; 350 * 1024]));
    records.insert(17, crate::harness::adjust(&refused, 4));
    f.sink().publish_raw(&records).await.unwrap();
    let a = f.start_through("member-a", Duration::from_secs(10), store);
    f.wait_totals(&want).await;
    let mut dead: Vec<_> = f
        .dead_letters()
        .await
        .into_iter()
        .map(|d| (d.is_whole(), d.reason, d.raw_len))
        .collect();
    dead.sort();
    assert_eq!(
        dead,
        [
            (false, "oversized".to_owned(), 350 * 1024),
            (true, "unprocessable".to_owned(), records[17].1.len() as u64),
        ]
    );
    assert_eq!(f.on_hand(&refused).await, 0);
    a.stop().await;
}

/// Producers re-send: every event published twice, the second time under
/// another partition key (so, mostly, on another shard or partition), is
/// applied once, and a re-send after a restart is dropped too.
pub async fn every_event_sent_twice_applies_once(kind: Kind) {
    let f = Fixture::new(kind, 4).await;
    let ps = products(8);
    let mut want = HashMap::new();
    let records = adjustments(&ps, 200, &mut want);
    let resent: Vec<_> = records
        .iter()
        .enumerate()
        .map(|(i, (_, data))| (format!("resend-{i}"), data.clone()))
        .collect();
    f.sink().publish_raw(&records).await.unwrap();
    f.sink().publish_raw(&resent).await.unwrap();
    let a = f.start("member-a", Duration::from_secs(10));
    f.wait_totals(&want).await;
    f.settle(&mut want).await;
    a.stop().await;
    // The last 50 again, after the restart (a producer retrying its last
    // batch): nothing changes.
    f.sink().publish_raw(&records[150..]).await.unwrap();
    let b = f.start("member-b", Duration::from_secs(10));
    f.settle(&mut want).await;
    b.stop().await;
}
