//! Stopping: a SIGTERM at any point of start-up, or while a batch is being
//! applied, ends the server cleanly (exit code 0) and releases its leases.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    App, Backend, Env, adjust, catches_sigterm, create_product, eventually, post_events,
    stop_cleanly,
};

const PARTITIONS: usize = 4;

/// A lease left behind would keep the next instance out for ten minutes,
/// far past any deadline here: taking over at once proves the release.
fn env(backend: Backend) -> Env {
    Env::new(backend)
        .set("SHOPSTREAM_LEASE_FAILOVER_SECS", "600")
        .set("SHOPSTREAM_LOG_PARTITIONS", &PARTITIONS.to_string())
}

#[tokio::test]
async fn sigterm_as_soon_as_it_is_caught_exits_cleanly() {
    for backend in [Backend::Embedded, Backend::Aws] {
        let env = env(backend);
        if backend == Backend::Aws {
            let (code, out, err) = env.run(&["init"]).await;
            assert_eq!(code, 0, "{out}{err}");
        }
        let mut starting = env.spawn();
        let pid = starting.child.id().unwrap();
        // The earliest moment a SIGTERM can be handled at all: the handler
        // is in place, the store is (most likely) still being opened.
        eventually("the SIGTERM handler is registered", || async {
            if catches_sigterm(pid) {
                Ok(())
            } else {
                Err(format!("{pid} does not catch SIGTERM yet"))
            }
        })
        .await;
        stop_cleanly(&mut starting.child, &starting.stderr_path).await;
    }
}

#[tokio::test]
async fn sigterm_right_after_the_listening_line_exits_cleanly() {
    for backend in [Backend::Embedded, Backend::Aws] {
        let env = env(backend);
        let app = env.start().await;
        let pid = app.child.id().unwrap();
        assert!(
            catches_sigterm(pid),
            "SIGTERM is caught before the server says it listens"
        );
        app.stop().await;
    }
}

/// The shards' owners, once every partition's lease is held.
async fn owners(app: &App, admin: &str) -> Result<BTreeSet<String>, String> {
    let r = app
        .call(Method::GET, "/api/admin/leases", Some(admin), None)
        .await;
    let leases = r.body.as_array().cloned().unwrap_or_default();
    let owners: Vec<String> = leases
        .iter()
        .filter_map(|l| l["owner"].as_str().map(str::to_owned))
        .collect();
    if leases.len() == PARTITIONS && owners.len() == PARTITIONS {
        Ok(owners.into_iter().collect())
    } else {
        Err(format!("leases: {}", r.body))
    }
}

async fn on_hand(app: &App, product: &str) -> Value {
    app.get(&format!("/api/inventory/{product}")).await.body["on_hand"].clone()
}

#[tokio::test]
async fn sigterm_while_a_batch_is_applied_releases_the_leases() {
    // Two instances on one DynamoDB store: the second can only read the
    // partitions at once if the first released them.
    let env = env(Backend::Aws);
    let first = env.start().await;
    let admin = first.admin_token().await;
    let product = create_product(&first, &admin, "SIGTERM-1").await;
    eventually("the first instance holds every partition", || async {
        owners(&first, &admin).await.map(drop)
    })
    .await;
    let held = owners(&first, &admin).await.unwrap();
    let events: Vec<Value> = (0..300).map(|_| adjust(&product, 1)).collect();
    post_events(&first, &admin, json!(events)).await;
    // Stopped at once: the consumer is reading or committing those events.
    first.stop().await;

    let second = env.start().await;
    let admin = second.admin_token().await;
    eventually(
        "the second instance takes every partition at once",
        || async {
            let now = owners(&second, &admin).await?;
            if now.is_disjoint(&held) {
                Ok(())
            } else {
                Err(format!("still held by the stopped instance: {now:?}"))
            }
        },
    )
    .await;
    // One partition per product, in order: once a last adjustment of 1,000
    // is applied, all 300 before it are, each once.
    post_events(&second, &admin, json!([adjust(&product, 1000)])).await;
    eventually("the last adjustment is applied", || async {
        let total = on_hand(&second, &product).await;
        match total.as_i64() {
            Some(n) if n >= 1000 => Ok(()),
            _ => Err(format!("on hand {total}")),
        }
    })
    .await;
    let total = on_hand(&second, &product).await;
    assert_eq!(total, json!(1300), "every event applied exactly once");
    second.stop().await;
}

