//! The dashboard's static files, embedded in the binary: nothing is fetched
//! from elsewhere at run time. Each is served under a name that carries a
//! hash of its bytes, so browsers may cache it for ever.

/// A file the pages load.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// The path it is served at, `/assets/<stem>.<hash>.<ext>`.
    pub path: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

/// FNV-1a, at compile time: enough to tell versions of a file apart.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf29ce484222325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x100000001b3);
        i += 1;
    }
    hash
}

/// Every asset, with its hashed path.
pub fn all() -> &'static [Asset] {
    static ASSETS: std::sync::OnceLock<Vec<Asset>> = std::sync::OnceLock::new();
    ASSETS.get_or_init(|| {
        [
            ("style", "css", "text/css; charset=utf-8", include_bytes!("../assets/style.css").as_slice()),
            ("app", "js", "text/javascript; charset=utf-8", include_bytes!("../assets/app.js").as_slice()),
            ("favicon", "svg", "image/svg+xml", include_bytes!("../assets/favicon.svg").as_slice()),
        ]
        .into_iter()
        // The hashed names are built once, at first use, and live as long as the process.
        .map(|(stem, ext, content_type, bytes)| Asset {
            path: Box::leak(format!("/assets/{stem}.{:012x}.{ext}", fnv1a(bytes) >> 16).into_boxed_str()),
            content_type,
            bytes,
        })
        .collect()
    })
}

/// The asset served at `path`.
pub fn find(path: &str) -> Option<Asset> {
    all().iter().find(|a| a.path == path).copied()
}

/// The hashed path of the asset whose name starts `stem.`.
pub fn path_of(stem: &str) -> &'static str {
    all()
        .iter()
        .find(|a| a.path.strip_prefix("/assets/").is_some_and(|p| p.starts_with(&format!("{stem}."))))
        .map_or("", |a| a.path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_found_by_its_hashed_path() {
        for asset in all() {
            assert_eq!(find(asset.path).map(|a| a.bytes.len()), Some(asset.bytes.len()));
            assert!(!asset.bytes.is_empty());
        }
        assert!(path_of("app").starts_with("/assets/app.") && path_of("app").ends_with(".js"));
        assert!(find("/assets/app.js").is_none(), "only the hashed name is served");
    }
}
