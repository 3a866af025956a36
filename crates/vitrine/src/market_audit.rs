//! `vitrine audit --market`: the market's public figures recomputed from the
//! log alone and compared with what the stats routes report.
//!
//! The log is read as C2SP tlog-tiles (entry bundles), incrementally: the
//! leaves of the last verified checkpoint are kept in a cache beside the
//! audit's state, and only the bundles past them are downloaded. The cache's
//! own tree, extended by the new leaves, must hash to the new checkpoint's
//! root, which proves both the new leaves and that the log only grew.
//!
//! Every call is logged (format 2 leaves), so every figure of
//! `GET /v1/stats/market` can be recomputed: calls (failed ones included),
//! revenue, active items, models and creators, distinct callers (the same
//! sketch the server keeps), each item's share, top-10 share, HHI and Gini,
//! by model, creator, task, app and node.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use analytics::{CallerSketch, HOUR_MS, Window, concentration};
use anyhow::{Context, bail};
use reqwest::Method;
use server::wire::ModelView;
use server::wire::stats::MarketView;
use tlog::{Checkpoint, Frontier, NoteVerifier, ReceiptLeaf};

use crate::audit::{fetch_checkpoint, fetch_checkpoint_note};
use crate::client::Client;

/// Leaves per entry bundle (a full tile).
const TILE_WIDTH: u64 = 256;
/// The dimensions `GET /v1/stats/market` breaks demand down by.
const DIMENSIONS: [&str; 5] = ["model", "creator", "task", "app", "node"];
/// How many times the figures are read again when calls keep arriving.
const QUIET_TRIES: u32 = 20;

/// The leaves verified so far, kept as entry bundles keep them (a
/// big-endian `u16` length, then the leaf), in one file per log.
pub struct LeafCache {
    path: PathBuf,
    leaves: Vec<Vec<u8>>,
}

impl LeafCache {
    /// The cache of log `origin`, in `dir`; empty if there is none or it
    /// does not parse.
    pub fn open(dir: &Path, origin: &str) -> LeafCache {
        let name = &domain::Sha256::digest(origin.as_bytes()).to_hex()[..16];
        let path = dir.join(format!("{name}.entries"));
        let leaves = std::fs::read(&path).ok().and_then(|bytes| parse_bundle(&bytes)).unwrap_or_default();
        LeafCache { path, leaves }
    }

    fn save(&self) -> anyhow::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut bytes = Vec::with_capacity(self.leaves.iter().map(|l| l.len() + 2).sum());
        for leaf in &self.leaves {
            bytes.extend_from_slice(&(leaf.len() as u16).to_be_bytes());
            bytes.extend_from_slice(leaf);
        }
        let temporary = self.path.with_extension("entries.new");
        std::fs::write(&temporary, bytes)?;
        std::fs::rename(&temporary, &self.path).with_context(|| format!("cannot write {}", self.path.display()))
    }
}

/// An entry bundle's leaves; `None` if it does not parse.
fn parse_bundle(bytes: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut leaves = vec![];
    let mut at = 0;
    while at < bytes.len() {
        let length = u16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?) as usize;
        leaves.push(bytes.get(at + 2..at + 2 + length)?.to_vec());
        at += 2 + length;
    }
    Some(leaves)
}

/// A tile index as C2SP tlog-tiles spells it in a path: groups of three
/// digits, all but the last prefixed with `x`.
pub fn tile_index_path(index: u64) -> String {
    let digits = format!("{index:03}");
    let padded = format!("{}{digits}", "0".repeat((3 - digits.len() % 3) % 3));
    let groups: Vec<&str> = padded.as_bytes().chunks(3).map(|c| std::str::from_utf8(c).expect("digits")).collect();
    let (last, rest) = groups.split_last().expect("at least one group");
    rest.iter().map(|g| format!("x{g}/")).collect::<String>() + last
}

