//! Typed arguments of the `syscalls:sys_enter_*` / `sys_exit_*` tracepoints, instead
//! of raw offsets into their records (Kunai's `SysEnterArgs<A>`).
//!
//! Every syscall tracepoint record starts with the 8-byte common header and the
//! syscall number (padded to 8); then come the arguments, each widened to 8 bytes, as
//! the tracepoint's `format` file lists them, or, on exit, the return value. Each
//! argument struct below names its fields after that file.

use aya_ebpf::programs::TracePointContext;

/// Bytes before the first argument (or the return value).
const ARGS_OFFSET: usize = 16;

/// The arguments of one syscall entry, typed by `A` (one of the structs below).
/// Unreadable arguments read as zero, as the kernel's own NULL would.
#[inline(always)]
pub fn enter_args<A: Copy + Default>(ctx: &TracePointContext) -> A {
    unsafe { ctx.read_at::<A>(ARGS_OFFSET) }.unwrap_or_default()
}

/// A syscall's return value, or `unreadable` when it cannot be read.
#[inline(always)]
pub fn exit_ret(ctx: &TracePointContext, unreadable: i64) -> i64 {
    unsafe { ctx.read_at::<i64>(ARGS_OFFSET) }.unwrap_or(unreadable)
}

/// `execve(filename, argv, envp)`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Execve {
    pub filename: u64,
    pub argv: u64,
    pub envp: u64,
}

/// `execveat(fd, filename, argv, envp, flags)`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Execveat {
    pub fd: u64,
    pub filename: u64,
    pub argv: u64,
    pub envp: u64,
    pub flags: u64,
}

/// `clone(clone_flags, …)`: only the flags are read.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct CloneArgs {
    pub clone_flags: u64,
}

/// `clone3(uargs, size)`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Clone3 {
    pub uargs: u64,
    pub size: u64,
}

/// `exit(error_code)` and `exit_group(error_code)`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Exit {
    pub error_code: u64,
}

/// `socket(family, type, protocol)`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Socket {
    pub family: u64,
    pub sock_type: u64,
    pub protocol: u64,
}

/// `connect(fd, uservaddr, addrlen)` and `bind(fd, umyaddr, addrlen)`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct SockaddrCall {
    pub fd: u64,
    pub addr: u64,
    pub addrlen: u64,
}

/// `listen(fd, backlog)`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Listen {
    pub fd: u64,
    pub backlog: u64,
}

/// `accept(fd, upeer_sockaddr, upeer_addrlen)`; `accept4` adds `flags`, not read.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Accept {
    pub fd: u64,
    pub upeer_sockaddr: u64,
    pub upeer_addrlen: u64,
}

/// `sendto(fd, buff, len, flags, addr, addr_len)`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Sendto {
    pub fd: u64,
    pub buff: u64,
    pub len: u64,
    pub flags: u64,
    pub addr: u64,
    pub addr_len: u64,
}

/// `sendmsg(fd, msg, flags)`, `sendmmsg(fd, mmsg, vlen, flags)`, `recvmsg(fd, msg,
/// flags)`, `recvfrom(fd, ubuf, …)`: the fd and the first pointer.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct FdAndBuffer {
    pub fd: u64,
    pub ptr: u64,
}
