//! Scripted traffic with known answers: the market's shares and
//! concentration, series, trending, tasks, earnings and their reconciliation
//! with the ledger and the log.

use serde_json::{Value, json};

use crate::support::{Api, TestServer};

const X: &str = r#"{"inputs": {"x": {"dtype": "f32", "shape": [1, 4], "data": [1, 2, 3, 4]}}}"#;

fn body() -> Value {
    serde_json::from_str(X).unwrap()
}

async fn model(api: &Api, key: &str, owner: &str, name: &str, task: &str, price: u64, visibility: &str) {
    let create =
        json!({"name": name, "task": task, "visibility": visibility, "price_per_inference": price.to_string()});
    api.post("/v1/models", Some(key), create).await.ok(201);
    api.upload(&format!("/v1/models/{owner}/{name}/versions"), Some(key), crate::support::fixture("linear.onnx"))
        .await
        .ok(201);
}

/// `times` calls of `owner/name` by `key`, tagged `app`, optionally back-dated.
async fn calls(api: &Api, key: &str, model: &str, app: &str, times: usize, at_ms: Option<i64>) {
    for _ in 0..times {
        let mut request =
            api.request(reqwest::Method::POST, &format!("/v1/models/{model}/infer"), Some(key)).json(&body());
        if !app.is_empty() {
            request = request.header("X-App", app);
        }
        if let Some(at) = at_ms {
            request = request.header("X-Vitrine-Time", at.to_string());
        }
        api.send(request).await.ok(200);
    }
}

fn close(a: &Value, b: f64) -> bool {
    (a.as_f64().unwrap() - b).abs() < 1e-9
}

