//! The HTTP server: state, router, start-up and shutdown.
//!
//! Requests enter through [`router`]; each route lives in `routes/`, reads
//! its input through the extractors in `extract.rs`, answers with the wire
//! types of `wire.rs`, and fails with the one [`error::ApiError`].

mod answers;
pub mod config;
pub mod error;
mod extract;
mod limits;
mod listen;
pub mod log;
mod pages;
pub mod parsers;
mod routes;
mod tensor_body;
pub mod wire;
pub mod witness;
mod x402;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use domain::{AccountName, ApiKey};
use market::Market;
use market::reserve::{GrantPolicy, Reservations};
use runtime::ModelLimits;
use sandbox::Executor;
use store::{BlobStore, Store};
use tokio::net::TcpListener;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use config::Config;
use error::{ApiError, ApiResult};

/// What every handler shares. Cheap to clone: everything is behind an `Arc`
/// or is itself a handle.
#[derive(Debug, Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub blobs: BlobStore,
    /// The paid call and what it shares: workers, the ledger's writer,
    /// reservations, caches, keys.
    pub market: Arc<Market>,
    /// Calls per key, at once and per minute.
    pub call_limits: Arc<limits::CallLimits>,
    /// Sign-ups and failed authentications per network address.
    pub address_limits: Arc<limits::AddressLimits>,
    /// Answers built and not yet read by their clients, in all and per caller.
    pub unsent_answers: Arc<answers::UnsentAnswers>,
    /// Uploads in flight: per account, per address, in all, and their bytes
    /// (`routes::uploads::start_upload`).
    pub uploads: Arc<limits::Uploads>,
    /// Resumable uploads in progress (`routes::uploads::Sessions`).
    pub upload_sessions: Arc<routes::uploads::Sessions>,
    /// Upload workers' milliseconds per account
    /// (`model_load_ms_per_account_per_hour`).
    pub load_time: Arc<limits::Buckets<i64>>,
    /// Full tiles of the log, as served (`routes/tiles.rs`).
    pub tiles: Arc<routes::tiles::TileCache>,
    /// The words a search that matched nothing may be mended to.
    pub search_words: Arc<routes::models::SearchWords>,
    /// The EVM chain, when the `chain` setting names one.
    pub chain: Option<Arc<chain::Chain>>,
    /// The issuer's account: the caller that calls paid on the chain run as.
    pub issuer: Arc<store::Account>,
    /// Uploads hold it shared from putting their file in the blob folder
    /// until their version is recorded; deleting a model holds it alone
    /// while it removes files no model uses any more, so it never removes
    /// a file an upload is about to use.
    pub blob_removal: Arc<tokio::sync::RwLock<()>>,
}

impl AppState {
    /// `account_storage_bytes_max`, `None` when it is 0 (no limit).
    pub fn storage_quota(&self) -> Option<u64> {
        Some(self.config.account_storage_bytes_max).filter(|&max| max > 0)
    }

    /// Starts a call (an inference or an upload) for `account` within its
    /// key's limits; the call ends when the permit is dropped.
    pub fn start_call(&self, account: i64) -> ApiResult<limits::CallPermit> {
        use limits::Refusal;
        self.call_limits.start(account, std::time::Instant::now()).map_err(|refusal| match refusal {
            Refusal::TooManyAtOnce { max } => ApiError::rate_limited(
                format!("this key already has {max} calls running, the limit calls_per_key_concurrent_max"),
                1,
            ),
            Refusal::TooManyPerMinute { max, retry_after_s } => ApiError::rate_limited(
                format!("this key made {max} calls in the last minute, the limit calls_per_key_per_minute_max"),
                retry_after_s,
            ),
        })
    }
}

pub use market::SystemAccounts;

/// The file in the data directory that holds the operator's key.
pub const OPERATOR_KEY_FILE: &str = "operator.key";
/// The database file in the data directory.
pub const DATABASE_FILE: &str = "vitrine.db";

