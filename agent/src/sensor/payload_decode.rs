//! Payload sensor records (`mcpwatch_common::payload`) → [`PayloadEvent`]s.

use std::{mem::size_of, net::SocketAddr};

use mcpwatch_common::{
    payload::{
        PayloadHeader, CHANNEL_PIPE, CHANNEL_TCP, CHANNEL_UNIX, OP_WRITE, PAYLOAD_MAX, PAYLOAD_TRUNCATED,
    },
    EventKind,
};

use serde::{Deserialize, Serialize};

use super::record::{read_record, socket_addr, DecodeError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Pipe,
    Unix,
    Tcp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Write,
    Read,
}

/// A bounded prefix of one read or write on a pipe or stream socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    #[serde(with = "super::recording::bytes")]
    pub data: Vec<u8>,
    /// TCP: (local, remote) addresses when the data passed.
    pub tuple: Option<(SocketAddr, SocketAddr)>,
}

fn tcp_tuple(r: &PayloadHeader) -> Option<(SocketAddr, SocketAddr)> {
    if r.channel != CHANNEL_TCP {
        return None;
    }
    Some((
        socket_addr(r.family, &r.laddr, r.lport)?,
        socket_addr(r.family, &r.raddr, r.rport)?,
    ))
}

/// Decodes a payload record: a header, then `cap_len` captured bytes.
pub fn decode_payload(bytes: &[u8]) -> Result<PayloadEvent, DecodeError> {
    let kind = EventKind::Payload;
    let r: PayloadHeader = read_record(bytes, kind)?;
    let start = size_of::<PayloadHeader>();
    let cap = (r.cap_len as usize).min(PAYLOAD_MAX).min(bytes.len() - start);
    let channel = match r.channel {
        CHANNEL_PIPE => Channel::Pipe,
        CHANNEL_UNIX => Channel::Unix,
        CHANNEL_TCP => Channel::Tcp,
        other => return Err(DecodeError::BadField("channel", u32::from(other))),
    };
    Ok(PayloadEvent {
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
    })
}