/// The checkpoint's leaves, read by entry bundles from where the cache
/// ends; they must hash to the checkpoint's root. The cache is brought up
/// to the checkpoint. A cache that does not fit (another log, a damaged
/// file) is dropped and the log read from its start.
pub async fn leaves_by_tiles(
    client: &Client,
    cache: &mut LeafCache,
    checkpoint: &Checkpoint,
) -> anyhow::Result<Vec<ReceiptLeaf>> {
    if cache.leaves.len() as u64 > checkpoint.size || !extend(client, cache, checkpoint).await? {
        if cache.leaves.is_empty() {
            bail!(
                "the log's entry bundles do not hash to the checkpoint's root: the tiles and the checkpoint disagree"
            );
        }
        println!("the leaf cache does not fit this log: reading it again from its start");
        cache.leaves.clear();
        if !extend(client, cache, checkpoint).await? {
            bail!(
                "the log's entry bundles do not hash to the checkpoint's root: the tiles and the checkpoint disagree"
            );
        }
    }
    cache.save()?;
    cache
        .leaves
        .iter()
        .enumerate()
        .map(|(index, bytes)| ReceiptLeaf::decode(bytes).map_err(|e| anyhow::anyhow!("leaf {index}: {e}")))
        .collect()
}

/// Downloads the bundles past the cache; whether the leaves then hash to
/// the checkpoint's root (the cache is extended only if they do).
async fn extend(client: &Client, cache: &mut LeafCache, checkpoint: &Checkpoint) -> anyhow::Result<bool> {
    let mut frontier = Frontier::empty();
    cache.leaves.iter().for_each(|leaf| {
        frontier.append(tlog::leaf_hash(leaf));
    });
    let cached = cache.leaves.len() as u64;
    let mut new_leaves = vec![];
    let mut tile = cached / TILE_WIDTH;
    while tile * TILE_WIDTH < checkpoint.size {
        let width = (checkpoint.size - tile * TILE_WIDTH).min(TILE_WIDTH);
        let mut path = format!("/v1/log/tile/entries/{}", tile_index_path(tile));
        if width < TILE_WIDTH {
            path.push_str(&format!(".p/{width}"));
        }
        let bytes = client.send(client.request(Method::GET, &path)).await?.bytes().await?;
        let leaves = parse_bundle(&bytes).with_context(|| format!("{path} is not an entry bundle"))?;
        if leaves.len() as u64 != width {
            bail!("{path} holds {} entries, not {width}", leaves.len());
        }
        for (offset, leaf) in leaves.into_iter().enumerate() {
            let index = tile * TILE_WIDTH + offset as u64;
            if index < cached {
                if cache.leaves[index as usize] != leaf {
                    return Ok(false);
                }
                continue;
            }
            frontier.append(tlog::leaf_hash(&leaf));
            new_leaves.push(leaf);
        }
        tile += 1;
    }
    if frontier.root() != checkpoint.root {
        return Ok(false);
    }
    println!("read {} new leaves by tiles ({cached} cached)", new_leaves.len());
    cache.leaves.extend(new_leaves);
    Ok(true)
}

/// One item's figures.
#[derive(Debug, Clone, Default, PartialEq)]
struct Item {
    calls: u64,
    revenue: u128,
    share: f64,
}

/// A window's figures along one dimension, as `GET /v1/stats/market` has them.
#[derive(Debug, Clone, Default, PartialEq)]
struct Figures {
    calls: u64,
    revenue: u128,
    active: usize,
    active_models: usize,
    active_creators: usize,
    unique_callers: u64,
    gini: f64,
    hhi: f64,
    top10_share: f64,
    items: BTreeMap<String, Item>,
}

/// What the audit knows of the models the leaves name: which are public
/// now (the stats name a model only while it is: one made private since
/// drops out of the by-model figures; a deleted or taken-down one stays),
/// and their tasks (for format 1 leaves, which do not name theirs).
struct Catalogue {
    tasks: HashMap<String, String>,
}

/// Asks for each model the leaves name (publicly): 404 means it is not
/// public now; a deleted or taken-down model answers 410 and still counts.
async fn catalogue(client: &Client, leaves: &[ReceiptLeaf]) -> anyhow::Result<Catalogue> {
    let named: std::collections::BTreeSet<&str> =
        leaves.iter().filter(|l| !l.is_private()).map(|l| l.model.as_str()).collect();
    let mut tasks = HashMap::new();
    for model in named {
        let Some((owner, name)) = model.split_once('/') else { continue };
        let response = client.request(Method::GET, &format!("/v1/models/{owner}/{name}")).send().await?;
        match response.status().as_u16() {
            404 => {}
            200 => {
                let view: ModelView = response.json().await?;
                tasks.insert(model.to_owned(), view.task);
            }
            410 => {
                tasks.insert(model.to_owned(), String::new());
            }
            status => bail!("GET /v1/models/{model} answered {status}"),
        }
    }
    Ok(Catalogue { tasks })
}

