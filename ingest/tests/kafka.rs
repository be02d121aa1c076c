//! The Kafka consumer against a real Kafka-protocol broker on loopback
//! (tansu, started by ./scripts/test.sh), with state in the embedded store:
//! totals exact with bad records among good ones and across a restart; a
//! member whose lease is taken mid-run has its batch refused and reads on
//! from the checkpoint; two members split the partitions and one takes all
//! when the other leaves.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use ingest::{
    EventSink, Leases,
    kafka::{self, KafkaConsumer, KafkaSettings, KafkaSink},
};
use processors::{
    Bus, Pipeline,
    state::{Stock, stock_key},
};
use serde_json::json;
use storage::{Store, Table, embedded::Embedded, from_item};
use tokio::sync::watch;

fn brokers() -> String {
    std::env::var("SHOPSTREAM_TEST_KAFKA_BROKERS").unwrap_or_else(|_| {
        panic!(
            "SHOPSTREAM_TEST_KAFKA_BROKERS is not set: run the tests with ./scripts/test.sh, or start \
             tansu (`cargo install tansu --features dynostore`, then `tansu broker --listener-url \
             tcp://127.0.0.1:9092 --advertised-listener-url tcp://127.0.0.1:9092 --storage-engine \
             memory://tansu/`) and set SHOPSTREAM_TEST_KAFKA_BROKERS=127.0.0.1:9092"
        )
    })
}

struct Fixture {
    settings: KafkaSettings,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

async fn fixture(partitions: i32) -> Fixture {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let settings = KafkaSettings {
        brokers: brokers(),
        topic: format!("t-{id}"),
        group: format!("g-{id}"),
        batch: 100,
        linger: Duration::from_millis(50),
        session_timeout: Duration::from_secs(6),
    };
    kafka::ensure_topic(&settings, partitions).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    Fixture {
        settings,
        store: Arc::new(Embedded::open(dir.path(), "").unwrap()),
        _dir: dir,
    }
}

impl Fixture {
    fn consumer(&self, owner: &str) -> KafkaConsumer {
        KafkaConsumer {
            settings: self.settings.clone(),
            leases: Leases::new(self.store.clone(), owner, Duration::from_secs(10)),
            pipeline: Pipeline::new(self.store.clone(), Bus::default()),
        }
    }

