//! Models and versions as calls see them, in memory: a call reads its model
//! (price, visibility, latest version) and its version (signature, blob,
//! quarantine) without the database when this node saw them recently.
//!
//! Every change this node makes forgets what it changes before it answers
//! (`forget_model` after a model's update or new version, `forget_version`
//! after a quarantine or its lift), so on one node a change applies to the
//! calls that start after it, as before. Another node's change (nodes
//! sharing one database) is seen within `KNOWN_FOR`: entries are read again
//! after that long.

use std::num::NonZeroUsize;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use domain::{AccountName, ModelName};
use store::{ModelRecord, Store, StoreError, Version};

/// How long an entry is trusted without reading it again.
const KNOWN_FOR: Duration = Duration::from_secs(1);
/// Entries kept at most, of each kind.
const KNOWN_MAX: usize = 10_000;

type Cache<K, V> = Mutex<lru::LruCache<K, (Instant, V)>>;

#[derive(Debug)]
pub struct KnownModels {
    models: Cache<(String, String), ModelRecord>,
    versions: Cache<(i64, i64), Version>,
}

impl Default for KnownModels {
    fn default() -> KnownModels {
        let size = NonZeroUsize::new(KNOWN_MAX).expect("not zero");
        KnownModels { models: Mutex::new(lru::LruCache::new(size)), versions: Mutex::new(lru::LruCache::new(size)) }
    }
}

fn fresh<K: std::hash::Hash + Eq, V: Clone>(cache: &Cache<K, V>, key: &K) -> Option<V> {
    let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
    match cache.get(key) {
        Some((at, value)) if at.elapsed() < KNOWN_FOR => Some(value.clone()),
        _ => None,
    }
}

fn keep<K: std::hash::Hash + Eq, V>(cache: &Cache<K, V>, key: K, value: V) {
    cache.lock().unwrap_or_else(PoisonError::into_inner).put(key, (Instant::now(), value));
}

impl KnownModels {
    pub async fn model(
        &self,
        store: &Store,
        owner: &AccountName,
        name: &ModelName,
    ) -> Result<Option<ModelRecord>, StoreError> {
        let key = (owner.to_string(), name.to_string());
        if let Some(model) = fresh(&self.models, &key) {
            return Ok(Some(model));
        }
        let model = store.model(owner, name).await?;
        if let Some(model) = &model {
            keep(&self.models, key, model.clone());
        }
        Ok(model)
    }

    pub async fn version(&self, store: &Store, model_id: i64, version: i64) -> Result<Option<Version>, StoreError> {
        if let Some(found) = fresh(&self.versions, &(model_id, version)) {
            return Ok(Some(found));
        }
        let found = store.version(model_id, version).await?;
        if let Some(found) = &found {
            keep(&self.versions, (model_id, version), found.clone());
        }
        Ok(found)
    }

    /// After this node changed a model (its description, price, visibility,
    /// or its latest version).
    pub fn forget_model(&self, owner: &AccountName, name: &ModelName) {
        self.models.lock().unwrap_or_else(PoisonError::into_inner).pop(&(owner.to_string(), name.to_string()));
    }

    /// After this node quarantined a version or lifted its quarantine.
    pub fn forget_version(&self, model_id: i64, version: i64) {
        self.versions.lock().unwrap_or_else(PoisonError::into_inner).pop(&(model_id, version));
    }
}
