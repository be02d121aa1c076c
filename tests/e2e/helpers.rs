use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";
pub const JWT_SECRET: &str = "e2e-test-secret-that-is-long-enough-0123456789";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Aws,
}

/// Runs a block for each backend as its own test.
#[macro_export]
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test($crate::helpers::Backend::Embedded).await;
                }
            )*
        }
        mod aws {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test($crate::helpers::Backend::Aws).await;
                }
            )*
        }
    };
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_shopstream")
}

pub fn dynamodb_endpoint() -> String {
    std::env::var("SHOPSTREAM_TEST_DYNAMODB_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "SHOPSTREAM_TEST_DYNAMODB_ENDPOINT is not set: run the tests with ./scripts/test.sh, \
             or start moto's server yourself (`moto_server -H 127.0.0.1 -p 5000`) and set \
             SHOPSTREAM_TEST_DYNAMODB_ENDPOINT=http://127.0.0.1:5000"
        )
    })
}

pub fn kinesis_endpoint() -> String {
    std::env::var("SHOPSTREAM_TEST_KINESIS_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "SHOPSTREAM_TEST_KINESIS_ENDPOINT is not set: run the tests with ./scripts/test.sh, \
             or start kinesis-mock yourself (`npm install kinesis-local`, then in \
             node_modules/kinesis-local: KINESIS_MOCK_PLAIN_PORT=4568 node main.js) and set \
             SHOPSTREAM_TEST_KINESIS_ENDPOINT=http://127.0.0.1:4568"
        )
    })
}

pub fn kafka_brokers() -> String {
    std::env::var("SHOPSTREAM_TEST_KAFKA_BROKERS").unwrap_or_else(|_| {
        panic!(
            "SHOPSTREAM_TEST_KAFKA_BROKERS is not set: run the tests with ./scripts/test.sh, \
             or start tansu yourself (`cargo install tansu --features dynostore`, then \
             `tansu broker --listener-url tcp://127.0.0.1:9092 --advertised-listener-url \
             tcp://127.0.0.1:9092 --storage-engine memory://tansu/`) and set \
             SHOPSTREAM_TEST_KAFKA_BROKERS=127.0.0.1:9092"
        )
    })
}

/// Where one test's instance keeps its data: its own directory, and on AWS its
/// own table prefix.
#[derive(Debug)]
pub struct Env {
    pub backend: Backend,
    pub dir: tempfile::TempDir,
    pub prefix: String,
    pub extra: Vec<(String, String)>,
    /// A program the binary runs under (none so far).
    pub wrapper: Vec<String>,
}

