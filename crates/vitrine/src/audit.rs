//! `vitrine audit` and `vitrine receipt verify`: checking the server from the
//! outside, with nothing but its public log, its signed checkpoints, and (for
//! one's own account) its ledger.
//!
//! The audit pins the log's key and remembers the last checkpoint it
//! verified (a small JSON state file), so a server that rewrites history, or
//! swaps its key, is caught on the next run.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::{Args, Subcommand};
use market::Receipt;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use server::wire::log::{ConsistencyProof, InclusionProof, LogEntries, LogKeyView, PseudonymView};
use server::wire::stats::EarningsView;
use server::wire::{AccountView, AnchorList, AnchorView, ModelPage, ReservesView, TransferPage, TransferView};
use tlog::merkle::MemoryTree;
use tlog::{Checkpoint, NoteVerifier, ReceiptLeaf};

use crate::client::{Client, ClientArgs};
use crate::output;

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The same as --url (kept for scripts written before it: --url names the server everywhere).
    #[arg(long, hide = true)]
    server: Option<String>,
    /// Recompute this creator's usage and earnings from the log; with that
    /// creator's key (--key), compare them with the ledger.
    #[arg(long, conflicts_with = "caller")]
    creator: Option<String>,
    /// Recompute this API key's spending from the log and compare it with the ledger.
    #[arg(long, value_name = "KEY")]
    caller: Option<String>,
    /// Pin the log's verifier key (`name+id+key`) instead of trusting it on first use.
    #[arg(long)]
    log_key: Option<String>,
    /// Where the pinned key and last verified checkpoint are kept
    /// [default: next to the client configuration, audit-state.json].
    #[arg(long)]
    state: Option<PathBuf>,
    /// Keep watching: audit again every this many seconds, each round
    /// against the checkpoint the last one verified, and stop with an error
    /// at the first inconsistency.
    #[arg(long, value_name = "SECONDS")]
    follow: Option<u64>,
    /// Recompute the market's public figures (calls, revenue, shares, HHI,
    /// Gini; by model, creator, task, app and node) from the log, read by
    /// tiles from where the last audit stopped, and compare them with the
    /// stats routes, naming every difference.
    #[arg(long, conflicts_with_all = ["creator", "caller"])]
    market: bool,
    /// Require a valid cosignature by this witness (its verifier key) on
    /// the checkpoint; repeat for more.
    #[arg(long = "witness", value_name = "VKEY")]
    witnesses: Vec<String>,
    /// The windows --market checks (24h, 7d, 30d).
    #[arg(long = "window", value_name = "WINDOW", default_values = ["24h", "7d", "30d"], requires = "market")]
    windows: Vec<String>,
    /// Proof of reserves: the market's token balance on its chain, at a
    /// final block, against what its ledger owes; fails if it owes more.
    #[arg(long, conflicts_with_all = ["creator", "caller", "market"])]
    reserves: bool,
    /// The log's checkpoints anchored on the market's chain, each read from
    /// your own node (--rpc-url): sent by the market's address, carrying
    /// the checkpoint's origin, size and root, and extended by the log's
    /// latest signed checkpoint.
    #[arg(long, conflicts_with_all = ["creator", "caller", "market", "reserves"], requires = "rpc_url")]
    anchors: bool,
    /// With --reserves, read the balance from this node yourself (an
    /// Ethereum JSON-RPC URL) instead of taking the server's word for it;
    /// with --anchors, where the anchors are read.
    #[arg(long, value_name = "URL")]
    rpc_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ReceiptCommand {
    /// Check a saved receipt: a C2SP tlog-proof file (`receipt get`), with
    /// no network, against the log's key (--log-key, or the one the audit
    /// pinned); or a receipt or whole inference answer in JSON, online: its
    /// leaf, its node's signature, and its inclusion in a signed checkpoint.
    Verify {
        file: PathBuf,
        /// The same as --url.
        #[arg(long, hide = true)]
        server: Option<String>,
        /// The log's verifier key (`name+id+key`).
        #[arg(long)]
        log_key: Option<String>,
        /// The audit's state file, whose pinned log key an offline check
        /// uses when --log-key is not given [default: beside the client
        /// configuration, audit-state.json].
        #[arg(long)]
        state: Option<PathBuf>,
        /// Require a valid cosignature by this witness (its verifier key)
        /// on the checkpoint the receipt is proven against; repeat for more.
        #[arg(long = "witness", value_name = "VKEY")]
        witnesses: Vec<String>,
    },
    /// Write receipt INDEX as a C2SP tlog-proof (the leaf, the node's
    /// signature, its inclusion proof and the signed checkpoint) to standard
    /// output, for `receipt verify` to check offline later.
    Get {
        index: u64,
        /// The same as --url.
        #[arg(long, hide = true)]
        server: Option<String>,
    },
}

