//! The Kinesis consumer against kinesis-mock (a real Kinesis protocol server
//! on loopback, started by ./scripts/test.sh), with state in the embedded
//! store: totals exact across shards, KPL aggregates and bad records; a
//! zombie reader cannot commit; two instances split the shards and one takes
//! all when the other dies; a split shard's children wait for their parent;
//! a sub-sequence checkpoint resumes inside an aggregated record.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use aws_sdk_kinesis::{Client, primitives::Blob};
use ingest::{
    EventSink, Leases,
    kinesis::{self, KinesisConsumer, KinesisSettings, KinesisSink, ShardReader, Step},
    kpl,
};
use processors::{
    Bus, Pipeline,
    state::{Stock, stock_key},
};
use serde_json::{Value, json};
use storage::{Store, Table, embedded::Embedded, from_item};
use tokio::sync::watch;

async fn client() -> Client {
    let endpoint = std::env::var("SHOPSTREAM_TEST_KINESIS_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "SHOPSTREAM_TEST_KINESIS_ENDPOINT is not set: run the tests with ./scripts/test.sh, or start \
             kinesis-mock (`npm install kinesis-local`, then in node_modules/kinesis-local: \
             KINESIS_MOCK_PLAIN_PORT=4568 node main.js) and set SHOPSTREAM_TEST_KINESIS_ENDPOINT=http://127.0.0.1:4568"
        )
    });
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
            "test", "test", None, None, "t",
        ))
        .load()
        .await;
    Client::new(&config)
}

struct Fixture {
    client: Client,
    stream: String,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

async fn fixture(shards: i32) -> Fixture {
    let client = client().await;
    let stream = format!("t-{}", uuid::Uuid::new_v4().simple());
    kinesis::ensure_stream(&client, &stream, shards)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    Fixture {
        client,
        stream,
        store: Arc::new(Embedded::open(dir.path(), "").unwrap()),
        _dir: dir,
    }
}

impl Fixture {
    fn consumer(&self, owner: &str, failover: Duration) -> KinesisConsumer {
        KinesisConsumer {
            client: self.client.clone(),
            stream: self.stream.clone(),
            leases: Leases::new(self.store.clone(), owner, failover),
            pipeline: Pipeline::new(self.store.clone(), Bus::default()),
            settings: KinesisSettings {
                batch: 100,
                idle_poll: Duration::from_millis(50),
                shard_sync: Duration::from_millis(500),
                ..KinesisSettings::default()
            },
        }
    }

    fn sink(&self) -> KinesisSink {
        KinesisSink::new(self.client.clone(), self.stream.clone())
    }

    async fn on_hand(&self, product: &str) -> i64 {
        match self
            .store
            .get(Table::Inventory, &stock_key(product))
            .await
            .unwrap()
        {
            Some(item) => from_item::<Stock>(item).unwrap().on_hand,
            None => 0,
        }
    }

    /// Waits until every product's on-hand equals `want` (or fails with what
    /// it is).
    async fn wait_totals(&self, want: &HashMap<String, i64>, within: Duration) {
        let start = Instant::now();
        loop {
            let mut got = HashMap::new();
            for p in want.keys() {
                got.insert(p.clone(), self.on_hand(p).await);
            }
            if &got == want {
                return;
            }
            assert!(
                start.elapsed() < within,
                "totals not reached in {within:?}: got {got:?}, want {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn dead_letters(&self) -> usize {
        processors::read::dead_letters(self.store.as_ref(), 1000, None)
            .await
            .unwrap()
            .0
            .len()
    }
}

fn products(n: usize) -> Vec<String> {
    (0..n).map(|_| uuid::Uuid::now_v7().to_string()).collect()
}

fn adjust(product: &str, delta: i64) -> (String, Vec<u8>) {
    let e = json!({
        "id": uuid::Uuid::now_v7(), "type": "stock.adjusted", "occurred_at": "2026-11-23T10:05:30Z",
        "source": "test", "data": {"product_id": product, "delta": delta, "reason": "received"}
    });
    (product.to_owned(), serde_json::to_vec(&e).unwrap())
}

fn count(product: &str, on_hand: i64, sequence: u64) -> (String, Vec<u8>) {
    let e = json!({
        "id": uuid::Uuid::now_v7(), "type": "stock.counted", "occurred_at": "2026-11-23T10:05:30Z",
        "source": "test",
        "data": {"product_id": product, "on_hand": on_hand, "sequence": sequence}
    });
    (product.to_owned(), serde_json::to_vec(&e).unwrap())
}

fn event(kind: &str, data: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": uuid::Uuid::now_v7(), "type": kind, "occurred_at": "2026-11-23T10:05:30Z",
        "source": "test", "data": data
    }))
    .unwrap()
}

async fn put_aggregate(f: &Fixture, records: &[(String, Vec<u8>)]) -> String {
    f.client
        .put_record()
        .stream_name(&f.stream)
        .partition_key(&records[0].0)
        .data(Blob::new(kpl::aggregate(records)))
        .send()
        .await
        .unwrap()
        .sequence_number()
        .to_owned()
}

