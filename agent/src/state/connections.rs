//! Who holds each end of the TCP connections the state stage has seen open, by
//! address pair: how the MCP stage finds the client process of an HTTP session from
//! the addresses its capture carries, without scanning `/proc`. Written only by the
//! state stage (`observe`, from the network events it builds), read by later stages.

use std::{
    net::SocketAddr,
    num::NonZeroUsize,
    sync::{Arc, RwLock},
};

use lru::LruCache;

use super::{
    net_view::{NetAction, NetworkEvent, Protocol},
    sockets::canonical,
};

pub type SharedConnections = Arc<RwLock<ConnectionIndex>>;

pub struct ConnectionIndex {
    /// (local, remote) of one end → the pid holding it.
    ends: LruCache<(SocketAddr, SocketAddr), u32>,
}

impl ConnectionIndex {
    /// At most `capacity` ends (the socket table's bound); the least recently opened
    /// is forgotten first.
    pub fn new(capacity: usize) -> Self {
        Self {
            ends: LruCache::new(NonZeroUsize::new(capacity.max(1)).expect("non-zero")),
        }
    }

    /// Keeps the index in step with one network event: an established connection or an
    /// accepted one adds its end, a close removes it.
    pub fn observe(&mut self, ev: &NetworkEvent) {
        if ev.protocol != Protocol::Tcp {
            return;
        }
        let (Some(local), Some(remote)) = (&ev.local, &ev.remote) else {
            return;
        };
        let key = (
            canonical(SocketAddr::new(local.ip, local.port)),
            canonical(SocketAddr::new(remote.ip, remote.port)),
        );
        match ev.action {
            NetAction::Connect | NetAction::Accept if &*ev.result == "ok" => {
                if let Some(p) = &ev.process {
                    self.ends.put(key, p.pid);
                }
            }
            NetAction::Close => {
                self.ends.pop(&key);
            }
            _ => {}
        }
    }

    /// The process holding the end whose local address is `local` and whose peer is
    /// `remote`, if the connection was seen open.
    pub fn holder(&self, local: SocketAddr, remote: SocketAddr) -> Option<u32> {
        self.ends.peek(&(canonical(local), canonical(remote))).copied()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ends.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::net_view::{Endpoint, ProcessRef};

    fn event(action: NetAction, result: &str, local: &str, remote: &str, pid: u32) -> NetworkEvent {
        let mut ev = NetworkEvent::new(action, Protocol::Tcp, "t".into());
        ev.result = Arc::from(result);
        let ep = |a: &str| {
            let a: SocketAddr = a.parse().unwrap();
            Some(Endpoint::from(a))
        };
        ev.local = ep(local);
        ev.remote = ep(remote);
        ev.process = Some(ProcessRef {
            pid,
            entity_id: format!("{pid}:1"),
            exe: None,
            comm: "c".into(),
            argv: Arc::from(Vec::new()),
        });
        ev
    }

    #[test]
    fn both_ends_of_a_loopback_connection_until_it_closes() {
        let mut ix = ConnectionIndex::new(16);
        let (client, server) = ("127.0.0.1:40000", "127.0.0.1:8000");
        ix.observe(&event(NetAction::Connect, "in_progress", client, server, 10));
        assert_eq!(ix.len(), 0, "not open yet");
        ix.observe(&event(NetAction::Connect, "ok", client, server, 10));
        ix.observe(&event(NetAction::Accept, "ok", server, client, 20));
        let (c, s): (SocketAddr, SocketAddr) = (client.parse().unwrap(), server.parse().unwrap());
        assert_eq!(ix.holder(c, s), Some(10));
        assert_eq!(ix.holder(s, c), Some(20));
        // A v4-mapped address is the same end.
        assert_eq!(
            ix.holder("[::ffff:127.0.0.1]:40000".parse().unwrap(), s),
            Some(10)
        );
        ix.observe(&event(NetAction::Close, "ok", client, server, 10));
        assert_eq!(ix.holder(c, s), None);
        assert_eq!(ix.holder(s, c), Some(20));
    }

    #[test]
    fn bounded() {
        let mut ix = ConnectionIndex::new(2);
        for port in 1..=3 {
            ix.observe(&event(
                NetAction::Connect,
                "ok",
                &format!("10.0.0.1:{port}"),
                "10.0.0.2:80",
                port as u32,
            ));
        }
        assert_eq!(ix.len(), 2);
        assert_eq!(
            ix.holder("10.0.0.1:1".parse().unwrap(), "10.0.0.2:80".parse().unwrap()),
            None
        );
    }
}
