//! Last stage: sinks. Events arrive in order; each waits (boundedly) for its
//! executable hash, then is written to every sink in that same order.

mod jsonl;

use std::{sync::Arc, time::Duration};

use anyhow::Result;
use futures::{stream::FuturesOrdered, StreamExt};
use tokio::sync::mpsc;

pub use jsonl::JsonlSink;

use crate::{
    events::{Emitted, Event},
    metrics::Metrics,
};

/// An output as given on the command line: `jsonl:-` or `jsonl:/path/file.jsonl`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkSpec {
    JsonlStdout,
    JsonlFile(std::path::PathBuf),
}

impl std::str::FromStr for SinkSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (scheme, target) = s.split_once(':').ok_or_else(|| {
            format!(
                "output {s:?}: expected SCHEME:TARGET, e.g. jsonl:- or jsonl:/var/log/mcpwatch/events.jsonl"
            )
        })?;
        match (scheme, target) {
            ("jsonl", "-") => Ok(Self::JsonlStdout),
            ("jsonl", "") => Err(format!("output {s:?}: jsonl needs a path or -")),
            ("jsonl", path) => Ok(Self::JsonlFile(path.into())),
            (other, _) => Err(format!("output {s:?}: unknown sink {other:?} (supported: jsonl)")),
        }
    }
}

/// The same text `from_str` accepts, for `print-config`.
impl std::fmt::Display for SinkSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::JsonlStdout => f.write_str("jsonl:-"),
            Self::JsonlFile(path) => write!(f, "jsonl:{}", path.display()),
        }
    }
}

/// Events resolving their hashes at once; beyond this the stage stops taking input,
/// which backs up into the pipeline's bounded channels.
const MAX_IN_FLIGHT: usize = 1024;

pub struct OutputStage {
    pub sinks: Vec<JsonlSink>,
    pub metrics: Arc<Metrics>,
    /// How long an event may wait for its executable's hash before going out without it.
    pub hash_wait: Duration,
}

impl OutputStage {
    pub async fn open(specs: &[SinkSpec], metrics: Arc<Metrics>, hash_wait: Duration) -> Result<Self> {
        let mut sinks = Vec::new();
        for spec in specs {
            sinks.push(JsonlSink::open(spec).await?);
        }
        Ok(Self {
            sinks,
            metrics,
            hash_wait,
        })
    }

    /// Runs until the input closes (the state stage finished), then flushes.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Emitted>) {
        let mut inflight = FuturesOrdered::new();
        let mut input_open = true;
        while input_open || !inflight.is_empty() {
            tokio::select! {
                biased;
                Some(ev) = inflight.next(), if !inflight.is_empty() => {
                    self.write(&ev).await;
                    if inflight.is_empty() && rx.is_empty() {
                        self.flush().await;
                    }
                }
                msg = rx.recv(), if input_open && inflight.len() < MAX_IN_FLIGHT => match msg {
                    Some(em) => inflight.push_back(resolve(em, self.hash_wait)),
                    None => input_open = false,
                },
            }
        }
        self.flush().await;
    }

    async fn write(&mut self, ev: &Event) {
        let line = match serde_json::to_vec(ev) {
            Ok(mut l) => {
                l.push(b'\n');
                l
            }
            Err(e) => {
                tracing::error!(error = %e, "event not serializable");
                return;
            }
        };
        for sink in &mut self.sinks {
            match sink.write(&line).await {
                Ok(()) => self.metrics.sink_written(sink.name()),
                Err(e) => {
                    self.metrics.sink_failed(sink.name());
                    tracing::warn!(sink = sink.name(), error = %e, "sink write failed");
                }
            }
        }
    }

    async fn flush(&mut self) {
        for sink in &mut self.sinks {
            if let Err(e) = sink.flush().await {
                self.metrics.sink_failed(sink.name());
                tracing::warn!(sink = sink.name(), error = %e, "sink flush failed");
            }
        }
    }
}

async fn resolve(em: Emitted, wait: Duration) -> Event {
    let mut ev = em.event;
    if let (Some(h), Event::Process(p)) = (em.hash, &mut ev) {
        p.process.sha256 = h.wait(wait).await;
    }
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_output_specs() {
        assert_eq!("jsonl:-".parse(), Ok(SinkSpec::JsonlStdout));
        assert_eq!("jsonl:/tmp/x".parse(), Ok(SinkSpec::JsonlFile("/tmp/x".into())));
        assert!("jsonl:".parse::<SinkSpec>().is_err());
        for text in ["jsonl:-", "jsonl:/var/log/mcpwatch/events.jsonl"] {
            assert_eq!(text.parse::<SinkSpec>().unwrap().to_string(), text);
        }
        assert!("nope".parse::<SinkSpec>().is_err());
        assert!("kafka:x"
            .parse::<SinkSpec>()
            .unwrap_err()
            .contains("unknown sink"));
    }
}
