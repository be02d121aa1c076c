//! The command line: first start, `user create`, `init`, configuration errors.

use reqwest::{Method, StatusCode};

use crate::helpers::{Backend, Env};

#[tokio::test]
async fn first_start_prints_the_admin_once_and_seeds_the_demo_catalogue_once() {
    let env = Env::new(Backend::Embedded)
        .set("SHOPSTREAM_SEED_DEMO_CATALOGUE", "true")
        .without("SHOPSTREAM_ADMIN_EMAIL")
        .without("SHOPSTREAM_ADMIN_PASSWORD");
    let app = env.start().await;
    let printed = app.stdout.join("\n");
    let password = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("password:"))
        .unwrap_or_else(|| panic!("no generated password printed: {printed}"))
        .trim()
        .to_owned();
    let token = app
        .login(api::bootstrap::DEFAULT_ADMIN_EMAIL, &password)
        .await;
    assert_eq!(token.status, StatusCode::OK);
    let page = app.get("/api/products?limit=100").await;
    let demo = page.body["items"].as_array().unwrap().len();
    assert!(demo >= 10, "a demo catalogue of {demo} products");
    assert!(
        !app.logs().contains(&password),
        "the password is not written to the log"
    );
    app.stop().await;

    let again = env.start().await;
    assert!(
        !again.stdout.join("\n").contains("password"),
        "printed only once"
    );
    assert_eq!(
        again.get("/api/products?limit=100").await.body["items"]
            .as_array()
            .unwrap()
            .len(),
        demo
    );
    again.stop().await;
}

#[tokio::test]
async fn user_create_waits_for_the_server_to_release_the_embedded_store() {
    let env = Env::new(Backend::Embedded);
    let app = env.start().await;
    let args = [
        "user",
        "create",
        "--email",
        "supplier@example.com",
        "--password",
        "supplier password 1",
        "--role",
        "supplier",
        "--supplier-id",
        "acme",
    ];
    let (code, _, err) = env.run(&args).await;
    assert_ne!(code, 0);
    assert!(
        err.contains("in use by another shopstream process"),
        "{err}"
    );
    app.stop().await;

    let (code, out, err) = env.run(&args).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("created supplier supplier@example.com"),
        "{out}"
    );
    let (code, _, err) = env.run(&args).await;
    assert_ne!(code, 0, "a second user with the same e-mail is refused");
    assert!(err.contains("exists"), "{err}");
    let (code, _, err) = env
        .run(&[
            "user",
            "create",
            "--email",
            "s2@example.com",
            "--password",
            "supplier password 1",
            "--role",
            "supplier",
        ])
        .await;
    assert_ne!(code, 0);
    assert!(err.contains("--supplier-id"), "{err}");

    let app = env.start().await;
    let login = app
        .login("supplier@example.com", "supplier password 1")
        .await;
    assert_eq!(login.status, StatusCode::OK);
    let token = login.body["access_token"].as_str().unwrap();
    let me = app.call(Method::GET, "/api/me", Some(token), None).await;
    assert_eq!(me.body["role"], "supplier");
    assert_eq!(me.body["supplier_id"], "acme");
    app.stop().await;
}

#[tokio::test]
async fn aws_init_is_idempotent_and_users_can_be_created_while_serving() {
    let env = Env::new(Backend::Aws);
    let (code, out, err) = env.run(&["init"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let app = env.start().await; // runs init again
    let (code, out, err) = env
        .run(&[
            "user",
            "create",
            "--email",
            "svc@example.com",
            "--password",
            "service password 1",
            "--role",
            "service",
        ])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        app.login("svc@example.com", "service password 1")
            .await
            .status,
        StatusCode::OK
    );
    app.stop().await;
}

#[tokio::test]
async fn wrong_settings_stop_start_up_naming_the_setting() {
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[("SHOPSTREAM_BACKEND", "postgres")], "backend"),
        (&[("SHOPSTREAM_LISTEN", "not-an-address")], "listen"),
        (
            &[("SHOPSTREAM_BACKEND", "aws"), ("SHOPSTREAM_JWT_SECRET", "")],
            "jwt_secret",
        ),
        (&[("SHOPSTREAM_JWT_SECRET", "too-short")], "jwt_secret"),
        (&[("SHOPSTREAM_MAX_BODY_BYTES", "lots")], "max_body_bytes"),
    ];
    for (vars, setting) in cases {
        let mut env = Env::new(Backend::Embedded);
        for (k, v) in vars {
            env = env.set(k, v);
        }
        let (code, out, err) = env.run(&["serve"]).await;
        assert_ne!(code, 0, "{vars:?} accepted: {out}");
        assert!(err.contains(setting), "{vars:?}: {err}");
    }
    let env = Env::new(Backend::Embedded);
    std::fs::write(
        env.dir.path().join("shopstream.toml"),
        "listen = \"127.0.0.1:0\"\nlisten_adress = \"x\"\n",
    )
    .unwrap();
    let (code, _, err) = env.run(&["serve"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("listen_adress"), "{err}");
}

