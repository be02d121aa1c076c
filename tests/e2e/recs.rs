//! Recommendations end to end: a model trained on the pipeline's log, then
//! the live rules (stock, deletions, basket, other users) and the real-time
//! reaction to a view, on both backends.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    helpers::{Backend, Env, adjust, eventually, post_events},
    on_both_backends,
};

async fn product_in(app: &crate::helpers::App, admin: &str, sku: &str, category: &str) -> String {
    let mut p = crate::helpers::product(sku);
    p["category"] = json!(category);
    let r = app
        .call(Method::POST, "/api/products", Some(admin), Some(p))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.body["id"].as_str().unwrap().to_owned()
}

/// Gives each new product `units` of stock and waits until the pipeline
/// has applied it.
async fn stock_each(app: &crate::helpers::App, admin: &str, products: &[String], units: i64) {
    let events: Vec<Value> = products.iter().map(|id| adjust(id, units)).collect();
    post_events(app, admin, Value::Array(events)).await;
    for id in products {
        eventually("the stock to be applied", || async move {
            let r = app.get(&format!("/api/inventory/{id}")).await;
            (r.body["available"] == units).then_some(()).ok_or(r.text)
        })
        .await;
    }
}

fn viewed_by_session(session: &str, product: &str) -> Value {
    json!({"type": "browse.viewed", "source": "e2e",
        "data": {"session_id": session, "product_id": product}})
}

