//! File sensor: opens (`open`, `openat`, `openat2`, `creat`), unlinks, renames and
//! mode changes by processes in an MCP server's tree, with their paths and results.
//!
//! Cost model: the arguments are taken in the payload sensor's existing raw
//! `sys_enter` hook (`enter`), where a process outside every MCP tree costs one
//! array lookup more, on these syscalls only; results are taken on the classic exit
//! tracepoints of these syscalls alone, where a thread with nothing pending costs one
//! array lookup. Membership (`MCP_TREE`) is set by the agent for suspected and
//! confirmed servers and inherited here at fork, before the child can run, so a
//! child that opens a file right after its fork is in the tree already.
//!
//! Paths are read from user memory at exit, after the kernel itself has read them; a
//! process that rewrites its buffer in between (racing its own syscall) could show a
//! different path, as with every tracer that does not hook the VFS.

use core::ptr::addr_of_mut;

use aya_ebpf::{
    helpers::generated::{bpf_probe_read_kernel, bpf_probe_read_user, bpf_probe_read_user_str},
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
};
use mcpwatch_common::{
    file::{
        FileRecord, AT_FDCWD, FILE_FIXED_LEN, FILE_OP_CHMOD, FILE_OP_OPEN, FILE_OP_RENAME, FILE_OP_UNLINK,
        FILE_PATH2_TRUNCATED, FILE_PATH_FAULT, FILE_PATH_MAX, FILE_PATH_TRUNCATED,
    },
    EventKind,
};

use crate::{
    maps::{count_drop, header, submit_flags},
    syscall::exit_ret,
    task::tid,
};

#[map(name = "FILE_EVENTS")]
static FILE_EVENTS: RingBuf = RingBuf::with_byte_size(2 << 20, 0);

/// MCP tree membership by pid: the root's pid, 0 for none. Sized to `pid_max`.
#[map(name = "MCP_TREE")]
static MCP_TREE: Array<u32> = Array::with_max_entries(32768, 0);

/// A file syscall's arguments from entry to exit, by thread id. Sized to `pid_max`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingFile {
    path: u64,
    path2: u64,
    nr: u32,
    valid: u32,
    tree_root: u32,
    dirfd: i32,
    dirfd2: i32,
    flags: u32,
    mode: u32,
    _pad: u32,
}

#[map(name = "PENDING_FILE")]
static PENDING_FILE: Array<PendingFile> = Array::with_max_entries(32768, 0);

/// A record under construction, with a path's worth of slack so that every copy and
/// the length sent have bounds the verifier can prove.
#[repr(C)]
pub struct FileOut {
    rec: FileRecord,
    slack: [u8; FILE_PATH_MAX],
}

#[map]
static FILE_OUT: PerCpuArray<FileOut> = PerCpuArray::with_max_entries(1, 0);

// x86_64 syscall numbers.
pub const SYS_OPEN: u64 = 2;
pub const SYS_CREAT: u64 = 85;
pub const SYS_RENAME: u64 = 82;
pub const SYS_UNLINK: u64 = 87;
pub const SYS_CHMOD: u64 = 90;
pub const SYS_OPENAT: u64 = 257;
pub const SYS_UNLINKAT: u64 = 263;
pub const SYS_RENAMEAT: u64 = 264;
pub const SYS_FCHMODAT: u64 = 268;
pub const SYS_RENAMEAT2: u64 = 316;
pub const SYS_OPENAT2: u64 = 437;
pub const SYS_FCHMODAT2: u64 = 452;

/// `creat(path, mode)` is `open(path, O_CREAT | O_WRONLY | O_TRUNC, mode)`.
const CREAT_FLAGS: u32 = 0o100 | 0o1 | 0o1000;

/// Whether `nr` is one of the syscalls this sensor reports.
#[inline(always)]
pub fn is_file_syscall(nr: u64) -> bool {
    matches!(
        nr,
        SYS_OPEN
            | SYS_CREAT
            | SYS_RENAME
            | SYS_UNLINK
            | SYS_CHMOD
            | SYS_OPENAT
            | SYS_UNLINKAT
            | SYS_RENAMEAT
            | SYS_FCHMODAT
            | SYS_RENAMEAT2
            | SYS_OPENAT2
            | SYS_FCHMODAT2
    )
}

