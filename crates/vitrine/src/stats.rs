//! `vitrine stats …` and `vitrine earnings`: the usage routes as terminal tables.

use analytics::Change;
use clap::{Args, Subcommand};
use reqwest::Method;
use server::wire::stats::{EarningsView, MarketView, SeriesView, SpendingView, TasksView, TrendingView};

use crate::client::Client;
use crate::output;

#[derive(Debug, Subcommand)]
pub enum StatsCommand {
    /// The market's demand: calls, revenue and share per model, and concentration.
    Market(MarketArgs),
    /// One model's usage over time.
    Model {
        /// owner/name
        model: String,
        /// hour or day.
        #[arg(long, default_value = "day")]
        bucket: String,
        /// RFC 3339 start [default: 7 days or 24 hours before --to].
        #[arg(long)]
        from: Option<String>,
        /// RFC 3339 end [default: now].
        #[arg(long)]
        to: Option<String>,
    },
    /// Models whose demand grows fastest.
    Trending {
        /// 24h or 7d.
        #[arg(long, default_value = "7d")]
        window: String,
    },
    /// Demand and supply per task.
    Tasks {
        /// 24h, 7d, 30d or all.
        #[arg(long, default_value = "7d")]
        window: String,
        /// calls or opportunity.
        #[arg(long, default_value = "calls")]
        sort: String,
    },
    /// The market by app (X-App).
    Apps(WindowArgs),
    /// The market by serving node.
    Nodes(WindowArgs),
}

#[derive(Debug, Args)]
pub struct WindowArgs {
    /// 24h, 7d or 30d.
    #[arg(long, default_value = "7d")]
    window: String,
}

#[derive(Debug, Args)]
pub struct MarketArgs {
    /// 24h, 7d or 30d.
    #[arg(long, default_value = "7d")]
    window: String,
    /// model, creator, task, app or node.
    #[arg(long, default_value = "model")]
    by: String,
    /// Rows shown, the largest first (0: all); the summary counts them all.
    #[arg(long, default_value_t = 20)]
    limit: usize,
}

/// Options of `vitrine earnings` and `vitrine spending`.
#[derive(Debug, Args)]
pub struct AccountSeriesArgs {
    /// model or app.
    #[arg(long, default_value = "model")]
    group_by: String,
    /// hour or day.
    #[arg(long, default_value = "day")]
    bucket: String,
    /// The first bucket, as an RFC 3339 time (2026-12-01T00:00:00Z) [default: 7 days (or 24 hours) before --to].
    #[arg(long)]
    from: Option<String>,
    /// The end, as an RFC 3339 time [default: now].
    #[arg(long)]
    to: Option<String>,
    /// Print the server's CSV (amounts in minor units, as the API counts them).
    #[arg(long)]
    csv: bool,
}

