//! `vitrine migrate --from DATA_DIR --to postgres://…`: a single node's
//! market moved from its SQLite database to PostgreSQL, where several nodes
//! can share it. Every row is copied in one transaction (all or nothing);
//! the log's and the pseudonyms' seeds go from the data directory's files
//! into the database, so the log keeps its key and callers their pseudonyms.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The data directory of the market to move (its server stopped).
    #[arg(long, value_name = "DATA_DIR")]
    from: PathBuf,
    /// The PostgreSQL database to move it to: empty, or created by
    /// `vitrine serve --database-url` with no market in it yet.
    #[arg(long, value_name = "URL")]
    to: String,
}

pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let database = args.from.join(server::DATABASE_FILE);
    if !database.is_file() {
        bail!("{} holds no market ({} is missing)", args.from.display(), database.display());
    }
    if !args.to.starts_with("postgres://") && !args.to.starts_with("postgresql://") {
        bail!("--to must be a postgres:// URL");
    }
    let source = store::Store::open(&database).await.context("cannot open the market's database")?;
    let target = store::Store::open_postgres(&args.to).await.context("cannot open the PostgreSQL database")?;
    let copied = source.copy_market_to(&target).await.context("cannot copy the market")?;
    for file in [server::log::LOG_KEY_FILE, server::log::PSEUDONYM_KEY_FILE] {
        let Some(seed) = server::log::read_seed(&args.from, file).map_err(anyhow::Error::msg)? else { continue };
        if target.market_seed(file, seed).await? != seed {
            bail!("the database already has another {file}");
        }
    }
    source.close().await;
    target.close().await;
    println!("copied, in one transaction:");
    for (table, rows) in copied {
        println!("  {table:<18} {rows:>10} rows");
    }
    println!(
        "the log and pseudonym keys moved into the database; serve the market from it with\n  \
         vitrine serve --database-url {} --data-dir {} --blob-dir {}\n\
         (the node id it served with before, and the blob folder where every node reaches it)",
        args.to,
        args.from.display(),
        args.from.join("blobs").display()
    );
    Ok(())
}
