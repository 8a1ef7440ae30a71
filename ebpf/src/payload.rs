//! Payload sensor: bounded prefixes of what processes with a capture budget write to
//! or read from pipes and stream sockets (AF_UNIX, TCP), for MCP recognition.
//!
//! Cost model (see the README): one raw tracepoint on `sys_enter` (≈30 ns on this
//! kernel, for every syscall) and the classic exit tracepoints of the read family
//! (only reads and receives pay them); for processes without a budget nothing more
//! than an array lookup. Processes get a budget at exec
//! (a few records, a bounded number of examined calls, a deadline), on accept, or
//! from the agent for suspected MCP servers; only calls on pipes and stream sockets
//! whose first bytes look like JSON, HTTP or SSE are copied out.
//! Records are counted by channel (see `Budget`): the stdio wire the process was
//! exec'd with, other stream sockets, and other pipes (stderr, log pipes) each have
//! their own pool, so a flood on one never spends what another needs.

use core::mem::size_of;

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task,
        generated::{bpf_ktime_get_boot_ns, bpf_loop, bpf_probe_read_kernel, bpf_probe_read_user},
    },
    macros::{map, raw_tracepoint, tracepoint},
    maps::{Array, PerCpuArray, RingBuf},
    programs::{RawTracePointContext, TracePointContext},
};
use mcpwatch_common::{
    payload::{
        join_head, prefilter, Budget, FileWalk, PayloadHeader, CHANNEL_PIPE, CHANNEL_TCP, CHANNEL_UNIX,
        COPY_PREFIX, COPY_SESSION, COPY_WHOLE, EXEC_SIDE_RECORDS, OP_READ, OP_WRITE, PAYLOAD_MAX,
        PAYLOAD_TRUNCATED, POOL_SIDE, SESSION_CHUNKS,
    },
    EventHeader, EventKind,
};

use crate::maps::{count_drop, submit_flags};

#[map(name = "PAYLOAD_EVENTS")]
static PAYLOAD_EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Capture budget by pid; the agent sizes it to `kernel.pid_max` at load.
#[map(name = "CAPTURE_BUDGET")]
static CAPTURE_BUDGET: Array<Budget> = Array::with_max_entries(32768, 0);

/// A read in flight (buffer known at entry, length at exit), by thread id.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingRead {
    buf: u64,
    inode: u64,
    sk: u64,
    /// 0: `buf` is a plain buffer; otherwise `buf` points at this many iovecs.
    iovcnt: u32,
    fd: i32,
    channel: u8,
    valid: u8,
    /// Syscall number of the read, matched at its exit.
    nr: u16,
    /// The budget pool the read spends (`POOL_*`).
    pool: u8,
    /// How the read is copied (`Budget::session` for its pool, `COPY_*`).
    session: u8,
    _pad: [u8; 2],
}

#[map]
static PENDING_READ: Array<PendingRead> = Array::with_max_entries(32768, 0);

/// Record under construction: header then data, with one buffer's worth of slack so
/// every copy has a verifier-provable bound.
#[repr(C)]
pub struct Scratch {
    hdr: PayloadHeader,
    data: [u8; PAYLOAD_MAX * 2],
}

#[map]
static PAYLOAD_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

#[unsafe(no_mangle)]
static FILE_WALK: FileWalk = FileWalk {
    task_files: 0,
    files_fdt: 0,
    fdt_max_fds: 0,
    fdt_fd: 0,
    file_inode: 0,
    file_private_data: 0,
    inode_mode: 0,
    inode_ino: 0,
    socket_type: 0,
    socket_sk: 0,
    sock_common_family: 0,
    skc_num: 0,
    skc_dport: 0,
    skc_rcv_saddr: 0,
    skc_daddr: 0,
    skc_v6_rcv_saddr: 0,
    skc_v6_daddr: 0,
    valid: 0,
};
#[unsafe(no_mangle)]
static EXEC_BUDGET_RECORDS: u32 = 64;
#[unsafe(no_mangle)]
static EXEC_BUDGET_PROBES: u32 = 65536;
#[unsafe(no_mangle)]
static EXEC_BUDGET_SECS: u64 = 30;

