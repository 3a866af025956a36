//! One paid call, from its request to its durable record.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chain::x402::PaymentPayload;
use domain::{Amount, Sha256, Visibility};
use ledger::ChargeParties;
use runtime::{InputError, Signature, Tensor};
use sandbox::{Failure, RunFailure};
use store::{Account, BatchItem, Charge, IdempotencyAnswer, IdempotencyStart, ModelRecord, UsageEvent, Version};
use tlog::ReceiptLeaf;

use crate::answer::{Answer, InferResponse};
use crate::error::CallError;
use crate::keys::{log_model_label, tensors_sha256};
use crate::quarantine::Verdict;
use crate::receipt::{Receipt, timestamp};
use crate::{Market, reserve};

/// The error code of a call whose client went away before its answer.
pub const CLIENT_CLOSED: &str = "client_closed";

/// A call as its caller asked for it.
#[derive(Debug)]
pub struct CallRequest<'a> {
    pub caller: &'a Account,
    pub model: &'a ModelRecord,
    pub version: i64,
    /// The calling application (`X-App`), or "".
    pub app: String,
    /// Back-dating on development servers (`X-Vitrine-Time`), for demo traffic.
    pub at_ms: Option<i64>,
    /// When the call arrived: its deadline and latency count from here.
    pub started: Instant,
    pub idempotency: Option<IdempotencyKey>,
    pub inputs: Inputs,
    /// An x402 payment (`PAYMENT-SIGNATURE`) from a caller without an
    /// account: `caller` is then the market's issuer, and the price is paid
    /// on the chain (`onchain.rs`).
    pub payment: Option<PaymentPayload>,
}

/// An Idempotency-Key and what it stands for: the request's fingerprint
/// (its model, version, app and inputs, however they were written).
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub key: String,
    pub fingerprint: Sha256,
}

/// A call's inputs: read already, or read once the version is known, so
/// that inputs that cannot be read fail as a call of that version (and are
/// recorded so).
pub enum Inputs {
    Read(BTreeMap<String, Tensor>),
    Unread(Box<dyn FnOnce() -> Result<BTreeMap<String, Tensor>, CallError> + Send>),
}

impl std::fmt::Debug for Inputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Inputs::Read(inputs) => f.debug_tuple("Read").field(&inputs.keys().collect::<Vec<_>>()).finish(),
            Inputs::Unread(_) => f.write_str("Unread"),
        }
    }
}

impl Inputs {
    fn read(self) -> Result<BTreeMap<String, Tensor>, CallError> {
        match self {
            Inputs::Read(inputs) => Ok(inputs),
            Inputs::Unread(read) => read(),
        }
    }
}

/// One call as it runs: what it learns on the way (its version's file, its
/// inputs' digest, the CPU its model used) is kept for its record, whether
/// it succeeds, fails or is abandoned.
struct Call<'a> {
    caller: &'a Account,
    model: &'a ModelRecord,
    version: i64,
    app: String,
    at_ms: Option<i64>,
    started: Instant,
    idempotency_key_sha256: Option<Sha256>,
    /// CPU time the model used, once it ran (or failed running).
    cpu_us: AtomicU64,
    /// The version's file, once the version is known.
    blob_sha256: OnceLock<Sha256>,
    /// The inputs' digest, once they are read.
    input_sha256: OnceLock<Sha256>,
    /// The call's record (its leaf and usage event) is on its way to the
    /// sequencer, or the call is owed none: an abandoned call is recorded
    /// only while this is false (`RecordIfAbandoned`).
    recorded: AtomicBool,
    /// Paid on the chain: the payer (CAIP-10), once its payment is verified,
    /// and the settlement's transaction, once settled.
    payer: OnceLock<String>,
    settlement: OnceLock<String>,
}

