//! `--output` values: `jsonl:-`, `jsonl:PATH[?opts]` and `SCHEME://HOST:PORT[/PATH][?opts]`
//! for the SIEM sinks. Secrets never appear here: options name a file or an
//! environment variable that holds them.

use std::{path::PathBuf, str::FromStr};

/// What a sink writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// The agent's own event JSON (jsonl default).
    Native,
    /// OCSF 1.8.0 (SIEM sinks' default).
    Ocsf,
    /// Elastic Common Schema.
    Ecs,
}

/// Which record classes a sink receives: `events=` takes a comma-separated list of
/// `alerts` (findings and inventory: the SIEM default), `audit` (one record per MCP
/// request), `telemetry` (process, network, DNS) and `all`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Selection {
    pub alerts: bool,
    pub audit: bool,
    pub telemetry: bool,
}

impl Selection {
    /// Findings and inventory: the SIEM default.
    pub const ALERTS: Selection = Selection {
        alerts: true,
        audit: false,
        telemetry: false,
    };
    /// Every class (jsonl's default).
    pub const ALL: Selection = Selection {
        alerts: true,
        audit: true,
        telemetry: true,
    };

    /// `alerts,audit`, `all`: the `events=` value that selects this.
    pub fn option_value(self) -> String {
        if self == Self::ALL {
            return "all".into();
        }
        let mut parts = Vec::new();
        for (on, name) in [
            (self.alerts, "alerts"),
            (self.audit, "audit"),
            (self.telemetry, "telemetry"),
        ] {
            if on {
                parts.push(name);
            }
        }
        parts.join(",")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyslogTransport {
    Udp,
    Tcp,
    Tls,
}

/// An HTTP receiver's protocol, with the options only that protocol has (as Vector
/// puts each sink's options on its own config struct). Shared options (address,
/// TLS, credentials, batch) are on [`RemoteSpec`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpKind {
    Webhook,
    Hec(HecOptions),
    Elastic(ElasticOptions),
    Loki(LokiOptions),
}

/// Splunk HEC: `index=`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HecOptions {
    /// Splunk index; the token's default index when unset.
    pub index: Option<String>,
}

/// Elasticsearch: `index=`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ElasticOptions {
    /// Index or data stream; one per record class when unset.
    pub index: Option<String>,
}

/// Loki: `tenant=`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LokiOptions {
    /// Tenant (`X-Scope-OrgID`).
    pub tenant: Option<String>,
}

impl HttpKind {
    pub fn scheme(&self) -> &'static str {
        match self {
            HttpKind::Webhook => "webhook",
            HttpKind::Hec(_) => "hec",
            HttpKind::Elastic(_) => "elastic",
            HttpKind::Loki(_) => "loki",
        }
    }

    /// Takes a protocol-specific option; `false` when this protocol has no such option.
    fn set_option(&mut self, key: &str, value: &str) -> bool {
        match (self, key) {
            (HttpKind::Hec(o), "index") => o.index = Some(value.into()),
            (HttpKind::Elastic(o), "index") => o.index = Some(value.into()),
            (HttpKind::Loki(o), "tenant") => o.tenant = Some(value.into()),
            _ => return false,
        }
        true
    }
}

/// Where a secret comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

impl SecretSource {
    pub fn read(&self) -> anyhow::Result<String> {
        use anyhow::Context as _;
        let v = match self {
            SecretSource::File(p) => {
                std::fs::read_to_string(p).with_context(|| format!("reading secret file {}", p.display()))?
            }
            SecretSource::Env(var) => {
                std::env::var(var).with_context(|| format!("environment variable {var} is not set"))?
            }
        };
        let v = v.trim().to_string();
        anyhow::ensure!(!v.is_empty(), "secret from {self:?} is empty");
        Ok(v)
    }
}

