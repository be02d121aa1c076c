//! What only Kinesis has: KPL aggregates and checkpoints inside them, the
//! shard reader's fencing, resharding, throttling and expired iterators.

use std::{collections::HashMap, sync::Arc, time::Duration};

use aws_sdk_kinesis::primitives::Blob;
use ingest::{
    kinesis::{self, ShardReader, Step},
    kpl,
};
use serde_json::json;

use crate::harness::{Fixture, Kind, adjust, count, kinesis_client_at, products};

async fn fixture(shards: u32) -> Fixture {
    Fixture::new(Kind::Kinesis, shards).await
}

async fn put_aggregate(f: &Fixture, records: &[(String, Vec<u8>)]) -> String {
    f.kinesis_client()
        .put_record()
        .stream_name(f.stream())
        .partition_key(&records[0].0)
        .data(Blob::new(kpl::aggregate(records)))
        .send()
        .await
        .unwrap()
        .sequence_number()
        .to_owned()
}

fn run(
    consumer: ingest::kinesis::KinesisConsumer,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    (stop, tokio::spawn(consumer.run(stopped)))
}

/// Plain records and KPL aggregates mixing products, over four shards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_and_aggregated_records_across_four_shards() {
    let f = fixture(4).await;
    let ps = products(8);
    let mut want: HashMap<String, i64> = ps.iter().map(|p| (p.clone(), 0)).collect();
    let mut plain = Vec::new();
    for i in 0..400 {
        let p = &ps[i % ps.len()];
        let d = (i % 7) as i64 + 1;
        *want.get_mut(p).unwrap() += d;
        plain.push(adjust(p, d));
    }
    f.sink().publish_raw(&plain).await.unwrap();
    // KPL aggregates of 25 user records each, mixing products.
    for chunk in 0..4 {
        let records: Vec<_> = (0..25)
            .map(|i| {
                let p = &ps[(chunk + i) % ps.len()];
                *want.get_mut(p).unwrap() += 3;
                adjust(p, 3)
            })
            .collect();
        put_aggregate(&f, &records).await;
    }
    let solo = f.start("solo", Duration::from_secs(10));
    f.wait_totals(&want).await;
    f.settle(&mut want).await;
    assert!(f.dead_letters().await.is_empty());
    solo.stop().await;
}

/// Takes the lease of the stream's only shard for a reader of its own.
async fn reader(f: &Fixture, owner: &str) -> ShardReader {
    let consumer = f.kinesis_consumer(owner, Duration::from_secs(30));
    let shard = kinesis::list_shards(f.kinesis_client(), &f.stream())
        .await
        .unwrap()[0]
        .shard_id()
        .to_owned();
    consumer
        .leases
        .ensure(&f.stream(), &shard, vec![])
        .await
        .unwrap();
    let seen = consumer
        .leases
        .get(&f.stream(), &shard)
        .await
        .unwrap()
        .unwrap();
    let held = consumer
        .leases
        .take(&f.stream(), &shard, &seen)
        .await
        .unwrap()
        .expect("lease");
    ShardReader::new(consumer, held)
}

