//! The log as C2SP tlog-tiles (<https://c2sp.org/tlog-tiles>), under
//! `/v1/log/`: hash tiles at `tile/<L>/<N>[.p/<W>]` and entry bundles at
//! `tile/entries/<N>[.p/<W>]`, beside the checkpoint at `checkpoint`. A
//! level-`L` tile holds the hashes of the tree's nodes at height `8·L`,
//! indices `256·N` to `256·N + W - 1` (level 0: the leaf hashes); an entry
//! bundle holds leaves `256·N` onwards, each a big-endian `u16` length and
//! the leaf's bytes. Tiles cover the latest signed checkpoint; anything
//! past it is 404. A full tile never changes: it is kept in memory once
//! read and served as immutable. These routes follow the specification's
//! paths (several segments each), so they are not in the OpenAPI document.

use std::num::NonZeroUsize;
use std::sync::{Mutex, PoisonError};

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// Hashes (and entries) per full tile.
const TILE_WIDTH: u64 = 256;
/// Full tiles and bundles kept in memory at most (a hash tile is 8 KiB).
const CACHED_TILES_MAX: usize = 2_048;

/// What a tile path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tile {
    /// Level `level`, tile `index`, its first `width` hashes (256: full).
    Hashes { level: u8, index: u64, width: u64 },
    /// The leaves of tile `index` of level 0, the first `width` of them.
    Entries { index: u64, width: u64 },
}

impl Tile {
    /// Parses `<L>/<N>[.p/<W>]` or `entries/<N>[.p/<W>]`, in the
    /// specification's one spelling of each (no leading zeros but in the
    /// three-digit groups of `N`, no empty or zero-width partial tile).
    pub fn parse(path: &str) -> Option<Tile> {
        let (head, rest) = path.split_once('/')?;
        let (index, width) = parse_index(rest)?;
        if head == "entries" {
            return Some(Tile::Entries { index, width });
        }
        let level: u8 = canonical_number(head)?.try_into().ok()?;
        // Heights past 63 name nodes no 64-bit tree has.
        (u32::from(level) * 8 < 64).then_some(Tile::Hashes { level, index, width })
    }

    fn is_full(&self) -> bool {
        match self {
            Tile::Hashes { width, .. } | Tile::Entries { width, .. } => *width == TILE_WIDTH,
        }
    }
}

/// `N` as groups of three digits, all but the last prefixed with `x`, the
/// last possibly followed by `.p/<W>`.
fn parse_index(path: &str) -> Option<(u64, u64)> {
    let (groups, width) = match path.split_once(".p/") {
        Some((groups, width)) => {
            let width = canonical_number(width)?;
            ((1..TILE_WIDTH).contains(&width).then_some(groups)?, width)
        }
        None => (path, TILE_WIDTH),
    };
    let parts: Vec<&str> = groups.split('/').collect();
    let (last, leading) = parts.split_last()?;
    let mut index: u64 = 0;
    for (n, part) in leading.iter().enumerate() {
        let digits = part.strip_prefix('x')?;
        // No leading group of zeros: N has one spelling.
        if n == 0 && digits == "000" {
            return None;
        }
        index = index.checked_mul(1000)?.checked_add(three_digits(digits)?)?;
    }
    Some((index.checked_mul(1000)?.checked_add(three_digits(last)?)?, width))
}

fn three_digits(text: &str) -> Option<u64> {
    (text.len() == 3 && text.bytes().all(|b| b.is_ascii_digit())).then(|| text.parse().ok())?
}

fn canonical_number(text: &str) -> Option<u64> {
    let plain = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && (text == "0" || !text.starts_with('0'));
    plain.then(|| text.parse().ok())?
}

/// Full tiles, as served.
#[derive(Debug)]
pub struct TileCache(Mutex<lru::LruCache<Tile, axum::body::Bytes>>);

impl Default for TileCache {
    fn default() -> TileCache {
        TileCache(Mutex::new(lru::LruCache::new(NonZeroUsize::new(CACHED_TILES_MAX).expect("not zero"))))
    }
}

