//! File sensor records (`mcpwatch_common::file`) → [`FileEvent`]s. Paths stay as the
//! process passed them (relative ones are resolved by the state stage, which may
//! read `/proc`); flags are decoded into what an analyst asks: read or write, created,
//! truncated.

use mcpwatch_common::{
    file::{
        FileRecord, FILE_FIXED_LEN, FILE_OP_CHMOD, FILE_OP_OPEN, FILE_OP_RENAME, FILE_OP_UNLINK,
        FILE_PATH2_TRUNCATED, FILE_PATH_FAULT, FILE_PATH_MAX, FILE_PATH_TRUNCATED,
    },
    EventKind,
};
use serde::{Deserialize, Serialize};

use super::record::{read_prefix, DecodeError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileOp {
    Open,
    Unlink,
    Rename,
    Chmod,
}

impl FileOp {
    pub fn name(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Unlink => "unlink",
            Self::Rename => "rename",
            Self::Chmod => "chmod",
        }
    }
}

/// How an open uses the file (`O_ACCMODE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessMode {
    Read,
    Write,
    ReadWrite,
    /// `O_PATH`: a handle without access to the content.
    Path,
}

const O_ACCMODE: u32 = 0o3;
const O_WRONLY: u32 = 0o1;
const O_RDWR: u32 = 0o2;
const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;
const O_PATH: u32 = 0o10000000;

/// One file operation by a process in an MCP tree, as the kernel reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEvent {
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    /// Root pid of the MCP tree the process is in (as the agent marked it).
    pub tree_root: u32,
    pub op: FileOp,
    /// The path as passed to the syscall (may be relative to `dirfd`).
    pub path: String,
    /// A rename's target.
    pub target: Option<String>,
    /// Directory fd of a relative path (`None`: the working directory).
    pub dirfd: Option<i32>,
    pub target_dirfd: Option<i32>,
    /// Raw `flags` argument (open flags for opens).
    pub flags: u32,
    pub mode: u32,
    /// Return value: an fd or 0 on success, a negative errno on failure.
    pub ret: i64,
    /// A path was longer than the kernel copies (`FILE_PATH_MAX` bytes).
    pub truncated: bool,
    /// A path could not be read from the process's memory.
    pub unreadable: bool,
}

impl FileEvent {
    /// The access an open asked for (`None` for other operations).
    pub fn access(&self) -> Option<AccessMode> {
        if self.op != FileOp::Open {
            return None;
        }
        Some(if self.flags & O_PATH != 0 {
            AccessMode::Path
        } else {
            match self.flags & O_ACCMODE {
                O_WRONLY => AccessMode::Write,
                O_RDWR => AccessMode::ReadWrite,
                _ => AccessMode::Read,
            }
        })
    }

    pub fn creates(&self) -> bool {
        self.op == FileOp::Open && self.flags & O_CREAT != 0
    }

    pub fn truncates(&self) -> bool {
        self.op == FileOp::Open && self.flags & O_TRUNC != 0
    }
}

fn dirfd(fd: i32) -> Option<i32> {
    (fd != mcpwatch_common::file::AT_FDCWD).then_some(fd)
}

fn text(bytes: &[u8], at: usize, len: u32) -> String {
    let len = (len as usize).min(FILE_PATH_MAX - 1);
    let end = (at + len).min(bytes.len());
    let start = at.min(end);
    String::from_utf8_lossy(&bytes[start..end]).into_owned()
}

