//! Lease expiry never compares clocks across hosts: a second instance whose
//! clock is 15 s ahead (Debian `faketime`) shares the shards with the first
//! without lease ping-pong, and every total is exact.

use std::{collections::HashMap, time::Duration};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{App, Backend, Env, adjust, create_product, eventually_within};

async fn owners(app: &App, admin: &str) -> HashMap<String, String> {
    let r = app
        .call(Method::GET, "/api/admin/leases", Some(admin), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["shard"].as_str().unwrap().to_owned(),
                l["owner"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn an_instance_with_its_clock_15_s_ahead_causes_no_lease_ping_pong() {
    let a_env = Env::new(Backend::Aws)
        .kinesis(4)
        .set("SHOPSTREAM_LEASE_FAILOVER_SECS", "6");
    let a = a_env.start().await;
    let admin = a.admin_token().await;
    let mut products = Vec::new();
    for i in 0..8 {
        products.push(create_product(&a, &admin, &format!("CLOCK-{i}")).await);
    }
    let all_mine = |o: &HashMap<String, String>, n: usize| {
        o.len() == 4 && o.values().filter(|v| !v.is_empty()).count() == n
    };
    eventually_within("A holds every shard", Duration::from_secs(120), || async {
        let o = owners(&a, &admin).await;
        if all_mine(&o, 4) && o.values().all(|v| v == o.values().next().unwrap()) {
            Ok(())
        } else {
            Err(format!("{o:?}"))
        }
    })
    .await;
    let b = a_env.another().clock_ahead(15).spawn().listening().await;
    // They settle at two shards each (B takes its share by stealing, one a
    // round: A's leases are live, and B's clock does not make them look
    // lapsed).
    eventually_within(
        "the shards are shared 2/2",
        Duration::from_secs(120),
        || async {
            let o = owners(&a, &admin).await;
            let mut per: HashMap<&str, usize> = HashMap::new();
            for v in o.values() {
                *per.entry(v.as_str()).or_default() += 1;
            }
            if per.len() == 2 && per.values().all(|n| *n == 2) && !per.contains_key("") {
                Ok(())
            } else {
                Err(format!("{o:?}"))
            }
        },
    )
    .await;
    // Then no lease changes hands for three failover times, while events
    // flow: with expiry by wall clock, B would see A's leases as lapsed
    // (15 s > 6 s) and they would change hands every round.
    let settled = owners(&a, &admin).await;
    let mut want: HashMap<String, i64> = HashMap::new();
    let watch = std::time::Instant::now();
    let mut i = 0;
    while watch.elapsed() < Duration::from_secs(18) {
        let p = &products[i % products.len()];
        *want.entry(p.clone()).or_default() += 1;
        let r = a
            .call(
                Method::POST,
                "/api/events",
                Some(&admin),
                Some(json!([adjust(p, 1)])),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        assert_eq!(owners(&a, &admin).await, settled, "a lease changed hands");
        i += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eventually_within("totals exact", Duration::from_secs(120), || async {
        for (p, n) in &want {
            let r = a.get(&format!("/api/inventory/{p}")).await;
            if r.body["on_hand"].as_i64() != Some(*n) {
                return Err(format!("{p}: {} (want {n})", r.text));
            }
        }
        Ok(())
    })
    .await;
    b.stop().await;
    a.stop().await;
}