/// TLS settings for a client connection. Verification is always on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Extra trust anchors (PEM); the system store is used too.
    pub ca: Option<PathBuf>,
    /// Client certificate chain and key (PEM) for mutual TLS.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteSpec {
    /// The value as given, for logs.
    pub raw: String,
    pub host: String,
    pub port: u16,
    pub path: String,
    pub format: Format,
    pub events: Selection,
    pub batch: usize,
    pub tls: Option<TlsOptions>,
    /// Bearer/Splunk/ApiKey token.
    pub token: Option<SecretSource>,
    /// HTTP basic auth user; the password comes from `password`.
    pub user: Option<String>,
    pub password: Option<SecretSource>,
    /// `record_max_bytes=`: this sink's record budget (0: none); `None` takes
    /// `delivery.record_max_bytes`.
    pub record_max_bytes: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonlSpec {
    /// `None` is stdout.
    pub path: Option<PathBuf>,
    pub format: Format,
    pub events: Selection,
    /// Rotate when the file reaches this size (0: never).
    pub max_bytes: u64,
    /// Rotated files kept (`PATH.1` … `PATH.N`).
    pub keep: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkSpec {
    Jsonl(JsonlSpec),
    Syslog(SyslogTransport, RemoteSpec),
    Http(HttpKind, RemoteSpec),
}

/// No rotation unless asked for: a reader tailing the file (or logrotate) keeps
/// working as before.
const DEFAULT_ROTATE_BYTES: u64 = 0;
const DEFAULT_KEEP: u32 = 5;

impl SinkSpec {
    /// A stable, filesystem-safe id: names the sink's spool cursor, so it must not
    /// change across restarts for the same configuration.
    pub fn id(&self) -> String {
        let raw = match self {
            SinkSpec::Jsonl(j) => format!("jsonl:{:?}", j.path),
            SinkSpec::Syslog(_, r) | SinkSpec::Http(_, r) => r.raw.clone(),
        };
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(raw.as_bytes());
        format!(
            "{}-{}",
            self.scheme().replace('+', "_"),
            hex::encode(&digest[..6])
        )
    }

    /// Metric label: scheme and endpoint, no path, options or secrets.
    pub fn label(&self) -> String {
        match self {
            SinkSpec::Jsonl(j) if j.path.is_none() => "jsonl:stdout".into(),
            SinkSpec::Jsonl(_) => "jsonl:file".into(),
            SinkSpec::Syslog(_, r) | SinkSpec::Http(_, r) => {
                format!("{}://{}:{}", self.scheme(), r.host, r.port)
            }
        }
    }

    pub fn scheme(&self) -> String {
        match self {
            SinkSpec::Jsonl(_) => "jsonl".into(),
            SinkSpec::Syslog(SyslogTransport::Udp, _) => "syslog+udp".into(),
            SinkSpec::Syslog(SyslogTransport::Tcp, _) => "syslog+tcp".into(),
            SinkSpec::Syslog(SyslogTransport::Tls, _) => "syslog+tls".into(),
            SinkSpec::Http(k, r) => {
                format!(
                    "{}+{}",
                    k.scheme(),
                    if r.tls.is_some() { "https" } else { "http" }
                )
            }
        }
    }

    pub fn events(&self) -> Selection {
        match self {
            SinkSpec::Jsonl(j) => j.events,
            SinkSpec::Syslog(_, r) | SinkSpec::Http(_, r) => r.events,
        }
    }

    pub fn format(&self) -> Format {
        match self {
            SinkSpec::Jsonl(j) => j.format,
            SinkSpec::Syslog(_, r) | SinkSpec::Http(_, r) => r.format,
        }
    }

    /// Remote sinks go through the spool; jsonl writes locally, in line.
    pub fn is_spooled(&self) -> bool {
        !matches!(self, SinkSpec::Jsonl(_))
    }
}

const SUPPORTED: &str = "jsonl, syslog+udp, syslog+tcp, syslog+tls, webhook+https, hec+https, \
                         elastic+https, loki+https (+http variants for plain HTTP)";

fn split_query(s: &str) -> (&str, Vec<(String, String)>) {
    match s.split_once('?') {
        None => (s, Vec::new()),
        Some((base, q)) => (
            base,
            q.split('&')
                .filter(|kv| !kv.is_empty())
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (kv.to_string(), String::new()),
                })
                .collect(),
        ),
    }
}

