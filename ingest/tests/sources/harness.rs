//! One fixture over the three sources: a fresh stream (a Kinesis stream in
//! kinesis-mock, a Kafka topic on tansu, or the embedded log), its sink, an
//! embedded store for the state and the leases, and consumers to start and
//! stop or kill. The suite's tests are written once against it.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use aws_sdk_kinesis::Client;
use ingest::{
    EventSink, Lease, Leases, LogConsumer, StoreLog,
    kafka::{self, KafkaConsumer, KafkaSettings, KafkaSink},
    kinesis::{self, KinesisConsumer, KinesisSettings, KinesisSink},
    log::ConsumerSettings,
};
use processors::{
    Bus, Pipeline,
    state::{Stock, stock_key},
};
use serde_json::{Value, json};
use storage::{Store, Table, embedded::Embedded, from_item};
use tokio::sync::watch;

/// Which source a fixture runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Log,
    Kinesis,
    Kafka,
}

enum Source {
    Log(StoreLog),
    Kinesis { client: Client, stream: String },
    Kafka(KafkaSettings),
}

pub struct Fixture {
    pub store: Arc<dyn Store>,
    source: Source,
    _dir: tempfile::TempDir,
}

fn env(name: &str, how: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with ./scripts/test.sh, or {how}")
    })
}

pub async fn kinesis_client() -> Client {
    let endpoint = env(
        "SHOPSTREAM_TEST_KINESIS_ENDPOINT",
        "start kinesis-mock (`npm install kinesis-local`, then in node_modules/kinesis-local: \
         KINESIS_MOCK_PLAIN_PORT=4568 node main.js) and set \
         SHOPSTREAM_TEST_KINESIS_ENDPOINT=http://127.0.0.1:4568",
    );
    kinesis_client_at(endpoint, aws_config::retry::RetryConfig::standard()).await
}

pub async fn kinesis_client_at(endpoint: String, retry: aws_config::retry::RetryConfig) -> Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
            "test", "test", None, None, "t",
        ))
        .retry_config(retry)
        .load()
        .await;
    Client::new(&config)
}

fn kafka_brokers() -> String {
    env(
        "SHOPSTREAM_TEST_KAFKA_BROKERS",
        "start tansu (`cargo install tansu --features dynostore`, then `tansu broker \
         --listener-url tcp://127.0.0.1:9092 --advertised-listener-url tcp://127.0.0.1:9092 \
         --storage-engine memory://tansu/`) and set SHOPSTREAM_TEST_KAFKA_BROKERS=127.0.0.1:9092",
    )
}

impl Fixture {
    /// A new, empty stream of `partitions` partitions (shards) on `kind`.
    pub async fn new(kind: Kind, partitions: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(Embedded::open(dir.path(), "").unwrap());
        let name = format!("t-{}", uuid::Uuid::new_v4().simple());
        let source = match kind {
            Kind::Log => Source::Log(StoreLog::new(store.clone(), partitions)),
            Kind::Kinesis => {
                let client = kinesis_client().await;
                kinesis::ensure_stream(&client, &name, partitions as i32)
                    .await
                    .unwrap();
                Source::Kinesis {
                    client,
                    stream: name,
                }
            }
            Kind::Kafka => {
                let settings = KafkaSettings {
                    brokers: kafka_brokers(),
                    topic: name.clone(),
                    group: format!("g-{name}"),
                    batch: 100,
                    linger: Duration::from_millis(50),
                    session_timeout: Duration::from_secs(6),
                };
                kafka::ensure_topic(&settings, partitions as i32)
                    .await
                    .unwrap();
                Source::Kafka(settings)
            }
        };
        Self {
            store,
            source,
            _dir: dir,
        }
    }

    /// The stream's name in the lease table.
    pub fn stream(&self) -> String {
        match &self.source {
            Source::Log(_) => ingest::log::STREAM.to_owned(),
            Source::Kinesis { stream, .. } => stream.clone(),
            Source::Kafka(s) => s.topic.clone(),
        }
    }

    pub fn sink(&self) -> Box<dyn EventSink> {
        match &self.source {
            Source::Log(log) => Box::new(log.clone()),
            Source::Kinesis { client, stream } => {
                Box::new(KinesisSink::new(client.clone(), stream.clone()))
            }
            Source::Kafka(s) => Box::new(KafkaSink::new(s).unwrap()),
        }
    }

    pub fn kafka_settings(&self) -> &KafkaSettings {
        match &self.source {
            Source::Kafka(s) => s,
            _ => panic!("not a Kafka fixture"),
        }
    }

    pub fn kinesis_client(&self) -> &Client {
        match &self.source {
            Source::Kinesis { client, .. } => client,
            _ => panic!("not a Kinesis fixture"),
        }
    }

    pub fn pipeline(&self) -> Pipeline {
        Pipeline::new(self.store.clone(), Bus::default())
    }

    /// Starts a consumer whose pipeline commits through `store` (a
    /// [`storage::faulty::Faulty`] over this fixture's store).
    pub fn start_through(&self, owner: &str, failover: Duration, store: Arc<dyn Store>) -> Running {
        self.start_with(owner, failover, Pipeline::new(store, Bus::default()))
    }

    /// The Kinesis consumer of this fixture, for tests that change its
    /// settings or client before running it.
    pub fn kinesis_consumer(&self, owner: &str, failover: Duration) -> KinesisConsumer {
        let Source::Kinesis { client, stream } = &self.source else {
            panic!("not a Kinesis fixture")
        };
        KinesisConsumer {
            client: client.clone(),
            stream: stream.clone(),
            leases: Leases::new(self.store.clone(), owner, failover),
            pipeline: self.pipeline(),
            settings: KinesisSettings {
                batch: 100,
                idle_poll: Duration::from_millis(50),
                shard_sync: Duration::from_millis(500),
                ..KinesisSettings::default()
            },
        }
    }

