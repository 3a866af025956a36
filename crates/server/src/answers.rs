//! Answers held in memory until their clients read them. An answer's bytes
//! stay in this process from the moment it is built until the last of them
//! is written to its socket, however long its client takes to read, and the
//! client, not the server, chooses both: a model's outputs of millions of
//! elements, a page of a model with a long signature. So the bytes of
//! answers not yet sent are counted, in all (`unsent_answer_bytes_max`) and
//! per caller (`unsent_answer_bytes_per_key_max`), and past either new work
//! waits for them to drain: 503 (in all) or 429 (one key), with
//! `Retry-After`. An answer whose client stops reading is dropped after a
//! deadline (`listen.rs`'s `WriteDeadline`), which gives its bytes back.
//!
//! Counted answers are those of at least `COUNTED_ANSWER_BYTES_MIN` bytes:
//! smaller ones cannot add up to much within the connection limits, and
//! the paid path's usual answers stay free of the bookkeeping.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::{Body as _, Bytes, Frame, SizeHint};

use crate::error::{ApiError, ApiResult};
use crate::limits::{Taken, Tally};

/// Answers smaller than this are not counted.
pub const COUNTED_ANSWER_BYTES_MIN: u64 = 64 * 1024;
/// A counted answer is handed to the connection in pieces of this size, so
/// that it is still counted while the connection writes it.
const PIECE_BYTES: usize = 64 * 1024;

/// The bytes of answers built and not yet written to their sockets.
#[derive(Debug)]
pub struct UnsentAnswers {
    /// `unsent_answer_bytes_max`; 0: no limit.
    total_max: u64,
    /// `unsent_answer_bytes_per_key_max`; 0: no limit.
    per_key_max: u64,
    total: AtomicU64,
    /// By caller.
    by_account: Arc<Tally<i64>>,
}

/// Which caller an answer is for: a handler puts it in the response's
/// extensions, and the answer counts against that caller too.
#[derive(Debug, Clone, Copy)]
pub struct AnswerFor(pub i64);

impl AnswerFor {
    /// Marks `answer` as `account`'s when it is large enough to be counted
    /// (a small one is left as it is: no extensions to allocate).
    pub fn mark(account: i64, mut answer: Response) -> Response {
        if answer.body().size_hint().exact().is_some_and(|size| size >= COUNTED_ANSWER_BYTES_MIN) {
            answer.extensions_mut().insert(AnswerFor(account));
        }
        answer
    }
}

impl UnsentAnswers {
    pub fn new(total_max: u64, per_key_max: u64) -> UnsentAnswers {
        UnsentAnswers { total_max, per_key_max, total: AtomicU64::new(0), by_account: Arc::default() }
    }

    /// Bytes of answers unsent, in all.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Whether new work may start: 503 while the answers unsent in all are
    /// at their limit.
    pub fn admit(&self) -> ApiResult<()> {
        let total = self.total();
        if self.total_max > 0 && total >= self.total_max {
            return Err(ApiError::unavailable(
                format!(
                    "{total} bytes of answers are waiting for their clients to read them, the limit \
                     unsent_answer_bytes_max; try again shortly"
                ),
                1,
            ));
        }
        Ok(())
    }

    /// Whether `account` may start a call: as [`UnsentAnswers::admit`], and
    /// 429 while that caller's own unsent answers are at their limit.
    pub fn admit_caller(&self, account: i64) -> ApiResult<()> {
        self.admit()?;
        // A caller's unsent answers are part of the total: below the limit
        // in all, nobody is at theirs, and the paid path takes no lock.
        if self.per_key_max == 0 || self.total() < self.per_key_max {
            return Ok(());
        }
        let unsent = self.by_account.held(account);
        if unsent >= self.per_key_max {
            return Err(ApiError::rate_limited(
                format!(
                    "this key's clients have not read {unsent} bytes of its answers yet, the limit \
                     unsent_answer_bytes_per_key_max; read them first"
                ),
                1,
            ));
        }
        Ok(())
    }

    /// `bytes` as a body counted until it is written (or dropped).
    fn body(self: &Arc<Self>, bytes: Bytes, account: Option<i64>) -> CountedBody {
        let counted = bytes.len() as u64;
        self.total.fetch_add(counted, Ordering::Relaxed);
        // Counted whatever the caller holds: the answer exists already.
        let caller = account.and_then(|account| self.by_account.take_below(account, counted, 0));
        CountedBody { remaining: bytes, counted, _caller: caller, answers: self.clone() }
    }
}