/// Decodes a file record: its fixed part, then the paths in use.
pub fn decode_file(bytes: &[u8]) -> Result<FileEvent, DecodeError> {
    let r: FileRecord = read_prefix(bytes, EventKind::File, FILE_FIXED_LEN)?;
    let op = match r.op {
        FILE_OP_OPEN => FileOp::Open,
        FILE_OP_UNLINK => FileOp::Unlink,
        FILE_OP_RENAME => FileOp::Rename,
        FILE_OP_CHMOD => FileOp::Chmod,
        other => return Err(DecodeError::BadField("file_op", other)),
    };
    let paths = &bytes[FILE_FIXED_LEN..];
    let target = (op == FileOp::Rename).then(|| text(paths, FILE_PATH_MAX, r.path2_len));
    Ok(FileEvent {
        ts_ns: r.header.ts_ns,
        pid: r.header.pid,
        tid: r.header.tid,
        tree_root: r.tree_root,
        op,
        path: text(paths, 0, r.path_len),
        target,
        dirfd: dirfd(r.dirfd),
        target_dirfd: (op == FileOp::Rename).then(|| dirfd(r.dirfd2)).flatten(),
        flags: r.flags,
        mode: r.mode,
        ret: r.ret,
        truncated: r.rflags & (FILE_PATH_TRUNCATED | FILE_PATH2_TRUNCATED) != 0,
        unreadable: r.rflags & FILE_PATH_FAULT != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcpwatch_common::{file::AT_FDCWD, EventHeader};

    fn record(op: u32, path: &str, target: &str) -> Vec<u8> {
        let mut r = FileRecord {
            header: EventHeader {
                kind: EventKind::File as u32,
                tid: 9,
                pid: 8,
                _pad: 0,
                ts_ns: 5,
            },
            tree_root: 7,
            op,
            nr: 257,
            dirfd: AT_FDCWD,
            dirfd2: 3,
            flags: O_WRONLY | O_CREAT | O_TRUNC,
            mode: 0o600,
            rflags: 0,
            ret: 4,
            path_len: path.len() as u32,
            path2_len: target.len() as u32,
            paths: [0; FILE_PATH_MAX * 2],
        };
        r.paths[..path.len()].copy_from_slice(path.as_bytes());
        r.paths[FILE_PATH_MAX..FILE_PATH_MAX + target.len()].copy_from_slice(target.as_bytes());
        // SAFETY: reading the bytes of a plain-data struct.
        let all = unsafe {
            std::slice::from_raw_parts((&r as *const FileRecord).cast::<u8>(), size_of::<FileRecord>())
        };
        // As the kernel sends it: only the path bytes in use.
        let used = if op == FILE_OP_RENAME {
            FILE_PATH_MAX + target.len()
        } else {
            path.len()
        };
        all[..FILE_FIXED_LEN + used].to_vec()
    }

    #[test]
    fn an_open_decodes_with_its_access_and_result() {
        let e = decode_file(&record(FILE_OP_OPEN, ".aws/credentials", "")).unwrap();
        assert_eq!(e.path, ".aws/credentials");
        assert_eq!((e.pid, e.tid, e.tree_root, e.ret), (8, 9, 7, 4));
        assert_eq!(e.dirfd, None);
        assert_eq!(e.target, None);
        assert_eq!(e.access(), Some(AccessMode::Write));
        assert!(e.creates() && e.truncates());
    }

    #[test]
    fn a_rename_carries_its_target_and_target_dirfd() {
        let e = decode_file(&record(FILE_OP_RENAME, "a", "/root/.ssh/id_rsa")).unwrap();
        assert_eq!(e.op, FileOp::Rename);
        assert_eq!(e.target.as_deref(), Some("/root/.ssh/id_rsa"));
        assert_eq!(e.target_dirfd, Some(3));
        assert_eq!(e.access(), None);
    }

    #[test]
    fn bad_input_is_a_counted_error_not_a_panic() {
        let mut bytes = record(FILE_OP_OPEN, "x", "");
        bytes[std::mem::offset_of!(FileRecord, op)] = 77;
        assert_eq!(decode_file(&bytes), Err(DecodeError::BadField("file_op", 77)));
        assert!(matches!(
            decode_file(&bytes[..FILE_FIXED_LEN - 1]),
            Err(DecodeError::Short { .. })
        ));
        // Lengths that lie are clamped to what was sent.
        let mut lying = record(FILE_OP_OPEN, "abc", "");
        lying[std::mem::offset_of!(FileRecord, path_len)] = 0xff;
        lying[std::mem::offset_of!(FileRecord, path_len) + 1] = 0xff;
        assert_eq!(decode_file(&lying).unwrap().path, "abc");
    }
}
