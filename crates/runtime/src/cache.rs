use std::sync::{Arc, Mutex};

use domain::Sha256;
use lru::LruCache;

use crate::LoadedModel;

/// Loaded models by blob digest, least recently used first out, bounded by
/// the sum of their [`LoadedModel::cost_bytes`].
///
/// A model larger than the whole budget is still returned to its caller, just
/// not kept. Two threads that miss on the same digest at once both load it;
/// the second insert wins. That wastes one load, and keeps the lock out of
/// the (slow) loading.
#[derive(Debug)]
pub struct ModelCache {
    bytes_max: u64,
    state: Mutex<CacheState>,
}

#[derive(Debug)]
struct CacheState {
    models: LruCache<Sha256, Arc<LoadedModel>>,
    /// Sum of `cost_bytes` over `models`; never above `bytes_max`.
    bytes_used: u64,
}

impl ModelCache {
    pub fn new(bytes_max: u64) -> ModelCache {
        let models = LruCache::unbounded();
        ModelCache { bytes_max, state: Mutex::new(CacheState { models, bytes_used: 0 }) }
    }

    pub fn get(&self, digest: &Sha256) -> Option<Arc<LoadedModel>> {
        self.lock().models.get(digest).cloned()
    }

    /// Keeps `model`, evicting the least recently used models until it fits.
    /// Returns the digests no longer held: those evicted, and `digest` itself
    /// when the model is larger than the whole budget.
    pub fn insert(&self, digest: Sha256, model: Arc<LoadedModel>) -> Vec<Sha256> {
        if model.cost_bytes > self.bytes_max {
            return vec![digest];
        }
        let mut state = self.lock();
        if let Some(previous) = state.models.pop(&digest) {
            state.bytes_used -= previous.cost_bytes;
        }
        let mut evicted = Vec::new();
        while state.bytes_used + model.cost_bytes > self.bytes_max {
            let Some((gone, model)) = state.models.pop_lru() else { break };
            state.bytes_used -= model.cost_bytes;
            evicted.push(gone);
        }
        state.bytes_used += model.cost_bytes;
        state.models.put(digest, model);
        debug_assert!(state.bytes_used <= self.bytes_max);
        evicted
    }

    /// Models held and bytes charged, for metrics and tests.
    pub fn usage(&self) -> (usize, u64) {
        let state = self.lock();
        (state.models.len(), state.bytes_used)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        // A panic while holding this lock leaves consistent state (every
        // update above is completed before any call that could panic).
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
