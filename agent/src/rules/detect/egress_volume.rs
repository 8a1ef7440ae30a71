//! `mcp-egress-volume-anomaly`: an MCP server's tree sends far more to a destination
//! than its identity usually does there (a window over the learned baseline, see
//! `../volume_baseline.rs`), or one connection sends more than an absolute bound.
//! The destination policy may allow the address: this is the exfiltration it lets
//! through. The source is the kernel's per-connection byte counters (close and
//! periodic reports), so it costs no hook of its own.

use super::{display_name, server_identity, Finding, TrackedServer};
use crate::{rules::volume_baseline::Anomaly, state::net_view::NetworkEvent};

/// `domain:port`, else `ip:port`: what the baseline is kept per.
pub fn destination(n: &NetworkEvent) -> Option<String> {
    let r = n.remote?;
    Some(match n.domain.as_deref() {
        Some(d) => format!("{d}:{}", r.port),
        None => format!("{}:{}", r.ip, r.port),
    })
}

fn mib(b: f64) -> String {
    format!("{:.2} MiB", b / (1024.0 * 1024.0))
}

/// A window over the baseline.
pub fn window(tree: &TrackedServer, dest: &str, a: &Anomaly, window_secs: u64) -> Finding {
    let name = display_name(&tree.server);
    let mut f = Finding::new(
        format!(
            "MCP server {name} sent {} to {dest} in {window_secs} s",
            mib(a.window_bytes as f64)
        ),
        format!(
            "{} bytes to {dest} within one {window_secs} s window by the tree of MCP server {name}; \
             its baseline there is {:.0} bytes per window over {} windows (threshold {} bytes)",
            a.window_bytes, a.baseline.mean_bytes, a.baseline.windows, a.threshold
        ),
    );
    f.identity = Some(format!("{}->{dest}#volume", server_identity(&tree.server)));
    f
}

/// One connection over the absolute bound.
pub fn connection(tree: &TrackedServer, dest: &str, sent: u64, max: u64) -> Finding {
    let name = display_name(&tree.server);
    let mut f = Finding::new(
        format!(
            "MCP server {name} sent {} on one connection to {dest}",
            mib(sent as f64)
        ),
        format!(
            "one connection of the tree of MCP server {name} to {dest} sent {sent} bytes, more than \
             egress_volume.connection_max_bytes ({max})"
        ),
    );
    f.identity = Some(format!(
        "{}->{dest}#connection-volume",
        server_identity(&tree.server)
    ));
    f
}
