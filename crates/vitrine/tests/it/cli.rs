use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::{BINARY, TestServer, assert_tensor_close, fixture_path};

/// Runs the CLI as a user would, against `server`, with its own client
/// configuration file and no VITRINE_* variables from the outside.
pub(crate) fn vitrine(server: &TestServer, config: &Path, args: &[&str]) -> Output {
    vitrine_at(&server.url, config, args)
}

/// The same, against the server at `url`.
fn vitrine_at(url: &str, config: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(BINARY);
    for (name, _) in std::env::vars() {
        if name.starts_with("VITRINE_") {
            command.env_remove(name);
        }
    }
    command.env("VITRINE_URL", url).env("VITRINE_CLIENT_CONFIG", config).args(args);
    command.output().expect("run vitrine")
}

#[track_caller]
pub(crate) fn success(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&output.stderr));
    stdout
}

#[track_caller]
fn failure(output: &Output) -> String {
    assert!(!output.status.success(), "expected failure, stdout: {}", String::from_utf8_lossy(&output.stdout));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

#[test]
fn a_new_user_signs_up_pushes_a_model_and_runs_it() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("client.toml");
    let run = |args: &[&str]| vitrine(&server, &config, args);

    let signup = success(&run(&["signup", "alice"]));
    assert!(signup.contains("api key (shown once): vtr_"), "{signup}");
    let saved = std::fs::read_to_string(&config).unwrap();
    assert!(saved.contains("vtr_") && saved.contains(&server.url), "{saved}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&config).unwrap().permissions().mode() & 0o777, 0o600);
    }
    assert!(success(&run(&["whoami"])).contains("alice"));

    // Tokens come from the operator, who deposits what alice paid for outside.
    let operator_run = |args: &[&str]| {
        let mut all = vec!["--key", server.operator_key.as_str()];
        all.extend_from_slice(args);
        vitrine(&server, &config, &all)
    };
    let deposited = success(&operator_run(&["deposit", "alice", "1.5", "--reference", "wire-001"]));
    assert!(deposited.contains("deposited 1.5 OPG to alice"), "{deposited}");
    let balance = success(&run(&["balance"]));
    assert!(balance.contains("1.5 OPG"), "{balance}");

    let created =
        success(&run(&["model", "create", "linear", "--task", "regression", "--price", "0.002", "--tag", "demo"]));
    assert!(created.contains("0.002 OPG"), "{created}");
    let linear = fixture_path("linear.onnx");
    let pushed = success(&run(&["model", "push", "alice/linear", linear.to_str().unwrap()]));
    assert!(pushed.contains("version 1") && pushed.contains("x: f32[N, 4]"), "{pushed}");

    // One input from a file, as the README shows.
    let input = dir.path().join("x.json");
    std::fs::write(&input, r#"{"dtype": "f32", "shape": [2, 4], "data": [1, 2, 3, 4, 5, 6, 7, 8]}"#).unwrap();
    let table = success(&run(&["infer", "alice/linear", "--input", &format!("x=@{}", input.display())]));
    assert!(table.contains("y") && table.contains("[2, 1]"), "{table}");
    // All inputs from the reference file, JSON out, checked against onnxruntime.
    let reference_path = fixture_path("linear.expected.json");
    let json =
        success(&run(&["--json", "infer", "alice/linear@1", "--inputs", &format!("@{}", reference_path.display())]));
    let response: Value = serde_json::from_str(&json).unwrap();
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(&reference_path).unwrap()).unwrap();
    assert_tensor_close(&response["outputs"]["y"], &reference["outputs"]["y"], "cli linear.y");
    // Inline JSON works too.
    success(&run(&["infer", "alice/linear", "-i", r#"x={"dtype":"f32","shape":[1,4],"data":[1,2,3,4]}"#]));

    let listed = success(&run(&["models"]));
    assert!(listed.contains("alice/linear") && listed.contains("regression"), "{listed}");
    let listed: Value = serde_json::from_str(&success(&run(&["--json", "models", "--task", "regression"]))).unwrap();
    assert_eq!(listed["items"][0]["name"], "linear");
    let shown = success(&run(&["model", "show", "alice/linear"]));
    assert!(shown.contains("latest version  1") && shown.contains("y: f32[N, 1]"), "{shown}");
    success(&run(&["model", "update", "alice/linear", "--description", "Now documented.", "--price", "0"]));
    assert!(success(&run(&["model", "show", "alice/linear"])).contains("Now documented."));
    assert!(success(&run(&["model", "versions", "alice/linear"])).contains("x: f32[N, 4]"));
    // Now free: its inputs as just the numbers, nested: the shape from the nesting, the dtype the model's.
    let nested = success(&run(&["infer", "alice/linear", "-i", "x=[[1,2,3,4],[5,6,7,8]]"]));
    assert!(nested.contains("[2, 1]"), "{nested}");
    assert!(failure(&run(&["infer", "alice/linear", "-i", "x=[[1,2],[3]]"])).contains("not all 2 long"));
    assert!(failure(&run(&["infer", "alice/linear", "-i", "x=[1,[2,3]]"])).contains("not all equally deep"));
    assert!(failure(&run(&["infer", "alice/linear", "-i", "z=[[1,2,3,4]]"])).contains("its inputs: x"));
    // alice paid the node and treasury shares (20% of 0.002) on each of her three paid calls.
    let transfers = success(&run(&["transfers"]));
    assert!(transfers.contains("inference_node") && transfers.contains("deposit"), "{transfers}");
    assert!(success(&run(&["balance"])).contains("1.4988 OPG"));
    success(&run(&["model", "price", "alice/linear", "0.5"]));
    assert!(success(&run(&["model", "show", "alice/linear"])).contains("0.5 OPG"));

    // Payouts: request, then the operator completes one and rejects another.
    assert!(success(&run(&["payout", "request", "0.25"])).contains("requested"));
    assert!(success(&run(&["payout", "request", "0.5"])).contains("requested"));
    let listed = success(&operator_run(&["payout", "list", "--all", "--state", "requested"]));
    assert!(listed.contains("0.25 OPG") && listed.contains("alice"), "{listed}");
    assert!(success(&operator_run(&["payout", "complete", "1", "--reference", "bank-7"])).contains("completed"));
    assert!(success(&operator_run(&["payout", "reject", "2", "--reason", "kyc"])).contains("rejected"));
    assert!(success(&run(&["balance"])).contains("1.2488 OPG"));
    assert!(failure(&operator_run(&["payout", "complete", "1", "--reference", "again"])).contains("conflict"));

    let downloaded = dir.path().join("copy.onnx");
    success(&run(&["model", "download", "alice/linear", "-o", downloaded.to_str().unwrap()]));
    assert_eq!(std::fs::read(&downloaded).unwrap(), std::fs::read(&linear).unwrap());
}

#[test]
fn cli_errors_are_one_clear_line_and_a_non_zero_exit() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("client.toml");
    let run = |args: &[&str]| vitrine(&server, &config, args);

    assert!(failure(&run(&["whoami"])).contains("vitrine signup"));
    success(&run(&["signup", "alice"]));
    assert!(failure(&run(&["signup", "alice"])).contains("(conflict, HTTP 409)"));
    let missing = failure(&run(&["infer", "alice/nothing", "-i", r#"x={"dtype":"f32","shape":[1],"data":[1]}"#]));
    assert!(missing.contains("not_found"), "{missing}");
    assert!(failure(&run(&["infer", "alice/nothing"])).contains("--input"));
    assert!(failure(&run(&["model", "show", "no-slash"])).contains("owner/name"));
    assert!(failure(&run(&["model", "create", "m", "--task", "other", "--price", "0.0000000001"])).contains("--price"));
    assert!(failure(&run(&["model", "push", "alice/m", "/does/not/exist.onnx"])).contains("cannot open"));
    let unreachable = Command::new(BINARY)
        .env("VITRINE_URL", "http://127.0.0.1:9")
        .env("VITRINE_CLIENT_CONFIG", &config)
        .args(["models"])
        .output()
        .unwrap();
    assert!(failure(&unreachable).contains("cannot reach the server"));
}

/// `vitrine models | head -0`: the reader is gone before the table is
/// printed; the command ends quietly instead of panicking.
#[test]
fn a_closed_pipe_ends_a_command_quietly() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("client.toml");
    success(&vitrine(&server, &config, &["signup", "alice"]));
    success(&vitrine(&server, &config, &["model", "create", "m", "--task", "other"]));
    let mut child = Command::new(BINARY)
        .env("VITRINE_URL", &server.url)
        .env("VITRINE_CLIENT_CONFIG", &config)
        .args(["models"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Close the only reader before the command has its answer to print.
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The benchmark runs end to end, here pinned to one core in a child
/// process (`--cores 1`), and writes its figures as JSON (their values are
/// for people, not asserted: only that each was measured).
#[test]
fn the_benchmark_runs_and_reports_its_ratios() {
    let folder = tempfile::tempdir().unwrap();
    let figures = folder.path().join("figures.json");
    let output = Command::new(BINARY)
        .args(["bench", "--seconds", "1", "--clients", "4", "--realistic-widths", "8,32,4", "--cores", "1"])
        .arg("--figures")
        .arg(&figures)
        .output()
        .expect("run vitrine bench");
    let stdout = success(&output);
    for needle in
        ["raw model", "free calls over HTTP", "paid calls over HTTP", "paid / free", "group commits", "no sockets"]
    {
        assert!(stdout.contains(needle), "{needle} missing from:\n{stdout}");
    }
    assert!(stdout.contains("realistic raw/s"), "the scaling table is missing from:\n{stdout}");
    let figures: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&figures).unwrap()).unwrap();
    let run = &figures["runs"][0];
    assert_eq!(run["cores"], 1, "{figures}");
    assert_eq!(run["figures"]["cores"], 1, "the child saw one core: {figures}");
    let figure = |name: &str| run["figures"].pointer(name).and_then(serde_json::Value::as_f64).unwrap_or(0.0);
    for name in [
        "/tiny/free/per_second",
        "/tiny/paid/per_second",
        "/tiny/paid_without_http/per_second",
        "/tiny/paid_market_only/per_second",
        "/tiny/paid_at_half_rate/p99_ms",
        "/realistic/raw_per_second",
        "/realistic/raw_before_per_second",
        "/realistic/raw_after_per_second",
        "/realistic/paid/per_second",
        "/realistic/paid_over_raw",
        "/realistic/one_worker_paid/per_second",
        "/realistic/one_worker_paid_over_raw",
        "/realistic/one_worker_use/busy",
        "/realistic/paid_use/process_cpu_us_per_call",
        "/realistic/one_worker_use/process_cpu_us_per_call",
        // Four clients, one worker: calls wait, and are written behind the one running.
        "/realistic/one_worker_use/pipelined",
    ] {
        let value = figure(name);
        assert!(value > 0.0, "{name} is {value} in {figures}");
    }
    // The realistic model's raw rate is that of both sides of its paid phase.
    let sides = (figure("/realistic/raw_before_per_second") + figure("/realistic/raw_after_per_second")) / 2.0;
    assert!((figure("/realistic/raw_per_second") - sides).abs() <= 1e-6 * sides, "{figures}");
    let pipelined = figure("/realistic/one_worker_use/pipelined");
    assert!(pipelined <= 1.0, "more calls pipelined than made: {figures}");
}

/// The writer's own benchmark pushes every call's writes through the
/// sequencer and reports the writer's CPU per call, read per thread (a
/// writer whose threads were not found would report zero).
#[test]
fn the_writer_benchmark_reports_its_cpu_per_call() {
    let folder = tempfile::tempdir().unwrap();
    let figures = folder.path().join("figures.json");
    let output = Command::new(BINARY)
        .args(["bench", "ledger", "--calls", "3000", "--clients", "16", "--figures"])
        .arg(&figures)
        .output()
        .expect("run vitrine bench ledger");
    let stdout = success(&output);
    assert!(stdout.contains("writer CPU per call"), "{stdout}");
    let figures: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&figures).unwrap()).unwrap();
    assert_eq!(figures["calls"], 3000, "{figures}");
    for name in ["per_second", "mean_batch", "serial_cpu_us_per_call", "cpu_us_per_call"] {
        let value = figures[name].as_f64().unwrap_or(0.0);
        assert!(value > 0.0, "{name} is {value} in {figures}");
    }
    let refused = Command::new(BINARY).args(["bench", "ledger", "--calls", "0"]).output().unwrap();
    assert!(!refused.status.success());
}

/// A server's log written to a file (not a terminal) is plain text: no
/// colour codes.
#[test]
fn a_log_into_a_file_is_plain_text() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let mut server = Command::new(BINARY)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("ORT_DISABLE_TELEMETRY", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Its first line on standard output says it listens.
    let mut line = String::new();
    std::io::BufReader::new(server.stdout.take().unwrap()).read_line(&mut line).unwrap();
    server.kill().unwrap();
    server.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("INFO"), "{text}");
    assert!(!text.contains('\u{1b}'), "colour codes in a file: {text:?}");
}

/// A bench piped into a reader that goes away (`vitrine bench | head`) ends
/// quietly, as a filter should, and leaves no temporary data directory.
#[test]
fn a_bench_whose_reader_goes_away_ends_quietly_and_leaves_nothing() {
    let temporary = tempfile::tempdir().unwrap();
    let mut bench = Command::new(BINARY)
        .args(["bench", "ledger", "--calls", "2000", "--clients", "8"])
        .env("TMPDIR", temporary.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start vitrine bench");
    drop(bench.stdout.take());
    let output = bench.wait_with_output().expect("the bench ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(temporary.path()).unwrap().map(|entry| entry.unwrap().path()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Amounts are read and shown in the server's own token: a market of 6
/// decimals called XYZ is not an OPG market of 9 (the CLI asks `/v1/health`).
#[tokio::test]
async fn the_cli_speaks_the_servers_token() {
    let server = TestServer::start_with(&[("token_symbol", "XYZ"), ("token_decimals", "6")]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("client.toml");
    let run = |args: &[&str]| vitrine(&server, &config, args);
    success(&run(&["signup", "alice"]));
    let deposited = success(&run(&["--key", &server.operator_key, "deposit", "alice", "1.5", "--reference", "wire-1"]));
    assert!(deposited.contains("deposited 1.5 XYZ to alice"), "{deposited}");
    let account = server.api().get("/v1/admin/accounts/alice", Some(&server.operator_key)).await;
    assert_eq!(account.ok(200)["balance"], "1500000", "1.5 tokens of 6 decimals");
    assert!(success(&run(&["balance"])).contains("1.5 XYZ"));
    let created = success(&run(&["model", "create", "linear", "--task", "regression", "--price", "0.25"]));
    assert!(created.contains("0.25 XYZ"), "{created}");
    let model = server.api().get("/v1/models/alice/linear", None).await;
    assert_eq!(model.ok(200)["price_per_inference"], "250000");
}

#[test]
fn owners_and_the_operator_manage_a_models_life_from_the_cli() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("client.toml");
    let run = |args: &[&str]| vitrine(&server, &config, args);
    let operator_run = |args: &[&str]| {
        let mut all = vec!["--key", server.operator_key.as_str()];
        all.extend_from_slice(args);
        vitrine(&server, &config, &all)
    };
    success(&run(&["signup", "alice"]));
    success(&run(&["model", "create", "m", "--task", "other"]));
    let linear = fixture_path("linear.onnx");
    success(&run(&["model", "push", "alice/m", linear.to_str().unwrap()]));
    // Version 2: another file with the same signature (x: f32[N, 4] → y: f32[N, 1]).
    let other = dir.path().join("other.onnx");
    std::fs::write(&other, runtime::synthetic::mlp(&[4, 3, 1], 1).bytes).unwrap();
    success(&run(&["model", "push", "alice/m", other.to_str().unwrap()]));
    let input = r#"x={"dtype":"f32","shape":[1,4],"data":[1,2,3,4]}"#;

    assert!(success(&run(&["model", "unlist", "alice/m"])).contains("unlisted"));
    // Others no longer find it; its owner still sees it among their own.
    assert!(!success(&operator_run(&["models"])).contains("alice/m"));
    assert!(success(&run(&["model", "show", "alice/m"])).contains("listed          false"));
    success(&run(&["model", "relist", "alice/m"]));
    assert!(success(&operator_run(&["models"])).contains("alice/m"));

    assert!(success(&run(&["model", "yank", "alice/m", "2", "--reason", "bad weights"])).contains("yanked"));
    assert!(success(&run(&["model", "versions", "alice/m"])).contains("yanked: bad weights"));
    assert!(failure(&run(&["infer", "alice/m@2", "-i", input])).contains("(gone, HTTP 410)"));
    let ran: Value = serde_json::from_str(&success(&run(&["--json", "infer", "alice/m", "-i", input]))).unwrap();
    assert_eq!(ran["version"], 1);
    // Without --version, download takes the latest: version 2 is yanked, so 1.
    let downloaded = dir.path().join("latest.onnx");
    success(&run(&["model", "download", "alice/m", "-o", downloaded.to_str().unwrap()]));
    assert_eq!(std::fs::read(&downloaded).unwrap(), std::fs::read(&linear).unwrap());
    success(&run(&["model", "unyank", "alice/m", "2"]));

    let down = success(&operator_run(&["takedown", "add", "alice/m", "--reason", "reported"]));
    assert!(down.contains("taken down: reported"), "{down}");
    assert!(success(&run(&["model", "show", "alice/m"])).contains("taken down by the operator"));
    assert!(failure(&run(&["infer", "alice/m", "-i", input])).contains("reported"));
    assert!(failure(&run(&["takedown", "restore", "alice/m"])).contains("forbidden"));
    assert!(success(&operator_run(&["takedown", "restore", "alice/m"])).contains("restored"));
    success(&run(&["infer", "alice/m", "-i", input]));

    assert!(failure(&run(&["model", "delete", "alice/m"])).contains("--yes"));
    assert!(success(&run(&["model", "delete", "alice/m", "--yes"])).contains("store 0 bytes"));
    assert!(failure(&run(&["model", "show", "alice/m"])).contains("(gone, HTTP 410)"));
}

/// A TCP forwarder to `target` that passes `budget` bytes from clients to
/// the server in all, then closes every connection and takes no more: a
/// link that breaks for good in the middle of an upload.
async fn breaking_link(target: &str, budget: u64) -> String {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let target = target.trim_start_matches("http://").to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let left = Arc::new(AtomicU64::new(budget));
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            if left.load(Ordering::SeqCst) == 0 {
                continue;
            }
            let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else { continue };
            let (mut from_client, mut to_client) = inbound.into_split();
            let (mut from_server, mut to_server) = outbound.into_split();
            let left = left.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 16 << 10];
                while let Ok(read) = from_client.read(&mut buffer).await {
                    let before = left
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| Some(left.saturating_sub(read as u64)))
                        .unwrap_or(0);
                    let allowed = before.min(read as u64) as usize;
                    if read == 0 || to_server.write_all(&buffer[..allowed]).await.is_err() || allowed < read {
                        left.store(0, Ordering::SeqCst);
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_that_breaks_off_resumes_where_it_stopped_when_run_again() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("client.toml");
    success(&vitrine(&server, &config, &["signup", "alice"]));
    success(&vitrine(&server, &config, &["model", "create", "big", "--task", "other"]));
    // About 4 MB, in pieces of 512 KiB.
    let model = runtime::synthetic::mlp(&[64, 4096, 180], 4).bytes;
    let file = dir.path().join("big.onnx");
    std::fs::write(&file, &model).unwrap();
    let file = file.to_str().unwrap();
    // The link breaks after 1.3 MB: two pieces and part of a third arrive.
    let link = breaking_link(&server.url, 1_300_000).await;
    let push: Vec<String> =
        ["model", "push", "alice/big", file, "--piece-bytes", "524288"].iter().map(|a| a.to_string()).collect();
    let run_at = |url: String| {
        let (config, push) = (config.clone(), push.clone());
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = push.iter().map(String::as_str).collect();
            vitrine_at(&url, &config, &args)
        })
    };
    let broken = run_at(link).await.unwrap();
    let said = String::from_utf8_lossy(&broken.stderr).into_owned();
    assert!(!broken.status.success(), "the push went through a broken link: {said}");
    assert!(said.contains("run the same command again to resume"), "{said}");

    // Run again, on a working link: it resumes after what arrived.
    let again = run_at(server.url.clone()).await.unwrap();
    let said = String::from_utf8_lossy(&again.stderr).into_owned();
    let pushed = success(&again);
    let resumed_at: u64 = said
        .split("resuming the upload at byte ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|offset| offset.parse().ok())
        .unwrap_or_else(|| panic!("it started over: {said}"));
    assert!(resumed_at >= 2 * 524_288, "resumed at {resumed_at}");
    let sha256 = domain::Sha256::digest(&model).to_hex();
    assert!(pushed.contains("version 1") && pushed.contains(&sha256), "{pushed}");
    // Nothing is left to resume.
    let state = std::fs::read_to_string(dir.path().join("uploads.json")).unwrap();
    assert_eq!(state.trim(), "{}");
}
