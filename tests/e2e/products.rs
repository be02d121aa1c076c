//! The product catalogue over HTTP, on both backends.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    helpers::{App, Backend, Env, eventually, product},
    on_both_backends,
};

/// The SKUs `GET /api/products?{query}` lists, in order.
async fn skus(app: &App, query: String) -> Vec<String> {
    let r = app.get(&format!("/api/products?{query}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["sku"].as_str().unwrap().to_owned())
        .collect()
}

async fn create(app: &App, token: &str, body: Value) -> crate::helpers::Reply {
    app.call(Method::POST, "/api/products", Some(token), Some(body))
        .await
}

async fn crud_round_trip(backend: Backend) {
    let env = Env::new(backend);
    let app = env.start().await;
    let admin = app.admin_token().await;

    let r = create(&app, &admin, product("TEE-1")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        r.header("location"),
        Some(format!("/api/products/{id}").as_str())
    );
    assert_eq!(r.header("etag"), Some("\"1\""));
    assert_eq!(r.body["price"], "19.99");
    assert_eq!(r.body["version"], 1);
    assert_eq!(r.body["attributes"]["colour"], "red");

    let got = app.get(&format!("/api/products/{id}")).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, r.body);
    assert_eq!(got.header("etag"), Some("\"1\""));

    // Full replace: fields left out return to their defaults.
    let mut replacement = product("TEE-1B");
    replacement["name"] = json!("Renamed");
    replacement["category"] = json!("tops");
    replacement.as_object_mut().unwrap().remove("attributes");
    let put = app
        .send(
            app.http
                .put(app.url(&format!("/api/products/{id}")))
                .bearer_auth(&admin)
                .header("if-match", "\"1\"")
                .json(&replacement),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text);
    assert_eq!(put.body["version"], 2);
    assert_eq!(put.body["sku"], "TEE-1B");
    assert_eq!(put.body["attributes"], json!({}));
    assert_eq!(put.body["created_at"], r.body["created_at"]);

    // A stale If-Match is refused and changes nothing.
    let stale = app
        .send(
            app.http
                .patch(app.url(&format!("/api/products/{id}")))
                .bearer_auth(&admin)
                .header("if-match", "\"1\"")
                .json(&json!({"name": "Lost update"})),
        )
        .await;
    assert_eq!(
        stale.status,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        stale.text
    );
    assert_eq!(
        app.get(&format!("/api/products/{id}")).await.body["name"],
        "Renamed"
    );

    let patched = app
        .send(
            app.http
                .patch(app.url(&format!("/api/products/{id}")))
                .bearer_auth(&admin)
                .header("if-match", "\"2\"")
                .json(&json!({"price": "24.50", "supplier_id": null})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.text);
    assert_eq!(patched.body["price"], "24.50");
    assert_eq!(patched.body["name"], "Renamed");
    assert!(patched.body.get("supplier_id").is_none());
    assert_eq!(patched.header("etag"), Some("\"3\""));

    // The old SKU is free again; the new one is taken.
    assert_eq!(
        create(&app, &admin, product("TEE-1")).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        create(&app, &admin, product("TEE-1B")).await.status,
        StatusCode::CONFLICT
    );

    let del = app
        .call(
            Method::DELETE,
            &format!("/api/products/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(&format!("/api/products/{id}")).await.status,
        StatusCode::NOT_FOUND
    );
    let again = app
        .call(
            Method::DELETE,
            &format!("/api/products/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);

    // Ids are never reused: the same SKU makes a new id.
    let recreated = create(&app, &admin, product("TEE-1B")).await;
    assert_eq!(recreated.status, StatusCode::CREATED);
    assert_ne!(recreated.body["id"], json!(id));
    app.stop().await;
}

async fn listing_pages_and_filters(backend: Backend) {
    let env = Env::new(backend);
    let app = env.start().await;
    let admin = app.admin_token().await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let mut p = product(&format!("SKU-{i}"));
        p["category"] = json!(if i % 2 == 0 { "even" } else { "odd" });
        p["supplier_id"] = json!(if i < 3 { "s1" } else { "s2" });
        let r = create(&app, &admin, p).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        ids.push(r.body["id"].as_str().unwrap().to_owned());
    }

    let mut seen = Vec::new();
    let mut path = "/api/products?limit=3".to_owned();
    loop {
        let page = app.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        let items = page.body["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|p| p["id"].as_str().unwrap().to_owned()));
        match page.body["next_cursor"].as_str() {
            Some(c) => path = format!("/api/products?limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every product once, oldest first");

    let list = |q: &str| skus(&app, q.to_owned());
    assert_eq!(list("category=odd").await, ["SKU-1", "SKU-3", "SKU-5"]);
    assert_eq!(list("supplier_id=s1").await, ["SKU-0", "SKU-1", "SKU-2"]);
    assert_eq!(
        list("category=even&supplier_id=s2").await,
        ["SKU-4", "SKU-6"]
    );
    assert_eq!(
        list("category=even&supplier_id=s2&limit=1").await,
        ["SKU-4"]
    );
    assert!(list("category=none").await.is_empty());

    // A product that changes category moves between the filtered lists.
    let moved = app
        .call(
            Method::PATCH,
            &format!("/api/products/{}", ids[1]),
            Some(&admin),
            Some(json!({"category": "even"})),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK);
    assert_eq!(list("category=odd").await, ["SKU-3", "SKU-5"]);
    assert_eq!(
        list("category=even").await,
        ["SKU-0", "SKU-1", "SKU-2", "SKU-4", "SKU-6"]
    );

    for bad in [
        "limit=0",
        "limit=101",
        "limit=x",
        "cursor=not!a!cursor",
        "colour=red",
    ] {
        let r = app.get(&format!("/api/products?{bad}")).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            r.text
        );
        assert_eq!(r.problem_fields(), [bad.split('=').next().unwrap()]);
    }
    app.stop().await;
}

/// `GET /api/categories` and the name search behind the storefront.
async fn categories_and_search(backend: Backend) {
    let env = Env::new(backend);
    let app = env.start().await;
    let admin = app.admin_token().await;
    let names = [
        ("LAMP-1", "Desk Lamp", "home"),
        ("LAMP-2", "Floor lamp", "home"),
        ("MUG-1", "Enamel mug", "kitchen"),
        ("TEE-1", "Lamplighter tee", "shirts"),
    ];
    let mut ids = Vec::new();
    for (sku, name, category) in names {
        let mut p = product(sku);
        p["name"] = json!(name);
        p["category"] = json!(category);
        let r = create(&app, &admin, p).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        ids.push(r.body["id"].as_str().unwrap().to_owned());
    }
    // The list the search index keeps: it follows the catalogue through
    // the pipeline.
    categories_become(&app, json!(["home", "kitchen", "shirts"])).await;

    let search = |q: &str| skus(&app, q.to_owned());
    // Any case, anywhere in the name; with a category; paged.
    assert_eq!(search("q=LAMP").await, ["LAMP-1", "LAMP-2", "TEE-1"]);
    assert_eq!(search("q=lamp&category=home").await, ["LAMP-1", "LAMP-2"]);
    assert_eq!(search("q=%20mug%20").await, ["MUG-1"]);
    assert!(search("q=sofa").await.is_empty());
    let first = app.get("/api/products?q=lamp&limit=2").await;
    assert_eq!(first.body["items"].as_array().unwrap().len(), 2);
    let cursor = first.body["next_cursor"].as_str().unwrap();
    assert_eq!(
        search(&format!("q=lamp&limit=2&cursor={cursor}")).await,
        ["TEE-1"]
    );
    for bad in ["q=", &format!("q={}", "x".repeat(101))] {
        let r = app.get(&format!("/api/products?{bad}")).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
        assert_eq!(r.problem_fields(), ["q"]);
    }

    // A category whose last product goes (deleted, or moved) is no longer
    // listed; a new one is.
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/products/{}", ids[2]),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = app
        .call(
            Method::PATCH,
            &format!("/api/products/{}", ids[3]),
            Some(&admin),
            Some(json!({"category": "lighting"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    categories_become(&app, json!(["home", "lighting"])).await;
    app.stop().await;
}

async fn categories_become(app: &App, expected: Value) {
    eventually("the category list to follow the catalogue", || async {
        let r = app.get("/api/categories").await;
        match (r.status, &r.body) {
            (StatusCode::OK, body) if *body == expected => Ok(()),
            _ => Err(format!("{} {}", r.status, r.text)),
        }
    })
    .await;
}

/// The SKUs of a search's hits, in order, and the whole answer.
async fn searched(app: &App, query: &str) -> (Vec<String>, Value) {
    let r = app.get(&format!("/api/search?{query}")).await;
    if r.status != StatusCode::OK {
        return (
            Vec::new(),
            json!({"status": r.status.as_u16(), "body": r.text}),
        );
    }
    let skus = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["product"]["sku"].as_str().unwrap().to_owned())
        .collect();
    (skus, r.body)
}

/// Waits until a search finds `skus` (in any order).
async fn search_finds(app: &App, query: &str, skus: &[&str]) {
    let mut skus = skus.to_vec();
    skus.sort_unstable();
    eventually(&format!("search {query:?} to find {skus:?}"), || async {
        let (mut found, body) = searched(app, query).await;
        found.sort_unstable();
        if found == skus {
            Ok(())
        } else {
            Err(format!("{found:?} {body}"))
        }
    })
    .await;
}

/// `GET /api/search`: ranked and typo-tolerant, with category counts and
/// filters, following the catalogue and the stock through the pipeline,
/// and built again from the catalogue on start.
async fn search_ranks_forgives_typos_and_follows_catalogue_and_stock(backend: Backend) {
    let env = Env::new(backend);
    let app = env.start().await;
    let admin = app.admin_token().await;
    let catalogue = [
        (
            "SOCK-MERINO",
            "Merino wool hiking socks",
            "socks",
            "18.90",
            "wool-co",
        ),
        (
            "SOCK-COTTON",
            "Cotton hiking socks",
            "socks",
            "9.90",
            "acme",
        ),
        ("SOCK-WOOL", "Wool socks", "socks", "12.00", "acme"),
        (
            "SWEATER-MERINO",
            "Merino sweater",
            "knitwear",
            "79.00",
            "wool-co",
        ),
        (
            "BEANIE-MERINO",
            "Merino wool beanie",
            "hats",
            "25.00",
            "wool-co",
        ),
        ("BOOT-HIKE", "Hiking boots", "shoes", "129.00", "acme"),
        ("BLANKET-WOOL", "Wool blanket", "home", "59.00", "acme"),
    ];
    let mut ids = std::collections::HashMap::new();
    for (sku, name, category, price, supplier) in catalogue {
        let mut p = product(sku);
        p["name"] = json!(name);
        p["category"] = json!(category);
        p["price"] = json!(price);
        p["supplier_id"] = json!(supplier);
        let r = create(&app, &admin, p).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        ids.insert(sku, r.body["id"].as_str().unwrap().to_owned());
    }
    crate::helpers::post_events(
        &app,
        &admin,
        json!([
            crate::helpers::adjust(&ids["SOCK-MERINO"], 5),
            crate::helpers::adjust(&ids["SOCK-COTTON"], 2),
        ]),
    )
    .await;
    // Every product indexed with its stock (only two have any).
    search_finds(
        &app,
        "q=socks&in_stock=true",
        &["SOCK-MERINO", "SOCK-COTTON"],
    )
    .await;
    search_finds(&app, "q=blanket", &["BLANKET-WOOL"]).await;
    for q in [
        "merino%20socks",
        "merinno%20socks",
        "hiking%20socks%20wool",
        "Merino%20wool%20hik",
    ] {
        let (found, body) = searched(&app, &format!("q={q}")).await;
        assert_eq!(
            found.first().map(String::as_str),
            Some("SOCK-MERINO"),
            "{q}: {body}"
        );
        assert_eq!(body["relaxed"], false, "{q}");
    }
    let (found, body) = searched(&app, "q=merino").await;
    assert_eq!(found.len(), 3, "{body}");
    assert_eq!(body["total"], 3);
    let mut counts = body["categories"].as_array().unwrap().clone();
    counts.sort_by_key(|c| c["category"].as_str().unwrap().to_owned());
    assert_eq!(
        counts,
        [
            json!({"category": "hats", "count": 1}),
            json!({"category": "knitwear", "count": 1}),
            json!({"category": "socks", "count": 1}),
        ]
    );
    // Filters: price (inclusive), supplier, category, stock.
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        sorted(searched(&app, "q=merino&max_price=25").await.0),
        ["BEANIE-MERINO", "SOCK-MERINO"]
    );
    assert_eq!(
        searched(&app, "q=merino&min_price=25&max_price=25").await.0,
        ["BEANIE-MERINO"]
    );
    assert_eq!(
        sorted(searched(&app, "q=socks&supplier_id=acme").await.0),
        ["SOCK-COTTON", "SOCK-WOOL"]
    );
    assert_eq!(
        searched(&app, "q=merino&category=hats").await.0,
        ["BEANIE-MERINO"]
    );
    // Without words: the filtered products, newest first.
    assert_eq!(
        searched(&app, "category=socks").await.0,
        ["SOCK-WOOL", "SOCK-COTTON", "SOCK-MERINO"]
    );
    // Pages.
    let (first, body) = searched(&app, "q=socks&limit=2").await;
    assert_eq!(
        (first.len(), &body["next_offset"]),
        (2, &json!(2)),
        "{body}"
    );
    let (rest, body) = searched(&app, "q=socks&limit=2&offset=2").await;
    assert_eq!(rest.len(), 1, "{body}");
    assert!(body.get("next_offset").is_none(), "{body}");
    assert!(!first.contains(&rest[0]));
    // No product has every word: the ones with most of them, said so.
    let (found, body) = searched(&app, "q=merino%20wool%20hiking%20socks%20xylophone").await;
    assert_eq!(
        found.first().map(String::as_str),
        Some("SOCK-MERINO"),
        "{body}"
    );
    assert_eq!(body["relaxed"], true);
    // Bad parameters are named.
    let long = format!("q={}", "x".repeat(201));
    for (bad, field) in [
        ("in_stock=maybe", "in_stock"),
        ("min_price=-1", "min_price"),
        ("max_price=abc", "max_price"),
        ("min_price=10&max_price=5", "max_price"),
        ("offset=5000", "offset"),
        ("limit=0", "limit"),
        (long.as_str(), "q"),
        ("colour=red", "colour"),
    ] {
        let r = app.get(&format!("/api/search?{bad}")).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            r.text
        );
        assert_eq!(r.problem_fields(), [field], "{bad}");
    }

    // Sold out: it is still found, shown out of stock, and left out of an
    // in-stock search.
    crate::helpers::post_events(
        &app,
        &admin,
        json!([crate::helpers::adjust(&ids["SOCK-MERINO"], -5)]),
    )
    .await;
    search_finds(&app, "q=socks&in_stock=true", &["SOCK-COTTON"]).await;
    let (found, body) = searched(&app, "q=merino%20socks").await;
    assert_eq!(found[0], "SOCK-MERINO");
    assert_eq!(body["items"][0]["in_stock"], false);
    // Renamed, deleted: the index follows.
    let r = app
        .call(
            Method::PATCH,
            &format!("/api/products/{}", ids["SOCK-MERINO"]),
            Some(&admin),
            Some(json!({"name": "Alpaca trail socks"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    search_finds(&app, "q=alpaca", &["SOCK-MERINO"]).await;
    assert!(
        !searched(&app, "q=merino%20hiking")
            .await
            .0
            .contains(&"SOCK-MERINO".to_owned())
    );
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/products/{}", ids["BOOT-HIKE"]),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    search_finds(&app, "q=boots", &[]).await;
    categories_become(&app, json!(["hats", "home", "knitwear", "socks"])).await;

    // A restart builds the index again from the catalogue and the stock.
    app.stop().await;
    let app = env.start().await;
    // (503 with Retry-After while it is built.)
    search_finds(&app, "q=alpaca", &["SOCK-MERINO"]).await;
    let (found, body) = searched(&app, "q=alpaca").await;
    assert_eq!(found, ["SOCK-MERINO"], "{body}");
    assert_eq!(body["items"][0]["in_stock"], false);
    assert_eq!(
        sorted(searched(&app, "q=socks&in_stock=true").await.0),
        ["SOCK-COTTON"]
    );
    app.stop().await;
}

async fn bad_input_is_refused_with_problems(backend: Backend) {
    let env = Env::new(backend).set("SHOPSTREAM_MAX_BODY_BYTES", "8192");
    let app = env.start().await;
    let admin = app.admin_token().await;

    let cases: Vec<(Value, Vec<&str>)> = vec![
        (
            json!({}),
            vec!["category", "currency", "name", "price", "sku"],
        ),
        (
            json!({"sku": 5, "name": "", "price": "1", "currency": "EUR", "category": "c"}),
            vec!["name", "sku"],
        ),
        (
            json!({"sku": "A", "name": "n", "price": "-1", "currency": "EUR", "category": "c"}),
            vec!["price"],
        ),
        (
            json!({"sku": "A", "name": "n", "price": "NaN", "currency": "EUR", "category": "c"}),
            vec!["price"],
        ),
        (
            json!({"sku": "A", "name": "n", "price": "1e12", "currency": "EUR", "category": "c"}),
            vec!["price"],
        ),
        (
            json!({"sku": "A", "name": "n", "price": "99999999999", "currency": "EUR", "category": "c"}),
            vec!["price"],
        ),
        (
            json!({"sku": "A", "name": "n", "price": 19.99, "currency": "EUR", "category": "c"}),
            vec!["price"],
        ),
        (
            json!({"sku": "A", "name": "x".repeat(201), "price": "1", "currency": "EUR", "category": "c",
            "description": "d".repeat(5001)}),
            vec!["description", "name"],
        ),
        (
            json!({"sku": "A", "name": "n", "price": "1", "currency": "euro", "category": "c",
            "low_stock_threshold": -1}),
            vec!["currency", "low_stock_threshold"],
        ),
        (
            json!({"sku": "A", "name": "n", "price": "1", "currency": "EUR", "category": "c",
            "colour": "red", "id": "x"}),
            vec!["colour", "id"],
        ),
        (json!([1, 2]), vec![""]),
    ];
    for (body, fields) in cases {
        let r = create(&app, &admin, body.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            r.text
        );
        assert_eq!(r.body["status"], 422);
        assert!(
            r.body["title"].is_string()
                && r.body["type"].is_string()
                && r.body["detail"].is_string()
        );
        assert_eq!(r.problem_fields(), fields, "{body}");
    }

    let malformed = app
        .send(
            app.http
                .post(app.url("/api/products"))
                .bearer_auth(&admin)
                .header("content-type", "application/json")
                .body("{\"sku\": "),
        )
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        malformed.header("content-type"),
        Some("application/problem+json")
    );

    let wrong_type = app
        .send(
            app.http
                .post(app.url("/api/products"))
                .bearer_auth(&admin)
                .header("content-type", "text/plain")
                .body(product("X").to_string()),
        )
        .await;
    assert_eq!(wrong_type.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let mut huge = product("BIG");
    huge["description"] = json!("x".repeat(9000));
    let too_big = create(&app, &admin, huge).await;
    assert_eq!(
        too_big.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        too_big.text
    );

    let no_token = app
        .call(Method::POST, "/api/products", None, Some(product("A")))
        .await;
    assert_eq!(no_token.status, StatusCode::UNAUTHORIZED);
    assert_eq!(no_token.header("www-authenticate"), Some("Bearer"));
    let bad_token = app
        .call(
            Method::POST,
            "/api/products",
            Some("not.a.jwt"),
            Some(product("A")),
        )
        .await;
    assert_eq!(bad_token.status, StatusCode::UNAUTHORIZED);

    let (customer, _, _) = app.customer("shopper@example.com").await;
    let forbidden = app
        .call(
            Method::POST,
            "/api/products",
            Some(&customer),
            Some(product("A")),
        )
        .await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    assert_eq!(
        forbidden.header("content-type"),
        Some("application/problem+json")
    );

    let ok = create(&app, &admin, product("A")).await;
    assert_eq!(ok.status, StatusCode::CREATED);
    let id = ok.body["id"].as_str().unwrap();
    let cust_delete = app
        .call(
            Method::DELETE,
            &format!("/api/products/{id}"),
            Some(&customer),
            None,
        )
        .await;
    assert_eq!(cust_delete.status, StatusCode::FORBIDDEN);
    let dup = create(&app, &admin, product("A")).await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    assert!(dup.body["detail"].as_str().unwrap().contains("sku"));

    for missing in [
        "/api/products/00000000-0000-7000-8000-000000000000",
        "/api/products/nope",
    ] {
        assert_eq!(
            app.get(missing).await.status,
            StatusCode::NOT_FOUND,
            "{missing}"
        );
        let patch = app
            .call(
                Method::PATCH,
                missing,
                Some(&admin),
                Some(json!({"name": "x"})),
            )
            .await;
        assert_eq!(patch.status, StatusCode::NOT_FOUND, "{missing}");
    }
    let bad_patch = app
        .call(
            Method::PATCH,
            &format!("/api/products/{id}"),
            Some(&admin),
            Some(json!({"name": null, "price": "abc"})),
        )
        .await;
    assert_eq!(bad_patch.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad_patch.problem_fields(), ["name", "price"]);
    // Nothing above changed the product.
    assert_eq!(
        app.get(&format!("/api/products/{id}")).await.body["version"],
        1
    );
    app.stop().await;
}

async fn concurrent_edits_lose_no_update(backend: Backend) {
    let env = Env::new(backend);
    let app = env.start().await;
    let admin = app.admin_token().await;
    let r = create(&app, &admin, product("RACE")).await;
    let id = r.body["id"].as_str().unwrap().to_owned();
    // 8 writers, each read-modify-write with If-Match, retrying on 412.
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (http, url, admin) = (
                app.http.clone(),
                app.url(&format!("/api/products/{id}")),
                admin.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let cur = http.get(&url).send().await.unwrap();
                    let etag = cur.headers()["etag"].to_str().unwrap().to_owned();
                    let body: Value = cur.json().await.unwrap();
                    let mut attrs = body["attributes"].as_object().unwrap().clone();
                    attrs.insert(format!("w{w}"), json!("x"));
                    let r = http
                        .patch(&url)
                        .bearer_auth(&admin)
                        .header("if-match", etag)
                        .json(&json!({"attributes": attrs}))
                        .send()
                        .await
                        .unwrap();
                    match r.status() {
                        StatusCode::OK => return,
                        StatusCode::PRECONDITION_FAILED => continue,
                        s => panic!("unexpected {s}"),
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let end = app.get(&format!("/api/products/{id}")).await;
    assert_eq!(end.body["version"], 9);
    let attrs = end.body["attributes"].as_object().unwrap();
    for w in 0..8 {
        assert!(
            attrs.contains_key(&format!("w{w}")),
            "writer {w}'s update was lost: {attrs:?}"
        );
    }
    app.stop().await;
}

on_both_backends!(
    crud_round_trip,
    listing_pages_and_filters,
    categories_and_search,
    search_ranks_forgives_typos_and_follows_catalogue_and_stock,
    bad_input_is_refused_with_problems,
    concurrent_edits_lose_no_update,
    catalogue_import_keeps_skus_as_external_ids,
);

/// `import --format products`: a catalogue in CSV and JSON lines, its SKUs
/// kept as external ids. Bad rows are reported by line and the rest
/// imported; a history import and events that name the SKUs land on the
/// imported products; a re-import updates only what changed.
async fn catalogue_import_keeps_skus_as_external_ids(backend: Backend) {
    let env = Env::new(backend);
    if backend == Backend::Aws {
        let (code, out, err) = env.run(&["init"]).await;
        assert_eq!(code, 0, "{out}{err}");
    }
    let csv = env.dir.path().join("catalogue.csv");
    std::fs::write(
        &csv,
        "sku,name,description,price,currency,category,low_stock_threshold,attributes.material\n\
         7,Merino wool hiking socks,Warm,12.50,EUR,socks,3,merino\n\
         8,\"Cotton socks, pack of 3\",,9.99,EUR,socks,,\n\
         9,Wool hat,,19.00,EUR,hats,2,wool\n\
         10,No price,,,EUR,hats,,\n\
         7,Twice,,1.00,EUR,socks,,\n",
    )
    .unwrap();
    let jsonl = env.dir.path().join("more.jsonl");
    std::fs::write(
        &jsonl,
        "{\"sku\": \"SKU-A\", \"name\": \"Desk lamp\", \"price\": \"30.00\", \"currency\": \"EUR\", \"category\": \"lamps\"}\n\
         not json\n\
         {\"sku\": \"bad sku!\", \"name\": \"x\", \"price\": \"1.00\", \"currency\": \"EUR\", \"category\": \"lamps\"}\n",
    )
    .unwrap();
    let files = [csv.to_str().unwrap(), jsonl.to_str().unwrap()];
    let (code, out, err) = env
        .run(&["import", "--format", "products", files[0], files[1]])
        .await;
    assert_eq!(code, 1, "rows were refused: {out}{err}");
    assert!(
        out.contains("imported 4 products: 4 new, 0 updated, 0 unchanged; 4 rows refused"),
        "{out}"
    );
    for expected in [
        "catalogue.csv line 5: price",
        "catalogue.csv line 6: sku \"7\" is already on",
        "more.jsonl line 2: not JSON",
        "more.jsonl line 3: sku",
    ] {
        assert!(err.contains(expected), "{expected:?} not in {err}");
    }
    // RetailRocket history whose item numbers are the SKUs.
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let history = env.dir.path().join("events.csv");
    std::fs::write(
        &history,
        format!(
            "timestamp,visitorid,event,itemid,transactionid\n\
             {a},1,view,7,\n{b},2,view,7,\n{c},2,view,9,\n{d},2,transaction,7,55\n",
            a = now_ms - 4000,
            b = now_ms - 3000,
            c = now_ms - 2000,
            d = now_ms - 1000,
        ),
    )
    .unwrap();
    let (code, out, err) = env
        .run(&[
            "import",
            "--format",
            "retailrocket",
            history.to_str().unwrap(),
        ])
        .await;
    assert_eq!(code, 0, "{out}{err}");

    let app = env.start().await;
    let admin = app.admin_token().await;
    let socks = domain::ProductId::external("7");
    let p = app.get(&format!("/api/products/{socks}")).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.text);
    assert_eq!(p.body["sku"], "7");
    assert_eq!(p.body["name"], "Merino wool hiking socks");
    assert_eq!(p.body["attributes"]["material"], "merino");
    assert_eq!(p.body["low_stock_threshold"], 3);
    assert_eq!(
        skus(&app, "category=socks".into()).await.len(),
        2,
        "filed under its category"
    );
    // An event naming the lamp by its SKU lands on it.
    let r = app
        .call(
            Method::POST,
            "/api/events",
            Some(&admin),
            Some(json!([{"type": "browse.viewed",
                "data": {"session_id": "s-1", "product_id": "SKU-A"}}])),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let lamp = domain::ProductId::external("SKU-A");
    for (id, views, purchases) in [(socks, 2, 1), (lamp, 1, 0)] {
        crate::helpers::eventually("the history counted on the imported products", || {
            let app = &app;
            let admin = &admin;
            async move {
                let r = app
                    .call(
                        Method::GET,
                        &format!("/api/analytics/products/{id}"),
                        Some(admin),
                        None,
                    )
                    .await;
                let t = &r.body["totals"];
                let got = (t["views"].as_i64(), t["purchases"].as_i64());
                (got == (Some(views), Some(purchases)))
                    .then_some(())
                    .ok_or(format!("{id}: {got:?} ({})", r.text))
            }
        })
        .await;
    }
    app.stop().await;

    // A re-import changes what changed, and nothing else.
    std::fs::write(
        &csv,
        "sku,name,price,currency,category,low_stock_threshold,attributes.material,description\n\
         7,Merino wool hiking socks,12.50,EUR,socks,3,merino,Warm\n\
         8,\"Cotton socks, pack of 3\",9.99,EUR,socks,,,\n\
         9,Wool hat,21.00,EUR,hats,2,wool,\n",
    )
    .unwrap();
    let (code, out, err) = env.run(&["import", "--format", "products", files[0]]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("imported 3 products: 0 new, 1 updated, 2 unchanged; 0 rows refused"),
        "{out}"
    );
    let app = env.start().await;
    let hat = app
        .get(&format!(
            "/api/products/{}",
            domain::ProductId::external("9")
        ))
        .await;
    assert_eq!(
        (hat.body["price"].as_str(), hat.body["version"].as_u64()),
        (Some("21.00"), Some(2))
    );
    app.stop().await;
}
