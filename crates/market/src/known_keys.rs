//! API keys already seen, and their accounts, in memory: every request with
//! a key found it in the database before. Accounts never change, and keys
//! are never revoked (a key is its account's for good), so an entry never
//! goes stale; the cache is bounded and forgets the least recently used.
//! Only keys that matched are kept: a key made a moment ago is found in the
//! database the first time, and a wrong key costs a lookup every time (and
//! counts against its address).

use std::num::NonZeroUsize;
use std::sync::{Mutex, PoisonError};

use domain::{ApiKey, Sha256};
use store::{Account, Store, StoreError};

/// Keys kept at most: about 100 bytes each.
const KNOWN_KEYS_MAX: usize = 100_000;

#[derive(Debug)]
pub struct KnownKeys {
    /// By the key's SHA-256, so that no key is kept in clear.
    accounts: Mutex<lru::LruCache<Sha256, Account>>,
}

impl Default for KnownKeys {
    fn default() -> KnownKeys {
        KnownKeys { accounts: Mutex::new(lru::LruCache::new(NonZeroUsize::new(KNOWN_KEYS_MAX).expect("not zero"))) }
    }
}

impl KnownKeys {
    /// The key's account, from memory or else the database.
    pub async fn account(&self, store: &Store, key: &ApiKey) -> Result<Option<Account>, StoreError> {
        let hash = key.hash();
        if let Some(account) = self.lock().get(&hash) {
            return Ok(Some(account.clone()));
        }
        let account = store.account_for_key(key).await?;
        if let Some(account) = &account {
            self.lock().put(hash, account.clone());
        }
        Ok(account)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, lru::LruCache<Sha256, Account>> {
        self.accounts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