fn parse_format(v: &str, allow_native: bool) -> Result<Format, String> {
    match v {
        "ocsf" => Ok(Format::Ocsf),
        "ecs" => Ok(Format::Ecs),
        "native" if allow_native => Ok(Format::Native),
        _ => Err(format!(
            "format {v:?}: expected ocsf or ecs{}",
            if allow_native { " or native" } else { "" }
        )),
    }
}

fn parse_events(v: &str) -> Result<Selection, String> {
    let mut s = Selection {
        alerts: false,
        audit: false,
        telemetry: false,
    };
    for part in v.split(',') {
        match part.trim() {
            "alerts" => s.alerts = true,
            "audit" => s.audit = true,
            "telemetry" => s.telemetry = true,
            "all" => s = Selection::ALL,
            _ => {
                return Err(format!(
                    "events {v:?}: expected a comma-separated list of alerts, audit, telemetry or all"
                ))
            }
        }
    }
    Ok(s)
}

fn parse_jsonl(s: &str, target: &str) -> Result<SinkSpec, String> {
    let (path, opts) = split_query(target);
    let mut spec = JsonlSpec {
        path: match path {
            "-" => None,
            "" => return Err(format!("output {s:?}: jsonl needs a path or -")),
            p => Some(PathBuf::from(p)),
        },
        format: Format::Native,
        events: Selection::ALL,
        max_bytes: DEFAULT_ROTATE_BYTES,
        keep: DEFAULT_KEEP,
    };
    for (k, v) in opts {
        let bad = |e: String| format!("output {s:?}: {e}");
        match k.as_str() {
            "format" => spec.format = parse_format(&v, true).map_err(bad)?,
            "events" => spec.events = parse_events(&v).map_err(bad)?,
            "max_bytes" => {
                spec.max_bytes = v
                    .parse()
                    .map_err(|_| bad(format!("max_bytes {v:?}: not a number")))?
            }
            "keep" => spec.keep = v.parse().map_err(|_| bad(format!("keep {v:?}: not a number")))?,
            _ => {
                return Err(bad(format!(
                    "unknown option {k:?} (format, events, max_bytes, keep)"
                )))
            }
        }
    }
    Ok(SinkSpec::Jsonl(spec))
}

