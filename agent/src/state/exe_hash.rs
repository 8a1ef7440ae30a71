//! SHA-256 of executables, computed off the hot path and cached by file identity
//! (device, inode, mtime, size), so a storm of execs of one binary hashes it once and
//! a replaced binary is hashed again.

use std::{
    fs::File,
    io::Read,
    num::NonZeroUsize,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{watch, Semaphore};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub mtime_ns: i64,
    pub size: u64,
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            size: meta.size(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashState {
    Pending,
    Done(Arc<str>),
    Failed(Arc<str>),
}

/// Waits for one file's hash.
#[derive(Clone)]
pub struct HashHandle(watch::Receiver<HashState>);

impl HashHandle {
    /// The hex SHA-256, or `None` if hashing failed or took longer than `timeout`.
    pub async fn wait(mut self, timeout: Duration) -> Option<Arc<str>> {
        let done = tokio::time::timeout(timeout, self.0.wait_for(|s| *s != HashState::Pending)).await;
        match done {
            Ok(Ok(state)) => match &*state {
                HashState::Done(h) => Some(h.clone()),
                _ => None,
            },
            _ => None,
        }
    }

    pub fn now(&self) -> Option<Arc<str>> {
        match &*self.0.borrow() {
            HashState::Done(h) => Some(h.clone()),
            _ => None,
        }
    }
}

/// Files larger than this are not hashed (reported as a failure, not silently).
const MAX_HASHED_BYTES: u64 = 1 << 30;
/// Hashes computed at once; each is a blocking read of a whole file.
const CONCURRENT_HASHES: usize = 2;

#[derive(Clone)]
pub struct ExeHasher {
    cache: Arc<Mutex<lru::LruCache<FileId, HashHandle>>>,
    permits: Arc<Semaphore>,
    /// Hash on the caller's thread before returning (a replay: its events pass in
    /// moments, and what it reports must not depend on how fast a disk is).
    inline: bool,
}

impl ExeHasher {
    pub fn new(capacity: usize) -> Self {
        let cap = NonZeroUsize::new(capacity.max(1)).expect("non-zero");
        Self {
            cache: Arc::new(Mutex::new(lru::LruCache::new(cap))),
            permits: Arc::new(Semaphore::new(CONCURRENT_HASHES)),
            inline: false,
        }
    }

    /// A hasher whose hashes are known when `file` returns.
    pub fn inline(capacity: usize) -> Self {
        Self {
            inline: true,
            ..Self::new(capacity)
        }
    }

    /// Identifies the first candidate path that exists and starts hashing it unless
    /// its hash is known. `/proc/PID/exe` as first candidate pins the exact inode
    /// that runs, even if the path was replaced since.
    pub fn file(&self, candidates: &[PathBuf]) -> Option<(FileId, HashHandle)> {
        let (path, meta) = candidates
            .iter()
            .find_map(|p| std::fs::metadata(p).ok().filter(|m| m.is_file()).map(|m| (p, m)))?;
        let id = FileId::of(&meta);
        let mut cache = self.cache.lock().expect("hash cache poisoned");
        if let Some(h) = cache.get(&id) {
            return Some((id, h.clone()));
        }
        let (tx, rx) = watch::channel(HashState::Pending);
        let handle = HashHandle(rx);
        cache.put(id, handle.clone());
        drop(cache);
        let path = path.clone();
        if self.inline {
            let _ = tx.send(match hash_file(&path, id) {
                Ok(h) => HashState::Done(h.into()),
                Err(e) => HashState::Failed(e.into()),
            });
            return Some((id, handle));
        }
        let permits = self.permits.clone();
        tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            let result = tokio::task::spawn_blocking(move || hash_file(&path, id))
                .await
                .unwrap_or_else(|e| Err(format!("hash task failed: {e}")));
            let _ = tx.send(match result {
                Ok(h) => HashState::Done(h.into()),
                Err(e) => {
                    tracing::debug!(error = %e, "executable not hashed");
                    HashState::Failed(e.into())
                }
            });
        });
        Some((id, handle))
    }

    /// The hash of a file already hashed.
    pub fn known(&self, id: &FileId) -> Option<Arc<str>> {
        self.cache
            .lock()
            .expect("hash cache poisoned")
            .peek(id)
            .and_then(HashHandle::now)
    }
}

fn hash_file(path: &Path, expected: FileId) -> Result<String, String> {
    let mut file = File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if FileId::of(&meta) != expected {
        return Err(format!("{} changed before it was hashed", path.display()));
    }
    if meta.size() > MAX_HASHED_BYTES {
        return Err(format!(
            "{} is larger than {MAX_HASHED_BYTES} bytes",
            path.display()
        ));
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_once_per_file_identity() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bin");
        std::fs::write(&p, b"abc").unwrap();
        let hasher = ExeHasher::new(16);
        let (id, h) = hasher.file(&[dir.path().join("missing"), p.clone()]).unwrap();
        assert_eq!(
            h.wait(Duration::from_secs(5)).await.as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        assert!(hasher.known(&id).is_some());
        // Rewriting the file changes its identity, so it is hashed again.
        std::thread::sleep(Duration::from_millis(10));
        std::fs::write(&p, b"abcd").unwrap();
        let (id2, h2) = hasher.file(&[p]).unwrap();
        assert_ne!(id, id2);
        assert_eq!(
            h2.wait(Duration::from_secs(5)).await.as_deref(),
            Some("88d4266fd4e6338d13b845fcf289579d209c897823b9217da3e161936f031589")
        );
    }

    #[test]
    fn missing_files_are_not_identified() {
        let hasher = ExeHasher::new(4);
        assert!(hasher.file(&[PathBuf::from("/nonexistent/x")]).is_none());
    }
}
