//! Accepting connections, with limits on strangers that `axum::serve` does
//! not give:
//!
//! - at most `connections_max` open connections (more wait in the kernel's
//!   backlog until one closes), and at most `connections_per_address_max`
//!   from one network address (more are answered 429 and closed at once),
//!   so one address cannot hold every connection;
//! - a deadline for a request's headers (`header_read_timeout_ms`), so idle
//!   and slow-header ("slowloris") connections are closed instead of held
//!   forever;
//! - a deadline for a request's body that a trickle cannot push back: the
//!   body may take `request_body_idle_timeout_ms` plus one second per
//!   `transfer_bytes_per_s_min` bytes received (`PacedBody`); past it the
//!   request fails with 400;
//! - a deadline for writing answers (`WriteDeadline`): once a write blocks
//!   (the client does not read), the connection must drain
//!   `transfer_bytes_per_s_min` × `response_write_idle_timeout_ms` bytes
//!   within `response_write_idle_timeout_ms`, or it is closed, and the
//!   answer it held is dropped.
//!
//! Each request carries its connection's address (`ConnectInfo`) for the
//! per-address limits. On shutdown, connections finish the request in
//! flight and close.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::IntoResponse;
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use crate::error::ApiError;
use crate::limits::Tally;

/// The limits `serve_connections` keeps.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub connections_max: usize,
    pub connections_per_address_max: usize,
    pub header_read_timeout: Duration,
    pub body_idle_timeout: Duration,
    pub response_write_idle_timeout: Duration,
    /// The slowest a body may arrive or an answer drain, on average.
    pub transfer_bytes_per_s_min: u64,
}

/// Serves `router` on `listener` until `shutdown` completes, then lets the
/// connections finish their requests in flight and returns when all are closed.
pub async fn serve_connections(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let connections = Arc::new(Semaphore::new(limits.connections_max));
    // Open connections per network address.
    let per_address: Arc<Tally<IpAddr>> = Arc::default();
    let per_address_max = limits.connections_per_address_max as u64;
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
        let Some(address_permit) = per_address.take_below(address.ip(), 1, per_address_max) else {
            tokio::spawn(async move {
                refuse_connection(stream, limits.connections_per_address_max).await;
                drop(permit);
            });
            continue;
        };
        let service = router.clone().map_request(move |request: hyper::Request<Incoming>| {
            let mut request = request
                .map(|body| Body::new(PacedBody::new(body, limits.body_idle_timeout, limits.transfer_bytes_per_s_min)));
            request.extensions_mut().insert(ConnectInfo(address));
            request
        });
        let service = TowerToHyperService::new(service);
        let mut stopping = stopping.clone();
        let closed = closed.clone();
        let stream = WriteDeadline::new(stream, limits.response_write_idle_timeout, limits.transfer_bytes_per_s_min);
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => log_end(result),
                _ = stopping.changed() => {
                    connection.as_mut().graceful_shutdown();
                    log_end(connection.await);
                }
            }
            drop(address_permit);
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

/// Answers a connection past its address's limit with 429 and closes it;
/// a second at most, so a refused stranger holds nothing.
async fn refuse_connection(stream: TcpStream, per_address_max: usize) {
    let service = hyper::service::service_fn(move |_: hyper::Request<Incoming>| async move {
        let refusal = ApiError::rate_limited(
            format!(
                "this network address already has {per_address_max} connections open, the limit \
                 connections_per_address_max"
            ),
            1,
        );
        Ok::<_, std::convert::Infallible>(refusal.into_response())
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).keep_alive(false);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(Duration::from_secs(1), connection).await;
}

/// Why a request's body failed: it came too slowly.
#[derive(Debug, thiserror::Error)]
#[error(
    "the request body arrived too slowly ({received} bytes in {elapsed_ms} ms; the limits \
     request_body_idle_timeout_ms and transfer_bytes_per_s_min)"
)]
pub struct BodyTooSlow {
    received: u64,
    elapsed_ms: u128,
}

