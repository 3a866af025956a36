//! Anchoring the log on the chain (`chain.anchor_interval_seconds`): once
//! the newest anchor is older than the interval and the log has grown past
//! it, the latest signed checkpoint is claimed (one node anchors a size)
//! and sent as an anchor (`chain::anchors`), its transaction recorded once
//! mined. A node that stops between the claim and the mining leaves the
//! claim without a transaction; the next interval anchors a later size.

use crate::{CallError, Market};

impl Market {
    /// Anchors the latest checkpoint of the log named `origin` if one is
    /// due: its size, if it did.
    pub async fn anchor_log(&self, origin: &str) -> Result<Option<u64>, CallError> {
        let Some(chain) = &self.chain else { return Ok(None) };
        let Some(interval) = chain.anchor_interval() else { return Ok(None) };
        let Some(checkpoint) = self.store.latest_checkpoint().await? else { return Ok(None) };
        let network = chain.network();
        let now = store::now_ms();
        if let Some(last) = self.store.anchors(network, 1).await?.first() {
            let due = now - last.created_at_ms >= interval.as_millis() as i64;
            if !due || last.size >= checkpoint.size {
                return Ok(None);
            }
        }
        if checkpoint.size == 0 || !self.store.claim_anchor(network, checkpoint.size, &checkpoint.root, now).await? {
            return Ok(None);
        }
        let data = chain::anchors::anchor_data(origin, checkpoint.size, &checkpoint.root);
        let (transaction, block) = chain
            .send_anchor(data)
            .await
            .map_err(|message| CallError::unavailable(format!("anchoring the log: {message}"), 5))?;
        let hash = format!("{transaction:#x}");
        self.store.anchor_mined(network, checkpoint.size, &hash, block).await?;
        tracing::info!(size = checkpoint.size, transaction = %hash, block, "the log's checkpoint was anchored on the chain");
        Ok(Some(checkpoint.size))
    }
}