impl Market {
    /// Runs a paid call. With an Idempotency-Key, a retry of a finished call
    /// gets the first answer again and pays nothing more; a key is looked
    /// up before the version is, so a replay is answered even after its
    /// version was yanked or quarantined.
    pub async fn call(&self, request: CallRequest<'_>) -> Result<Answer, CallError> {
        let CallRequest { caller, model, version, app, at_ms, started, idempotency, inputs, payment } = request;
        if payment.is_some() && idempotency.is_some() {
            return Err(CallError::InvalidRequest(
                "a call paid with PAYMENT-SIGNATURE takes no Idempotency-Key: its payment is used once, and a \
                 retry pays with a new one"
                    .into(),
            ));
        }
        let call = Call {
            caller,
            model,
            version,
            app,
            at_ms,
            started,
            idempotency_key_sha256: idempotency.as_ref().map(|k| Sha256::digest(k.key.as_bytes())),
            cpu_us: AtomicU64::new(0),
            blob_sha256: OnceLock::new(),
            input_sha256: OnceLock::new(),
            recorded: AtomicBool::new(false),
            payer: OnceLock::new(),
            settlement: OnceLock::new(),
        };
        let Some(key) = idempotency else {
            return self.record_call(&call, inputs, None, payment.as_ref()).await;
        };
        if let Some(answer) = self.replay(caller, &key).await? {
            return Ok(answer);
        }
        let Some(_claim) = self.idempotency_claims.claim(caller.id, &key.key) else {
            return Err(CallError::Conflict(
                "a call with this Idempotency-Key is still running; retry when it is done".into(),
            ));
        };
        let result = self.record_call(&call, inputs, Some(&key), None).await;
        if result.is_err() {
            // Another node sharing the database may have answered the key while
            // this call ran (its charge was then refused): that answer stands.
            if let Some(answer) = self.replay(caller, &key).await? {
                return Ok(answer);
            }
        }
        result
    }

    /// The answer an Idempotency-Key already has: the first call's (with its
    /// receipt rebuilt from the log), or a refusal when the key stood for
    /// another request or its answer was not kept. `None` for a key without
    /// an answer.
    async fn replay(&self, caller: &Account, key: &IdempotencyKey) -> Result<Option<Answer>, CallError> {
        let window_ms = self.limits.idempotency_window_ms as i64;
        match self.store.idempotency_lookup(caller.id, &key.key, &key.fingerprint, window_ms).await? {
            IdempotencyStart::Replay(body, log_index) => {
                let mut response: InferResponse = serde_json::from_str(&body).map_err(CallError::internal)?;
                if let Some(index) = log_index {
                    let entry = self.store.log_entries(index, index + 1).await?.pop();
                    let entry = entry.ok_or_else(|| CallError::internal(format!("leaf {index} is missing")))?;
                    response.receipt = Some(Receipt::of_leaf(index, &entry.leaf, &entry.signature)?);
                }
                Ok(Some(Answer { response, tensors: None, log_index, settlement: None }))
            }
            IdempotencyStart::NotKept(log_index) => {
                let receipt = match log_index {
                    Some(index) => format!(" (its receipt is log entry {index}, GET /v1/receipts/{index})"),
                    None => String::new(),
                };
                Err(CallError::Conflict(format!(
                    "the call with this Idempotency-Key was answered and charged once{receipt}, but its answer was \
                     not kept for replays: larger than idempotency_answer_bytes_max = {} bytes, or past this key's \
                     idempotency_answer_bytes_per_key = {}; send the request with a new key to run it again",
                    self.limits.idempotency_answer_bytes_max, self.limits.idempotency_answer_bytes_per_key
                )))
            }
            IdempotencyStart::Mismatch => {
                Err(CallError::InvalidRequest("this Idempotency-Key was used for a different request".into()))
            }
            IdempotencyStart::Started => Ok(None),
        }
    }

    /// Runs and records one call: charged and logged when it succeeds, logged
    /// with its error code when it fails, and logged as `client_closed` when
    /// its caller drops this future mid-way (its client went away).
    async fn record_call(
        &self,
        call: &Call<'_>,
        inputs: Inputs,
        key: Option<&IdempotencyKey>,
        payment: Option<&PaymentPayload>,
    ) -> Result<Answer, CallError> {
        let _abandoned = RecordIfAbandoned { market: self, call };
        let result = self.charge_and_run(call, inputs, key, payment).await;
        // A call to a version that does not exist, or is yanked, is not a
        // call to the model; every other failure is usage too.
        if let Err(error) = &result
            && !error.names_nothing_callable()
            && let Err(failure) = self.log_failure(call, error.code()).await
        {
            tracing::warn!(%failure, "logging a failed call failed");
        }
        // Recorded by now, or owed no record.
        call.recorded.store(true, Ordering::Relaxed);
        result
    }

