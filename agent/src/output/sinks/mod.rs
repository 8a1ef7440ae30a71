//! One file per sink; all implement [`super::sink::Sink`].

pub mod elastic;
pub mod hec;
pub mod http;
pub mod http_protocol;
pub mod jsonl;
pub mod loki;
pub mod syslog;
pub mod webhook;

pub use http::HttpSink;
pub use jsonl::JsonlSink;
pub use syslog::SyslogSink;

use crate::output::spec::HttpKind;

/// The protocol of an HTTP output, with its own options: the one place that maps a
/// protocol to its file.
pub fn protocol(kind: &HttpKind) -> Box<dyn http_protocol::Protocol> {
    match kind {
        HttpKind::Webhook => Box::new(webhook::Webhook),
        HttpKind::Hec(o) => Box::new(hec::Hec {
            index: o.index.clone(),
        }),
        HttpKind::Elastic(o) => Box::new(elastic::Elastic {
            index: o.index.clone(),
        }),
        HttpKind::Loki(o) => Box::new(loki::Loki {
            tenant: o.tenant.clone(),
        }),
    }
}