/// The figures of `window` (ending in the bucket of `now_ms`) along
/// `dimension`, from the leaves alone: public calls only, each counted once
/// whatever its outcome, revenue from what calls paid.
fn recompute(leaves: &[ReceiptLeaf], catalogue: &Catalogue, window: Window, now_ms: i64, dimension: &str) -> Figures {
    let (from_ms, to_ms) = window.range(0, now_ms);
    let mut items: BTreeMap<String, (u64, u128)> = BTreeMap::new();
    let (mut models, mut creators) = (HashSet::new(), HashSet::new());
    let mut callers = CallerSketch::default();
    for leaf in leaves {
        if leaf.is_private() || leaf.created_at_ms < from_ms || leaf.created_at_ms >= to_ms {
            continue;
        }
        let listed = catalogue.tasks.get(&leaf.model);
        if listed.is_some() {
            // The server counts the models (and their creators) public now.
            models.insert(leaf.model.clone());
            creators.insert(leaf.creator().to_owned());
            callers.insert(u64::from_be_bytes(leaf.caller.as_bytes()[..8].try_into().expect("8 bytes")));
        }
        let key = match dimension {
            "model" if listed.is_none() => continue,
            "model" => leaf.model.clone(),
            "creator" => leaf.creator().to_owned(),
            "task" if leaf.format == 1 => listed.cloned().unwrap_or_default(),
            "task" => leaf.task.clone(),
            "app" => leaf.app.clone(),
            _ => leaf.node.clone(),
        };
        let item = items.entry(key).or_default();
        item.0 += 1;
        item.1 += leaf.price as u128;
    }
    let mut ordered: Vec<(String, u64, u128)> =
        items.into_iter().map(|(key, (calls, revenue))| (key, calls, revenue)).collect();
    ordered.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let measures = concentration(&ordered.iter().map(|i| i.1).collect::<Vec<_>>());
    Figures {
        calls: ordered.iter().map(|i| i.1).sum(),
        revenue: ordered.iter().map(|i| i.2).sum(),
        active: ordered.len(),
        active_models: models.len(),
        active_creators: creators.len(),
        unique_callers: callers.estimate(),
        gini: measures.gini,
        hhi: measures.hhi,
        top10_share: measures.top10_share,
        items: ordered
            .iter()
            .zip(&measures.shares)
            .map(|((key, calls, revenue), share)| {
                (key.clone(), Item { calls: *calls, revenue: *revenue, share: *share })
            })
            .collect(),
    }
}

/// The figures as the stats route reports them.
fn reported(view: &MarketView) -> Figures {
    let amount = |value: &str| value.parse::<u128>().unwrap_or(0);
    let items = view
        .items
        .iter()
        .map(|item| (item.key.clone(), Item { calls: item.calls, revenue: amount(&item.revenue), share: item.share }))
        .collect();
    Figures {
        calls: view.calls,
        revenue: amount(&view.revenue),
        active: view.active,
        active_models: view.active_models,
        active_creators: view.active_creators,
        unique_callers: view.unique_callers,
        gini: view.gini,
        hhi: view.hhi,
        top10_share: view.top10_share,
        items,
    }
}

/// Every figure on which the log and the stats differ, named.
fn differences(window: &str, dimension: &str, log: &Figures, stats: &Figures) -> Vec<String> {
    let mut out = vec![];
    let mut differ = |figure: String, log: String, stats: String| {
        if log != stats {
            out.push(format!("window {window}, by {dimension}: {figure}: the log says {log}, the stats route {stats}"));
        }
    };
    // Ratios are compared to 1e-9: the two sides add the same integers in
    // possibly different orders.
    let ratio = |value: f64| format!("{:.9}", value);
    differ("calls".into(), log.calls.to_string(), stats.calls.to_string());
    let tokens = |minor_units: u128| crate::output::tokens_of(minor_units);
    differ("revenue".into(), tokens(log.revenue), tokens(stats.revenue));
    differ("active".into(), log.active.to_string(), stats.active.to_string());
    differ("active_models".into(), log.active_models.to_string(), stats.active_models.to_string());
    differ("active_creators".into(), log.active_creators.to_string(), stats.active_creators.to_string());
    differ("unique_callers".into(), log.unique_callers.to_string(), stats.unique_callers.to_string());
    differ("gini".into(), ratio(log.gini), ratio(stats.gini));
    differ("hhi".into(), ratio(log.hhi), ratio(stats.hhi));
    differ("top10_share".into(), ratio(log.top10_share), ratio(stats.top10_share));
    let keys: std::collections::BTreeSet<&String> = log.items.keys().chain(stats.items.keys()).collect();
    let missing = Item { calls: 0, revenue: 0, share: 0.0 };
    for key in keys {
        let (ours, theirs) = (log.items.get(key).unwrap_or(&missing), stats.items.get(key).unwrap_or(&missing));
        let name = if key.is_empty() { "(none)" } else { key.as_str() };
        differ(format!("{name} calls"), ours.calls.to_string(), theirs.calls.to_string());
        differ(format!("{name} revenue"), tokens(ours.revenue), tokens(theirs.revenue));
        differ(format!("{name} share"), ratio(ours.share), ratio(theirs.share));
    }
    out
}