#[inline(always)]
unsafe fn kread_u64(addr: u64) -> u64 {
    let mut v = 0u64;
    unsafe { bpf_probe_read_kernel(addr_of_mut!(v).cast(), 8, addr as *const _) };
    v
}

/// Syscall entry (from the raw `sys_enter` hook, `regs` its `struct pt_regs *`):
/// notes the arguments of a tree member's file syscall for its exit.
#[inline(always)]
pub fn enter(regs: u64, nr: u64, pid: u32) {
    let tree_root = match MCP_TREE.get(pid) {
        Some(r) if *r != 0 => *r,
        _ => return,
    };
    // x86_64 `struct pt_regs` (uapi layout): di @112, si @104, dx @96, r10 @56, r8 @72.
    let (a0, a1, a2, a3, a4) = unsafe {
        (
            kread_u64(regs + 112),
            kread_u64(regs + 104),
            kread_u64(regs + 96),
            kread_u64(regs + 56),
            kread_u64(regs + 72),
        )
    };
    // (path, path2, dirfd, dirfd2, flags, mode)
    let (path, path2, dirfd, dirfd2, flags, mode) = match nr {
        SYS_OPEN => (a0, 0, AT_FDCWD, 0, a1 as u32, a2 as u32),
        SYS_CREAT => (a0, 0, AT_FDCWD, 0, CREAT_FLAGS, a1 as u32),
        SYS_OPENAT => (a1, 0, a0 as i32, 0, a2 as u32, a3 as u32),
        SYS_OPENAT2 => {
            // `struct open_how { u64 flags; u64 mode; u64 resolve; }`.
            let mut how = [0u64; 2];
            unsafe { bpf_probe_read_user(how.as_mut_ptr().cast(), 16, a2 as *const _) };
            (a1, 0, a0 as i32, 0, how[0] as u32, how[1] as u32)
        }
        SYS_UNLINK => (a0, 0, AT_FDCWD, 0, 0, 0),
        SYS_UNLINKAT => (a1, 0, a0 as i32, 0, a2 as u32, 0),
        SYS_RENAME => (a0, a1, AT_FDCWD, AT_FDCWD, 0, 0),
        SYS_RENAMEAT => (a1, a3, a0 as i32, a2 as i32, 0, 0),
        SYS_RENAMEAT2 => (a1, a3, a0 as i32, a2 as i32, a4 as u32, 0),
        SYS_CHMOD => (a0, 0, AT_FDCWD, 0, 0, a1 as u32),
        SYS_FCHMODAT => (a1, 0, a0 as i32, 0, 0, a2 as u32),
        // fchmodat2(dfd, path, mode, flags)
        _ => (a1, 0, a0 as i32, 0, a3 as u32, a2 as u32),
    };
    let _ = PENDING_FILE.set(
        tid(),
        PendingFile {
            path,
            path2,
            nr: nr as u32,
            valid: 1,
            tree_root,
            dirfd,
            dirfd2,
            flags,
            mode,
            _pad: 0,
        },
        0,
    );
}

/// A child process joins its parent's tree (from `sched_process_fork`, in the parent,
/// before the child first runs).
#[inline(always)]
pub fn inherit_tree(parent: u32, child: u32) {
    if let Some(r) = MCP_TREE.get(parent) {
        if *r != 0 {
            let _ = MCP_TREE.set(child, *r, 0);
        }
    }
}

/// The process is gone: its pid may be reused by anyone.
#[inline(always)]
pub fn leave_tree(pid: u32) {
    if let Some(r) = MCP_TREE.get_ptr_mut(pid) {
        unsafe { *r = 0 };
    }
}

fn op_of(nr: u32) -> u32 {
    match nr as u64 {
        SYS_UNLINK | SYS_UNLINKAT => FILE_OP_UNLINK,
        SYS_RENAME | SYS_RENAMEAT | SYS_RENAMEAT2 => FILE_OP_RENAME,
        SYS_CHMOD | SYS_FCHMODAT | SYS_FCHMODAT2 => FILE_OP_CHMOD,
        _ => FILE_OP_OPEN,
    }
}

