//! The rules stage's files in the state directory (baselines): read whole at start,
//! written whole through a temporary file and a rename, so a crash leaves the old or
//! the new file, never half of one. A file that cannot be read starts afresh
//! (logged): a baseline is a convenience, not a reason to refuse to run.

use std::path::Path;

use serde::{de::DeserializeOwned, Serialize};

/// The file's contents, or the default when it is absent, unreadable or corrupt.
pub fn load<T: DeserializeOwned + Default>(path: Option<&Path>, what: &str) -> T {
    let Some(p) = path else { return T::default() };
    match std::fs::read(p) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            tracing::warn!(file = %p.display(), error = %e, "{what} unreadable; starting afresh");
            T::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => T::default(),
        Err(e) => {
            tracing::warn!(file = %p.display(), error = %e, "{what} unreadable");
            T::default()
        }
    }
}

/// Writes `value` whole (logged on failure: the agent goes on with it in memory).
pub fn save<T: Serialize>(path: Option<&Path>, value: &T, what: &str) {
    let Some(path) = path else { return };
    let tmp = path.with_extension("json.tmp");
    let res = serde_json::to_vec(value)
        .map_err(std::io::Error::other)
        .and_then(|b| std::fs::write(&tmp, b))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = res {
        tracing::warn!(file = %path.display(), error = %e, "{what} not saved");
    }
}