/// Opens (creating if needed) the data directory: database, blobs, and the
/// operator account. Returns the operator key if it was created just now.
pub async fn open_state(config: Config) -> Result<(AppState, Option<ApiKey>), StartError> {
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| format!("cannot create the data directory {}: {e}", data_dir.display()))?;
    let store = if config.database_url.is_empty() {
        Store::open(&data_dir.join(DATABASE_FILE)).await
    } else {
        Store::open_postgres(&config.database_url).await
    };
    let store = store.map_err(|e| format!("cannot open the database: {e}"))?.with_rollups(config.analytics_rollups);
    let blobs = BlobStore::open_with(config.blob_dir(), &config.blob_url, &[])
        .await
        .map_err(|e| format!("cannot open the blob store: {e}"))?;
    if store.is_postgres() && config.blob_url.is_empty() {
        check_shared_blob_folder(&store, &config.blob_dir()).await?;
    }
    let operator_key = ensure_operator(&store, &data_dir).await?;
    let (system, issuer) = ensure_system_accounts(&store, &config)
        .await
        .map_err(|e| format!("cannot create the ledger's accounts: {e}"))?;
    // Alive from here on a shared market: other nodes size their grants by
    // the nodes alive, and void the grants of nodes that are not. One name,
    // one node: two would take each other's grants for their own.
    store.announce_node(&config.node_id).await.map_err(|e| match e {
        store::StoreError::Conflict(_) => {
            format!("another node named {:?} is alive on this market: give each node its own node_id", config.node_id)
        }
        other => format!("cannot announce this node: {other}"),
    })?;
    // No request of this node from before this start is alive: release its
    // holds (its grants), those of no node, and on SQLite all of them.
    let released =
        store.release_holds_of(&config.node_id).await.map_err(|e| format!("cannot release old holds: {e}"))?;
    let forgotten =
        store.abandon_unfinished_idempotency_keys().await.map_err(|e| format!("cannot clear old keys: {e}"))?;
    if released > 0 || forgotten > 0 {
        tracing::info!(released, forgotten, "released holds and idempotency keys of calls that a stop interrupted");
    }
    let totals = store.ledger_totals().await.map_err(|e| e.to_string())?;
    if totals.debits != totals.credits || totals.balances != totals.deposited - totals.paid_out {
        return Err(StartError(format!("the ledger does not balance: {totals:?}")));
    }
    let node_name = AccountName::node(&config.node_id).map_err(|e| e.to_string())?;
    market::error::name_token(&config.token_symbol, config.token_decimals);
    let log_keys = Arc::new(log::LogKeys::load_or_create(&store, &data_dir, &config.log_origin, &node_name).await?);
    store
        .register_node(log_keys.node.name(), &log_keys.node.verifier().public_key())
        .await
        .map_err(|e| format!("cannot register this node's receipt key: {e}"))?;
    // A log always has a checkpoint to serve, the empty one at first; and
    // leaves appended before a stop get theirs now.
    let witness_timeout = std::time::Duration::from_millis(config.witness_timeout_ms);
    let witnesses = Arc::new(witness::Witnesses::new(&config.witnesses, witness_timeout)?);
    if store.holds_signer_lease().await.map_err(|e| format!("cannot ask for the signer's lease: {e}"))? {
        log::sign_checkpoint_if_grown(&store, &log_keys, &witnesses).await?;
    }
    // Checked before the workers and the ledger's writer start: a market
    // configured for a chain never runs without it.
    let chain = match &config.chain {
        Some(settings) => {
            let chain = chain::Chain::connect(settings, config.token_decimals)
                .await
                .map_err(|e| format!("the chain setting: {e}"))?;
            let token = chain.token();
            tracing::info!(network = chain.network(), token = %token.address, name = %token.name,
                decimals = token.decimals, address = %chain.address(), "paid and paying on chain");
            Some(Arc::new(chain))
        }
        None => None,
    };
    let market = start_market(&config, &store, &blobs, system, log_keys, witnesses, chain.clone()).await?;
    let state = AppState {
        market: Arc::new(market),
        tiles: Arc::default(),
        search_words: Arc::default(),
        chain,
        issuer: Arc::new(issuer),
        blob_removal: Arc::default(),
        call_limits: Arc::new(limits::CallLimits::new(
            config.calls_per_key_concurrent_max,
            config.calls_per_key_per_minute_max,
        )),
        address_limits: Arc::new(limits::AddressLimits {
            signups: limits::Buckets::new(config.signups_per_address_per_hour, std::time::Duration::from_secs(3600)),
            failed_auth: limits::Buckets::new(
                config.failed_auth_per_address_per_minute,
                std::time::Duration::from_secs(60),
            ),
        }),
        unsent_answers: Arc::new(answers::UnsentAnswers::new(
            config.unsent_answer_bytes_max,
            config.unsent_answer_bytes_per_key_max,
        )),
        uploads: Arc::default(),
        upload_sessions: Arc::new(routes::uploads::Sessions::new(&config.blob_dir(), config.upload_session_idle_ms)),
        load_time: Arc::new(limits::Buckets::new(
            config.model_load_ms_per_account_per_hour,
            std::time::Duration::from_secs(3600),
        )),
        config: Arc::new(config),
        store,
        blobs,
    };
    spawn_upload_sweep(state.upload_sessions.clone(), state.store.clone());
    if state.chain.is_some() {
        spawn_payment_recovery(
            state.market.clone(),
            state.config.inference_timeout_ms,
            state.config.log_origin.clone(),
        )
        .await;
    }
    Ok((state, operator_key))
}

