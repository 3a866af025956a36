use serde_json::json;

use crate::support::TestServer;

#[tokio::test]
async fn signup_returns_a_key_once_that_identifies_the_account() {
    let server = TestServer::start();
    let api = server.api();
    let created = api.post("/v1/accounts", None, json!({"name": "alice"})).await;
    let body = created.ok(201);
    let key = body["api_key"].as_str().unwrap();
    assert!(key.starts_with("vtr_"), "{key}");
    assert_eq!(body["account"]["name"], "alice");

    let account = api.get("/v1/account", Some(key)).await;
    let account = account.ok(200);
    assert_eq!(account["name"], "alice");
    assert_eq!(account["id"], body["account"]["id"]);
    for field in ["balance", "held", "earned_total"] {
        assert_eq!(account[field], "0", "{field}");
    }
    // The key is stored only as a hash: it appears nowhere in the data directory.
    let database = std::fs::read(server.data_dir.join("vitrine.db")).unwrap();
    let wal = std::fs::read(server.data_dir.join("vitrine.db-wal")).unwrap_or_default();
    for bytes in [database, wal] {
        assert!(!bytes.windows(key.len()).any(|w| w == key.as_bytes()), "the plain key is stored");
    }
}

#[tokio::test]
async fn bad_and_missing_keys_are_refused_with_401() {
    let server = TestServer::start();
    let api = server.api();
    let key = api.signup("alice").await;
    api.get("/v1/account", None).await.error(401, "unauthorized");
    api.get("/v1/account", Some("not-a-key")).await.error(401, "unauthorized");
    // A typo in a real key: the checksum catches it.
    let mut typo = key.clone().into_bytes();
    let last = typo.len() - 10;
    typo[last] = if typo[last] == b'a' { b'b' } else { b'a' };
    let message = api.get("/v1/account", Some(std::str::from_utf8(&typo).unwrap())).await.error(401, "unauthorized");
    assert!(message.contains("checksum"), "{message}");
    // A well-formed key that was never issued.
    let other = TestServer::start().api().signup("mallory").await;
    api.get("/v1/account", Some(&other)).await.error(401, "unauthorized");
    // Not a bearer token.
    let request =
        api.request(reqwest::Method::GET, "/v1/account", None).header("authorization", format!("Basic {key}"));
    api.send(request).await.error(401, "unauthorized");
}

#[tokio::test]
async fn account_names_are_checked_and_unique() {
    let server = TestServer::start();
    let api = server.api();
    api.signup("alice").await;
    api.post("/v1/accounts", None, json!({"name": "alice"})).await.error(409, "conflict");
    for bad in ["", "A", "alice!", "-bob", "bob-", "x", "operator", "a-very-long-name-that-goes-past-32"] {
        api.post("/v1/accounts", None, json!({"name": bad})).await.error(422, "invalid_request");
    }
}

#[tokio::test]
async fn malformed_and_oversized_json_get_clear_errors() {
    let server = TestServer::start_with(&[("request_body_bytes_max", "1024")]);
    let api = server.api();
    let send_raw = |body: &'static str| {
        api.request(reqwest::Method::POST, "/v1/accounts", None).header("content-type", "application/json").body(body)
    };
    api.send(send_raw("{\"name\": ")).await.error(400, "invalid_request");
    api.send(send_raw("{\"nom\": \"alice\"}")).await.error(422, "invalid_request");
    api.send(send_raw("[1, 2]")).await.error(422, "invalid_request");
    let no_type = api.request(reqwest::Method::POST, "/v1/accounts", None).body("{\"name\": \"alice\"}");
    api.send(no_type).await.error(400, "invalid_request");
    let huge = json!({"name": "x".repeat(2000)});
    let message = api.post("/v1/accounts", None, huge).await.error(413, "payload_too_large");
    assert!(message.contains("request_body_bytes_max"), "{message}");
}

