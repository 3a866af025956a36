//! One worker process seen from the server: started, spoken to over its
//! pipes, killed at a deadline, and its death explained.

use std::collections::{HashSet, VecDeque};
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use domain::Sha256;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::time::Instant;

use crate::ModelFile;
use crate::protocol::{self, Hello, Response};

/// A model's file goes to a worker in pieces of this size: what the server
/// holds of it at once.
const MODEL_PIECE_BYTES: usize = 256 << 10;

/// How to start a worker.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

/// How long a new worker may take to start and confine itself.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of a worker's standard error kept to explain its death.
const STDERR_LINES_KEPT: usize = 16;
/// A longer line from a worker is cut (its standard error is untrusted text).
const STDERR_LINE_BYTES_MAX: usize = 1024;
/// Lines of one worker's standard error passed on to the server's log; the
/// rest are counted, not logged, so a chatty model cannot flood the log.
const STDERR_LINES_LOGGED_MAX: usize = 200;

/// A live worker: idle, or serving a request (with perhaps the next one
/// already in its pipe).
#[derive(Debug)]
pub(crate) struct WorkerProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pub pid: u32,
    /// The digests this worker holds loaded, as far as its answers said.
    pub loaded: HashSet<Sha256>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    stderr_done: tokio::task::JoinHandle<()>,
    /// CPU time the worker had used when it became ready, plus what each
    /// answer reported: what a call cut short used is the rest.
    cpu_us_accounted: u64,
}

/// How a worker ended in the middle of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Death {
    /// The deadline passed: the server killed it.
    TimedOut { cpu_us: u64 },
    /// An allocation failed past the memory bound and the process aborted.
    OutOfMemory,
    /// Anything else: a signal, an exit, an answer that does not decode.
    Crashed { cause: String },
    /// The server could not read the model's file while writing it to the
    /// worker: the request was cut short, so the worker was killed. No
    /// fault of the worker's, nor of the model's.
    ModelUnreadable { cause: String },
}

/// Why a worker could not be started.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StartFailure(pub String);

