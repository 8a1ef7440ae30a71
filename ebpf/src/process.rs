//! Process sensor: exec (argv captured at syscall entry, emitted only on success),
//! fork of new processes (threads are filtered out), and process exit with status.
//!
//! Only classic tracepoints on rare syscalls and `sched:*` events are used here: they
//! fire on exec/clone/exit alone, so the rest of the host pays nothing.

use core::{mem::size_of, ptr::addr_of_mut};

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_uid_gid, bpf_probe_read_user,
        generated::{bpf_probe_read_kernel, bpf_probe_read_kernel_str, bpf_probe_read_user_str},
    },
    macros::map,
    maps::{LruHashMap, PerCpuArray},
    EbpfContext,
};
use mcpwatch_common::{
    process::{
        CgroupMoveRecord, ExecArgs, ExecRecord, ExitRecord, ForkRecord, ARGC_MAX, ARGS_MAX, ENVC_MAX,
        EXEC_ARGS_FAULT, EXEC_ARGS_MISSING, EXEC_ARGS_TRUNCATED, EXEC_ENV_TRUNCATED, EXEC_FILENAME_TRUNCATED,
        EXEC_FIXED_LEN, EXIT_CODE_UNKNOWN, FILENAME_MAX,
    },
    EventKind,
};

use crate::{
    maps::{count_drop, header, submit_flags, PROC_EVENTS},
    syscall::{enter_args, Clone3, CloneArgs, Execve, Execveat, Exit},
    task::{pid, tid},
};

const CLONE_THREAD: u64 = 0x0001_0000;
const BPF_ANY: u64 = 0;
const BPF_NOEXIST: u64 = 1;

/// argv being copied, with room for one whole argument past the end of `args` so that
/// each string read has a constant size the verifier accepts.
#[repr(C)]
pub struct ExecScratch {
    args: ExecArgs,
    slack: [u8; ARGS_MAX],
}

#[map]
static EXEC_SCRATCH: PerCpuArray<ExecScratch> = PerCpuArray::with_max_entries(1, 0);

/// An exec record under construction, with a buffer's worth of slack so that the
/// length sent (header and fixed fields plus the argv bytes in use) has a bound the
/// verifier can prove.
#[repr(C)]
pub struct ExecOut {
    rec: ExecRecord,
    slack: [u8; ARGS_MAX],
}

#[map]
static EXEC_OUT: PerCpuArray<ExecOut> = PerCpuArray::with_max_entries(1, 0);

/// argv by thread id between `execve` entry and `sched_process_exec`. The thread may
/// sleep (and migrate) in between, so this cannot be per-CPU. LRU: an exec whose exit
/// was never seen cannot leak an entry.
#[map]
static PENDING_EXEC: LruHashMap<u32, ExecArgs> = LruHashMap::with_max_entries(1024, 0);

/// clone flags by thread id, from clone/clone3 entry to `sched_process_fork`, so that
/// new threads are told apart from new processes.
#[map]
static CLONE_FLAGS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(4096, 0);

/// Exit status by process id, from `exit_group`/`exit`/a fatal signal to the moment
/// the last thread dies.
#[map]
static EXIT_STATUS: LruHashMap<u32, i32> = LruHashMap::with_max_entries(8192, 0);

#[inline(always)]
fn current_comm() -> [u8; 16] {
    bpf_get_current_comm().unwrap_or([0; 16])
}

// ---- exec ------------------------------------------------------------------------

tracepoint! {
    fn sys_enter_execve(ctx) {
        let args: Execve = enter_args(&ctx);
        capture_argv(args.argv, args.envp);
        0
    }
}

tracepoint! {
    fn sys_enter_execveat(ctx) {
        let args: Execveat = enter_args(&ctx);
        capture_argv(args.argv, args.envp);
        0
    }
}

