//! The socket table: every tracked TCP connection, listener, connected datagram socket
//! and datagram flow, each tied to the process (table entry) that owns it.
//!
//! Pure data structure: no I/O. Kernel records about one connection arrive from
//! different contexts (the connect syscall, softirq handshakes, the accepting process)
//! and not always in the same order; the table holds what arrived so far and the
//! [`OutboundStep`]/[`InboundStep`] results tell the caller what to report, so each
//! outcome is reported exactly once whatever the order.

use std::{net::SocketAddr, num::NonZeroUsize, sync::Arc};

use lru::LruCache;

use super::{dns::DomainSource, net_view::ProcessRef, process_table::ProcKey};

/// The process a socket belongs to.
#[derive(Clone, Debug)]
pub struct Owner {
    pub key: ProcKey,
    pub view: ProcessRef,
}

/// Canonical form of a socket address (v4-mapped v6 becomes v4), so addresses from
/// the syscall and from the TCP stack compare equal.
pub fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

#[derive(Clone, Debug)]
pub struct TcpConn {
    pub id: Arc<str>,
    pub inbound: bool,
    pub owner: Option<Owner>,
    pub fd: i32,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    pub domain: Option<(Arc<str>, DomainSource)>,
    pub start_ns: u64,
    /// errno of the connect syscall (0 = connected, EINPROGRESS = pending), once seen.
    pub connect_errno: Option<i32>,
    pub established: bool,
    /// The handshake failed; `true` when it was refused with a reset.
    pub failed: Option<bool>,
    /// The outcome (connect result or accept) was reported.
    pub announced: bool,
}

/// What an outbound record means for the connection's report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboundStep {
    /// Nothing to report yet (waiting for the other half).
    Wait,
    /// Report the connect syscall's own result (success, `in_progress`, or its errno).
    SyscallResult,
    /// The syscall said `in_progress`; now report that, then the later success.
    InProgressThenOk,
    /// The syscall said `in_progress`; report that, then the later failure.
    InProgressThenFailed,
    /// A non-blocking connect completed later: report success.
    LaterOk,
    /// A non-blocking connect failed later.
    LaterFailed,
}

#[derive(Clone, Debug)]
pub struct Listener {
    pub owner: Option<Owner>,
    pub fd: i32,
    pub local: Option<SocketAddr>,
}

#[derive(Clone, Copy, Debug)]
pub struct TableLimits {
    pub connections: usize,
    pub listeners: usize,
    pub flows: usize,
}

impl Default for TableLimits {
    fn default() -> Self {
        Self {
            connections: 65_536,
            listeners: 8192,
            flows: 16_384,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketStats {
    pub connections: usize,
    pub listeners: usize,
    pub flows: usize,
    pub connected_datagram: usize,
}

/// An accept whose handshake record has not arrived yet.
#[derive(Clone, Debug)]
struct EarlyAccept {
    owner: Option<Owner>,
    fd: i32,
    id: Arc<str>,
}

pub struct SocketTable {
    tcp: LruCache<u64, TcpConn>,
    listeners: LruCache<u64, Listener>,
    /// Local address of known listeners by (pid, fd).
    listen_fds: LruCache<(u32, i32), SocketAddr>,
    /// Inbound connections not yet accepted, by peer address.
    unclaimed: LruCache<SocketAddr, u64>,
    early_accepts: LruCache<SocketAddr, EarlyAccept>,
    /// Peers of connected datagram sockets by (pid, fd).
    datagram_peers: LruCache<(u32, i32), SocketAddr>,
    /// Datagram flows (socket, destination) seen so far.
    flows: LruCache<(u64, Option<SocketAddr>), Arc<str>>,
    epoch: u64,
    seq: u64,
}

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n.max(1)).expect("non-zero")
}

impl SocketTable {
    pub fn new(limits: TableLimits) -> Self {
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Self {
            tcp: LruCache::new(nz(limits.connections)),
            listeners: LruCache::new(nz(limits.listeners)),
            listen_fds: LruCache::new(nz(limits.listeners)),
            unclaimed: LruCache::new(nz(limits.listeners)),
            early_accepts: LruCache::new(nz(1024)),
            datagram_peers: LruCache::new(nz(limits.flows)),
            flows: LruCache::new(nz(limits.flows)),
            epoch,
            seq: 0,
        }
    }

