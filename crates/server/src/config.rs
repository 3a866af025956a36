//! The server's settings: defaults, then a TOML file, then `VITRINE_*`
//! environment variables, then command-line flags, each overriding the last.
//! Every limit a stranger could push against is a named setting here.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// All settings of `vitrine serve`. Units are the last word of each name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port (printed at start).
    pub listen: String,
    /// Holds the database, the blob folder and the keys: the operator's
    /// (on the node that created the market), this node's receipt key, and
    /// on SQLite the log's and the pseudonyms'.
    pub data_dir: PathBuf,
    /// Empty: the embedded SQLite database in `data_dir`. Otherwise a
    /// PostgreSQL URL (`postgres://user@host:port/database`), which several
    /// nodes (each with its own `data_dir` and `node_id`) may share.
    pub database_url: String,
    /// Where model files are kept; empty: `<data_dir>/blobs`. Nodes sharing
    /// a PostgreSQL database share this folder too (a network file system),
    /// unless they share `blob_url`.
    pub blob_dir: PathBuf,
    /// An S3-compatible store of model files that nodes share
    /// (`s3://BUCKET[/PREFIX]`; endpoint, region and credentials from the
    /// standard `AWS_*` variables), `blob_dir` then being this node's cache
    /// of it; empty: `blob_dir` alone.
    pub blob_url: String,
    /// `text` (for people) or `json` (for log collectors), on standard error.
    pub log_format: LogFormat,
    /// Bytes of one uploaded model file (413 above it).
    pub upload_bytes_max: u64,
    /// Bytes the models of one account may store, each distinct file of a
    /// model that is not deleted counted once (413 above it); 0: no limit.
    pub account_storage_bytes_max: u64,
    /// Nodes in one model graph, subgraphs included (422 above it).
    pub model_nodes_max: usize,
    /// Bytes of weights and constants in one model (422 above it).
    pub model_initializer_bytes_max: u64,
    /// Inputs one model may declare (422 above it): its signature is shown
    /// on public pages and in every listing of its versions.
    pub model_inputs_max: usize,
    /// Outputs one model may declare (422 above it).
    pub model_outputs_max: usize,
    /// Dimensions of one declared input or output (422 above it).
    pub tensor_rank_max: usize,
    /// Bytes of one JSON request body (413 above it).
    pub request_body_bytes_max: usize,
    /// Elements over all input tensors of one inference call (413 above it).
    pub tensor_elements_max: u64,
    /// Wall time of one inference, waiting for a slot included (504 past it).
    pub inference_timeout_ms: u64,
    /// Calls (inferences and uploads) one API key may have running at once
    /// (429 above it); 0: no limit.
    pub calls_per_key_concurrent_max: u32,
    /// Calls one API key may start per minute, a minute's worth at once at
    /// most (429 above it); 0: no limit.
    pub calls_per_key_per_minute_max: u32,
    /// Open connections at once; more wait until one closes.
    pub connections_max: usize,
    /// Time a connection has to send a request's headers, from its first
    /// byte (or from the last response); then it is closed.
    pub header_read_timeout_ms: u64,
    /// Open connections from one network address at once; more are answered
    /// 429 and closed. Behind a reverse proxy every connection comes from
    /// the proxy's address: raise it there. 0: no limit.
    pub connections_per_address_max: usize,
    /// Time a request's body has, plus one second per
    /// `transfer_bytes_per_s_min` bytes it sent; then the request fails
    /// (400). A trickle of bytes does not push it back.
    pub request_body_idle_timeout_ms: u64,
    /// Once writing an answer blocks (its client does not read), the time
    /// the connection has to drain `transfer_bytes_per_s_min` × this (in
    /// seconds) bytes; then it is closed and the answer dropped.
    pub response_write_idle_timeout_ms: u64,
    /// The slowest a request body may arrive, or an answer be read, on
    /// average, in bytes per second; 0: no minimum.
    pub transfer_bytes_per_s_min: u64,
    /// Bytes of answers built and not yet read by their clients, in all;
    /// at the limit, new requests get 503 until they drain. 0: no limit.
    pub unsent_answer_bytes_max: u64,
    /// The same for the answers to one key's calls; at the limit, its new
    /// calls get 429. 0: no limit.
    pub unsent_answer_bytes_per_key_max: u64,
    /// Accounts one network address may create per hour (429 above it); 0: no limit.
    pub signups_per_address_per_hour: u32,
    /// Requests with a wrong API key one network address may make per
    /// minute; past it, every keyed request from there is refused (429)
    /// until the minute refills; 0: no limit.
    pub failed_auth_per_address_per_minute: u32,
    /// Inferences running at once (worker processes, with isolation); 0
    /// means one per CPU core.
    pub inference_threads: usize,
    /// One caller's concurrent calls of one model version, alike but for
    /// their first dimension, run as one batch of at most this many calls
    /// (each still answered, charged and logged alone); 1: no batching.
    pub batch_calls_max: usize,
    /// How long the first call of a batch waits for others, in microseconds.
    pub batch_wait_us: u64,
    /// Memory charged to loaded models before the least recently used go;
    /// with isolation, in each worker.
    pub model_cache_bytes_max: u64,
    /// Where models are validated and run: `process` (supervised worker
    /// processes, the default) or `none` (in the server's own process, for
    /// trusted single-user setups: a hostile model can take the server down).
    pub isolation: IsolationSetting,
    /// What runs the models: `tract` (built in), `onnxruntime` (its
    /// library, `onnxruntime_library`, loaded at run time), or `auto`
    /// (the default): ONNX Runtime wherever its library is found (see
    /// [`Config::onnxruntime_library`]), else tract.
    pub engine: EngineSetting,
    /// ONNX Runtime's library (`libonnxruntime.so…`; `scripts/onnxruntime`
    /// fetches one from PyPI and prints its path); empty: `ORT_DYLIB_PATH`.
    pub onnxruntime_library: PathBuf,
    /// Address space of one worker process (the operating system enforces
    /// it): a call or an upload needing more is refused. 0 (the default):
    /// derived from this machine's memory, so that all workers together
    /// address at most `MACHINE_MEMORY_SHARE_PERCENT` of it (and at most
    /// 16 GiB each).
    pub worker_memory_bytes_max: u64,
    /// Let (`inference_threads` + `upload_workers`) × `worker_memory_bytes_max` exceed
    /// `MACHINE_MEMORY_SHARE_PERCENT` of this machine's memory; otherwise
    /// such settings are refused at start, since workers that all grow to
    /// their bound would push the server into the kernel's OOM killer.
    pub memory_overcommit: bool,
    /// Wall time to validate an uploaded model (422 past it).
    pub model_load_timeout_ms: u64,
    /// Worker processes that validate uploads, apart from the calls'
    /// (`inference_threads`): uploads never wait for or hold a call's
    /// worker. At least 1.
    pub upload_workers: usize,
    /// Uploads one account may have in flight at once (429 past it); 0: no
    /// limit.
    pub uploads_per_account_concurrent_max: u32,
    /// Uploads one network address may have in flight at once (429 past
    /// it); 0: no limit.
    pub uploads_per_address_concurrent_max: u32,
    /// Uploads in flight at once on this node, from everyone (503 past it);
    /// 0: no limit.
    pub uploads_concurrent_max: u32,
    /// Resumable uploads one account may have open at once (429 past it);
    /// 0: no limit. Open uploads count against `account_storage_bytes_max`
    /// for the size they were started with.
    pub upload_sessions_per_account_max: u32,
    /// A resumable upload with no piece for this long goes, with its bytes.
    pub upload_session_idle_ms: u64,
    /// Bytes of uploads being received at once on this node, from everyone
    /// (their temporary files): an upload counts its declared length from
    /// its start, or its bytes as they arrive (503 past it); 0: no limit.
    pub upload_bytes_in_flight_max: u64,
    /// Milliseconds of upload workers' time (validating models) one account
    /// may use per hour, refused or not; past it, its uploads get 429 until
    /// the time comes back. 0: no limit.
    pub model_load_ms_per_account_per_hour: u32,
    /// Elements over all outputs of one call (422 above it).
    pub output_elements_max: u64,
    /// A version whose calls by this many distinct callers crash or exhaust
    /// their worker's memory within `quarantine_window_ms`, more often than
    /// its other calls succeed meanwhile, is quarantined; 0: never. One
    /// caller counts once, however often their calls fail.
    pub quarantine_strikes: u32,
    pub quarantine_window_ms: u64,
    /// Items per page when a listing's `limit` is not given.
    pub page_size_default: u32,
    /// The largest `limit` a listing accepts (400 above it).
    pub page_size_max: u32,
    /// This node's id; its account, paid the node share, is `node-<id>`.
    pub node_id: String,
    /// Basis points of every price paid to the model's creator.
    pub creator_share_bps: u32,
    /// Basis points of every price paid to the serving node.
    pub node_share_bps: u32,
    /// Basis points of every price paid to the treasury.
    pub treasury_share_bps: u32,
    /// The token's symbol, for people.
    pub token_symbol: String,
    /// Decimal places of the token: amounts are integers of 10^-decimals tokens.
    pub token_decimals: u32,
    /// The life of a grant, a hold a node places on a caller's balance on a
    /// shared (PostgreSQL) market and spends call by call: a node stops
    /// using it `inference_timeout_ms` + 5 s before, and any node voids it
    /// then (a dead node's grants free their tokens so). On SQLite, where
    /// calls reserve in memory, it bounds holds an older version left.
    pub hold_expiry_ms: u64,
    /// Calls' worth of a price a node asks for in one grant on a shared
    /// market: more means fewer trips to the database. A grant never takes
    /// more than the caller's available balance ÷ (2 × live nodes), so the
    /// other nodes always find some (`ledger::grant_size`).
    /// 0: no grants; a node then reserves in memory as on SQLite, and a
    /// caller who spends on another node meanwhile is refused after the
    /// model ran, never charged more than they have.
    pub grant_calls: u64,
    /// A grant unused this long goes back to the caller's balance.
    pub grant_idle_ms: u64,
    /// How long a call on a shared market waits for other nodes to give
    /// back what they hold of its caller's balance, when it finds too little
    /// free and they hold the rest: recalled grants come back within one
    /// maintenance tick (a second). 0: refuse such a call at once (402).
    pub grant_recall_wait_ms: u64,
    /// How long an Idempotency-Key is remembered.
    pub idempotency_window_ms: u64,
    /// Bytes of one answer kept for replays of its Idempotency-Key; a larger
    /// answer is not kept, and a retry of its call is refused (409) instead
    /// of answered again or run twice.
    pub idempotency_answer_bytes_max: u64,
    /// Bytes of answers one key may have kept for replays, refilled over
    /// `idempotency_window_ms` (at most 4 GiB; 0: no limit); past it,
    /// answers are not kept, as above. Kept answers fill the database's disk.
    pub idempotency_answer_bytes_per_key: u64,
    /// Ledger commands written in one transaction (one fsync) at most.
    pub ledger_batch_max: usize,
    /// How long a batch below `ledger_batch_max` waits, in microseconds, for
    /// the commands of calls still running their model (0: never). Under
    /// load batches grow, and the writer's work per call falls; a call
    /// alone never waits.
    pub ledger_commit_delay_us: u64,
    /// Development server: enables the faucet (`POST /v1/dev/faucet`).
    pub dev: bool,
    /// Minor units one faucet call may give.
    pub faucet_amount_max: u64,
    /// The log's origin line and key name in checkpoints; unique per market.
    pub log_origin: String,
    /// How often a new checkpoint is signed while leaves arrive.
    pub checkpoint_interval_ms: u64,
    /// Witnesses each new checkpoint is submitted to before it is published
    /// (C2SP tlog-witness), their cosignatures served with it:
    /// `[{url = "http://witness.example", vkey = "name+id+key"}]`.
    pub witnesses: Vec<crate::witness::WitnessSetting>,
    /// Time one witness has to answer a submission; past it the checkpoint
    /// is published without its cosignature.
    pub witness_timeout_ms: u64,
    /// The EVM chain the market is paid and pays on (`chain::Settings`:
    /// `{rpc_url, network, token, key_file, confirmations}`); none: money
    /// moves only in the ledger, as the operator records it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain: Option<chain::Settings>,
    /// Leaves one `GET /v1/log/entries` returns at most (400 above it).
    pub log_entries_page_max: u64,
    /// Keep usage rollups up to date in every ledger batch. Off, usage events
    /// are still written but the stats routes answer 503.
    pub analytics_rollups: bool,
    /// Points one stats series may have (400 above it).
    pub stats_series_points_max: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IsolationSetting {
    Process,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineSetting {
    Auto,
    Tract,
    Onnxruntime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

const MIB: u64 = 1024 * 1024;

/// `scheme://user:password@host…` with the password replaced by `***`.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((credentials, host)) = rest.rsplit_once('@') else { return url.to_owned() };
    match credentials.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}
/// The library `scripts/onnxruntime` unpacked under `./target/onnxruntime/`
/// (from the repository's root, as the README's commands run), the newest
/// release if there are several.
fn fetched_onnxruntime() -> Option<PathBuf> {
    let releases = std::fs::read_dir("target/onnxruntime").ok()?;
    let mut found: Vec<(Vec<u32>, PathBuf)> = releases
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let release = entry.file_name().to_str()?.to_owned();
            let numbers = release.split('.').map(|n| n.parse::<u32>().ok()).collect::<Option<Vec<u32>>>()?;
            let library = entry.path().join(format!("onnxruntime/capi/libonnxruntime.so.{release}"));
            library.is_file().then(|| (numbers, std::path::absolute(&library).unwrap_or(library)))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, library)| library)
}