/// Budget an accepted connection gives its server: the first request and response.
const ACCEPT_RECORDS: u32 = 8;
const ACCEPT_PROBES: u32 = 256;
const ACCEPT_SECS: u64 = 10;

// x86_64 syscall numbers.
const SYS_READ: u64 = 0;
const SYS_WRITE: u64 = 1;
const SYS_READV: u64 = 19;
const SYS_WRITEV: u64 = 20;
const SYS_ACCEPT: u64 = 43;
const SYS_SENDTO: u64 = 44;
const SYS_RECVFROM: u64 = 45;
const SYS_SENDMSG: u64 = 46;
const SYS_RECVMSG: u64 = 47;
const SYS_ACCEPT4: u64 = 288;

/// iovecs examined per vectored call. Node's chunked HTTP writes 4 per chunk (size,
/// CRLF, data, CRLF) plus the head: the TS SDK's first SSE answer (priming event, then
/// the result) is one `writev` of 8. A call with more is flagged truncated.
const MAX_IOV: u32 = 8;
const S_IFMT: u16 = 0o170000;
const S_IFIFO: u16 = 0o010000;
const S_IFSOCK: u16 = 0o140000;
const SOCK_STREAM: u16 = 1;
const AF_UNIX: u16 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

#[inline(always)]
fn global<T: Copy>(v: &T) -> T {
    // The loader patches globals into the object: never let the compiler fold them.
    unsafe { core::ptr::read_volatile(v) }
}

#[inline(always)]
fn now_ns() -> u64 {
    unsafe { bpf_ktime_get_boot_ns() }
}

/// Called by the process sensor when `pid` execs: a fresh budget, and the channels
/// its stdio is on (the wire an MCP client speaks on, wherever the process moves it).
#[inline(always)]
pub fn grant_exec_budget(pid: u32) {
    let secs = global(&EXEC_BUDGET_SECS);
    let records = global(&EXEC_BUDGET_RECORDS);
    let b = Budget {
        records,
        probes: global(&EXEC_BUDGET_PROBES),
        deadline_ns: if secs == 0 {
            0
        } else {
            now_ns() + secs * 1_000_000_000
        },
        sockets: records,
        side: EXEC_SIDE_RECORDS,
        stdio: [stdio_inode(0), stdio_inode(1), stdio_inode(2)],
        // Whole calls: a fresh server's first answers (a long `tools/list` right
        // after its handshake) are written before the agent can have confirmed it.
        // The record pools bound the cost as they bound prefixes.
        session: COPY_WHOLE,
        _pad: 0,
    };
    let _ = CAPTURE_BUDGET.set(pid, b, 0);
}

#[inline(always)]
fn stdio_inode(fd: i32) -> u64 {
    match classify_fd(fd) {
        Some((_, ino, _)) => ino,
        None => 0,
    }
}

/// Called by the process sensor when `parent` forks `child` (a new process, not a
/// thread): the child goes on with what is left of its parent's budget, so serving
/// from a forked child is no way around it.
#[inline(always)]
pub fn inherit_budget(parent: u32, child: u32) {
    if child == 0 {
        return;
    }
    let b = match CAPTURE_BUDGET.get(parent) {
        Some(b) if b.live() => *b,
        // Never a previous holder of the pid's leftovers.
        _ => Budget::default(),
    };
    let _ = CAPTURE_BUDGET.set(child, b, 0);
}

/// Called by the process sensor when the last thread of `pid` exits.
#[inline(always)]
pub fn clear_budget(pid: u32) {
    let _ = CAPTURE_BUDGET.set(pid, Budget::default(), 0);
}