    /// A new id, stable across the events of one connection or flow.
    pub fn next_id(&mut self) -> Arc<str> {
        self.seq += 1;
        Arc::from(format!("{:x}-{}", self.epoch, self.seq))
    }

    pub fn stats(&self) -> SocketStats {
        SocketStats {
            connections: self.tcp.len(),
            listeners: self.listeners.len(),
            flows: self.flows.len(),
            connected_datagram: self.datagram_peers.len(),
        }
    }

    pub fn get(&self, sk: u64) -> Option<&TcpConn> {
        self.tcp.peek(&sk)
    }

    pub fn remove(&mut self, sk: u64) -> Option<TcpConn> {
        self.tcp.pop(&sk)
    }

    fn outbound_entry(&mut self, sk: u64, start_ns: u64) -> &mut TcpConn {
        if !self.tcp.contains(&sk) {
            let id = self.next_id();
            self.tcp.put(
                sk,
                TcpConn {
                    id,
                    inbound: false,
                    owner: None,
                    fd: -1,
                    local: None,
                    remote: None,
                    domain: None,
                    start_ns,
                    connect_errno: None,
                    established: false,
                    failed: None,
                    announced: false,
                },
            );
        }
        self.tcp.get_mut(&sk).expect("just inserted")
    }

    /// The connect syscall returned `errno` for the TCP socket `sk`.
    pub fn connect_returned(
        &mut self,
        sk: u64,
        ts_ns: u64,
        errno: i32,
        fill: impl FnOnce(&mut TcpConn),
    ) -> (OutboundStep, TcpConn) {
        let c = self.outbound_entry(sk, ts_ns);
        fill(c);
        c.connect_errno = Some(errno);
        let step = match errno {
            libc::EINPROGRESS if c.established => OutboundStep::InProgressThenOk,
            libc::EINPROGRESS if c.failed.is_some() => OutboundStep::InProgressThenFailed,
            _ => OutboundStep::SyscallResult,
        };
        // Only a pending connect still waits for its outcome.
        if step == OutboundStep::SyscallResult && errno == libc::EINPROGRESS {
            return (step, c.clone());
        }
        c.announced = true;
        let snapshot = c.clone();
        if errno != 0 && errno != libc::EINPROGRESS || step == OutboundStep::InProgressThenFailed {
            self.tcp.pop(&sk);
        }
        (step, snapshot)
    }

    /// The handshake of outbound `sk` completed.
    pub fn established_out(
        &mut self,
        sk: u64,
        ts_ns: u64,
        fill: impl FnOnce(&mut TcpConn),
    ) -> (OutboundStep, TcpConn) {
        let c = self.outbound_entry(sk, ts_ns);
        fill(c);
        c.established = true;
        let step = if c.connect_errno == Some(libc::EINPROGRESS) && !c.announced {
            c.announced = true;
            OutboundStep::LaterOk
        } else {
            OutboundStep::Wait
        };
        (step, c.clone())
    }

    /// The handshake of outbound `sk` failed (`reset`: refused).
    pub fn failed_out(
        &mut self,
        sk: u64,
        ts_ns: u64,
        reset: bool,
        fill: impl FnOnce(&mut TcpConn),
    ) -> (OutboundStep, TcpConn) {
        let c = self.outbound_entry(sk, ts_ns);
        fill(c);
        c.failed = Some(reset);
        if c.connect_errno == Some(libc::EINPROGRESS) && !c.announced {
            c.announced = true;
            let snapshot = c.clone();
            self.tcp.pop(&sk);
            return (OutboundStep::LaterFailed, snapshot);
        }
        if c.connect_errno.is_some() {
            // The syscall already reported the failure.
            let snapshot = c.clone();
            self.tcp.pop(&sk);
            return (OutboundStep::Wait, snapshot);
        }
        (OutboundStep::Wait, c.clone())
    }