/// An answer's bytes, given to the connection piece by piece and counted
/// until the last piece is taken (by then all but the socket's buffers are
/// written) or the connection drops it.
struct CountedBody {
    remaining: Bytes,
    counted: u64,
    /// What it counts against its caller, given back with it.
    _caller: Option<Taken<i64>>,
    answers: Arc<UnsentAnswers>,
}

impl hyper::body::Body for CountedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.remaining.is_empty() {
            return Poll::Ready(None);
        }
        let piece = self.remaining.len().min(PIECE_BYTES);
        Poll::Ready(Some(Ok(Frame::data(self.remaining.split_to(piece)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining.len() as u64)
    }
}

impl Drop for CountedBody {
    fn drop(&mut self) {
        self.answers.total.fetch_sub(self.counted, Ordering::Relaxed);
    }
}

/// Paths served whatever the answers unsent: how an operator sees what is
/// happening.
pub const ALWAYS_SERVED: [&str; 2] = ["/v1/health", "/metrics"];

/// The middleware: refuses new requests (503) while the answers unsent in
/// all are at their limit, and counts every answer of
/// `COUNTED_ANSWER_BYTES_MIN` bytes or more that is in memory whole (a
/// handler's JSON, page or tensors; a model file is streamed, not counted)
/// until it is written.
pub async fn count_answers(State(answers): State<Arc<UnsentAnswers>>, request: Request, next: Next) -> Response {
    if !ALWAYS_SERVED.contains(&request.uri().path())
        && let Err(refusal) = answers.admit()
    {
        return refusal.into_response();
    }
    let response = next.run(request).await;
    let size = response.body().size_hint().exact().unwrap_or(0);
    let account = response.extensions().get::<AnswerFor>().map(|owner| owner.0);
    let in_memory = account.is_some() || is_text(&response);
    if size < COUNTED_ANSWER_BYTES_MIN || !in_memory {
        return response;
    }
    let (parts, body) = response.into_parts();
    // The body is whole in memory already: this reads no further than it.
    match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => Response::from_parts(parts, Body::new(answers.body(bytes, account))),
        Err(error) => ApiError::internal(format!("an answer's body failed: {error}")).into_response(),
    }
}

/// JSON, HTML, CSV and other text: what handlers build in memory.
fn is_text(response: &Response) -> bool {
    let Some(kind) = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    kind.starts_with("application/json") || kind.starts_with("text/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll(body: &mut CountedBody) -> Option<Bytes> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match Pin::new(body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => frame.into_data().ok(),
            Poll::Ready(None) => None,
            Poll::Pending => unreachable!("a counted body is in memory"),
        }
    }

    #[test]
    fn answers_count_until_written_or_dropped_in_all_and_per_caller() {
        let answers = Arc::new(UnsentAnswers::new(300_000, 200_000));
        let mut first = answers.body(Bytes::from(vec![1u8; 150_000]), Some(7));
        assert_eq!(answers.total(), 150_000);
        answers.admit_caller(7).unwrap();
        let second = answers.body(Bytes::from(vec![2u8; 60_000]), Some(7));
        let refusal = answers.admit_caller(7).unwrap_err();
        assert_eq!((refusal.status.as_u16(), refusal.code), (429, "rate_limited"));
        answers.admit_caller(8).unwrap();
        let third = answers.body(Bytes::from(vec![3u8; 100_000]), None);
        let refusal = answers.admit_caller(8).unwrap_err();
        assert_eq!((refusal.status.as_u16(), refusal.code), (503, "unavailable"));

        // Given in pieces, counted until the last is taken; then released.
        let mut pieces = vec![];
        while let Some(piece) = poll(&mut first) {
            assert!(piece.len() <= PIECE_BYTES);
            pieces.push(piece);
        }
        assert_eq!(pieces.concat(), vec![1u8; 150_000]);
        assert!(first.is_end_stream());
        drop(first);
        assert_eq!(answers.total(), 160_000);
        answers.admit_caller(7).unwrap();
        // A dropped answer (its connection closed) gives its bytes back too.
        drop((second, third));
        assert_eq!(answers.total(), 0);
        assert!(answers.by_account.is_empty(), "callers without unsent answers are forgotten");
        let unlimited = Arc::new(UnsentAnswers::new(0, 0));
        let _held = unlimited.body(Bytes::from(vec![0u8; 1 << 20]), Some(1));
        unlimited.admit_caller(1).unwrap();
    }
}
