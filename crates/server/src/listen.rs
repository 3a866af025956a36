//! Accepting connections, with limits on strangers that `axum::serve` does
//! not give: at most `connections_max` open connections (more wait in the
//! kernel's backlog until one closes), a deadline for a request's headers
//! (`header_read_timeout_ms`), so idle and slow-header ("slowloris")
//! connections are closed instead of held forever, and a deadline for each
//! piece of a request's body (`request_body_idle_timeout_ms`): a body that
//! stalls fails its request with 400. Each request carries its
//! connection's address (`ConnectInfo`) for the per-address limits. On
//! shutdown, connections finish the request in flight and close.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;

/// Serves `router` on `listener` until `shutdown` completes, then lets the
/// connections finish their requests in flight and returns when all are closed.
/// The limits `serve_connections` keeps.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub connections_max: usize,
    pub header_read_timeout: Duration,
    pub body_idle_timeout: Duration,
}

pub async fn serve_connections(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let ConnectionLimits { connections_max, header_read_timeout, body_idle_timeout } = limits;
    let connections = Arc::new(Semaphore::new(connections_max));
    // Dropped when shutdown begins: every connection task watches for it.
    let (stop, stopping) = watch::channel(());
    // Held by every connection task: the server is done when all are dropped.
    let (closed, mut all_closed) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, address) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = router.clone().map_request(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(|body| Body::new(TimeoutBody::new(body_idle_timeout, body)));
            request.extensions_mut().insert(ConnectInfo(address));
            request
        });
        let service = TowerToHyperService::new(service);
        let mut stopping = stopping.clone();
        let closed = closed.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => log_end(result),
                _ = stopping.changed() => {
                    connection.as_mut().graceful_shutdown();
                    log_end(connection.await);
                }
            }
            drop(permit);
            drop(closed);
        });
    }
    drop(stop);
    drop(closed);
    // `changed` fails once every sender (each connection's `closed`) is gone.
    while all_closed.changed().await.is_ok() {}
}

fn log_end(result: Result<(), hyper::Error>) {
    if let Err(error) = result {
        tracing::debug!(%error, "a connection ended with an error");
    }
}