fn ids(r: &Value) -> Vec<String> {
    r["items"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|i| i["product_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Trains until the model has seen `interactions` (the pipeline applies the
/// posted events in the background).
async fn train_until(app: &crate::helpers::App, admin: &str, interactions: u64) {
    eventually("a model trained on every posted view", || async move {
        let r = app
            .call(Method::POST, "/api/admin/model/train", Some(admin), None)
            .await;
        if r.status == StatusCode::OK && r.body["interactions"] == interactions {
            Ok(())
        } else {
            Err(r.text)
        }
    })
    .await;
}

async fn recommendations_follow_behaviour_and_the_rules(backend: Backend) {
    let app = Env::new(backend)
        .set("SHOPSTREAM_RECOMMENDER_TRAIN_SECS", "0")
        .set("SHOPSTREAM_RECOMMEND_PER_CATEGORY", "2")
        .start()
        .await;
    let admin = app.admin_token().await;

    // No model yet: popularity answers, and says so.
    let r = app.get("/api/recommendations").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["fallback"], "popularity");
    assert!(r.body["model_version"].is_null());
    assert!(r.body["recommendation_id"].as_str().is_some());

    // Six products in three categories, all in stock.
    let cats = ["shirts", "shirts", "shoes", "shoes", "hats", "hats"];
    let mut p = Vec::new();
    for (k, c) in cats.iter().enumerate() {
        p.push(product_in(&app, &admin, &format!("REC-{k}"), c).await);
    }
    // Stock is applied per product partition, views per session partition:
    // wait for it so that no rule below sees a product out of stock.
    stock_each(&app, &admin, &p, 10).await;

    // No behaviour yet: the shop's newest products in stock fill the shelf.
    let r = app.get("/api/recommendations").await;
    let mut newest_first = p.clone();
    newest_first.reverse();
    assert_eq!(ids(&r.body), newest_first, "{}", r.text);
    assert!(
        r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["source"] == "newest" && i["reason"] == "new in the shop"),
        "{}",
        r.text
    );

    // The training log: 30 sessions view 0 → 2 → 4, 30 view 1 → 3 → 5.
    // Each view has its own time, so the log (sorted by time) and the model
    // are the same however the partitions interleave when they are applied.
    let start = time::OffsetDateTime::now_utc() - time::Duration::minutes(30);
    let mut events = Vec::new();
    for s in 0..60 {
        let session = uuid::Uuid::new_v4().to_string();
        let chain = if s % 2 == 0 { [0, 2, 4] } else { [1, 3, 5] };
        for (step, k) in chain.into_iter().enumerate() {
            let at = start + time::Duration::seconds(s * 3 + step as i64);
            let mut e = viewed_by_session(&session, &p[k]);
            e["occurred_at"] = json!(
                at.format(&time::format_description::well_known::Rfc3339)
                    .unwrap()
            );
            events.push(e);
        }
    }
    post_events(&app, &admin, json!(events)).await;
    train_until(&app, &admin, 180).await;
    let info = app
        .call(Method::GET, "/api/admin/model", Some(&admin), None)
        .await;
    let version = info.body["version"].as_str().unwrap().to_owned();
    assert_eq!(info.body["items"], 6, "{}", info.text);
    assert_eq!(info.body["trained"], true);
    // Its offline metrics: the chains are predictable, so what follows is
    // ranked high on the later interactions.
    let v = &info.body["report"]["validation"];
    assert!(v["targets"].as_u64().unwrap_or(0) > 0, "{}", info.text);
    let (hr, ndcg) = (v["hr@10"].as_f64().unwrap(), v["ndcg@10"].as_f64().unwrap());
    assert!(ndcg > 0.5 && ndcg <= hr && hr <= 1.0, "{}", info.text);

    // A customer views product 0: their next response leads with 2 (what
    // follows 0), says why, and never offers 0 itself.
    let (token, _, user) = app.customer("rec@example.com").await;
    let view = |product: &str| {
        json!([{"type": "browse.viewed", "source": "e2e",
            "data": {"user_id": user, "product_id": product}}])
    };
    let r = app
        .call(Method::POST, "/api/events", Some(&token), Some(view(&p[0])))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let recs = |token: String| {
        let app = &app;
        async move {
            app.call(
                Method::GET,
                "/api/recommendations?limit=3",
                Some(&token),
                None,
            )
            .await
        }
    };
    eventually("the view of 0 to lead to 2", || {
        let (recs, token, p) = (&recs, token.clone(), &p);
        async move {
            // Led by 2 *because of* the view: before the view (and the
            // stock of 0) is applied, popularity alone can also put 2 first.
            let r = recs(token).await;
            let first = &r.body["items"][0];
            if first["product_id"] == p[2].as_str()
                && first["reason"]
                    .as_str()
                    .is_some_and(|why| why.ends_with("Product REC-0"))
            {
                Ok(())
            } else {
                Err(r.text)
            }
        }
    })
    .await;
    let r = recs(token.clone()).await;
    assert_eq!(r.body["model_version"], version.as_str());
    assert!(r.body["fallback"].is_null());
    let first = &r.body["items"][0];
    // 2 both follows 0 and goes with it (equal evidence): either reason
    // names the viewed product.
    assert!(
        (first["source"] == "sequence" && first["reason"] == "viewed after Product REC-0")
            || (first["source"] == "co-occurrence"
                && first["reason"] == "viewed together with Product REC-0"),
        "{}",
        r.text
    );
    assert!(first["score"].as_f64().unwrap() > 0.0);
    assert!(
        !ids(&r.body).contains(&p[0]),
        "a viewed item came back: {}",
        r.text
    );

    // The newest view drives: after viewing 1, 3 leads.
    let r = app
        .call(Method::POST, "/api/events", Some(&token), Some(view(&p[1])))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    eventually("the view of 1 to lead to 3", || {
        let (recs, token, p) = (&recs, token.clone(), &p);
        async move {
            let r = recs(token).await;
            match ids(&r.body).first() {
                Some(first) if *first == p[3] => Ok(()),
                _ => Err(r.text),
            }
        }
    })
    .await;

    // Out of stock: 3 disappears as soon as its stock is gone.
    post_events(&app, &admin, json!([adjust(&p[3], -10)])).await;
    eventually("3, out of stock, to disappear", || {
        let (recs, token, p) = (&recs, token.clone(), &p);
        async move {
            let r = recs(token).await;
            if r.status == StatusCode::OK && !ids(&r.body).contains(&p[3]) {
                Ok(())
            } else {
                Err(r.text)
            }
        }
    })
    .await;

    // Deleted, or in the basket: never offered.
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/products/{}", p[2]),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = app
        .call(
            Method::POST,
            "/api/basket/items",
            Some(&token),
            Some(json!({"product_id": p[4], "quantity": 1})),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    let r = app
        .call(
            Method::GET,
            "/api/recommendations?limit=10",
            Some(&token),
            None,
        )
        .await;
    let got = ids(&r.body);
    for gone in [&p[0], &p[1], &p[2], &p[3], &p[4]] {
        assert!(!got.contains(gone), "{gone} offered: {}", r.text);
    }
    // At most two per category.
    let items = r.body["items"].as_array().unwrap();
    for c in ["shirts", "shoes", "hats"] {
        assert!(
            items.iter().filter(|i| i["category"] == c).count() <= 2,
            "{}",
            r.text
        );
    }

    // Another customer's history never leaks: a new user gets no
    // sequence-based item from the first one's views.
    let (other, _, _) = app.customer("other@example.com").await;
    let r = app
        .call(
            Method::GET,
            "/api/recommendations?limit=10",
            Some(&other),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["source"] != "sequence" && i["source"] != "co-occurrence"),
        "{}",
        r.text
    );

    // Similar items and basket suggestions come from the same model.
    let r = app
        .get(&format!("/api/products/{}/similar?limit=5", p[1]))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(ids(&r.body).contains(&p[5]), "{}", r.text);
    assert!(!ids(&r.body).contains(&p[1]));
    let r = app
        .call(
            Method::GET,
            "/api/basket/suggestions?limit=5",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        !ids(&r.body).contains(&p[4]),
        "the basket's own item: {}",
        r.text
    );
    // Trending is as of a couple of seconds ago (computed once for every
    // request in that time).
    eventually("hats to trend", || async {
        let r = app.get("/api/trending?window=24h&category=hats").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let items = r.body["items"].as_array().unwrap();
        assert!(items.iter().all(|i| i["category"] == "hats"), "{}", r.text);
        if items.is_empty() {
            return Err(r.text);
        }
        Ok(())
    })
    .await;

    // Attribution: a click and a basket add that carry an item's
    // recommendation id count for its model version and its source.
    let r = recs(token.clone()).await;
    let item = r.body["items"][0].clone();
    let (rid, source) = (
        item["recommendation_id"].as_str().unwrap().to_owned(),
        item["source"].as_str().unwrap().to_owned(),
    );
    assert!(rid.starts_with(&format!("{version}~")), "{}", r.text);
    assert!(rid.ends_with(&format!("~{source}")), "{}", r.text);
    let clicked = item["product_id"].clone();
    let r = app
        .call(
            Method::POST,
            "/api/events",
            Some(&token),
            Some(json!([
                {"type": "browse.viewed", "source": "e2e",
                    "data": {"user_id": user, "product_id": clicked, "recommendation_id": rid}},
                {"type": "basket.added", "source": "e2e",
                    "data": {"user_id": user, "product_id": clicked, "quantity": 1, "recommendation_id": rid}},
            ])),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let r = app
        .call(
            Method::GET,
            "/api/analytics/recommendations",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "customers: {}", r.text);
    eventually("the click to be attributed", || {
        let (app, admin, version, source) = (&app, &admin, &version, &source);
        async move {
            let r = app
                .call(
                    Method::GET,
                    "/api/analytics/recommendations",
                    Some(admin),
                    None,
                )
                .await;
            let Some(v) = r.body.as_array().and_then(|a| {
                a.iter()
                    .find(|v| v["model_version"] == version.as_str())
                    .cloned()
            }) else {
                return Err(r.text);
            };
            let by_source = v["sources"]
                .as_array()
                .and_then(|s| s.iter().find(|s| s["source"] == source.as_str()).cloned())
                .unwrap_or_default();
            let ok = v["clicks"] == 1
                && v["basket_adds"] == 1
                && v["purchases"] == 0
                && v["impressions"].as_i64().unwrap_or(0) >= 1
                && v["responses"].as_i64().unwrap_or(0) >= 1
                && by_source["clicks"] == 1
                && by_source["basket_adds"] == 1
                && by_source["impressions"].as_i64().unwrap_or(0) >= 1;
            if ok { Ok(()) } else { Err(r.text) }
        }
    })
    .await;

    app.stop().await;
}

async fn bad_requests_get_clear_problems(backend: Backend) {
    let app = Env::new(backend)
        .set("SHOPSTREAM_RECOMMENDER_TRAIN_SECS", "0")
        .start()
        .await;
    let admin = app.admin_token().await;
    for (path, field) in [
        ("/api/recommendations?limit=0", "limit"),
        ("/api/recommendations?limit=101", "limit"),
        (
            "/api/recommendations?context_product=nope",
            "context_product",
        ),
        ("/api/recommendations?colour=red", "colour"),
        ("/api/trending?window=7d", "window"),
    ] {
        let r = app.get(path).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{path}: {}",
            r.text
        );
        assert_eq!(r.problem_fields(), [field], "{path}");
    }
    // A product on screen that is gone is no context; a category with no
    // product has nothing to recommend.
    let r = app
        .get("/api/recommendations?context_product=01a20b21-0093-7604-86da-d989b0c4de47")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = app
        .get("/api/recommendations?category=no-such-category")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["items"], serde_json::json!([]), "{}", r.text);
    let r = app
        .get("/api/products/01a20b21-0093-7604-86da-d989b0c4de47/similar")
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    // The model's page is for admins; training with no data says why.
    assert_eq!(
        app.get("/api/admin/model").await.status,
        StatusCode::UNAUTHORIZED
    );
    let (customer, _, _) = app.customer("c@example.com").await;
    let r = app
        .call(Method::GET, "/api/admin/model", Some(&customer), None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .call(Method::GET, "/api/admin/model", Some(&admin), None)
        .await;
    assert_eq!(r.body["trained"], false, "{}", r.text);
    // (The start-up training may still be running: 409 until it is done.)
    eventually("training with no data to say why it cannot", || async {
        let r = app
            .call(Method::POST, "/api/admin/model/train", Some(&admin), None)
            .await;
        if r.status == StatusCode::UNPROCESSABLE_ENTITY && r.text.contains("too little data") {
            Ok(())
        } else if r.status == StatusCode::CONFLICT {
            Err(r.text)
        } else {
            panic!("unexpected: {}", r.text)
        }
    })
    .await;
    app.stop().await;
}

on_both_backends!(
    recommendations_follow_behaviour_and_the_rules,
    bad_requests_get_clear_problems
);

/// The model is persisted: a restarted server serves the same version at
/// once, without training.
#[tokio::test]
async fn a_restart_serves_the_persisted_model() {
    let env = Env::new(Backend::Embedded).set("SHOPSTREAM_RECOMMENDER_TRAIN_SECS", "0");
    let app = env.start().await;
    let admin = app.admin_token().await;
    let a = product_in(&app, &admin, "P-A", "x").await;
    let b = product_in(&app, &admin, "P-B", "x").await;
    post_events(&app, &admin, json!([adjust(&a, 5), adjust(&b, 5)])).await;
    let mut events = Vec::new();
    for _ in 0..20 {
        let s = uuid::Uuid::new_v4().to_string();
        events.push(viewed_by_session(&s, &a));
        events.push(viewed_by_session(&s, &b));
    }
    post_events(&app, &admin, json!(events)).await;
    train_until(&app, &admin, 40).await;
    let version = app
        .call(Method::GET, "/api/admin/model", Some(&admin), None)
        .await
        .body["version"]
        .as_str()
        .unwrap()
        .to_owned();
    app.stop().await;
    let app = env.start().await;
    eventually("the persisted model to be served", || {
        let (app, version, a, b) = (&app, &version, &a, &b);
        async move {
            let r = app.get(&format!("/api/products/{a}/similar")).await;
            if r.body["model_version"] == version.as_str() && ids(&r.body).contains(b) {
                Ok(())
            } else {
                Err(r.text)
            }
        }
    })
    .await;
    app.stop().await;
}

/// `shopstream import --format groceries` puts real-shaped baskets on the
/// log; `shopstream train` trains through the running server (which holds
/// the embedded store) and, with the server stopped, on its own — and the
/// next server serves the model it saved.
#[tokio::test]
async fn import_and_train_from_the_command_line() {
    let env = Env::new(Backend::Embedded).set("SHOPSTREAM_RECOMMENDER_TRAIN_SECS", "0");
    // Two recent days of baskets (inside the training window): 30 members
    // × 2 days × 3 items; half buy the breakfast basket first and the drinks
    // basket the next day, half the other way round, so what comes next is
    // learnable.
    let day = |d: i64| (time::OffsetDateTime::now_utc() - time::Duration::days(d)).date();
    let mut csv = String::from("Member_number,Date,itemDescription\n");
    for m in 0..30 {
        for d in [2, 1] {
            let items = if (m % 2 == 0) == (d == 2) {
                ["whole milk", "rolls/buns", "yogurt"]
            } else {
                ["soda", "bottled water", "sausage"]
            };
            for item in items {
                csv.push_str(&format!("{},{},{item}\n", 1000 + m, day(d)));
            }
        }
    }
    let path = env.dir.path().join("groceries.csv");
    std::fs::write(&path, csv).unwrap();
    let (code, out, err) = env
        .run(&["import", "--format", "groceries", path.to_str().unwrap()])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("sent 60, failed 0"), "{out}");

    let app = env.start().await;
    let admin = app.admin_token().await;
    // The server holds the store: without a token, `train` says what to do.
    let (code, out, err) = env.run(&["train"]).await;
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("--token"), "{err}");
    let url = app.base.clone();
    eventually("the server to train on every imported line", || {
        let (env, url, admin) = (&env, &url, &admin);
        async move {
            let (code, out, err) = env.run(&["train", "--url", url, "--token", admin]).await;
            if code == 0 && out.contains("trained on 180 interactions") {
                Ok(())
            } else {
                Err(format!("{out}{err}"))
            }
        }
    })
    .await;
    app.stop().await;

    // On its own, with the store free.
    let (code, out, err) = env.run(&["train"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("trained on 180 interactions"), "{out}");
    assert!(out.contains("6 items"), "{out}");
    let version = out
        .split_whitespace()
        .nth(1)
        .expect("a model version")
        .to_owned();
    let app = env.start().await;
    let admin = app.admin_token().await;
    let r = app
        .call(Method::GET, "/api/admin/model", Some(&admin), None)
        .await;
    assert_eq!(r.body["version"], version.as_str(), "{}", r.text);
    app.stop().await;
}

