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
    /// Time a request's body may stall between two pieces; then the request
    /// fails (400).
    pub request_body_idle_timeout_ms: u64,
    /// Accounts one network address may create per hour (429 above it); 0: no limit.
    pub signups_per_address_per_hour: u32,
    /// Requests with a wrong API key one network address may make per
    /// minute; past it, every keyed request from there is refused (429)
    /// until the minute refills; 0: no limit.
    pub failed_auth_per_address_per_minute: u32,
    /// Inferences running at once (worker processes, with isolation); 0
    /// means one per CPU core.
    pub inference_threads: usize,
    /// Memory charged to loaded models before the least recently used go;
    /// with isolation, in each worker.
    pub model_cache_bytes_max: u64,
    /// Where models are validated and run: `process` (supervised worker
    /// processes, the default) or `none` (in the server's own process, for
    /// trusted single-user setups: a hostile model can take the server down).
    pub isolation: IsolationSetting,
    /// Address space of one worker process (the operating system enforces
    /// it): a call or an upload needing more is refused.
    pub worker_memory_bytes_max: u64,
    /// Wall time to validate an uploaded model (422 past it).
    pub model_load_timeout_ms: u64,
    /// Elements over all outputs of one call (422 above it).
    pub output_elements_max: u64,
    /// A version whose calls crash or exhaust their worker's memory this many
    /// times within `quarantine_window_ms` is quarantined; 0: never.
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
    /// market (less when less is available): more means fewer trips to the
    /// database, and more of a caller's balance held by one node at once.
    /// 0: no grants; a node then reserves in memory as on SQLite, and a
    /// caller who spends on another node meanwhile is refused after the
    /// model ran, never charged more than they have.
    pub grant_calls: u64,
    /// A grant unused this long goes back to the caller's balance.
    pub grant_idle_ms: u64,
    /// How long an Idempotency-Key is remembered.
    pub idempotency_window_ms: u64,
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
/// The smallest `worker_memory_bytes_max`: a worker's own code and stacks
/// take some tens of MiB before it loads a model.
const WORKER_MEMORY_BYTES_MIN: u64 = 64 * MIB;
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
            request_body_bytes_max: 16 * MIB as usize,
            tensor_elements_max: 1_000_000,
            inference_timeout_ms: 10_000,
            inference_threads: 0,
            calls_per_key_concurrent_max: 32,
            calls_per_key_per_minute_max: 60_000,
            connections_max: 1024,
            header_read_timeout_ms: 10_000,
            request_body_idle_timeout_ms: 30_000,
            signups_per_address_per_hour: 100,
            failed_auth_per_address_per_minute: 60,
            model_cache_bytes_max: 4096 * MIB,
            isolation: IsolationSetting::Process,
            // Loading holds the file, its parsed weights and the optimised
            // plan at once: about three times the weights.
            worker_memory_bytes_max: 16384 * MIB,
            model_load_timeout_ms: 30_000,
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
            idempotency_window_ms: 24 * 60 * 60 * 1000,
            ledger_batch_max: 512,
            ledger_commit_delay_us: 500,
            dev: false,
            faucet_amount_max: 1_000 * 10u64.pow(domain::DEFAULT_DECIMALS),
            log_origin: "vitrine.local/log".to_owned(),
            checkpoint_interval_ms: 1000,
            witnesses: vec![],
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
        let config: Config = toml::Table::try_into(merged).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config.check()?;
        Ok(config)
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
        if self.upload_bytes_max == 0 || self.request_body_bytes_max == 0 || self.tensor_elements_max == 0 {
            return invalid("upload_bytes_max, request_body_bytes_max and tensor_elements_max must be positive");
        }
        if self.worker_memory_bytes_max < WORKER_MEMORY_BYTES_MIN {
            return invalid("worker_memory_bytes_max must be at least 64 MiB (67108864)");
        }
        if self.connections_max == 0 || self.header_read_timeout_ms == 0 || self.request_body_idle_timeout_ms == 0 {
            return invalid(
                "connections_max, header_read_timeout_ms and request_body_idle_timeout_ms must be positive",
            );
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

    /// `inference_threads`, with 0 resolved to the number of cores.
    pub fn inference_threads(&self) -> usize {
        match self.inference_threads {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        }
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
        let env = [("VITRINE_ISOLATION".to_owned(), "none".to_owned())];
        assert_eq!(Config::load(None, env, toml::Table::new()).unwrap().isolation, IsolationSetting::None);
    }
}
