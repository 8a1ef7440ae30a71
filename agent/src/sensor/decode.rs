//! Raw ring-buffer records → typed events: reads the header and hands the record to
//! its sensor's decoder (`process_decode`, `payload_decode`, `net_decode`). Every
//! malformed record is an error the caller counts; nothing here panics on kernel input.

use std::mem::size_of;

use mcpwatch_common::{EventHeader, EventKind};

use super::{
    file_decode::{decode_file, FileEvent},
    net_decode::{decode_net, NetEvent},
    payload_decode::{decode_payload, PayloadEvent},
    process_decode::{decode_process, CgroupMoveEvent, ExecEvent, ExitEvent, ForkEvent, ProcessRecord},
    record::DecodeError,
};

/// One line of a recording (`recording.rs`) each: `"kind"` names the variant.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SensorEvent {
    Exec(ExecEvent),
    Fork(ForkEvent),
    Exit(ExitEvent),
    CgroupMove(CgroupMoveEvent),
    Payload(PayloadEvent),
    /// Network sensor events (`net_decode`).
    Net(NetEvent),
    /// File sensor events (`file_decode`): processes in MCP trees only.
    File(FileEvent),
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
            Self::File(_) => EventKind::File,
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
            Self::File(e) => e.ts_ns,
        }
    }
}

pub fn decode(bytes: &[u8]) -> Result<SensorEvent, DecodeError> {
    let header: EventHeader = if bytes.len() >= size_of::<EventHeader>() {
        // SAFETY: length checked above; plain-integer struct.
        unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) }
    } else {
        return Err(DecodeError::NoHeader(bytes.len()));
    };
    let kind = EventKind::from_u32(header.kind).ok_or(DecodeError::UnknownKind(header.kind))?;
    Ok(match kind {
        EventKind::Exec | EventKind::Fork | EventKind::Exit | EventKind::CgroupMove => {
            match decode_process(kind, bytes)? {
                ProcessRecord::Exec(e) => SensorEvent::Exec(e),
                ProcessRecord::Fork(e) => SensorEvent::Fork(e),
                ProcessRecord::Exit(e) => SensorEvent::Exit(e),
                ProcessRecord::CgroupMove(e) => SensorEvent::CgroupMove(e),
            }
        }
        EventKind::Payload => SensorEvent::Payload(decode_payload(bytes)?),
        EventKind::Socket
        | EventKind::Connect
        | EventKind::Accept
        | EventKind::Bind
        | EventKind::Tcp
        | EventKind::UdpFlow
        | EventKind::Dns => SensorEvent::Net(decode_net(kind, bytes)?),
        EventKind::File => SensorEvent::File(decode_file(bytes)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensor::payload_decode::{Channel, Direction};
    use mcpwatch_common::{
        payload::{PayloadHeader, CHANNEL_PIPE, OP_WRITE},
        process::{
            ExecArgs, ExecRecord, ExitRecord, ARGS_MAX, EXEC_ARGS_MISSING, EXEC_ARGS_TRUNCATED,
            EXEC_FIXED_LEN, EXIT_CODE_UNKNOWN, FILENAME_MAX,
        },
    };

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