/// A hash tile or an entry bundle (`GET /v1/log/tile/…`).
pub async fn tile(State(state): State<AppState>, Path(path): Path<String>) -> ApiResult<Response> {
    let tile = Tile::parse(&path).ok_or_else(|| {
        ApiError::bad_request(format!("'{path}' is not a tile path: <L>/<N>[.p/<W>] or entries/<N>[.p/<W>]"))
    })?;
    let cached = state.tiles.0.lock().unwrap_or_else(PoisonError::into_inner).get(&tile).cloned();
    let bytes = match cached {
        Some(bytes) => bytes,
        None => {
            let bytes = axum::body::Bytes::from(read(&state, tile).await?);
            if tile.is_full() {
                state.tiles.0.lock().unwrap_or_else(PoisonError::into_inner).put(tile, bytes.clone());
            }
            bytes
        }
    };
    // A full tile never changes; a partial one is replaced by wider ones.
    let cache = if tile.is_full() { "public, max-age=31536000, immutable" } else { "public, max-age=60" };
    Ok(([(header::CONTENT_TYPE, "application/octet-stream"), (header::CACHE_CONTROL, cache)], bytes).into_response())
}

/// The tile's bytes from the store, if the latest checkpoint covers it.
async fn read(state: &AppState, tile: Tile) -> ApiResult<Vec<u8>> {
    let size = state.store.latest_checkpoint().await?.map_or(0, |checkpoint| checkpoint.size);
    let (height, index, width) = match tile {
        Tile::Hashes { level, index, width } => (u32::from(level) * 8, index, width),
        Tile::Entries { index, width } => (0, index, width),
    };
    // Complete nodes at that height, and where the tile starts among them.
    let nodes = size >> height;
    let start =
        index.checked_mul(TILE_WIDTH).filter(|start| start.saturating_add(width) <= nodes).ok_or_else(|| {
            ApiError::not_found(format!("the log's latest checkpoint ({size} leaves) does not cover that tile"))
        })?;
    match tile {
        Tile::Hashes { .. } => {
            let hashes = state.store.level_hashes(height, start, width).await?;
            Ok(hashes.concat())
        }
        Tile::Entries { .. } => {
            let entries = state.store.log_entries(start, start + width).await?;
            let mut bundle = Vec::with_capacity(entries.iter().map(|e| 2 + e.leaf.len()).sum());
            for entry in entries {
                let length = u16::try_from(entry.leaf.len()).map_err(|_| {
                    ApiError::internal(format!("leaf {} is longer than an entry bundle allows", entry.index))
                })?;
                bundle.extend_from_slice(&length.to_be_bytes());
                bundle.extend_from_slice(&entry.leaf);
            }
            Ok(bundle)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Tile;

    #[test]
    fn tile_paths_have_one_spelling() {
        let hashes = |level, index, width| Some(Tile::Hashes { level, index, width });
        assert_eq!(Tile::parse("0/000"), hashes(0, 0, 256));
        assert_eq!(Tile::parse("1/x001/x234/067"), hashes(1, 1_234_067, 256));
        assert_eq!(Tile::parse("2/x001/000.p/17"), hashes(2, 1_000, 17));
        assert_eq!(Tile::parse("7/999.p/255"), hashes(7, 999, 255));
        assert_eq!(Tile::parse("entries/x005/123.p/1"), Some(Tile::Entries { index: 5_123, width: 1 }));
        assert_eq!(Tile::parse("entries/256"), Some(Tile::Entries { index: 256, width: 256 }));
        for bad in [
            "",
            "0",
            "0/",
            "0/0",
            "0/0000",
            "00/000",
            "01/000",
            "8/000",
            "64/000",
            "-1/000",
            "0/x000/001",
            "0/001/002",
            "0/x1/002",
            "0/000.p/0",
            "0/000.p/256",
            "0/000.p/01",
            "0/000.p/",
            "0/000.p",
            "0/x001",
            "entries",
            "entries/",
            "entries/1",
            "0/000/",
            "0/x999/x999/x999/x999/x999/x999/x999/000",
            "tiles/000",
            "0/+00",
        ] {
            assert_eq!(Tile::parse(bad), None, "{bad:?}");
        }
    }
}