/// With `recommender_retrain_events`, enough newly applied events retrain
/// the model without a schedule or a request.
#[tokio::test]
async fn enough_new_events_retrain_the_model() {
    let app = Env::new(Backend::Embedded)
        .set("SHOPSTREAM_RECOMMENDER_TRAIN_SECS", "0")
        .set("SHOPSTREAM_RECOMMENDER_RETRAIN_EVENTS", "50")
        .set("SHOPSTREAM_RECOMMENDER_RETRAIN_MIN_SECS", "0")
        .start()
        .await;
    let admin = app.admin_token().await;
    let a = product_in(&app, &admin, "RT-A", "x").await;
    let b = product_in(&app, &admin, "RT-B", "x").await;
    let mut events = Vec::new();
    for _ in 0..30 {
        let s = uuid::Uuid::new_v4().to_string();
        events.push(viewed_by_session(&s, &a));
        events.push(viewed_by_session(&s, &b));
    }
    post_events(&app, &admin, json!(events)).await;
    eventually("a model trained without being asked", || {
        let (app, admin) = (&app, &admin);
        async move {
            let r = app
                .call(Method::GET, "/api/admin/model", Some(admin), None)
                .await;
            if r.body["trained"] == true && r.body["interactions"].as_u64() >= Some(50) {
                Ok(())
            } else {
                Err(r.text)
            }
        }
    })
    .await;
    app.stop().await;
}