    /// Starts a consumer (a group member, a worker) named `owner`.
    pub fn start(&self, owner: &str, failover: Duration) -> Running {
        self.start_with(owner, failover, self.pipeline())
    }

    fn start_with(&self, owner: &str, failover: Duration, pipeline: Pipeline) -> Running {
        let (stop, stopped) = watch::channel(false);
        let leases = Leases::new(self.store.clone(), owner, failover);
        let task = match &self.source {
            Source::Log(log) => {
                let consumer = LogConsumer {
                    log: log.clone(),
                    leases,
                    pipeline,
                    settings: ConsumerSettings {
                        batch: 100,
                        idle_poll: Duration::from_millis(50),
                    },
                };
                tokio::spawn(consumer.run(stopped))
            }
            Source::Kinesis { .. } => {
                let mut consumer = self.kinesis_consumer(owner, failover);
                consumer.pipeline = pipeline;
                tokio::spawn(consumer.run(stopped))
            }
            Source::Kafka(settings) => {
                let consumer = KafkaConsumer {
                    settings: settings.clone(),
                    leases,
                    pipeline,
                };
                tokio::spawn(async move { consumer.run(stopped).await.unwrap() })
            }
        };
        Running { stop, task }
    }

    pub fn leases(&self) -> Leases {
        Leases::new(self.store.clone(), "observer", Duration::from_secs(10))
    }

    pub async fn lease_list(&self) -> Vec<(String, Lease)> {
        self.leases().list(&self.stream()).await.unwrap()
    }

    pub async fn on_hand(&self, product: &str) -> i64 {
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
    pub async fn wait_totals(&self, want: &HashMap<String, i64>) {
        let deadline = Deadline::start();
        loop {
            let mut got = HashMap::new();
            for p in want.keys() {
                got.insert(p.clone(), self.on_hand(p).await);
            }
            if &got == want {
                return;
            }
            assert!(
                deadline.wait().await,
                "totals not reached: got {got:?}, want {want:?}"
            );
        }
    }

    /// Puts one more +1 on every product and waits for the totals: each
    /// product's partition has then been read past everything published
    /// before, so totals that still match prove nothing was applied twice.
    pub async fn settle(&self, want: &mut HashMap<String, i64>) {
        let records: Vec<_> = want
            .iter_mut()
            .map(|(p, n)| {
                *n += 1;
                adjust(p, 1)
            })
            .collect();
        self.sink().publish_raw(&records).await.unwrap();
        self.wait_totals(want).await;
    }

    pub async fn dead_letters(&self) -> Vec<processors::state::DeadLetter> {
        processors::read::dead_letters(self.store.as_ref(), 1000, None)
            .await
            .unwrap()
            .0
            .into_iter()
            .map(|(_, d)| d)
            .collect()
    }

    /// Waits until `owner` holds `n` unexpired leases of the stream.
    pub async fn wait_owned(&self, owner: &str, n: usize) {
        let deadline = Deadline::start();
        loop {
            let seen = self.lease_list().await;
            if owned(&seen, owner) == n {
                return;
            }
            assert!(
                deadline.wait().await,
                "{owner} does not hold {n} leases: {seen:?}"
            );
        }
    }
}

/// How many unexpired leases `owner` holds in `leases`.
pub fn owned(leases: &[(String, Lease)], owner: &str) -> usize {
    let now = ingest::lease::now_ms();
    leases
        .iter()
        .filter(|(_, l)| l.owner.as_deref() == Some(owner) && l.expires_at > now)
        .count()
}

/// A running consumer.
pub struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Asks it to stop and waits until it has (leases released).
    pub async fn stop(self) {
        self.stop.send(true).unwrap();
        self.task.await.unwrap();
    }

    /// Ends it at once, with no release and no last commit, as a crash would.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// A generous deadline for a condition: two minutes, so a loaded machine
/// only makes a test slower, never wrong.
pub struct Deadline(Instant);

impl Deadline {
    pub fn start() -> Self {
        Self(Instant::now())
    }

    /// Pauses before the next look; false once the deadline has passed.
    pub async fn wait(&self) -> bool {
        if self.0.elapsed() > Duration::from_secs(120) {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        true
    }
}

pub fn products(n: usize) -> Vec<String> {
    (0..n).map(|_| uuid::Uuid::now_v7().to_string()).collect()
}

pub fn event(kind: &str, data: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": uuid::Uuid::now_v7(), "type": kind, "occurred_at": "2026-11-23T10:05:30Z",
        "source": "test", "data": data
    }))
    .unwrap()
}

pub fn adjust(product: &str, delta: i64) -> (String, Vec<u8>) {
    let data = event(
        "stock.adjusted",
        json!({"product_id": product, "delta": delta, "reason": "received"}),
    );
    (product.to_owned(), data)
}

pub fn count(product: &str, on_hand: i64, sequence: u64) -> (String, Vec<u8>) {
    let data = event(
        "stock.counted",
        json!({"product_id": product, "on_hand": on_hand, "sequence": sequence}),
    );
    (product.to_owned(), data)
}

/// `n` adjustments spread over `ps`, added to `want`.
pub fn adjustments(
    ps: &[String],
    n: usize,
    want: &mut HashMap<String, i64>,
) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let p = &ps[i % ps.len()];
            let d = (i % 5) as i64 + 1;
            *want.entry(p.clone()).or_default() += d;
            adjust(p, d)
        })
        .collect()
}