#[tokio::test]
async fn help_explains_each_command() {
    let env = Env::new(Backend::Embedded);
    let (code, out, _) = env.run(&["--help"]).await;
    assert_eq!(code, 0);
    for word in ["serve", "init", "user"] {
        assert!(out.contains(word), "{out}");
    }
    let (code, out, _) = env.run(&["user", "create", "--help"]).await;
    assert_eq!(code, 0);
    for flag in ["--email", "--password", "--role", "--supplier-id"] {
        assert!(out.contains(flag), "{out}");
    }
}

/// `shopstream evaluate` on a small generated log in each format: the
/// table has every model and metric, and every figure is in range.
#[tokio::test]
async fn evaluate_reports_every_model_and_metric_in_range() {
    let env = Env::new(Backend::Embedded);
    let dir = env.dir.path();
    let mut ratings = String::from("userId,movieId,rating,timestamp\n");
    let mut groceries = String::from("Member_number,Date,itemDescription\n");
    // 40 users; user u likes items u%5.. in a cycle, so co-occurrence has
    // something to find.
    for u in 0..40 {
        for k in 0..12 {
            let item = (u % 5) * 3 + (k % 6);
            ratings.push_str(&format!(
                "{u},{item},{},{}\n",
                3 + k % 3,
                1_000_000 + u * 100 + k
            ));
            groceries.push_str(&format!(
                "{u},2015-{:02}-{:02},item {item}\n",
                1 + k % 12,
                1 + u % 28
            ));
        }
    }
    std::fs::write(dir.join("ratings.csv"), ratings).unwrap();
    std::fs::write(dir.join("groceries.csv"), groceries).unwrap();
    for (format, file) in [("movielens", "ratings.csv"), ("groceries", "groceries.csv")] {
        let path = dir.join(file);
        let (code, out, err) = env
            .run(&[
                "evaluate",
                "--format",
                format,
                path.to_str().unwrap(),
                "--json",
            ])
            .await;
        assert_eq!(code, 0, "{out}{err}");
        let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
        let rows = rows.as_array().unwrap();
        let models: Vec<&str> = rows.iter().map(|r| r["model"].as_str().unwrap()).collect();
        assert_eq!(
            models,
            [
                "shopstream (learned)",
                "most-popular",
                "item-knn",
                "session-knn",
                "ease"
            ],
            "{format}"
        );
        for r in rows {
            assert!(r["targets"].as_u64().unwrap() > 0, "{format}: {r}");
            for m in [
                "hr@10",
                "hr@20",
                "mrr@10",
                "mrr@20",
                "ndcg@10",
                "ndcg@20",
                "coverage@10",
                "coverage@20",
            ] {
                let v = r[m].as_f64().unwrap();
                assert!((0.0..=1.0).contains(&v), "{format} {m} = {v}");
            }
            assert!(r["hr@20"].as_f64() >= r["hr@10"].as_f64());
            assert!(r["mrr@10"].as_f64() <= r["hr@10"].as_f64());
            assert!(r["latency_p99_ms"].as_f64().unwrap() >= 0.0);
        }
        let (code, table, _) = env
            .run(&["evaluate", "--format", format, path.to_str().unwrap()])
            .await;
        assert_eq!(code, 0);
        assert!(table.starts_with("| model | targets | HR@10 |"), "{table}");
        assert_eq!(table.lines().count(), 7);
    }
    // Bad input is named.
    let (code, _, err) = env
        .run(&[
            "evaluate",
            "--format",
            "groceries",
            dir.join("ratings.csv").to_str().unwrap(),
        ])
        .await;
    assert_ne!(code, 0);
    assert!(err.contains("is not a Groceries file"), "{err}");
}
