//! Domain events handed from stage to stage after `state`: what later stages judge
//! and sinks write. Each variant serializes with its own `"type"` field.

use serde::Serialize;

use crate::state::{
    exe_hash::HashHandle,
    net_view::{DnsEvent, NetworkEvent},
    view::ProcessEvent,
};

#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum Event {
    Process(ProcessEvent),
    /// `network_*`: connections, listeners, datagram flows, raw sockets.
    Network(NetworkEvent),
    /// `dns_query` / `dns_response`.
    Dns(DnsEvent),
}

/// An event on its way to the sinks. A process event may still wait for its
/// executable's hash, which is computed off the hot path.
pub struct Emitted {
    pub event: Event,
    pub hash: Option<HashHandle>,
}

impl Emitted {
    pub fn ready(event: Event) -> Self {
        Self { event, hash: None }
    }
}
