//! One file per sink; all implement [`super::sink::Sink`].

pub mod elastic;
pub mod hec;
pub mod http;
pub mod jsonl;
pub mod loki;
pub mod syslog;
pub mod webhook;

pub use http::HttpSink;
pub use jsonl::JsonlSink;
pub use syslog::SyslogSink;