/// The smallest `worker_memory_bytes_max`: a worker's own code and stacks
/// take some tens of MiB before it loads a model.
const WORKER_MEMORY_BYTES_MIN: u64 = 64 * MIB;
/// The largest derived `worker_memory_bytes_max`: loading holds the file,
/// its parsed weights and the optimised plan at once, about three times the
/// weights, and few models served per call have more than 4 GiB of them.
const WORKER_MEMORY_BYTES_DERIVED_MAX: u64 = 16384 * MIB;
/// The share of the machine's memory all workers together may address; the
/// rest is the server's (answers, caches, the database's pages) and the
/// system's.
pub const MACHINE_MEMORY_SHARE_PERCENT: u64 = 75;
/// The longest `ledger_commit_delay_us`: a tenth of a second, already far
/// more than a batch's own work.
pub const LEDGER_COMMIT_DELAY_US_MAX: u64 = 100_000;

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: "127.0.0.1:8080".to_owned(),
            data_dir: PathBuf::from("vitrine-data"),
            database_url: String::new(),
            blob_dir: PathBuf::new(),
            blob_url: String::new(),
            log_format: LogFormat::Text,
            // Real models: a single .onnx file reaches protobuf's 2 GiB limit;
            // an archive with external data may hold more.
            upload_bytes_max: 4096 * MIB,
            account_storage_bytes_max: 10 * 1024 * MIB,
            model_nodes_max: 10_000,
            model_initializer_bytes_max: 4096 * MIB,
            // Language models with a key-value cache declare two inputs and
            // two outputs per layer: 256 leaves room for 120 layers.
            model_inputs_max: 256,
            model_outputs_max: 256,
            tensor_rank_max: 16,
            request_body_bytes_max: 16 * MIB as usize,
            tensor_elements_max: 1_000_000,
            inference_timeout_ms: 10_000,
            inference_threads: 0,
            batch_calls_max: 1,
            batch_wait_us: 2_000,
            calls_per_key_concurrent_max: 32,
            calls_per_key_per_minute_max: 60_000,
            connections_max: 1024,
            header_read_timeout_ms: 10_000,
            // Each address may hold a quarter of the connections.
            connections_per_address_max: 256,
            request_body_idle_timeout_ms: 30_000,
            response_write_idle_timeout_ms: 30_000,
            transfer_bytes_per_s_min: 1024,
            // An answer holds at most output_elements_max elements, a few
            // tens of bytes each as JSON: about 100 MB.
            unsent_answer_bytes_max: 1024 * MIB,
            unsent_answer_bytes_per_key_max: 256 * MIB,
            signups_per_address_per_hour: 100,
            failed_auth_per_address_per_minute: 60,
            model_cache_bytes_max: 4096 * MIB,
            isolation: IsolationSetting::Process,
            engine: EngineSetting::Auto,
            onnxruntime_library: PathBuf::new(),
            // Derived from the machine's memory at load (`Config::load`).
            worker_memory_bytes_max: 0,
            memory_overcommit: false,
            model_load_timeout_ms: 30_000,
            upload_workers: 1,
            uploads_per_account_concurrent_max: 2,
            uploads_per_address_concurrent_max: 4,
            uploads_concurrent_max: 16,
            upload_bytes_in_flight_max: 32 << 30,
            upload_sessions_per_account_max: 4,
            upload_session_idle_ms: 86_400_000,
            model_load_ms_per_account_per_hour: 600_000,
            output_elements_max: 4_000_000,
            quarantine_strikes: 3,
            quarantine_window_ms: 10 * 60 * 1000,
            page_size_default: 20,
            page_size_max: 100,
            node_id: "local".to_owned(),
            creator_share_bps: 8000,
            node_share_bps: 1500,
            treasury_share_bps: 500,
            token_symbol: domain::DEFAULT_TOKEN_SYMBOL.to_owned(),
            token_decimals: domain::DEFAULT_DECIMALS,
            hold_expiry_ms: 60_000,
            grant_calls: 100,
            grant_idle_ms: 2_000,
            grant_recall_wait_ms: 3_000,
            idempotency_window_ms: 24 * 60 * 60 * 1000,
            idempotency_answer_bytes_max: MIB,
            idempotency_answer_bytes_per_key: 64 * MIB,
            ledger_batch_max: 512,
            ledger_commit_delay_us: 500,
            dev: false,
            faucet_amount_max: 1_000 * 10u64.pow(domain::DEFAULT_DECIMALS),
            log_origin: "vitrine.local/log".to_owned(),
            checkpoint_interval_ms: 1000,
            witnesses: vec![],
            chain: None,
            witness_timeout_ms: 5_000,
            log_entries_page_max: 1000,
            analytics_rollups: true,
            stats_series_points_max: 2000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the configuration file {path} is not valid TOML: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Environment variables that configure the server start with this; the rest