    fn sink(&self) -> KafkaSink {
        KafkaSink::new(&self.settings).unwrap()
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

    fn leases(&self) -> Leases {
        Leases::new(self.store.clone(), "observer", Duration::from_secs(10))
    }
}

fn adjust(product: &str, delta: i64) -> (String, Vec<u8>) {
    let e = json!({
        "id": uuid::Uuid::now_v7(), "type": "stock.adjusted", "occurred_at": "2026-11-23T10:05:30Z",
        "source": "test", "data": {"product_id": product, "delta": delta, "reason": "received"}
    });
    (product.to_owned(), serde_json::to_vec(&e).unwrap())
}

fn products(n: usize) -> Vec<String> {
    (0..n).map(|_| uuid::Uuid::now_v7().to_string()).collect()
}

fn run(consumer: KafkaConsumer) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(async move { consumer.run(stopped).await.unwrap() });
    (stop, task)
}

/// `n` adjustments spread over `ps`, added to `want`.
fn batch(ps: &[String], n: usize, want: &mut HashMap<String, i64>) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let p = &ps[i % ps.len()];
            let d = (i % 5) as i64 + 1;
            *want.entry(p.clone()).or_default() += d;
            adjust(p, d)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_and_bad_records_apply_once_across_a_restart() {
    let f = fixture(3).await;
    let ps = products(6);
    let mut want = HashMap::new();
    let mut records = batch(&ps, 300, &mut want);
    records.insert(10, ("x".into(), b"{broken".to_vec()));
    records.insert(150, ("x".into(), b"{\"type\":\"nope\"}".to_vec()));
    f.sink().publish_raw(&records).await.unwrap();

    let (stop, task) = run(f.consumer("member-a"));
    f.wait_totals(&want, Duration::from_secs(60)).await;
    let dead = processors::read::dead_letters(f.store.as_ref(), 100, None)
        .await
        .unwrap()
        .0;
    assert_eq!(dead.len(), 2);
    stop.send(true).unwrap();
    task.await.unwrap();

    // More events, and a new member of the same group: it reads on from
    // the stored offsets and applies nothing twice.
    let more = batch(&ps, 60, &mut want);
    let events: Vec<domain::Event> = more
        .iter()
        .map(|(_, d)| serde_json::from_slice(d).unwrap())
        .collect();
    f.sink().publish(&events).await.unwrap();
    let (stop, task) = run(f.consumer("member-b"));
    f.wait_totals(&want, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    f.wait_totals(&want, Duration::from_secs(1)).await;
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_lease_is_taken_has_its_batch_refused_and_reads_on() {
    let f = fixture(1).await;
    let ps = products(2);
    let mut want = HashMap::new();
    f.sink()
        .publish_raw(&batch(&ps, 100, &mut want))
        .await
        .unwrap();
    let (stop, task) = run(f.consumer("member-a"));
    f.wait_totals(&want, Duration::from_secs(60)).await;
    // Someone else takes the partition's lease (as a new owner after a
    // rebalance would); A's next batch is fenced, so A takes the lease back
    // and reads again from the stored checkpoint.
    let intruder = Leases::new(f.store.clone(), "intruder", Duration::from_secs(10));
    let seen = intruder.get(&f.settings.topic, "0").await.unwrap().unwrap();
    let taken = intruder
        .take(&f.settings.topic, "0", &seen)
        .await
        .unwrap()
        .expect("taken");
    assert_eq!(taken.lease.counter, seen.counter + 1);
    f.sink()
        .publish_raw(&batch(&ps, 100, &mut want))
        .await
        .unwrap();
    f.wait_totals(&want, Duration::from_secs(60)).await;
    let lease = f
        .leases()
        .get(&f.settings.topic, "0")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lease.owner.as_deref(), Some("member-a"));
    assert_eq!(lease.counter, seen.counter + 2);
    assert_eq!(lease.checkpoint.as_deref(), Some("199"));
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_split_the_partitions_and_one_takes_all_when_the_other_leaves() {
    let f = fixture(4).await;
    let ps = products(16);
    let mut want = HashMap::new();
    f.sink()
        .publish_raw(&batch(&ps, 400, &mut want))
        .await
        .unwrap();
    let (stop_a, task_a) = run(f.consumer("member-a"));
    let (_stop_b, task_b) = run(f.consumer("member-b"));
    let owners = |leases: &[(String, ingest::Lease)], o: &str| {
        leases
            .iter()
            .filter(|(_, l)| l.owner.as_deref() == Some(o))
            .count()
    };
    let start = Instant::now();
    loop {
        let leases = f.leases().list(&f.settings.topic).await.unwrap();
        if owners(&leases, "member-a") == 2 && owners(&leases, "member-b") == 2 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the group did not split the partitions: {leases:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    f.wait_totals(&want, Duration::from_secs(60)).await;
    // B stops (dropping a consumer leaves the group; a SIGKILLed member is
    // covered by the crash test of the binary).
    task_b.abort();
    let _ = task_b.await;
    f.sink()
        .publish_raw(&batch(&ps, 400, &mut want))
        .await
        .unwrap();
    let died = Instant::now();
    loop {
        let leases = f.leases().list(&f.settings.topic).await.unwrap();
        if owners(&leases, "member-a") == 4 {
            break;
        }
        assert!(
            died.elapsed() < Duration::from_secs(60),
            "A did not take B's partitions: {leases:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    f.wait_totals(&want, Duration::from_secs(60)).await;
    stop_a.send(true).unwrap();
    task_a.await.unwrap();
}
