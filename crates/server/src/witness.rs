//! Witnessing, both sides of C2SP tlog-witness
//! (<https://c2sp.org/tlog-witness>):
//!
//! - [`Witness`]: the service `vitrine witness` runs. `POST /add-checkpoint`
//!   cosigns a log's checkpoint (C2SP tlog-cosignature, Ed25519) only if it
//!   is signed by a key the witness trusts for that log and is consistent
//!   with the last checkpoint it cosigned for it, which it keeps on disk
//!   before answering; so a log cannot show two histories and have both
//!   cosigned. `GET /logs` shows what it has seen.
//! - [`Witnesses`]: a market submitting each checkpoint it signs to the
//!   witnesses of `witnesses` before publishing it, the cosignatures they
//!   return attached to the checkpoint it serves.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use store::Store;
use tlog::{AddCheckpoint, CosignatureVerifier, Cosigner, Hash, NoteVerifier, Refusal};

/// Bytes of an `add-checkpoint` body (a note and at most 63 hashes).
const REQUEST_BYTES_MAX: usize = 64 * 1024;
/// The media type of a 409's body: the witness's tree size.
const SIZE_MEDIA_TYPE: &str = "text/x.tlog.size";

/// What a witness has cosigned, per log origin: kept in a JSON file.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Seen {
    logs: BTreeMap<String, SeenLog>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SeenLog {
    size: u64,
    /// Hex.
    root: String,
}

/// A witness: its key, the logs it witnesses and what it has cosigned.
#[derive(Debug)]
pub struct Witness {
    cosigner: Cosigner,
    logs: HashMap<String, Vec<NoteVerifier>>,
    state_path: PathBuf,
    /// Held from the check to the write, so two requests cannot interleave
    /// (one rolling back what the other recorded).
    seen: tokio::sync::Mutex<Seen>,
}

/// Why a witness (or a market's witnesses) could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    #[error("the key {key}: {message}")]
    Key { key: String, message: String },
    #[error("{path} is not a witness's state: {source}")]
    State { path: String, source: serde_json::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("no HTTP client: {0}")]
    Http(reqwest::Error),
}

impl Witness {
    /// A witness trusting `logs` (verifier keys; the origin is each key's
    /// name), its state in `state_path` (created empty if absent).
    pub fn open(cosigner: Cosigner, logs: &[String], state_path: PathBuf) -> Result<Witness, WitnessError> {
        let mut trusted: HashMap<String, Vec<NoteVerifier>> = HashMap::new();
        for vkey in logs {
            let key = NoteVerifier::from_vkey(vkey)
                .map_err(|e| WitnessError::Key { key: vkey.clone(), message: e.to_string() })?;
            trusted.entry(key.name.clone()).or_default().push(key);
        }
        let path = || state_path.display().to_string();
        let seen = match std::fs::read_to_string(&state_path) {
            Ok(text) => serde_json::from_str(&text).map_err(|source| WitnessError::State { path: path(), source })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Seen::default(),
            Err(source) => return Err(WitnessError::Read { path: path(), source }),
        };
        Ok(Witness { cosigner, logs: trusted, state_path, seen: tokio::sync::Mutex::new(seen) })
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/add-checkpoint", post(add_checkpoint))
            .route("/logs", get(logs))
            .layer(DefaultBodyLimit::max(REQUEST_BYTES_MAX))
            .with_state(Arc::new(self))
    }

    fn persist(&self, seen: &Seen) -> Result<(), String> {
        let text = serde_json::to_string_pretty(seen).map_err(|e| e.to_string())?;
        let temporary = self.state_path.with_extension("json.new");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut file = std::fs::File::create(&temporary)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temporary, &self.state_path)
        };
        write().map_err(|e| format!("cannot write {}: {e}", self.state_path.display()))
    }
}

async fn add_checkpoint(State(witness): State<Arc<Witness>>, body: String) -> Response {
    let request = match AddCheckpoint::parse(&body) {
        Ok(request) => request,
        Err(refusal) => return refused(&refusal),
    };
    let mut seen = witness.seen.lock().await;
    let latest = |origin: &str| {
        let log = seen.logs.get(origin)?;
        Some((log.size, hex::decode(&log.root).ok()?.try_into().ok()?))
    };
    let checkpoint = match tlog::check_add_checkpoint(&request, |origin| witness.logs.get(origin).cloned(), latest) {
        Ok(checkpoint) => checkpoint,
        Err(refusal) => {
            if matches!(refusal, Refusal::Conflict(_) | Refusal::Inconsistent) {
                // Possibly evidence of a log showing two histories: kept in the log.
                tracing::warn!(%refusal, checkpoint = %request.note, "refused a checkpoint");
            }
            return refused(&refusal);
        }
    };
    seen.logs.insert(checkpoint.origin.clone(), SeenLog { size: checkpoint.size, root: hex::encode(checkpoint.root) });
    if let Err(error) = witness.persist(&seen) {
        tracing::error!(%error, "the witness cannot record what it cosigns");
        return (StatusCode::SERVICE_UNAVAILABLE, "the witness cannot record its state\n").into_response();
    }
    drop(seen);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let line = witness.cosigner.cosign(&checkpoint.body(), now);
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], line).into_response()
}

fn refused(refusal: &Refusal) -> Response {
    let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::BAD_REQUEST);
    match refusal {
        Refusal::Conflict(size) => {
            (status, [(header::CONTENT_TYPE, SIZE_MEDIA_TYPE)], format!("{size}\n")).into_response()
        }
        other => (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{other}\n")).into_response(),
    }
}