/// Recomputes the market's figures for each window from the log and
/// compares them with the stats routes. The stats must describe exactly the
/// leaves of one checkpoint, so the figures are read while no call arrives
/// (tried again while calls keep coming). Returns that checkpoint (and its
/// signed note), whose leaves the cache now holds, and the differences.
pub async fn audit_market(
    client: &Client,
    verifier: &NoteVerifier,
    cache: &mut LeafCache,
    windows: &[String],
) -> anyhow::Result<(Checkpoint, String, Vec<String>)> {
    for _ in 0..QUIET_TRIES {
        let (checkpoint, note) = fetch_checkpoint_note(client, verifier).await?;
        if leaf_after(client, checkpoint.size).await? {
            // Calls the checkpoint does not cover yet: wait for the next one.
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            continue;
        }
        let now_ms = store::now_ms();
        let mut views = vec![];
        for window in windows {
            for dimension in DIMENSIONS {
                let path = format!("/v1/stats/market?window={window}&by={dimension}");
                let view: MarketView = client.send_as(client.request(Method::GET, &path)).await?;
                views.push((window.clone(), dimension, view));
            }
        }
        let again = fetch_checkpoint(client, verifier).await?;
        // The same leaves, and the same hour (the windows' buckets) throughout.
        let moved = store::now_ms() / HOUR_MS != now_ms / HOUR_MS;
        if again.size != checkpoint.size || moved || leaf_after(client, again.size).await? {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            continue;
        }
        let leaves = leaves_by_tiles(client, cache, &checkpoint).await?;
        let catalogue = catalogue(client, &leaves).await?;
        let older = leaves.iter().filter(|l| l.format == 1).count();
        if older > 0 {
            println!(
                "note: {older} leaves are format 1, written before every call was logged: the free and failed calls of \
                 their time are not in the log, so windows reaching back to them cannot agree"
            );
        }
        let mut found = vec![];
        for (window, dimension, view) in &views {
            let named = Window::parse(window).with_context(|| format!("window is 24h, 7d or 30d, not {window}"))?;
            let log = recompute(&leaves, &catalogue, named, now_ms, dimension);
            let stats = reported(view);
            let differing = differences(window, dimension, &log, &stats);
            if differing.is_empty() {
                println!(
                    "window {window}, by {dimension}: {} calls, {} revenue, {} items, gini {:.4}, hhi {:.4}: the stats agree",
                    log.calls,
                    crate::output::tokens_of(log.revenue),
                    log.active,
                    log.gini,
                    log.hhi
                );
            }
            found.extend(differing);
        }
        return Ok((checkpoint, note, found));
    }
    bail!("calls kept arriving: the market's figures could not be read against one checkpoint ({QUIET_TRIES} tries)")
}

/// Whether the log holds a leaf at `index` (past a checkpoint of that size).
async fn leaf_after(client: &Client, index: u64) -> anyhow::Result<bool> {
    let path = format!("/v1/log/entries?start={index}&end={}", index + 1);
    let response = client.request(Method::GET, &path).send().await?;
    Ok(response.status().is_success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_indices_are_spelled_as_the_specification_says() {
        assert_eq!(tile_index_path(0), "000");
        assert_eq!(tile_index_path(5), "005");
        assert_eq!(tile_index_path(999), "999");
        assert_eq!(tile_index_path(1000), "x001/000");
        assert_eq!(tile_index_path(1_234_067), "x001/x234/067");
    }

    #[test]
    fn bundles_parse_and_refuse_a_truncated_entry() {
        assert_eq!(parse_bundle(&[0, 2, 7, 8, 0, 0]), Some(vec![vec![7, 8], vec![]]));
        assert_eq!(parse_bundle(&[0, 3, 7, 8]), None);
        assert_eq!(parse_bundle(&[]), Some(vec![]));
    }
}
