//! Recordings: decoded sensor events as JSON lines, written by `mcpwatch run --record
//! FILE` and read back by `mcpwatch replay FILE`.
//!
//! Line 1 is a header, `{"mcpwatch_recording":1,...}` ([`RecordingHeader`]); every
//! further line is one [`SensorEvent`] as the ring reader received it, its variant
//! named by `"kind"` (`exec`, `fork`, `exit`, `cgroup_move`, `payload`, `net` with the
//! network variant in `"net"`). Captured bytes are `{"text": "…"}` when they are valid
//! UTF-8 and `{"base64": "…"}` otherwise.
//!
//! Payload captures hold what MCP peers said, tokens included: a recording is created
//! 0600 and stays on the host like the agent's state directory.

use std::{
    fs::File,
    io::{BufRead, BufReader, BufWriter, Write as _},
    path::{Path, PathBuf},
    sync::{mpsc, Arc},
    thread::JoinHandle,
};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use super::SensorEvent;
use crate::{clock, metrics::Metrics};

/// The format version this build writes and reads.
pub const RECORDING_VERSION: u32 = 1;
/// Events waiting for the writer thread; past this they are dropped and counted, so a
/// slow disk never slows the pipeline.
const QUEUE: usize = 65_536;
/// A recording stops growing here (1 GiB); what follows is counted as dropped.
const MAX_BYTES: u64 = 1 << 30;

/// The first line of a recording.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingHeader {
    pub mcpwatch_recording: u32,
    pub agent_version: String,
    pub hostname: Option<String>,
    /// When recording began, RFC 3339.
    pub started: String,
    /// CLOCK_REALTIME − CLOCK_BOOTTIME when recording began: the events carry
    /// boot-time stamps, which mean nothing on another boot without it.
    pub boot_wall_offset_ns: u64,
}

impl RecordingHeader {
    fn now() -> Self {
        Self {
            mcpwatch_recording: RECORDING_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            hostname: nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()),
            started: clock::rfc3339(std::time::SystemTime::now()),
            boot_wall_offset_ns: clock::boot_wall_offset_ns(),
        }
    }
}

