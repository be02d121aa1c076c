//! Fault tests on the AWS backend (DynamoDB and Kinesis emulators): a worker
//! frozen with SIGSTOP past the failover time while it holds a batch, then
//! thawed; and a TCP proxy between the server and the emulators that cuts
//! and delays connections mid-commit. Totals are exact afterwards.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::{
    helpers::{App, Backend, Env, dynamodb_endpoint, eventually_within, kinesis_endpoint},
    pipeline::{Totals, generate, verify},
};

/// Produces `n` generated events on the stream of `env` (its endpoints),
/// and returns what the totals must be.
async fn produce(env: &Env, n: usize) -> Totals {
    let (file, totals) = generate(n, 30);
    let path = env
        .dir
        .path()
        .join(format!("events-{}.jsonl", uuid::Uuid::new_v4()));
    std::fs::write(&path, file).unwrap();
    env.produce(&path, 500).await;
    totals
}

async fn exact(app: &App, totals: &Totals) {
    let admin = app.admin_token().await;
    eventually_within("totals exact", Duration::from_secs(300), || async {
        verify(app, &admin, totals).await
    })
    .await;
}

fn signal(app: &App, sig: &str) {
    let pid = app.child.id().expect("running");
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// A worker frozen (SIGSTOP) past `lease_failover_secs` while it holds a
/// batch loses its leases to the other instance; thawed (SIGCONT), it cannot
/// commit what it held, and every total is exact.
#[tokio::test]
async fn a_worker_frozen_past_the_failover_cannot_commit_when_it_wakes() {
    let a_env = Env::new(Backend::Aws)
        .kinesis(2)
        .set("SHOPSTREAM_LEASE_FAILOVER_SECS", "3")
        .set("SHOPSTREAM_CONSUMER_BATCH", "100");
    let (code, out, err) = a_env.run(&["init"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let totals = produce(&a_env, 1500).await;
    let a = a_env.spawn().listening().await;
    let admin = a.admin_token().await;
    // A is applying: some views counted, far from all.
    eventually_within("A is applying", Duration::from_secs(120), || async {
        let s = a
            .call(
                reqwest::Method::GET,
                "/api/analytics/summary?minutes=120",
                Some(&admin),
                None,
            )
            .await;
        match s.body["totals"]["views"].as_i64() {
            Some(v) if v > 0 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    signal(&a, "-STOP");
    let b = a_env.another().spawn().listening().await;
    // B takes every shard once A's leases stand still for the failover time.
    let b_admin = b.admin_token().await;
    eventually_within("B owns every shard", Duration::from_secs(120), || async {
        let r = b
            .call(
                reqwest::Method::GET,
                "/api/admin/leases",
                Some(&b_admin),
                None,
            )
            .await;
        let owners: Vec<String> = r.body.as_array().map_or(Vec::new(), |l| {
            l.iter()
                .map(|x| x["owner"].as_str().unwrap_or("").to_owned())
                .collect()
        });
        let mine = owners.iter().filter(|o| **o == owners[0]).count();
        if owners.len() == 2 && mine == 2 && !owners[0].is_empty() {
            Ok(())
        } else {
            Err(format!("{owners:?}"))
        }
    })
    .await;
    signal(&a, "-CONT");
    exact(&b, &totals).await;
    // A noticed: its batch was fenced or its lease found lost.
    eventually_within("A saw its leases go", Duration::from_secs(60), || async {
        let logs = a.logs();
        if logs.contains("fenced") || logs.contains("lease lost") {
            Ok(())
        } else {
            Err(logs)
        }
    })
    .await;
    // Still exact with both running (nothing applied twice by the zombie).
    exact(&b, &totals).await;
    b.stop().await;
    a.stop().await;
}

/// What the proxy did.
#[derive(Default)]
struct Cuts {
    responses: AtomicU64,
    cut: AtomicU64,
}

/// A TCP proxy to `upstream` that delays every chunk a little and cuts one
/// answer in `cut_every`: it forwards the request, then drops the connection
/// as the answer starts coming back — so the emulator did what the server
/// never hears was done.
async fn fault_proxy(upstream: String, cut_every: u64, cuts: Arc<Cuts>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = upstream
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let (upstream, cuts) = (upstream.clone(), cuts.clone());
            tokio::spawn(async move {
                let Ok(mut server) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.split();
                let (mut sr, mut sw) = server.split();
                let mut up = vec![0u8; 64 * 1024];
                let mut down = vec![0u8; 64 * 1024];
                // Whether a request went up whose answer has not started.
                let mut asked = false;
                loop {
                    tokio::select! {
                        r = cr.read(&mut up) => {
                            let Ok(k) = r else { return };
                            if k == 0 { return }
                            asked = true;
                            tokio::time::sleep(Duration::from_millis(k as u64 % 7)).await;
                            if sw.write_all(&up[..k]).await.is_err() { return }
                        }
                        r = sr.read(&mut down) => {
                            let Ok(k) = r else { return };
                            if k == 0 { return }
                            if asked {
                                asked = false;
                                let n = cuts.responses.fetch_add(1, Ordering::SeqCst);
                                if n % cut_every == cut_every - 1 {
                                    cuts.cut.fetch_add(1, Ordering::SeqCst);
                                    return;
                                }
                            }
                            tokio::time::sleep(Duration::from_millis(k as u64 % 5)).await;
                            if cw.write_all(&down[..k]).await.is_err() { return }
                        }
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

/// Connections between the server and the DynamoDB and Kinesis emulators
/// are delayed, and some are cut after the request and before its answer
/// (mid-commit, mid-read): retries and the fence keep every total exact.
#[tokio::test]
async fn cut_and_delayed_connections_to_the_emulators_lose_and_double_nothing() {
    let env = Env::new(Backend::Aws)
        .kinesis(2)
        .set("SHOPSTREAM_CONSUMER_BATCH", "50");
    let (code, out, err) = env.run(&["init"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let totals = produce(&env, 600).await;
    let (dynamo_cuts, kinesis_cuts) = (Arc::new(Cuts::default()), Arc::new(Cuts::default()));
    let dynamo = fault_proxy(dynamodb_endpoint(), 13, dynamo_cuts.clone()).await;
    let kinesis = fault_proxy(kinesis_endpoint(), 11, kinesis_cuts.clone()).await;
    let app = env
        .another()
        .set("AWS_ENDPOINT_URL", &dynamo)
        .set("AWS_ENDPOINT_URL_KINESIS", &kinesis)
        .spawn()
        .listening()
        .await;
    exact(&app, &totals).await;
    assert!(
        dynamo_cuts.cut.load(Ordering::SeqCst) > 0 && kinesis_cuts.cut.load(Ordering::SeqCst) > 0,
        "the proxies cut nothing: {} / {} answers",
        dynamo_cuts.responses.load(Ordering::SeqCst),
        kinesis_cuts.responses.load(Ordering::SeqCst)
    );
    app.stop().await;
}
