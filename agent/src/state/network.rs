//! Network stage of the state: applies network records to the socket table and the
//! DNS cache, attributes them to processes from the process table, and builds the
//! network and DNS events.

use std::{net::SocketAddr, sync::Arc};

use super::{
    connections::{ConnectionIndex, SharedConnections},
    dns::{self, DnsCache, DnsCacheLimits},
    net_view::{Direction, DnsEvent, Endpoint, NetAction, NetworkEvent, ProcessRef, Protocol},
    netaddr::classify,
    process_table::ProcessTable,
    sockets::{canonical, Listener, OutboundStep, Owner, SocketTable, TableLimits, TcpConn},
};
use crate::{
    clock,
    events::Event,
    metrics::Metrics,
    sensor::net_decode::{
        AcceptCall, BindCall, ConnectCall, DnsMessage, NetEvent, SocketCreated, TcpChange, TcpUpdate,
        UdpFlowUpdate,
    },
};

pub struct NetState {
    sockets: SocketTable,
    /// Open connections' ends by address pair, for the stages after this one.
    connections: SharedConnections,
    dns: DnsCache,
    metrics: Arc<Metrics>,
}

fn time(ts_ns: u64) -> String {
    clock::rfc3339(clock::boot_to_wall(ts_ns))
}

/// `ECONNREFUSED`-style name of an errno.
fn errno_name(e: i32) -> Arc<str> {
    let name = format!("{:?}", nix::errno::Errno::from_raw(e));
    Arc::from(if name == "UnknownErrno" {
        format!("errno {e}")
    } else {
        name
    })
}

/// Low-cardinality result label for the connection counter.
fn result_label(errno: i32) -> &'static str {
    match errno {
        0 => "ok",
        libc::ECONNREFUSED => "refused",
        libc::ETIMEDOUT => "timeout",
        libc::ENETUNREACH | libc::EHOSTUNREACH => "unreachable",
        _ => "failed",
    }
}

/// The live process with this pid, else the last one that had it (exited, in grace).
fn owner_of(table: &ProcessTable, pid: u32) -> Option<Owner> {
    if pid == 0 {
        return None;
    }
    let p = table.get(&table.latest_key(pid)?)?;
    Some(Owner {
        key: p.key,
        view: ProcessRef::of(p),
    })
}

fn endpoint(a: Option<SocketAddr>) -> Option<Endpoint> {
    a.map(Endpoint::from)
}

