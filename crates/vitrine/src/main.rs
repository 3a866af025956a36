//! `vitrine`: the server (`vitrine serve`) and a command-line client for
//! every route. Thin glue: arguments are parsed here into settings, the work
//! is done by the `server` crate or over HTTP.

mod audit;
mod bench;
mod client;
mod commands;
mod demo;
mod market_audit;
mod migrate;
mod output;
mod push;
mod serve;
mod stats;
mod witness;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's allocator, for the server, the CLI and the
/// model workers (the same executable). A paid call allocates and frees
/// a few hundred small buffers (headers, JSON, the receipt, the batch's
/// rows); glibc's malloc and free, with their consolidation of freed
/// chunks, took about 13% of the paid path's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "vitrine", version, about = "A model marketplace with usage you can see and verify")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    client: client::ClientArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(serve::ServeArgs),
    /// Measure the paid-inference path on this machine.
    Bench(bench::BenchArgs),
    /// Fill a fresh data directory with a living demo market.
    Demo(demo::DemoArgs),
    /// Move a single node's market from its SQLite database to PostgreSQL.
    Migrate(migrate::MigrateArgs),
    /// Run a witness: cosign the checkpoints of the logs it trusts, each
    /// only if consistent with the last it cosigned (C2SP tlog-witness).
    Witness(witness::WitnessArgs),
    /// Create an account and save its API key in the client configuration.
    Signup(commands::SignupArgs),
    /// Show the account of the current API key.
    Whoami,
    /// List and search models.
    Models(commands::ListModelsArgs),
    /// Create, upload, show, change and download models.
    #[command(subcommand)]
    Model(commands::ModelCommand),
    /// Run a model on inputs given as JSON.
    Infer(commands::InferArgs),
    /// Show your balance, held tokens and earnings.
    Balance,
    /// List your transfers, newest first.
    Transfers(commands::TransfersArgs),
    /// Credit an account with tokens paid for outside (operator key).
    Deposit(commands::DepositArgs),
    /// Fund your balance from a wallet with x402, on a market with a chain.
    Topup(commands::TopUpArgs),
    /// Prove you hold an address, so that its transfers to the market are
    /// deposits to your balance; list the addresses you proved.
    #[command(subcommand)]
    Address(commands::AddressCommand),
    /// Get test tokens from a development server (serve --dev).
    Faucet {
        /// Tokens, as a decimal.
        amount: String,
    },
    /// Request, list and (operator) resolve payouts.
    #[command(subcommand)]
    Payout(commands::PayoutCommand),
    /// Check the log: signed checkpoints, consistency, every leaf; recompute
    /// a creator's earnings or a caller's spending and compare with the ledger.
    Audit(audit::AuditArgs),
    /// Check saved receipts.
    #[command(subcommand)]
    Receipt(audit::ReceiptCommand),
    /// Usage: the market, a model, trending, tasks, apps, nodes.
    #[command(subcommand)]
    Stats(stats::StatsCommand),
    /// What you earned as a creator, by model or app.
    Earnings(stats::AccountSeriesArgs),
    /// What you spent on inference, by model or app.
    Spending(stats::AccountSeriesArgs),
    /// Quarantined model versions: list them, take one out of service, lift one (operator key).
    #[command(subcommand)]
    Quarantine(commands::QuarantineCommand),
    /// Models taken down: take one down with a reason, restore one (operator key).
    #[command(subcommand)]
    Takedown(commands::TakedownCommand),
    /// A model worker: started by `vitrine serve`, speaking its binary
    /// protocol on standard input and output. Not for people.
    #[command(hide = true)]
    Worker {
        /// It validates uploads (the same worker; a name for `ps`).
        #[arg(long)]
        uploads: bool,
    },
}

/// ONNX Runtime may load in this very process (`isolation = "none"`), and
/// its telemetry client starts with it unless the environment says no
/// (model workers get the variable from the pool). Only the environment at
/// start can say so: this runs the program again with the variable set,
/// once, before any thread starts; if that fails, it goes on.
fn with_onnxruntime_telemetry_off() {
    use std::os::unix::process::CommandExt;
    let (name, value) = runtime::onnxruntime::TELEMETRY_OFF;
    if std::env::var_os(name).is_some() {
        return;
    }
    let Ok(program) = std::env::current_exe() else { return };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| program.clone().into_os_string());
    let error = std::process::Command::new(&program).arg0(arg0).args(args).env(name, value).exec();
    eprintln!(
        "warning: cannot start again with {name}={value} ({error}); ONNX Runtime in this process would send telemetry"
    );
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Command::Worker { .. } = cli.command {
        // Before any runtime starts threads: a worker is one confined thread.
        return std::process::ExitCode::from(sandbox::worker_main().clamp(0, 255) as u8);
    }
    if matches!(cli.command, Command::Serve(_) | Command::Bench(_) | Command::Demo(_)) {
        with_onnxruntime_telemetry_off();
    }
    if !matches!(cli.command, Command::Serve(_) | Command::Demo(_) | Command::Migrate(_) | Command::Witness(_)) {
        end_quietly_on_a_closed_pipe();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Migrate(args) => migrate::run(args).await,
            Command::Witness(args) => witness::run(args).await,
            Command::Audit(args) => audit::run_audit(args, &cli.client).await,
            Command::Receipt(command) => audit::run_receipt(command, &cli.client).await,
            command => commands::run(command, cli.client).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // One line, the outermost context first.
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Folders to remove if the process ends early on a closed pipe (a bench's
/// temporary data directories).
static LEFT_AT_A_QUIET_END: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Removes `folder` if this process ends quietly on a closed pipe.
pub(crate) fn remove_at_a_quiet_end(folder: std::path::PathBuf) {
    LEFT_AT_A_QUIET_END.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(folder);
}

/// A client command (or a bench) piped into `head` and the like: when the
/// reader goes away, `println!` panics on the broken pipe (Rust ignores
/// SIGPIPE). That is the reader's choice, not an error: end quietly, as a
/// filter should, leaving no temporary folder behind.
fn end_quietly_on_a_closed_pipe() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            let folders = std::mem::take(&mut *LEFT_AT_A_QUIET_END.lock().unwrap_or_else(|p| p.into_inner()));
            for folder in folders {
                let _ = std::fs::remove_dir_all(folder);
            }
            std::process::exit(0);
        }
        default_hook(info);
    }));
}