/// Each shard with an owner, and its owner.
async fn leases(app: &App, admin: &str) -> Vec<(String, String)> {
    let r = app
        .call(Method::GET, "/api/admin/leases", Some(admin), None)
        .await;
    r.body
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|l| {
            Some((
                l["shard"].as_str()?.to_owned(),
                l["owner"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// Two instances share a Kinesis stream's shards under load; the first gets
/// SIGTERM. Its websockets close with 1001, its leases are released, and the
/// second takes every shard at once (the failover time is a minute: only a
/// release explains a handover before it). Every event is applied once.
#[tokio::test]
async fn sigterm_under_load_hands_every_shard_over_at_once() {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    const SHARDS: usize = 4;
    let env = Env::new(Backend::Aws)
        .kinesis(SHARDS as u32)
        .set("SHOPSTREAM_LEASE_FAILOVER_SECS", "60");
    let first = env.start().await;
    let second = env.another().start().await;
    let admin = second.admin_token().await;
    eventually("the two instances share the shards", || async {
        let held = leases(&second, &admin).await;
        let owners: BTreeSet<&String> = held.iter().map(|(_, o)| o).collect();
        (held.len() == SHARDS && owners.len() == 2)
            .then_some(())
            .ok_or(format!("{held:?}"))
    })
    .await;
    let product = create_product(&second, &admin, "HANDOVER-1").await;
    let mut ws = crate::ws::connect(&first, None).await;
    crate::ws::send(
        &mut ws,
        json!({"op": "subscribe", "topic": format!("stock:{product}")}),
    )
    .await;
    let snapshot = crate::ws::next(&mut ws).await;
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    let close = tokio::spawn(async move {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                other => panic!("the socket ended without a close frame: {other:?}"),
            }
        }
    });
    // Load: 40 requests of 25 adjustments, through the second instance,
    // while the first stops.
    let load = {
        let (http, base) = (second.http.clone(), second.base.clone());
        let (admin, product) = (admin.clone(), product.clone());
        tokio::spawn(async move {
            for _ in 0..40 {
                let events: Vec<Value> = (0..25).map(|_| adjust(&product, 1)).collect();
                let r = http
                    .post(format!("{base}/api/events"))
                    .bearer_auth(&admin)
                    .json(&events)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), reqwest::StatusCode::ACCEPTED);
            }
        })
    };
    eventually("some of the load is applied", || async {
        let n = on_hand(&second, &product).await.as_i64().unwrap_or(0);
        (n >= 100).then_some(()).ok_or(format!("on hand {n}"))
    })
    .await;
    first.stop().await;
    let stopped = std::time::Instant::now();
    // The survivor's lease scans so far: the one under way may have read
    // the lease table before the first instance's release landed.
    let scans_at_exit = crate::helpers::metric(&second, "shopstream_lease_scans_total{").await;
    assert_eq!(
        close.await.unwrap(),
        Some(1001),
        "websockets are closed with 1001 (going away)"
    );
    crate::helpers::eventually_within(
        "the second instance owns every shard, long before the failover time",
        std::time::Duration::from_secs(30),
        || async {
            let held = leases(&second, &admin).await;
            let owners: BTreeSet<&String> = held.iter().map(|(_, o)| o).collect();
            // A lease the first still held would show its owner for a
            // minute; a released one that nobody took, no owner.
            (held.len() == SHARDS && owners.len() == 1)
                .then_some(())
                .ok_or(format!("{held:?}"))
        },
    )
    .await;
    let taken_scan = crate::helpers::metric(&second, "shopstream_lease_taken_scan{").await;
    eprintln!(
        "handover: every shard owned by the second instance {:?} after the first exited \
         (lease scans at the exit: {scans_at_exit}, taken in scan {taken_scan})",
        stopped.elapsed()
    );
    // Scans are a second apart whatever the machine's load: the released
    // leases were taken by the scan under way at the exit or the next one
    // (the handover's "within 2 s", counted in scans rather than wall time).
    assert!(
        taken_scan <= scans_at_exit + 2.0,
        "the shards were taken in scan {taken_scan}; the survivor had done {scans_at_exit} \
         when the first instance exited"
    );
    load.await.unwrap();
    eventually("every adjustment applied", || async {
        let n = on_hand(&second, &product).await.as_i64().unwrap_or(0);
        (n >= 1000).then_some(()).ok_or(format!("on hand {n}"))
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        on_hand(&second, &product).await,
        json!(1000),
        "each event applied exactly once"
    );
    second.stop().await;
}
