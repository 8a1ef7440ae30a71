//! Syslog: RFC 5424 messages over UDP (one datagram each), TCP with octet counting
//! (RFC 6587 §3.4.1) or TLS (RFC 5425, same framing). MSG is the JSON body; the
//! rule id is the MSGID and the finding uid, class and severity are structured data,
//! so a receiver can route on them without parsing the JSON.
//!
//! TCP and TLS have no application acknowledgement: a batch counts as delivered once
//! written and flushed. Before each batch the connection is checked for a close from
//! the peer, so a receiver restart costs a reconnect, not a batch; after a TLS
//! handshake the agent waits briefly for a refusal of its client certificate. What a
//! receiver that crashes holds in its socket buffer is lost: use an HTTPS sink when
//! that matters (RELP is not implemented).

use std::{sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use futures::{future::BoxFuture, FutureExt as _};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::{TcpStream, UdpSocket},
};

use crate::output::{
    host::HostInfo,
    record::Record,
    sink::{SendError, Sink},
    spec::{Format, RemoteSpec, SyslogTransport},
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
const POST_HANDSHAKE_WAIT: Duration = Duration::from_millis(200);
/// `local0`: the facility SIEM collectors conventionally route agent output on.
const FACILITY: u8 = 16;
/// Documentation PEN (RFC 5612) for the SD-ID until one is registered.
const SD_ID: &str = "mcpwatch@32473";

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

pub struct SyslogSink {
    label: String,
    spec: RemoteSpec,
    transport: SyslogTransport,
    host: Arc<HostInfo>,
    tls: Option<tokio_rustls::TlsConnector>,
    conn: Option<Box<dyn Stream>>,
    udp: Option<UdpSocket>,
}

/// RFC 5424 PARAM-VALUE escaping: `"`, `\` and `]`.
fn sd_escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '"' | '\\' | ']') {
            s.push('\\');
        }
        s.push(c);
    }
    s
}

/// PRINTUSASCII, at most `max` characters; `-` (NILVALUE) when empty.
fn header_field(v: &str, max: usize) -> String {
    let s: String = v.chars().filter(|c| ('!'..='~').contains(c)).take(max).collect();
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

fn severity_label(ocsf: u8) -> &'static str {
    match ocsf {
        0 => "unknown",
        1 => "informational",
        2 => "low",
        3 => "medium",
        4 => "high",
        5 => "critical",
        _ => "fatal",
    }
}

fn syslog_severity(ocsf: u8) -> u8 {
    match ocsf {
        0 | 1 => 6,
        2 => 5,
        3 => 4,
        4 => 3,
        5 => 2,
        _ => 1,
    }
}

/// Room the record budget leaves for the syslog header: rsyslog's default
/// `maxMessageSize` (8096 bytes, the whole message, header included) less the
/// default `record_max_bytes` (7680). Headers are about 200 bytes; a longer one (a
/// long hostname) comes off the JSON, so the whole message stays within
/// `record_max_bytes` + this.
pub const HEADER_ROOM: usize = 416;

/// The RFC 5424 header of a record's message, up to and including the space before
/// MSG.
fn header(r: &Record, host: &HostInfo) -> String {
    let pri = FACILITY * 8 + syslog_severity(r.severity);
    let ts = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(r.time_ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let ts = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        ts.year(),
        u8::from(ts.month()),
        ts.day(),
        ts.hour(),
        ts.minute(),
        ts.second(),
        ts.millisecond()
    );
    let class = r.class.name();
    format!(
        "<{pri}>1 {ts} {host} mcpwatch {pid} {msgid} [{SD_ID} uid=\"{uid}\" class=\"{class}\" severity=\"{sev}\" event_uid=\"{ev}\"] ",
        host = header_field(&host.hostname, 255),
        pid = std::process::id(),
        msgid = header_field(&r.kind, 32),
        uid = sd_escape(&r.uid),
        sev = severity_label(r.severity),
        ev = sd_escape(&r.event_uid),
    )
}

/// One RFC 5424 message.
pub fn format_message(r: &Record, format: Format, host: &HostInfo) -> String {
    let mut m = header(r, host);
    m.push_str(r.body(format));
    m
}

/// The JSON's share of a record budget of `max`: all of it, less what the header
/// takes beyond [`HEADER_ROOM`].
fn body_budget(r: &Record, host: &HostInfo, max: usize) -> usize {
    (max + HEADER_ROOM).saturating_sub(header(r, host).len()).min(max)
}

impl SyslogSink {
    pub fn new(
        transport: SyslogTransport,
        spec: &RemoteSpec,
        label: String,
        host: Arc<HostInfo>,
    ) -> Result<Self> {
        let tls = match (&transport, &spec.tls) {
            (SyslogTransport::Tls, Some(opts)) => Some(tokio_rustls::TlsConnector::from(Arc::new(
                crate::output::tls::client_config(opts).with_context(|| format!("output {}", spec.raw))?,
            ))),
            _ => None,
        };
        Ok(Self {
            label,
            spec: spec.clone(),
            transport,
            host,
            tls,
            conn: None,
            udp: None,
        })
    }

