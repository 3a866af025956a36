//! Test support: a real `vitrine serve` process on port 0 with a fresh data
//! directory, and a small HTTP helper whose answers read as data.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

pub const BINARY: &str = env!("CARGO_BIN_EXE_vitrine");

pub fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models").join(name)
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// The fixtures with reference outputs from onnxruntime.
pub const REFERENCE_FIXTURES: &[&str] = &["linear", "mlp", "two_inputs", "embedding", "conv", "mnist_mlp"];

/// A running server. Killed when dropped; its data directory goes with it
/// unless [`TestServer::stop`] hands the directory on for a restart.
pub struct TestServer {
    pub url: String,
    pub operator_key: String,
    pub data_dir: PathBuf,
    child: Child,
    settings: Vec<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

/// The engine test servers run models on unless their settings name one:
/// tract, or ONNX Runtime with `VITRINE_TEST_ALL_ON_ONNXRUNTIME` (its
/// library), as `scripts/test`'s second run of the suite sets it.
pub fn engine_under_test() -> &'static str {
    if std::env::var_os("VITRINE_TEST_ALL_ON_ONNXRUNTIME").is_some() { "onnxruntime" } else { "tract" }
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::start_with(&[])
    }

    /// Starts with extra settings, as `--set key=value` flags.
    pub fn start_with(settings: &[(&str, &str)]) -> TestServer {
        let dir = tempfile::tempdir().expect("temporary directory");
        let data_dir = dir.path().join("data");
        let settings = settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        TestServer::spawn(data_dir, settings, Some(dir))
    }

    /// Starts with extra settings and environment variables (`AWS_*`: the
    /// environment is otherwise kept from the server).
    pub fn start_with_env(settings: &[(&str, &str)], env: &[(String, String)]) -> TestServer {
        let dir = tempfile::tempdir().expect("temporary directory");
        let data_dir = dir.path().join("data");
        let settings = settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        TestServer::spawn_with_env(data_dir, settings, Some(dir), env)
    }

    /// Starts on an existing data directory (kept by the caller).
    pub fn on_data_dir(data_dir: PathBuf) -> TestServer {
        TestServer::spawn(data_dir, vec![], None)
    }

    /// Starts on an existing data directory with extra settings.
    pub fn on_data_dir_with(data_dir: PathBuf, settings: &[(&str, &str)]) -> TestServer {
        let settings = settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        TestServer::spawn(data_dir, settings, None)
    }

    fn spawn(data_dir: PathBuf, settings: Vec<(String, String)>, dir: Option<tempfile::TempDir>) -> TestServer {
        TestServer::spawn_with_env(data_dir, settings, dir, &[])
    }

    fn spawn_with_env(
        data_dir: PathBuf,
        settings: Vec<(String, String)>,
        dir: Option<tempfile::TempDir>,
        env: &[(String, String)],
    ) -> TestServer {
        let mut command = Command::new(BINARY);
        command.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(&data_dir);
        for (key, value) in &settings {
            command.arg("--set").arg(format!("{key}={value}"));
        }
        // The whole suite on ONNX Runtime, for a look at what differs.
        if let Ok(library) = std::env::var("VITRINE_TEST_ALL_ON_ONNXRUNTIME")
            && !settings.iter().any(|(key, _)| key == "engine")
        {
            command.arg("--set").arg(format!("onnxruntime_library={library}"));
        }
        // Keep the environment from changing the server under test.
        for (name, _) in std::env::vars() {
            if name.starts_with("VITRINE_") || name.starts_with("AWS_") {
                command.env_remove(name);
            }
        }
        command.envs(env.iter().map(|(name, value)| (name, value)));
        command.env("RUST_LOG", "warn");
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("start vitrine serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            let line = lines.next().expect("the server exited before listening").expect("read stdout");
            if let Some(url) = line.strip_prefix("vitrine listening on ") {
                break url.to_owned();
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        // Only the node that created the market has the operator's key.
        let operator_key = std::fs::read_to_string(data_dir.join("operator.key")).unwrap_or_default().trim().to_owned();
        TestServer { url, operator_key, data_dir, child, settings, _dir: dir }
    }

    pub fn api(&self) -> Api {
        Api { url: self.url.clone(), http: reqwest::Client::new() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops with SIGTERM (graceful) and waits; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        signal(self.child.id(), "TERM");
        self.child.wait().expect("wait for the server")
    }

    /// Waits for a server that was already signalled to exit.
    pub fn terminate_wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().expect("wait for the server")
    }

    /// Stops (SIGTERM) and starts again on the same data directory.
    pub fn restart(mut self) -> TestServer {
        let status = self.terminate();
        assert!(status.success(), "graceful shutdown exited with {status}");
        let dir = self._dir.take();
        let settings = std::mem::take(&mut self.settings);
        TestServer::spawn(self.data_dir.clone(), settings, dir)
    }

    /// Stops (SIGTERM) and starts again on the same data directory with
    /// these environment variables (crash injection, say).
    pub fn restart_with_env(mut self, env: &[(String, String)]) -> TestServer {
        let status = self.terminate();
        assert!(status.success(), "graceful shutdown exited with {status}");
        let dir = self._dir.take();
        let settings = std::mem::take(&mut self.settings);
        TestServer::spawn_with_env(self.data_dir.clone(), settings, dir, env)
    }

    /// Starts again a server that was already stopped (with `terminate`).
    pub fn restart_stopped(mut self) -> TestServer {
        let dir = self._dir.take();
        let settings = std::mem::take(&mut self.settings);
        TestServer::spawn(self.data_dir.clone(), settings, dir)
    }

    /// Kills the server with SIGKILL (no shutdown at all) and starts it again
    /// on the same data directory.
    pub fn kill_and_restart(mut self) -> TestServer {
        signal(self.child.id(), "KILL");
        let _ = self.child.wait();
        let dir = self._dir.take();
        let settings = std::mem::take(&mut self.settings);
        TestServer::spawn(self.data_dir.clone(), settings, dir)
    }

    /// Files under the data directory's blob folder (not counting temporaries).
    pub fn blob_files(&self) -> usize {
        let root = self.data_dir.join("blobs");
        std::fs::read_dir(&root)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name() != "tmp")
            .map(|e| std::fs::read_dir(e.path()).unwrap().count())
            .sum()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().expect("run kill");
    assert!(status.success());
}

/// An HTTP answer: status and JSON body (`Value::Null` when not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    /// Asserts a JSON error with this status and code; returns the message.
    #[track_caller]
    pub fn error(&self, status: u16, code: &str) -> String {
        assert_eq!((self.status, self.body["error"]["code"].as_str()), (status, Some(code)), "answer: {}", self.body);
        self.body["error"]["message"].as_str().unwrap_or_default().to_owned()
    }

    #[track_caller]
    pub fn ok(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "answer: {}", self.body);
        &self.body
    }
}