/// Cold start: a product with no interactions is found from its category,
/// newest first — also in a category larger than the 100 products the
/// fallback looks at.
#[tokio::test]
async fn a_new_product_is_found_by_its_category() {
    let app = Env::new(Backend::Embedded)
        .set("SHOPSTREAM_RECOMMENDER_TRAIN_SECS", "0")
        .set("SHOPSTREAM_SEED_DEMO_CATALOGUE", "false")
        .start()
        .await;
    let admin = app.admin_token().await;
    let mut lamps = Vec::new();
    for k in 0..104 {
        lamps.push(product_in(&app, &admin, &format!("LAMP-{k}"), "lamps").await);
    }
    let newest = product_in(&app, &admin, "LAMP-NEW", "lamps").await;
    // In stock: an old lamp (among the first 100) and the new one.
    post_events(
        &app,
        &admin,
        json!([adjust(&lamps[1], 5), adjust(&newest, 5)]),
    )
    .await;
    eventually("the new lamp among the similar items", || {
        let (app, lamps, newest) = (&app, &lamps, &newest);
        async move {
            let r = app
                .get(&format!("/api/products/{}/similar?limit=5", lamps[0]))
                .await;
            let first = &r.body["items"][0];
            if r.status == StatusCode::OK
                && ids(&r.body) == [newest.clone()]
                && first["source"] == "category"
                && first["reason"] == "new in lamps"
            {
                Ok(())
            } else {
                Err(r.text)
            }
        }
    })
    .await;
    app.stop().await;
}