/// What the auditor remembers, per log name.
#[derive(Debug, Default, Serialize, Deserialize)]
struct AuditState {
    logs: BTreeMap<String, LogState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LogState {
    vkey: String,
    size: u64,
    root: String,
}

/// Leaves downloaded per request (the server's default page limit).
const ENTRIES_PAGE: u64 = 1000;

pub async fn run_audit(args: AuditArgs, client_args: &ClientArgs) -> anyhow::Result<()> {
    let Some(seconds) = args.follow else { return audit_once(&args, client_args).await };
    let pause = std::time::Duration::from_secs(seconds.max(1));
    loop {
        audit_once(&args, client_args).await?;
        tokio::time::sleep(pause).await;
    }
}

async fn audit_once(args: &AuditArgs, client_args: &ClientArgs) -> anyhow::Result<()> {
    let client = server_client(client_args, args.server.as_deref())?;
    crate::commands::learn_token(&client).await;
    if args.reserves {
        return audit_reserves(&client, args.rpc_url.as_deref()).await;
    }
    if args.rpc_url.is_some() && !args.anchors {
        bail!("--rpc-url goes with --reserves or --anchors");
    }
    let state_path = match &args.state {
        Some(path) => path.clone(),
        None => client_args.config_path()?.with_file_name("audit-state.json"),
    };
    let mut state: AuditState = match std::fs::read_to_string(&state_path) {
        Ok(text) => {
            serde_json::from_str(&text).with_context(|| format!("{} is not an audit state", state_path.display()))?
        }
        Err(_) => AuditState::default(),
    };

    // 1. The key: pinned, remembered, or (first run) the server's. A log is
    // remembered by its name (the checkpoints' origin), not by its address.
    let key_view: LogKeyView = client.send_as(client.request(Method::GET, "/v1/log/key")).await?;
    let served_vkey = key_view.vkey.clone();
    let log_name = key_view.name.clone();
    let remembered = state.logs.get(&log_name).cloned();
    let vkey = args.log_key.clone().or(remembered.as_ref().map(|s| s.vkey.clone())).unwrap_or(served_vkey.clone());
    if vkey != served_vkey {
        bail!("the log key changed: pinned {vkey}, the server now serves {served_vkey}");
    }
    let verifier = NoteVerifier::from_vkey(&vkey).map_err(|e| anyhow::anyhow!("the log key: {e}"))?;

    // 2. The checkpoint, signed by that key (with --market, the one the
    // market's figures were read against, its leaves read by tiles).
    let state_dir = state_path.parent().map(Path::to_path_buf).unwrap_or_default();
    let market = if args.market {
        let mut cache = crate::market_audit::LeafCache::open(&state_dir.join("audit-leaves"), &log_name);
        for window in &args.windows {
            if analytics::Window::parse(window).is_none() {
                bail!("--window is 24h, 7d or 30d, not {window}");
            }
        }
        Some(crate::market_audit::audit_market(&client, &verifier, &mut cache, &args.windows).await?)
    } else {
        None
    };
    let (checkpoint, note) = match &market {
        Some((checkpoint, note, _)) => (checkpoint.clone(), note.clone()),
        None => fetch_checkpoint_note(&client, &verifier).await?,
    };
    println!("checkpoint: {} leaves, root {}", checkpoint.size, hex::encode(checkpoint.root));

    // 2b. Cosigned by every witness asked for: seen by them as consistent
    // with all they cosigned before, so not one of two histories.
    require_cosignatures(&note, checkpoint.size, &args.witnesses)?;

    // 3. Consistent with the last one this auditor verified.
    if let Some(last) = &remembered {
        let last_root = hash_from_hex(&last.root)?;
        if checkpoint.size < last.size {
            bail!("the log shrank: {} leaves now, {} verified before", checkpoint.size, last.size);
        }
        let path = format!("/v1/log/proof/consistency?from={}&to={}", last.size, checkpoint.size);
        let proof: ConsistencyProof = client.send_as(client.request(Method::GET, &path)).await?;
        let hashes = hashes_from(&proof.hashes)?;
        if !tlog::verify_consistency(last.size, checkpoint.size, &last_root, &checkpoint.root, &hashes) {
            bail!(
                "the log is not consistent with the checkpoint of {} leaves verified before: history was rewritten",
                last.size
            );
        }
        println!("consistent with the checkpoint of {} leaves verified before", last.size);
    }
    if let Some(rpc_url) = args.rpc_url.as_deref().filter(|_| args.anchors) {
        audit_anchors(&client, &log_name, &checkpoint, rpc_url).await?;
        remember(&mut state, &state_path, log_name, &vkey, &checkpoint)?;
        return Ok(());
    }
    if let Some((_, _, differences)) = market {
        remember(&mut state, &state_path, log_name, &vkey, &checkpoint)?;
        if !differences.is_empty() {
            for difference in &differences {
                eprintln!("mismatch: {difference}");
            }
            bail!("the audit found {} figure(s) on which the stats routes and the log differ", differences.len());
        }
        println!("audit passed: the market's figures are the log's");
        return Ok(());
    }

    // 4. Every leaf, hashed again into the root; every receipt signature checked.
    let node_keys = node_verifiers(&key_view)?;
    let leaves = fetch_leaves(&client, &checkpoint, &node_keys).await?;
    println!("recomputed the root from {} leaves: it matches; every receipt signature verifies", leaves.len());
    remember(&mut state, &state_path, log_name, &vkey, &checkpoint)?;

    // 5. Usage and money from the log alone, against the ledger.
    let mismatches = if let Some(creator) = &args.creator {
        audit_creator(client_args, &client, creator, &leaves, checkpoint.size).await?
    } else if let Some(key) = &args.caller {
        let caller = Client::new(client.base().to_owned(), Some(key.clone()))?;
        audit_caller(&caller, &leaves, checkpoint.size).await?
    } else {
        vec![]
    };
    if !mismatches.is_empty() {
        for mismatch in &mismatches {
            eprintln!("mismatch: {mismatch}");
        }
        bail!("the audit found {} mismatch(es) between the log and the ledger", mismatches.len());
    }
    println!("audit passed");
    Ok(())
}

/// Proof of reserves: what the market holds on its chain at a final block
/// (read from `rpc_url` when given) against what its ledger owes.
async fn audit_reserves(client: &Client, rpc_url: Option<&str>) -> anyhow::Result<()> {
    let view: ReservesView = client.send_as(client.request(Method::GET, "/v1/chain/reserves")).await?;
    let onchain: u128 = view.onchain_balance.parse().context("the server's onchain_balance is not a number")?;
    let owed: u128 = view.liabilities.parse().context("the server's liabilities are not a number")?;
    println!("market {} on {}, token {}, at block {}", view.address, view.network, view.token, view.block);
    if let Some(url) = rpc_url {
        let (read, token_decimals) = chain::balance_of(url, &view.token, &view.address, view.block).await?;
        // The server says its balance in ledger units, rounded down: the
        // same rounding of what this node says must give the same figure.
        let units =
            chain::Units { ledger_decimals: crate::output::token_decimals(), token_decimals: token_decimals.into() };
        if units.to_ledger(read).map(|(whole, _)| u128::from(whole)) != Ok(onchain) {
            bail!(
                "the node at {url} says the market holds {read} token units at block {}, not what the server says",
                view.block
            );
        }
        println!("on chain (read from {url}): {}", output::tokens_of(onchain));
    } else {
        println!("on chain (as the server reads it): {}", output::tokens_of(onchain));
    }
    println!("owed by the ledger: {}", output::tokens_of(owed));
    if onchain < owed {
        bail!("the market owes {} more than it holds on chain", output::tokens_of(owed - onchain));
    }
    println!("reserves cover the ledger: {} to spare", output::tokens_of(onchain - owed));
    Ok(())
}

/// The log's anchors on the chain, each read from the node at `rpc_url`:
/// a mined transaction from the market's address to itself whose data is
/// the anchored checkpoint, which the verified `checkpoint` extends.
async fn audit_anchors(client: &Client, origin: &str, checkpoint: &Checkpoint, rpc_url: &str) -> anyhow::Result<()> {
    let list: AnchorList = client.send_as(client.request(Method::GET, "/v1/log/anchors")).await?;
    let market: chain::Address = list.address.parse().context("the server's market address is not an address")?;
    println!("{} anchor(s) on {} by {}, read from {rpc_url}", list.items.len(), list.network, list.address);
    let mut problems = vec![];
    let mut rows = vec![];
    for anchor in &list.items {
        let status = match check_anchor(client, origin, checkpoint, rpc_url, market, anchor).await {
            Ok(()) => "ok".to_owned(),
            Err(problem) => {
                problems.push(format!("anchor of {} leaves ({}): {problem:#}", anchor.size, anchor.transaction));
                "FAILED".to_owned()
            }
        };
        rows.push(vec![anchor.size.to_string(), anchor.block.to_string(), anchor.transaction.clone(), status]);
    }
    output::table(&["leaves", "block", "transaction", "status"], &rows);
    if !problems.is_empty() {
        for problem in &problems {
            eprintln!("mismatch: {problem}");
        }
        bail!("{} anchor(s) do not hold", problems.len());
    }
    println!("audit passed: every anchor is on the chain, and the log extends it");
    Ok(())
}

async fn check_anchor(
    client: &Client,
    origin: &str,
    checkpoint: &Checkpoint,
    rpc_url: &str,
    market: chain::Address,
    anchor: &AnchorView,
) -> anyhow::Result<()> {
    let hash: chain::B256 = anchor.transaction.parse().context("not a transaction hash")?;
    let root: [u8; 32] = BASE64
        .decode(&anchor.root)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .context("its root is not 32 bytes of base64")?;
    let seen = chain::anchors::transaction_at(rpc_url, hash).await?.context("the node does not know it")?;
    let Some(block) = seen.block else { bail!("not mined") };
    if seen.from != market || seen.to != Some(market) {
        bail!("it is not from the market's address to itself (from {}, to {:?})", seen.from, seen.to);
    }
    if seen.input.as_ref() != chain::anchors::anchor_data(origin, anchor.size, &root).as_slice() {
        bail!("its data is not this checkpoint of {origin}");
    }
    if block != anchor.block {
        bail!("mined in block {block}, not {}", anchor.block);
    }
    if anchor.size > checkpoint.size {
        bail!("it anchors {} leaves, more than the latest checkpoint's {}", anchor.size, checkpoint.size);
    }
    let path = format!("/v1/log/proof/consistency?from={}&to={}", anchor.size, checkpoint.size);
    let proof: ConsistencyProof = client.send_as(client.request(Method::GET, &path)).await?;
    let hashes = hashes_from(&proof.hashes)?;
    if !tlog::verify_consistency(anchor.size, checkpoint.size, &root, &checkpoint.root, &hashes) {
        bail!("the latest checkpoint does not extend it: history was rewritten after it was anchored");
    }
    Ok(())
}

/// Checks that a checkpoint's note carries a valid cosignature by each of
/// `witnesses` (verifier keys), saying so for each.
fn require_cosignatures(note: &str, size: u64, witnesses: &[String]) -> anyhow::Result<()> {
    for vkey in witnesses {
        let witness =
            tlog::CosignatureVerifier::from_vkey(vkey).map_err(|e| anyhow::anyhow!("--witness {vkey}: {e}"))?;
        match witness.verify(note) {
            Ok(timestamp) => println!("cosigned by witness {} at {timestamp}", witness.name),
            Err(error) => bail!("the checkpoint of {size} leaves is not cosigned by witness {}: {error}", witness.name),
        }
    }
    Ok(())
}

/// Keeps the checkpoint just verified as the one the next audit starts from.
fn remember(
    state: &mut AuditState,
    path: &Path,
    log_name: String,
    vkey: &str,
    checkpoint: &Checkpoint,
) -> anyhow::Result<()> {
    let verified = LogState { vkey: vkey.to_owned(), size: checkpoint.size, root: hex::encode(checkpoint.root) };
    state.logs.insert(log_name, verified);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(&state)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn server_client(client_args: &ClientArgs, server: Option<&str>) -> anyhow::Result<Client> {
    let client = client_args.client()?;
    match server {
        Some(url) => Client::new(url.to_owned(), None),
        None => Ok(Client::new(client.base().to_owned(), None)?),
    }
}

pub(crate) async fn fetch_checkpoint(client: &Client, verifier: &NoteVerifier) -> anyhow::Result<Checkpoint> {
    Ok(fetch_checkpoint_note(client, verifier).await?.0)
}

/// The latest checkpoint, and the signed note it came in (with whatever
/// cosignatures it carries).
pub(crate) async fn fetch_checkpoint_note(
    client: &Client,
    verifier: &NoteVerifier,
) -> anyhow::Result<(Checkpoint, String)> {
    let note = client.send(client.request(Method::GET, "/v1/log/checkpoint")).await?.text().await?;
    let text = verifier.verify_note(&note).map_err(|e| anyhow::anyhow!("the checkpoint: {e}"))?;
    let checkpoint = Checkpoint::parse(text).map_err(|e| anyhow::anyhow!("the checkpoint: {e}"))?;
    if checkpoint.origin != verifier.name {
        bail!("the checkpoint's origin {} is not the key's name {}", checkpoint.origin, verifier.name);
    }
    Ok((checkpoint, note))
}

fn node_verifiers(key_view: &LogKeyView) -> anyhow::Result<HashMap<String, NoteVerifier>> {
    let mut verifiers = HashMap::new();
    for (name, key) in &key_view.node_keys {
        let bytes = BASE64.decode(key).context("a node key is not base64")?;
        verifiers.insert(
            name.clone(),
            NoteVerifier::new(name, &bytes).map_err(|e| anyhow::anyhow!("node key {name}: {e}"))?,
        );
    }
    Ok(verifiers)
}

/// Downloads the checkpoint's leaves, checks each one's node signature, and
/// checks that they hash to the checkpoint's root.
async fn fetch_leaves(
    client: &Client,
    checkpoint: &Checkpoint,
    node_keys: &HashMap<String, NoteVerifier>,
) -> anyhow::Result<Vec<ReceiptLeaf>> {
    let size = checkpoint.size;
    let mut tree = MemoryTree::new();
    let mut leaves = Vec::with_capacity(size as usize);
    let mut start = 0;
    while start < size {
        let end = (start + ENTRIES_PAGE).min(size);
        let page: LogEntries =
            client.send_as(client.request(Method::GET, &format!("/v1/log/entries?start={start}&end={end}"))).await?;
        if page.items.len() as u64 != end - start {
            bail!("asked for leaves {start}..{end}, got {}", page.items.len());
        }
        for (offset, item) in page.items.iter().enumerate() {
            let index = start + offset as u64;
            let bytes = BASE64.decode(&item.leaf).context("a leaf is not base64")?;
            let signature = BASE64.decode(&item.signature).unwrap_or_default();
            let leaf = ReceiptLeaf::decode(&bytes).map_err(|e| anyhow::anyhow!("leaf {index}: {e}"))?;
            let node =
                node_keys.get(&leaf.node).with_context(|| format!("leaf {index}: unknown node {}", leaf.node))?;
            if !node.verify(&bytes, &signature) {
                bail!("leaf {index}: the signature of node {} does not verify", leaf.node);
            }
            tree.append(tlog::leaf_hash(&bytes));
            leaves.push(leaf);
        }
        start = end;
    }
    if tree.root() != checkpoint.root {
        bail!("the leaves served do not hash to the checkpoint's root: the log was changed");
    }
    Ok(leaves)
}

/// One model's usage as the log says and as the ledger says.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    log_calls: u64,
    log_amount: u128,
    ledger_calls: u64,
    ledger_amount: u128,
}

async fn audit_creator(
    client_args: &ClientArgs,
    client: &Client,
    creator: &str,
    leaves: &[ReceiptLeaf],
    size: u64,
) -> anyhow::Result<Vec<String>> {
    // With the creator's own key, private model labels map back to names
    // and the ledger can be compared.
    let own = client_args.client()?;
    let own = Client::new(client.base().to_owned(), own_key(&own))?;
    let me = match own.send_as::<AccountView>(own.request(Method::GET, "/v1/account")).await {
        Ok(account) if account.name == creator => Some(account),
        _ => None,
    };
    let mut labels: HashMap<String, String> = HashMap::new();
    if me.is_some() {
        let mut page_token: Option<String> = None;
        loop {
            let mut query = vec![("owner", creator.to_owned()), ("limit", "100".to_owned())];
            query.extend(page_token.take().map(|token| ("page_token", token)));
            let models: ModelPage = own.send_as(own.request(Method::GET, "/v1/models").query(&query)).await?;
            for model in &models.items {
                let name = &model.name;
                // The server shows the owner each private model's keyed log label;
                // leaves written before labels were keyed used SHA-256(name).
                if let Some(label) = &model.log_label {
                    labels.insert(label.clone(), format!("{creator}/{name}"));
                }
                let legacy = domain::Sha256::digest(name.as_bytes()).to_hex();
                labels.insert(format!("{creator}/~{}", &legacy[..16]), format!("{creator}/{name}"));
            }
            match models.next_page_token {
                Some(token) => page_token = Some(token),
                None => break,
            }
        }
    }
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let mut per_leaf: HashMap<u64, (String, u64)> = HashMap::new();
    for (index, leaf) in leaves.iter().enumerate() {
        if leaf.creator() != creator || leaf.creator_share == 0 {
            continue;
        }
        let model = labels.get(&leaf.model).cloned().unwrap_or_else(|| leaf.model.clone());
        let tally = tallies.entry(model.clone()).or_default();
        tally.log_calls += 1;
        tally.log_amount += leaf.creator_share as u128;
        per_leaf.insert(index as u64, (model, leaf.creator_share));
    }
    let mut mismatches = vec![];
    if me.is_none() {
        println!(
            "(no key for {creator}: showing the log's figures only; pass --key with {creator}'s key to compare with the ledger)"
        );
    } else {
        let mut after_checkpoint = 0;
        for transfer in all_transfers(&own).await? {
            if transfer.kind != "inference_creator" || transfer.credit_account != creator {
                continue;
            }
            let Some(index) = transfer.log_index else {
                mismatches.push(format!("transfer {} pays an inference but names no log leaf", transfer.id));
                continue;
            };
            if index >= size {
                after_checkpoint += 1;
                continue; // After the checkpoint: the next audit covers it.
            }
            let amount: u64 = transfer.amount.parse().unwrap_or(0);
            let model = transfer.reference.split('@').next().unwrap_or_default().to_owned();
            match per_leaf.get(&index) {
                Some((leaf_model, share)) if *leaf_model == model && *share == amount => {}
                Some((leaf_model, share)) => mismatches.push(format!(
                    "leaf {index}: the log says {leaf_model} earned {}, the ledger credited {model} {}",
                    output::tokens_of(share),
                    output::tokens_of(amount)
                )),
                None => mismatches.push(format!(
                    "leaf {index}: the ledger credited {} for {model}, the log has no such earning",
                    output::tokens_of(amount)
                )),
            }
            let tally = tallies.entry(model).or_default();
            tally.ledger_calls += 1;
            tally.ledger_amount += amount as u128;
        }
        let earned_total: u128 = me.as_ref().and_then(|m| m.earned_total.parse().ok()).unwrap_or(0);
        let logged: u128 = tallies.values().map(|t| t.log_amount).sum();
        if earned_total < logged {
            mismatches.push(format!(
                "the account's earned_total {} is less than the log's {}",
                output::tokens_of(earned_total),
                output::tokens_of(logged)
            ));
        }
        // The stats routes must report the same earnings, when nothing was
        // earned after the checkpoint (or the figures could not agree yet).
        let first =
            leaves.iter().filter(|l| l.creator() == creator && l.creator_share > 0).map(|l| l.created_at_ms).min();
        if let (0, Some(first)) = (after_checkpoint, first) {
            let from = time::OffsetDateTime::from_unix_timestamp_nanos(first as i128 * 1_000_000)?
                .format(&time::format_description::well_known::Rfc3339)?;
            let path = format!("/v1/account/earnings?bucket=day&from={from}");
            let earnings: EarningsView = own.send_as(own.request(Method::GET, &path)).await?;
            let reported: u128 = earnings.total.parse().unwrap_or(0);
            if reported != logged {
                mismatches.push(format!(
                    "the stats routes report {} earned, the log {}",
                    output::tokens_of(reported),
                    output::tokens_of(logged)
                ));
            } else {
                println!("the stats routes report the same earnings: {}", output::tokens_of(reported));
            }
        }
    }
    print_tallies(&tallies, me.is_some(), "earned", &mut mismatches);
    Ok(mismatches)
}

async fn audit_caller(caller: &Client, leaves: &[ReceiptLeaf], size: u64) -> anyhow::Result<Vec<String>> {
    let pseudonym: PseudonymView = caller.send_as(caller.request(Method::GET, "/v1/account/pseudonym")).await?;
    let secret: [u8; 32] = hex::decode(&pseudonym.secret)
        .ok()
        .and_then(|s| s.try_into().ok())
        .context("the server's pseudonym secret is not 32 bytes of hex")?;
    let mine = tlog::caller_pseudonym(&secret);
    if pseudonym.pseudonym != mine.to_hex() {
        bail!("the server's pseudonym does not match its secret");
    }
    let account: AccountView = caller.send_as(caller.request(Method::GET, "/v1/account")).await?;
    let name = account.name;
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let mut per_leaf: HashMap<u64, (String, u64)> = HashMap::new();
    for (index, leaf) in leaves.iter().enumerate() {
        // Free and failed calls are logged too; they charged nothing.
        if leaf.caller == mine && leaf.price > 0 {
            let tally = tallies.entry(leaf.model.clone()).or_default();
            tally.log_calls += 1;
            tally.log_amount += leaf.price as u128;
            per_leaf.insert(index as u64, (leaf.model.clone(), leaf.price));
        }
    }
    let mut paid: BTreeMap<u64, (String, u64)> = BTreeMap::new();
    for transfer in all_transfers(caller).await? {
        if !transfer.kind.starts_with("inference_") || transfer.debit_account != name {
            continue;
        }
        let Some(index) = transfer.log_index else { continue };
        if index >= size {
            continue;
        }
        let amount: u64 = transfer.amount.parse().unwrap_or(0);
        let model = transfer.reference.split('@').next().unwrap_or_default().to_owned();
        let entry = paid.entry(index).or_insert((model, 0));
        entry.1 += amount;
    }
    let mut mismatches = vec![];
    for (index, (model, amount)) in &paid {
        let label = per_leaf.get(index).map(|(m, _)| m.clone()).unwrap_or_else(|| model.clone());
        let tally = tallies.entry(label.clone()).or_default();
        tally.ledger_calls += 1;
        tally.ledger_amount += *amount as u128;
        match per_leaf.get(index) {
            Some((_, price)) if price == amount => {}
            Some((_, price)) => mismatches.push(format!(
                "leaf {index}: the log says {} was paid, the ledger debited {}",
                output::tokens_of(price),
                output::tokens_of(amount)
            )),
            None => mismatches.push(format!(
                "leaf {index}: the ledger debited {} for {model}, the log has no such call of yours",
                output::tokens_of(amount)
            )),
        }
    }
    for index in per_leaf.keys() {
        if !paid.contains_key(index) {
            mismatches.push(format!("leaf {index}: the log records a call of yours the ledger never charged"));
        }
    }
    print_tallies(&tallies, true, "spent", &mut mismatches);
    Ok(mismatches)
}

fn own_key(client: &Client) -> Option<String> {
    client.key().map(str::to_owned)
}

async fn all_transfers(client: &Client) -> anyhow::Result<Vec<TransferView>> {
    let mut transfers = vec![];
    let mut path = "/v1/account/transfers?limit=100".to_owned();
    loop {
        let page: TransferPage = client.send_as(client.request(Method::GET, &path)).await?;
        transfers.extend(page.items);
        match page.next_page_token {
            Some(token) => path = format!("/v1/account/transfers?limit=100&page_token={token}"),
            None => return Ok(transfers),
        }
    }
}

fn print_tallies(tallies: &BTreeMap<String, Tally>, with_ledger: bool, what: &str, mismatches: &mut Vec<String>) {
    let mut rows = vec![];
    for (model, t) in tallies {
        let agrees = !with_ledger || (t.log_calls == t.ledger_calls && t.log_amount == t.ledger_amount);
        if !agrees {
            mismatches.push(format!(
                "{model}: the log has {} calls and {} {what}, the ledger {} calls and {}",
                t.log_calls,
                output::tokens_of(t.log_amount),
                t.ledger_calls,
                output::tokens_of(t.ledger_amount)
            ));
        }
        let ledger = |value: String| if with_ledger { value } else { "-".to_owned() };
        rows.push(vec![
            model.clone(),
            t.log_calls.to_string(),
            ledger(t.ledger_calls.to_string()),
            output::tokens_of(t.log_amount),
            ledger(output::tokens_of(t.ledger_amount)),
            if agrees { "ok" } else { "MISMATCH" }.to_owned(),
        ]);
    }
    let amount_log = format!("{what} (log)");
    let amount_ledger = format!("{what} (ledger)");
    output::table(&["model", "calls (log)", "calls (ledger)", &amount_log, &amount_ledger, "status"], &rows);
}

fn hash_from_hex(text: &str) -> anyhow::Result<tlog::Hash> {
    hex::decode(text).ok().and_then(|b| b.try_into().ok()).with_context(|| format!("{text} is not a hex hash"))
}

fn hashes_from(hashes: &[String]) -> anyhow::Result<Vec<tlog::Hash>> {
    hashes.iter().map(|h| hash_from_hex(h)).collect()
}

pub async fn run_receipt(command: ReceiptCommand, client_args: &ClientArgs) -> anyhow::Result<()> {
    let (file, server, log_key, state, witnesses) = match command {
        ReceiptCommand::Get { index, server } => return get_receipt(index, client_args, server.as_deref()).await,
        ReceiptCommand::Verify { file, server, log_key, state, witnesses } => (file, server, log_key, state, witnesses),
    };
    let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
    if text.starts_with("c2sp.org/tlog-proof@") {
        let vkey = match log_key {
            Some(vkey) => vkey,
            None => pinned_log_key(client_args, state)?,
        };
        return verify_offline(&text, &vkey, &witnesses);
    }
    let client = server_client(client_args, server.as_deref())?;
    crate::commands::learn_token(&client).await;
    /// A receipt, or an answer that carries one (or `null`, for a free call).
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum ReceiptFile {
        Receipt(Box<Receipt>),
        Answer { receipt: Option<Box<Receipt>> },
    }
    let file_content: ReceiptFile = serde_json::from_str(&text)
        .with_context(|| format!("{} is neither a receipt nor an answer", file.display()))?;
    let (ReceiptFile::Receipt(receipt) | ReceiptFile::Answer { receipt: Some(receipt) }) = file_content else {
        bail!("no receipt: free calls have none");
    };
    let index = receipt.log_index;
    let bytes = BASE64.decode(&receipt.leaf).context("the receipt's leaf is not base64")?;
    if hex::encode(tlog::leaf_hash(&bytes)) != receipt.leaf_hash {
        bail!("the receipt's leaf_hash is not the hash of its leaf");
    }
    let leaf = ReceiptLeaf::decode(&bytes).map_err(|e| anyhow::anyhow!("the receipt's leaf: {e}"))?;
    let signature = BASE64.decode(&receipt.signature).unwrap_or_default();
    // Every field the receipt shows is its leaf's.
    let from_leaf =
        Receipt::of_leaf(index, &bytes, &signature).map_err(|e| anyhow::anyhow!("the receipt's leaf: {e}"))?;
    let shown = Receipt { inclusion: None, ..(*receipt).clone() };
    if shown != from_leaf {
        let (shown, expected) = (serde_json::to_value(&shown)?, serde_json::to_value(&from_leaf)?);
        let differing: Vec<&String> = expected
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(field, value)| shown.get(field.as_str()) != Some(*value))
            .map(|(field, _)| field)
            .collect();
        let differing: Vec<&str> = differing.iter().map(|f| f.as_str()).collect();
        bail!("the receipt does not match its leaf in {}", differing.join(", "));
    }
    let key_view: LogKeyView = client.send_as(client.request(Method::GET, "/v1/log/key")).await?;
    let nodes = node_verifiers(&key_view)?;
    let node = nodes.get(&leaf.node).with_context(|| format!("the server does not know node {}", leaf.node))?;
    if !node.verify(&bytes, &signature) {
        bail!("the signature of node {} does not verify", leaf.node);
    }
    let vkey = match log_key {
        Some(vkey) => vkey,
        None => key_view.vkey.clone(),
    };
    let verifier = NoteVerifier::from_vkey(&vkey).map_err(|e| anyhow::anyhow!("the log key: {e}"))?;
    // Asking for the receipt makes the server sign a checkpoint that covers it.
    client.send(client.request(Method::GET, &format!("/v1/receipts/{index}"))).await?;
    let (checkpoint, note) = fetch_checkpoint_note(&client, &verifier).await?;
    require_cosignatures(&note, checkpoint.size, &witnesses)?;
    let path = format!("/v1/log/proof/inclusion?index={index}&size={}", checkpoint.size);
    let proof: InclusionProof = client.send_as(client.request(Method::GET, &path)).await?;
    let hashes = hashes_from(&proof.hashes)?;
    if !tlog::verify_inclusion(&tlog::leaf_hash(&bytes), index, checkpoint.size, &hashes, &checkpoint.root) {
        bail!("leaf {index} is not included in the checkpoint of {} leaves", checkpoint.size);
    }
    output::fields(&[
        ("receipt", format!("log index {index}, {} v{}", leaf.model, leaf.version)),
        (
            "price",
            format!(
                "{} (creator {}, node {}, treasury {})",
                output::tokens_of(leaf.price),
                output::tokens_of(leaf.creator_share),
                output::tokens_of(leaf.node_share),
                output::tokens_of(leaf.treasury_share)
            ),
        ),
        ("signature", format!("valid, node {}", leaf.node)),
        ("included", format!("in the checkpoint of {} leaves signed by {}", checkpoint.size, verifier.name)),
    ]);
    Ok(())
}

