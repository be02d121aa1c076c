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