/// Starts the paid call's machinery: the model workers, reservations (from
/// grants on a shared market), the ledger's sequencer and the upkeep of
/// holds and checkpoints.
async fn start_market(
    config: &Config,
    store: &Store,
    blobs: &BlobStore,
    system: SystemAccounts,
    log_keys: Arc<log::LogKeys>,
    witnesses: Arc<witness::Witnesses>,
    chain: Option<Arc<chain::Chain>>,
) -> Result<Market, StartError> {
    let settings = executor_settings(config).map_err(|e| e.to_string())?;
    let executor = Executor::start(settings).await.map_err(|e| format!("cannot start the model workers: {e}"))?;
    let version = executor.engine_version().unwrap_or_else(|| "of unknown release".into());
    match executor.engine() {
        runtime::Engine::OnnxRuntime => tracing::info!(engine = "onnxruntime", %version, "models run on ONNX Runtime"),
        runtime::Engine::Tract => tracing::info!(
            engine = "tract",
            %version,
            "models run on tract (with onnxruntime_library = the path scripts/onnxruntime prints, on ONNX Runtime)"
        ),
    }
    // Several nodes may share a PostgreSQL market: there calls reserve from
    // grants (`reserve.rs`), on SQLite in memory.
    let reservations = Arc::new(if store.is_postgres() && config.grant_calls > 0 {
        Reservations::with_grants(
            GrantPolicy::new(
                &config.node_id,
                config.grant_calls,
                config.hold_expiry_ms,
                config.inference_timeout_ms,
                config.grant_idle_ms,
            )
            .with_recall_wait_ms(config.grant_recall_wait_ms),
        )
    } else {
        Reservations::default()
    });
    let committed = {
        let reservations = reservations.clone();
        move |accounts: &std::collections::HashMap<i64, ledger::AccountState>, released: &[u64]| {
            reservations.committed(accounts, released)
        }
    };
    let sequencer = store::Sequencer::start(store.clone(), config.batching(), committed);
    spawn_maintenance(store.clone(), sequencer.clone(), reservations.clone(), log_keys.clone(), witnesses, config);
    if reservations.takes_grants() {
        tokio::spawn(market::reserve::answer_recalls(
            store.clone(),
            sequencer.clone(),
            reservations.clone(),
            config.node_id.clone(),
        ));
    }
    let market = Market {
        store: store.clone(),
        blobs: blobs.clone(),
        executor: Arc::new(executor),
        batcher: market::batch::Batcher::new(
            config.batch_calls_max,
            std::time::Duration::from_micros(config.batch_wait_us),
            config.tensor_elements_max,
        ),
        strikes: market::quarantine::Strikes::new(config.quarantine_strikes, config.quarantine_window_ms),
        model_runs: Default::default(),
        sequencer,
        reservations,
        known_keys: Default::default(),
        known_models: Default::default(),
        idempotency_claims: Default::default(),
        idempotency_bytes: market::Buckets::new(
            u32::try_from(config.idempotency_answer_bytes_per_key).unwrap_or(u32::MAX),
            std::time::Duration::from_millis(config.idempotency_window_ms.max(1)),
        ),
        fee_split: config.fee_split().map_err(|e| e.to_string())?,
        system,
        log_keys,
        limits: market::Limits {
            inference_timeout_ms: config.inference_timeout_ms,
            tensor_elements_max: config.tensor_elements_max,
            worker_memory_bytes_max: config.worker_memory_bytes_max,
            quarantine_window_ms: config.quarantine_window_ms,
            idempotency_window_ms: config.idempotency_window_ms,
            idempotency_answer_bytes_max: config.idempotency_answer_bytes_max,
            idempotency_answer_bytes_per_key: config.idempotency_answer_bytes_per_key,
        },
        chain,
        crash_after_settlement: std::env::var_os("VITRINE_CRASH_AFTER_SETTLEMENT").is_some(),
    };
    Ok(market)
}