    /// An inbound handshake completed. Returns the connection and whether an accept
    /// for it was already seen (then its owner is filled in).
    pub fn established_in(
        &mut self,
        sk: u64,
        ts_ns: u64,
        local: Option<SocketAddr>,
        remote: Option<SocketAddr>,
    ) -> (TcpConn, bool) {
        let early = remote.and_then(|r| self.early_accepts.pop(&canonical(r)));
        let accepted = early.is_some();
        let id = match &early {
            Some(e) => e.id.clone(),
            None => self.next_id(),
        };
        let c = TcpConn {
            id,
            inbound: true,
            owner: early.as_ref().and_then(|e| e.owner.clone()),
            fd: early.as_ref().map_or(-1, |e| e.fd),
            local,
            remote,
            domain: None,
            start_ns: ts_ns,
            connect_errno: None,
            established: true,
            failed: None,
            announced: accepted,
        };
        if !accepted {
            if let Some(r) = remote {
                self.unclaimed.put(canonical(r), sk);
            }
        }
        self.tcp.put(sk, c.clone());
        (c, accepted)
    }

    /// `accept()` returned `fd` in `owner`. Finds the connection by peer, or (no peer
    /// given) the oldest unclaimed one on the listener's port. Returns the connection
    /// when its handshake record was already seen.
    pub fn accepted(
        &mut self,
        owner: Option<Owner>,
        pid: u32,
        listen_fd: i32,
        fd: i32,
        peer: Option<SocketAddr>,
    ) -> Option<TcpConn> {
        let sk = match peer {
            Some(p) => self.unclaimed.pop(&canonical(p)),
            None => {
                let port = self.listen_fds.peek(&(pid, listen_fd)).map(|a| a.port());
                // LRU order: the last item is the oldest, like the kernel's accept queue.
                let found = self
                    .unclaimed
                    .iter()
                    .rev()
                    .find(|(_, sk)| {
                        self.tcp
                            .peek(sk)
                            .is_some_and(|c| port.is_some() && c.local.map(|l| l.port()) == port)
                    })
                    .map(|(k, _)| *k);
                found.and_then(|k| self.unclaimed.pop(&k))
            }
        };
        match sk.and_then(|sk| self.tcp.get_mut(&sk)) {
            Some(c) => {
                c.owner = owner;
                c.fd = fd;
                c.announced = true;
                Some(c.clone())
            }
            None => {
                if let Some(p) = peer {
                    let id = self.next_id();
                    self.early_accepts
                        .put(canonical(p), EarlyAccept { owner, fd, id });
                }
                None
            }
        }
    }

    /// Id of an accept that was reported before its handshake record.
    pub fn early_accept_id(&self, peer: SocketAddr) -> Option<Arc<str>> {
        self.early_accepts.peek(&canonical(peer)).map(|e| e.id.clone())
    }

    pub fn listen(&mut self, sk: u64, pid: u32, l: Listener) {
        if let Some(local) = l.local {
            if l.fd >= 0 {
                self.listen_fds.put((pid, l.fd), local);
            }
        }
        self.listeners.put(sk, l);
    }

    pub fn listener_of(&self, pid: u32, fd: i32) -> Option<SocketAddr> {
        self.listen_fds.peek(&(pid, fd)).copied()
    }

    pub fn unlisten(&mut self, sk: u64) -> Option<Listener> {
        let l = self.listeners.pop(&sk)?;
        if let Some(o) = &l.owner {
            self.listen_fds.pop(&(o.key.pid, l.fd));
        }
        Some(l)
    }

    pub fn datagram_connected(&mut self, pid: u32, fd: i32, peer: SocketAddr) {
        self.datagram_peers.put((pid, fd), peer);
    }

    pub fn datagram_peer(&self, pid: u32, fd: i32) -> Option<SocketAddr> {
        self.datagram_peers.peek(&(pid, fd)).copied()
    }

