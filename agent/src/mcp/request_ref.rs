//! How a finding or an inventory change names the audit record (`mcp_request`)
//! behind it: a leaf both the alert and the inventory types use.

use serde::Serialize;

/// An audit record a finding points at: its uid (the `mcp_request` record's, the
/// API Activity's `metadata.correlation_uid`) and what it was.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RequestRef {
    pub uid: String,
    pub method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub session: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jsonrpc_id: Option<String>,
}