/// Finishes the x402 payments a stop left half-way (all of this node's
/// now, before any call: none of its calls is running), then every 30
/// seconds those older than a call and its settlement can take (a
/// settlement whose fate was unknown when its call ended); and every 2
/// seconds credits the deposits by transfer that became final.
/// One round of on-chain payouts, its failures logged (the next round,
/// 2 s later, tries again).
async fn pay_out(market: &Market, bump_after_ms: i64) {
    match market.send_payouts(bump_after_ms).await {
        Ok(round) if round != market::payouts::PayoutRound::default() => tracing::debug!(?round, "on-chain payouts"),
        Ok(_) => {}
        Err(error) if !market.store.is_closed() => tracing::warn!(%error, "on-chain payouts wait; retried in 2 s"),
        Err(_) => {}
    }
}

async fn spawn_payment_recovery(market: Arc<Market>, inference_timeout_ms: u64, origin: String) {
    let report = |recovered: Result<(usize, usize), market::CallError>| match recovered {
        Ok((0, 0)) => {}
        Ok((credited, voided)) => tracing::info!(credited, voided, "finished payments a stop or an outage left"),
        Err(error) => tracing::warn!(%error, "finishing interrupted payments failed; retried in 30 s"),
    };
    report(market.recover_payments(0).await);
    // Before any call: transactions this node stored for payouts are sent
    // again and their nonces held, so no settlement takes one.
    let bump_after_ms = market.chain.as_ref().map_or(i64::MAX, |c| c.fee_bump_after().as_millis() as i64);
    pay_out(&market, bump_after_ms).await;
    let settle_ms = market.chain.as_ref().map_or(0, |c| c.settle_timeout().as_millis() as i64);
    let older_than_ms = inference_timeout_ms as i64 + settle_ms + 30_000;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        loop {
            tick.tick().await;
            if market.store.is_closed() {
                break;
            }
            if let Err(error) = market.credit_deposits().await
                && !market.store.is_closed()
            {
                tracing::warn!(%error, "crediting deposits failed; retried in 2 s");
            }
            pay_out(&market, bump_after_ms).await;
            if let Err(error) = market.anchor_log(&origin).await
                && !market.store.is_closed()
            {
                tracing::warn!(%error, "anchoring the log failed; retried at the next interval");
            }
            ticks += 1;
            if ticks.is_multiple_of(15) {
                report(market.recover_payments(older_than_ms).await);
            }
        }
    });
}

/// Every minute, removes resumable uploads idle past
/// `upload_session_idle_ms` (at the first tick too: those a stop left).
fn spawn_upload_sweep(sessions: Arc<routes::uploads::Sessions>, store: Store) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if store.is_closed() {
                break;
            }
            match sessions.sweep().await {
                Ok(0) => {}
                Ok(gone) => tracing::info!(gone, "removed idle resumable uploads"),
                Err(error) => tracing::warn!(%error, "sweeping resumable uploads failed"),
            }
        }
    });
}