/// Captured bytes in a recording: readable text stays readable.
pub mod bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Bytes {
        Text(String),
        Base64(String),
    }

    pub fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(data) {
            Ok(text) => Bytes::Text(text.to_string()),
            Err(_) => Bytes::Base64(base64::engine::general_purpose::STANDARD.encode(data)),
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        match Bytes::deserialize(d)? {
            Bytes::Text(t) => Ok(t.into_bytes()),
            Bytes::Base64(b) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Writes the events handed to it to a recording, on a thread of its own.
pub struct Recorder {
    tx: Option<mpsc::SyncSender<SensorEvent>>,
    writer: Option<JoinHandle<()>>,
    metrics: Arc<Metrics>,
}

impl Recorder {
    /// Starts a recording at `path`, created 0600. A recording already there is kept
    /// as `PATH.1` (one generation), so a restart does not lose the last one.
    pub fn create(path: &Path, metrics: Arc<Metrics>) -> Result<Self> {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        if path.exists() {
            let previous = previous_path(path);
            std::fs::rename(path, &previous).with_context(|| {
                format!(
                    "keeping the previous recording {} as {}",
                    path.display(),
                    previous.display()
                )
            })?;
            tracing::info!(previous = %previous.display(), "previous recording kept");
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("creating recording {}", path.display()))?;
        // The umask can only take bits away; a file that existed under a race could
        // not be opened (create_new). Still make the mode explicit.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("making recording {} private", path.display()))?;
        let mut out = BufWriter::new(file);
        serde_json::to_writer(&mut out, &RecordingHeader::now())?;
        out.write_all(b"\n")
            .and_then(|()| out.flush())
            .with_context(|| format!("writing recording header to {}", path.display()))?;
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let thread_metrics = metrics.clone();
        let shown = path.display().to_string();
        let writer = std::thread::Builder::new()
            .name("mcpwatch-record".into())
            .spawn(move || write_events(rx, out, &shown, &thread_metrics))
            .context("starting the recording thread")?;
        tracing::info!(path = %path.display(), "recording sensor events");
        Ok(Self {
            tx: Some(tx),
            writer: Some(writer),
            metrics,
        })
    }

    /// Queues a copy of one event; never waits.
    pub fn record(&self, ev: &SensorEvent) {
        let Some(tx) = &self.tx else { return };
        if tx.try_send(ev.clone()).is_err() {
            self.metrics.recording_event("dropped");
        }
    }

    /// Writes out what is queued and closes the file (also on drop).
    fn close(&mut self) {
        drop(self.tx.take());
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.close();
    }
}

fn previous_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

/// The recording thread: one line per event, flushed whenever the queue runs dry. A
/// write error or the size bound ends writing (logged once); the rest is counted.
fn write_events(rx: mpsc::Receiver<SensorEvent>, mut out: BufWriter<File>, path: &str, metrics: &Metrics) {
    let mut written: u64 = 0;
    let mut stopped = false;
    let mut line = Vec::with_capacity(4096);
    loop {
        let ev = match rx.try_recv() {
            Ok(ev) => ev,
            Err(mpsc::TryRecvError::Empty) => {
                if !stopped && out.flush().is_err() {
                    stopped = true;
                    tracing::warn!(path, "recording: flush failed; no more events are recorded");
                }
                match rx.recv() {
                    Ok(ev) => ev,
                    Err(_) => break,
                }
            }
            Err(mpsc::TryRecvError::Disconnected) => break,
        };
        if stopped {
            metrics.recording_event("dropped");
            continue;
        }
        line.clear();
        if let Err(e) = serde_json::to_writer(&mut line, &ev) {
            metrics.recording_event("failed");
            tracing::debug!(%e, "recording: event not serializable");
            continue;
        }
        line.push(b'\n');
        if written + line.len() as u64 > MAX_BYTES {
            stopped = true;
            metrics.recording_event("dropped");
            tracing::warn!(
                path,
                max_bytes = MAX_BYTES,
                "recording is full; no more events are recorded"
            );
            continue;
        }
        match out.write_all(&line) {
            Ok(()) => {
                written += line.len() as u64;
                metrics.recording_event("written");
            }
            Err(e) => {
                stopped = true;
                metrics.recording_event("failed");
                tracing::warn!(path, %e, "recording: write failed; no more events are recorded");
            }
        }
    }
    if !stopped {
        if let Err(e) = out.flush() {
            tracing::warn!(path, %e, "recording: final flush failed");
        }
    }
}

/// Reads a recording back, event by event.
pub struct RecordingReader {
    lines: std::io::Lines<BufReader<File>>,
    path: PathBuf,
    line_no: usize,
    pub header: RecordingHeader,
}

impl RecordingReader {
    /// Opens a recording and checks its header: another file is refused here, with
    /// what it is not.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("opening recording {}", path.display()))?;
        let mut lines = BufReader::new(file).lines();
        let not_one = || {
            format!(
                "{}: not an mcpwatch recording (line 1 must be the header {{\"mcpwatch_recording\":{RECORDING_VERSION},…}}, \
                 as `mcpwatch run --record FILE` writes)",
                path.display()
            )
        };
        let first = match lines.next() {
            Some(l) => l.with_context(|| format!("reading recording {}", path.display()))?,
            None => bail!("{}: empty file, not an mcpwatch recording", path.display()),
        };
        let value: serde_json::Value = serde_json::from_str(&first).with_context(not_one)?;
        let version = match value.get("mcpwatch_recording") {
            Some(v) => v.as_u64().with_context(not_one)?,
            None => bail!(not_one()),
        };
        if version != u64::from(RECORDING_VERSION) {
            bail!(
                "{}: recording format version {version}; this mcpwatch reads version {RECORDING_VERSION}",
                path.display()
            );
        }
        let header: RecordingHeader =
            serde_json::from_value(value).with_context(|| format!("{} line 1: header", path.display()))?;
        Ok(Self {
            lines,
            path: path.to_path_buf(),
            line_no: 1,
            header,
        })
    }

    /// The next event, `None` at the end; an error names the line.
    pub fn next_event(&mut self) -> Result<Option<SensorEvent>> {
        loop {
            let Some(line) = self.lines.next() else {
                return Ok(None);
            };
            self.line_no += 1;
            let line = line.with_context(|| format!("{} line {}", self.path.display(), self.line_no))?;
            if line.trim().is_empty() {
                continue;
            }
            return serde_json::from_str(&line).map(Some).with_context(|| {
                format!(
                    "{} line {}: not a sensor event",
                    self.path.display(),
                    self.line_no
                )
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::sensor::{
        net_decode::{ConnectCall, DnsMessage, NetEvent},
        Channel, Direction, ExecEvent, PayloadEvent,
    };

    fn exec() -> SensorEvent {
        SensorEvent::Exec(ExecEvent {
            ts_ns: 10,
            pid: 42,
            tid: 42,
            old_tid: 42,
            uid: 1000,
            gid: 1000,
            cgroup_id: 7,
            comm: "python3".into(),
            filename: "/usr/bin/python3".into(),
            argv: vec!["python3".into(), "server.py".into()],
            argv_truncated: false,
            argv_incomplete: false,
            envc: 12,
        })
    }

    fn payload(data: &[u8]) -> SensorEvent {
        let local: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        let remote: SocketAddr = "[::1]:40000".parse().unwrap();
        SensorEvent::Payload(PayloadEvent {
            ts_ns: 11,
            pid: 42,
            tid: 43,
            fd: 1,
            inode: 99,
            channel: Channel::Tcp,
            direction: Direction::Write,
            total_len: data.len() as u32,
            truncated: false,
            data: data.to_vec(),
            tuple: Some((local, remote)),
        })
    }

    fn roundtrip(ev: &SensorEvent) -> (String, SensorEvent) {
        let line = serde_json::to_string(ev).unwrap();
        let back = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
        (line, back)
    }

    #[test]
    fn events_round_trip_and_text_stays_readable() {
        let text = payload(b"{\"jsonrpc\":\"2.0\",\"id\":1}\n");
        let (line, back) = roundtrip(&text);
        assert!(line.contains(r#""kind":"payload""#), "{line}");
        assert!(line.contains(r#""data":{"text":"{\"jsonrpc\":"#), "{line}");
        assert_eq!(back, text);

        let binary = payload(&[0xff, 0x00, 0x7b]);
        let (line, back) = roundtrip(&binary);
        assert!(line.contains(r#""data":{"base64":"/wB7"}"#), "{line}");
        assert_eq!(back, binary);

        let (line, back) = roundtrip(&exec());
        assert!(line.starts_with(r#"{"kind":"exec","ts_ns":10"#), "{line}");
        assert_eq!(back, exec());

        for net in [
            NetEvent::Connect(ConnectCall {
                ts_ns: 12,
                pid: 42,
                tid: 42,
                sk: Some(5),
                fd: 3,
                protocol: 6,
                remote: Some("10.0.0.1:443".parse().unwrap()),
                errno: 115,
            }),
            NetEvent::Dns(DnsMessage {
                ts_ns: 13,
                pid: 42,
                fd: 4,
                response: false,
                tcp: false,
                truncated: false,
                server: None,
                payload: vec![0x12, 0x34, 0x01, 0x00],
            }),
        ] {
            let ev = SensorEvent::Net(net);
            let (line, back) = roundtrip(&ev);
            assert!(line.starts_with(r#"{"kind":"net","net":"#), "{line}");
            assert_eq!(back, ev);
        }
    }

    #[test]
    fn a_recording_is_private_and_reads_back_in_order() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rec.jsonl");
        std::fs::write(&path, "an older recording\n").unwrap();
        let rec = Recorder::create(&path, Arc::new(Metrics::new())).unwrap();
        let events = [exec(), payload(b"{}\n"), payload(&[0xfe])];
        for ev in &events {
            rec.record(ev);
        }
        drop(rec); // writes out the queue
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("rec.jsonl.1")).unwrap(),
            "an older recording\n"
        );
        let mut reader = RecordingReader::open(&path).unwrap();
        assert_eq!(reader.header.mcpwatch_recording, RECORDING_VERSION);
        let mut back = Vec::new();
        while let Some(ev) = reader.next_event().unwrap() {
            back.push(ev);
        }
        assert_eq!(back, events);
    }

    #[test]
    fn other_files_are_refused_with_the_line_at_fault() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jsonl");
        for (text, expected) in [
            ("", "empty file"),
            ("{\"type\":\"alert\"}\n", "not an mcpwatch recording"),
            ("not json\n", "not an mcpwatch recording"),
            ("{\"mcpwatch_recording\":2}\n", "format version 2"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = format!("{:#}", RecordingReader::open(&path).err().expect(text));
            assert!(err.contains(expected), "{text:?}: {err}");
        }
        let header = serde_json::to_string(&RecordingHeader::now()).unwrap();
        let exec = serde_json::to_string(&exec()).unwrap();
        std::fs::write(&path, format!("{header}\n{exec}\n\n{{\"kind\":\"exec\"}}\n")).unwrap();
        let mut reader = RecordingReader::open(&path).unwrap();
        assert!(reader.next_event().unwrap().is_some());
        let err = format!("{:#}", reader.next_event().unwrap_err());
        assert!(err.contains("line 4: not a sensor event"), "{err}");
    }
}