#[derive(Debug, Clone)]
pub struct Api {
    pub url: String,
    pub http: reqwest::Client,
}

impl Api {
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        self.try_send(request).await.expect("the server answers")
    }

    /// The answer, or `None` if the server did not give one (it is gone).
    pub async fn try_send(&self, request: reqwest::RequestBuilder) -> Option<Answer> {
        let response = request.send().await.ok()?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.ok()?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Some(Answer { status, body })
    }

    /// A plain-text answer's body (the log's checkpoint).
    pub async fn text(&self, path: &str) -> String {
        let response = self.request(reqwest::Method::GET, path, None).send().await.expect("the server answers");
        response.text().await.expect("read body")
    }

    /// A counter or gauge of the server's `/metrics`.
    pub async fn metric(&self, name: &str) -> u64 {
        let text = self.text("/metrics").await;
        let line = text.lines().find(|line| line.split(' ').next() == Some(name));
        line.and_then(|line| line.split(' ').nth(1)?.parse().ok()).unwrap_or_else(|| panic!("{name} in {text}"))
    }

    pub fn request(&self, method: reqwest::Method, path: &str, key: Option<&str>) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.url));
        match key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    pub async fn get(&self, path: &str, key: Option<&str>) -> Answer {
        self.send(self.request(reqwest::Method::GET, path, key)).await
    }

    pub async fn post(&self, path: &str, key: Option<&str>, body: Value) -> Answer {
        self.send(self.request(reqwest::Method::POST, path, key).json(&body)).await
    }

    pub async fn patch(&self, path: &str, key: Option<&str>, body: Value) -> Answer {
        self.send(self.request(reqwest::Method::PATCH, path, key).json(&body)).await
    }

    pub async fn delete(&self, path: &str, key: Option<&str>) -> Answer {
        self.send(self.request(reqwest::Method::DELETE, path, key)).await
    }

    pub async fn upload(&self, path: &str, key: Option<&str>, bytes: Vec<u8>) -> Answer {
        let request = self
            .request(reqwest::Method::POST, path, key)
            .header("content-type", "application/octet-stream")
            .body(bytes);
        self.send(request).await
    }

    /// Signs up and returns the API key.
    pub async fn signup(&self, name: &str) -> String {
        let answer = self.post("/v1/accounts", None, json!({"name": name})).await;
        answer.ok(201)["api_key"].as_str().expect("api_key").to_owned()
    }

    /// Creates `owner/name` (public, free) and uploads `fixture` as version 1.
    pub async fn model_with_version(&self, key: &str, owner: &str, name: &str, fixture_name: &str) -> Value {
        self.post("/v1/models", Some(key), json!({"name": name, "task": "other"})).await.ok(201);
        let path = format!("/v1/models/{owner}/{name}/versions");
        self.upload(&path, Some(key), fixture(&format!("{fixture_name}.onnx"))).await.ok(201).clone()
    }
}

/// Asserts two tensors (`{"dtype","shape","data"}`) agree, floats within 1e-5.
#[track_caller]
pub fn assert_tensor_close(actual: &Value, expected: &Value, what: &str) {
    assert_eq!(actual["dtype"], expected["dtype"], "{what}: dtype");
    assert_eq!(actual["shape"], expected["shape"], "{what}: shape");
    let (a, e) = (actual["data"].as_array().unwrap(), expected["data"].as_array().unwrap());
    assert_eq!(a.len(), e.len(), "{what}: element count");
    for (index, (a, e)) in a.iter().zip(e).enumerate() {
        let (a, e) = (a.as_f64().unwrap(), e.as_f64().unwrap());
        assert!((a - e).abs() <= 1e-5 * e.abs().max(1.0), "{what}[{index}]: {a} vs reference {e}");
    }
}

/// The digest of f32 tensors (given in name order) in the canonical form
/// the leaf's documentation gives, built here from that text alone.
pub fn canonical_f32s(tensors: &[(&str, &[u64], &[f32])]) -> String {
    let mut bytes = b"vitrine-tensors1".to_vec();
    bytes.extend_from_slice(&(tensors.len() as u32).to_be_bytes());
    for (name, shape, data) in tensors {
        bytes.extend_from_slice(&(name.len() as u16).to_be_bytes());
        bytes.extend_from_slice(name.as_bytes());
        bytes.extend_from_slice(b"\x03f32");
        bytes.push(shape.len() as u8);
        shape.iter().for_each(|d| bytes.extend_from_slice(&d.to_be_bytes()));
        bytes.extend_from_slice(&(data.len() as u64 * 4).to_be_bytes());
        data.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
    }
    domain::Sha256::digest(&bytes).to_hex()
}