/// Receipt `index` as a C2SP tlog-proof, against the latest checkpoint.
async fn get_receipt(index: u64, client_args: &ClientArgs, server: Option<&str>) -> anyhow::Result<()> {
    let client = server_client(client_args, server)?;
    // Asking for the receipt makes the server sign a checkpoint that covers it.
    let receipt: Receipt = client.send_as(client.request(Method::GET, &format!("/v1/receipts/{index}"))).await?;
    let leaf = BASE64.decode(&receipt.leaf).context("the receipt's leaf")?;
    let signature = BASE64.decode(&receipt.signature).context("the receipt's signature")?;
    let mut note = client.send(client.request(Method::GET, "/v1/log/checkpoint")).await?.text().await?;
    let mut size = note_size(&note)?;
    while size <= index {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        note = client.send(client.request(Method::GET, "/v1/log/checkpoint")).await?.text().await?;
        size = note_size(&note)?;
    }
    let path = format!("/v1/log/proof/inclusion?index={index}&size={size}");
    let proof: InclusionProof = client.send_as(client.request(Method::GET, &path)).await?;
    let proof = tlog::TlogProof {
        extra: Some(tlog::proof::receipt_extra(&leaf, &signature).context("the leaf is too long for a proof")?),
        index,
        hashes: hashes_from(&proof.hashes)?,
        checkpoint: note,
    };
    print!("{}", proof.encode());
    Ok(())
}