/// of the name is the setting in upper case (`VITRINE_UPLOAD_BYTES_MAX`).
pub const ENV_PREFIX: &str = "VITRINE_";

impl Config {
    /// Layers the sources in order of precedence: defaults < `file` < `env`
    /// (only variables named after a setting count; `VITRINE_URL` and others
    /// belong to the client) < `flags`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: toml::Table,
    ) -> Result<Config, ConfigError> {
        let known = Config::default().to_table();
        let mut merged = toml::Table::new();
        if let Some(path) = file {
            let text =
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
            let table: toml::Table =
                toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })?;
            merged.extend(table);
        }
        for (name, value) in env {
            let Some(key) = name.strip_prefix(ENV_PREFIX).map(str::to_lowercase) else { continue };
            if known.contains_key(&key) {
                merged.insert(key, setting_value(&value));
            }
        }
        merged.extend(flags);
        let mut config: Config = toml::Table::try_into(merged).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config.resolve_worker_memory(machine_memory_bytes())?;
        config.check()?;
        Ok(config)
    }

    /// Derives `worker_memory_bytes_max` when it is 0, and refuses settings
    /// under which the workers together could address more than
    /// `MACHINE_MEMORY_SHARE_PERCENT` of `machine_bytes` (unknown: no check)
    /// unless `memory_overcommit` says so. Workers run only with
    /// isolation.
    fn resolve_worker_memory(&mut self, machine_bytes: Option<u64>) -> Result<(), ConfigError> {
        let workers = self.workers();
        let share = machine_bytes.map(|bytes| bytes / 100 * MACHINE_MEMORY_SHARE_PERCENT);
        if self.worker_memory_bytes_max == 0 {
            let derived = share.map_or(WORKER_MEMORY_BYTES_DERIVED_MAX, |share| share / workers.max(1));
            self.worker_memory_bytes_max = derived.clamp(WORKER_MEMORY_BYTES_MIN, WORKER_MEMORY_BYTES_DERIVED_MAX);
            return Ok(());
        }
        let Some(share) = share else { return Ok(()) };
        let total = workers.saturating_mul(self.worker_memory_bytes_max);
        if self.isolation == IsolationSetting::Process && total > share && !self.memory_overcommit {
            return Err(ConfigError::Invalid(format!(
                "workers (inference_threads + upload_workers = {workers}) × worker_memory_bytes_max ({}) = {total} \
                 bytes is more than \
                 {MACHINE_MEMORY_SHARE_PERCENT}% of this machine's memory ({share} of {} bytes): lower either, leave \
                 worker_memory_bytes_max at 0 to derive it, or set memory_overcommit = true",
                self.worker_memory_bytes_max,
                machine_bytes.unwrap_or_default()
            )));
        }
        Ok(())
    }

    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |message: &str| Err(ConfigError::Invalid(message.to_owned()));
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return invalid("listen must be an address such as 127.0.0.1:8080");
        }
        if self.page_size_default == 0 || self.page_size_default > self.page_size_max {
            return invalid("page_size_default must be between 1 and page_size_max");
        }
        if self.inference_timeout_ms == 0 {
            return invalid("inference_timeout_ms must be positive");
        }
        if self.batch_calls_max == 0 || self.batch_wait_us > 1_000_000 {
            return invalid("batch_calls_max must be at least 1 and batch_wait_us at most 1000000 (a second)");
        }
        if self.model_inputs_max == 0 || self.model_outputs_max == 0 || self.tensor_rank_max == 0 {
            return invalid("model_inputs_max, model_outputs_max and tensor_rank_max must be positive");
        }
        if self.upload_bytes_max == 0 || self.request_body_bytes_max == 0 || self.tensor_elements_max == 0 {
            return invalid("upload_bytes_max, request_body_bytes_max and tensor_elements_max must be positive");
        }
        if self.worker_memory_bytes_max < WORKER_MEMORY_BYTES_MIN {
            return invalid("worker_memory_bytes_max must be at least 64 MiB (67108864)");
        }
        if self.connections_max == 0
            || self.header_read_timeout_ms == 0
            || self.request_body_idle_timeout_ms == 0
            || self.response_write_idle_timeout_ms == 0
        {
            return invalid(
                "connections_max, header_read_timeout_ms, request_body_idle_timeout_ms and \
                 response_write_idle_timeout_ms must be positive",
            );
        }
        if self.upload_session_idle_ms == 0 {
            return invalid("upload_session_idle_ms must be positive");
        }
        if self.model_load_timeout_ms == 0 || self.output_elements_max == 0 || self.quarantine_window_ms == 0 {
            return invalid("model_load_timeout_ms, output_elements_max and quarantine_window_ms must be positive");
        }
        if self.hold_expiry_ms < self.inference_timeout_ms + 10_000 {
            return invalid(
                "hold_expiry_ms must be at least inference_timeout_ms + 10000, or grants could expire under a running \
                 call",
            );
        }
        if self.idempotency_answer_bytes_per_key > u64::from(u32::MAX) {
            return invalid("idempotency_answer_bytes_per_key must be at most 4294967295");
        }
        if self.grant_idle_ms == 0 {
            return invalid("grant_idle_ms must be positive");
        }
        if self.fee_split().is_err() {
            return invalid("creator_share_bps + node_share_bps + treasury_share_bps must be 10000");
        }
        if !self.database_url.is_empty()
            && !["postgres://", "postgresql://"].iter().any(|scheme| self.database_url.starts_with(scheme))
        {
            return invalid("database_url must be empty (SQLite in data_dir) or a postgres:// URL");
        }
        if !self.blob_url.is_empty() && self.blob_url.strip_prefix("s3://").is_none_or(|rest| rest.starts_with('/')) {
            return invalid("blob_url must be empty (the blob folder) or s3://BUCKET[/PREFIX]");
        }
        if domain::AccountName::node(&self.node_id).is_err() {
            return invalid("node_id must be lowercase letters, digits and dashes (it names the account node-<id>)");
        }
        if self.log_origin.is_empty() || self.log_origin.contains(|c: char| c.is_whitespace() || c == '+') {
            return invalid("log_origin must be non-empty, without spaces or '+' (for example example.com/log)");
        }
        if self.witness_timeout_ms == 0 {
            return invalid("witness_timeout_ms must be above 0");
        }
        if self.checkpoint_interval_ms == 0 || self.log_entries_page_max == 0 {
            return invalid("checkpoint_interval_ms and log_entries_page_max must be positive");
        }
        if self.token_decimals > 18 || self.ledger_batch_max == 0 {
            return invalid("token_decimals must be at most 18 and ledger_batch_max positive");
        }
        if self.ledger_commit_delay_us > LEDGER_COMMIT_DELAY_US_MAX {
            return invalid(&format!("ledger_commit_delay_us must be at most {LEDGER_COMMIT_DELAY_US_MAX}"));
        }
        Ok(())
    }

    /// How the ledger's sequencer forms its batches.
    pub fn batching(&self) -> store::Batching {
        store::Batching {
            max: self.ledger_batch_max,
            delay: std::time::Duration::from_micros(self.ledger_commit_delay_us),
        }
    }

    pub fn fee_split(&self) -> Result<ledger::FeeSplit, ledger::FeeSplitError> {
        ledger::FeeSplit::new(self.creator_share_bps, self.node_share_bps, self.treasury_share_bps)
    }

    /// The effective settings as TOML, for `vitrine serve --print-config`:
    /// a password in `database_url` is shown as `***`.
    pub fn to_toml(&self) -> String {
        let shown = Config { database_url: redact_password(&self.database_url), ..self.clone() };
        toml::to_string(&shown).expect("a Config always serialises")
    }

    fn to_table(&self) -> toml::Table {
        toml::Table::try_from(self).expect("a Config always serialises")
    }

    /// The blob folder: `blob_dir`, or `<data_dir>/blobs`.
    pub fn blob_dir(&self) -> PathBuf {
        if self.blob_dir.as_os_str().is_empty() { self.data_dir.join("blobs") } else { self.blob_dir.clone() }
    }

    /// Worker processes in all: the calls' and the uploads'.
    pub fn workers(&self) -> u64 {
        self.inference_threads() as u64 + self.upload_workers.max(1) as u64
    }

    /// ONNX Runtime's library, if models run on it: `onnxruntime_library`,
    /// else `ORT_DYLIB_PATH`, else the one `scripts/onnxruntime` fetched
    /// under `./target/onnxruntime/` (the newest); none with `engine =
    /// tract`. An error where `engine = onnxruntime` finds none.
    pub fn onnxruntime_library(&self) -> Result<Option<PathBuf>, ConfigError> {
        let named = if self.onnxruntime_library.as_os_str().is_empty() {
            std::env::var_os("ORT_DYLIB_PATH").filter(|path| !path.is_empty()).map(PathBuf::from)
        } else {
            Some(self.onnxruntime_library.clone())
        };
        let named = named.or_else(|| (self.engine != EngineSetting::Tract).then(fetched_onnxruntime).flatten());
        match (self.engine, named) {
            (EngineSetting::Tract, _) => Ok(None),
            (EngineSetting::Onnxruntime, None) => Err(ConfigError::Invalid(
                "engine = onnxruntime needs ONNX Runtime's library: run scripts/onnxruntime and set \
                 onnxruntime_library (or ORT_DYLIB_PATH) to the path it prints"
                    .into(),
            )),
            (_, named) => Ok(named),
        }
    }

    /// `inference_threads`, with 0 resolved to the number of cores.
    pub fn inference_threads(&self) -> usize {
        match self.inference_threads {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        }
    }
}