async fn read_until_pending(r: &mut ShardReader) {
    for _ in 0..200 {
        if !r.pending().is_empty() {
            return;
        }
        match r.step().await {
            Step::Stop => panic!("reader stopped"),
            Step::Wait(d) => tokio::time::sleep(d).await,
            Step::Idle => tokio::time::sleep(Duration::from_millis(50)).await,
            Step::More => {}
        }
    }
    panic!("nothing read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_reader_cannot_commit_its_batch() {
    let f = fixture(1).await;
    let p = products(1).remove(0);
    let batch: Vec<_> = (0..20).map(|_| adjust(&p, 5)).collect();
    f.sink().publish_raw(&batch).await.unwrap();

    let mut a = reader(&f, "a").await;
    read_until_pending(&mut a).await;
    assert_eq!(a.pending().len(), 20);
    // B takes the lease while A holds its batch, and applies it.
    let mut b = reader(&f, "b").await;
    read_until_pending(&mut b).await;
    assert_eq!(b.step().await, Step::More, "B commits");
    assert_eq!(f.on_hand(&p).await, 100);
    // A's commit is refused, and A stops.
    assert_eq!(a.step().await, Step::Stop);
    assert_eq!(f.on_hand(&p).await, 100);
    assert_eq!(a.pending().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_sequence_checkpoint_resumes_inside_an_aggregate() {
    let f = fixture(1).await;
    let p = products(1).remove(0);
    let users: Vec<_> = (1..=10).map(|i| adjust(&p, i)).collect();
    let seq = put_aggregate(&f, &users).await;
    let mut a = reader(&f, "a").await;
    read_until_pending(&mut a).await;
    let pending = a.pending().to_vec();
    assert_eq!(pending.len(), 10);
    assert_eq!(pending[3].position, format!("{seq}:3"));
    assert_eq!(
        pending[9].position, seq,
        "the last user record stands for the whole record"
    );
    // Commit only the first four user records (as a split commit would), then crash.
    let consumer = f.kinesis_consumer("a", Duration::from_secs(30));
    let applied = consumer
        .pipeline
        .apply(&a.held().checkpoint(), pending[..4].to_vec())
        .await
        .unwrap();
    assert_eq!(applied.checkpoint, Some(format!("{seq}:3")));
    assert_eq!(f.on_hand(&p).await, 1 + 2 + 3 + 4);
    drop(a);
    // Another reader resumes at the record and skips what was applied.
    let mut b = reader(&f, "b").await;
    read_until_pending(&mut b).await;
    assert_eq!(b.pending().len(), 6);
    assert_eq!(b.step().await, Step::More);
    assert_eq!(f.on_hand(&p).await, 55);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_split_children_are_read_after_their_parent() {
    let f = fixture(1).await;
    let p = products(1).remove(0);
    // Before the split: +1 × 500 on the parent (five reads of 100).
    let before: Vec<_> = (0..500).map(|_| adjust(&p, 1)).collect();
    f.sink().publish_raw(&before).await.unwrap();
    let parent = kinesis::list_shards(f.kinesis_client(), &f.stream())
        .await
        .unwrap()[0]
        .shard_id()
        .to_owned();
    f.kinesis_client()
        .split_shard()
        .stream_name(f.stream())
        .shard_to_split(&parent)
        .new_starting_hash_key("170141183460469231731687303715884105728")
        .send()
        .await
        .unwrap();
    kinesis::wait_active(f.kinesis_client(), &f.stream())
        .await
        .unwrap();
    // After the split, in a child: an absolute count of 1000, then +1 × 20.
    // Were the child read before the parent's +1s were all applied, some of
    // them would land on top of the count and the total would be off.
    let mut after = vec![count(&p, 1000, 1)];
    after.extend((0..20).map(|_| adjust(&p, 1)));
    f.sink().publish_raw(&after).await.unwrap();
    // The consumer starts with both generations waiting. A watcher checks
    // that no child has a checkpoint while the parent is unfinished.
    let watcher = {
        let leases = f.leases();
        let (stream, parent) = (f.stream(), parent.clone());
        tokio::spawn(async move {
            for _ in 0..2000 {
                let all = leases.list(&stream).await.unwrap();
                let parent_done = all.iter().any(|(s, l)| *s == parent && l.finished);
                let child_read = all
                    .iter()
                    .any(|(s, l)| *s != parent && l.checkpoint.is_some());
                assert!(
                    parent_done || !child_read,
                    "a child was read before its parent finished: {all:?}"
                );
                if parent_done {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut consumer = f.kinesis_consumer("solo", Duration::from_secs(10));
    consumer.settings.batch = 50;
    let (stop, task) = run(consumer);
    let want = HashMap::from([(p.clone(), 1020)]);
    f.wait_totals(&want).await;
    watcher.await.unwrap();
    stop.send(true).unwrap();
    task.await.unwrap();
    let leases = f.lease_list().await;
    assert_eq!(leases.len(), 3, "{leases:?}");
    let parent_lease = &leases.iter().find(|(s, _)| *s == parent).unwrap().1;
    assert!(parent_lease.finished);
    for (shard, l) in leases.iter().filter(|(s, _)| *s != parent) {
        assert_eq!(l.parents, vec![parent.clone()], "{shard}");
    }
}

/// Faults a proxy in front of kinesis-mock injects into `GetRecords`.
#[derive(Debug, Default)]
struct Faults {
    throttle: std::sync::atomic::AtomicU32,
    expire: std::sync::atomic::AtomicU32,
    throttled: std::sync::atomic::AtomicU32,
    expired: std::sync::atomic::AtomicU32,
    iterators: std::sync::atomic::AtomicU32,
    /// When each `GetRecords` call arrived.
    reads: std::sync::Mutex<Vec<std::time::Instant>>,
}

/// An HTTP proxy to kinesis-mock that answers the first `GetRecords` calls
/// with the errors Kinesis sends (`ProvisionedThroughputExceededException`,
/// then `ExpiredIteratorException`) and forwards everything else.
async fn fault_proxy(upstream: String, faults: Arc<Faults>) -> String {
    use std::sync::atomic::Ordering::SeqCst;

    use axum::{body::Bytes, http::HeaderMap, response::IntoResponse};
    let http = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let (http, upstream, faults) = (http.clone(), upstream.clone(), faults.clone());
        async move {
            let target = headers
                .get("x-amz-target")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let error = |kind: &str| {
                (
                    axum::http::StatusCode::BAD_REQUEST,
                    [("content-type", "application/x-amz-json-1.1")],
                    json!({"__type": kind, "message": "injected by the test proxy"}).to_string(),
                )
                    .into_response()
            };
            if target.ends_with(".GetShardIterator") {
                faults.iterators.fetch_add(1, SeqCst);
            }
            if target.ends_with(".GetRecords") {
                faults.reads.lock().unwrap().push(std::time::Instant::now());
                if faults.throttle.load(SeqCst) > 0 {
                    faults.throttle.fetch_sub(1, SeqCst);
                    faults.throttled.fetch_add(1, SeqCst);
                    return error("ProvisionedThroughputExceededException");
                }
                if faults.expire.load(SeqCst) > 0 {
                    faults.expire.fetch_sub(1, SeqCst);
                    faults.expired.fetch_add(1, SeqCst);
                    return error("ExpiredIteratorException");
                }
            }
            let mut req = http.post(&upstream).body(body);
            for (k, v) in &headers {
                if k != "host" && k != "content-length" {
                    req = req.header(k.as_str(), v.as_bytes());
                }
            }
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let ct = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/x-amz-json-1.1")
                .to_owned();
            let bytes = r.bytes().await.unwrap();
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                [("content-type", ct)],
                bytes,
            )
                .into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// Throttled reads are retried and an expired iterator is got again from
/// the checkpoint; nothing is lost or applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_expired_iterators_are_recovered_from() {
    use std::sync::atomic::Ordering::SeqCst;

    let f = fixture(1).await;
    let p = products(1).remove(0);
    let events: Vec<domain::Event> = (0..40)
        .map(|_| serde_json::from_slice(&adjust(&p, 3).1).unwrap())
        .collect();
    f.sink().publish(&events[..20]).await.unwrap();
    let faults = Arc::new(Faults::default());
    faults.throttle.store(3, SeqCst);
    let upstream = std::env::var("SHOPSTREAM_TEST_KINESIS_ENDPOINT").unwrap();
    let proxy = fault_proxy(upstream, faults.clone()).await;
    let mut consumer = f.kinesis_consumer("solo", Duration::from_secs(10));
    // The consumer's own retry and backoff are under test, not the SDK's.
    consumer.client = kinesis_client_at(proxy, aws_config::retry::RetryConfig::disabled()).await;
    let (stop, task) = run(consumer);
    let mut want = HashMap::from([(p.clone(), 60)]);
    f.wait_totals(&want).await;
    assert_eq!(faults.throttled.load(SeqCst), 3);
    let iterators = faults.iterators.load(SeqCst);
    // Now the iterator expires once, mid-stream.
    faults.expire.store(1, SeqCst);
    f.sink().publish(&events[20..]).await.unwrap();
    want.insert(p.clone(), 120);
    f.wait_totals(&want).await;
    assert_eq!(faults.expired.load(SeqCst), 1);
    assert!(
        faults.iterators.load(SeqCst) > iterators,
        "a new iterator was got after the expiry"
    );
    // Nothing applied twice: the total stays exact.
    f.settle(&mut want).await;
    stop.send(true).unwrap();
    task.await.unwrap();
}

/// A shard is read at most 5 times a second (Kinesis' per-shard limit,
/// shared by all consumers), also while records keep arriving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_records_stays_within_five_calls_a_second_per_shard() {
    let f = fixture(1).await;
    let p = products(1).remove(0);
    let faults = Arc::new(Faults::default());
    let upstream = std::env::var("SHOPSTREAM_TEST_KINESIS_ENDPOINT").unwrap();
    let proxy = fault_proxy(upstream, faults.clone()).await;
    let mut consumer = f.kinesis_consumer("solo", Duration::from_secs(10));
    consumer.client = kinesis_client_at(proxy, aws_config::retry::RetryConfig::disabled()).await;
    let (stop, task) = run(consumer);
    // Records keep arriving: a small batch every 50 ms for three seconds.
    let mut want = HashMap::from([(p.clone(), 0)]);
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let batch: Vec<_> = (0..5).map(|_| adjust(&p, 1)).collect();
        *want.get_mut(&p).unwrap() += 5;
        f.sink().publish_raw(&batch).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f.wait_totals(&want).await;
    stop.send(true).unwrap();
    task.await.unwrap();
    let reads = faults.reads.lock().unwrap().clone();
    assert!(reads.len() >= 5, "{} reads", reads.len());
    // Calls are at least 200 ms apart as the reader sends them; allow the
    // proxy's view one call of jitter over the whole run.
    let span = reads.last().unwrap().duration_since(reads[0]).as_secs_f64();
    assert!(
        (reads.len() - 1) as f64 <= span * 5.0 + 1.0,
        "{} GetRecords calls in {span:.2} s",
        reads.len()
    );
    let fastest = reads
        .windows(6)
        .map(|w| w[5].duration_since(w[0]))
        .min()
        .unwrap_or(Duration::MAX);
    assert!(
        fastest >= Duration::from_millis(900),
        "six calls within {fastest:?}"
    );
}

/// A parent shard that is gone from the stream (past retention), leased or
/// not, counts as finished: its children are read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_of_a_parent_that_is_gone_are_read() {
    let f = fixture(1).await;
    let p = products(1).remove(0);
    let child = kinesis::list_shards(f.kinesis_client(), &f.stream())
        .await
        .unwrap()[0]
        .shard_id()
        .to_owned();
    // The lease table says the one shard is the child of two parents that
    // the stream no longer has: one still held by an instance that died,
    // one free.
    let (gone_held, gone_free) = ("shardId-000000009998", "shardId-000000009999");
    let leases = f.leases();
    for shard in [gone_held, gone_free] {
        leases.ensure(&f.stream(), shard, vec![]).await.unwrap();
    }
    leases
        .ensure(
            &f.stream(),
            &child,
            vec![gone_held.into(), gone_free.into()],
        )
        .await
        .unwrap();
    let dead = ingest::Leases::new(f.store.clone(), "dead-instance", Duration::from_secs(600));
    let seen = dead.get(&f.stream(), gone_held).await.unwrap().unwrap();
    dead.take(&f.stream(), gone_held, &seen)
        .await
        .unwrap()
        .unwrap();
    let want = HashMap::from([(p.clone(), 30)]);
    let batch: Vec<_> = (0..10).map(|_| adjust(&p, 3)).collect();
    f.sink().publish_raw(&batch).await.unwrap();
    let solo = f.start("solo", Duration::from_secs(600));
    f.wait_totals(&want).await;
    let all = f.lease_list().await;
    for shard in [gone_held, gone_free] {
        let l = &all.iter().find(|(s, _)| s == shard).unwrap().1;
        assert!(l.finished, "{shard}: {l:?}");
    }
    solo.stop().await;
}
