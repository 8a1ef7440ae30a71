//! The on-disk spool shared by the remote sinks: at-least-once delivery across
//! receiver outages and agent restarts.
//!
//! - Records are appended to segment files (`<first-seq>.seg` in `<state-dir>/spool/`),
//!   each framed as `len u32 | crc32 u32 | seq u64 | payload`, and `fdatasync`'d
//!   before the batch counts as accepted.
//! - Each sink has a cursor (the next sequence number it has not had acknowledged),
//!   kept in `cursors/<sink-id>` and advanced only on acknowledgement. A lost cursor
//!   write only means a resend, never a loss, so cursors are not fsync'd.
//! - A segment goes once every configured sink's cursor is past it.
//! - The spool is bounded; when full the configured policy drops the oldest segment
//!   or refuses new records, and every dropped record is counted.
//! - On start the segments are scanned: a torn record at the tail (crash mid-write)
//!   is cut off, and delivery resumes from each sink's cursor.

use std::{
    collections::{HashMap, VecDeque},
    fs::{File, OpenOptions},
    io::Write as _,
    os::unix::fs::{FileExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::{Context as _, Result};
use tokio::sync::watch;

const HEADER: usize = 16;
/// A frame larger than this is corruption, not a record.
const MAX_RECORD: u32 = 16 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FullPolicy {
    /// Delete the oldest segment (its undelivered records are counted as dropped).
    DropOldest,
    /// Refuse new records until delivery frees space (counted as dropped).
    DropNewest,
}

#[derive(Clone, Debug)]
pub struct SpoolOptions {
    pub max_bytes: u64,
    pub segment_bytes: u64,
    pub policy: FullPolicy,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        Self {
            max_bytes: 256 << 20,
            segment_bytes: 8 << 20,
            policy: FullPolicy::DropOldest,
        }
    }
}

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    /// One past the last record written.
    end_seq: u64,
    bytes: u64,
    path: PathBuf,
}

struct Inner {
    dir: PathBuf,
    opts: SpoolOptions,
    segments: VecDeque<Segment>,
    active: Option<File>,
    next_seq: u64,
    total_bytes: u64,
    cursors: HashMap<String, u64>,
}

/// Records read back: (sequence number, payload).
pub type Batch = Vec<(u64, Vec<u8>)>;

/// What an append did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Appended {
    pub accepted: u64,
    /// Records of this batch refused (drop-newest policy).
    pub refused: u64,
    /// Older, undelivered records deleted to make room (drop-oldest policy).
    pub evicted: u64,
}

#[derive(Clone)]
pub struct Spool {
    inner: Arc<Mutex<Inner>>,
    committed: watch::Sender<u64>,
}

fn seg_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.seg"))
}

/// Scans a segment: (end_seq, valid bytes). Stops at the first torn or corrupt frame.
fn scan(path: &Path, first_seq: u64) -> Result<(u64, u64)> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (mut off, mut next) = (0usize, first_seq);
    while off + HEADER <= data.len() {
        let len = u32::from_le_bytes(data[off..off + 4].try_into().unwrap());
        let crc = u32::from_le_bytes(data[off + 4..off + 8].try_into().unwrap());
        let seq = u64::from_le_bytes(data[off + 8..off + 16].try_into().unwrap());
        let end = off + HEADER + len as usize;
        if len > MAX_RECORD || end > data.len() || crc32fast::hash(&data[off + 8..end]) != crc || seq != next
        {
            break;
        }
        next += 1;
        off = end;
    }
    Ok((next, off as u64))
}