    async fn connect(&mut self) -> Result<()> {
        let addr = (self.spec.host.as_str(), self.spec.port);
        if self.transport == SyslogTransport::Udp {
            if self.udp.is_none() {
                let target = tokio::net::lookup_host(addr)
                    .await?
                    .next()
                    .context("no address for host")?;
                let bind = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
                let sock = UdpSocket::bind(bind).await?;
                sock.connect(target).await?;
                self.udp = Some(sock);
            }
            return Ok(());
        }
        if let Some(conn) = &mut self.conn {
            // A peer that closed or reset shows as a ready read of 0 bytes or an error.
            let mut probe = [0u8; 64];
            match conn.read(&mut probe).now_or_never() {
                None => return Ok(()),
                Some(Ok(n)) if n > 0 => return Ok(()), // syslog receivers do not talk; ignore
                Some(_) => self.conn = None,
            }
        }
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .context("connect timed out")??;
        tcp.set_nodelay(true)?;
        let stream: Box<dyn Stream> = match &self.tls {
            Some(connector) => {
                let name = rustls::pki_types::ServerName::try_from(self.spec.host.clone())
                    .with_context(|| format!("bad TLS server name {:?}", self.spec.host))?;
                let mut tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
                    .await
                    .context("TLS handshake timed out")?
                    .context("TLS handshake")?;
                // In TLS 1.3 the server judges our client certificate after our side of
                // the handshake is done: give its refusal a moment to arrive, so the first
                // batch is not written into a connection that is already being closed.
                let mut probe = [0u8; 64];
                match tokio::time::timeout(POST_HANDSHAKE_WAIT, tls.read(&mut probe)).await {
                    Err(_) | Ok(Ok(1..)) => {}
                    Ok(Ok(0)) => anyhow::bail!("the server closed the connection after the TLS handshake"),
                    Ok(Err(e)) => return Err(e).context("TLS session refused by the server"),
                }
                Box::new(tls)
            }
            None => Box::new(tcp),
        };
        self.conn = Some(stream);
        Ok(())
    }

    async fn send_batch(&mut self, batch: &[Record]) -> Result<(), SendError> {
        self.connect()
            .await
            .map_err(|e| SendError::retry(format!("connecting to {}: {e:#}", self.label)))?;
        if let Some(sock) = &self.udp {
            for (i, r) in batch.iter().enumerate() {
                let msg = format_message(r, self.spec.format, &self.host);
                if let Err(e) = sock.send(msg.as_bytes()).await {
                    let mut err = SendError::retry(format!("UDP send: {e}")).after(i);
                    // Too large for a datagram: no retry will ever fit it.
                    err.rejected = e.raw_os_error() == Some(libc::EMSGSIZE);
                    return Err(err);
                }
            }
            return Ok(());
        }
        let mut frames = Vec::new();
        for r in batch {
            let msg = format_message(r, self.spec.format, &self.host);
            frames.extend_from_slice(format!("{} ", msg.len()).as_bytes());
            frames.extend_from_slice(msg.as_bytes());
        }
        let conn = self.conn.as_mut().expect("connected");
        let res = tokio::time::timeout(WRITE_TIMEOUT, async {
            conn.write_all(&frames).await?;
            conn.flush().await
        })
        .await;
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.conn = None;
                Err(SendError::retry(format!("writing to {}: {e}", self.label)))
            }
            Err(_) => {
                self.conn = None;
                Err(SendError::retry(format!("writing to {} timed out", self.label)))
            }
        }
    }
}

impl Sink for SyslogSink {
    fn label(&self) -> &str {
        &self.label
    }

    fn max_batch(&self) -> usize {
        self.spec.batch
    }

    fn body_budget(&self, r: &Record, max: usize) -> usize {
        body_budget(r, &self.host, max)
    }

    fn send<'a>(&'a mut self, batch: &'a [Record]) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(self.send_batch(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::record::Class;

    #[test]
    fn rfc5424_message_with_structured_data() {
        let r = Record {
            class: Class::Alert,
            time_ms: 1_763_769_600_123,
            accepted_ms: 0,
            severity: 4,
            kind: "MCP-001".into(),
            uid: "mcpw-\"x]".into(),
            event_uid: "e1".into(),
            ocsf: Some(serde_json::value::RawValue::from_string("{\"a\":1}".into()).unwrap()),
            ecs: None,
            native: None,
        };
        let host = HostInfo {
            hostname: "host 01".into(),
            id: "id".into(),
        };
        let m = format_message(&r, Format::Ocsf, &host);
        let pid = std::process::id();
        assert_eq!(
            m,
            format!(
                "<131>1 2025-11-22T00:00:00.123Z host01 mcpwatch {pid} MCP-001 \
                 [mcpwatch@32473 uid=\"mcpw-\\\"x\\]\" class=\"alert\" severity=\"high\" event_uid=\"e1\"] {{\"a\":1}}"
            )
        );
    }

    #[test]
    fn the_whole_message_fits_rsyslogs_default_size_even_with_a_long_hostname() {
        let r = Record {
            class: Class::Alert,
            time_ms: 1_763_769_600_123,
            accepted_ms: 0,
            severity: 4,
            kind: "mcp-server-attestation-failed".into(),
            uid: "mcpw-0123456789abcdef0123456789abcdef".into(),
            event_uid: "0123456789abcdef0123456789abcdef".into(),
            ocsf: None,
            ecs: None,
            native: None,
        };
        let max = crate::output::budget::DEFAULT_RECORD_MAX_BYTES;
        let short = HostInfo {
            hostname: "dev-laptop".into(),
            id: "id".into(),
        };
        assert!(header(&r, &short).len() < HEADER_ROOM);
        assert_eq!(body_budget(&r, &short, max), max);
        let long = HostInfo {
            hostname: "h".repeat(300),
            id: "id".into(),
        };
        let budget = body_budget(&r, &long, max);
        assert!(budget < max);
        assert_eq!(header(&r, &long).len() + budget, 8096);
        assert_eq!(max + HEADER_ROOM, 8096, "rsyslog's default maxMessageSize");
    }
}
