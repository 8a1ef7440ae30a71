//! File sensor records: opens, unlinks, renames and mode changes by processes in an
//! MCP server's tree (the kernel's `MCP_TREE` map says who is in one).

use crate::EventHeader;

/// Bytes of each path copied from user memory, the NUL included. A path of this
/// length or longer is cut to `FILE_PATH_MAX - 1` bytes and flagged
/// [`FILE_PATH_TRUNCATED`] (a path of exactly 511 bytes is flagged too: the kernel's
/// string copy cannot tell it from a longer one). A power of two, so a mask bounds it.
pub const FILE_PATH_MAX: usize = 512;

/// `FileRecord::op`.
pub const FILE_OP_OPEN: u32 = 1;
pub const FILE_OP_UNLINK: u32 = 2;
pub const FILE_OP_RENAME: u32 = 3;
pub const FILE_OP_CHMOD: u32 = 4;

/// The first path was cut at [`FILE_PATH_MAX`].
pub const FILE_PATH_TRUNCATED: u32 = 1 << 0;
/// The second path (a rename's target) was cut.
pub const FILE_PATH2_TRUNCATED: u32 = 1 << 1;
/// A path could not be read from user memory.
pub const FILE_PATH_FAULT: u32 = 1 << 2;

/// `AT_FDCWD`: a relative path is resolved against the working directory.
pub const AT_FDCWD: i32 = -100;

/// One file operation, reported at syscall exit with its result. The kernel sends
/// [`FILE_FIXED_LEN`] plus the path bytes in use: `path_len` bytes of `paths` for a
/// single path; for a rename, the whole first half and then `path2_len` bytes of the
/// target, which starts at `paths[FILE_PATH_MAX]`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FileRecord {
    pub header: EventHeader,
    /// Process id of the MCP tree's root as the agent marked it (a process marked on
    /// its own, or the one whose fork it inherited the mark from).
    pub tree_root: u32,
    /// `FILE_OP_*`.
    pub op: u32,
    /// x86_64 syscall number.
    pub nr: u32,
    /// Directory fd the path is relative to ([`AT_FDCWD`] for the working directory).
    pub dirfd: i32,
    /// A rename's target directory fd.
    pub dirfd2: i32,
    /// `open` flags (`O_*`), `unlinkat` flags, `renameat2` flags or `fchmodat2` flags.
    pub flags: u32,
    /// Mode of a created file or of a `chmod`.
    pub mode: u32,
    /// `FILE_PATH_*` flags.
    pub rflags: u32,
    /// The syscall's return value: an fd, 0, or a negative errno.
    pub ret: i64,
    /// Bytes of the first path, without the NUL.
    pub path_len: u32,
    /// Bytes of the second path (rename target), without the NUL; 0 otherwise.
    pub path2_len: u32,
    pub paths: [u8; FILE_PATH_MAX * 2],
}

/// Bytes of a [`FileRecord`] before its paths.
pub const FILE_FIXED_LEN: usize = core::mem::offset_of!(FileRecord, paths);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integer/array record.
    unsafe impl aya::Pod for super::FileRecord {}
}