impl Spool {
    /// Opens (or creates) the spool under `dir` and recovers it; `sinks` are the ids of
    /// the configured sinks: a sink new to this spool starts at its head.
    pub fn open(dir: &Path, opts: SpoolOptions, sinks: &[String]) -> Result<Self> {
        let cursors_dir = dir.join("cursors");
        std::fs::create_dir_all(&cursors_dir)
            .with_context(|| format!("creating {}", cursors_dir.display()))?;
        let mut firsts: Vec<u64> = std::fs::read_dir(dir)?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".seg")?.parse().ok())
            .collect();
        firsts.sort_unstable();
        let mut segments = VecDeque::new();
        let mut total = 0;
        let mut next_seq = 0;
        for first in firsts {
            let path = seg_path(dir, first);
            if first < next_seq {
                tracing::warn!(path = %path.display(), "overlapping spool segment removed");
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let (end, valid) = scan(&path, first)?;
            let len = std::fs::metadata(&path)?.len();
            if valid < len {
                tracing::warn!(path = %path.display(), cut = len - valid, "torn or corrupt spool tail cut off");
                OpenOptions::new().write(true).open(&path)?.set_len(valid)?;
            }
            total += valid;
            next_seq = end;
            segments.push_back(Segment {
                first_seq: first,
                end_seq: end,
                bytes: valid,
                path,
            });
        }
        let mut cursors = HashMap::new();
        for id in sinks {
            let path = cursors_dir.join(id);
            let cursor = match std::fs::read_to_string(&path) {
                Ok(s) => s.trim().parse::<u64>().unwrap_or(0).min(next_seq),
                // A sink new to this spool starts at the head; write its cursor now so a
                // crash before its first acknowledgement does not skip records.
                Err(_) => {
                    write_cursor(&path, next_seq)?;
                    next_seq
                }
            };
            cursors.insert(id.clone(), cursor);
        }
        let mut inner = Inner {
            dir: dir.to_path_buf(),
            opts,
            segments,
            active: None,
            next_seq,
            total_bytes: total,
            cursors,
        };
        inner.collect_garbage();
        let (committed, _) = watch::channel(next_seq);
        Ok(Self {
            inner: Arc::new(Mutex::new(inner)),
            committed,
        })
    }

    /// Appends and syncs a batch; the records count as accepted once this returns Ok.
    pub fn append(&self, payloads: &[Vec<u8>]) -> std::io::Result<Appended> {
        if payloads.is_empty() {
            return Ok(Appended::default());
        }
        let mut inner = self.inner.lock().expect("spool lock");
        let batch_bytes: u64 = payloads.iter().map(|p| (p.len() + HEADER) as u64).sum();
        let mut out = Appended::default();
        if inner.opts.policy == FullPolicy::DropNewest
            && inner.total_bytes + batch_bytes > inner.opts.max_bytes
        {
            out.refused = payloads.len() as u64;
            return Ok(out);
        }
        let file = inner.active_file()?;
        let mut buf = Vec::with_capacity(batch_bytes as usize);
        let mut seq = inner.next_seq;
        for p in payloads {
            let mut body = Vec::with_capacity(8 + p.len());
            body.extend_from_slice(&seq.to_le_bytes());
            body.extend_from_slice(p);
            buf.extend_from_slice(&(p.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
            buf.extend_from_slice(&body);
            seq += 1;
        }
        let mut f = &file;
        if let Err(e) = f.write_all(&buf).and_then(|()| file.sync_data()) {
            // Cut what may have been written, so the spool stays well framed.
            let seg = inner.segments.back().expect("active segment");
            let _ = file.set_len(seg.bytes);
            inner.active = None;
            return Err(e);
        }
        let n = payloads.len() as u64;
        let seg = inner.segments.back_mut().expect("active segment");
        seg.end_seq += n;
        seg.bytes += buf.len() as u64;
        inner.total_bytes += buf.len() as u64;
        inner.next_seq = seq;
        out.accepted = n;
        if inner.opts.policy == FullPolicy::DropOldest {
            out.evicted = inner.evict_to_bound();
        }
        drop(inner);
        self.committed.send_replace(seq);
        Ok(out)
    }

    /// Records from the sink's cursor on (at most `max`), and the sequence number
    /// after the last one read.
    pub fn read(&self, sink: &str, reader: &mut Reader, max: usize) -> Result<(Batch, u64)> {
        let (from, committed, segments) = {
            let inner = self.inner.lock().expect("spool lock");
            let from = inner.cursors.get(sink).copied().unwrap_or(inner.next_seq);
            let segs: Vec<(u64, u64, PathBuf)> = inner
                .segments
                .iter()
                .filter(|s| s.end_seq > from)
                .map(|s| (s.first_seq, s.end_seq, s.path.clone()))
                .collect();
            (from, inner.next_seq, segs)
        };
        let mut out = Vec::new();
        let mut next = from;
        for (first, end, path) in segments {
            if out.len() >= max {
                break;
            }
            next = next.max(first);
            reader.position(&path, first, next)?;
            while next < end.min(committed) && out.len() < max {
                let (seq, payload) = reader.next_record()?;
                anyhow::ensure!(
                    seq == next,
                    "spool {}: expected record {next}, found {seq}",
                    path.display()
                );
                out.push((seq, payload));
                next += 1;
            }
        }
        Ok((out, next))
    }

    /// Acknowledges everything before `upto` for `sink`.
    pub fn ack(&self, sink: &str, upto: u64) -> Result<()> {
        let mut inner = self.inner.lock().expect("spool lock");
        let cur = inner.cursors.entry(sink.to_string()).or_insert(0);
        if upto <= *cur {
            return Ok(());
        }
        *cur = upto;
        let path = inner.dir.join("cursors").join(sink);
        write_cursor(&path, upto)?;
        inner.collect_garbage();
        Ok(())
    }

    /// Committed head: one past the last accepted record.
    pub fn head(&self) -> u64 {
        *self.committed.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.committed.subscribe()
    }

    /// Records not yet acknowledged by `sink` (whatever their class), and spool bytes.
    pub fn backlog(&self, sink: &str) -> (u64, u64) {
        let inner = self.inner.lock().expect("spool lock");
        let cur = inner.cursors.get(sink).copied().unwrap_or(inner.next_seq);
        (inner.next_seq.saturating_sub(cur), inner.total_bytes)
    }

    /// The sink's cursor: the first record it has not had acknowledged.
    pub fn cursor(&self, sink: &str) -> u64 {
        let inner = self.inner.lock().expect("spool lock");
        inner.cursors.get(sink).copied().unwrap_or(inner.next_seq)
    }

    /// The cursor of the sink furthest behind.
    pub fn min_cursor(&self) -> u64 {
        self.inner.lock().expect("spool lock").min_cursor()
    }

    pub fn total_bytes(&self) -> u64 {
        self.inner.lock().expect("spool lock").total_bytes
    }
}

fn write_cursor(path: &Path, seq: u64) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, seq.to_string()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))
}