fn executor_settings(config: &Config) -> Result<sandbox::Settings, config::ConfigError> {
    Ok(sandbox::Settings {
        isolation: match config.isolation {
            config::IsolationSetting::Process => sandbox::Isolation::Process,
            config::IsolationSetting::None => sandbox::Isolation::None,
        },
        workers: config.inference_threads(),
        upload_workers: config.upload_workers.max(1),
        worker_memory_bytes_max: config.worker_memory_bytes_max,
        model_cache_bytes_max: config.model_cache_bytes_max,
        model_limits: ModelLimits {
            nodes_max: config.model_nodes_max,
            initializer_bytes_max: config.model_initializer_bytes_max,
            inputs_max: config.model_inputs_max,
            outputs_max: config.model_outputs_max,
            rank_max: config.tensor_rank_max,
        },
        output_elements_max: config.output_elements_max,
        worker_command: None,
        onnxruntime_library: config.onnxruntime_library()?,
    })
}

/// The ledger's own accounts, and the issuer's whole record (the caller
/// that calls paid on a chain run as).
async fn ensure_system_accounts(
    store: &Store,
    config: &Config,
) -> Result<(SystemAccounts, store::Account), store::StoreError> {
    use store::AccountKind;
    let node_name = AccountName::node(&config.node_id).map_err(|e| store::StoreError::Corrupt(e.to_string()))?;
    let issuer = store.ensure_system_account(&AccountName::issuer(), AccountKind::Issuer).await?;
    let system = SystemAccounts {
        issuer: issuer.id,
        treasury: store.ensure_system_account(&AccountName::treasury(), AccountKind::Treasury).await?.id,
        payouts: store.ensure_system_account(&AccountName::payouts(), AccountKind::Payouts).await?.id,
        node: store.ensure_system_account(&node_name, AccountKind::Node).await?.id,
    };
    Ok((system, issuer))
}

/// Signs a checkpoint every `checkpoint_interval_ms` while leaves arrive;
/// apart from that (so that a slow witness delays no hold), every second
/// keeps this node's presence, counts the nodes alive, returns this node's
/// idle grants and voids expired holds and the grants of departed nodes
/// (any node's), and forgets old idempotency keys every minute. On a shared
/// market, gives back its grants on a balance when another node recalls them.
fn spawn_maintenance(
    store: Store,
    sequencer: store::Sequencer,
    reservations: Arc<Reservations>,
    log_keys: Arc<log::LogKeys>,
    witnesses: Arc<witness::Witnesses>,
    config: &Config,
) {
    let idempotency_window_ms = config.idempotency_window_ms;
    let interval = std::time::Duration::from_millis(config.checkpoint_interval_ms);
    let signing_store = store.clone();
    tokio::spawn(async move {
        let store = signing_store;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // The server closes the store when it stops; so does this task.
            if store.is_closed() {
                break;
            }
            // One node at a time signs (on PostgreSQL); another takes over
            // within a tick when it goes.
            let signed = match store.holds_signer_lease().await {
                Ok(true) => log::sign_checkpoint_if_grown(&store, &log_keys, &witnesses).await.map(|_| ()),
                Ok(false) => Ok(()),
                Err(error) => Err(format!("cannot ask for the signer's lease: {error}")),
            };
            if let Err(error) = signed
                && !store.is_closed()
            {
                tracing::error!(%error, "signing a checkpoint failed");
            }
        }
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        let mut departed = std::collections::HashSet::new();
        loop {
            tick.tick().await;
            if store.is_closed() {
                break;
            }
            ticks += 1;
            if reservations.takes_grants() {
                departed = market::reserve::keep_grants_shared(&store, &sequencer, &reservations, departed).await;
            }
            market::reserve::void_holds(&sequencer, reservations.settle(store::now_ms()), "returning a grant").await;
            // Expired holds are voided by the one writer, like everything else.
            match store.expired_holds(store::now_ms()).await {
                Ok(holds) => market::reserve::void_holds(&sequencer, holds, "voiding an expired hold").await,
                Err(error) if !store.is_closed() => tracing::warn!(%error, "reading expired holds failed"),
                Err(_) => {}
            }
            if ticks.is_multiple_of(60)
                && let Err(error) = store.purge_idempotency_keys(idempotency_window_ms as i64).await
            {
                tracing::warn!(%error, "purging idempotency keys failed");
            }
        }
    });
}

