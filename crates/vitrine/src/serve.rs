//! `vitrine serve`: settings from file, environment and flags, logging,
//! signals, then the server crate does the rest.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use server::Config;
use server::config::LogFormat;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Data directory (database, blobs, operator key) [setting: data_dir].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free one [setting: listen].
    #[arg(long)]
    listen: Option<String>,
    /// A PostgreSQL database several nodes share, instead of SQLite in the
    /// data directory: postgres://user@host:port/database [setting: database_url].
    #[arg(long)]
    database_url: Option<String>,
    /// This node's name among the nodes of one market; it is paid as the
    /// account node-<id> [setting: node_id].
    #[arg(long)]
    node_id: Option<String>,
    /// The folder of model files, shared by the nodes of one market
    /// [setting: blob_dir; default: DATA_DIR/blobs].
    #[arg(long)]
    blob_dir: Option<PathBuf>,
    /// An S3-compatible store of model files the nodes share, as
    /// s3://BUCKET[/PREFIX], reached with the AWS_* variables
    /// (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID…) [setting: blob_url].
    #[arg(long)]
    blob_url: Option<String>,
    /// A TOML file of settings; environment variables (VITRINE_<SETTING>)
    /// and flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Any setting, as KEY=VALUE (for example --set upload_bytes_max=1048576).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    settings: Vec<String>,
    /// Print the effective settings as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// A development server: enables the faucet [setting: dev].
    #[arg(long)]
    dev: bool,
    /// On a data directory with no models, first fill it with a demo market
    /// (see `vitrine demo`).
    #[arg(long)]
    demo: bool,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = load_config(&args)?;
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    init_logging(config.log_format);
    let data_dir = config.data_dir.clone();
    if args.demo {
        let size = crate::demo::DemoSize { creators: 30, callers: 200, days: 21, calls: 20_000 };
        println!("preparing the demo market (first start only)…");
        if crate::demo::populate(&config, &size).await.context("cannot build the demo market")? {
            let key = data_dir.join(server::OPERATOR_KEY_FILE);
            println!("demo market ready; the operator's key is in {}", key.display());
        }
    }
    let (state, operator_key) = server::open_state(config).await.context("cannot start")?;
    let mut stdout = std::io::stdout();
    if let Some(key) = operator_key {
        let path = data_dir.join(server::OPERATOR_KEY_FILE);
        writeln!(stdout, "operator key (shown once; also saved in {}): {}", path.display(), key.expose())?;
    }
    server::serve(
        state,
        |address| {
            // Tests and scripts read this line to find the port.
            let _ = writeln!(stdout, "vitrine listening on http://{address}");
            let _ = stdout.flush();
            tracing::info!(%address, data_dir = %data_dir.display(), "listening");
        },
        shutdown_signal(),
    )
    .await?;
    tracing::info!("stopped");
    Ok(())
}

fn load_config(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut flags = toml::Table::new();
    for setting in &args.settings {
        let (key, value) =
            setting.split_once('=').with_context(|| format!("--set takes KEY=VALUE, not '{setting}'"))?;
        flags.insert(key.trim().to_owned(), server::config::setting_value(value.trim()));
    }
    if let Some(dir) = &args.data_dir {
        flags.insert("data_dir".into(), dir.display().to_string().into());
    }
    if args.dev {
        flags.insert("dev".into(), true.into());
    }
    if let Some(listen) = &args.listen {
        flags.insert("listen".into(), listen.clone().into());
    }
    if let Some(url) = &args.database_url {
        flags.insert("database_url".into(), url.clone().into());
    }
    if let Some(node_id) = &args.node_id {
        flags.insert("node_id".into(), node_id.clone().into());
    }
    if let Some(dir) = &args.blob_dir {
        flags.insert("blob_dir".into(), dir.display().to_string().into());
    }
    if let Some(url) = &args.blob_url {
        flags.insert("blob_url".into(), url.clone().into());
    }
    Ok(Config::load(args.config.as_deref(), std::env::vars(), flags)?)
}

/// The log's filter when `RUST_LOG` does not set one.
const LOG_FILTER: &str = "info,tower_http=warn,sqlx=warn";

/// Sets the log's filter anew (while the demo fills its market, say); set
/// once the log is.
type Refilter = Box<dyn Fn(&str) + Send + Sync>;
static REFILTER: std::sync::OnceLock<Refilter> = std::sync::OnceLock::new();

pub(crate) fn init_logging(format: LogFormat) {
    let from_env = tracing_subscriber::EnvFilter::try_from_default_env().ok();
    let chosen = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| tracing_subscriber::EnvFilter::new(LOG_FILTER));
    // Colours for a terminal only: a log written to a file or a pipe is plain text.
    let colours = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colours);
    // A filter the operator chose with RUST_LOG is never changed.
    let refilter = |reload: Refilter| {
        if !chosen {
            let _ = REFILTER.set(reload);
        }
    };
    match format {
        LogFormat::Text => {
            let builder = builder.with_filter_reloading();
            let handle = builder.reload_handle();
            refilter(Box::new(move |d| drop(handle.reload(tracing_subscriber::EnvFilter::new(d)))));
            builder.init()
        }
        LogFormat::Json => {
            let builder = builder.json().with_filter_reloading();
            let handle = builder.reload_handle();
            refilter(Box::new(move |d| drop(handle.reload(tracing_subscriber::EnvFilter::new(d)))));
            builder.init()
        }
    }
}

/// Only warnings and errors in the log while `quiet` (the demo's hundreds of
/// uploads and sign-ups are not news), the usual filter after; nothing
/// changes where `RUST_LOG` chose the filter.
pub(crate) fn quiet_logs(quiet: bool) {
    if let Some(refilter) = REFILTER.get() {
        refilter(if quiet { "warn" } else { LOG_FILTER });
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM; the server then stops taking
/// connections and finishes the requests in flight.
pub(crate) async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
