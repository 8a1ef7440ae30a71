//! Raw ring-buffer records → typed events. Every malformed record is an error the
//! caller counts; nothing here panics on kernel input.

use std::mem::size_of;

use mcpwatch_common::{
    payload::{
        PayloadHeader, CHANNEL_PIPE, CHANNEL_TCP, CHANNEL_UNIX, OP_WRITE, PAYLOAD_MAX, PAYLOAD_TRUNCATED,
    },
    process::{
        CgroupMoveRecord, ExecRecord, ExitRecord, ForkRecord, ARGS_MAX, EXEC_ARGS_FAULT, EXEC_ARGS_MISSING,
        EXEC_ARGS_TRUNCATED, EXEC_FIXED_LEN, EXIT_CODE_UNKNOWN, FILENAME_MAX,
    },
    EventHeader, EventKind,
};

use super::net_decode::{decode_net, NetEvent};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecEvent {
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub old_tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub comm: String,
    pub filename: String,
    pub argv: Vec<String>,
    /// argv was cut by the kernel bounds (see `mcpwatch_common::process`).
    pub argv_truncated: bool,
    /// argv is missing or incomplete: the exec began before the sensor, or user memory faulted.
    pub argv_incomplete: bool,
    pub envc: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForkEvent {
    pub ts_ns: u64,
    pub parent_pid: u32,
    pub child_pid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub comm: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitEvent {
    pub ts_ns: u64,
    pub pid: u32,
    /// `wait(2)`-style status, `None` when the kernel saw neither exit call nor signal.
    pub status: Option<i32>,
    pub comm: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Pipe,
    Unix,
    Tcp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Write,
    Read,
}

/// A bounded prefix of one read or write on a pipe or stream socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayloadEvent {
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub fd: i32,
    /// Inode of the pipe or socket: the channel's identity.
    pub inode: u64,
    pub channel: Channel,
    pub direction: Direction,
    /// Bytes the call carried; `data` may be shorter (`truncated`).
    pub total_len: u32,
    pub truncated: bool,
    pub data: Vec<u8>,
    /// TCP: (local, remote) addresses when the data passed.
    pub tuple: Option<(std::net::SocketAddr, std::net::SocketAddr)>,
}

/// A task moved to another cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupMoveEvent {
    pub ts_ns: u64,
    /// The moved task's id (its process id when it is the thread group leader).
    pub pid: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SensorEvent {
    Exec(ExecEvent),
    Fork(ForkEvent),
    Exit(ExitEvent),
    CgroupMove(CgroupMoveEvent),
    Payload(PayloadEvent),
    /// Network sensor events (`net_decode`).
    Net(NetEvent),
}

impl SensorEvent {
    pub fn kind(&self) -> EventKind {
        match self {
            Self::Exec(_) => EventKind::Exec,
            Self::Fork(_) => EventKind::Fork,
            Self::Exit(_) => EventKind::Exit,
            Self::CgroupMove(_) => EventKind::CgroupMove,
            Self::Payload(_) => EventKind::Payload,
            Self::Net(e) => e.kind(),
        }
    }

    pub fn ts_ns(&self) -> u64 {
        match self {
            Self::Exec(e) => e.ts_ns,
            Self::Fork(e) => e.ts_ns,
            Self::Exit(e) => e.ts_ns,
            Self::CgroupMove(e) => e.ts_ns,
            Self::Payload(e) => e.ts_ns,
            Self::Net(e) => e.ts_ns(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than a header")]
    NoHeader(usize),
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    #[error("{kind} record of {len} bytes, expected {expected}")]
    Short {
        kind: &'static str,
        len: usize,
        expected: usize,
    },
    #[error("bad {0} value {1}")]
    BadField(&'static str, u32),
}

/// Every [`DecodeError::reason`], for pre-creating the counters.
pub const DECODE_ERROR_REASONS: [&str; 4] = ["no_header", "unknown_kind", "short_record", "bad_field"];

impl DecodeError {
    /// Low-cardinality label for the decode-error counter.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoHeader(_) => "no_header",
            Self::UnknownKind(_) => "unknown_kind",
            Self::Short { .. } => "short_record",
            Self::BadField(..) => "bad_field",
        }
    }
}

/// A record the kernel sends without its unused tail (at least `min` bytes): the
/// missing bytes read as zero.
fn read_prefix<T: Copy + aya::Pod>(bytes: &[u8], kind: EventKind, min: usize) -> Result<T, DecodeError> {
    if bytes.len() < min {
        return Err(DecodeError::Short {
            kind: kind.name(),
            len: bytes.len(),
            expected: min,
        });
    }
    let mut v = std::mem::MaybeUninit::<T>::zeroed();
    let n = bytes.len().min(size_of::<T>());
    // SAFETY: `T` is Pod (all-zero and any bytes are valid) and at most its size is copied.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), v.as_mut_ptr().cast::<u8>(), n);
        Ok(v.assume_init())
    }
}

pub(super) fn read_record<T: Copy>(bytes: &[u8], kind: EventKind) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Short {
            kind: kind.name(),
            len: bytes.len(),
            expected: size_of::<T>(),
        });
    }
    // SAFETY: length checked; records are plain integers and byte arrays (any bit
    // pattern is valid) and ring-buffer data is only 8-byte aligned, hence unaligned.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Text up to the first NUL, lossily decoded (kernel strings are bytes, not UTF-8).