#[inline(always)]
fn capture_argv(argv: u64, envp: u64) {
    let argv = argv as *const *const u8;
    let envp = envp as *const *const u8;
    let Some(scratch) = EXEC_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let s = unsafe { &mut *scratch };
    let base = s.args.args.as_mut_ptr();
    let mut off: usize = 0;
    let mut argc: u32 = 0;
    let mut flags: u32 = 0;

    if !argv.is_null() {
        for i in 0..ARGC_MAX as usize {
            let Ok(p) = (unsafe { bpf_probe_read_user(argv.add(i)) }) else {
                flags |= EXEC_ARGS_FAULT;
                break;
            };
            if p.is_null() {
                break;
            }
            if off >= ARGS_MAX {
                flags |= EXEC_ARGS_TRUNCATED;
                break;
            }
            // `off & (ARGS_MAX - 1)` is a no-op (off < ARGS_MAX) that proves the bound
            // to the verifier; the read may run into `slack`, which we trim below.
            let dst = unsafe { base.add(off & (ARGS_MAX - 1)) };
            let n = unsafe { bpf_probe_read_user_str(dst.cast(), ARGS_MAX as u32, p.cast()) };
            if n <= 0 {
                flags |= EXEC_ARGS_FAULT;
                break;
            }
            off += n as usize;
            argc += 1;
            if i == ARGC_MAX as usize - 1 {
                // Was there a 33rd argument?
                if let Ok(next) = unsafe { bpf_probe_read_user(argv.add(i + 1)) } {
                    if !next.is_null() {
                        flags |= EXEC_ARGS_TRUNCATED;
                    }
                }
            }
        }
    }
    if off > ARGS_MAX {
        off = ARGS_MAX;
        flags |= EXEC_ARGS_TRUNCATED;
    }

    let mut envc: u32 = 0;
    if !envp.is_null() {
        for i in 0..ENVC_MAX as usize {
            match unsafe { bpf_probe_read_user(envp.add(i)) } {
                Ok(p) if !p.is_null() => envc += 1,
                _ => break,
            }
        }
        if envc == ENVC_MAX {
            flags |= EXEC_ENV_TRUNCATED;
        }
    }

    s.args.argc = argc;
    s.args.args_len = off as u32;
    s.args.flags = flags;
    s.args.envc = envc;
    let tid = tid();
    let _ = PENDING_EXEC.insert(tid, &s.args, BPF_ANY);
}

tracepoint! {
    fn sys_exit_execve(_ctx) {
        // A failed exec leaves its argv behind; a successful one was consumed already.
        let _ = PENDING_EXEC.remove(tid());
        0
    }
}

tracepoint! {
    fn sys_exit_execveat(_ctx) {
        let _ = PENDING_EXEC.remove(tid());
        0
    }
}