/// The memory this server may use: the machine's (`MemTotal` in
/// `/proc/meminfo`), or its control group's limit if lower; `None` where
/// neither can be read.
fn machine_memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let total = meminfo.as_deref().and_then(|text| {
        let line = text.lines().find(|line| line.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        kib.checked_mul(1024)
    });
    // cgroup v2; "max" (no limit) does not parse.
    let limit = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok().and_then(|t| t.trim().parse::<u64>().ok());
    match (total, limit) {
        (Some(total), Some(limit)) => Some(total.min(limit)),
        (total, limit) => total.or(limit),
    }
}

/// A setting given as text (an environment variable, a `--set` flag) is read
/// as a TOML value when it parses as one (`65536`, `true`), else as a string
/// (`127.0.0.1:0`, `/var/lib/vitrine`).
pub fn setting_value(text: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("value = {text}"))
        .ok()
        .and_then(|mut table| table.remove("value"))
        .unwrap_or_else(|| toml::Value::String(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_settings_hide_a_database_password() {
        let config = Config { database_url: "postgres://vitrine:s3cr:et@db:5432/market".into(), ..Config::default() };
        let printed = config.to_toml();
        assert!(printed.contains("postgres://vitrine:***@db:5432/market") && !printed.contains("s3cr"), "{printed}");
        for plain in ["", "postgres://vitrine@db/market", "postgres://db/market"] {
            assert_eq!(redact_password(plain), plain);
        }
    }

    #[test]
    fn precedence_is_defaults_file_env_flags() {
        let dir = std::env::temp_dir().join(format!("vitrine-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("vitrine.toml");
        std::fs::write(&file, "upload_bytes_max = 100\npage_size_max = 50\nlisten = \"127.0.0.1:1\"\n").unwrap();
        let env = [
            ("VITRINE_PAGE_SIZE_MAX".to_owned(), "60".to_owned()),
            ("VITRINE_LISTEN".to_owned(), "127.0.0.1:2".to_owned()),
            ("VITRINE_URL".to_owned(), "http://elsewhere".to_owned()),
            ("PATH".to_owned(), "/bin".to_owned()),
        ];
        let mut flags = toml::Table::new();
        flags.insert("listen".into(), "127.0.0.1:3".into());
        let config = Config::load(Some(&file), env, flags).unwrap();
        assert_eq!(config.upload_bytes_max, 100);
        assert_eq!(config.page_size_max, 60);
        assert_eq!(config.listen, "127.0.0.1:3");
        assert_eq!(config.model_nodes_max, Config::default().model_nodes_max);
    }

    #[test]
    fn the_engine_is_onnxruntime_where_its_library_is_named_and_tract_otherwise() {
        let with =
            |engine, library: &str| Config { engine, onnxruntime_library: PathBuf::from(library), ..Config::default() };
        let named = Some(PathBuf::from("/opt/libonnxruntime.so"));
        assert_eq!(with(EngineSetting::Auto, "/opt/libonnxruntime.so").onnxruntime_library().unwrap(), named);
        assert_eq!(with(EngineSetting::Onnxruntime, "/opt/libonnxruntime.so").onnxruntime_library().unwrap(), named);
        assert_eq!(with(EngineSetting::Tract, "/opt/libonnxruntime.so").onnxruntime_library().unwrap(), None);
        if std::env::var_os("ORT_DYLIB_PATH").is_none() && fetched_onnxruntime().is_none() {
            assert_eq!(with(EngineSetting::Auto, "").onnxruntime_library().unwrap(), None);
            let error = with(EngineSetting::Onnxruntime, "").onnxruntime_library().unwrap_err().to_string();
            assert!(error.contains("scripts/onnxruntime"), "{error}");
        }
    }

    #[test]
    fn worker_memory_is_derived_from_the_machine_and_overcommit_is_refused() {
        const GIB: u64 = 1024 * MIB;
        let with = |threads: usize, bound: u64| Config {
            inference_threads: threads,
            worker_memory_bytes_max: bound,
            ..Config::default()
        };
        // 24 GiB, two workers for calls and one for uploads: 75 % is 18 GiB, 6 GiB each.
        let mut config = with(2, 0);
        config.resolve_worker_memory(Some(24 * GIB)).unwrap();
        let machine_share = 24 * GIB / 100 * 75;
        assert_eq!(config.worker_memory_bytes_max, machine_share / 3);
        let mut more_uploads = Config { upload_workers: 2, ..with(2, 0) };
        more_uploads.resolve_worker_memory(Some(24 * GIB)).unwrap();
        assert_eq!(more_uploads.worker_memory_bytes_max, machine_share / 4);
        // Never more than 16 GiB each, never less than a worker needs to start.
        let mut big = with(2, 0);
        big.resolve_worker_memory(Some(1024 * GIB)).unwrap();
        assert_eq!(big.worker_memory_bytes_max, 16 * GIB);
        let mut small = with(64, 0);
        small.resolve_worker_memory(Some(GIB)).unwrap();
        assert_eq!(small.worker_memory_bytes_max, WORKER_MEMORY_BYTES_MIN);
        let mut unknown = with(2, 0);
        unknown.resolve_worker_memory(None).unwrap();
        assert_eq!(unknown.worker_memory_bytes_max, 16 * GIB);

        // Three workers (two for calls, one for uploads) of 16 GiB on 24 GiB
        // are refused, naming the way out.
        let error = with(2, 16 * GIB).resolve_worker_memory(Some(24 * GIB)).unwrap_err().to_string();
        assert!(error.contains("more than 75% of this machine's memory"), "{error}");
        assert!(error.contains("memory_overcommit = true"), "{error}");
        let mut allowed = Config { memory_overcommit: true, ..with(2, 16 * GIB) };
        allowed.resolve_worker_memory(Some(24 * GIB)).unwrap();
        assert_eq!(allowed.worker_memory_bytes_max, 16 * GIB, "an explicit bound is kept");
        with(2, 5 * GIB).resolve_worker_memory(Some(24 * GIB)).unwrap();
        let error = with(2, 7 * GIB).resolve_worker_memory(Some(24 * GIB)).unwrap_err().to_string();
        assert!(error.contains("inference_threads + upload_workers = 3"), "{error}");
        let mut in_process = Config { isolation: IsolationSetting::None, ..with(2, 16 * GIB) };
        in_process.resolve_worker_memory(Some(24 * GIB)).unwrap();

        // Through `load`, on this machine: the default is derived, never 0.
        let loaded = Config::load(None, [], toml::Table::new()).unwrap();
        assert!(loaded.worker_memory_bytes_max >= WORKER_MEMORY_BYTES_MIN);
        if let Some(machine) = machine_memory_bytes() {
            let total = loaded.inference_threads() as u64 * loaded.worker_memory_bytes_max;
            assert!(total <= machine / 100 * 75 || loaded.worker_memory_bytes_max == WORKER_MEMORY_BYTES_MIN);
        }
    }

    #[test]
    fn unknown_and_bad_settings_are_refused() {
        let dir = std::env::temp_dir().join(format!("vitrine-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("vitrine.toml");
        std::fs::write(&file, "upload_bytes_maxx = 1\n").unwrap();
        let error = Config::load(Some(&file), [], toml::Table::new()).unwrap_err().to_string();
        assert!(error.contains("upload_bytes_maxx"), "{error}");
        let env = [("VITRINE_PAGE_SIZE_MAX".to_owned(), "lots".to_owned())];
        assert!(Config::load(None, env, toml::Table::new()).is_err());
        let env = [("VITRINE_PAGE_SIZE_DEFAULT".to_owned(), "500".to_owned())];
        assert!(Config::load(None, env, toml::Table::new()).is_err());
        // A worker cannot even start within a few MiB; isolation is one of two words.
        let env = [("VITRINE_WORKER_MEMORY_BYTES_MAX".to_owned(), "1000000".to_owned())];
        let error = Config::load(None, env, toml::Table::new()).unwrap_err().to_string();
        assert!(error.contains("worker_memory_bytes_max"), "{error}");
        // A commit delay is bounded: a batch never waits a second for company.
        let env = [("VITRINE_LEDGER_COMMIT_DELAY_US".to_owned(), "1000000".to_owned())];
        let error = Config::load(None, env, toml::Table::new()).unwrap_err().to_string();
        assert!(error.contains("ledger_commit_delay_us must be at most 100000"), "{error}");
        let env = [("VITRINE_LEDGER_COMMIT_DELAY_US".to_owned(), "0".to_owned())];
        assert!(Config::load(None, env, toml::Table::new()).unwrap().batching().delay.is_zero());
        let env = [("VITRINE_ISOLATION".to_owned(), "sometimes".to_owned())];
        assert!(Config::load(None, env, toml::Table::new()).is_err());
        // A batch holds one call at least, and its first waits a second at most.
        for (name, value) in [("VITRINE_BATCH_CALLS_MAX", "0"), ("VITRINE_BATCH_WAIT_US", "1000001")] {
            let error = Config::load(None, [(name.to_owned(), value.to_owned())], toml::Table::new()).unwrap_err();
            assert!(error.to_string().contains("batch_calls_max must be at least 1"), "{error}");
        }
        let env = [("VITRINE_ISOLATION".to_owned(), "none".to_owned())];
        assert_eq!(Config::load(None, env, toml::Table::new()).unwrap().isolation, IsolationSetting::None);
    }
}