fn parse_remote(s: &str, scheme: &str, rest: &str) -> Result<SinkSpec, String> {
    let bad = |e: &str| format!("output {s:?}: {e}");
    let (kind, transport) = scheme
        .split_once('+')
        .ok_or_else(|| format!("output {s:?}: unknown sink {scheme:?} (supported: {SUPPORTED})"))?;
    let (base, opts) = split_query(rest);
    let (authority, path) = match base.find('/') {
        Some(i) => (&base[..i], &base[i..]),
        None => (base, ""),
    };
    if authority.contains('@') {
        return Err(bad(
            "credentials in the URL are refused (they would show in `ps`): use token_file=, \
             token_env=, password_file= or password_env=",
        ));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h.trim_start_matches('[').trim_end_matches(']'),
            Some(p.parse::<u16>().map_err(|_| bad(&format!("bad port {p:?}")))?),
        ),
        None => (authority, None),
    };
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    let (default_port, tls) = match (kind, transport) {
        ("syslog", "udp") | ("syslog", "tcp") => (514, false),
        ("syslog", "tls") => (6514, true),
        ("webhook" | "hec" | "elastic" | "loki", "https") => (443, true),
        ("webhook" | "hec" | "elastic" | "loki", "http") => (80, false),
        _ => {
            return Err(format!(
                "output {s:?}: unknown sink {scheme:?} (supported: {SUPPORTED})"
            ))
        }
    };
    let mut r = RemoteSpec {
        raw: s.to_string(),
        host: host.to_string(),
        port: port.unwrap_or(match (kind, default_port) {
            ("hec", 443) => 8088,
            ("elastic", _) => 9200,
            ("loki", _) => 3100,
            _ => default_port,
        }),
        path: path.to_string(),
        format: Format::Ocsf,
        events: Selection::ALERTS,
        batch: if kind == "syslog" { 64 } else { 100 },
        tls: tls.then(TlsOptions::default),
        token: None,
        user: None,
        password: None,
        record_max_bytes: None,
    };
    let mut http = match kind {
        "webhook" => Some(HttpKind::Webhook),
        "hec" => Some(HttpKind::Hec(HecOptions::default())),
        "elastic" => Some(HttpKind::Elastic(ElasticOptions::default())),
        "loki" => Some(HttpKind::Loki(LokiOptions::default())),
        _ => None,
    };
    for (k, v) in opts {
        match k.as_str() {
            "format" => r.format = parse_format(&v, false).map_err(|e| bad(&e))?,
            "events" => r.events = parse_events(&v).map_err(|e| bad(&e))?,
            "batch" => {
                r.batch = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=10_000).contains(n))
                    .ok_or_else(|| bad(&format!("batch {v:?}: 1..=10000")))?
            }
            "record_max_bytes" => {
                r.record_max_bytes = Some(v.parse().map_err(|_| {
                    bad(&format!(
                        "record_max_bytes {v:?}: a number of bytes (0: no bound)"
                    ))
                })?)
            }
            "ca" | "cert" | "key" => {
                let Some(t) = r.tls.as_mut() else {
                    return Err(bad(&format!("{k}= needs a TLS transport")));
                };
                let p = Some(PathBuf::from(&v));
                match k.as_str() {
                    "ca" => t.ca = p,
                    "cert" => t.cert = p,
                    _ => t.key = p,
                }
            }
            "token_file" => r.token = Some(SecretSource::File(v.into())),
            "token_env" => r.token = Some(SecretSource::Env(v)),
            "user" => r.user = Some(v),
            "password_file" => r.password = Some(SecretSource::File(v.into())),
            "password_env" => r.password = Some(SecretSource::Env(v)),
            "index" | "tenant" => {
                if !http.as_mut().is_some_and(|h| h.set_option(&k, &v)) {
                    let takers = if k == "index" { "hec and elastic" } else { "loki" };
                    return Err(bad(&format!("{k}= is an option of {takers} outputs")));
                }
            }
            "token" | "password" | "api_key" => {
                return Err(bad(&format!(
                    "{k}= on the command line is refused: use {k}_file= or {k}_env=",
                    k = if k == "password" { "password" } else { "token" }
                )))
            }
            _ => return Err(bad(&format!("unknown option {k:?}"))),
        }
    }
    if let Some(t) = &r.tls {
        if t.cert.is_some() != t.key.is_some() {
            return Err(bad("cert= and key= go together"));
        }
    }
    if r.user.is_some() != r.password.is_some() {
        return Err(bad("user= needs password_file= or password_env="));
    }
    Ok(match (kind, transport) {
        ("syslog", "udp") => SinkSpec::Syslog(SyslogTransport::Udp, r),
        ("syslog", "tcp") => SinkSpec::Syslog(SyslogTransport::Tcp, r),
        ("syslog", _) => SinkSpec::Syslog(SyslogTransport::Tls, r),
        _ => SinkSpec::Http(http.expect("every remote scheme but syslog is HTTP"), r),
    })
}