/// Whether the current process may still capture; spends one probe.
#[inline(always)]
fn spend_probe(pid: u32) -> bool {
    let Some(b) = CAPTURE_BUDGET.get_ptr_mut(pid) else {
        return false;
    };
    let b = unsafe { &mut *b };
    if !b.live() {
        return false;
    }
    if b.probes == 0 || (b.deadline_ns != 0 && now_ns() > b.deadline_ns) {
        b.void();
        return false;
    }
    b.probes -= 1;
    true
}

/// The pool a call on this channel spends, if it has records left: a call on a
/// channel whose pool is spent is dropped here, before anything is read.
#[inline(always)]
fn pool_for(pid: u32, channel: u8, inode: u64) -> Option<(u8, u8)> {
    let b = CAPTURE_BUDGET.get(pid)?;
    let pool = b.pool(inode, channel == CHANNEL_PIPE);
    if b.left(pool) == 0 {
        return None;
    }
    let copy = if pool == POOL_SIDE { COPY_PREFIX } else { b.session };
    Some((pool, copy as u8))
}

#[inline(always)]
fn spend_record(pid: u32, pool: u8) {
    if let Some(b) = CAPTURE_BUDGET.get_ptr_mut(pid) {
        unsafe { (*b).spend(pool) };
    }
}

#[inline(always)]
unsafe fn kread<T: Copy + Default>(addr: u64) -> T {
    let mut v = T::default();
    let r =
        unsafe { bpf_probe_read_kernel((&mut v as *mut T).cast(), size_of::<T>() as u32, addr as *const _) };
    if r != 0 {
        T::default()
    } else {
        v
    }
}

