//! `vitrine witness`: a C2SP tlog-witness that cosigns the checkpoints of
//! the logs it is told to trust, so market operators can witness each
//! other's markets and anyone can run one (`server::witness`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

/// The witness's signing seed, in its data directory.
const WITNESS_KEY_FILE: &str = "witness.key";
/// Its verifier key, written at start for operators to hand out.
const WITNESS_VKEY_FILE: &str = "witness.vkey";
/// What it has cosigned, per log.
const WITNESS_STATE_FILE: &str = "witness-state.json";

#[derive(Debug, Args)]
pub struct WitnessArgs {
    /// Holds the witness's key and what it has cosigned.
    #[arg(long)]
    data_dir: PathBuf,
    /// Address to listen on; port 0 picks a free one (printed at start).
    #[arg(long, default_value = "127.0.0.1:7381")]
    listen: String,
    /// The witness's name in its cosignatures (a schema-less URL, say
    /// `witness.example.com/w1`).
    #[arg(long)]
    name: String,
    /// A log to witness, by its verifier key (`GET /v1/log/key`'s vkey);
    /// repeat for more.
    #[arg(long = "log", value_name = "VKEY", required = true)]
    logs: Vec<String>,
}

pub async fn run(args: WitnessArgs) -> anyhow::Result<()> {
    crate::serve::init_logging(server::config::LogFormat::Text);
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let seed = server::log::seed(&args.data_dir, WITNESS_KEY_FILE).map_err(anyhow::Error::msg)?;
    let cosigner = tlog::Cosigner::from_seed(&args.name, &seed).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    let vkey = cosigner.verifier().vkey();
    std::fs::write(args.data_dir.join(WITNESS_VKEY_FILE), format!("{vkey}\n"))?;
    let witness = server::witness::Witness::open(cosigner, &args.logs, args.data_dir.join(WITNESS_STATE_FILE))
        .map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "witness key: {vkey}")?;
    // Tests and scripts read this line to find the port.
    writeln!(stdout, "vitrine witness listening on http://{address}")?;
    stdout.flush()?;
    axum::serve(listener, witness.router()).with_graceful_shutdown(crate::serve::shutdown_signal()).await?;
    Ok(())
}