impl Inner {
    /// The segment being appended to, rolling to a new one when it is full.
    fn active_file(&mut self) -> std::io::Result<File> {
        let roll = self
            .segments
            .back()
            .is_none_or(|s| s.bytes >= self.opts.segment_bytes);
        if roll || self.active.is_none() {
            if roll {
                let path = seg_path(&self.dir, self.next_seq);
                self.segments.push_back(Segment {
                    first_seq: self.next_seq,
                    end_seq: self.next_seq,
                    bytes: 0,
                    path,
                });
            }
            let seg = self.segments.back().expect("segment");
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&seg.path)?;
            // A new segment's directory entry must survive a crash too.
            if roll {
                File::open(&self.dir)?.sync_all()?;
            }
            self.active = Some(f);
        }
        self.active.as_ref().expect("active").try_clone()
    }

    fn min_cursor(&self) -> u64 {
        self.cursors.values().copied().min().unwrap_or(self.next_seq)
    }

    /// Deletes segments every sink has had acknowledged (never the active one).
    fn collect_garbage(&mut self) {
        let min = self.min_cursor();
        while self.segments.len() > 1 && self.segments[0].end_seq <= min {
            self.remove_oldest();
        }
        if self.segments.len() == 1 && self.active.is_none() && self.segments[0].end_seq <= min {
            // Recovered, fully delivered, not yet appended to: start afresh.
            self.remove_oldest();
        }
    }

    fn remove_oldest(&mut self) -> Option<Segment> {
        let seg = self.segments.pop_front()?;
        self.total_bytes -= seg.bytes;
        if let Err(e) = std::fs::remove_file(&seg.path) {
            tracing::warn!(path = %seg.path.display(), error = %e, "removing spool segment");
        }
        Some(seg)
    }

    /// Drop-oldest: deletes whole old segments until under the bound; returns the
    /// undelivered records lost (counted once per record, for the sink furthest behind).
    fn evict_to_bound(&mut self) -> u64 {
        let mut lost = 0;
        while self.total_bytes > self.opts.max_bytes && self.segments.len() > 1 {
            let Some(seg) = self.remove_oldest() else { break };
            let behind = self.min_cursor();
            if behind < seg.end_seq {
                lost += seg.end_seq - behind.max(seg.first_seq);
            }
            for (id, cur) in self.cursors.iter_mut() {
                if *cur < seg.end_seq {
                    *cur = seg.end_seq;
                    let _ = write_cursor(&self.dir.join("cursors").join(id), seg.end_seq);
                }
            }
        }
        if lost > 0 {
            tracing::warn!(lost, "spool full: oldest undelivered records dropped");
        }
        lost
    }
}