/// Debian's libfaketime (package `faketime`, which ./scripts/test.sh
/// installs), multithreaded flavour.
fn libfaketime() -> String {
    let arch = std::env::consts::ARCH;
    [
        format!("/usr/lib/{arch}-linux-gnu/faketime/libfaketimeMT.so.1"),
        "/usr/lib/faketime/libfaketimeMT.so.1".to_owned(),
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .unwrap_or_else(|| {
        panic!("libfaketime is not installed: run the tests with ./scripts/test.sh, or apt-get install faketime")
    })
}

impl Env {
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            dir: tempfile::tempdir().unwrap(),
            prefix: format!("e2e{}_", rand_suffix()),
            extra: vec![
                ("SHOPSTREAM_SEED_DEMO_CATALOGUE".into(), "false".into()),
                ("SHOPSTREAM_ADMIN_EMAIL".into(), ADMIN_EMAIL.into()),
                ("SHOPSTREAM_ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into()),
                // The tests play many customers from one loopback address;
                // tests/e2e/limits.rs sets the sign-in limits it tests.
                (
                    "SHOPSTREAM_LIMIT_AUTH_PER_ADDRESS_PER_MINUTE".into(),
                    "100000".into(),
                ),
            ],
            wrapper: Vec::new(),
        }
    }

    /// Another instance of the same deployment: the same tables, stream and
    /// settings, a data directory of its own.
    pub fn another(&self) -> Self {
        Self {
            backend: self.backend,
            dir: tempfile::tempdir().unwrap(),
            prefix: self.prefix.clone(),
            extra: self.extra.clone(),
            wrapper: self.wrapper.clone(),
        }
    }

    /// Runs the binary with its clock `secs` ahead of the machine's
    /// (libfaketime preloaded into the binary itself, so that signals reach
    /// it as they would without).
    pub fn clock_ahead(self, secs: u32) -> Self {
        self.set("LD_PRELOAD", &libfaketime())
            .set("FAKETIME", &format!("+{secs}s"))
    }

    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.extra.retain(|(k, _)| k != key);
        self.extra.push((key.into(), value.into()));
        self
    }

    /// Reads and writes events on a Kinesis stream of its own in the emulator.
    pub fn kinesis(self, shards: u32) -> Self {
        let stream = format!("e2e-{}", rand_suffix());
        self.set("SHOPSTREAM_STREAM", "kinesis")
            .set("SHOPSTREAM_KINESIS_STREAM", &stream)
            .set("SHOPSTREAM_KINESIS_SHARDS", &shards.to_string())
            .set("SHOPSTREAM_SHARD_SYNC_SECS", "1")
            .set("AWS_ENDPOINT_URL_KINESIS", &kinesis_endpoint())
            .set("AWS_REGION", "us-east-1")
            .set("AWS_ACCESS_KEY_ID", "test")
            .set("AWS_SECRET_ACCESS_KEY", "test")
            .set("AWS_EC2_METADATA_DISABLED", "true")
    }

    /// Reads and writes events on a Kafka topic of its own on the broker.
    pub fn kafka(self, partitions: u32) -> Self {
        let suffix = rand_suffix();
        self.set("SHOPSTREAM_STREAM", "kafka")
            .set("SHOPSTREAM_KAFKA_BROKERS", &kafka_brokers())
            .set("SHOPSTREAM_KAFKA_TOPIC", &format!("e2e-{suffix}"))
            .set("SHOPSTREAM_KAFKA_GROUP", &format!("e2e-{suffix}"))
            .set("SHOPSTREAM_KAFKA_PARTITIONS", &partitions.to_string())
            .set("SHOPSTREAM_KAFKA_SESSION_TIMEOUT_MS", "6000")
    }

    pub fn without(mut self, key: &str) -> Self {
        self.extra.retain(|(k, _)| k != key);
        self
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A command for the binary with this environment.
    pub fn command(&self) -> Command {
        let mut cmd = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(binary());
                c
            }
            None => Command::new(binary()),
        };
        cmd.current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SHOPSTREAM_DATA_DIR", self.data_dir())
            .env("SHOPSTREAM_TABLE_PREFIX", &self.prefix)
            .env("SHOPSTREAM_LISTEN", "127.0.0.1:0")
            .env("SHOPSTREAM_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if self.backend == Backend::Aws {
            cmd.env("SHOPSTREAM_BACKEND", "aws")
                .env("SHOPSTREAM_JWT_SECRET", JWT_SECRET)
                .env("AWS_ENDPOINT_URL", dynamodb_endpoint())
                .env("AWS_REGION", "us-east-1")
                .env("AWS_ACCESS_KEY_ID", "test")
                .env("AWS_SECRET_ACCESS_KEY", "test")
                .env("AWS_EC2_METADATA_DISABLED", "true");
        }
        for (k, v) in &self.extra {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs a CLI command to completion: (exit code, stdout, stderr).
    pub async fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out =
            tokio::time::timeout(Duration::from_secs(180), self.command().args(args).output())
                .await
                .expect("command timed out")
                .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `shopstream produce` of a JSON-lines file, in batches of `batch`;
    /// asserts it succeeded and returns what it printed.
    pub async fn produce(&self, file: &Path, batch: usize) -> String {
        let (code, out, err) = self
            .run(&[
                "produce",
                "--file",
                file.to_str().unwrap(),
                "--batch",
                &batch.to_string(),
            ])
            .await;
        assert_eq!(code, 0, "{out}{err}");
        out
    }

    /// Starts the server (after `init` on AWS) and waits until it listens.
    pub async fn start(&self) -> App {
        if self.backend == Backend::Aws {
            let (code, out, err) = self.run(&["init"]).await;
            assert_eq!(code, 0, "init failed: {out}{err}");
        }
        self.spawn().listening().await
    }

    /// Spawns the server without waiting for anything (no `init` either).
    pub fn spawn(&self) -> Starting {
        let stderr_path = self
            .dir
            .path()
            .join(format!("server-{}.log", rand_suffix()));
        let mut child = self
            .command()
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Starting {
            child,
            lines,
            stderr_path,
        }
    }
}

/// A server that was spawned and may not listen yet.
#[derive(Debug)]
pub struct Starting {
    pub child: Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    pub stderr_path: PathBuf,
}

impl Starting {
    /// Waits for the line that says where the server listens.
    pub async fn listening(self) -> App {
        let Starting {
            child,
            mut lines,
            stderr_path,
        } = self;
        let mut printed = Vec::new();
        let base = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(addr) = line.strip_prefix("shopstream listening on ") {
                    return addr.to_owned();
                }
                printed.push(line);
            }
            panic!(
                "server exited before listening: {}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        })
        .await
        .expect("server did not start in 60 s");
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        App {
            base,
            child,
            http: reqwest::Client::new(),
            stdout: printed,
            stderr_path,
        }
    }
}