#[tokio::test]
async fn the_operator_key_is_written_once_with_owner_only_permissions() {
    let server = TestServer::start();
    let path = server.data_dir.join("operator.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let account = server.api().get("/v1/account", Some(&server.operator_key)).await;
    assert_eq!(account.ok(200)["name"], "operator");
    // A restart keeps the same operator and does not rewrite the key.
    let key = server.operator_key.clone();
    let server = server.restart();
    assert_eq!(server.operator_key, key);
    server.api().get("/v1/account", Some(&key)).await.ok(200);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json_errors() {
    let server = TestServer::start();
    let api = server.api();
    api.get("/v1/nowhere", None).await.error(404, "not_found");
    api.send(api.request(reqwest::Method::DELETE, "/v1/accounts", None)).await.error(405, "method_not_allowed");
    assert_eq!(api.get("/v1/health", None).await.ok(200)["status"], "ok");
}

/// One address cannot sign up without end nor guess keys without end: past
/// `signups_per_address_per_hour` and `failed_auth_per_address_per_minute`
/// it gets 429 with Retry-After.
#[tokio::test]
async fn an_address_is_limited_in_sign_ups_and_wrong_keys() {
    let server =
        TestServer::start_with(&[("signups_per_address_per_hour", "3"), ("failed_auth_per_address_per_minute", "4")]);
    let api = server.api();
    let alice = api.signup("alice").await;
    api.signup("bob").await;
    api.signup("carol").await;
    let refused = reqwest::Client::new()
        .post(format!("{}/v1/accounts", api.url))
        .json(&serde_json::json!({"name": "dave"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    // One sign-up comes back every 20 minutes.
    assert_eq!(refused.headers()["retry-after"], "1200");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");

    let wrong = "vtr_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    for _ in 0..4 {
        api.get("/v1/account", Some(wrong)).await.error(401, "unauthorized");
    }
    let message = api.get("/v1/account", Some(wrong)).await.error(429, "rate_limited");
    assert!(message.contains("failed_auth_per_address_per_minute"), "{message}");
    // While the address is locked out, keyed requests from it wait; keyless public reads do not.
    api.get("/v1/account", Some(&alice)).await.error(429, "rate_limited");
    api.get("/v1/models", None).await.ok(200);
}

/// Connections are bounded in number, and one that does not send a whole
/// request's headers in time is closed: idle and slow-header connections
/// cannot hold the server.
#[tokio::test]
async fn idle_and_slow_header_connections_are_closed_and_connections_are_bounded() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};

    let server = TestServer::start_with(&[("connections_max", "3"), ("header_read_timeout_ms", "800")]);
    let address = server.url.trim_start_matches("http://").to_owned();
    // Three connections that send part of a request's headers, and no more.
    let mut slow: Vec<std::net::TcpStream> = (0..3)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(&address).unwrap();
            stream.write_all(b"GET /v1/health HTTP/1.1\r\nHost: vitrine\r\n").unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // All three slots are taken: a fourth connection waits for one.
    let waiting = reqwest::Client::builder().timeout(Duration::from_millis(300)).build().unwrap();
    assert!(waiting.get(format!("{}/v1/health", server.url)).send().await.is_err(), "served past connections_max");
    // The server closes each slow connection at its header deadline...
    let started = Instant::now();
    for stream in &mut slow {
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buffer = [0u8; 512];
        let read = stream.read(&mut buffer).unwrap_or(0);
        let answer = String::from_utf8_lossy(&buffer[..read]);
        assert!(read == 0 || answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    assert!(started.elapsed() < Duration::from_secs(4), "closed only after {:?}", started.elapsed());
    // ...and then serves others.
    server.api().get("/v1/health", None).await.ok(200);
}

/// A request whose body stalls past `request_body_idle_timeout_ms` fails
/// with a clear error instead of holding its connection.
#[tokio::test]
async fn a_stalled_request_body_fails_the_request() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};

    let server = TestServer::start_with(&[("request_body_idle_timeout_ms", "500")]);
    let address = server.url.trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    stream
        .write_all(b"POST /v1/accounts HTTP/1.1\r\nHost: vitrine\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\":")
        .unwrap();
    let started = Instant::now();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    while let Ok(read) = stream.read(&mut buffer) {
        if read == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..read]);
        if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
            break;
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("invalid_request"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(4), "answered only after {:?}", started.elapsed());
}

/// A body trickled a byte at a time cannot push its deadline back: it has
/// `request_body_idle_timeout_ms` plus a second per
/// `transfer_bytes_per_s_min` bytes it sent, not a new timeout per byte.
#[tokio::test]
async fn a_trickled_request_body_fails_at_its_deadline() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};

    let server =
        TestServer::start_with(&[("request_body_idle_timeout_ms", "1000"), ("transfer_bytes_per_s_min", "1024")]);
    let address = server.url.trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    stream
        .write_all(b"POST /v1/accounts HTTP/1.1\r\nHost: vitrine\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    let mut reader = stream.try_clone().unwrap();
    // A byte every 200 ms, each well within a per-piece timeout of a second.
    let trickle = std::thread::spawn(move || {
        for _ in 0..40 {
            if stream.write_all(b" ").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    reader.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    while let Ok(read) = reader.read(&mut buffer) {
        if read == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..read]);
        if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
            break;
        }
    }
    let elapsed = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("too slowly"), "{answer}");
    assert!(answer.contains("transfer_bytes_per_s_min"), "{answer}");
    assert!(elapsed < Duration::from_secs(4), "answered only after {elapsed:?}");
    drop(reader);
    trickle.join().unwrap();
}

/// One network address holds at most `connections_per_address_max`
/// connections: past it, a connection is answered 429 at once, and other
/// addresses are served.
#[tokio::test]
async fn one_address_cannot_hold_every_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let server = TestServer::start_with(&[("connections_max", "20"), ("connections_per_address_max", "5")]);
    let address: std::net::SocketAddr = server.url.trim_start_matches("http://").parse().unwrap();
    let connect_from = |source: [u8; 4]| async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(std::net::SocketAddr::from((source, 0))).unwrap();
        socket.connect(address).await.unwrap()
    };
    let health = |mut stream: tokio::net::TcpStream| async move {
        stream.write_all(b"GET /v1/health HTTP/1.1\r\nHost: vitrine\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_to_string(&mut answer)).await;
        answer
    };
    // Five idle connections from 127.0.0.1 (never sending a request).
    let mut held = vec![];
    for _ in 0..5 {
        held.push(connect_from([127, 0, 0, 1]).await);
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let refused = health(connect_from([127, 0, 0, 1]).await).await;
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
    assert!(refused.contains("connections_per_address_max") && refused.contains("rate_limited"), "{refused}");
    let served = health(connect_from([127, 0, 0, 2]).await).await;
    assert!(served.starts_with("HTTP/1.1 200"), "another address is served: {served}");
    // A connection closed frees its place.
    held.pop();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let served = health(connect_from([127, 0, 0, 1]).await).await;
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
}