/// A sink's read position (an open segment and an offset in it).
#[derive(Default)]
pub struct Reader {
    file: Option<(PathBuf, File)>,
    /// Sequence number and byte offset of the next frame in `file`.
    seq: u64,
    offset: u64,
}

impl Reader {
    /// Positions at record `seq` of the segment at `path` starting at `first`.
    fn position(&mut self, path: &Path, first: u64, seq: u64) -> Result<()> {
        let same = self.file.as_ref().is_some_and(|(p, _)| p == path);
        if !same || self.seq > seq {
            let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            self.file = Some((path.to_path_buf(), f));
            self.seq = first;
            self.offset = 0;
        }
        while self.seq < seq {
            self.next_record()?;
        }
        Ok(())
    }

    fn next_record(&mut self) -> Result<(u64, Vec<u8>)> {
        let (path, f) = self.file.as_ref().context("spool reader not positioned")?;
        let mut hdr = [0u8; HEADER];
        f.read_exact_at(&mut hdr, self.offset)
            .with_context(|| format!("reading {} at {}", path.display(), self.offset))?;
        let len = u32::from_le_bytes(hdr[0..4].try_into().unwrap());
        let crc = u32::from_le_bytes(hdr[4..8].try_into().unwrap());
        anyhow::ensure!(
            len <= MAX_RECORD,
            "spool {}: bad frame length {len}",
            path.display()
        );
        let mut body = vec![0u8; 8 + len as usize];
        body[..8].copy_from_slice(&hdr[8..16]);
        f.read_exact_at(&mut body[8..], self.offset + HEADER as u64)?;
        anyhow::ensure!(
            crc32fast::hash(&body) == crc,
            "spool {}: checksum mismatch",
            path.display()
        );
        let seq = u64::from_le_bytes(hdr[8..16].try_into().unwrap());
        self.offset += (HEADER + len as usize) as u64;
        self.seq = seq + 1;
        body.drain(..8);
        Ok((seq, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(max: u64, seg: u64, policy: FullPolicy) -> SpoolOptions {
        SpoolOptions {
            max_bytes: max,
            segment_bytes: seg,
            policy,
        }
    }

    fn payloads(range: std::ops::Range<u32>) -> Vec<Vec<u8>> {
        range.map(|i| format!("record-{i}").into_bytes()).collect()
    }

    fn read_all(s: &Spool, sink: &str, r: &mut Reader) -> Vec<String> {
        let (recs, _) = s.read(sink, r, 10_000).unwrap();
        recs.into_iter()
            .map(|(_, p)| String::from_utf8(p).unwrap())
            .collect()
    }

    #[test]
    fn cursors_are_per_sink_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let sinks = ["a".to_string(), "b".to_string()];
        let s = Spool::open(dir.path(), opts(1 << 20, 64, FullPolicy::DropOldest), &sinks).unwrap();
        assert_eq!(s.append(&payloads(0..10)).unwrap().accepted, 10);
        let (mut ra, mut rb) = (Reader::default(), Reader::default());
        let (batch, next) = s.read("a", &mut ra, 4).unwrap();
        assert_eq!((batch.len(), next), (4, 4));
        s.ack("a", next).unwrap();
        assert_eq!(read_all(&s, "a", &mut ra).len(), 6);
        assert_eq!(read_all(&s, "b", &mut rb).len(), 10);
        drop(s);
        // Restart: a resumes after its ack, b from the start; nothing is lost.
        let s = Spool::open(dir.path(), opts(1 << 20, 64, FullPolicy::DropOldest), &sinks).unwrap();
        let a = read_all(&s, "a", &mut Reader::default());
        assert_eq!(a.first().unwrap(), "record-4");
        assert_eq!(a.len(), 6);
        assert_eq!(read_all(&s, "b", &mut Reader::default()).len(), 10);
        s.append(&payloads(10..12)).unwrap();
        assert_eq!(
            read_all(&s, "b", &mut Reader::default()).last().unwrap(),
            "record-11"
        );
    }

    #[test]
    fn fully_acknowledged_segments_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(
            dir.path(),
            opts(1 << 20, 64, FullPolicy::DropOldest),
            &["a".into()],
        )
        .unwrap();
        for i in 0..20 {
            s.append(&payloads(i * 5..i * 5 + 5)).unwrap();
        }
        let before = s.total_bytes();
        let mut r = Reader::default();
        let (recs, next) = s.read("a", &mut r, 1000).unwrap();
        assert_eq!(recs.len(), 100);
        s.ack("a", next).unwrap();
        assert!(s.total_bytes() < before / 4, "{} of {before}", s.total_bytes());
        let segs = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "seg"))
            .count();
        assert_eq!(segs, 1);
    }

    #[test]
    fn torn_tail_is_cut_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(
            dir.path(),
            opts(1 << 20, 1 << 20, FullPolicy::DropOldest),
            &["a".into()],
        )
        .unwrap();
        s.append(&payloads(0..3)).unwrap();
        drop(s);
        let seg = seg_path(dir.path(), 0);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3]).unwrap(); // half a frame
        let s = Spool::open(
            dir.path(),
            opts(1 << 20, 1 << 20, FullPolicy::DropOldest),
            &["a".into()],
        )
        .unwrap();
        assert_eq!(s.head(), 3);
        s.append(&payloads(3..4)).unwrap();
        let all = read_all(&s, "a", &mut Reader::default());
        assert_eq!(all, vec!["record-0", "record-1", "record-2", "record-3"]);
    }

    #[test]
    fn full_spool_drops_by_policy_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), opts(400, 100, FullPolicy::DropOldest), &["a".into()]).unwrap();
        let mut evicted = 0;
        for i in 0..40 {
            let r = s.append(&payloads(i..i + 1)).unwrap();
            evicted += r.evicted;
        }
        let kept = read_all(&s, "a", &mut Reader::default());
        assert!(evicted > 0 && s.total_bytes() <= 400 + 100);
        assert_eq!(
            kept.len() as u64 + evicted,
            40,
            "every record delivered or counted"
        );
        assert_eq!(kept.last().unwrap(), "record-39");

        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), opts(400, 100, FullPolicy::DropNewest), &["a".into()]).unwrap();
        let (mut accepted, mut refused) = (0, 0);
        for i in 0..40 {
            let r = s.append(&payloads(i..i + 1)).unwrap();
            accepted += r.accepted;
            refused += r.refused;
        }
        assert_eq!(accepted + refused, 40);
        assert!(refused > 0);
        let kept = read_all(&s, "a", &mut Reader::default());
        assert_eq!(kept.first().unwrap(), "record-0");
        assert_eq!(kept.len() as u64, accepted);
    }
}
