//! `vitrine bench usage`: the stats routes over a market of many usage
//! events.

use std::time::Instant;

/// Fills a fresh market with `count` usage events over the last 30 days
/// (100 models, Zipf demand), through the same rollup code as live calls,
/// then times the stats routes over HTTP.
pub(crate) async fn run(data_dir: &std::path::Path, count: u64) -> anyhow::Result<()> {
    const MODELS: usize = 100;
    const BATCH: u64 = 100_000;
    let mut flags = toml::Table::new();
    flags.insert("data_dir".into(), data_dir.display().to_string().into());
    flags.insert("listen".into(), "127.0.0.1:0".into());
    // The bench's clients are one key from one address, by design.
    for limit in ["calls_per_key_concurrent_max", "calls_per_key_per_minute_max", "signups_per_address_per_hour"] {
        flags.insert(limit.into(), 0.into());
    }
    let config = server::Config::load(None, std::iter::empty(), flags)?;
    let (state, _) = server::open_state(config).await?;
    let store = state.store.clone();
    let mut models = vec![];
    for creator in 0..20 {
        let name: domain::AccountName = format!("creator-{creator:02}").parse().map_err(|e| anyhow::anyhow!("{e}"))?;
        let account = store.create_account(&name, false, &domain::ApiKey::generate()).await?;
        for m in 0..MODELS / 20 {
            let task = domain::Task::ALL[(creator + m) % domain::Task::ALL.len()];
            let new = store::NewModel {
                name: format!("model-{m}").parse().map_err(|e| anyhow::anyhow!("{e}"))?,
                description: domain::Description::default(),
                task,
                license: domain::License::default(),
                tags: domain::Tags::default(),
                visibility: domain::Visibility::Public,
                price_per_inference: domain::Amount::from_minor_units(1000)?,
            };
            let record = store.create_model(&account, &new).await?;
            models.push((record.id, account.id, task));
        }
    }
    let weights: Vec<f64> = (1..=models.len()).map(|rank| 1.0 / (rank as f64).powf(1.1)).collect();
    let total_weight: f64 = weights.iter().sum();
    let cumulative: Vec<f64> = weights
        .iter()
        .scan(0.0, |acc, w| {
            *acc += w / total_weight;
            Some(*acc)
        })
        .collect();
    let mut rng = runtime::synthetic::Seeded::new(7);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    let span = 30 * 86_400_000i64;
    let started = Instant::now();
    let mut written = 0;
    while written < count {
        let n = BATCH.min(count - written);
        // Events arrive in time order, as they would.
        let events: Vec<store::UsageEvent> = (written..written + n)
            .map(|i| {
                let u = rng.unit();
                let (model_id, owner_id, task) = models[cumulative.partition_point(|&c| c < u).min(models.len() - 1)];
                let caller = (rng.next_u64() % 5000).to_be_bytes();
                let mut pseudonym = [0u8; 32];
                pseudonym[..8].copy_from_slice(&domain::Sha256::digest(&caller).as_bytes()[..8]);
                store::UsageEvent {
                    created_at_ms: now - span + (span as f64 * i as f64 / count as f64) as i64,
                    model_id,
                    version: 1,
                    owner_id,
                    task: task.as_str().to_owned(),
                    public: true,
                    caller: pseudonym,
                    app: ["webshop", "mobile", "lab"][(i % 3) as usize].to_owned(),
                    node: "node-local".into(),
                    price: 1000,
                    creator_share: 800,
                    latency_us: 200 + rng.next_u64() % 5000,
                    cpu_us: 100 + rng.next_u64() % 4000,
                    status: "ok".into(),
                }
            })
            .collect();
        store.record_usage(&events).await?;
        written += n;
    }
    let elapsed = started.elapsed();
    println!(
        "recorded {count} usage events with rollups in {:.1} s ({:.0} events/s)",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64()
    );

    let running = server::RunningServer::start(state).await?;
    let url = running.url.clone();
    let http = reqwest::Client::new();
    // The busiest model: rank 1 of the Zipf demand.
    let top_name = "creator-00/model-0";
    for (label, path) in [
        ("market, 24h", "/v1/stats/market?window=24h".to_owned()),
        ("market, 30d", "/v1/stats/market?window=30d".to_owned()),
        ("market by creator, 30d", "/v1/stats/market?window=30d&by=creator".to_owned()),
        ("tasks, 30d", "/v1/stats/tasks".to_owned()),
        ("trending, 7d", "/v1/stats/trending?window=7d".to_owned()),
        (
            "busiest model's 30-day series",
            format!("/v1/stats/models/{top_name}?bucket=day&from={}", thirty_days_ago()?),
        ),
        (
            "busiest model's 7-day hourly series",
            format!("/v1/stats/models/{top_name}?bucket=hour&from={}", days_ago(7)?),
        ),
    ] {
        let mut times = vec![];
        for _ in 0..10 {
            let sent = Instant::now();
            let response = http.get(format!("{url}{path}")).send().await?;
            anyhow::ensure!(response.status().is_success(), "{path}: {}", response.status());
            response.bytes().await?;
            times.push(sent.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        println!("{label}: median {:.1} ms, max {:.1} ms (10 requests over HTTP)", times[5], times[9]);
    }
    running.stop().await?;
    let bytes = std::fs::metadata(data_dir.join(server::DATABASE_FILE))?.len();
    println!("database: {:.0} MiB", bytes as f64 / 1048576.0);
    Ok(())
}

fn days_ago(days: i64) -> anyhow::Result<String> {
    let t = time::OffsetDateTime::now_utc() - time::Duration::days(days);
    Ok(t.format(&time::format_description::well_known::Rfc3339)?)
}

fn thirty_days_ago() -> anyhow::Result<String> {
    days_ago(29)
}