pub async fn run_stats(client: &Client, json: bool, command: StatsCommand) -> anyhow::Result<()> {
    match command {
        StatsCommand::Market(args) => market(client, json, &args.window, &args.by, args.limit).await,
        StatsCommand::Apps(args) => market(client, json, &args.window, "app", 0).await,
        StatsCommand::Nodes(args) => market(client, json, &args.window, "node", 0).await,
        StatsCommand::Model { model, bucket, from, to } => {
            let mut query = vec![("bucket", bucket)];
            query.extend(from.map(|f| ("from", f)));
            query.extend(to.map(|t| ("to", t)));
            let path = format!("/v1/stats/models/{}", model.trim_matches('/'));
            let view: SeriesView = client.send_as(client.request(Method::GET, &path).query(&query)).await?;
            if json {
                output::json(&view);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = view
                .series
                .into_iter()
                .map(|p| {
                    vec![
                        p.t,
                        p.calls.to_string(),
                        p.errors.to_string(),
                        output::tokens_of(&p.revenue),
                        p.unique_callers.to_string(),
                        milliseconds(p.latency_ms_p50),
                        milliseconds(p.latency_ms_p99),
                    ]
                })
                .collect();
            output::table(&["bucket", "calls", "errors", "revenue", "callers", "p50", "p99"], &rows);
            Ok(())
        }
        StatsCommand::Trending { window } => {
            let view: TrendingView =
                client.send_as(client.request(Method::GET, "/v1/stats/trending").query(&[("window", window)])).await?;
            if json {
                output::json(&view);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = view
                .items
                .into_iter()
                .map(|i| {
                    vec![
                        i.model,
                        i.calls.to_string(),
                        i.previous_calls.to_string(),
                        Change::of(i.calls as f64, i.previous_calls as f64).to_string(),
                        format!("{:.1}", i.baseline_calls),
                        Change::of(i.calls as f64, i.baseline_calls.max(1.0)).to_string(),
                    ]
                })
                .collect();
            print_window(&view.window);
            output::table(&["model", "calls", "window before", "change", "usual calls", "against usual"], &rows);
            println!(
                "ranked by calls against the usual calls (the mean of the 3 windows before; none counts as 1); \
                 change: against the window before; at least {} calls in the window to be listed",
                view.calls_min
            );
            Ok(())
        }
        StatsCommand::Tasks { window, sort } => {
            let query = [("window", window), ("sort", sort)];
            let view: TasksView = client.send_as(client.request(Method::GET, "/v1/stats/tasks").query(&query)).await?;
            if json {
                output::json(&view);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = view
                .items
                .into_iter()
                .map(|i| {
                    vec![
                        i.task,
                        i.calls.to_string(),
                        Change::of(i.calls as f64, i.previous_calls as f64).to_string(),
                        output::tokens_of(&i.revenue),
                        i.unique_callers.to_string(),
                        i.models.to_string(),
                        // A median of prices: rounded to a whole minor unit.
                        output::or_dash(i.median_price.map(|m| output::tokens_of(m.round() as u64))),
                        format!("{:.1}", i.calls_per_model),
                    ]
                })
                .collect();
            print_window(&view.window);
            output::table(
                &["task", "calls", "change", "revenue", "callers", "models", "median price per call", "opportunity"],
                &rows,
            );
            println!(
                "opportunity: calls per public model of the task, where a new model would find the most demand per \
                 competitor"
            );
            Ok(())
        }
    }
}

async fn market(client: &Client, json: bool, window: &str, by: &str, limit: usize) -> anyhow::Result<()> {
    let query = [("window", window), ("by", by)];
    let view: MarketView = client.send_as(client.request(Method::GET, "/v1/stats/market").query(&query)).await?;
    if json {
        output::json(&view);
        return Ok(());
    }
    print_window(&view.window);
    let mut rows: Vec<Vec<String>> = view
        .items
        .iter()
        .map(|i| {
            vec![i.key.clone(), i.calls.to_string(), output::tokens_of(&i.revenue), format!("{:.1}%", i.share * 100.0)]
        })
        .collect();
    let more = if limit > 0 && rows.len() > limit { rows.split_off(limit).len() } else { 0 };
    output::table(&[by, "calls", "revenue", "share"], &rows);
    if more > 0 {
        println!("… and {more} more (--limit 0 shows every row)");
    }
    println!(
        "{} calls, {} active; top-10 share {:.1}%, HHI {:.3}, Gini {:.3} ({})",
        view.calls,
        view.active,
        view.top10_share * 100.0,
        view.hhi,
        view.gini,
        view.window,
    );
    Ok(())
}

/// Which of the caller's own series: what it earned as a creator, or what
/// it spent as a caller.
#[derive(Debug, Clone, Copy)]
pub enum AccountSeriesKind {
    Earnings,
    Spending,
}

impl AccountSeriesKind {
    fn path(self) -> &'static str {
        match self {
            AccountSeriesKind::Earnings => "/v1/account/earnings",
            AccountSeriesKind::Spending => "/v1/account/spending",
        }
    }
}

/// `vitrine earnings` and `vitrine spending`: the caller's own series as a
/// table, the server's JSON, or its CSV.
pub async fn run_account_series(
    client: &Client,
    json: bool,
    kind: AccountSeriesKind,
    args: AccountSeriesArgs,
) -> anyhow::Result<()> {
    client.require_key()?;
    let mut query = vec![("group_by", args.group_by), ("bucket", args.bucket)];
    query.extend(args.from.map(|f| ("from", f)));
    query.extend(args.to.map(|t| ("to", t)));
    if args.csv {
        query.push(("format", "csv".into()));
        let response = client.send(client.request(Method::GET, kind.path()).query(&query)).await?;
        print!("{}", response.text().await?);
        return Ok(());
    }
    let request = client.request(Method::GET, kind.path()).query(&query);
    // The caller's own series: its columns, its rows, and what its total counts.
    let (header, rows, amount, total): (&[&str], Vec<Vec<String>>, &str, String) = match kind {
        AccountSeriesKind::Earnings => {
            let view: EarningsView = client.send_as(request).await?;
            if json {
                output::json(&view);
                return Ok(());
            }
            let rows =
                view.series.into_iter().map(|p| vec![p.t, p.group, p.calls.to_string(), output::tokens_of(&p.earned)]);
            (&["bucket", "group", "calls", "earned"], rows.collect(), "earned", view.total)
        }
        AccountSeriesKind::Spending => {
            let view: SpendingView = client.send_as(request).await?;
            if json {
                output::json(&view);
                return Ok(());
            }
            let rows = view
                .series
                .into_iter()
                .map(|p| vec![p.t, p.group, p.calls.to_string(), p.errors.to_string(), output::tokens_of(&p.spent)]);
            (&["bucket", "group", "calls", "failed", "spent"], rows.collect(), "spent", view.total)
        }
    };
    output::table(header, &rows);
    println!("total {amount}: {}", output::tokens_of(&total));
    Ok(())
}

/// Which window the figures below cover, first.
fn print_window(window: &str) {
    let words = match window {
        "24h" => "the last 24 hours".to_owned(),
        "all" => "all time".to_owned(),
        other => match other.strip_suffix('d') {
            Some(days) => format!("the last {days} days"),
            None => other.to_owned(),
        },
    };
    println!("window: {window} ({words}; --window changes it)");
}

fn milliseconds(value: Option<f64>) -> String {
    value.map(|ms| format!("{ms:.2} ms")).unwrap_or_else(|| "-".into())
}
