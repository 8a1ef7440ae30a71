//! Payload sensor records: bounded prefixes of data written to or read from pipes,
//! stream sockets (AF_UNIX, TCP) by processes with a capture budget.

use crate::EventHeader;

/// Most bytes copied from one read or write.
pub const PAYLOAD_MAX: usize = 4096;

pub const OP_WRITE: u8 = 1;
pub const OP_READ: u8 = 2;

pub const CHANNEL_PIPE: u8 = 1;
pub const CHANNEL_UNIX: u8 = 2;
pub const CHANNEL_TCP: u8 = 3;

/// The call carried more bytes than were copied.
pub const PAYLOAD_TRUNCATED: u8 = 1 << 0;

/// Fixed part of a payload record; `cap_len` data bytes follow it in the ring.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PayloadHeader {
    pub header: EventHeader,
    /// Inode of the pipe or socket behind the fd (the channel identity).
    pub inode: u64,
    pub fd: i32,
    /// Bytes the call asked to write, or that the read returned.
    pub total_len: u32,
    pub cap_len: u32,
    pub op: u8,
    pub channel: u8,
    pub flags: u8,
    pub _pad: u8,
    /// TCP only: address family (2 or 10), local and remote port (host order) and
    /// addresses (IPv4 in the first four bytes), read when the data was captured,
    /// since a short connection may be gone by the time the agent looks.
    pub family: u16,
    pub lport: u16,
    pub rport: u16,
    pub _pad2: u16,
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
}

/// Capture budget of one process, indexed by pid in the `CAPTURE_BUDGET` array.
/// Granted in the kernel at exec (and on accept); granted, extended or ended by the
/// agent for suspected and confirmed MCP servers.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budget {
    /// Records the process may still emit.
    pub records: u32,
    /// Reads/writes it may still have examined (bounds cost for busy processes).
    pub probes: u32,
    /// Boot-time ns after which the budget is void (0: no deadline).
    pub deadline_ns: u64,
}

/// Kernel struct offsets (from the running kernel's BTF) for the fd → file → inode
/// walk. Passed as one global so the layout is defined once.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FileWalk {
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_inode: u32,
    pub file_private_data: u32,
    pub inode_mode: u32,
    pub inode_ino: u32,
    pub socket_type: u32,
    pub socket_sk: u32,
    pub sock_common_family: u32,
    /// `struct sock_common` members (offsets from the start of `struct sock`).
    pub skc_num: u32,
    pub skc_dport: u32,
    pub skc_rcv_saddr: u32,
    pub skc_daddr: u32,
    pub skc_v6_rcv_saddr: u32,
    pub skc_v6_daddr: u32,
    /// 0 until the agent filled the offsets in: capture is off without them.
    pub valid: u32,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `#[repr(C)]` integer records; any bit pattern is valid.
    unsafe impl aya::Pod for super::PayloadHeader {}
    unsafe impl aya::Pod for super::Budget {}
    unsafe impl aya::Pod for super::FileWalk {}
}