tracepoint! {
    fn sched_process_exec(ctx) {
        // Fields: __data_loc char[] filename @8, pid_t pid @12, pid_t old_pid @16.
        let old_tid = unsafe { ctx.read_at::<i32>(16) }.unwrap_or(0) as u32;
        // Built in per-CPU scratch and sent with only the argv bytes in use (a record is
        // a few hundred bytes, not the 4.4 KB of a full `ExecRecord`): the ring holds ten
        // times more execs per byte.
        let Some(out) = EXEC_OUT.get_ptr_mut(0) else {
            let _ = PENDING_EXEC.remove(old_tid);
            return 0;
        };
        let rec = unsafe { addr_of_mut!((*out).rec) };
        let uid_gid = bpf_get_current_uid_gid();
        unsafe {
            (*rec).header = header(EventKind::Exec);
            (*rec).uid = uid_gid as u32;
            (*rec).gid = (uid_gid >> 32) as u32;
            (*rec).cgroup_id = bpf_get_current_cgroup_id();
            (*rec).old_tid = old_tid;
            (*rec).comm = current_comm();

            let data_loc = ctx.read_at::<u32>(8).unwrap_or(0);
            let src = (ctx.as_ptr() as *const u8).add((data_loc & 0xffff) as usize);
            let dst = addr_of_mut!((*rec).filename) as *mut u8;
            let n = bpf_probe_read_kernel_str(dst.cast(), FILENAME_MAX as u32, src.cast());
            (*rec).filename_len = if n > 0 { (n - 1) as u32 } else { 0 };
            let name_len = (data_loc >> 16) as usize; // includes the NUL
            let mut extra = 0;
            if name_len > FILENAME_MAX {
                extra = EXEC_FILENAME_TRUNCATED;
            }

            let argv = addr_of_mut!((*rec).argv);
            match PENDING_EXEC.get_ptr(old_tid) {
                Some(pending) => {
                    bpf_probe_read_kernel(argv.cast(), size_of::<ExecArgs>() as u32, pending.cast());
                    (*argv).flags |= extra;
                    let _ = PENDING_EXEC.remove(old_tid);
                }
                None => {
                    (*argv).argc = 0;
                    (*argv).args_len = 0;
                    (*argv).envc = 0;
                    (*argv).flags = EXEC_ARGS_MISSING | extra;
                }
            }
        }
        let args_len = unsafe { (*rec).argv.args_len } as usize;
        // The mask is a no-op (args_len ≤ ARGS_MAX) that bounds the size for the verifier.
        let size = EXEC_FIXED_LEN + (args_len & (ARGS_MAX * 2 - 1));
        let bytes = unsafe { core::slice::from_raw_parts(out.cast::<u8>(), size) };
        if PROC_EVENTS
            .output::<[u8]>(bytes, submit_flags(&PROC_EVENTS))
            .is_err()
        {
            count_drop(EventKind::Exec);
        }
        // A fresh image gets a fresh payload capture budget: new MCP servers speak first
        // right after exec, before the agent could have looked at them.
        crate::payload::grant_exec_budget(pid());
        0
    }
}

// ---- fork ------------------------------------------------------------------------

tracepoint! {
    fn sys_enter_clone(ctx) {
        let flags = enter_args::<CloneArgs>(&ctx).clone_flags;
        let _ = CLONE_FLAGS.insert(tid(), flags, BPF_ANY);
        0
    }
}

tracepoint! {
    fn sys_enter_clone3(ctx) {
        // `flags` is the first member of the uapi `struct clone_args`.
        let uargs = enter_args::<Clone3>(&ctx).uargs as *const u64;
        let flags = unsafe { bpf_probe_read_user(uargs) }.unwrap_or(0);
        let _ = CLONE_FLAGS.insert(tid(), flags, BPF_ANY);
        0
    }
}

tracepoint! {
    fn sys_exit_clone(_ctx) {
        let _ = CLONE_FLAGS.remove(tid());
        0
    }
}

tracepoint! {
    fn sys_exit_clone3(_ctx) {
        let _ = CLONE_FLAGS.remove(tid());
        0
    }
}

tracepoint! {
    fn sched_process_fork(ctx) {
        // Runs in the parent. fork()/vfork() and kernel threads leave no clone flags.
        let tid = tid();
        if let Some(flags) = unsafe { CLONE_FLAGS.get(tid) } {
            if *flags & CLONE_THREAD != 0 {
                return 0;
            }
        }
        // Fields: parent_comm @8, pid_t parent_pid @12, child_comm @16, pid_t child_pid @20.
        let child_pid = unsafe { ctx.read_at::<i32>(20) }.unwrap_or(0) as u32;
        crate::payload::inherit_budget(pid(), child_pid);
        crate::file::inherit_tree(pid(), child_pid);
        let Some(mut entry) = PROC_EVENTS.reserve::<ForkRecord>(0) else {
            count_drop(EventKind::Fork);
            return 0;
        };
        let uid_gid = bpf_get_current_uid_gid();
        entry.write(ForkRecord {
            header: header(EventKind::Fork),
            child_pid,
            uid: uid_gid as u32,
            gid: (uid_gid >> 32) as u32,
            _pad: 0,
            cgroup_id: unsafe { bpf_get_current_cgroup_id() },
            comm: current_comm(),
        });
        entry.submit(submit_flags(&PROC_EVENTS));
        0
    }
}