impl FromStr for SinkSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some((scheme, rest)) = s.split_once("://") {
            return parse_remote(s, scheme, rest);
        }
        let (scheme, target) = s.split_once(':').ok_or_else(|| {
            format!(
                "output {s:?}: expected SCHEME:TARGET, e.g. jsonl:- or jsonl:/var/log/mcpwatch/events.jsonl \
                 or syslog+tls://siem.example:6514"
            )
        })?;
        match scheme {
            "jsonl" => parse_jsonl(s, target),
            other => Err(format!(
                "output {s:?}: unknown sink {other:?} (supported: {SUPPORTED})"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jsonl(path: Option<&str>) -> SinkSpec {
        SinkSpec::Jsonl(JsonlSpec {
            path: path.map(PathBuf::from),
            format: Format::Native,
            events: Selection::ALL,
            max_bytes: DEFAULT_ROTATE_BYTES,
            keep: DEFAULT_KEEP,
        })
    }

    #[test]
    fn jsonl_specs_parse_as_before() {
        assert_eq!("jsonl:-".parse(), Ok(jsonl(None)));
        assert_eq!("jsonl:/tmp/x".parse(), Ok(jsonl(Some("/tmp/x"))));
        assert!("jsonl:".parse::<SinkSpec>().is_err());
        assert!("nope".parse::<SinkSpec>().is_err());
        assert!("kafka:x"
            .parse::<SinkSpec>()
            .unwrap_err()
            .contains("unknown sink"));
        let SinkSpec::Jsonl(j) = "jsonl:/tmp/x?format=ocsf&max_bytes=10&keep=2".parse().unwrap() else {
            panic!()
        };
        assert_eq!((j.format, j.max_bytes, j.keep), (Format::Ocsf, 10, 2));
    }

    #[test]
    fn remote_specs_parse_with_defaults_and_options() {
        let s: SinkSpec = "syslog+tcp://127.0.0.1:5140".parse().unwrap();
        let SinkSpec::Syslog(SyslogTransport::Tcp, r) = &s else {
            panic!("{s:?}")
        };
        assert_eq!(
            (r.host.as_str(), r.port, r.events),
            ("127.0.0.1", 5140, Selection::ALERTS)
        );
        assert!(r.tls.is_none());
        assert_eq!(s.label(), "syslog+tcp://127.0.0.1:5140");

        let s: SinkSpec = "syslog+tls://siem.example?ca=/etc/ca.pem".parse().unwrap();
        let SinkSpec::Syslog(SyslogTransport::Tls, r) = &s else {
            panic!()
        };
        assert_eq!(r.port, 6514);
        assert_eq!(r.tls.as_ref().unwrap().ca, Some(PathBuf::from("/etc/ca.pem")));

        let s: SinkSpec = "hec+https://splunk:8088?token_env=HEC_TOKEN&events=all&format=ecs"
            .parse()
            .unwrap();
        let SinkSpec::Http(HttpKind::Hec(_), r) = &s else {
            panic!()
        };
        assert_eq!(r.token, Some(SecretSource::Env("HEC_TOKEN".into())));
        assert_eq!((r.events, r.format), (Selection::ALL, Format::Ecs));
        assert_eq!(s.scheme(), "hec+https");
        assert_eq!(r.record_max_bytes, None, "the delivery default applies");
        let s: SinkSpec = "syslog+udp://h:514?record_max_bytes=16000".parse().unwrap();
        let SinkSpec::Syslog(_, r) = &s else { panic!() };
        assert_eq!(r.record_max_bytes, Some(16000));

        let s: SinkSpec = "elastic+https://es:9200?index=mcp&user=u&password_file=/p"
            .parse()
            .unwrap();
        let SinkSpec::Http(HttpKind::Elastic(options), _) = &s else {
            panic!()
        };
        assert_eq!(options.index.as_deref(), Some("mcp"));
        assert!(s.id().starts_with("elastic_https-"));
        assert_eq!(
            s.id(),
            "elastic+https://es:9200?index=mcp&user=u&password_file=/p"
                .parse::<SinkSpec>()
                .unwrap()
                .id()
        );
        let s: SinkSpec = "loki+https://l?tenant=soc".parse().unwrap();
        let SinkSpec::Http(HttpKind::Loki(options), _) = &s else {
            panic!()
        };
        assert_eq!(options.tenant.as_deref(), Some("soc"));
    }

    #[test]
    fn secrets_on_the_command_line_and_bad_options_are_refused() {
        for bad in [
            "webhook+https://u:pw@host/x",
            "hec+https://h?token=abc",
            "webhook+https://h?password=abc",
            "syslog+tcp://h:1?ca=/x",
            "syslog+tls://h:1?cert=/x",
            "syslog+tcp://h:notaport",
            "loki+https://h?bogus=1",
            "smoke+signal://h",
            "webhook+https://h?user=u",
            // Each protocol's own options belong to it alone.
            "loki+https://h?index=i",
            "webhook+https://h?tenant=t",
            "syslog+tcp://h:1?index=i",
            "syslog+tcp://h:1?record_max_bytes=8k",
        ] {
            assert!(bad.parse::<SinkSpec>().is_err(), "{bad} accepted");
        }
    }
}