/// fd → (channel kind, inode, sock pointer for TCP) for pipes and stream sockets
/// (unix, inet); `None` for anything else (regular files, devices, datagram sockets)
/// or an unknown fd.
#[inline(always)]
fn classify_fd(fd: i32) -> Option<(u8, u64, u64)> {
    let w: FileWalk = global(&FILE_WALK);
    if w.valid == 0 || fd < 0 {
        return None;
    }
    unsafe {
        let task = bpf_get_current_task();
        let files: u64 = kread(task + w.task_files as u64);
        if files == 0 {
            return None;
        }
        let fdt: u64 = kread(files + w.files_fdt as u64);
        let max_fds: u32 = kread(fdt + w.fdt_max_fds as u64);
        if fd as u32 >= max_fds {
            return None;
        }
        let fd_array: u64 = kread(fdt + w.fdt_fd as u64);
        let file: u64 = kread(fd_array + (fd as u64) * 8);
        if file == 0 {
            return None;
        }
        let inode: u64 = kread(file + w.file_inode as u64);
        let mode: u16 = kread(inode + w.inode_mode as u64);
        let ino: u64 = kread(inode + w.inode_ino as u64);
        match mode & S_IFMT {
            S_IFIFO => Some((CHANNEL_PIPE, ino, 0)),
            S_IFSOCK => {
                let sock: u64 = kread(file + w.file_private_data as u64);
                let ty: u16 = kread(sock + w.socket_type as u64);
                let sk: u64 = kread(sock + w.socket_sk as u64);
                let family: u16 = kread(sk + w.sock_common_family as u64);
                match (ty, family) {
                    (SOCK_STREAM, AF_UNIX) => Some((CHANNEL_UNIX, ino, 0)),
                    (SOCK_STREAM, AF_INET | AF_INET6) => Some((CHANNEL_TCP, ino, sk)),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

/// Up to the first 8 bytes of a user buffer of `len` bytes, zero-padded, and how many.
#[inline(always)]
fn read_head(addr: u64, len: u64) -> Option<([u8; 8], usize)> {
    let mut head = [0u8; 8];
    let n = if len < 8 { len as usize } else { 8 };
    if n == 0 || unsafe { bpf_probe_read_user(head.as_mut_ptr().cast(), n as u32, addr as *const _) } != 0 {
        return None;
    }
    Some((head, n))
}

/// Copies up to `len` bytes from a user buffer (`iovcnt == 0`) or from the first
/// iovecs, filters, and emits one record.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn capture(
    pid: u32,
    pool: u8,
    op: u8,
    fd: i32,
    channel: u8,
    inode: u64,
    sk: u64,
    buf: u64,
    iovcnt: u32,
    len: u64,
    more_iov: bool,
) {
    if len == 0 || buf == 0 {
        return;
    }
    // The first 8 bytes decide the filter. A vectored write may split them: Node's
    // chunked encoding writes the chunk size ("7f9") and its CRLF as separate iovecs.
    let (head, n) = if iovcnt == 0 {
        match read_head(buf, len) {
            Some(h) => h,
            None => return,
        }
    } else {
        let mut iov = [0u64; 4];
        let two = if iovcnt > 1 { 32 } else { 16 };
        if unsafe { bpf_probe_read_user(iov.as_mut_ptr().cast(), two, buf as *const _) } != 0 {
            return;
        }
        let first_len = iov[1].min(len);
        let (h0, n0) = if first_len == 0 {
            ([0u8; 8], 0)
        } else {
            match read_head(iov[0], first_len) {
                Some(h) => h,
                None => return,
            }
        };
        if n0 < 8 && iovcnt > 1 && iov[3] > 0 {
            let want = (8 - n0) as u64;
            let Some((h1, n1)) = read_head(iov[2], iov[3].min(want).min(len - first_len)) else {
                return;
            };
            join_head(&h0, n0, &h1, n1)
        } else {
            (h0, n0)
        }
    };
    if n == 0 || !prefilter(&head, n) {
        return;
    }
    let Some(s) = PAYLOAD_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let s = unsafe { &mut *s };
    let base = s.data.as_mut_ptr();
    let mut off: usize = 0;
    let mut remaining = len;
    if iovcnt == 0 {
        let take = if len > PAYLOAD_MAX as u64 {
            PAYLOAD_MAX
        } else {
            len as usize
        };
        if unsafe {
            bpf_probe_read_user(
                base.cast(),
                (take & (PAYLOAD_MAX * 2 - 1)) as u32,
                buf as *const _,
            )
        } != 0
        {
            return;
        }
        off = take;
    } else {
        for i in 0..MAX_IOV {
            if i >= iovcnt || off >= PAYLOAD_MAX || remaining == 0 {
                break;
            }
            let mut iov = [0u64; 2];
            let at = buf + (i as u64) * 16;
            if unsafe { bpf_probe_read_user(iov.as_mut_ptr().cast(), 16, at as *const _) } != 0 {
                break;
            }
            let seg = iov[1].min(remaining);
            let room = (PAYLOAD_MAX - off) as u64;
            let take = seg.min(room) as usize;
            if take > 0 {
                let dst = unsafe { base.add(off & (PAYLOAD_MAX - 1)) };
                if unsafe {
                    bpf_probe_read_user(
                        dst.cast(),
                        (take & (PAYLOAD_MAX * 2 - 1)) as u32,
                        iov[0] as *const _,
                    )
                } != 0
                {
                    break;
                }
            }
            off += take;
            remaining -= seg;
        }
    }
    emit(
        s,
        pid,
        pool,
        op,
        fd,
        channel,
        inode,
        sk,
        len,
        off,
        (off as u64) < len || more_iov,
    );
}

/// One audited call being copied by `bpf_loop` (the verifier checks the loop body
/// once, not once per record).
#[repr(C)]
struct WholeCall {
    buf: u64,
    len: u64,
    inode: u64,
    sk: u64,
    pid: u32,
    fd: i32,
    pool: u8,
    op: u8,
    channel: u8,
    _pad: [u8; 5],
}

/// Copies an audited session's call in `PAYLOAD_MAX` records, in order, up to
/// `SESSION_CHUNKS` of them; the last is marked truncated when the call was longer.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn capture_whole(
    pid: u32,
    pool: u8,
    copy: u8,
    op: u8,
    fd: i32,
    channel: u8,
    inode: u64,
    sk: u64,
    buf: u64,
    len: u64,
) {
    if copy != COPY_SESSION as u8 {
        match read_head(buf, len) {
            Some((head, n)) if prefilter(&head, n) => {}
            _ => return,
        }
    }
    let mut call = WholeCall {
        buf,
        len,
        inode,
        sk,
        pid,
        fd,
        pool,
        op,
        channel,
        _pad: [0; 5],
    };
    let chunks = len.div_ceil(PAYLOAD_MAX as u64).min(SESSION_CHUNKS as u64) as u32;
    unsafe {
        bpf_loop(
            chunks,
            copy_chunk as *mut core::ffi::c_void,
            (&mut call as *mut WholeCall).cast(),
            0,
        )
    };
}

/// `bpf_loop` body: record `i` of the call; 1 stops the loop.
#[inline(never)]
extern "C" fn copy_chunk(i: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let c = unsafe { &*(ctx as *const WholeCall) };
    let Some(s) = PAYLOAD_SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    let s = unsafe { &mut *s };
    let start = i * PAYLOAD_MAX as u64;
    if start >= c.len {
        return 1;
    }
    let rest = c.len - start;
    let take = if rest > PAYLOAD_MAX as u64 {
        PAYLOAD_MAX
    } else {
        rest as usize
    };
    if unsafe {
        bpf_probe_read_user(
            s.data.as_mut_ptr().cast(),
            (take & (PAYLOAD_MAX * 2 - 1)) as u32,
            (c.buf + start) as *const _,
        )
    } != 0
    {
        return 1;
    }
    // Each record carries its own part of the call (`total_len` = its bytes), but the
    // last one allowed says how much of the call was left: the agent sees the cut.
    let last = i + 1 == SESSION_CHUNKS as u64;
    let part = if last { rest } else { take as u64 };
    let truncated = last && rest > take as u64;
    if emit(
        s, c.pid, c.pool, c.op, c.fd, c.channel, c.inode, c.sk, part, take, truncated,
    ) {
        0
    } else {
        1
    }
}

/// Fills the header of the record in `s` (`off` bytes of data) and sends it; false if
/// the ring was full (counted).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn emit(
    s: &mut Scratch,
    pid: u32,
    pool: u8,
    op: u8,
    fd: i32,
    channel: u8,
    inode: u64,
    sk: u64,
    len: u64,
    off: usize,
    truncated: bool,
) -> bool {
    let pid_tgid = bpf_get_current_pid_tgid();
    s.hdr = PayloadHeader {
        header: EventHeader {
            kind: EventKind::Payload as u32,
            tid: pid_tgid as u32,
            pid,
            _pad: 0,
            ts_ns: now_ns(),
        },
        inode,
        fd,
        total_len: len as u32,
        cap_len: off as u32,
        op,
        channel,
        // Bytes past the copy, or iovecs past MAX_IOV (a write's length counts only
        // the examined ones), are missing.
        flags: if truncated { PAYLOAD_TRUNCATED } else { 0 },
        _pad: 0,
        family: 0,
        lport: 0,
        rport: 0,
        _pad2: 0,
        laddr: [0; 16],
        raddr: [0; 16],
    };
    if sk != 0 {
        read_tuple(sk, &mut s.hdr);
    }
    // The mask is a no-op (off ≤ PAYLOAD_MAX) that bounds the size for the verifier.
    let size = size_of::<PayloadHeader>() + (off & (PAYLOAD_MAX * 2 - 1));
    let bytes = unsafe { core::slice::from_raw_parts((s as *const Scratch).cast::<u8>(), size) };
    match PAYLOAD_EVENTS.output::<[u8]>(bytes, submit_flags(&PAYLOAD_EVENTS)) {
        Ok(()) => {
            spend_record(pid, pool);
            true
        }
        Err(_) => {
            count_drop(EventKind::Payload);
            false
        }
    }
}

/// The TCP connection's addresses, from `struct sock_common`.
#[inline(always)]
fn read_tuple(sk: u64, h: &mut PayloadHeader) {
    let w: FileWalk = global(&FILE_WALK);
    unsafe {
        h.family = kread(sk + w.sock_common_family as u64);
        h.lport = kread(sk + w.skc_num as u64);
        h.rport = u16::from_be(kread(sk + w.skc_dport as u64));
        if h.family == AF_INET6 {
            h.laddr = kread(sk + w.skc_v6_rcv_saddr as u64);
            h.raddr = kread(sk + w.skc_v6_daddr as u64);
        } else {
            let l: [u8; 4] = kread(sk + w.skc_rcv_saddr as u64);
            let r: [u8; 4] = kread(sk + w.skc_daddr as u64);
            h.laddr[..4].copy_from_slice(&l);
            h.raddr[..4].copy_from_slice(&r);
        }
    }
}

#[inline(always)]
unsafe fn regs_args(regs: u64) -> [u64; 3] {
    // x86_64 `struct pt_regs` (uapi layout): di @112, si @104, dx @96.
    unsafe { [kread(regs + 112), kread(regs + 104), kread(regs + 96)] }
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn payload_sys_enter(ctx: RawTracePointContext) -> i32 {
    if crate::maps::floor() {
        return 0;
    }
    let id: u64 = ctx.arg(1);
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // The file sensor shares this hook: its syscalls cost no second program.
    if crate::file::is_file_syscall(id) {
        crate::file::enter(ctx.arg(0), id, pid);
        return 0;
    }
    match id {
        SYS_ACCEPT | SYS_ACCEPT4 => {
            grant_accept_budget(pid);
            return 0;
        }
        SYS_WRITE | SYS_WRITEV | SYS_SENDTO | SYS_SENDMSG | SYS_READ | SYS_READV | SYS_RECVFROM
        | SYS_RECVMSG => {}
        _ => return 0,
    }
    if !spend_probe(pid) {
        return 0;
    }
    let regs: u64 = ctx.arg(0);
    let [fd, a1, a2] = unsafe { regs_args(regs) };
    let fd = fd as i32;
    let Some((channel, inode, sk)) = classify_fd(fd) else {
        return 0;
    };
    let Some((pool, session)) = pool_for(pid, channel, inode) else {
        return 0;
    };
    // (buffer or iovec array, iovec count or 0, length bound)
    let (buf, raw_iovcnt, len) = match id {
        SYS_WRITE | SYS_SENDTO | SYS_READ | SYS_RECVFROM => (a1, 0, a2),
        SYS_WRITEV | SYS_READV => (a1, a2, u64::MAX),
        // sendmsg/recvmsg(fd, struct msghdr *msg, flags): msg_iov @16, msg_iovlen @24.
        _ => {
            let mut mh = [0u64; 2];
            if unsafe { bpf_probe_read_user(mh.as_mut_ptr().cast(), 16, (a1 + 16) as *const _) } != 0 {
                return 0;
            }
            (mh[0], mh[1], u64::MAX)
        }
    };
    let iovcnt = raw_iovcnt.min(MAX_IOV as u64) as u32;
    match id {
        SYS_WRITE | SYS_WRITEV | SYS_SENDTO | SYS_SENDMSG => {
            let len = if iovcnt == 0 { len } else { iov_total(buf, iovcnt) };
            let more = raw_iovcnt > MAX_IOV as u64;
            // An audited session is copied whole and unfiltered: a long message's
            // later calls do not start like JSON. (Vectored calls keep the filtered
            // first-4-KiB copy.)
            if session != 0 && iovcnt == 0 {
                capture_whole(pid, pool, session, OP_WRITE, fd, channel, inode, sk, buf, len);
            } else {
                capture(
                    pid, pool, OP_WRITE, fd, channel, inode, sk, buf, iovcnt, len, more,
                );
            }
        }
        _ => {
            let tid = bpf_get_current_pid_tgid() as u32;
            let _ = PENDING_READ.set(
                tid,
                PendingRead {
                    buf,
                    inode,
                    sk,
                    iovcnt,
                    fd,
                    channel,
                    valid: 1,
                    nr: id as u16,
                    pool,
                    session,
                    _pad: [0; 2],
                },
                0,
            );
        }
    }
    0
}

/// Sum of the first iovec lengths (bounded), the length a vectored write carries.
#[inline(always)]
fn iov_total(iov: u64, cnt: u32) -> u64 {
    let mut total = 0u64;
    for i in 0..MAX_IOV {
        if i >= cnt {
            break;
        }
        let mut v = [0u64; 2];
        if unsafe { bpf_probe_read_user(v.as_mut_ptr().cast(), 16, (iov + i as u64 * 16) as *const _) } != 0 {
            break;
        }
        total += v[1];
    }
    total
}

#[inline(always)]
fn grant_accept_budget(pid: u32) {
    let Some(b) = CAPTURE_BUDGET.get_ptr_mut(pid) else {
        return;
    };
    let b = unsafe { &mut *b };
    let now = now_ns();
    let deadline = now + ACCEPT_SECS * 1_000_000_000;
    // An expired budget restarts with the accept's deadline, for the accepted
    // connection only; a live one is only extended (0 means "no deadline", set by the
    // agent, and stays).
    if b.live() && b.deadline_ns != 0 && now > b.deadline_ns {
        b.void();
    }
    if !b.live() || (b.deadline_ns != 0 && b.deadline_ns < deadline) {
        b.deadline_ns = deadline;
    }
    if b.sockets < ACCEPT_RECORDS {
        b.sockets = ACCEPT_RECORDS;
    }
    if b.probes < ACCEPT_PROBES {
        b.probes = ACCEPT_PROBES;
    }
}

// Reads are completed on the read family's own exit tracepoints rather than a raw
// tracepoint on every `sys_exit`: a raw `sys_exit` hook costs every syscall on the
// host ~30 ns (measured), so a write storm paid for two hooks; the classic exit
// tracepoints cost more per hit (~80 ns) but fire only for reads and receives.

#[tracepoint]
pub fn payload_exit_read(ctx: TracePointContext) -> u32 {
    finish_read(&ctx, SYS_READ)
}

#[tracepoint]
pub fn payload_exit_readv(ctx: TracePointContext) -> u32 {
    finish_read(&ctx, SYS_READV)
}

#[tracepoint]
pub fn payload_exit_recvfrom(ctx: TracePointContext) -> u32 {
    finish_read(&ctx, SYS_RECVFROM)
}

#[tracepoint]
pub fn payload_exit_recvmsg(ctx: TracePointContext) -> u32 {
    finish_read(&ctx, SYS_RECVMSG)
}

/// `ret` of a `syscalls:sys_exit_*` record: after the common header (8 bytes) and the
/// int `__syscall_nr` padded to 8 (the format every syscall exit event shares).
const SYS_EXIT_RET: usize = 16;

#[inline(always)]
fn finish_read(ctx: &TracePointContext, nr: u64) -> u32 {
    if crate::maps::floor() {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    // Cheapest possible exit for everyone without a budget.
    match CAPTURE_BUDGET.get(pid) {
        Some(b) if b.live() => {}
        _ => return 0,
    }
    let Some(p) = PENDING_READ.get_ptr_mut(pid_tgid as u32) else {
        return 0;
    };
    let p = unsafe { &mut *p };
    if p.valid == 0 {
        return 0;
    }
    p.valid = 0;
    // An entry left by a read whose exit never fired (thread killed) is not this one.
    if p.nr != nr as u16 {
        return 0;
    }
    let ret = unsafe { ctx.read_at::<i64>(SYS_EXIT_RET) }.unwrap_or(0);
    if ret <= 0 {
        return 0;
    }
    if p.session != 0 && p.iovcnt == 0 {
        capture_whole(
            pid, p.pool, p.session, OP_READ, p.fd, p.channel, p.inode, p.sk, p.buf, ret as u64,
        );
    } else {
        capture(
            pid, p.pool, OP_READ, p.fd, p.channel, p.inode, p.sk, p.buf, p.iovcnt, ret as u64, false,
        );
    }
    0
}