fn run(consumer: KinesisConsumer) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = watch::channel(false);
    (stop, tokio::spawn(consumer.run(stopped)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_aggregated_and_bad_records_across_four_shards() {
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
    f.sink().put(&plain).await.unwrap();
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
    // One bad record per dead-letter reason, between good ones.
    let bad: Vec<(String, Vec<u8>)> = vec![
        ("x".into(), b"{not json".to_vec()),
        ("x".into(), event("coupon.redeemed", json!({}))),
        (
            "x".into(),
            event("stock.adjusted", json!({"product_id": ps[0]})),
        ),
        (
            "x".into(),
            event(
                "basket.added",
                json!({"session_id": "s", "product_id": ps[0], "quantity": -2}),
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
    ];
    f.sink().put(&bad).await.unwrap();
    let mut after = Vec::new();
    for p in &ps {
        *want.get_mut(p).unwrap() += 1;
        after.push(adjust(p, 1));
    }
    f.sink().put(&after).await.unwrap();

    let (stop, task) = run(f.consumer("solo", Duration::from_secs(10)));
    f.wait_totals(&want, Duration::from_secs(60)).await;
    assert_eq!(f.dead_letters().await, bad.len());
    stop.send(true).unwrap();
    task.await.unwrap();
    // Shutdown released every lease, and each has a checkpoint.
    let leases = Leases::new(f.store.clone(), "x", Duration::from_secs(10))
        .list(&f.stream)
        .await
        .unwrap();
    assert_eq!(leases.len(), 4);
    for (shard, l) in &leases {
        assert!(l.owner.is_none(), "{shard} still held: {l:?}");
    }
    assert!(
        leases
            .iter()
            .filter(|(_, l)| l.checkpoint.is_some())
            .count()
            >= 3
    );
    // Nothing more is applied on a restart: the checkpoints hold.
    let (stop, task) = run(f.consumer("solo-again", Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    f.wait_totals(&want, Duration::from_secs(1)).await;
    stop.send(true).unwrap();
    task.await.unwrap();
}

/// Takes the lease of the stream's only shard for a reader of its own.
async fn reader(f: &Fixture, owner: &str) -> ShardReader {
    let consumer = f.consumer(owner, Duration::from_secs(30));
    let shard = kinesis::list_shards(&f.client, &f.stream).await.unwrap()[0]
        .shard_id()
        .to_owned();
    consumer
        .leases
        .ensure(&f.stream, &shard, vec![])
        .await
        .unwrap();
    let seen = consumer
        .leases
        .get(&f.stream, &shard)
        .await
        .unwrap()
        .unwrap();
    let held = consumer
        .leases
        .take(&f.stream, &shard, &seen)
        .await
        .unwrap()
        .expect("lease");
    ShardReader::new(consumer, held)
}

async fn read_until_pending(r: &mut ShardReader) {
    for _ in 0..100 {
        if !r.pending().is_empty() {
            return;
        }
        if r.step().await == Step::Stop {
            panic!("reader stopped");
        }
    }
    panic!("nothing read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_reader_cannot_commit_its_batch() {
    let f = fixture(1).await;
    let p = products(1).remove(0);
    let batch: Vec<_> = (0..20).map(|_| adjust(&p, 5)).collect();
    f.sink().put(&batch).await.unwrap();

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
    let consumer = f.consumer("a", Duration::from_secs(30));
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
async fn two_instances_split_the_shards_and_one_takes_over_when_the_other_dies() {
    let f = fixture(4).await;
    let failover = Duration::from_secs(3);
    let ps = products(12);
    let mut want: HashMap<String, i64> = ps.iter().map(|p| (p.clone(), 0)).collect();
    let mut put = |n: usize| {
        (0..n)
            .map(|i| {
                let p = &ps[i % ps.len()];
                *want.get_mut(p).unwrap() += 2;
                adjust(p, 2)
            })
            .collect::<Vec<_>>()
    };
    let first = put(240);
    f.sink().put(&first).await.unwrap();

    let (stop_a, task_a) = run(f.consumer("instance-a", failover));
    let (_stop_b, task_b) = run(f.consumer("instance-b", failover));
    let leases = Leases::new(f.store.clone(), "observer", failover);
    // They settle at two shards each.
    let start = Instant::now();
    loop {
        let now = ingest::lease::now_ms();
        let held = leases.list(&f.stream).await.unwrap();
        let by = |o: &str| {
            held.iter()
                .filter(|(_, l)| l.owner.as_deref() == Some(o) && l.expires_at > now)
                .count()
        };
        if by("instance-a") == 2 && by("instance-b") == 2 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "not balanced: {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Instance B dies: its readers stop with no release and no last commit.
    task_b.abort();
    let _ = task_b.await;
    let died = Instant::now();
    let second = put(240);
    f.sink().put(&second).await.unwrap();
    loop {
        let now = ingest::lease::now_ms();
        let held = leases.list(&f.stream).await.unwrap();
        if held
            .iter()
            .all(|(_, l)| l.owner.as_deref() == Some("instance-a") && l.expires_at > now)
        {
            break;
        }
        assert!(
            died.elapsed() < failover * 2,
            "A did not take B's shards within {:?}: {held:?}",
            failover * 2
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    f.wait_totals(&want, Duration::from_secs(60)).await;
    stop_a.send(true).unwrap();
    task_a.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_split_children_are_read_after_their_parent() {
    let f = fixture(1).await;
    let p = products(1).remove(0);
    // Before the split: +1 × 500 on the parent (five reads of 100).
    let before: Vec<_> = (0..500).map(|_| adjust(&p, 1)).collect();
    f.sink().put(&before).await.unwrap();
    let parent = kinesis::list_shards(&f.client, &f.stream).await.unwrap()[0]
        .shard_id()
        .to_owned();
    f.client
        .split_shard()
        .stream_name(&f.stream)
        .shard_to_split(&parent)
        .new_starting_hash_key("170141183460469231731687303715884105728")
        .send()
        .await
        .unwrap();
    kinesis::wait_active(&f.client, &f.stream).await.unwrap();
    // After the split, in a child: an absolute count of 1000, then +1 × 20.
    // Were the child read before the parent's +1s were all applied, some of
    // them would land on top of the count and the total would be off.
    let mut after = vec![count(&p, 1000, 1)];
    after.extend((0..20).map(|_| adjust(&p, 1)));
    f.sink().put(&after).await.unwrap();
    // The consumer starts with both generations waiting. A watcher checks
    // that no child has a checkpoint while the parent is unfinished.
    let watcher = {
        let leases = Leases::new(f.store.clone(), "watcher", Duration::from_secs(10));
        let (stream, parent) = (f.stream.clone(), parent.clone());
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
    let mut consumer = f.consumer("solo", Duration::from_secs(10));
    consumer.settings.batch = 50;
    let (stop, task) = run(consumer);
    let want = HashMap::from([(p.clone(), 1020)]);
    f.wait_totals(&want, Duration::from_secs(60)).await;
    watcher.await.unwrap();
    stop.send(true).unwrap();
    task.await.unwrap();
    let leases = Leases::new(f.store.clone(), "x", Duration::from_secs(10))
        .list(&f.stream)
        .await
        .unwrap();
    assert_eq!(leases.len(), 3, "{leases:?}");
    let parent_lease = &leases.iter().find(|(s, _)| *s == parent).unwrap().1;
    assert!(parent_lease.finished);
    for (shard, l) in leases.iter().filter(|(s, _)| *s != parent) {
        assert_eq!(l.parents, vec![parent.clone()], "{shard}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_through_the_sink_are_consumed() {
    let f = fixture(2).await;
    let p = products(1).remove(0);
    let events: Vec<domain::Event> = (0..30)
        .map(|_| serde_json::from_slice(&adjust(&p, 2).1).unwrap())
        .collect();
    f.sink().publish(&events).await.unwrap();
    let (stop, task) = run(f.consumer("solo", Duration::from_secs(10)));
    f.wait_totals(&HashMap::from([(p.clone(), 60)]), Duration::from_secs(30))
        .await;
    stop.send(true).unwrap();
    task.await.unwrap();
}

/// Faults a proxy in front of kinesis-mock injects into `GetRecords`.
#[derive(Debug, Default)]
struct Faults {
    throttle: std::sync::atomic::AtomicU32,
    expire: std::sync::atomic::AtomicU32,
    throttled: std::sync::atomic::AtomicU32,
    expired: std::sync::atomic::AtomicU32,
    iterators: std::sync::atomic::AtomicU32,
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
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(proxy)
        .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
            "test", "test", None, None, "t",
        ))
        // The consumer's own retry and backoff are under test, not the SDK's.
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await;
    let mut consumer = f.consumer("solo", Duration::from_secs(10));
    consumer.client = Client::new(&config);
    let (stop, task) = run(consumer);
    f.wait_totals(&HashMap::from([(p.clone(), 60)]), Duration::from_secs(30))
        .await;
    assert_eq!(faults.throttled.load(SeqCst), 3);
    let iterators = faults.iterators.load(SeqCst);
    // Now the iterator expires once, mid-stream.
    faults.expire.store(1, SeqCst);
    f.sink().publish(&events[20..]).await.unwrap();
    f.wait_totals(&HashMap::from([(p.clone(), 120)]), Duration::from_secs(30))
        .await;
    assert_eq!(faults.expired.load(SeqCst), 1);
    assert!(
        faults.iterators.load(SeqCst) > iterators,
        "a new iterator was got after the expiry"
    );
    // Nothing applied twice: the total stays exact.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(f.on_hand(&p).await, 120);
    stop.send(true).unwrap();
    task.await.unwrap();
}