    /// Checks the version and the inputs, reserves the price (402 before the
    /// model runs), runs the model, then writes the call in one batch: the
    /// split transfers, the signed receipt leaf, the usage event and the
    /// answer of its Idempotency-Key (with the request's fingerprint), if
    /// any. Answers once that is durable; a failed call writes no charge.
    /// A call paid on the chain has its payment verified and claimed instead
    /// of a reservation, and settled once its model succeeded.
    async fn charge_and_run(
        &self,
        call: &Call<'_>,
        inputs: Inputs,
        key: Option<&IdempotencyKey>,
        payment: Option<&PaymentPayload>,
    ) -> Result<Answer, CallError> {
        let (caller, model) = (call.caller, call.model);
        let version = self.callable_version(call).await?;
        let _ = call.blob_sha256.set(version.blob_sha256);
        let inputs = inputs.read()?;
        // The log's digest of the inputs: of the tensors, however they came.
        let _ = call.input_sha256.set(tensors_sha256(inputs.iter().map(|(n, t)| (n.as_str(), t)))?);
        let signature = Signature { inputs: version.inputs.clone(), outputs: version.outputs.clone() };
        let inputs = signature.check_inputs(inputs, self.limits.tensor_elements_max).map_err(input_error)?;

        // The price is the one read when the call started; a later change
        // applies to later calls. Who pays whom is the ledger's rule.
        let shares = self.fee_split.split(model.price_per_inference);
        let parties = ChargeParties {
            // Paid on the chain: the tokens are the market's there, and enter
            // the ledger from the issuer, as a deposit's do.
            caller: if payment.is_some() { self.system.issuer } else { caller.id },
            creator: model.owner_id,
            node: self.system.node,
            treasury: self.system.treasury,
        };
        let reference = format!("{}/{}@{}", model.owner, model.name, version.version);
        let transfers = ledger::charge_transfers(parties, shares, &reference);
        let charged = Amount::from_minor_units(ledger::charged(&transfers)).map_err(CallError::internal)?;
        // Reserved (in memory, or from this node's grant on a shared market;
        // 402 here, before the model runs), charged below in one batch,
        // released when this call is over, whatever its end.
        let mut claim = None;
        let mut reservation: Option<reserve::Reservation> = None;
        match payment {
            Some(payment) if charged > Amount::ZERO => {
                let purpose =
                    crate::onchain::Purpose::Call { model_id: model.id, version: version.version, parties, shares };
                let claimed = self.claim_payment(payment, charged, purpose).await?;
                let _ = call.payer.set(claimed.payer.clone());
                claim = Some(claimed);
            }
            Some(_) => {
                return Err(CallError::InvalidRequest(
                    "this model is free: call it with an API key, without PAYMENT-SIGNATURE".into(),
                ));
            }
            None if charged > Amount::ZERO => {
                let reserved =
                    self.reservations.reserve(&self.store, &self.sequencer, caller.id, charged.minor_units()).await?;
                reservation = Some(reserved);
            }
            None => {}
        }

        // A batch formed while the model runs may wait a little for this call.
        let coming = self.sequencer.coming();
        let outputs = self.run_model(call, &version, inputs).await?;
        // Settled only once the model answered: a failed call pays nothing.
        let settled = match &claim {
            Some(claim) => {
                let settled = self.settle(claim).await?;
                let _ = call.settlement.set(format!("{:#x}", settled.transaction));
                Some(self.settlement_response(claim, &settled))
            }
            None => None,
        };
        let output_sha256 = tensors_sha256(outputs.iter().map(|(n, t)| (n.as_str(), t)))?;
        let mut response = InferResponse {
            model: format!("{}/{}", model.owner, model.name),
            outputs: InferResponse::outputs_json(&outputs)?,
            version: version.version,
            price: charged.to_string(),
            latency_ms: crate::answer::latency_ms(call.started.elapsed()),
            receipt: None,
        };
        // Kept for replays without the receipt, which is rebuilt from the log.
        let remember = match key {
            Some(key) => {
                let stored = serde_json::to_string(&response).map_err(CallError::internal)?;
                Some(IdempotencyAnswer {
                    account_id: caller.id,
                    key: key.key.clone(),
                    request: key.fingerprint,
                    response: self.keeps_answer(caller.id, &stored).then_some(stored),
                })
            }
            None => None,
        };
        let pays_self = model.owner_id == caller.id;
        let creator_share = if pays_self { 0 } else { shares.creator.minor_units() };
        let usage = call.usage(self, charged.minor_units(), creator_share, "ok");
        if transfers.is_empty() {
            // A free call moves no money: its leaf and usage event are its whole
            // record (and its answer, as the API says, has no receipt).
            let (leaf, signature) = call.leaf(self, &usage, [0; 3], Some(output_sha256), "")?;
            let item = BatchItem::RecordOnly { leaf, signature, usage, answer: remember, at_ms: call.at_ms };
            drop(coming);
            call.recorded.store(true, Ordering::Relaxed);
            let outcome = self.sequencer.submit(item).await??;
            return Ok(Answer { response, tensors: Some(outputs), log_index: outcome.log_index, settlement: None });
        }
        let node_shares = [creator_share, shares.node.minor_units(), shares.treasury.minor_units()];
        let (leaf, signature) = call.leaf(self, &usage, node_shares, Some(output_sha256), "")?;
        // One batch, one durable commit: the charge, the receipt leaf, the usage
        // event and the idempotency answer. A charge the durable balance cannot
        // cover (changed behind this node's back) fails here, charging nothing.
        let item = BatchItem::Charge(Charge {
            transfers,
            model_id: model.id,
            leaf: leaf.clone(),
            signature: signature.clone(),
            usage,
            answer: remember,
            at_ms: call.at_ms,
            grant: reservation.as_ref().and_then(|r| r.grant()),
            release: reservation.as_ref().and_then(|r| r.id()),
            payment: claim.as_ref().map(|c| c.key.clone()),
        });
        drop(coming);
        call.recorded.store(true, Ordering::Relaxed);
        let outcome = self.sequencer.submit(item).await??;
        if let Some(reservation) = reservation {
            reservation.charged(outcome.grant_left);
        }
        let index = outcome.log_index.ok_or_else(|| CallError::internal("a paid call was not logged"))?;
        response.receipt = Some(Receipt::of_leaf(index, &leaf, &signature)?);
        Ok(Answer { response, tensors: Some(outputs), log_index: Some(index), settlement: settled })
    }

