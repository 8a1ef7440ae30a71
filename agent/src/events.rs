//! Domain events handed from stage to stage after `state`: what later stages judge
//! and sinks write. Each variant serializes with its own `"type"` field.

use serde::Serialize;

use crate::{
    alert::Alert,
    mcp::{audit::McpRequestEvent, inventory::McpServerEvent},
    sensor::PayloadEvent,
    state::{
        exe_hash::HashHandle,
        files::FileAccessEvent,
        net_view::{DnsEvent, NetworkEvent},
        view::ProcessEvent,
    },
};

/// Events a stage takes from its input channel per wake-up: one select and one
/// wake-up per batch instead of per event when a storm is queued.
pub const STAGE_BATCH: usize = 256;

// Process events are the common case and move by value; the rare alert is boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum Event {
    Process(ProcessEvent),
    /// `network_*`: connections, listeners, datagram flows, raw sockets.
    Network(NetworkEvent),
    /// `dns_query` / `dns_response`.
    Dns(DnsEvent),
    /// `file_access`: an open, unlink, rename or chmod in an MCP server's tree.
    FileAccess(FileAccessEvent),
    McpServer(McpServerEvent),
    /// `mcp_request`: one audited request on a confirmed server's session.
    McpRequest(Box<McpRequestEvent>),
    /// A detection, pushed in front of the output stage (boxed: it is the largest
    /// variant and most events are process events).
    #[serde(serialize_with = "alert_with_type")]
    Alert(Box<Alert>),
}

fn alert_with_type<S: serde::Serializer>(a: &Alert, s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Typed<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(flatten)]
        alert: &'a Alert,
    }
    Typed {
        kind: "alert",
        alert: a,
    }
    .serialize(s)
}

/// What flows from the state stage into MCP detection: enriched events, and the raw
/// payload captures only detection consumes (they are never written to sinks).
// Moved through channels by value: boxing the common variant would cost an
// allocation per event.
#[allow(clippy::large_enum_variant)]
pub enum Flow {
    Event(Emitted),
    Payload(PayloadEvent),
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