fn note_size(note: &str) -> anyhow::Result<u64> {
    note.lines().nth(1).and_then(|line| line.parse().ok()).context("the checkpoint has no size line")
}

/// The log key the audit pinned, when it pinned exactly one.
fn pinned_log_key(client_args: &ClientArgs, state: Option<PathBuf>) -> anyhow::Result<String> {
    let path = match state {
        Some(path) => path,
        None => client_args.config_path()?.with_file_name("audit-state.json"),
    };
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("checking a proof offline needs the log's key: --log-key, or a pinned one in {}", path.display())
    })?;
    let state: AuditState =
        serde_json::from_str(&text).with_context(|| format!("{} is not an audit state", path.display()))?;
    match state.logs.values().collect::<Vec<_>>().as_slice() {
        [log] => Ok(log.vkey.clone()),
        _ => bail!("{} pins {} logs: say which with --log-key", path.display(), state.logs.len()),
    }
}

/// Checks a tlog-proof with nothing but the log's key: the checkpoint's
/// signature and origin, the leaf in `extra` decoded, and its inclusion in
/// the checkpoint's tree.
fn verify_offline(text: &str, vkey: &str, witnesses: &[String]) -> anyhow::Result<()> {
    let proof = tlog::TlogProof::parse(text)?;
    let verifier = NoteVerifier::from_vkey(vkey).map_err(|e| anyhow::anyhow!("the log key: {e}"))?;
    let body = verifier.verify_note(&proof.checkpoint).map_err(|e| anyhow::anyhow!("the checkpoint: {e}"))?;
    let checkpoint = Checkpoint::parse(body).map_err(|e| anyhow::anyhow!("the checkpoint: {e}"))?;
    if checkpoint.origin != verifier.name {
        bail!("the checkpoint's origin {} is not the key's name {}", checkpoint.origin, verifier.name);
    }
    require_cosignatures(&proof.checkpoint, checkpoint.size, witnesses)?;
    let extra = proof.extra.as_deref().context("the proof carries no receipt (no extra line)")?;
    let (leaf_bytes, _signature) = tlog::proof::split_receipt_extra(extra)?;
    if !tlog::verify_inclusion(
        &tlog::leaf_hash(leaf_bytes),
        proof.index,
        checkpoint.size,
        &proof.hashes,
        &checkpoint.root,
    ) {
        bail!("leaf {} is not included in the checkpoint of {} leaves", proof.index, checkpoint.size);
    }
    let leaf = ReceiptLeaf::decode(leaf_bytes).map_err(|e| anyhow::anyhow!("the receipt's leaf: {e}"))?;
    output::fields(&[
        ("receipt", format!("log index {}, {} v{}", proof.index, leaf.model, leaf.version)),
        (
            "price",
            // Offline, the market's token is unknown: its minor units, said so.
            format!(
                "{} minor units of the market's token (creator {}, node {}, treasury {})",
                leaf.price, leaf.creator_share, leaf.node_share, leaf.treasury_share
            ),
        ),
        ("caller", leaf.caller.to_hex()),
        ("node", leaf.node.clone()),
        (
            "included",
            format!("in the checkpoint of {} leaves signed by {}, checked offline", checkpoint.size, verifier.name),
        ),
    ]);
    Ok(())
}