    /// The call's version, if it may be called: not yanked, not quarantined.
    async fn callable_version(&self, call: &Call<'_>) -> Result<Version, CallError> {
        let model = call.model;
        let version = self.known_models.version(&self.store, model.id, call.version).await?.ok_or_else(|| {
            CallError::NotFound(format!("'{}/{}' has no version {}", model.owner, model.name, call.version))
        })?;
        if let Some(yank) = &version.yank {
            let why = if yank.reason.is_empty() { String::new() } else { format!(": {}", yank.reason) };
            return Err(CallError::Gone(format!(
                "version {} of '{}/{}' was yanked by its owner on {}{why}",
                version.version,
                model.owner,
                model.name,
                timestamp(yank.since_ms)
            )));
        }
        if let Some(quarantine) = &version.quarantine {
            return Err(CallError::Quarantined(format!(
                "version {} of '{}/{}' is quarantined since {} until the operator lifts it: {}",
                version.version,
                model.owner,
                model.name,
                timestamp(quarantine.since_ms),
                quarantine.reason
            )));
        }
        Ok(version)
    }

    /// Whether an answer is kept for replays of its Idempotency-Key: at most
    /// `idempotency_answer_bytes_max` bytes, within the key's
    /// `idempotency_answer_bytes_per_key`. Kept answers fill the database's
    /// disk for a whole window, and a stranger chooses both their size and
    /// their number.
    fn keeps_answer(&self, account: i64, answer: &str) -> bool {
        let bytes = answer.len() as u64;
        bytes <= self.limits.idempotency_answer_bytes_max
            && u32::try_from(bytes)
                .is_ok_and(|bytes| self.idempotency_bytes.take_many(account, bytes, Instant::now()).is_ok())
    }

    /// Runs the model in a worker within `inference_timeout_ms` of the call's
    /// start, waiting for a worker included. Past the deadline the worker is
    /// killed and the caller gets 504. A crash or an exhausted memory bound
    /// is a strike against the version, towards its quarantine.
    async fn run_model(
        &self,
        call: &Call<'_>,
        version: &Version,
        inputs: Vec<Tensor>,
    ) -> Result<Vec<(String, Tensor)>, CallError> {
        self.model_runs.fetch_add(1, Ordering::Relaxed);
        let timeout = Duration::from_millis(self.limits.inference_timeout_ms);
        let deadline = tokio::time::Instant::from_std(call.started + timeout);
        let digest = version.blob_sha256;
        let tenant = call.caller.id as u64;
        // Whether the model's file could not be read because the remote
        // store of model files failed (the sandbox sees only a message).
        let remote_failed = AtomicBool::new(false);
        let model_file = || async {
            let file = self.blobs.open_blob(&digest).await;
            let file =
                file.inspect_err(|e| remote_failed.store(store::RemoteStoreFailed::caused(e), Ordering::Relaxed))?;
            sandbox::ModelFile::of(file).await
        };
        match self.batcher.run(&self.executor, tenant, version, inputs, deadline, model_file).await {
            Ok(ran) => {
                call.cpu_us.store(ran.cpu_us, Ordering::Relaxed);
                self.strikes.succeeded(call.model.id, version.version);
                Ok(ran.outputs)
            }
            Err(RunFailure { failure, cpu_us }) => {
                call.cpu_us.store(cpu_us, Ordering::Relaxed);
                if failure.is_strike() {
                    self.strike(call, version.version, &failure).await;
                }
                Err(self.run_failure_error(version, failure, remote_failed.into_inner()))
            }
        }
    }