/// "Frequently bought together": what customers bought in one basket, from
/// the purchases in the training log.
#[tokio::test]
async fn bought_together_comes_from_baskets() {
    let app = Env::new(Backend::Embedded)
        .set("SHOPSTREAM_RECOMMENDER_TRAIN_SECS", "0")
        .start()
        .await;
    let admin = app.admin_token().await;
    let mut p = Vec::new();
    for sku in ["BT-A", "BT-B", "BT-C", "BT-D"] {
        p.push(product_in(&app, &admin, sku, "kitchen").await);
    }
    // Stock first (it is applied on the products' partitions, purchases on
    // the customers'), so the sales below are taken from it.
    stock_each(&app, &admin, &p, 50).await;
    let order = |n: usize, items: &[&String]| {
        let lines: Vec<Value> = items
            .iter()
            .map(|id| json!({"product_id": id, "quantity": 1, "unit_price": "19.99"}))
            .collect();
        json!({"type": "purchase.completed", "source": "e2e", "data": {
            "order_id": format!("o-{n}"), "user_id": uuid::Uuid::now_v7().to_string(),
            "lines": lines, "total": format!("{}", 19.99 * items.len() as f64), "currency": "EUR"}})
    };
    // A with B twice, A with C once; D only viewed.
    let events = json!([
        order(1, &[&p[0], &p[1]]),
        order(2, &[&p[0], &p[1]]),
        order(3, &[&p[0], &p[2]]),
        viewed_by_session(&uuid::Uuid::new_v4().to_string(), &p[3]),
    ]);
    post_events(&app, &admin, events).await;
    // Browsing in sequence by other visitors, an hour ago, so the ranker has
    // enough to learn from (views do not make baskets).
    let start = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let mut views = Vec::new();
    for v in 0..20 {
        let session = uuid::Uuid::new_v4().to_string();
        for (k, id) in p.iter().enumerate() {
            let at = start + time::Duration::seconds(v * 10 + k as i64);
            let mut e = viewed_by_session(&session, id);
            e["occurred_at"] = json!(
                at.format(&time::format_description::well_known::Rfc3339)
                    .unwrap()
            );
            views.push(e);
        }
    }
    post_events(&app, &admin, Value::Array(views)).await;
    train_until(&app, &admin, 7 + 80).await;

    let r = app
        .get(&format!("/api/products/{}/bought-together", p[0]))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(ids(&r.body), [p[1].clone(), p[2].clone()], "{}", r.text);
    let first = &r.body["items"][0];
    assert_eq!(first["source"], "bought-together");
    assert_eq!(first["reason"], "often bought with Product BT-A");
    assert!(
        first["recommendation_id"]
            .as_str()
            .unwrap()
            .ends_with("~bought-together")
    );
    // B was bought with A only; D with nothing.
    let b = app
        .get(&format!("/api/products/{}/bought-together", p[1]))
        .await;
    assert_eq!(ids(&b.body), [p[0].clone()]);
    let d = app
        .get(&format!("/api/products/{}/bought-together", p[3]))
        .await;
    assert_eq!(d.status, StatusCode::OK);
    assert!(ids(&d.body).is_empty(), "{}", d.text);
    // Out of stock is not offered.
    post_events(&app, &admin, json!([adjust(&p[1], -48)])).await;
    eventually("B out of stock", || async {
        let r = app
            .get(&format!("/api/products/{}/bought-together", p[0]))
            .await;
        (ids(&r.body) == [p[2].clone()]).then_some(()).ok_or(r.text)
    })
    .await;
    let missing = app
        .get(&format!(
            "/api/products/{}/bought-together",
            uuid::Uuid::now_v7()
        ))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let bad = app
        .get(&format!("/api/products/{}/bought-together?limit=0", p[0]))
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad.problem_fields(), ["limit"]);
    app.stop().await;
}