/// Copies one user string into `dst` (room for `FILE_PATH_MAX` bytes plus slack):
/// its length without the NUL, and whether it was cut or unreadable.
#[inline(always)]
fn read_path(dst: *mut u8, src: u64) -> (u32, bool, bool) {
    if src == 0 {
        return (0, false, true);
    }
    let n = unsafe { bpf_probe_read_user_str(dst.cast(), FILE_PATH_MAX as u32, src as *const _) };
    if n <= 0 {
        return (0, false, true);
    }
    let n = n as u32;
    (n - 1, n as usize >= FILE_PATH_MAX, false)
}

/// Syscall exit: sends the record of a pending file syscall of `nr`.
#[inline(always)]
fn finish(ctx: &aya_ebpf::programs::TracePointContext, nr: u64) -> u32 {
    let tid = tid();
    let Some(p) = PENDING_FILE.get_ptr_mut(tid) else {
        return 0;
    };
    let p = unsafe { &mut *p };
    if p.valid == 0 {
        return 0;
    }
    p.valid = 0;
    // An entry left by a syscall whose exit never fired (thread killed) is not this one.
    if p.nr as u64 != nr {
        return 0;
    }
    let Some(out) = FILE_OUT.get_ptr_mut(0) else {
        return 0;
    };
    let rec = unsafe { addr_of_mut!((*out).rec) };
    let r = unsafe { &mut *rec };
    r.header = header(EventKind::File);
    r.tree_root = p.tree_root;
    r.op = op_of(p.nr);
    r.nr = p.nr;
    r.dirfd = p.dirfd;
    r.dirfd2 = p.dirfd2;
    r.flags = p.flags;
    r.mode = p.mode;
    r.ret = exit_ret(ctx, 0);
    let base = r.paths.as_mut_ptr();
    let (len, cut, fault) = read_path(base, p.path);
    let mut rflags = 0;
    if cut {
        rflags |= FILE_PATH_TRUNCATED;
    }
    if fault {
        rflags |= FILE_PATH_FAULT;
    }
    r.path_len = len;
    r.path2_len = 0;
    let mut used = len as usize;
    if r.op == FILE_OP_RENAME {
        let (len2, cut2, fault2) = read_path(unsafe { base.add(FILE_PATH_MAX) }, p.path2);
        if cut2 {
            rflags |= FILE_PATH2_TRUNCATED;
        }
        if fault2 {
            rflags |= FILE_PATH_FAULT;
        }
        r.path2_len = len2;
        used = FILE_PATH_MAX + len2 as usize;
    }
    r.rflags = rflags;
    // The mask is a no-op (used < 2 × FILE_PATH_MAX) that bounds the size for the verifier.
    let size = FILE_FIXED_LEN + (used & (FILE_PATH_MAX * 2 - 1));
    let bytes = unsafe { core::slice::from_raw_parts(out.cast::<u8>(), size) };
    if FILE_EVENTS
        .output::<[u8]>(bytes, submit_flags(&FILE_EVENTS))
        .is_err()
    {
        count_drop(EventKind::File);
    }
    0
}

macro_rules! file_exit {
    ($($name:ident => $nr:expr,)+) => {
        $(
            tracepoint! {
                fn $name(ctx) {
                    finish(&ctx, $nr)
                }
            }
        )+
    };
}

file_exit! {
    file_exit_open => SYS_OPEN,
    file_exit_creat => SYS_CREAT,
    file_exit_openat => SYS_OPENAT,
    file_exit_openat2 => SYS_OPENAT2,
    file_exit_unlink => SYS_UNLINK,
    file_exit_unlinkat => SYS_UNLINKAT,
    file_exit_rename => SYS_RENAME,
    file_exit_renameat => SYS_RENAMEAT,
    file_exit_renameat2 => SYS_RENAMEAT2,
    file_exit_chmod => SYS_CHMOD,
    file_exit_fchmodat => SYS_FCHMODAT,
    file_exit_fchmodat2 => SYS_FCHMODAT2,
}