impl NetState {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        let limits = TableLimits::default();
        Self {
            sockets: SocketTable::new(limits),
            connections: Arc::new(std::sync::RwLock::new(ConnectionIndex::new(limits.connections))),
            dns: DnsCache::new(DnsCacheLimits::default()),
            metrics,
        }
    }

    pub fn connections(&self) -> SharedConnections {
        self.connections.clone()
    }

    pub fn apply(&mut self, ev: NetEvent, table: &ProcessTable) -> Vec<Event> {
        let tcp = matches!(ev, NetEvent::Connect(_) | NetEvent::Accept(_) | NetEvent::Tcp(_));
        let out = self.events_of(ev, table);
        if tcp {
            let mut ix = self.connections.write().expect("connection index lock");
            for ev in &out {
                if let Event::Network(n) = ev {
                    ix.observe(n);
                }
            }
        }
        out
    }

    fn events_of(&mut self, ev: NetEvent, table: &ProcessTable) -> Vec<Event> {
        match ev {
            NetEvent::Socket(s) => vec![Event::Network(self.on_socket(s, table))],
            NetEvent::Connect(c) => self
                .on_connect(c, table)
                .into_iter()
                .map(Event::Network)
                .collect(),
            NetEvent::Accept(a) => vec![Event::Network(self.on_accept(a, table))],
            NetEvent::Bind(b) => vec![Event::Network(self.on_bind(b, table))],
            NetEvent::Tcp(t) => self.on_tcp(t, table).into_iter().map(Event::Network).collect(),
            NetEvent::UdpFlow(f) => vec![Event::Network(self.on_flow(f, table))],
            NetEvent::Dns(d) => self.on_dns(d, table).into_iter().collect(),
        }
    }

    /// Table and cache sizes to the gauges (called by the state stage's housekeeping).
    pub fn publish_stats(&self) {
        let s = self.sockets.stats();
        let (dns_procs, dns_host) = self.dns.sizes();
        self.metrics.set_socket_table(&s, dns_procs, dns_host);
    }

    fn domain_for(&mut self, owner: Option<&Owner>, remote: Option<SocketAddr>, ev: &mut NetworkEvent) {
        if let Some(r) = remote {
            if let Some((name, source)) = self.dns.lookup(owner.map(|o| o.key), r.ip()) {
                ev.domain = Some(name);
                ev.domain_source = Some(source);
            }
        }
    }

    fn on_socket(&mut self, s: SocketCreated, table: &ProcessTable) -> NetworkEvent {
        use mcpwatch_common::net::{AF_PACKET, SOCK_DGRAM, SOCK_RAW};
        let protocol = if s.family == u32::from(AF_PACKET) {
            Protocol::Packet
        } else {
            match Protocol::from_ip_proto(s.protocol as u16) {
                Protocol::Unknown => Protocol::Raw,
                p => p,
            }
        };
        let mut ev = NetworkEvent::new(NetAction::Socket, protocol, time(s.ts_ns));
        ev.socket_type = Some(match s.sock_type {
            SOCK_RAW => "raw",
            SOCK_DGRAM => "dgram",
            _ => "other",
        });
        match s.result {
            Ok(fd) => ev.fd = Some(fd),
            Err(e) => {
                ev.result = errno_name(e);
                ev.errno = Some(e);
            }
        }
        ev.process = owner_of(table, s.pid).map(|o| o.view);
        ev
    }

    fn connection_event(&mut self, action: NetAction, c: &TcpConn, ts_ns: u64) -> NetworkEvent {
        let mut ev = NetworkEvent::new(action, Protocol::Tcp, time(ts_ns));
        ev.direction = Some(if c.inbound {
            Direction::Inbound
        } else {
            Direction::Outbound
        });
        ev.local = endpoint(c.local);
        ev.remote = endpoint(c.remote);
        ev.address_class = c.remote.map(|r| classify(r.ip()));
        if let Some((d, s)) = &c.domain {
            ev.domain = Some(d.clone());
            ev.domain_source = Some(*s);
        }
        ev.fd = (c.fd >= 0).then_some(c.fd);
        ev.connection_id = Some(c.id.to_string());
        ev.process = c.owner.as_ref().map(|o| o.view.clone());
        ev
    }

    fn connect_event(&mut self, c: &TcpConn, ts_ns: u64, errno: i32, nonblocking: bool) -> NetworkEvent {
        let mut ev = self.connection_event(NetAction::Connect, c, ts_ns);
        ev.nonblocking = Some(nonblocking);
        if errno == libc::EINPROGRESS {
            ev.result = Arc::from("in_progress");
        } else {
            self.metrics.connection("outbound", result_label(errno));
            if errno != 0 {
                ev.result = errno_name(errno);
                ev.errno = Some(errno);
            }
        }
        ev
    }

    fn later_failure(&mut self, c: &TcpConn, ts_ns: u64) -> NetworkEvent {
        if c.failed == Some(true) {
            return self.connect_event(c, ts_ns, libc::ECONNREFUSED, true);
        }
        // No reset: timed out, unreachable, or closed while connecting.
        let mut ev = self.connect_event(c, ts_ns, -1, true);
        ev.result = Arc::from("failed");
        ev.errno = None;
        ev
    }

    fn on_connect(&mut self, c: ConnectCall, table: &ProcessTable) -> Vec<NetworkEvent> {
        let owner = owner_of(table, c.pid);
        let domain = c
            .remote
            .and_then(|r| self.dns.lookup(owner.as_ref().map(|o| o.key), r.ip()));
        let Some(sk) = c.sk else {
            // Datagram socket (or a connect that failed before any TCP state change).
            let protocol = Protocol::from_ip_proto(c.protocol);
            let mut ev = NetworkEvent::new(NetAction::Connect, protocol, time(c.ts_ns));
            ev.direction = Some(Direction::Outbound);
            ev.remote = endpoint(c.remote);
            ev.address_class = c.remote.map(|r| classify(r.ip()));
            ev.fd = Some(c.fd);
            if let Some((d, s)) = domain {
                ev.domain = Some(d);
                ev.domain_source = Some(s);
            }
            if c.errno == 0 {
                if let Some(r) = c.remote {
                    self.sockets.datagram_connected(c.pid, c.fd, r);
                }
            } else {
                ev.result = errno_name(c.errno);
                ev.errno = Some(c.errno);
            }
            self.metrics.connection("outbound", result_label(c.errno));
            ev.process = owner.map(|o| o.view);
            return vec![ev];
        };
        let (step, conn) = self.sockets.connect_returned(sk, c.ts_ns, c.errno, |e| {
            e.owner = owner.clone();
            e.fd = c.fd;
            e.remote = c.remote.or(e.remote);
            e.domain = domain.clone();
        });
        let nonblocking = c.errno == libc::EINPROGRESS;
        match step {
            OutboundStep::SyscallResult => vec![self.connect_event(&conn, c.ts_ns, c.errno, nonblocking)],
            OutboundStep::InProgressThenOk => vec![
                self.connect_event(&conn, c.ts_ns, libc::EINPROGRESS, true),
                self.connect_event(&conn, c.ts_ns, 0, true),
            ],
            OutboundStep::InProgressThenFailed => vec![
                self.connect_event(&conn, c.ts_ns, libc::EINPROGRESS, true),
                self.later_failure(&conn, c.ts_ns),
            ],
            _ => Vec::new(),
        }
    }

    fn on_tcp(&mut self, u: TcpUpdate, table: &ProcessTable) -> Vec<NetworkEvent> {
        let owner = owner_of(table, u.owner_pid);
        let fill = |e: &mut TcpConn| {
            if e.owner.is_none() {
                e.owner = owner.clone();
            }
            if e.fd < 0 {
                e.fd = u.fd;
            }
            e.local = u.local.or(e.local);
            e.remote = e.remote.or(u.remote);
        };
        match u.change {
            TcpChange::EstablishedOut => {
                let (step, c) = self.sockets.established_out(u.sk, u.start_ns, fill);
                match step {
                    OutboundStep::LaterOk => vec![self.connect_event(&c, u.ts_ns, 0, true)],
                    _ => Vec::new(),
                }
            }
            TcpChange::Failed => {
                let (step, c) = self.sockets.failed_out(u.sk, u.start_ns, u.reset, fill);
                match step {
                    OutboundStep::LaterFailed => vec![self.later_failure(&c, u.ts_ns)],
                    _ => Vec::new(),
                }
            }
            TcpChange::EstablishedIn => {
                let (c, accepted) = self.sockets.established_in(u.sk, u.start_ns, u.local, u.remote);
                if accepted {
                    // The accept was reported already; the owner is now known.
                    tracing::trace!(id = %c.id, "accept preceded its handshake record");
                }
                Vec::new()
            }
            TcpChange::Close | TcpChange::Progress => {
                let closing = u.change == TcpChange::Close;
                let c = if closing {
                    self.sockets.remove(u.sk)
                } else {
                    self.sockets.get(u.sk).cloned()
                };
                let mut c = c.unwrap_or_else(|| TcpConn {
                    id: self.sockets.next_id(),
                    inbound: u.inbound,
                    owner: None,
                    fd: -1,
                    local: None,
                    remote: None,
                    domain: None,
                    start_ns: u.start_ns,
                    connect_errno: None,
                    established: true,
                    failed: None,
                    announced: false,
                });
                // The table's tuple was taken at the handshake; the record's is a fallback.
                if c.owner.is_none() {
                    c.owner = owner.clone();
                }
                if c.fd < 0 {
                    c.fd = u.fd;
                }
                c.local = c.local.or(u.local);
                c.remote = c.remote.or(u.remote);
                if c.domain.is_none() {
                    c.domain = c
                        .remote
                        .and_then(|r| self.dns.lookup(c.owner.as_ref().map(|o| o.key), r.ip()));
                }
                let action = if closing {
                    NetAction::Close
                } else {
                    NetAction::Progress
                };
                let mut ev = self.connection_event(action, &c, u.ts_ns);
                ev.bytes_sent = Some(u.bytes_sent);
                ev.bytes_received = Some(u.bytes_received);
                if closing && u.reset {
                    // The peer reset the connection rather than closing it.
                    ev.result = errno_name(libc::ECONNRESET);
                    ev.errno = Some(libc::ECONNRESET);
                }
                let start = if u.start_ns != 0 { u.start_ns } else { c.start_ns };
                ev.duration_ms = Some(u.ts_ns.saturating_sub(start) / 1_000_000);
                vec![ev]
            }
            TcpChange::Listen => {
                let mut ev = NetworkEvent::new(NetAction::Listen, Protocol::Tcp, time(u.ts_ns));
                ev.local = endpoint(u.local);
                ev.address_class = u.local.map(|l| classify(l.ip()));
                ev.fd = (u.fd >= 0).then_some(u.fd);
                ev.process = owner.as_ref().map(|o| o.view.clone());
                self.sockets.listen(
                    u.sk,
                    u.owner_pid,
                    Listener {
                        owner,
                        fd: u.fd,
                        local: u.local,
                    },
                );
                vec![ev]
            }
            TcpChange::ListenClose => {
                let l = self.sockets.unlisten(u.sk);
                let mut ev = NetworkEvent::new(NetAction::Unlisten, Protocol::Tcp, time(u.ts_ns));
                ev.local = endpoint(u.local);
                ev.address_class = u.local.map(|l| classify(l.ip()));
                ev.fd = (u.fd >= 0).then_some(u.fd);
                ev.process = l.and_then(|l| l.owner).or(owner).map(|o| o.view);
                vec![ev]
            }
        }
    }

    fn on_accept(&mut self, a: AcceptCall, table: &ProcessTable) -> NetworkEvent {
        let owner = owner_of(table, a.pid);
        let listener = self.sockets.listener_of(a.pid, a.listen_fd);
        let matched = self
            .sockets
            .accepted(owner.clone(), a.pid, a.listen_fd, a.fd, a.peer);
        self.metrics.connection("inbound", "ok");
        match matched {
            Some(c) => self.connection_event(NetAction::Accept, &c, a.ts_ns),
            None => {
                let mut ev = NetworkEvent::new(NetAction::Accept, Protocol::Tcp, time(a.ts_ns));
                ev.direction = Some(Direction::Inbound);
                ev.local = endpoint(listener);
                ev.remote = endpoint(a.peer);
                ev.address_class = a.peer.map(|r| classify(r.ip()));
                ev.fd = Some(a.fd);
                ev.connection_id = a
                    .peer
                    .and_then(|p| self.sockets.early_accept_id(p))
                    .map(|s| s.to_string());
                ev.process = owner.map(|o| o.view);
                ev
            }
        }
    }

    fn on_bind(&mut self, b: BindCall, table: &ProcessTable) -> NetworkEvent {
        let mut ev = NetworkEvent::new(
            NetAction::Bind,
            Protocol::from_ip_proto(b.protocol),
            time(b.ts_ns),
        );
        ev.local = endpoint(b.local);
        ev.address_class = b.local.map(|l| classify(l.ip()));
        ev.fd = Some(b.fd);
        if b.errno != 0 {
            ev.result = errno_name(b.errno);
            ev.errno = Some(b.errno);
        }
        ev.process = owner_of(table, b.pid).map(|o| o.view);
        ev
    }

    fn on_flow(&mut self, f: UdpFlowUpdate, table: &ProcessTable) -> NetworkEvent {
        let owner = owner_of(table, f.pid);
        let remote = f
            .remote
            .or_else(|| {
                (f.fd >= 0)
                    .then(|| self.sockets.datagram_peer(f.pid, f.fd))
                    .flatten()
            })
            .map(canonical);
        let (id, _) = self.sockets.flow(f.sk, remote);
        let action = if f.new {
            NetAction::Send
        } else {
            NetAction::Progress
        };
        let mut ev = NetworkEvent::new(action, Protocol::from_ip_proto(f.protocol), time(f.ts_ns));
        ev.direction = Some(Direction::Outbound);
        ev.remote = endpoint(remote);
        ev.address_class = remote.map(|r| classify(r.ip()));
        self.domain_for(owner.as_ref(), remote, &mut ev);
        ev.bytes_sent = Some(f.bytes);
        ev.packets_sent = Some(f.packets);
        ev.fd = (f.fd >= 0).then_some(f.fd);
        ev.connection_id = Some(id.to_string());
        ev.process = owner.map(|o| o.view);
        ev
    }

    fn on_dns(&mut self, m: DnsMessage, table: &ProcessTable) -> Option<Event> {
        let parsed = match dns::parse(&m.payload) {
            Ok(p) => p,
            Err(e) => {
                self.metrics.dns_parse_error(e.reason());
                tracing::debug!(pid = m.pid, error = %e, "unparsable DNS message");
                return None;
            }
        };
        let owner = owner_of(table, m.pid);
        // Trust the kernel's direction (which syscall carried it) over the QR bit.
        let response = m.response;
        self.metrics
            .dns_message(if response { "response" } else { "query" });
        if response {
            self.dns.learn(owner.as_ref().map(|o| o.key), &parsed);
        }
        Some(Event::Dns(DnsEvent {
            kind: if response { "dns_response" } else { "dns_query" },
            time: time(m.ts_ns),
            id: parsed.id,
            transport: if m.tcp { Protocol::Tcp } else { Protocol::Udp },
            server: endpoint(m.server),
            question: parsed.question.map(|q| q.trim_end_matches('.').to_string()),
            qtype: parsed.qtype,
            rcode: response.then_some(parsed.rcode),
            answers: parsed.answers,
            truncated: m.truncated,
            process: owner.map(|o| o.view),
        }))
    }
}