/// The file in a blob folder that names the folder: the first node of a
/// shared market to start writes it, and every node must find the same one.
const BLOB_FOLDER_MARK: &str = "market-folder";

/// On a market several nodes share through PostgreSQL with model files in
/// a folder (no `blob_url`), that this node's folder is the one every other
/// node uses: a model uploaded through one node must be found by all. The
/// folder's mark (a random token, written once) is compared with the one
/// the market's database holds; a node whose folder has another refuses
/// to start, naming the fix.
async fn check_shared_blob_folder(store: &Store, folder: &Path) -> Result<(), StartError> {
    let path = folder.join(BLOB_FOLDER_MARK);
    let mut fresh = [0u8; 32];
    getrandom::fill(&mut fresh).map_err(|e| format!("no random source: {e}"))?;
    let written = tokio::fs::OpenOptions::new().write(true).create_new(true).open(&path).await;
    if let Ok(mut file) = written {
        use tokio::io::AsyncWriteExt;
        file.write_all(hex::encode(fresh).as_bytes()).await.map_err(|e| format!("cannot write {path:?}: {e}"))?;
        file.sync_all().await.map_err(|e| format!("cannot write {path:?}: {e}"))?;
    }
    let mark = tokio::fs::read_to_string(&path).await.map_err(|e| format!("cannot read {path:?}: {e}"))?;
    let mut bytes = [0u8; 32];
    let mark = hex::decode_to_slice(mark.trim(), &mut bytes)
        .map(|()| bytes)
        .map_err(|_| format!("{path:?} is not a blob folder's mark: remove it if this folder is new"))?;
    let market = store.market_seed("blob_folder", mark).await.map_err(|e| e.to_string())?;
    if market != mark {
        return Err(StartError(format!(
            "the blob folder {} is not the one the other nodes of this market use, so models uploaded through \
             them would not be found here: give every node the same blob_dir (a folder they all mount), or \
             blob_url (an S3-compatible store they share)",
            folder.display()
        )));
    }
    Ok(())
}

/// Creates the operator account at first start and writes its key to
/// `operator.key` (mode 0600) in the data directory.
async fn ensure_operator(store: &Store, data_dir: &Path) -> Result<Option<ApiKey>, StartError> {
    let operator = AccountName::operator();
    if store.account_by_name(&operator).await.map_err(|e| e.to_string())?.is_some() {
        return Ok(None);
    }
    let key = ApiKey::generate();
    let path = data_dir.join(OPERATOR_KEY_FILE);
    write_secret(&path, key.expose()).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    match store.create_account(&operator, true, &key).await {
        Ok(_) => Ok(Some(key)),
        // Another node sharing the database created the market meanwhile:
        // the operator's key is in that node's data directory.
        Err(store::StoreError::Conflict(_)) => {
            std::fs::remove_file(&path).map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
            Ok(None)
        }
        Err(error) => Err(error.to_string().into()),
    }
}

pub use market::keys::write_secret;

/// The API's OpenAPI document, generated from the route annotations.
#[derive(OpenApi)]
#[openapi(
    info(title = "Vitrine", description = "A model marketplace with usage you can see and verify."),
    modifiers(&SecurityAddon),
    tags((name = "accounts"), (name = "money"), (name = "log"), (name = "stats"), (name = "models"), (name = "inference"), (name = "meta"))
)]
struct ApiDoc;

struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("api_key", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// Answers that any route of a kind can give, documented on each: a route
/// with a body answers 400 to one that is not what it takes (not JSON, or
/// not sent as JSON) and 413 past its size limit; a route that reads a key
/// answers 429 once an address sent too many wrong keys
/// (`failed_auth_per_address_per_minute`).
fn with_common_responses(mut document: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let error = |description: &str| {
        let body = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
        ResponseBuilder::new().description(description).content("application/json", body).build()
    };
    for (path, item) in document.paths.paths.iter_mut() {
        let always_served = answers::ALWAYS_SERVED.contains(&path.as_str());
        let operations = [&mut item.get, &mut item.post, &mut item.put, &mut item.patch, &mut item.delete];
        for operation in operations.into_iter().flatten() {
            let responses = &mut operation.responses.responses;
            if !always_served {
                responses.entry("503".into()).or_insert_with(|| {
                    error("too many answers wait for their clients to read them (unavailable, with Retry-After)").into()
                });
            }
            if operation.request_body.is_some() {
                responses.entry("400".into()).or_insert_with(|| {
                    error("the body is not what the route takes: not JSON, or not sent as application/json").into()
                });
                responses
                    .entry("413".into())
                    .or_insert_with(|| error("the body is larger than the route's limit").into());
            }
            if responses.contains_key("401") {
                responses.entry("429".into()).or_insert_with(|| {
                    error("too many requests with a wrong API key from this address (rate_limited, with Retry-After)")
                        .into()
                });
            }
        }
    }
    document
}

/// Every route, and the OpenAPI document describing exactly those routes.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.request_body_bytes_max;
    let (api, document) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(routes::meta::health))
        .routes(routes!(routes::accounts::create_account))
        .routes(routes!(routes::accounts::get_account))
        .routes(routes!(routes::money::list_transfers))
        .routes(routes!(routes::money::deposit))
        .routes(routes!(routes::money::faucet))
        .routes(routes!(routes::money::request_payout, routes::money::list_payouts))
        .routes(routes!(routes::money::list_all_payouts))
        .routes(routes!(
            routes::money::automatic_payouts,
            routes::money::set_automatic_payouts,
            routes::money::stop_automatic_payouts
        ))
        .routes(routes!(routes::money::complete_payout))
        .routes(routes!(routes::money::reject_payout))
        .routes(routes!(routes::money::ledger_view))
        .routes(routes!(routes::money::account_view))
        .routes(routes!(routes::log::checkpoint))
        .routes(routes!(routes::log::checkpoints))
        .routes(routes!(routes::log::key))
        .routes(routes!(routes::log::entries))
        .routes(routes!(routes::log::inclusion))
        .routes(routes!(routes::log::consistency))
        .routes(routes!(routes::log::receipt))
        .routes(routes!(routes::log::pseudonym))
        .routes(routes!(routes::stats::market))
        .routes(routes!(routes::stats::market_series))
        .routes(routes!(routes::stats::creator))
        .routes(routes!(routes::stats::model_demand))
        .routes(routes!(routes::stats::model_series))
        .routes(routes!(routes::stats::trending))
        .routes(routes!(routes::stats::tasks))
        .routes(routes!(routes::stats::earnings))
        .routes(routes!(routes::stats::spending))
        .routes(routes!(routes::stats::metrics))
        .routes(routes!(routes::models::create_model, routes::models::list_models))
        .routes(routes!(routes::models::get_model, routes::models::update_model, routes::models::delete_model))
        .routes(routes!(routes::models::list_versions))
        .routes(routes!(routes::models::get_version, routes::models::yank_version))
        .routes(routes!(routes::takedown::take_down, routes::takedown::restore))
        .routes(routes!(routes::inference::infer_latest))
        .routes(routes!(routes::inference::infer_version))
        .routes(routes!(routes::models::get_blob))
        .routes(routes!(routes::chain::reserves))
        .routes(routes!(routes::chain::anchors))
        .routes(routes!(routes::chain::top_up))
        .routes(routes!(routes::chain::address_challenge))
        .routes(routes!(routes::chain::prove_address, routes::chain::list_addresses))
        .routes(routes!(routes::quarantine::list_quarantines))
        .routes(routes!(routes::quarantine::quarantine_version, routes::quarantine::lift_quarantine))
        .layer(DefaultBodyLimit::max(body_limit))
        // Uploads stream to disk under their own limit, upload_bytes_max.
        .routes(routes!(routes::uploads::start_upload_session))
        .routes(routes!(routes::uploads::commit_upload))
        .routes(routes!(routes::uploads::get_upload_session, routes::uploads::delete_upload_session))
        .layer(DefaultBodyLimit::max(body_limit))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(routes::uploads::upload_version))
                .routes(routes!(routes::uploads::append_to_upload))
                .layer(DefaultBodyLimit::disable()),
        )
        .split_for_parts();
    let document = Arc::new(with_common_responses(document));
    api.route("/v1/openapi.json", axum::routing::get(move || async move { axum::Json(document.as_ref().clone()) }))
        .route("/v1/log/tile/{*tile}", axum::routing::get(routes::tiles::tile))
        .merge(pages::routes())
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(axum::middleware::from_fn_with_state(state.unsent_answers.clone(), answers::count_answers))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_response))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message =
        panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned());
    let mut response = ApiError::internal(format!("handler panicked: {}", message.unwrap_or_default())).into_response();
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}

