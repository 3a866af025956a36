//! `vitrine bench model FILE --body FILE [--peer URL]`: paid calls of a real
//! model over HTTP, against a peer serving the same model.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::http::{BenchModel, Pace, Setup, http_phase, with_server};
use super::{Common, PhaseFigures};
use crate::client::Client;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ModelFigures {
    pub(crate) cores: usize,
    pub(crate) clients: usize,
    /// The model file's name.
    pub(crate) model: String,
    pub(crate) paid: PhaseFigures,
    /// One call alone, as its answer says.
    pub(crate) latency_ms: f64,
    pub(crate) peer: Option<PhaseFigures>,
    pub(crate) paid_over_peer: Option<f64>,
}

/// The model's paid calls over HTTP, and the peer's calls of the same body
/// with the same clients, one after the other.
pub(crate) async fn against_peer(
    args: &Common,
    data_dir: &Path,
    file: &Path,
    body: &Path,
    peer: Option<&str>,
) -> anyhow::Result<ModelFigures> {
    let model = &BenchModel::from_files(file, body)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("{threads} cores available, {} clients, {} s per phase; {}", args.clients, args.seconds, model.name);
    let (paid, latency_ms) = with_server(data_dir, &[], |server| async move {
        let setup = Setup::new(&server, model).await?;
        // Warm the workers (each loads the model at its first call).
        for _ in 0..server.workers * 2 {
            setup
                .caller
                .send_json(
                    setup.caller.request(reqwest::Method::POST, "/v1/models/creator/paid/infer").json(&setup.call),
                )
                .await?;
        }
        let answer: market::InferResponse = setup
            .caller
            .send_as(setup.caller.request(reqwest::Method::POST, "/v1/models/creator/paid/infer").json(&setup.call))
            .await?;
        let latency_ms = answer.latency_ms;
        anyhow::Ok((setup.phase(args, "paid").await?, latency_ms))
    })
    .await?;
    let mut figures = ModelFigures {
        cores: threads,
        clients: args.clients,
        model: model.name.clone(),
        paid: paid.figures(),
        latency_ms,
        peer: None,
        paid_over_peer: None,
    };
    println!(
        "paid calls over HTTP ({} clients): {} (one call alone: latency_ms {latency_ms:.2})",
        args.clients,
        paid.describe()
    );
    if let Some(url) = peer {
        let peer = Client::new(url.trim_end_matches('/').to_owned(), None)?;
        let pace = Pace { clients: args.clients, duration: Duration::from_secs(args.seconds), per_second: None };
        let peer = http_phase(&[peer], "peer", &model.call, pace).await?;
        figures.peer = Some(peer.figures());
        figures.paid_over_peer = Some(paid.per_second / peer.per_second);
        println!("the peer at {url} ({} clients): {}", args.clients, peer.describe());
        println!("paid / peer = {:.2}", paid.per_second / peer.per_second);
    }
    Ok(figures)
}