// ---- exit ------------------------------------------------------------------------

tracepoint! {
    fn sys_enter_exit_group(ctx) {
        let code = enter_args::<Exit>(&ctx).error_code as i32;
        // The whole group dies with this status: it overrides an earlier thread's exit().
        let _ = EXIT_STATUS.insert(pid(), (code & 0xff) << 8, BPF_ANY);
        0
    }
}

tracepoint! {
    fn sys_enter_exit(ctx) {
        let code = enter_args::<Exit>(&ctx).error_code as i32;
        // A thread's exit() is the process's status only if it is the last one out.
        let _ = EXIT_STATUS.insert(pid(), (code & 0xff) << 8, BPF_NOEXIST);
        0
    }
}

/// Signals whose default action terminates the process.
#[inline(always)]
fn default_fatal(sig: i32) -> bool {
    // SIGCHLD 17, SIGCONT 18, SIGSTOP 19, SIGTSTP 20, SIGTTIN 21, SIGTTOU 22,
    // SIGURG 23 and SIGWINCH 28 do not kill by default.
    (1..=64).contains(&sig) && !(17..=23).contains(&sig) && sig != 28
}

tracepoint! {
    fn signal_deliver(ctx) {
        // Fields: int sig @8, int errno @12, int code @16, sa_handler @24, sa_flags @32.
        let sig = unsafe { ctx.read_at::<i32>(8) }.unwrap_or(0);
        let handler = unsafe { ctx.read_at::<u64>(24) }.unwrap_or(1);
        if handler == 0 && default_fatal(sig) {
            // NOEXIST: the SIGKILLs that exit_group() sends to the other threads must not
            // replace the status the process chose.
            let _ = EXIT_STATUS.insert(pid(), sig, BPF_NOEXIST);
        }
        0
    }
}

tracepoint! {
    fn sched_process_exit(ctx) {
        // Fields: comm @8, pid @24, prio @28, bool group_dead @32.
        let group_dead = unsafe { ctx.read_at::<u8>(32) }.unwrap_or(0);
        if group_dead == 0 {
            return 0;
        }
        let pid = pid();
        let status = match unsafe { EXIT_STATUS.get(pid) } {
            Some(s) => *s,
            None => EXIT_CODE_UNKNOWN,
        };
        let _ = EXIT_STATUS.remove(pid);
        crate::payload::clear_budget(pid);
        crate::file::leave_tree(pid);
        let Some(mut entry) = PROC_EVENTS.reserve::<ExitRecord>(0) else {
            count_drop(EventKind::Exit);
            return 0;
        };
        entry.write(ExitRecord {
            header: header(EventKind::Exit),
            status,
            _pad: 0,
            comm: current_comm(),
        });
        entry.submit(submit_flags(&PROC_EVENTS));
        0
    }
}

tracepoint! {
    /// A task moved to another cgroup. Fields: dst_root @8, dst_level @12, dst_id @16,
    /// pid @24 (the `cgroup/cgroup_attach_task` format).
    fn cgroup_attach_task(ctx) {
        let moved_pid = unsafe { ctx.read_at::<i32>(24) }.unwrap_or(0) as u32;
        let dst_root = unsafe { ctx.read_at::<i32>(8) }.unwrap_or(0);
        let dst_id = unsafe { ctx.read_at::<u64>(16) }.unwrap_or(0);
        let Some(mut entry) = PROC_EVENTS.reserve::<CgroupMoveRecord>(0) else {
            count_drop(EventKind::CgroupMove);
            return 0;
        };
        entry.write(CgroupMoveRecord {
            header: header(EventKind::CgroupMove),
            moved_pid,
            dst_root,
            dst_id,
        });
        entry.submit(submit_flags(&PROC_EVENTS));
        0
    }
}
