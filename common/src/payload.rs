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
///
/// Records are counted in three pools, by the channel a call is on, so that what a
/// process writes where no MCP peer listens cannot spend what its MCP channel needs:
/// `records` for its **stdio wire** (the pipes or sockets at its fds 0 and 1 when it
/// exec'd, wherever it moves them later), `sockets` for the other stream sockets
/// (HTTP servers' connections), `side` for every other pipe and for its stderr as it
/// was at exec (log pipes, pipes to children). The budget is spent once all three are.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budget {
    /// Records the process may still emit on its stdio wire.
    pub records: u32,
    /// Reads/writes it may still have examined (bounds cost for busy processes).
    pub probes: u32,
    /// Boot-time ns after which the budget is void (0: no deadline).
    pub deadline_ns: u64,
    /// Records it may still emit on other stream sockets.
    pub sockets: u32,
    /// Records it may still emit on other pipes and on its exec-time stderr.
    pub side: u32,
    /// Inodes behind fds 0, 1 and 2 at exec (0: not a pipe or stream socket, or not
    /// known). A channel that is both stdout and stderr counts as the wire.
    pub stdio: [u64; 3],
    /// How calls on the wire and on stream sockets are copied: [`COPY_PREFIX`] (the
    /// first `PAYLOAD_MAX` bytes of calls that look like JSON, HTTP or SSE),
    /// [`COPY_WHOLE`] (such calls whole, up to [`SESSION_CHUNKS`] records: a fresh
    /// process or a suspect, whose first answers after its handshake must not be cut) or [`COPY_SESSION`]
    /// (every call whole, unfiltered: a confirmed server's audited session, whose
    /// long messages span calls that do not start like JSON). Side pipes always get
    /// prefixes.
    pub session: u32,
    pub _pad: u32,
}

pub const COPY_PREFIX: u32 = 0;
pub const COPY_WHOLE: u32 = 1;
pub const COPY_SESSION: u32 = 2;

/// Records one call of an audited session may fill: 64 × 4 KiB = 256 KiB, the
/// largest message the agent reassembles.
pub const SESSION_CHUNKS: u32 = 64;

/// Which pool of a [`Budget`] a call on a channel spends.
pub const POOL_WIRE: u8 = 0;
pub const POOL_SOCKETS: u8 = 1;
pub const POOL_SIDE: u8 = 2;

impl Budget {
    /// The pool a call on `inode` (a pipe when `pipe`, else a stream socket) spends.
    #[inline(always)]
    pub fn pool(&self, inode: u64, pipe: bool) -> u8 {
        if inode != 0 && (inode == self.stdio[0] || inode == self.stdio[1]) {
            POOL_WIRE
        } else if pipe || inode == self.stdio[2] {
            POOL_SIDE
        } else {
            POOL_SOCKETS
        }
    }

    /// Records left in `pool`.
    #[inline(always)]
    pub fn left(&self, pool: u8) -> u32 {
        match pool {
            POOL_WIRE => self.records,
            POOL_SOCKETS => self.sockets,
            _ => self.side,
        }
    }

    /// Spends one record of `pool`.
    #[inline(always)]
    pub fn spend(&mut self, pool: u8) {
        match pool {
            POOL_WIRE => self.records = self.records.saturating_sub(1),
            POOL_SOCKETS => self.sockets = self.sockets.saturating_sub(1),
            _ => self.side = self.side.saturating_sub(1),
        }
    }

    /// Some pool still has records (the process may still capture).
    #[inline(always)]
    pub fn live(&self) -> bool {
        (self.records | self.sockets | self.side) != 0
    }

    /// Nothing more is captured (deadline, examined calls or exit).
    #[inline(always)]
    pub fn void(&mut self) {
        self.records = 0;
        self.sockets = 0;
        self.side = 0;
    }
}

/// Side-channel records an exec grants (stderr, log pipes): enough for a process's
/// own pipelines to be seen, too few for them to matter to the ring or the agent.
pub const EXEC_SIDE_RECORDS: u32 = 16;

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

/// Does this look like the start of a JSON-RPC message, an HTTP request or response,
/// an SSE field, or a chunk-size line? Ordinary traffic fails here and costs nothing more.
#[inline(always)]
pub fn prefilter(b: &[u8; 8], n: usize) -> bool {
    if n == 0 {
        return false;
    }
    match b[0] {
        b'{' => return true,
        b'[' => return n > 1 && b[1] == b'{',
        _ => {}
    }
    if n >= 4 {
        let w = [b[0], b[1], b[2], b[3]];
        if matches!(
            &w,
            b"POST" | b"GET " | b"PUT " | b"DELE" | b"HTTP" | b"even" | b"data" | b"id: "
        ) {
            return true;
        }
    }
    // Chunked transfer: 1–6 hex digits then CRLF (SSE over chunked HTTP). Bytes are
    // picked by shifting a word, never by a computed address (the verifier rejects
    // the pointer arithmetic the compiler would otherwise emit).
    let word = u64::from_le_bytes(*b);
    let mut digits = 0u64;
    while digits < 6 {
        let c = (word >> (digits * 8)) as u8;
        if !c.is_ascii_hexdigit() {
            break;
        }
        digits += 1;
    }
    let cr = (word >> (digits * 8)) as u8;
    let lf = (word >> ((digits + 1) * 8)) as u8;
    digits > 0 && digits as usize + 2 <= n && cr == b'\r' && lf == b'\n'
}

