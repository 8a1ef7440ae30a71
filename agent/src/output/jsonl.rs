//! JSON Lines to stdout or to a file (appended, created 0640).

use anyhow::{Context as _, Result};
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};

use super::SinkSpec;

pub struct JsonlSink {
    name: String,
    out: BufWriter<Box<dyn AsyncWrite + Send + Unpin>>,
}

impl JsonlSink {
    pub async fn open(spec: &SinkSpec) -> Result<Self> {
        let (name, out): (String, Box<dyn AsyncWrite + Send + Unpin>) = match spec {
            SinkSpec::JsonlStdout => ("jsonl:stdout".into(), Box::new(tokio::io::stdout())),
            SinkSpec::JsonlFile(path) => {
                let file = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o640)
                    .open(path)
                    .await
                    .with_context(|| format!("opening output file {}", path.display()))?;
                ("jsonl:file".into(), Box::new(file))
            }
        };
        Ok(Self {
            name,
            out: BufWriter::with_capacity(64 * 1024, out),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub async fn write(&mut self, line: &[u8]) -> std::io::Result<()> {
        self.out.write_all(line).await
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush().await
    }
}