/// A request body with a deadline that grows with what arrives: `idle` from
/// the first poll, plus one second per `bytes_per_s_min` bytes received. A
/// body sent at least that fast never fails; a trickle (a byte every few
/// seconds) cannot push the deadline back by more than it sends.
struct PacedBody {
    inner: Incoming,
    started: Option<Instant>,
    idle: Duration,
    bytes_per_s_min: u64,
    received: u64,
    /// Armed while the inner body has nothing to give.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl PacedBody {
    fn new(inner: Incoming, idle: Duration, bytes_per_s_min: u64) -> PacedBody {
        PacedBody { inner, started: None, idle, bytes_per_s_min, received: 0, sleep: None }
    }

    fn deadline(&self, started: Instant) -> Instant {
        let earned = match self.bytes_per_s_min {
            0 => Duration::MAX,
            rate => Duration::from_secs_f64(self.received as f64 / rate as f64),
        };
        started.checked_add(self.idle.saturating_add(earned)).unwrap_or_else(|| started + Duration::from_secs(1 << 32))
    }
}

impl hyper::body::Body for PacedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let started = *this.started.get_or_insert_with(Instant::now);
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.sleep = None;
                if let Some(Ok(frame)) = &frame
                    && let Some(data) = frame.data_ref()
                {
                    this.received += data.len() as u64;
                }
                Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
            }
            Poll::Pending => {
                let deadline = this.deadline(started);
                let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if sleep.deadline() != deadline {
                    sleep.as_mut().reset(deadline);
                }
                ready!(sleep.as_mut().poll(cx));
                let elapsed_ms = started.elapsed().as_millis();
                Poll::Ready(Some(Err(Box::new(BodyTooSlow { received: this.received, elapsed_ms }))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection whose writes must make progress: once a write blocks, at
/// least `idle × bytes_per_s_min` bytes (one byte at least) must be written
/// within `idle`, or the next write fails with `TimedOut`, hyper closes the
/// connection, and the answer it was sending is dropped. A client that
/// reads an answer at least that fast never notices; one that stops
/// reading, or reads a few bytes now and then, loses the connection.
struct WriteDeadline {
    stream: TcpStream,
    idle: Duration,
    /// Bytes a blocked connection must drain within `idle`.
    progress_bytes_min: u64,
    /// Since the first blocked write not yet followed by enough progress:
    /// the deadline, and the bytes written since it was armed.
    stalled: Option<(Pin<Box<Sleep>>, u64)>,
}

impl WriteDeadline {
    fn new(stream: TcpStream, idle: Duration, bytes_per_s_min: u64) -> WriteDeadline {
        let progress_bytes_min = (idle.as_secs_f64() * bytes_per_s_min as f64).max(1.0) as u64;
        WriteDeadline { stream, idle, progress_bytes_min, stalled: None }
    }

    /// Passes a write's outcome on, counting its progress against a stall,
    /// and turns a write still pending past the stall's deadline into
    /// `TimedOut`.
    fn within_deadline(&mut self, cx: &mut Context<'_>, written: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match written {
            Poll::Ready(Ok(bytes)) => {
                if let Some((_, progress)) = &mut self.stalled {
                    *progress += bytes as u64;
                    if *progress >= self.progress_bytes_min {
                        self.stalled = None;
                    }
                }
                Poll::Ready(Ok(bytes))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                let idle = self.idle;
                let (sleep, _) = self.stalled.get_or_insert_with(|| (Box::pin(tokio::time::sleep(idle)), 0));
                ready!(sleep.as_mut().poll(cx));
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client did not read its answer (response_write_idle_timeout_ms)",
                )))
            }
        }
    }
}

impl AsyncRead for WriteDeadline {
    /// A new request ends the last answer's stall: hyper reads a connection
    /// only between requests, once their answers are written.
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = ready!(Pin::new(&mut self.stream).poll_read(cx, buf));
        if buf.filled().len() > before {
            self.stalled = None;
        }
        Poll::Ready(read)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.within_deadline(cx, written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.within_deadline(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