impl WorkerProcess {
    /// Starts a worker, sends it its bounds and waits until it is confined.
    pub(crate) async fn start(
        command: &WorkerCommand,
        hello: &Hello,
        deadline: Instant,
    ) -> Result<WorkerProcess, StartFailure> {
        let mut child = tokio::process::Command::new(&command.program)
            .args(&command.args)
            // Nothing of the server's environment or working directory is
            // the worker's business.
            .env_clear()
            // mimalloc, the binary's allocator, otherwise reserves address
            // space a gigabyte at a time, which RLIMIT_AS counts in full:
            // a worker would run out of memory at a fraction of its bound.
            // Without arenas it maps what it uses.
            .env("MIMALLOC_ARENA_RESERVE", "0")
            // ONNX Runtime's Linux build starts a telemetry client with its
            // environment, which some seconds later starts a thread to post
            // to Microsoft's collector: a confined worker is killed for it
            // (SIGSYS). The library reads this variable itself.
            .env(runtime::onnxruntime::TELEMETRY_OFF.0, runtime::onnxruntime::TELEMETRY_OFF.1)
            // ONNX Runtime allocates each call's tensors with glibc's malloc
            // (its arena is off): kept in the heap once freed, up to 32 MiB
            // a tensor, the next call reuses them instead of mapping and
            // faulting in fresh pages, and returning them after.
            .env("MALLOC_MMAP_THRESHOLD_", "33554432")
            .env("MALLOC_TRIM_THRESHOLD_", "18446744073709551615")
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| StartFailure(format!("cannot start {}: {e}", command.program.display())))?;
        let pid = child.id().unwrap_or_default();
        let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(StartFailure("a worker started without its pipes".into()));
        };
        let lines = Arc::new(Mutex::new(VecDeque::new()));
        let stderr_done = tokio::spawn(forward_stderr(pid, stderr, lines.clone()));
        let mut worker = WorkerProcess {
            child,
            stdin,
            stdout: BufReader::with_capacity(1 << 16, stdout),
            pid,
            loaded: HashSet::new(),
            stderr: lines,
            stderr_done,
            cpu_us_accounted: 0,
        };
        let deadline = deadline.min(Instant::now() + START_TIMEOUT);
        match worker.exchange(&hello.encode(), deadline, 1024).await {
            Ok(Response::Ready) => {
                worker.cpu_us_accounted = cpu_time_us(pid).unwrap_or(0);
                Ok(worker)
            }
            Ok(Response::ConfinementFailed { message }) => {
                Err(StartFailure(format!("a worker could not confine itself: {message}")))
            }
            Ok(other) => Err(StartFailure(format!("a new worker answered {}", other.kind()))),
            Err(death) => Err(StartFailure(format!("a new worker died: {}", death.describe()))),
        }
    }

    /// Writes one request to the worker's pipe by `deadline`. On any failure
    /// the worker is finished: the caller drops it (which kills it).
    pub(crate) async fn send(&mut self, request: &[u8], deadline: Instant) -> Result<(), Death> {
        self.send_with_model(request, None, deadline).await
    }

    /// Sends a request whose model's bytes follow `head` (`protocol::load_head`,
    /// `protocol::run_head`), read from its file in pieces of
    /// `MODEL_PIECE_BYTES`: never the whole model in the server's memory.
    pub(crate) async fn send_with_model(
        &mut self,
        head: &[u8],
        model: Option<&mut ModelFile>,
        deadline: Instant,
    ) -> Result<(), Death> {
        let stdin = &mut self.stdin;
        let mut unreadable = None;
        let io = async {
            let model_bytes = model.as_ref().map_or(0, |model| model.size_bytes);
            stdin.write_all(&(head.len() as u64 + model_bytes).to_le_bytes()).await?;
            stdin.write_all(head).await?;
            if let Some(model) = model {
                let mut piece = vec![0u8; MODEL_PIECE_BYTES];
                let mut left = model.size_bytes;
                let read = model.file.seek(std::io::SeekFrom::Start(0)).await.map(|_| ());
                if let Err(error) = read {
                    unreadable = Some(error);
                    return Err(std::io::Error::other("the model's file"));
                }
                while left > 0 {
                    let wanted = piece.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let read = match model.file.read(&mut piece[..wanted]).await {
                        Ok(0) => Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "shorter than its size")),
                        read => read,
                    };
                    let got = match read {
                        Ok(got) => got,
                        Err(error) => {
                            unreadable = Some(error);
                            return Err(std::io::Error::other("the model's file"));
                        }
                    };
                    stdin.write_all(&piece[..got]).await?;
                    left -= got as u64;
                }
            }
            stdin.flush().await
        };
        let outcome = tokio::time::timeout_at(deadline, io).await;
        if let Some(error) = unreadable {
            self.kill();
            return Err(Death::ModelUnreadable { cause: format!("the model's file cannot be read: {error}") });
        }
        self.judge(outcome).await
    }

    /// Reads the answer to the oldest request not yet answered, by
    /// `deadline`. On any failure the worker is finished, as for `send`.
    pub(crate) async fn receive(&mut self, deadline: Instant, answer_bytes_max: u64) -> Result<Response, Death> {
        let stdout = &mut self.stdout;
        let io = async {
            let mut prefix = [0u8; 8];
            stdout.read_exact(&mut prefix).await?;
            let mut answer = vec![0u8; protocol::frame_length(prefix, answer_bytes_max)?];
            stdout.read_exact(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        };
        let outcome = tokio::time::timeout_at(deadline, io).await;
        let answer = self.judge(outcome).await?;
        let response = Response::decode(&answer).map_err(|e| {
            self.kill();
            Death::Crashed { cause: format!("its answer does not decode ({e})") }
        })?;
        if let Response::Loaded { cpu_us, .. } | Response::Ran { cpu_us, .. } | Response::RunFailed { cpu_us, .. } =
            &response
        {
            self.cpu_us_accounted += cpu_us;
        }
        Ok(response)
    }

    async fn exchange(&mut self, request: &[u8], deadline: Instant, answer_bytes_max: u64) -> Result<Response, Death> {
        self.send(request, deadline).await?;
        self.receive(deadline, answer_bytes_max).await
    }

    /// What an exchange with the worker's pipes came to: a failure is a
    /// death, explained.
    async fn judge<T>(&mut self, outcome: Result<std::io::Result<T>, tokio::time::error::Elapsed>) -> Result<T, Death> {
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::InvalidData => {
                self.kill();
                Err(Death::Crashed { cause: format!("its answer is malformed ({error})") })
            }
            Ok(Err(_)) => Err(self.explain_death().await),
            Err(_) => {
                let used = cpu_time_us(self.pid).map(|total| total.saturating_sub(self.cpu_us_accounted));
                self.kill();
                Err(Death::TimedOut { cpu_us: used.unwrap_or(0) })
            }
        }
    }

    /// Whether the process has ended (while it was idle, say).
    pub(crate) fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, now; the runtime reaps the process.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.start_kill();
    }

    /// The pipe broke: the process ended or is ending. Waits for it briefly
    /// and reads its exit status and last words.
    async fn explain_death(&mut self) -> Death {
        let status = match tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await {
            Ok(Ok(status)) => status,
            _ => {
                self.kill();
                return Death::Crashed { cause: "it closed its pipes without exiting".into() };
            }
        };
        // Its standard error ends with it; read to the end before judging.
        let _ = tokio::time::timeout(Duration::from_millis(500), &mut self.stderr_done).await;
        let last_words: Vec<String> = self.stderr.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
        let said = |text: &str| last_words.iter().any(|line| line.contains(text));
        match status.signal() {
            // Rust's handler for a failed allocation prints this, then aborts.
            Some(libc::SIGABRT) if said("memory allocation of") => Death::OutOfMemory,
            Some(libc::SIGABRT) if said("overflowed its stack") => Death::Crashed { cause: "stack overflow".into() },
            Some(libc::SIGSYS) => Death::Crashed { cause: "a system call the sandbox forbids (SIGSYS)".into() },
            Some(libc::SIGSEGV) => Death::Crashed { cause: "segmentation fault (SIGSEGV)".into() },
            Some(libc::SIGKILL) => Death::Crashed { cause: "killed by SIGKILL from outside the server".into() },
            Some(signal) => Death::Crashed { cause: format!("killed by signal {signal}") },
            None => {
                let code = status.code().unwrap_or(-1);
                let last = last_words.last().map(|line| format!(": {line}")).unwrap_or_default();
                Death::Crashed { cause: format!("exited with code {code}{last}") }
            }
        }
    }
}