    /// Counts a crash against the version; quarantines it when enough callers
    /// struck it and its failures outnumber its successes (`quarantine.rs`).
    async fn strike(&self, call: &Call<'_>, version: i64, failure: &Failure) {
        let model = call.model;
        let label = format!("{}/{}@{version}", model.owner, model.name);
        tracing::warn!(model = %label, %failure, "a call crashed its worker or exhausted its memory");
        let verdict = self.strikes.strike(model.id, version, call.caller.id, Instant::now());
        let Verdict::Quarantine { callers, strikes, successes } = verdict else { return };
        let reason = format!(
            "calls by {callers} callers crashed their worker or ran out of memory {strikes} times within {} s, \
             against {successes} successful calls (the last: {})",
            self.limits.quarantine_window_ms / 1000,
            match failure {
                Failure::OutOfMemory(_) => "out of memory".to_owned(),
                other => other.to_string(),
            }
        );
        let quarantined = self.store.quarantine_version(model.id, version, &reason, store::now_ms()).await;
        self.known_models.forget_version(model.id, version);
        match quarantined {
            Ok(_) => tracing::warn!(model = %label, %reason, "version quarantined"),
            Err(error) => tracing::error!(model = %label, %error, "quarantining a version failed"),
        }
    }

    fn run_failure_error(&self, version: &Version, failure: Failure, remote_failed: bool) -> CallError {
        match failure {
            Failure::Failed(message) => CallError::InvalidInput(message),
            Failure::OutputTooLarge(message) => CallError::OutputTooLarge(message),
            Failure::OutOfMemory(_) => CallError::OutOfMemory(format!(
                "the model needs more memory on these inputs than a worker may use \
                 (worker_memory_bytes_max = {} bytes); nothing was charged",
                self.limits.worker_memory_bytes_max
            )),
            Failure::TimedOut => CallError::TimedOut(format!(
                "the inference ran past the limit inference_timeout_ms = {}",
                self.limits.inference_timeout_ms
            )),
            Failure::Crashed(cause) => {
                CallError::Crashed(format!("the worker running the model died ({cause}); nothing was charged"))
            }
            Failure::ModelUnreadable(message) if remote_failed => CallError::remote_store_failed(message),
            Failure::ModelUnreadable(message) => {
                // Uploaded through another node whose model files this node does
                // not see, or removed behind the server's back: the operator's
                // problem, and nothing the caller did.
                tracing::error!(blob = %version.blob_sha256, %message, "a stored model's file cannot be read");
                CallError::unavailable(
                    format!(
                        "this node cannot read the model's file ({message}); nodes of one market must share their \
                         model files (blob_dir or blob_url); nothing was charged"
                    ),
                    1,
                )
            }
            Failure::ModelNoLongerLoads(message) => {
                // It loaded when it was uploaded; failing now means limits were
                // lowered since or the blob is damaged: the operator's problem.
                CallError::internal(format!("stored model {} cannot run: {message}", version.blob_sha256))
            }
            Failure::Unavailable(message) => {
                tracing::error!(%message, "no worker for a call");
                CallError::unavailable("no model worker is available; try again shortly", 1)
            }
        }
    }

    async fn log_failure(&self, call: &Call<'_>, code: &str) -> Result<(), CallError> {
        let item = self.failure_item(call, code)?;
        call.recorded.store(true, Ordering::Relaxed);
        self.sequencer.submit(item).await??;
        Ok(())
    }

    /// A failed call's record: price 0, its error code.
    fn failure_item(&self, call: &Call<'_>, code: &str) -> Result<BatchItem, CallError> {
        let usage = call.usage(self, 0, 0, code);
        let (leaf, signature) = call.leaf(self, &usage, [0; 3], None, code)?;
        Ok(BatchItem::RecordOnly { leaf, signature, usage, answer: None, at_ms: call.at_ms })
    }
}