#[derive(Serialize)]
struct LogsView {
    name: String,
    vkey: String,
    logs: Vec<LogView>,
}

#[derive(Serialize)]
struct LogView {
    origin: String,
    size: Option<u64>,
    root: Option<String>,
}

/// The witness's key and, per log it witnesses, the last checkpoint it cosigned.
async fn logs(State(witness): State<Arc<Witness>>) -> axum::Json<LogsView> {
    let seen = witness.seen.lock().await;
    let mut logs: Vec<LogView> = witness
        .logs
        .keys()
        .map(|origin| {
            let log = seen.logs.get(origin);
            LogView {
                origin: origin.clone(),
                size: log.map(|l| l.size),
                root: log.and_then(|l| hex::decode(&l.root).ok()).map(|r| BASE64.encode(r)),
            }
        })
        .collect();
    logs.sort_by(|a, b| a.origin.cmp(&b.origin));
    axum::Json(LogsView { name: witness.cosigner.name().to_owned(), vkey: witness.cosigner.verifier().vkey(), logs })
}

/// One witness a market submits its checkpoints to (`witnesses` setting).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessSetting {
    /// The submission prefix: `<url>/add-checkpoint` is posted to.
    pub url: String,
    /// The witness's verifier key (`name+id+base64(0x04 || key)`).
    pub vkey: String,
}

/// The witnesses a market submits to, and the tree size each has cosigned
/// last (learned from its 409 answers when unknown).
#[derive(Debug)]
pub struct Witnesses {
    witnesses: Vec<(WitnessSetting, CosignatureVerifier)>,
    sizes: Mutex<HashMap<String, u64>>,
    http: reqwest::Client,
    timeout: Duration,
}

impl Witnesses {
    pub fn new(settings: &[WitnessSetting], timeout: Duration) -> Result<Witnesses, WitnessError> {
        let witnesses = settings
            .iter()
            .map(|setting| {
                let verifier = CosignatureVerifier::from_vkey(&setting.vkey).map_err(|e| WitnessError::Key {
                    key: format!("of witness {}", setting.url),
                    message: e.to_string(),
                })?;
                Ok((setting.clone(), verifier))
            })
            .collect::<Result<Vec<_>, WitnessError>>()?;
        let http = reqwest::Client::builder().timeout(timeout).build().map_err(WitnessError::Http)?;
        Ok(Witnesses { witnesses, sizes: Mutex::new(HashMap::new()), http, timeout })
    }

    pub fn is_empty(&self) -> bool {
        self.witnesses.is_empty()
    }

    /// `note` (a checkpoint of `size` leaves with root `root`, signed) with
    /// the cosignatures of every witness that gave one within the timeout
    /// appended. A witness that refuses or does not answer is logged and
    /// left out: the checkpoint is published all the same.
    pub async fn cosign(&self, store: &Store, note: String, size: u64) -> String {
        let signed = note.as_str();
        let asked = self.witnesses.iter().map(|(setting, verifier)| async move {
            match tokio::time::timeout(self.timeout * 2, self.ask(store, setting, verifier, signed, size)).await {
                Ok(Ok(line)) => Some(line),
                Ok(Err(error)) => {
                    tracing::warn!(witness = %setting.url, %error, size, "no cosignature");
                    None
                }
                Err(_) => {
                    tracing::warn!(witness = %setting.url, size, "no cosignature: the witness did not answer in time");
                    None
                }
            }
        });
        let lines: Vec<String> = futures_util::future::join_all(asked).await.into_iter().flatten().collect();
        let mut cosigned = note.clone();
        lines.iter().for_each(|line| cosigned.push_str(line));
        cosigned
    }

    /// One witness's cosignature line, after at most one 409 that tells the
    /// size it has.
    async fn ask(
        &self,
        store: &Store,
        setting: &WitnessSetting,
        verifier: &CosignatureVerifier,
        note: &str,
        size: u64,
    ) -> Result<String, String> {
        let mut old = self.sizes.lock().unwrap_or_else(PoisonError::into_inner).get(&setting.url).copied().unwrap_or(0);
        for _ in 0..2 {
            if old > size {
                return Err(format!("the witness has seen {old} leaves, more than this log's {size}"));
            }
            let proof: Vec<Hash> = if old == 0 || old == size {
                vec![]
            } else {
                store.consistency_proof(old, size).await.map_err(|e| e.to_string())?
            };
            let body = AddCheckpoint { old, proof, note: note.to_owned() }.encode();
            let url = format!("{}/add-checkpoint", setting.url.trim_end_matches('/'));
            let response = self.http.post(&url).body(body).send().await.map_err(|e| e.to_string())?;
            let status = response.status();
            let text = response.text().await.map_err(|e| e.to_string())?;
            if status == reqwest::StatusCode::CONFLICT {
                old = text.trim().parse().map_err(|_| format!("409 without a size: {text}"))?;
                continue;
            }
            if !status.is_success() {
                return Err(format!("{status}: {}", text.trim()));
            }
            // Only a valid cosignature by this witness's key is kept.
            let line = text
                .lines()
                .map(|line| format!("{line}\n"))
                .find(|line| verifier.verify(&format!("{note}{line}")).is_ok())
                .ok_or_else(|| format!("the answer carries no valid cosignature by {}", verifier.name))?;
            self.sizes.lock().unwrap_or_else(PoisonError::into_inner).insert(setting.url.clone(), size);
            return Ok(line);
        }
        Err("the witness's size kept changing".into())
    }
}