/// Serves until `shutdown` completes, then finishes the requests in flight.
/// Calls `on_listening` with the bound address first (port 0 picks one).
pub async fn serve(
    state: AppState,
    on_listening: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let listener = TcpListener::bind(&state.config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", state.config.listen))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    on_listening(address);
    let store = state.store.clone();
    let limits = listen::ConnectionLimits {
        connections_max: state.config.connections_max,
        connections_per_address_max: state.config.connections_per_address_max,
        header_read_timeout: std::time::Duration::from_millis(state.config.header_read_timeout_ms),
        body_idle_timeout: std::time::Duration::from_millis(state.config.request_body_idle_timeout_ms),
        response_write_idle_timeout: std::time::Duration::from_millis(state.config.response_write_idle_timeout_ms),
        transfer_bytes_per_s_min: state.config.transfer_bytes_per_s_min,
    };
    let (reservations, sequencer) = (state.market.reservations.clone(), state.market.sequencer.clone());
    listen::serve_connections(listener, router(state), limits, shutdown).await;
    // Every call is over: what this node's grants have left goes back.
    market::reserve::void_holds(&sequencer, reservations.settle(i64::MAX), "returning a grant at the stop").await;
    store.close().await;
    Ok(())
}

/// A server running on this process's runtime, for tools that start one
/// next to their own work (`vitrine bench`, `vitrine demo`).
#[derive(Debug)]
pub struct RunningServer {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), StartError>>,
}

impl RunningServer {
    /// Serves `state` on its configured address until [`RunningServer::stop`].
    pub async fn start(state: AppState) -> Result<RunningServer, StartError> {
        let (address_sender, address) = tokio::sync::oneshot::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(
            state,
            move |address| {
                let _ = address_sender.send(address);
            },
            async move {
                let _ = stopped.await;
            },
        ));
        match address.await {
            Ok(address) => Ok(RunningServer { url: format!("http://{address}"), stop, task }),
            // The server ended before listening: its error says why.
            Err(_) => {
                Err(task.await.map_err(|e| StartError(e.to_string()))?.err().unwrap_or(StartError("stopped".into())))
            }
        }
    }

    /// Stops taking connections, finishes the requests in flight, closes the store.
    pub async fn stop(self) -> Result<(), StartError> {
        let _ = self.stop.send(());
        self.task.await.map_err(|e| StartError(e.to_string()))?
    }
}

/// Why the server could not start or stopped: a sentence for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

impl From<String> for StartError {
    fn from(message: String) -> StartError {
        StartError(message)
    }
}

impl From<witness::WitnessError> for StartError {
    fn from(error: witness::WitnessError) -> StartError {
        StartError(error.to_string())
    }
}

impl From<market::keys::KeyError> for StartError {
    fn from(error: market::keys::KeyError) -> StartError {
        StartError(error.to_string())
    }
}