#[tokio::test]
async fn scripted_traffic_gives_exact_market_measures_and_reconciles() {
    let server = TestServer::start_with(&[("dev", "true"), ("checkpoint_interval_ms", "100")]);
    let (api, op) = (server.api(), server.operator_key.clone());
    let alice = api.signup("alice").await;
    let bob = api.signup("bob").await;
    model(&api, &alice, "alice", "a", "classification", 100, "public").await;
    model(&api, &alice, "alice", "b", "regression", 10, "public").await;
    model(&api, &bob, "bob", "c", "classification", 0, "public").await;
    model(&api, &alice, "alice", "p", "embedding", 50, "private").await;
    let mut keys = vec![];
    for caller in ["c1", "c2", "c3", "alice"] {
        if caller != "alice" {
            keys.push(api.signup(caller).await);
        }
        let deposit = json!({"account": caller, "amount": "100000", "reference": format!("d-{caller}")});
        api.post("/v1/admin/deposits", Some(&op), deposit).await.ok(201);
    }
    let (c1, c2, c3) = (&keys[0], &keys[1], &keys[2]);
    calls(&api, c1, "alice/a", "shop", 3, None).await;
    calls(&api, c2, "alice/a", "lab", 2, None).await;
    calls(&api, c3, "alice/a", "lab", 1, None).await;
    calls(&api, c1, "alice/b", "shop", 3, None).await;
    calls(&api, c2, "bob/c", "lab", 1, None).await;
    calls(&api, &alice, "alice/p", "", 2, None).await;
    // A failed call is usage too (an error, no revenue).
    let bad = json!({"inputs": {"x": {"dtype": "f32", "shape": [1, 3], "data": [1, 2, 3]}}});
    let request =
        api.request(reqwest::Method::POST, "/v1/models/alice/a/infer", Some(c3)).header("X-App", "lab").json(&bad);
    api.send(request).await.error(422, "invalid_input");

    // The market by model: a 7 calls (one failed), b 3, c 1; the private model is not shown.
    let market = api.get("/v1/stats/market?window=7d", None).await.ok(200).clone();
    assert_eq!(
        (market["calls"].as_u64(), market["revenue"].as_str(), market["active_models"].as_u64()),
        (Some(11), Some("630"), Some(3))
    );
    let models: Vec<(String, u64, String)> = market["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["model"].as_str().unwrap().to_owned(),
                m["calls"].as_u64().unwrap(),
                m["revenue"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        models,
        [("alice/a".into(), 7, "600".into()), ("alice/b".into(), 3, "30".into()), ("bob/c".into(), 1, "0".into())]
    );
    assert!(close(&market["models"][0]["share"], 7.0 / 11.0));
    assert!(close(&market["hhi"], 59.0 / 121.0), "{}", market["hhi"]);
    assert!(close(&market["gini"], 12.0 / 33.0), "{}", market["gini"]);
    assert!(close(&market["top10_share"], 1.0));
    let lorenz: Vec<(f64, f64)> =
        market["lorenz"].as_array().unwrap().iter().map(|p| (p[0].as_f64().unwrap(), p[1].as_f64().unwrap())).collect();
    let expected = [(0.0, 0.0), (1.0 / 3.0, 1.0 / 11.0), (2.0 / 3.0, 4.0 / 11.0), (1.0, 1.0)];
    assert!(
        lorenz.iter().zip(expected).all(|(a, b)| (a.0 - b.0).abs() < 1e-9 && (a.1 - b.1).abs() < 1e-9),
        "{lorenz:?}"
    );

    let by = |dimension: &'static str| {
        let api = api.clone();
        async move {
            let view = api.get(&format!("/v1/stats/market?window=24h&by={dimension}"), None).await.ok(200).clone();
            view["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| (i["key"].as_str().unwrap().to_owned(), i["calls"].as_u64().unwrap()))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(by("creator").await, [("alice".to_owned(), 10), ("bob".to_owned(), 1)]);
    assert_eq!(by("app").await, [("shop".to_owned(), 6), ("lab".to_owned(), 5)]);
    assert_eq!(by("task").await, [("classification".to_owned(), 8), ("regression".to_owned(), 3)]);
    assert_eq!(by("node").await, [("node-local".to_owned(), 11)]);

    // The catalogue by usage.
    let names = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| format!("{}/{}", m["owner"].as_str().unwrap(), m["name"].as_str().unwrap()))
            .collect()
    };
    let popular = api.get("/v1/models?sort=popular", None).await.ok(200).clone();
    assert_eq!(names(&popular), ["alice/a", "alice/b", "bob/c"]);
    let page = api.get("/v1/models?sort=revenue&limit=2", Some(&alice)).await.ok(200).clone();
    assert_eq!(names(&page), ["alice/a", "alice/b"]);
    let token = page["next_page_token"].as_str().unwrap().to_owned();
    let rest =
        api.get(&format!("/v1/models?sort=revenue&limit=2&page_token={token}"), Some(&alice)).await.ok(200).clone();
    assert_eq!(names(&rest), ["alice/p", "bob/c"], "the owner sees her private model, ranked by public usage (none)");
    api.get("/v1/models?sort=recent&window=7d", None).await.error(400, "invalid_request");

    // A model's series: today's bucket holds everything.
    let series = api.get("/v1/stats/models/alice/a?bucket=day", None).await.ok(200).clone();
    let points = series["series"].as_array().unwrap();
    assert_eq!(points.len(), 7);
    let today = points.last().unwrap();
    assert_eq!(
        (today["calls"].as_u64(), today["errors"].as_u64(), today["revenue"].as_str()),
        (Some(7), Some(1), Some("600"))
    );
    assert_eq!(today["unique_callers"], 3);
    assert!(
        today["latency_ms_p50"].as_f64().unwrap() > 0.0
            && today["latency_ms_p99"].as_f64().unwrap() >= today["latency_ms_p50"].as_f64().unwrap()
    );
    assert!(points[..6].iter().all(|p| p["calls"] == 0 && p["latency_ms_p50"].is_null()));
    let hours = api.get("/v1/stats/models/alice/a?bucket=hour", None).await.ok(200).clone();
    assert_eq!(hours["series"].as_array().unwrap().len(), 24);
    assert_eq!(hours["total"]["calls"], 7);
    // The private model: its owner sees its series, nobody else sees it exists.
    let own = api.get("/v1/stats/models/alice/p", Some(&alice)).await.ok(200).clone();
    assert_eq!(own["total"]["calls"], 2);
    api.get("/v1/stats/models/alice/p", Some(c1)).await.error(404, "not_found");

    // Demand and supply per task.
    let tasks = api.get("/v1/stats/tasks?sort=opportunity", None).await.ok(200).clone();
    let first = &tasks["items"][0];
    assert_eq!(
        (first["task"].as_str(), first["calls"].as_u64(), first["models"].as_u64()),
        (Some("classification"), Some(8), Some(2))
    );
    assert_eq!(
        (first["median_price"].as_f64(), first["calls_per_model"].as_f64(), first["unique_callers"].as_u64()),
        (Some(50.0), Some(4.0), Some(3))
    );
    let second = &tasks["items"][1];
    assert_eq!(
        (second["task"].as_str(), second["median_price"].as_f64(), second["calls_per_model"].as_f64()),
        (Some("regression"), Some(10.0), Some(3.0))
    );
    assert_eq!(tasks["items"].as_array().unwrap().len(), 8, "every task is listed");

    // Earnings: a pays alice 80 of 100; b pays 9 of 10 (node 1, treasury 0 after rounding down).
    let earnings = api.get("/v1/account/earnings", Some(&alice)).await.ok(200).clone();
    assert_eq!(earnings["total"], "507");
    let groups: Vec<(&str, u64, &str)> = earnings["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["group"].as_str().unwrap(), p["calls"].as_u64().unwrap(), p["earned"].as_str().unwrap()))
        .collect();
    assert_eq!(groups, [("alice/a", 6, "480"), ("alice/b", 3, "27")]);
    let by_app = api.get("/v1/account/earnings?group_by=app", Some(&alice)).await.ok(200).clone();
    let apps: Vec<(&str, &str)> = by_app["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["group"].as_str().unwrap(), p["earned"].as_str().unwrap()))
        .collect();
    assert_eq!(apps, [("lab", "240"), ("shop", "267")]);
    let csv = reqwest::Client::new()
        .get(format!("{}/v1/account/earnings?format=csv", server.url))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "t,group,calls,earned");
    assert!(lines[1].ends_with(",alice/a,6,480") && lines[2].ends_with(",alice/b,3,27"), "{csv}");

    // Callers see their own spending; failed calls cost nothing.
    let spent = api.get("/v1/account/spending", Some(c1)).await.ok(200).clone();
    assert_eq!(spent["total"], "330");
    let by_app = api.get("/v1/account/spending?group_by=app", Some(c3)).await.ok(200).clone();
    let point = &by_app["series"][0];
    assert_eq!(
        (point["group"].as_str(), point["calls"].as_u64(), point["errors"].as_u64(), point["spent"].as_str()),
        (Some("lab"), Some(2), Some(1), Some("100"))
    );
    api.get("/v1/account/spending?group_by=planet", Some(c3)).await.error(400, "invalid_request");
    let spending_csv = reqwest::Client::new()
        .get(format!("{}/v1/account/spending?format=csv&group_by=app", server.url))
        .bearer_auth(c3)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        spending_csv.starts_with("t,group,calls,failed,spent\n") && spending_csv.contains(",lab,2,1,100\n"),
        "{spending_csv}"
    );

    // Reconciliation: analytics = ledger = the log audit.
    let account = api.get("/v1/account", Some(&alice)).await.ok(200).clone();
    assert_eq!(account["earned_total"], "507");
    api.get("/v1/receipts/10", None).await.ok(200);
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(crate::support::BINARY)
        .env("VITRINE_URL", &server.url)
        .env("VITRINE_CLIENT_CONFIG", dir.path().join("client.toml"))
        .args(["audit", "--creator", "alice", "--key", &alice, "--state", dir.path().join("s.json").to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    // People read tokens (minor units stay in JSON and CSV): 480 is 0.00000048 OPG.
    assert!(output.status.success() && text.contains("0.00000048 OPG") && text.contains("0.000000027 OPG"), "{text}");
    assert!(text.contains("the stats routes report the same earnings: 0.000000507 OPG"), "{text}");
    // Analytics changed behind the server's back: the audit names it.
    let url = format!("sqlite://{}", server.data_dir.join("vitrine.db").display());
    let db = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("UPDATE usage_rollups SET creator_revenue = creator_revenue + 5 WHERE dimension = 'model' AND granularity = 86400000")
        .execute(&db)
        .await
        .unwrap();
    let tampered = std::process::Command::new(crate::support::BINARY)
        .env("VITRINE_URL", &server.url)
        .env("VITRINE_CLIENT_CONFIG", dir.path().join("client.toml"))
        .args(["audit", "--creator", "alice", "--key", &alice, "--state", dir.path().join("s.json").to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&tampered.stderr);
    assert!(!tampered.status.success() && stderr.contains("the stats routes report"), "{stderr}");
    sqlx::query("UPDATE usage_rollups SET creator_revenue = creator_revenue - 5 WHERE dimension = 'model' AND granularity = 86400000")
        .execute(&db)
        .await
        .unwrap();

    // The same figures in the terminal.
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(crate::support::BINARY)
            .env("VITRINE_URL", &server.url)
            .env("VITRINE_KEY", &alice)
            .env("VITRINE_CLIENT_CONFIG", dir.path().join("client.toml"))
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let market = cli(&["stats", "market"]);
    assert!(market.contains("alice/a") && market.contains("63.6%") && market.contains("HHI 0.488"), "{market}");
    // Amounts in tokens with the symbol, as everywhere else in the CLI.
    let series = cli(&["stats", "model", "alice/a"]);
    assert!(series.contains("0.0000006 OPG"), "{series}");
    let tasks = cli(&["stats", "tasks", "--sort", "opportunity"]);
    // The window first, the same by default for every stats command.
    assert!(tasks.starts_with("window: 7d (the last 7 days"), "{tasks}");
    let first_row = tasks.lines().skip_while(|line| !line.starts_with("TASK")).nth(1).unwrap();
    assert!(first_row.starts_with("classification"), "{tasks}");
    assert!(tasks.contains("OPPORTUNITY") && tasks.contains("opportunity: calls per public model"), "{tasks}");
    // The median price too: tokens, not a float of minor units.
    assert!(!tasks.contains(".0 ") && first_row.matches(" OPG").count() == 2, "{tasks}");
    // The largest rows first, and how many more there are.
    let top = cli(&["stats", "market", "--limit", "1"]);
    assert!(top.contains("alice/a") && top.contains("… and 2 more (--limit 0 shows every row)"), "{top}");
    assert!(cli(&["stats", "apps", "--window", "24h"]).contains("shop"));
    assert!(cli(&["stats", "nodes"]).contains("node-local"));
    let trending = cli(&["stats", "trending"]);
    assert!(trending.starts_with("window: 7d") && trending.contains("at least 10 calls"), "{trending}");
    assert!(
        trending.contains("AGAINST USUAL") && trending.contains("ranked by calls against the usual calls"),
        "{trending}"
    );
    assert!(cli(&["stats", "market"]).starts_with("window: 7d"));
    let earnings = cli(&["earnings"]);
    assert!(earnings.contains("total earned: 0.000000507 OPG"), "{earnings}");
    assert!(cli(&["spending"]).contains("total spent: "));
    assert!(cli(&["earnings", "--csv", "--group-by", "app"]).starts_with("t,group,calls,earned\n"));

    let metrics = reqwest::get(format!("{}/metrics", server.url)).await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("\nvitrine_usage_events 13\n")
            && metrics.contains("# TYPE vitrine_ledger_batches_total counter"),
        "{metrics}"
    );

    for bad in [
        "/v1/stats/market?window=1y",
        "/v1/stats/market?by=planet",
        "/v1/stats/tasks?sort=price",
        "/v1/stats/trending?window=30d",
        "/v1/stats/models/alice/a?bucket=week",
        "/v1/stats/models/alice/a?from=yesterday",
        "/v1/stats/models/alice/a?bucket=hour&from=2020-01-01T00:00:00Z",
    ] {
        api.get(bad, None).await.error(400, "invalid_request");
    }
    api.get("/v1/account/earnings?group_by=caller", Some(&alice)).await.error(400, "invalid_request");
    api.get("/v1/account/earnings", None).await.error(401, "unauthorized");
}

#[tokio::test]
async fn trending_ranks_growth_against_previous_windows_with_a_minimum_volume() {
    let server = TestServer::start_with(&[("dev", "true")]);
    let api = server.api();
    let alice = api.signup("alice").await;
    let bob = api.signup("bob").await;
    for name in ["t1", "t2", "t3", "t4"] {
        model(&api, &alice, "alice", name, "other", 0, "public").await;
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let day = 86_400_000;
    for days_ago in 1..=3 {
        let at = Some(now - days_ago * day - 3_600_000);
        // 2, 4 and 6 calls: the window before has 2, the baseline (their mean) is 4.
        calls(&api, &bob, "alice/t1", "", 2 * days_ago as usize, at).await;
        calls(&api, &bob, "alice/t2", "", 10, at).await;
        calls(&api, &bob, "alice/t4", "", 30, at).await;
    }
    calls(&api, &bob, "alice/t1", "", 12, None).await; // (12 − 4) / 4 = 2
    calls(&api, &bob, "alice/t2", "", 20, None).await; // (20 − 10) / 10 = 1
    calls(&api, &bob, "alice/t3", "", 5, None).await; // below the minimum volume
    calls(&api, &bob, "alice/t4", "", 15, None).await; // (15 − 30) / 30 = −0.5
    let trending = api.get("/v1/stats/trending?window=24h", None).await.ok(200).clone();
    let items: Vec<(&str, u64, u64, f64, f64)> = trending["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["model"].as_str().unwrap(),
                i["calls"].as_u64().unwrap(),
                i["previous_calls"].as_u64().unwrap(),
                i["baseline_calls"].as_f64().unwrap(),
                i["growth"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        items,
        [("alice/t1", 12, 2, 4.0, 2.0), ("alice/t2", 20, 10, 10.0, 1.0), ("alice/t4", 15, 30, 30.0, -0.5)]
    );
    assert_eq!(trending["calls_min"], 10);
    let catalogue = api.get("/v1/models?sort=trending&window=24h", None).await.ok(200).clone();
    let order: Vec<&str> = catalogue["items"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(order, ["t1", "t2", "t4", "t3"]);
    // Back-dating is a development server's feature only.
    let plain = TestServer::start();
    let key = plain.api().signup("carol").await;
    let request = plain.api().request(reqwest::Method::GET, "/v1/account", Some(&key));
    plain.api().send(request).await.ok(200);
    model(&plain.api(), &key, "carol", "m", "other", 0, "public").await;
    let dated = plain
        .api()
        .request(reqwest::Method::POST, "/v1/models/carol/m/infer", Some(&key))
        .header("X-Vitrine-Time", (now - day).to_string())
        .json(&body());
    plain.api().send(dated).await.error(400, "invalid_request");
}

/// A small demo market: real models, back-dated traffic through three nodes,
/// and everything it shows adds up.
#[tokio::test]
async fn the_demo_fills_a_market_that_adds_up() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let demo = |data: &std::path::Path| {
        std::process::Command::new(crate::support::BINARY)
            .env("RUST_LOG", "error")
            .args([
                "demo",
                "--data-dir",
                data.to_str().unwrap(),
                "--creators",
                "4",
                "--callers",
                "8",
                "--days",
                "7",
                "--calls",
                "300",
            ])
            .output()
            .unwrap()
    };
    let output = demo(&data);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("300 calls over 7 days through 3 nodes (0 failed)"), "{stdout}");
    assert!(String::from_utf8_lossy(&demo(&data).stdout).contains("already holds a market"));
    // With the default log filter, filling a market logs no INFO line (and,
    // off a terminal, no progress bar either): one summary line says it all.
    let quiet = std::process::Command::new(crate::support::BINARY)
        .env_remove("RUST_LOG")
        .args(["demo", "--data-dir", dir.path().join("quiet").to_str().unwrap(), "--creators", "2", "--callers", "2"])
        .args(["--days", "2", "--calls", "20"])
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&quiet.stdout), String::from_utf8_lossy(&quiet.stderr));
    assert!(quiet.status.success() && stdout.lines().count() == 1, "{stdout}{stderr}");
    assert!(!stderr.contains(" INFO ") && !stderr.contains('\u{1b}'), "{stderr}");

    let server = crate::support::TestServer::on_data_dir_with(data.clone(), &[("checkpoint_interval_ms", "100")]);
    let api = server.api();
    let market = api.get("/v1/stats/market?window=30d", None).await.ok(200).clone();
    assert_eq!(market["calls"], 300);
    assert!(market["active_models"].as_u64().unwrap() >= 3);
    let nodes = api.get("/v1/stats/market?window=30d&by=node", None).await.ok(200).clone();
    assert_eq!(nodes["items"].as_array().unwrap().len(), 3);
    let days = api.get("/v1/stats/market?window=24h", None).await.ok(200).clone();
    assert!(days["calls"].as_u64().unwrap() < 300, "traffic is spread over days");
    let tasks = api.get("/v1/stats/tasks", None).await.ok(200).clone();
    assert_eq!(tasks["items"].as_array().unwrap().iter().map(|t| t["calls"].as_u64().unwrap()).sum::<u64>(), 300);
    // No model is called before it was uploaded: the demo dates uploads back
    // before each model's first call, and some models arrive late.
    let listed = api.get("/v1/models?limit=100", None).await.ok(200).clone();
    let mut uploaded_within = 0;
    let week_ago = time::OffsetDateTime::now_utc() - time::Duration::days(8);
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    for model in listed["items"].as_array().unwrap() {
        let created = time::OffsetDateTime::parse(model["created_at"].as_str().unwrap(), rfc3339).unwrap();
        uploaded_within += usize::from(created > week_ago);
        let path = format!(
            "/v1/stats/models/{}/{}?bucket=day&from={}",
            model["owner"].as_str().unwrap(),
            model["name"].as_str().unwrap(),
            week_ago.replace_nanosecond(0).unwrap().format(rfc3339).unwrap()
        );
        let series = api.get(&path, None).await.ok(200).clone();
        let first = series["series"].as_array().unwrap().iter().find(|p| p["calls"].as_u64().unwrap() > 0);
        if let Some(first) = first {
            let day = time::OffsetDateTime::parse(first["t"].as_str().unwrap(), rfc3339).unwrap();
            assert!(created < day + time::Duration::days(1), "{model} is called on {day} before its upload");
        }
    }
    assert!(uploaded_within > 0, "some models are uploaded within the demo's days");
    let ledger = api.get("/v1/admin/ledger", Some(&server.operator_key)).await.ok(200).clone();
    assert_eq!(ledger["debits_total"], ledger["credits_total"]);
    let state = dir.path().join("audit.json");
    let audit = std::process::Command::new(crate::support::BINARY)
        .env("VITRINE_URL", &server.url)
        .env("VITRINE_CLIENT_CONFIG", dir.path().join("client.toml"))
        .args(["audit", "--state", state.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(audit.status.success(), "{}", String::from_utf8_lossy(&audit.stderr));

    // Every public figure, recomputed from the log (read by tiles), agrees
    // with the stats routes; a second audit reads only what is new.
    let audit_market = |state: &std::path::Path| {
        std::process::Command::new(crate::support::BINARY)
            .env("VITRINE_URL", &server.url)
            .env("VITRINE_CLIENT_CONFIG", dir.path().join("client.toml"))
            .args(["audit", "--market", "--state", state.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let market_state = dir.path().join("market-audit.json");
    let output = audit_market(&market_state);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("read 300 new leaves by tiles (0 cached)"), "{stdout}");
    assert!(stdout.contains("window 30d, by model: 300 calls"), "{stdout}");
    for dimension in ["model", "creator", "task", "app", "node"] {
        for window in ["24h", "7d", "30d"] {
            assert!(stdout.contains(&format!("window {window}, by {dimension}: ")), "{window} {dimension}: {stdout}");
        }
    }
    // Three more calls: one to a model deleted since (the stats still count
    // it), one to a model made private since (they no longer name it).
    let late = api.signup("late").await;
    for name in ["lin", "gone", "hidden"] {
        api.post("/v1/models", Some(&late), json!({"name": name, "task": "regression"})).await.ok(201);
        let path = format!("/v1/models/late/{name}");
        api.upload(&format!("{path}/versions"), Some(&late), crate::support::fixture("linear.onnx")).await.ok(201);
        let body = json!({"inputs": {"x": {"dtype": "f32", "shape": [1, 4], "data": [1, 2, 3, 4]}}});
        api.post(&format!("{path}/infer"), Some(&late), body).await.ok(200);
    }
    let delete = api.request(reqwest::Method::DELETE, "/v1/models/late/gone", Some(&late));
    assert!(api.send(delete).await.status < 300);
    api.patch("/v1/models/late/hidden", Some(&late), json!({"visibility": "private"})).await.ok(200);
    let output = audit_market(&market_state);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("read 3 new leaves by tiles (300 cached)"), "{stdout}");
    assert!(stdout.contains("window 30d, by model: 302 calls"), "{stdout}");
    assert!(stdout.contains("window 30d, by creator: 303 calls"), "{stdout}");

    // A rollup altered behind the server's back: the audit names the figure.
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", data.join("vitrine.db").display())).await.unwrap();
    let altered = sqlx::query(
        "UPDATE usage_rollups SET calls = calls + 5 WHERE dimension = 'node' AND granularity = 86400000 \
         AND public = 1 AND (key, bucket) = (SELECT key, bucket FROM usage_rollups WHERE dimension = 'node' \
         AND granularity = 86400000 AND public = 1 ORDER BY bucket DESC, key LIMIT 1)",
    )
    .execute(&db)
    .await
    .unwrap();
    assert_eq!(altered.rows_affected(), 1);
    let output = audit_market(&market_state);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
    assert!(stderr.contains("window 30d, by node: calls: the log says 303, the stats route 308"), "{stderr}");
    assert!(stderr.contains("window 7d, by node: calls: the log says"), "{stderr}");
    assert!(!stderr.contains("by model"), "only the altered dimension differs: {stderr}");
}

/// What the dashboard reads: the headline against the window before, demand
/// over time by task, concentration per bucket, a creator's share, a model's
/// apps and share of its task, opportunities per task, and price order.
#[tokio::test]
async fn the_dashboard_routes_break_demand_down_by_time_task_creator_and_app() {
    let server = TestServer::start_with(&[("dev", "true")]);
    let (api, op) = (server.api(), server.operator_key.clone());
    let alice = api.signup("alice").await;
    let bob = api.signup("bob").await;
    model(&api, &alice, "alice", "a", "classification", 100, "public").await;
    model(&api, &alice, "alice", "b", "regression", 10, "public").await;
    model(&api, &bob, "bob", "c", "classification", 0, "public").await;
    let (c1, c2) = (api.signup("c1").await, api.signup("c2").await);
    for caller in ["c1", "c2"] {
        let deposit = json!({"account": caller, "amount": "100000", "reference": format!("d-{caller}")});
        api.post("/v1/admin/deposits", Some(&op), deposit).await.ok(201);
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let eight_days_ago = Some(now - 8 * 86_400_000);
    calls(&api, &c1, "alice/a", "shop", 10, eight_days_ago).await;
    calls(&api, &c1, "bob/c", "shop", 2, eight_days_ago).await;
    calls(&api, &c1, "alice/a", "shop", 3, None).await;
    calls(&api, &c2, "alice/a", "lab", 2, None).await;
    calls(&api, &c1, "alice/b", "shop", 1, None).await;
    calls(&api, &c2, "bob/c", "lab", 1, None).await;
    let bad = json!({"inputs": {"x": {"dtype": "f32", "shape": [1, 3], "data": [1, 2, 3]}}});
    let request =
        api.request(reqwest::Method::POST, "/v1/models/alice/a/infer", Some(&c2)).header("X-App", "lab").json(&bad);
    api.send(request).await.error(422, "invalid_input");

    // The headline, and the same figures for the week before.
    let market = api.get("/v1/stats/market?window=7d", None).await.ok(200).clone();
    let headline = |v: &Value| {
        (
            v["calls"].as_u64().unwrap(),
            v["revenue"].as_str().unwrap().to_owned(),
            v["active_models"].as_u64().unwrap(),
            v["active_creators"].as_u64().unwrap(),
            v["unique_callers"].as_u64().unwrap(),
        )
    };
    assert_eq!(headline(&market), (8, "510".into(), 3, 2, 2));
    assert_eq!(headline(&market["previous"]), (12, "1000".into(), 2, 2, 1));
    assert_eq!(market["previous"]["errors"], 0);
    let all = api.get("/v1/stats/market?window=all", None).await.ok(200).clone();
    assert_eq!((all["window"].as_str(), all["calls"].as_u64()), (Some("all"), Some(20)));
    api.get("/v1/stats/market?window=1y", None).await.error(400, "invalid_request");

    // Demand over time by task: today's bucket holds this week's calls.
    let by_task = api.get("/v1/stats/market/series?window=7d&by=task", None).await.ok(200).clone();
    assert_eq!((by_task["bucket"].as_str(), by_task["buckets"].as_array().unwrap().len()), (Some("day"), 7));
    let series: Vec<(&str, Vec<u64>)> = by_task["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (s["key"].as_str().unwrap(), s["calls"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).collect())
        })
        .collect();
    assert_eq!(series, [("classification", vec![0, 0, 0, 0, 0, 0, 7]), ("regression", vec![0, 0, 0, 0, 0, 0, 1])]);
    assert_eq!(by_task["total"]["revenue"][6], "510");
    let today = &by_task["concentration"][6];
    assert_eq!((today["calls"].as_u64(), today["active"].as_u64()), (Some(8), Some(2)));
    assert!(close(&today["hhi"], 50.0 / 64.0), "{today}");
    assert_eq!(by_task["concentration"][0]["calls"], 0);
    // The rest beyond `top` is summed, and nothing is lost.
    let by_model = api.get("/v1/stats/market/series?window=30d&by=model&top=1", None).await.ok(200).clone();
    let sum = |s: &Value| s["calls"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).sum::<u64>();
    assert_eq!(by_model["series"][0]["key"], "alice/a");
    assert_eq!((sum(&by_model["series"][0]), sum(&by_model["other"]), sum(&by_model["total"])), (16, 4, 20));
    api.get("/v1/stats/market/series?top=101", None).await.error(400, "invalid_request");

    // A creator's models and share of the market.
    let creator = api.get("/v1/stats/creators/alice?window=30d", None).await.ok(200).clone();
    assert_eq!((creator["calls"].as_u64(), creator["revenue"].as_str()), (Some(17), Some("1510")));
    assert!(close(&creator["share"], 17.0 / 20.0));
    let models: Vec<(&str, u64)> = creator["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["model"].as_str().unwrap(), m["calls"].as_u64().unwrap()))
        .collect();
    assert_eq!(models, [("alice/a", 16), ("alice/b", 1)]);
    let last = creator["series"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["calls"].as_u64(), last["market_calls"].as_u64()), (Some(7), Some(8)));
    api.get("/v1/stats/creators/nobody", None).await.error(404, "not_found");

    // A model's apps and its share of its task.
    let demand = api.get("/v1/stats/models/alice/a/demand?window=7d", None).await.ok(200).clone();
    assert_eq!(
        (demand["calls"].as_u64(), demand["errors"].as_u64(), demand["revenue"].as_str()),
        (Some(6), Some(1), Some("500"))
    );
    let apps: Vec<(&str, u64, u64)> = demand["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["app"].as_str().unwrap(), a["calls"].as_u64().unwrap(), a["errors"].as_u64().unwrap()))
        .collect();
    assert_eq!(apps, [("lab", 3, 1), ("shop", 3, 0)]);
    assert_eq!((demand["task_calls"].as_u64(), demand["task_rank"].as_u64()), (Some(7), Some(1)));
    assert!(close(&demand["task_share"], 6.0 / 7.0));

    // Opportunities: growth against the window before, and failing demand.
    let tasks = api.get("/v1/stats/tasks?window=7d", None).await.ok(200).clone();
    let classification = tasks["items"].as_array().unwrap().iter().find(|t| t["task"] == "classification").unwrap();
    assert_eq!(
        (
            classification["calls"].as_u64(),
            classification["previous_calls"].as_u64(),
            classification["errors"].as_u64()
        ),
        (Some(7), Some(12), Some(1))
    );
    assert!(classification["growth"].is_null(), "below the minimum volume");
    assert!(close(&classification["error_rate"], 1.0 / 7.0));

    // The catalogue, cheapest first.
    let cheapest = api.get("/v1/models?sort=price", None).await.ok(200).clone();
    let order: Vec<&str> = cheapest["items"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(order, ["c", "b", "a"]);
}