fn c_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// NUL-separated arguments → vector. A final argument without NUL was cut.
fn split_args(bytes: &[u8], argc: u32) -> Vec<String> {
    bytes
        .split(|&b| b == 0)
        .take(argc as usize)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn tcp_tuple(r: &PayloadHeader) -> Option<(std::net::SocketAddr, std::net::SocketAddr)> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    let ip = |b: &[u8; 16]| match r.family {
        2 => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        10 => {
            let v6 = Ipv6Addr::from(*b);
            Some(v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)))
        }
        _ => None,
    };
    if r.channel != CHANNEL_TCP {
        return None;
    }
    Some((
        SocketAddr::new(ip(&r.laddr)?, r.lport),
        SocketAddr::new(ip(&r.raddr)?, r.rport),
    ))
}

pub fn decode(bytes: &[u8]) -> Result<SensorEvent, DecodeError> {
    let header: EventHeader = if bytes.len() >= size_of::<EventHeader>() {
        // SAFETY: length checked above; plain-integer struct.
        unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) }
    } else {
        return Err(DecodeError::NoHeader(bytes.len()));
    };
    let kind = EventKind::from_u32(header.kind).ok_or(DecodeError::UnknownKind(header.kind))?;
    match kind {
        EventKind::Exec => {
            let r: ExecRecord = read_prefix(bytes, kind, EXEC_FIXED_LEN)?;
            let args_len = (r.argv.args_len as usize).min(ARGS_MAX);
            let filename_len = (r.filename_len as usize).min(FILENAME_MAX);
            let flags = r.argv.flags;
            Ok(SensorEvent::Exec(ExecEvent {
                ts_ns: r.header.ts_ns,
                pid: r.header.pid,
                tid: r.header.tid,
                old_tid: r.old_tid,
                uid: r.uid,
                gid: r.gid,
                cgroup_id: r.cgroup_id,
                comm: c_str(&r.comm),
                filename: c_str(&r.filename[..filename_len]),
                argv: split_args(&r.argv.args[..args_len], r.argv.argc),
                argv_truncated: flags & EXEC_ARGS_TRUNCATED != 0,
                argv_incomplete: flags & (EXEC_ARGS_FAULT | EXEC_ARGS_MISSING) != 0,
                envc: r.argv.envc,
            }))
        }
        EventKind::Fork => {
            let r: ForkRecord = read_record(bytes, kind)?;
            Ok(SensorEvent::Fork(ForkEvent {
                ts_ns: r.header.ts_ns,
                parent_pid: r.header.pid,
                child_pid: r.child_pid,
                uid: r.uid,
                gid: r.gid,
                cgroup_id: r.cgroup_id,
                comm: c_str(&r.comm),
            }))
        }
        EventKind::Exit => {
            let r: ExitRecord = read_record(bytes, kind)?;
            Ok(SensorEvent::Exit(ExitEvent {
                ts_ns: r.header.ts_ns,
                pid: r.header.pid,
                status: (r.status != EXIT_CODE_UNKNOWN).then_some(r.status),
                comm: c_str(&r.comm),
            }))
        }
        EventKind::CgroupMove => {
            let r: CgroupMoveRecord = read_record(bytes, kind)?;
            Ok(SensorEvent::CgroupMove(CgroupMoveEvent {
                ts_ns: r.header.ts_ns,
                pid: r.moved_pid,
            }))
        }
        EventKind::Payload => {
            let r: PayloadHeader = read_record(bytes, kind)?;
            let start = size_of::<PayloadHeader>();
            let cap = (r.cap_len as usize).min(PAYLOAD_MAX).min(bytes.len() - start);
            let channel = match r.channel {
                CHANNEL_PIPE => Channel::Pipe,
                CHANNEL_UNIX => Channel::Unix,
                CHANNEL_TCP => Channel::Tcp,
                other => return Err(DecodeError::BadField("channel", u32::from(other))),
            };
            Ok(SensorEvent::Payload(PayloadEvent {
                ts_ns: r.header.ts_ns,
                pid: r.header.pid,
                tid: r.header.tid,
                fd: r.fd,
                inode: r.inode,
                channel,
                direction: if r.op == OP_WRITE {
                    Direction::Write
                } else {
                    Direction::Read
                },
                total_len: r.total_len,
                truncated: r.flags & PAYLOAD_TRUNCATED != 0 || cap < r.total_len as usize,
                data: bytes[start..start + cap].to_vec(),
                tuple: tcp_tuple(&r),
            }))
        }
        net => Ok(SensorEvent::Net(decode_net(net, bytes)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcpwatch_common::process::ExecArgs;

    fn as_bytes<T>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain-data struct.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn exec_record(args: &[&str], flags: u32) -> ExecRecord {
        let mut buf = [0u8; ARGS_MAX];
        let mut off = 0;
        for a in args {
            buf[off..off + a.len()].copy_from_slice(a.as_bytes());
            off += a.len() + 1;
        }
        let mut filename = [0u8; FILENAME_MAX];
        filename[..9].copy_from_slice(b"/bin/echo");
        ExecRecord {
            header: EventHeader {
                kind: EventKind::Exec as u32,
                tid: 7,
                pid: 7,
                _pad: 0,
                ts_ns: 42,
            },
            uid: 1000,
            gid: 100,
            cgroup_id: 5,
            old_tid: 7,
            filename_len: 9,
            comm: *b"echo\0\0\0\0\0\0\0\0\0\0\0\0",
            filename,
            argv: ExecArgs {
                argc: args.len() as u32,
                args_len: off as u32,
                flags,
                envc: 4,
                args: buf,
            },
        }
    }

    #[test]
    fn decodes_exec_with_argv() {
        let rec = exec_record(&["/bin/echo", "hello world", ""], 0);
        let SensorEvent::Exec(e) = decode(&as_bytes(&rec)).unwrap() else {
            panic!()
        };
        assert_eq!(e.argv, vec!["/bin/echo", "hello world", ""]);
        assert_eq!(e.filename, "/bin/echo");
        assert_eq!(e.comm, "echo");
        assert_eq!((e.uid, e.gid, e.envc), (1000, 100, 4));
        assert!(!e.argv_truncated && !e.argv_incomplete);
    }

    #[test]
    fn exec_sent_without_its_unused_tail_decodes_the_same() {
        let rec = exec_record(&["/bin/echo", "hi"], 0);
        let used = EXEC_FIXED_LEN + rec.argv.args_len as usize;
        let SensorEvent::Exec(e) = decode(&as_bytes(&rec)[..used]).unwrap() else {
            panic!()
        };
        assert_eq!(e.argv, vec!["/bin/echo", "hi"]);
        assert_eq!(e.filename, "/bin/echo");
        // Shorter than the fixed part: a counted decode error, not a guess.
        assert_eq!(
            decode(&as_bytes(&rec)[..EXEC_FIXED_LEN - 1])
                .unwrap_err()
                .reason(),
            "short_record"
        );
    }

    #[test]
    fn exec_flags_are_reported() {
        let rec = exec_record(&["a"], EXEC_ARGS_TRUNCATED | EXEC_ARGS_MISSING);
        let SensorEvent::Exec(e) = decode(&as_bytes(&rec)).unwrap() else {
            panic!()
        };
        assert!(e.argv_truncated && e.argv_incomplete);
    }

    #[test]
    fn lengths_from_the_kernel_are_clamped() {
        let mut rec = exec_record(&["a"], 0);
        rec.argv.args_len = u32::MAX;
        rec.filename_len = u32::MAX;
        rec.argv.argc = u32::MAX;
        assert!(decode(&as_bytes(&rec)).is_ok());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(decode(&[1, 2, 3]), Err(DecodeError::NoHeader(3)));
        let mut bytes = vec![0u8; 64];
        bytes[0] = 99;
        assert_eq!(decode(&bytes), Err(DecodeError::UnknownKind(99)));
        bytes[0] = EventKind::Exec as u8;
        assert!(matches!(decode(&bytes), Err(DecodeError::Short { .. })));
        for len in 0..200 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let _ = decode(&junk);
        }
    }

    #[test]
    fn decodes_payload_and_clamps_its_length() {
        let hdr = PayloadHeader {
            header: EventHeader {
                kind: EventKind::Payload as u32,
                tid: 3,
                pid: 3,
                _pad: 0,
                ts_ns: 9,
            },
            inode: 77,
            fd: 6,
            total_len: 9,
            cap_len: 10_000, // lies: more than was sent
            op: OP_WRITE,
            channel: CHANNEL_PIPE,
            flags: 0,
            _pad: 0,
            family: 0,
            lport: 0,
            rport: 0,
            _pad2: 0,
            laddr: [0; 16],
            raddr: [0; 16],
        };
        let mut bytes = as_bytes(&hdr);
        bytes.extend_from_slice(b"{\"id\":1}\n");
        let SensorEvent::Payload(p) = decode(&bytes).unwrap() else {
            panic!()
        };
        assert_eq!(p.data, b"{\"id\":1}\n");
        assert_eq!(
            (p.inode, p.fd, p.channel, p.direction),
            (77, 6, Channel::Pipe, Direction::Write)
        );
        assert!(!p.truncated);
        let mut bad = bytes.clone();
        bad[std::mem::offset_of!(PayloadHeader, channel)] = 9;
        assert_eq!(decode(&bad), Err(DecodeError::BadField("channel", 9)));
    }

    #[test]
    fn exit_status_unknown_maps_to_none() {
        let rec = ExitRecord {
            header: EventHeader {
                kind: EventKind::Exit as u32,
                tid: 1,
                pid: 1,
                _pad: 0,
                ts_ns: 1,
            },
            status: EXIT_CODE_UNKNOWN,
            _pad: 0,
            comm: [0; 16],
        };
        let SensorEvent::Exit(e) = decode(&as_bytes(&rec)).unwrap() else {
            panic!()
        };
        assert_eq!(e.status, None);
    }
}
