//! JSON Lines to stdout or to a file (appended, created 0640, rotated by size:
//! `PATH` → `PATH.1` → … → `PATH.N`). Written in line with the pipeline, not spooled:
//! the file is the local record.

use anyhow::{Context as _, Result};
use futures::future::BoxFuture;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};

use crate::output::{
    record::Record,
    sink::{SendError, Sink},
    spec::JsonlSpec,
};

pub struct JsonlSink {
    label: String,
    spec: JsonlSpec,
    out: BufWriter<Box<dyn AsyncWrite + Send + Unpin>>,
    /// Bytes in the current file (for rotation).
    size: u64,
}

async fn open_file(path: &std::path::Path) -> Result<(tokio::fs::File, u64)> {
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .await
        .with_context(|| format!("opening output file {}", path.display()))?;
    let size = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    Ok((file, size))
}

impl JsonlSink {
    pub async fn open(spec: &JsonlSpec, label: String) -> Result<Self> {
        let (out, size): (Box<dyn AsyncWrite + Send + Unpin>, u64) = match &spec.path {
            None => (Box::new(tokio::io::stdout()), 0),
            Some(path) => {
                let (f, size) = open_file(path).await?;
                (Box::new(f), size)
            }
        };
        Ok(Self {
            label,
            spec: spec.clone(),
            out: BufWriter::with_capacity(64 * 1024, out),
            size,
        })
    }

    async fn rotate(&mut self) -> Result<()> {
        let Some(path) = self.spec.path.clone() else {
            return Ok(());
        };
        self.out.flush().await?;
        let name = |i: u32| {
            let mut p = path.clone().into_os_string();
            p.push(format!(".{i}"));
            std::path::PathBuf::from(p)
        };
        if self.spec.keep == 0 {
            let _ = tokio::fs::remove_file(&path).await;
        } else {
            let _ = tokio::fs::remove_file(name(self.spec.keep)).await;
            for i in (1..self.spec.keep).rev() {
                let _ = tokio::fs::rename(name(i), name(i + 1)).await;
            }
            tokio::fs::rename(&path, name(1))
                .await
                .with_context(|| format!("rotating {}", path.display()))?;
        }
        let (f, size) = open_file(&path).await?;
        self.out = BufWriter::with_capacity(64 * 1024, Box::new(f));
        self.size = size;
        Ok(())
    }

    async fn write_line(&mut self, body: &str) -> Result<()> {
        let len = body.len() as u64 + 1;
        if self.spec.path.is_some()
            && self.spec.max_bytes > 0
            && self.size > 0
            && self.size + len > self.spec.max_bytes
        {
            self.rotate().await?;
        }
        self.out.write_all(body.as_bytes()).await?;
        self.out.write_all(b"\n").await?;
        self.size += len;
        Ok(())
    }
}

impl Sink for JsonlSink {
    fn label(&self) -> &str {
        &self.label
    }

    fn max_batch(&self) -> usize {
        1024
    }

    fn send<'a>(&'a mut self, batch: &'a [Record]) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            for (i, r) in batch.iter().enumerate() {
                let body = r.body(self.spec.format);
                self.write_line(body)
                    .await
                    .map_err(|e| SendError::retry(format!("{e:#}")).after(i))?;
            }
            Ok(())
        })
    }

    fn flush(&mut self) -> BoxFuture<'_, Result<(), SendError>> {
        Box::pin(async move {
            self.out
                .flush()
                .await
                .map_err(|e| SendError::retry(e.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::spec::{Format, Selection};

    fn record(body: &str) -> Record {
        Record {
            class: crate::output::record::Class::Telemetry,
            time_ms: 0,
            accepted_ms: 0,
            severity: 1,
            kind: "k".into(),
            uid: "u".into(),
            event_uid: "e".into(),
            ocsf: Some(serde_json::value::RawValue::from_string(body.into()).unwrap()),
            ecs: None,
            native: None,
        }
    }

    #[tokio::test]
    async fn rotates_by_size_and_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.jsonl");
        let spec = JsonlSpec {
            path: Some(path.clone()),
            format: Format::Ocsf,
            events: Selection::ALL,
            max_bytes: 100,
            keep: 2,
        };
        let mut s = JsonlSink::open(&spec, "jsonl:file".into()).await.unwrap();
        for i in 0..30 {
            let r = record(&format!("{{\"n\":\"{i:04}\"}}"));
            s.send(std::slice::from_ref(&r)).await.unwrap();
        }
        s.flush().await.unwrap();
        let cur = std::fs::read_to_string(&path).unwrap();
        let one = std::fs::read_to_string(dir.path().join("e.jsonl.1")).unwrap();
        assert!(dir.path().join("e.jsonl.2").exists());
        assert!(!dir.path().join("e.jsonl.3").exists());
        assert!(cur.len() <= 100 && one.len() <= 100);
        assert!(cur.ends_with("{\"n\":\"0029\"}\n"), "{cur}");
        // Lines are never split across files.
        for l in cur.lines().chain(one.lines()) {
            serde_json::from_str::<serde_json::Value>(l).unwrap();
        }
    }
}