impl Call<'_> {
    fn usage(&self, market: &Market, price: u64, creator_share: u64, status: &str) -> UsageEvent {
        // A payer on the chain is public: its pseudonym is its address's digest.
        let pseudonym = match self.payer.get() {
            Some(payer) => Sha256::digest(payer.as_bytes()),
            None => tlog::caller_pseudonym(&tlog::caller_secret(&market.log_keys.pseudonym, self.caller.id)),
        };
        UsageEvent {
            created_at_ms: self.at_ms.unwrap_or_else(store::now_ms),
            model_id: self.model.id,
            version: self.version,
            owner_id: self.model.owner_id,
            task: self.model.task.as_str().to_owned(),
            public: self.model.visibility == Visibility::Public,
            caller: *pseudonym.as_bytes(),
            app: self.app.clone(),
            node: market.log_keys.node.name().to_owned(),
            price,
            creator_share,
            latency_us: self.started.elapsed().as_micros() as u64,
            cpu_us: self.cpu_us.load(Ordering::Relaxed),
            status: status.to_owned(),
        }
    }

    /// The call's log leaf, signed by this node: what it cost (all zero
    /// for a free or failed call), the digests of what went in and came
    /// out (zeros where there were none), and the error of a failed call.
    fn leaf(
        &self,
        market: &Market,
        usage: &UsageEvent,
        shares: [u64; 3],
        output_sha256: Option<Sha256>,
        error: &str,
    ) -> Result<(Vec<u8>, Vec<u8>), CallError> {
        let zeros = Sha256::from_bytes([0; 32]);
        let keys = &market.log_keys;
        // A call paid on the chain names its payer and settlement (format 3).
        let (format, payer, settlement) = match (self.payer.get(), self.settlement.get()) {
            (Some(payer), Some(settlement)) if error.is_empty() => {
                (tlog::leaf::LEAF_FORMAT_PAID_ON_CHAIN, payer.clone(), settlement.clone())
            }
            _ => (tlog::leaf::LEAF_FORMAT_VERSION, String::new(), String::new()),
        };
        let leaf = ReceiptLeaf {
            format,
            created_at_ms: usage.created_at_ms,
            model: log_model_label(keys, &self.model.owner, self.model.name.as_str(), self.model.visibility),
            version: u32::try_from(self.version).map_err(CallError::internal)?,
            blob_sha256: self.blob_sha256.get().copied().unwrap_or(zeros),
            caller: Sha256::from_bytes(usage.caller),
            app: self.app.clone(),
            node: keys.node.name().to_owned(),
            task: usage.task.clone(),
            price: usage.price,
            creator_share: shares[0],
            node_share: shares[1],
            treasury_share: shares[2],
            input_sha256: self.input_sha256.get().copied().unwrap_or(zeros),
            output_sha256: output_sha256.unwrap_or(zeros),
            idempotency_key_sha256: self.idempotency_key_sha256,
            error: error.to_owned(),
            payer,
            settlement,
        };
        let leaf = leaf.encode().map_err(CallError::internal)?;
        let signature = keys.sign_receipt(&leaf);
        Ok((leaf, signature))
    }
}

/// Records a call whose future is dropped before it was recorded (its
/// client closed the connection): its leaf and usage event, with the error
/// `client_closed`, the CPU time it used if its model ran, and the digest
/// of its inputs if they were read, so that every call is a leaf. Nothing
/// was charged: its reservation is dropped with it.
struct RecordIfAbandoned<'a> {
    market: &'a Market,
    call: &'a Call<'a>,
}

impl Drop for RecordIfAbandoned<'_> {
    fn drop(&mut self) {
        if self.call.recorded.swap(true, Ordering::Relaxed) {
            return;
        }
        let item = match self.market.failure_item(self.call, CLIENT_CLOSED) {
            Ok(item) => item,
            Err(error) => return tracing::warn!(%error, "recording an abandoned call failed"),
        };
        // A future dropped outside a runtime (the server's own shutdown)
        // has nobody to record it for.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let sequencer = self.market.sequencer.clone();
        runtime.spawn(async move {
            match sequencer.submit(item).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::warn!(?error, "recording an abandoned call failed"),
                Err(error) => tracing::warn!(%error, "recording an abandoned call failed"),
            }
        });
    }
}

fn input_error(error: InputError) -> CallError {
    match error {
        InputError::TooManyElements { .. } | InputError::ShapeTooLarge { .. } => CallError::TooLarge(error.to_string()),
        other => CallError::InvalidInput(other.to_string()),
    }
}