/// The first 8 bytes of two consecutive segments (`n0` < 8 of the first, `n1` of the
/// second, each zero-padded), joined: what the filter sees of a vectored call whose
/// first iovec is shorter than 8 bytes (Node writes a chunk size and its CRLF as two).
/// Byte-wise concatenation by shifting words, no computed stack address.
#[inline(always)]
pub fn join_head(h0: &[u8; 8], n0: usize, h1: &[u8; 8], n1: usize) -> ([u8; 8], usize) {
    let n0 = n0 & 7;
    let word = u64::from_le_bytes(*h0) | (u64::from_le_bytes(*h1) << (n0 as u64 * 8));
    let n = n0 + n1;
    (word.to_le_bytes(), if n > 8 { 8 } else { n })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(b: &[u8]) -> ([u8; 8], usize) {
        let mut h = [0u8; 8];
        let n = b.len().min(8);
        h[..n].copy_from_slice(&b[..n]);
        (h, n)
    }

    fn passes(b: &[u8]) -> bool {
        let (h, n) = head(b);
        prefilter(&h, n)
    }

    #[test]
    fn json_http_sse_and_chunk_sizes_pass() {
        for b in [
            &b"{\"jsonrpc\":\"2.0\""[..],
            b"[{\"a\":1}]",
            b"POST /mcp HTTP/1.1\r\n",
            b"HTTP/1.1 200 OK\r\n",
            b"event: message\n",
            b"7f9\r\nevent: message",
            b"0\r\n\r\n",
        ] {
            assert!(passes(b), "{b:?}");
        }
        for b in [&b"hello"[..], b"*", b"\x00\x01", b"[1,2]", b"7f9", b"1234567\r\n"] {
            assert!(!passes(b), "{b:?}");
        }
    }

    /// A Python SDK stdio server moves its wire to fds >= 3 and points fd 1 at stderr:
    /// the wire is still the exec-time stdin/stdout, stderr and its own pipes are side
    /// channels, and what they spend leaves the wire's records alone.
    #[test]
    fn pools_follow_the_exec_time_stdio_not_fd_numbers() {
        let mut b = Budget {
            records: 2,
            probes: 10,
            deadline_ns: 0,
            sockets: 3,
            side: 1,
            stdio: [100, 101, 102],
            ..Default::default()
        };
        assert_eq!(b.pool(100, true), POOL_WIRE);
        assert_eq!(b.pool(101, true), POOL_WIRE);
        assert_eq!(b.pool(102, true), POOL_SIDE);
        assert_eq!(b.pool(555, true), POOL_SIDE);
        assert_eq!(b.pool(556, false), POOL_SOCKETS);
        // Node gives children socketpairs: stderr is a socket, still a side channel.
        assert_eq!(b.pool(102, false), POOL_SIDE);
        // stdout and stderr on one pipe (2>&1): the wire.
        let mixed = Budget {
            stdio: [100, 101, 101],
            ..b
        };
        assert_eq!(mixed.pool(101, true), POOL_WIRE);
        // Not known (0) never matches a channel.
        let unknown = Budget { stdio: [0; 3], ..b };
        assert_eq!(unknown.pool(100, true), POOL_SIDE);
        assert_eq!(unknown.pool(100, false), POOL_SOCKETS);

        b.spend(POOL_SIDE);
        b.spend(POOL_SIDE);
        assert_eq!(
            (b.left(POOL_SIDE), b.left(POOL_WIRE), b.left(POOL_SOCKETS)),
            (0, 2, 3)
        );
        assert!(b.live());
        b.spend(POOL_WIRE);
        b.spend(POOL_WIRE);
        for _ in 0..3 {
            b.spend(POOL_SOCKETS);
        }
        assert!(!b.live(), "{b:?}");
        let mut c = Budget { records: 1, ..b };
        assert!(c.live());
        c.void();
        assert!(!c.live());
    }

    /// The TS SDK everything server (Express on Node 20) answering `initialize` on its
    /// legacy SSE stream, as strace showed it:
    /// `writev(20, [{"7f9", 3}, {"\r\n", 2}, {"event: message\ndata: {…", 2036}, {"\r\n", 2}], 4)`.
    /// The first iovec alone is no chunk-size line; joined with the second it is.
    #[test]
    fn a_chunk_size_split_from_its_crlf_across_iovecs() {
        let (h0, n0) = head(b"7f9");
        assert!(!prefilter(&h0, n0));
        let (h1, n1) = head(b"\r\n");
        let (h, n) = join_head(&h0, n0, &h1, n1);
        assert_eq!((&h[..n], n), (&b"7f9\r\n"[..], 5));
        assert!(prefilter(&h, n));
        // "1e51" (a 7761-byte tools/list answer), and an empty first iovec.
        let (h0, n0) = head(b"1e51");
        let (h, n) = join_head(&h0, n0, &h1, n1);
        assert!(prefilter(&h, n));
        let (h, n) = join_head(&[0; 8], 0, &head(b"HTTP/1.1 200").0, 8);
        assert_eq!((&h[..], n), (&b"HTTP/1.1"[..], 8));
        assert!(prefilter(&h, n));
    }
}
