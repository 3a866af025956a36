//! The dashboard as HTTP sees it: pages are HTML under a strict policy, load
//! only the server's own hashed assets, and fail as pages. The browser tests
//! (`scripts/browser-tests`) check what they show.

use crate::support::TestServer;

/// A page or asset: status, a header, and the body.
async fn fetch(url: &str, key: Option<&str>) -> (u16, reqwest::header::HeaderMap, String) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.expect("a body"))
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[tokio::test]
async fn pages_are_html_under_a_strict_policy_and_load_only_hashed_assets() {
    let server = TestServer::start();
    let key = server.api().signup("alice").await;
    for path in ["/", "/?window=all", "/opportunities", "/catalogue?sort=price", "/account", "/log", "/creators/alice"]
    {
        let (status, headers, body) = fetch(&format!("{}{path}", server.url), None).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(header(&headers, "content-type"), "text/html; charset=utf-8");
        let policy = header(&headers, "content-security-policy");
        assert!(policy.contains("default-src 'none'") && policy.contains("script-src 'self'"), "{policy}");
        assert!(!policy.contains("unsafe"), "{policy}");
        assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
        assert!(!body.contains("<script>") && !body.contains(" style="), "{path}: nothing inline");
        // Every asset the page names is served, for good, under its hash.
        for asset in body.split('"').filter(|s| s.starts_with("/assets/")) {
            let (status, headers, _) = fetch(&format!("{}{asset}", server.url), None).await;
            assert_eq!(status, 200, "{asset}");
            assert!(header(&headers, "cache-control").contains("immutable"), "{asset}");
        }
    }
    let (status, _, _) = fetch(&format!("{}/assets/app.js", server.url), None).await;
    assert_eq!(status, 404, "only hashed names are served");

    // Failures are pages with the API's status and message.
    let (status, headers, body) = fetch(&format!("{}/models/alice/nothing", server.url), None).await;
    assert_eq!((status, header(&headers, "content-type")), (404, "text/html; charset=utf-8"));
    assert!(body.contains("model 'alice/nothing' not found"), "{body}");
    let (status, _, body) = fetch(&format!("{}/?window=1y", server.url), None).await;
    assert!(status == 400 && body.contains("window is 24h, 7d, 30d or all"), "{body}");

    // The account panel is a fragment for the key in the header, and only for it.
    let (status, _, body) = fetch(&format!("{}/account/panel", server.url), None).await;
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = fetch(&format!("{}/account/panel?window=7d", server.url), Some(&key)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<h2>alice</h2>") && !body.contains("<html"), "{body}");
}