fn rand_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// A running server.
#[derive(Debug)]
pub struct App {
    pub base: String,
    pub child: Child,
    pub http: reqwest::Client,
    /// What the server printed before it listened.
    pub stdout: Vec<String>,
    pub stderr_path: PathBuf,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The fields a problem body names.
    pub fn problem_fields(&self) -> Vec<String> {
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "not a problem: {}",
            self.text
        );
        let mut fields: Vec<String> = self.body["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e["field"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        fields.sort();
        fields
    }
}

impl App {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let r = req.send().await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.send(req).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None, None).await
    }

    pub async fn login(&self, email: &str, password: &str) -> Reply {
        self.call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"email": email, "password": password})),
        )
        .await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Reply {
        self.call(
            Method::POST,
            "/api/auth/refresh",
            None,
            Some(json!({"refresh_token": refresh_token})),
        )
        .await
    }

    pub async fn admin_token(&self) -> String {
        let r = self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.body["access_token"].as_str().unwrap().to_owned()
    }

    /// Registers a customer and returns (access token, refresh token, user id).
    pub async fn customer(&self, email: &str) -> (String, String, String) {
        let r = self
            .call(
                Method::POST,
                "/api/auth/register",
                None,
                Some(json!({"email": email, "password": "a long enough password", "name": "Ada"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        (
            r.body["access_token"].as_str().unwrap().to_owned(),
            r.body["refresh_token"].as_str().unwrap().to_owned(),
            r.body["user"]["id"].as_str().unwrap().to_owned(),
        )
    }

    /// Stops the server with SIGTERM and waits for it to exit.
    pub async fn stop(mut self) {
        stop_cleanly(&mut self.child, &self.stderr_path).await;
    }

    /// Kills the server with SIGKILL: no shutdown work at all.
    pub async fn kill(mut self) {
        self.child.start_kill().unwrap();
        let _ = self.child.wait().await;
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

/// Sends SIGTERM and expects the process to exit with code 0 within 30 s.
pub async fn stop_cleanly(child: &mut Child, stderr_path: &Path) {
    let pid = child.id().expect("running");
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("server did not stop within 30 s of SIGTERM")
        .unwrap();
    assert!(
        status.success(),
        "server exited with {status}: {}",
        std::fs::read_to_string(stderr_path).unwrap_or_default()
    );
}

/// Whether the process has a handler for SIGTERM (Linux: `SigCgt` in
/// /proc/PID/status, bit 14 for signal 15).
pub fn catches_sigterm(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << 14) != 0)
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn product(sku: &str) -> Value {
    json!({
        "sku": sku, "name": format!("Product {sku}"), "price": "19.99", "currency": "EUR",
        "category": "shirts", "supplier_id": "acme", "attributes": {"colour": "red"},
        "low_stock_threshold": 3
    })
}

/// Polls until `check` holds, for up to three minutes.
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    // Generous: a loaded machine (and moto under it) only makes a test
    // slower; a condition that holds returns at once.
    eventually_within(what, Duration::from_secs(180), check).await
}

/// Polls until `check` holds, for up to `deadline` (for conditions whose
/// time grows with the load on the machine and the emulators).
pub async fn eventually_within<F, Fut>(what: &str, deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let start = std::time::Instant::now();
    let mut last = String::new();
    while start.elapsed() < deadline {
        match check().await {
            Ok(()) => return,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within {deadline:?}: {last}");
}

/// Appends events through `POST /api/events` (admin), which must take them all.
pub async fn post_events(app: &App, admin: &str, events: Value) {
    let r = app
        .call(Method::POST, "/api/events", Some(admin), Some(events))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
}

/// A `stock.adjusted` event (id and time filled in by the collector).
pub fn adjust(id: &str, delta: i64) -> Value {
    json!({"type": "stock.adjusted", "source": "e2e", "data": {"product_id": id, "delta": delta, "reason": "received"}})
}

/// Creates [`product`]`(sku)` as the admin and returns its id.
pub async fn create_product(app: &App, admin: &str, sku: &str) -> String {
    let r = app
        .call(
            Method::POST,
            "/api/products",
            Some(admin),
            Some(product(sku)),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.body["id"].as_str().unwrap().to_owned()
}

/// The sum of a metric's series whose line starts with `name` (a name, or a
/// name with labels).
pub async fn metric(app: &App, name: &str) -> f64 {
    app.get("/metrics")
        .await
        .text
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