    /// The flow's id, and whether it is new to the table.
    pub fn flow(&mut self, sk: u64, remote: Option<SocketAddr>) -> (Arc<str>, bool) {
        if let Some(id) = self.flows.get(&(sk, remote)) {
            return (id.clone(), false);
        }
        let id = self.next_id();
        self.flows.put((sk, remote), id.clone());
        (id, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> SocketTable {
        SocketTable::new(TableLimits::default())
    }

    #[test]
    fn blocking_connect_reports_once_in_either_order() {
        let mut s = t();
        // Handshake record first (blocking connect), then the syscall's return.
        assert_eq!(s.established_out(1, 0, |_| {}).0, OutboundStep::Wait);
        assert_eq!(s.connect_returned(1, 0, 0, |_| {}).0, OutboundStep::SyscallResult);
        assert!(s.get(1).is_some(), "open connection stays for its close");
    }

    #[test]
    fn nonblocking_connect_completing_later_or_inside_the_call() {
        let mut s = t();
        assert_eq!(
            s.connect_returned(1, 0, libc::EINPROGRESS, |_| {}).0,
            OutboundStep::SyscallResult
        );
        assert_eq!(s.established_out(1, 0, |_| {}).0, OutboundStep::LaterOk);
        assert_eq!(s.established_out(1, 0, |_| {}).0, OutboundStep::Wait);
        // Completed before the syscall returned EINPROGRESS.
        assert_eq!(s.established_out(2, 0, |_| {}).0, OutboundStep::Wait);
        assert_eq!(
            s.connect_returned(2, 0, libc::EINPROGRESS, |_| {}).0,
            OutboundStep::InProgressThenOk
        );
    }

    #[test]
    fn failures_are_reported_once() {
        let mut s = t();
        // Blocking refused: the failure record precedes the syscall's ECONNREFUSED.
        assert_eq!(s.failed_out(1, 0, true, |_| {}).0, OutboundStep::Wait);
        assert_eq!(
            s.connect_returned(1, 0, libc::ECONNREFUSED, |_| {}).0,
            OutboundStep::SyscallResult
        );
        assert!(s.get(1).is_none());
        // Non-blocking refused later.
        s.connect_returned(2, 0, libc::EINPROGRESS, |_| {});
        let (step, c) = s.failed_out(2, 0, true, |_| {});
        assert_eq!((step, c.failed), (OutboundStep::LaterFailed, Some(true)));
        assert!(s.get(2).is_none());
        // Non-blocking refused inside the call.
        s.failed_out(3, 0, true, |_| {});
        assert_eq!(
            s.connect_returned(3, 0, libc::EINPROGRESS, |_| {}).0,
            OutboundStep::InProgressThenFailed
        );
        assert!(s.get(3).is_none());
    }

    #[test]
    fn accept_matches_by_peer_or_by_listener_port_in_either_order() {
        let mut s = t();
        let local: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let peer: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        s.established_in(7, 0, Some(local), Some(peer));
        let c = s.accepted(None, 100, 3, 4, Some("[::ffff:10.0.0.1]:5000".parse().unwrap()));
        assert_eq!(c.map(|c| c.fd), Some(4));

        // Without a peer address: by the listener's port.
        s.listen(
            9,
            100,
            Listener {
                owner: None,
                fd: 3,
                local: Some(local),
            },
        );
        s.established_in(8, 0, Some(local), Some("10.0.0.1:5001".parse().unwrap()));
        assert_eq!(s.accepted(None, 100, 3, 5, None).map(|c| c.fd), Some(5));

        // Accept seen before the handshake record.
        let early: SocketAddr = "10.0.0.1:5002".parse().unwrap();
        assert!(s.accepted(None, 100, 3, 6, Some(early)).is_none());
        let id = s.early_accept_id(early).unwrap();
        let (c, accepted) = s.established_in(10, 0, Some(local), Some(early));
        assert!(accepted);
        assert_eq!((c.fd, c.id), (6, id));
    }

    #[test]
    fn tables_are_bounded() {
        let mut s = SocketTable::new(TableLimits {
            connections: 2,
            listeners: 2,
            flows: 2,
        });
        for sk in 0..10 {
            s.connect_returned(sk, 0, 0, |_| {});
            s.flow(sk, None);
        }
        let st = s.stats();
        assert_eq!((st.connections, st.flows), (2, 2));
    }
}