impl Death {
    pub(crate) fn describe(&self) -> String {
        match self {
            Death::TimedOut { .. } => "timed out".into(),
            Death::OutOfMemory => "out of memory".into(),
            Death::Crashed { cause } | Death::ModelUnreadable { cause } => cause.clone(),
        }
    }
}

/// Passes a worker's standard error on to the server's log, line by line,
/// and keeps its last lines to explain a death. Untrusted text: lines are
/// cut, and only so many are logged.
async fn forward_stderr(pid: u32, stderr: tokio::process::ChildStderr, kept: Arc<Mutex<VecDeque<String>>>) {
    let mut stderr = BufReader::new(stderr);
    let mut line = Vec::new();
    let mut logged = 0usize;
    let mut chunk = [0u8; 4096];
    loop {
        let read = match stderr.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        for &byte in &chunk[..read] {
            if byte != b'\n' {
                if line.len() < STDERR_LINE_BYTES_MAX {
                    line.push(byte);
                }
                continue;
            }
            let text = String::from_utf8_lossy(&line).trim_end().to_owned();
            line.clear();
            if text.is_empty() {
                continue;
            }
            if logged < STDERR_LINES_LOGGED_MAX {
                tracing::warn!(worker = pid, "{text}");
                logged += 1;
            }
            let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
            if kept.len() == STDERR_LINES_KEPT {
                kept.pop_front();
            }
            kept.push_back(text);
        }
    }
    if logged == STDERR_LINES_LOGGED_MAX {
        tracing::warn!(worker = pid, "more lines from this worker were not logged");
    }
}

/// A process's CPU time (user + system) from `/proc/<pid>/stat`, in
/// microseconds; `None` once it is gone.
pub(crate) fn cpu_time_us(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its ')' do not.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Fields 14 and 15 of the whole line: utime and stime, in clock ticks,
    // which Linux reports at 100 per second (USER_HZ) on every architecture.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10_000)
}
