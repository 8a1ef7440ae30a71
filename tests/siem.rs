//! Delivery to SIEMs, end to end: the real agent, real kernel events, real receivers
//! (rsyslog and Prometheus from Debian, an HTTPS receiver in this file that goes
//! down, fails and comes back), certificates made here by rcgen.
//!
//! Until the rule engine raises alerts, traffic is real process telemetry (execs
//! with unique tokens) routed to the sink under test with `events=all`, plus the one
//! alert the agent raises by itself: lost kernel events (forced with a ring buffer too
//! small for an exec record), a real Detection Finding through the whole pipeline.

use std::{
    collections::{HashMap, HashSet},
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{Ipv4Addr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use mcpwatch_e2e::{eventually, field, fixture, free_port, run_client, token, venv_bin, Agent};
use serde_json::Value;

// ---------------------------------------------------------------------------------
// Certificates

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA, a server certificate for `localhost` and 127.0.0.1, and a client
    /// certificate (mutual TLS).
    fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "mcpwatch test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "localhost");
        params.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into().unwrap()),
            SanType::IpAddress(Ipv4Addr::LOCALHOST.into()),
        ];
        let cert = params.signed_by(&key, &issuer).unwrap();
        let client_key = KeyPair::generate().unwrap();
        let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
        client
            .distinguished_name
            .push(DnType::CommonName, "mcpwatch-agent");
        client.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client.signed_by(&client_key, &issuer).unwrap();
        std::fs::write(dir.path().join("client.pem"), client_cert.pem()).unwrap();
        std::fs::write(dir.path().join("client.key"), client_key.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), key.serialize_pem()).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        use rustls::pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_file_iter(self.path("server.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(self.path("server.key")).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap(),
        )
    }
}

// ---------------------------------------------------------------------------------
// Processes the test starts: killed and reaped on drop, also on panic.

struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn spawn(name: &'static str, cmd: &mut Command, log: PathBuf) -> Self {
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} (installed by `cargo xtask setup`): {e}"));
        Self { name, child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn assert_running(&mut self) {
        if let Some(st) = self.child.try_wait().unwrap() {
            panic!("{} exited ({st}):\n{}", self.name, self.log());
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_port(port: u16, daemon: &mut Daemon) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        daemon.assert_running();
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{} not listening:\n{}",
            daemon.name,
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------
// rsyslog: imtcp on a free loopback port, plain or TLS (ossl driver), writing
// MSGID, structured data and MSG of every message to a file.

struct Rsyslog {
    daemon: Daemon,
    port: u16,
    /// imudp port (plain receiver only).
    udp_port: u16,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Rsyslog {
    fn start(tls: Option<&Pki>) -> Self {
        Self::start_sized(tls, Some("256k"))
    }

    /// `max_message_size`: rsyslog's `maxMessageSize`; `None` leaves its default
    /// (8 KiB), as a receiver nobody tuned has.
    fn start_sized(tls: Option<&Pki>, max_message_size: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let udp_port = free_port();
        let out = dir.path().join("out.log");
        let d = dir.path().display();
        let (global_tls, module) = match tls {
            Some(pki) => (
                format!(
                    " DefaultNetstreamDriver=\"ossl\" DefaultNetstreamDriverCAFile=\"{}\" \
                     DefaultNetstreamDriverCertFile=\"{}\" DefaultNetstreamDriverKeyFile=\"{}\"",
                    pki.path("ca.pem").display(),
                    pki.path("server.pem").display(),
                    pki.path("server.key").display()
                ),
                // Mutual TLS: a client must present a certificate from our CA.
                "module(load=\"imtcp\" StreamDriver.Name=\"ossl\" StreamDriver.Mode=\"1\" \
                 StreamDriver.AuthMode=\"x509/certvalid\")",
            ),
            None => (String::new(), "module(load=\"imtcp\")\nmodule(load=\"imudp\")"),
        };
        let udp = if tls.is_none() {
            format!("input(type=\"imudp\" address=\"127.0.0.1\" port=\"{udp_port}\" ruleset=\"r\")\n")
        } else {
            String::new()
        };
        let max_size = max_message_size
            .map(|m| format!(" maxMessageSize=\"{m}\""))
            .unwrap_or_default();
        let conf = format!(
            "global(workDirectory=\"{d}\"{max_size}{global_tls})\n\
             {module}\n\
             input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"r\")\n\
             {udp}\
             template(name=\"t\" type=\"string\" string=\"%inputname%\\t%msgid%\\t%structured-data%\\t%msg%\\n\")\n\
             ruleset(name=\"r\") {{ action(type=\"omfile\" file=\"{}\" template=\"t\") }}\n",
            out.display()
        );
        let conf_path = dir.path().join("rsyslog.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut daemon = Daemon::spawn(
            "rsyslogd",
            Command::new("rsyslogd")
                .arg("-n")
                .arg("-f")
                .arg(&conf_path)
                .arg("-i")
                .arg(dir.path().join("rsyslogd.pid")),
            dir.path().join("rsyslogd.log"),
        );
        wait_port(port, &mut daemon);
        Self {
            daemon,
            port,
            udp_port,
            out,
            _dir: dir,
        }
    }

    /// (msgid, structured data, JSON message) of every message received so far.
    fn messages(&self) -> Vec<(String, String, Value)> {
        self.messages_from("")
    }

    /// (input, msgid, MSG as received) of every message so far, JSON or not.
    fn raw_messages(&self) -> Vec<(String, String, String)> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let mut parts = l.splitn(4, '\t');
                let input = parts.next().unwrap_or_default().to_string();
                let msgid = parts.next().unwrap_or_default().to_string();
                let _sd = parts.next();
                let msg = parts.next().unwrap_or_default().trim().to_string();
                (input, msgid, msg)
            })
            .collect()
    }

    /// Messages that came in through the input named `input` (`imtcp`, `imudp`; "" all).
    fn messages_from(&self, input: &str) -> Vec<(String, String, Value)> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.lines()
            .filter(|l| !l.is_empty())
            .filter(|l| l.split('\t').next() == Some(input) || input.is_empty())
            .map(|l| {
                let mut parts = l.splitn(4, '\t');
                let _input = parts.next();
                let msgid = parts.next().unwrap().to_string();
                let sd = parts.next().unwrap_or_default().to_string();
                let msg = parts.next().unwrap_or_default().trim();
                let json = serde_json::from_str(msg)
                    .unwrap_or_else(|e| panic!("rsyslog received a message that is not JSON ({e}): {l}"));
                (msgid, sd, json)
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------
// HTTPS receiver: keeps every NDJSON record posted to it, and on command goes down,
// answers 500, answers 429 with Retry-After, or resets connections.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Mode {
    Ok,
    Down,
    Error500,
    TooMany,
    Reset,
}

/// The receiver's wire protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    /// Generic webhook: NDJSON, 2xx.
    Ndjson,
    /// Splunk HEC: concatenated envelopes, `{"code":0}`.
    Hec,
    /// Elasticsearch `_bulk`: action + source lines; per-item statuses (every third
    /// new document is refused with 429 the first time; a known `_id` answers 409).
    Bulk,
    /// Loki push: JSON streams, 204.
    Loki,
}

#[derive(Default)]
struct Seen {
    records: Vec<Value>,
    /// Protocol envelopes (HEC envelopes without `event`, `_bulk` actions, Loki stream labels).
    envelopes: Vec<Value>,
    bulk_ids: HashSet<String>,
    bulk_new: usize,
    bulk_429: usize,
    bulk_409: usize,
    /// Requests answered (or reset) per mode.
    hits: HashMap<&'static str, usize>,
    /// Time of the last 429, and the shortest gap from a 429 to the next request.
    last_429: Option<Instant>,
    min_gap_after_429: Option<Duration>,
    unauthorized: usize,
}

struct Receiver {
    port: u16,
    proto: Proto,
    mode: Arc<Mutex<Mode>>,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Ok => "ok",
        Mode::Down => "down",
        Mode::Error500 => "500",
        Mode::TooMany => "429",
        Mode::Reset => "reset",
    }
}

/// Closes with RST instead of FIN: what a crashing proxy or load balancer does.
fn reset(sock: &TcpStream) {
    use std::os::fd::AsRawFd as _;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid socket fd and a properly sized option value.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as u32,
        );
    }
}

impl Receiver {
    /// A generic webhook receiver expecting `Authorization: Bearer <token>`.
    fn start(pki: &Pki, token: &str) -> Self {
        Self::start_as(pki, Proto::Ndjson, &format!("Bearer {token}"))
    }

    fn start_as(pki: &Pki, proto: Proto, auth: &str) -> Self {
        let port = free_port();
        let mode = Arc::new(Mutex::new(Mode::Ok));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let config = pki.server_config();
        let (m, s, st, tok) = (mode.clone(), seen.clone(), stop.clone(), auth.to_string());
        let thread = std::thread::spawn(move || {
            let mut listener: Option<TcpListener> = None;
            while !st.load(Ordering::Relaxed) {
                if *m.lock().unwrap() == Mode::Down {
                    listener = None; // connections are refused
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                let l = listener.get_or_insert_with(|| {
                    let l = TcpListener::bind(("127.0.0.1", port)).expect("re-binding the receiver port");
                    l.set_nonblocking(true).unwrap();
                    l
                });
                match l.accept() {
                    Ok((sock, _)) => {
                        sock.set_nonblocking(false).unwrap();
                        let (config, m, s, st, tok) =
                            (config.clone(), m.clone(), s.clone(), st.clone(), tok.clone());
                        std::thread::spawn(move || serve(sock, config, proto, &m, &s, &st, &tok));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        let r = Self {
            port,
            proto,
            mode,
            seen,
            stop,
            thread: Some(thread),
        };
        eventually(Duration::from_secs(5), "receiver listening", || {
            TcpStream::connect(("127.0.0.1", r.port)).is_ok()
        });
        r
    }

    fn set(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }

    fn hits(&self, m: Mode) -> usize {
        self.seen
            .lock()
            .unwrap()
            .hits
            .get(mode_name(m))
            .copied()
            .unwrap_or(0)
    }

    /// Records whose text contains `needle`.
    fn records_with(&self, needle: &str) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap()
            .records
            .iter()
            .filter(|r| r.to_string().contains(needle))
            .cloned()
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    sock: TcpStream,
    config: Arc<rustls::ServerConfig>,
    proto: Proto,
    mode: &Mutex<Mode>,
    seen: &Mutex<Seen>,
    stop: &AtomicBool,
    auth_expected: &str,
) {
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = BufReader::new(rustls::StreamOwned::new(conn, sock));
    while !stop.load(Ordering::Relaxed) {
        // Request line and headers.
        let mut line = String::new();
        match tls.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if *mode.lock().unwrap() == Mode::Down {
                    reset(&tls.get_ref().sock);
                    return;
                }
                continue;
            }
            Err(_) => return,
        }
        let mut len = 0usize;
        let mut auth = String::new();
        loop {
            let mut h = String::new();
            if tls.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap_or((h, ""));
            match k.to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(0),
                "authorization" => auth = v.trim().to_string(),
                _ => {}
            }
        }
        let mut body = vec![0u8; len];
        if tls.read_exact(&mut body).is_err() {
            return;
        }
        let now = Instant::now();
        let m = *mode.lock().unwrap();
        {
            let mut s = seen.lock().unwrap();
            if let Some(t) = s.last_429.take() {
                let gap = now.duration_since(t);
                s.min_gap_after_429 = Some(s.min_gap_after_429.map_or(gap, |g| g.min(gap)));
            }
            *s.hits.entry(mode_name(m)).or_default() += 1;
        }
        let response = match m {
            Mode::Down | Mode::Reset => {
                reset(&tls.get_ref().sock);
                return;
            }
            Mode::Error500 => {
                "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 5\r\n\r\nboom\n".to_string()
            }
            Mode::TooMany => {
                seen.lock().unwrap().last_429 = Some(Instant::now());
                "HTTP/1.1 429 Too Many Requests\r\nretry-after: 1\r\ncontent-length: 5\r\n\r\nslow\n"
                    .to_string()
            }
            Mode::Ok if auth != auth_expected => {
                seen.lock().unwrap().unauthorized += 1;
                "HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n".to_string()
            }
            Mode::Ok => accept(proto, &body, &mut seen.lock().unwrap()),
        };
        let stream = tls.get_mut();
        if stream
            .write_all(response.as_bytes())
            .and_then(|()| stream.flush())
            .is_err()
        {
            return;
        }
    }
}

fn ok_json(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Takes a request body in the receiver's protocol; returns the response.
fn accept(proto: Proto, body: &[u8], s: &mut Seen) -> String {
    match proto {
        Proto::Ndjson => {
            for l in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                s.records
                    .push(serde_json::from_slice(l).expect("webhook body line is JSON"));
            }
            ok_json("200 OK", "{}")
        }
        Proto::Hec => {
            for env in serde_json::Deserializer::from_slice(body).into_iter::<Value>() {
                let mut env = env.expect("HEC body is concatenated JSON objects");
                s.records.push(env["event"].take());
                s.envelopes.push(env);
            }
            ok_json("200 OK", r#"{"text":"Success","code":0}"#)
        }
        Proto::Bulk => {
            let lines: Vec<&[u8]> = body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
            assert!(
                lines.len().is_multiple_of(2),
                "_bulk: action and source lines in pairs"
            );
            let mut items = Vec::new();
            for pair in lines.chunks(2) {
                let action: Value = serde_json::from_slice(pair[0]).unwrap();
                let id = action["create"]["_id"]
                    .as_str()
                    .expect("create with _id")
                    .to_string();
                let status = if s.bulk_ids.contains(&id) {
                    s.bulk_409 += 1;
                    409
                } else {
                    s.bulk_new += 1;
                    if s.bulk_new.is_multiple_of(3)
                        && !s.envelopes.iter().any(|a| a["retry_of"] == id.as_str())
                    {
                        s.bulk_429 += 1;
                        s.envelopes.push(serde_json::json!({"retry_of": id}));
                        429
                    } else {
                        s.bulk_ids.insert(id);
                        s.records.push(serde_json::from_slice(pair[1]).unwrap());
                        s.envelopes.push(action);
                        201
                    }
                };
                items.push(serde_json::json!({"create": {"status": status}}));
            }
            let errors = items.iter().any(|i| i["create"]["status"] != 201);
            ok_json(
                "200 OK",
                &serde_json::json!({"took": 1, "errors": errors, "items": items}).to_string(),
            )
        }
        Proto::Loki => {
            let push: Value = serde_json::from_slice(body).expect("Loki push is JSON");
            for stream in push["streams"].as_array().expect("streams") {
                for v in stream["values"].as_array().expect("values") {
                    let line = v[1].as_str().expect("log line");
                    s.records.push(serde_json::from_str(line).expect("line is JSON"));
                    assert!(
                        v[0].as_str().unwrap().parse::<u128>().is_ok(),
                        "ns timestamp as string"
                    );
                }
                s.envelopes.push(stream["stream"].clone());
            }
            "HTTP/1.1 204 No Content\r\n\r\n".to_string()
        }
    }
}

// ---------------------------------------------------------------------------------
// Helpers

/// Runs `/bin/echo TOKEN` (a real exec with a unique argv).
fn exec_token(tok: &str) {
    let st = Command::new("/bin/echo")
        .arg(tok)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
}

/// The launch of `/bin/echo TOKEN`: OCSF Process Activity (Launch) or, with
/// `format=ecs`, an ECS process start with action exec.
fn is_launch_of(v: &Value, tok: &str) -> bool {
    let ocsf = v["class_uid"] == 1007
        && v["activity_id"] == 1
        && v["process"]["cmd_line"]
            .as_str()
            .is_some_and(|c| c.split(' ').any(|a| a == tok));
    let ecs = v["event"]["action"] == "exec"
        && v["process"]["args"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == tok));
    ocsf || ecs
}

/// Runs the third-party OCSF validators (`tests/ocsf/validate.py` in the venv
/// `cargo xtask test` builds) on `events`; panics with their report on failure.
fn validate_ocsf(events: &[Value]) {
    let python = std::env::var("MCPWATCH_OCSF_PYTHON")
        .expect("MCPWATCH_OCSF_PYTHON is not set: run the tests with `cargo xtask test`");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("ocsf/validate.py");
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running the OCSF validator");
    let mut stdin = child.stdin.take().unwrap();
    for e in events {
        writeln!(stdin, "{e}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "OCSF validation failed:\n{report}");
    eprintln!("{}", report.trim());
}

const SENSOR_RULE: &str = "MCPW-SENSOR-001";

/// Args for an agent whose ring buffer cannot hold one exec record with a full argv
/// (exec records carry only the argv bytes in use): every [`exec_dropped`] is a
/// kernel drop, and the agent raises its sensor blind-spot finding.
const TINY_RING: [&str; 2] = ["--ringbuf-size", "4096"];

/// Runs `/bin/echo TOKEN PADDING` with 4 KiB of argv: its exec record is larger than
/// the whole [`TINY_RING`], so the kernel cannot reserve it.
fn exec_dropped(tok: &str) {
    let st = Command::new("/bin/echo")
        .arg(tok)
        .arg("x".repeat(4096))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
}

// ---------------------------------------------------------------------------------
// Tests

#[test]
fn detection_finding_reaches_rsyslog_over_tcp_and_udp_and_validates_as_ocsf() {
    let rsyslog = Rsyslog::start(None);
    let out = format!("syslog+tcp://127.0.0.1:{}", rsyslog.port);
    let udp = format!("syslog+udp://127.0.0.1:{}", rsyslog.udp_port);
    let mut args = TINY_RING.to_vec();
    args.extend(["--output", &out, "--output", &udp]);
    let agent = Agent::start_with(&args);
    let tok = token("drop");
    let mut finding = None;
    let start = Instant::now();
    while finding.is_none() {
        exec_dropped(&tok); // lost in the kernel: the ring is too small
        std::thread::sleep(Duration::from_millis(100));
        finding = rsyslog
            .messages_from("imtcp")
            .into_iter()
            .find(|(msgid, _, v)| msgid == SENSOR_RULE && v["class_uid"] == 2004);
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no finding at rsyslog; agent log:\n{}\nrsyslog:\n{}",
            agent.log(),
            rsyslog.daemon.log()
        );
    }
    let (_, sd, f) = finding.unwrap();
    assert_eq!(f["finding_info"]["analytic"]["uid"], SENSOR_RULE);
    assert_eq!(f["severity_id"], 3);
    let uid = f["finding_info"]["uid"].as_str().unwrap().to_string();
    assert!(
        sd.contains(&format!("uid=\"{uid}\"")) && sd.contains("class=\"alert\""),
        "{sd}"
    );
    // Evidence: the agent's own process, with its lineage.
    let p = &f["evidences"][0]["process"];
    assert_eq!(p["pid"], agent.pid());
    assert!(p["parent_process"]["pid"].as_u64().is_some(), "{p}");
    assert!(
        agent.metric(&format!(
            "mcpwatch_alerts_total{{rule=\"{SENSOR_RULE}\",severity=\"medium\"}}"
        )) >= 1.0
    );
    // Further drops inside the throttle window do not raise it again.
    for _ in 0..5 {
        exec_dropped(&tok);
    }
    std::thread::sleep(Duration::from_millis(2500));
    let findings: Vec<Value> = rsyslog
        .messages_from("imtcp")
        .into_iter()
        .filter(|(m, _, _)| m == SENSOR_RULE)
        .map(|(_, _, v)| v)
        .collect();
    assert_eq!(findings.len(), 1, "throttled to one per window: {findings:?}");
    // The same record over UDP: same finding uid and event uid.
    let over_udp: Vec<Value> = rsyslog
        .messages_from("imudp")
        .into_iter()
        .filter(|(m, _, _)| m == SENSOR_RULE)
        .map(|(_, _, v)| v)
        .collect();
    assert_eq!(over_udp.len(), 1, "{over_udp:?}");
    assert_eq!(over_udp[0]["metadata"]["uid"], findings[0]["metadata"]["uid"]);
    assert!(
        agent.metric(&format!(
            "mcpwatch_alerts_suppressed_total{{rule=\"{SENSOR_RULE}\"}}"
        )) >= 1.0
    );
    validate_ocsf(&findings);
}

/// The session audit as a record class of its own: a sink taking `events=audit`
/// gets one OCSF API Activity per MCP request of a real SDK session, with the
/// method, the tool, the outcome and the call id, and no alerts or inventory.
#[test]
fn audit_records_reach_rsyslog_as_ocsf_api_activity() {
    let rsyslog = Rsyslog::start(None);
    let out = format!("syslog+tcp://127.0.0.1:{}?events=audit", rsyslog.port);
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules.yaml");
    let mut agent = Agent::start_with(&["--rules", rules.to_str().unwrap(), "--output", &out]);
    let name = token("siem-audit");
    let python = venv_bin("python");
    let (client_out, client) = run_client(
        Command::new(&python)
            .arg(fixture("rules_client.py"))
            .args(["-", r#"[["sleep", {"seconds": 0}], ["exfiltrate", {}]]"#, "stdio"])
            .arg(&python)
            .arg(fixture("rules_server.py"))
            .arg(&name),
    );
    assert!(client_out.contains("result:"), "{client_out}");
    let audited = |target: &str| {
        rsyslog
            .messages_from("imtcp")
            .into_iter()
            .find(|(_, _, v)| v["class_uid"] == 6003 && v["resources"][0]["name"] == target)
    };
    eventually(
        Duration::from_secs(15),
        "the audit of the failed call at rsyslog",
        || audited("exfiltrate").is_some(),
    );
    let (msgid, sd, ok) = audited("sleep").expect("the first call is audited too");
    assert_eq!(msgid, "api_activity");
    assert!(sd.contains("class=\"audit\""), "{sd}");
    for key in [
        "api.operation",
        "api.request.uid",
        "api.service.name",
        "actor.process.pid",
        "actor.session.uid",
        "message_context.uid",
        "status_id",
        "status_code",
        "duration",
        "unmapped.arguments.sha256",
        "unmapped.request_bytes",
        "unmapped.response_bytes",
        "metadata.uid",
        "metadata.correlation_uid",
    ] {
        assert!(!field(&ok, key).is_null(), "{key} missing: {ok:#}");
    }
    assert_eq!(ok["activity_id"], 99, "{ok:#}");
    assert_eq!(ok["api"]["operation"], "tools/call", "{ok:#}");
    assert_eq!(ok["api"]["service"]["name"], *name, "{ok:#}");
    assert_eq!(ok["actor"]["process"]["pid"], client, "{ok:#}");
    assert_eq!(ok["resources"][0]["type"], "tool", "{ok:#}");
    assert_eq!(
        (ok["status_id"].as_u64(), ok["status_code"].as_str()),
        (Some(1), Some("ok"))
    );
    let (_, _, failed) = audited("exfiltrate").unwrap();
    assert_eq!(
        (failed["status_id"].as_u64(), failed["status_code"].as_str()),
        (Some(2), Some("tool_error")),
        "{failed:#}"
    );
    let all = rsyslog.messages_from("imtcp");
    // Only the audit class: no finding, no inventory record, no process telemetry.
    assert!(
        all.iter().all(|(_, _, v)| v["class_uid"] == 6003),
        "{:?}",
        all.iter().map(|(m, _, _)| m).collect::<Vec<_>>()
    );
    let records: Vec<Value> = all.into_iter().map(|(_, _, v)| v).collect();
    validate_ocsf(&records);
    agent.stop();
}

#[test]
fn telemetry_reaches_rsyslog_over_mutual_tls_and_certificates_are_verified() {
    let pki = Pki::new();
    let rsyslog = Rsyslog::start(Some(&pki));
    // Same receiver twice: with our CA and a client certificate (delivers), and
    // trusting only the system store (must refuse the test CA's certificate and
    // deliver nothing).
    let trusted = format!(
        "syslog+tls://localhost:{}?events=all&ca={}&cert={}&key={}",
        rsyslog.port,
        pki.path("ca.pem").display(),
        pki.path("client.pem").display(),
        pki.path("client.key").display()
    );
    let untrusted = format!("syslog+tls://127.0.0.1:{}?events=all", rsyslog.port);
    // And with our CA but no client certificate: rsyslog must refuse it.
    let no_client_cert = format!(
        "syslog+tls://localhost:{}?events=all&ca={}",
        rsyslog.port,
        pki.path("ca.pem").display()
    );
    let agent = Agent::start_with(&[
        "--output",
        &trusted,
        "--output",
        &untrusted,
        "--output",
        &no_client_cert,
    ]);
    let toks: Vec<String> = (0..10).map(|i| token(&format!("tls{i}"))).collect();
    for t in &toks {
        exec_token(t);
    }
    eventually(Duration::from_secs(10), "every exec at rsyslog over TLS", || {
        let msgs = rsyslog.messages();
        toks.iter()
            .all(|t| msgs.iter().any(|(_, _, v)| is_launch_of(v, t)))
    });
    let msgs = rsyslog.messages();
    let ours: Vec<Value> = msgs
        .iter()
        .filter(|(_, _, v)| toks.iter().any(|t| is_launch_of(v, t)))
        .map(|(_, _, v)| v.clone())
        .collect();
    for (msgid, sd, v) in &msgs {
        if toks.iter().any(|t| is_launch_of(v, t)) {
            assert_eq!(msgid, "process_activity");
            assert!(sd.contains("class=\"telemetry\""), "{sd}");
        }
    }
    // Each exec delivered once by the trusted sink, never by the untrusted one.
    assert_eq!(ours.len(), toks.len(), "duplicates or strays: {ours:?}");
    let bad = format!("syslog+tls://127.0.0.1:{}", rsyslog.port);
    assert_eq!(
        agent.metric(&format!("mcpwatch_sink_events_total{{sink=\"{bad}\"}}")),
        0.0
    );
    assert!(agent.metric(&format!("mcpwatch_sink_retries_total{{sink=\"{bad}\"}}")) >= 1.0);
    assert!(agent.log().contains("UnknownIssuer") || agent.log().contains("invalid peer certificate"));
    let anonymous = format!("syslog+tls://localhost:{}#2", rsyslog.port);
    assert_eq!(
        agent.metric(&format!("mcpwatch_sink_events_total{{sink=\"{anonymous}\"}}")),
        0.0
    );
    assert!(agent.metric(&format!("mcpwatch_sink_retries_total{{sink=\"{anonymous}\"}}")) >= 1.0);
    validate_ocsf(&ours[..2]);
}

/// The default `record_max_bytes`: the JSON of one record, so that with the syslog
/// header the whole message fits rsyslog's default `maxMessageSize` (8 KiB).
const RECORD_MAX_BYTES: usize = 7680;
const SYSLOG_DEFAULT_MAX: usize = 8192;

/// A long, realistic argument (IDE and terminal command lines nest paths and flags):
/// 1.5 KB, distinct per level.
fn level_padding(level: usize) -> String {
    let mut s = format!("--level{level}-extensions-dir=");
    while s.len() < 1500 {
        s.push_str(&format!(
            "/home/dev/.vscode-server/extensions/ms-python.python-2026.{level}.0:"
        ));
    }
    s
}

/// Runs the fixture MCP server under the SDK client at the bottom of eight nested
/// shells (sh and bash in turn), each with a 1.5 KB argument, as IDEs, terminals
/// and shells nest on a developer's machine. Level k runs level k-1 from the script
/// in `$MW_Sk-1`; `; :` after it keeps each shell waiting (no exec of its last
/// command), so every level is a real ancestor. Returns the client's output.
fn mcp_server_under_deep_tree(name: &str) -> String {
    let shell = |k: usize| if k.is_multiple_of(2) { "bash" } else { "sh" };
    let script = |k: usize| match k {
        1 => r#""$MW_PY" "$MW_CLIENT" sleep '{"seconds": 0}' stdio "$MW_PY" "$MW_SERVER" "$MW_NAME"; :"#
            .to_string(),
        k => format!(
            r#"{} -c "$MW_S{p}" level{p} "$MW_PAD{p}"; :"#,
            shell(k - 1),
            p = k - 1
        ),
    };
    let python = venv_bin("python");
    let mut cmd = Command::new(shell(8));
    cmd.env("MW_PY", &python)
        .env("MW_CLIENT", fixture("rules_client.py"))
        .env("MW_SERVER", fixture("rules_server.py"))
        .env("MW_NAME", name);
    for k in 1..8 {
        cmd.env(format!("MW_S{k}"), script(k))
            .env(format!("MW_PAD{k}"), level_padding(k));
    }
    cmd.arg("-c").arg(script(8)).arg("level8").arg(level_padding(8));
    run_client(&mut cmd).0
}

#[test]
fn findings_from_a_deep_process_tree_fit_rsyslogs_default_message_size_as_valid_json() {
    // rsyslog as installed: maxMessageSize left at its 8 KiB default.
    let rsyslog = Rsyslog::start_sized(None, None);
    let tcp = format!("syslog+tcp://127.0.0.1:{}", rsyslog.port);
    let udp = format!("syslog+udp://127.0.0.1:{}", rsyslog.udp_port);
    // The same findings in line, where no budget applies: the untrimmed records.
    let dir = tempfile::tempdir().unwrap();
    let full_path = dir.path().join("findings.ocsf.jsonl");
    let full = format!("jsonl:{}?format=ocsf&events=alerts", full_path.display());
    let rules = repo().join("rules.yaml");
    let agent = Agent::start_in(
        dir,
        &[
            "--rules",
            rules.to_str().unwrap(),
            "--output",
            &tcp,
            "--output",
            &udp,
            "--output",
            &full,
        ],
    );
    let name = token("deep");
    let out = mcp_server_under_deep_tree(&name);
    assert!(out.contains("result: slept"), "{out}");
    const RULE: &str = "shadow-mcp-server";
    eventually(
        Duration::from_secs(15),
        "the shadow finding at rsyslog over TCP and UDP",
        || {
            let msgs = rsyslog.raw_messages();
            ["imtcp", "imudp"]
                .iter()
                .all(|input| msgs.iter().any(|(i, m, _)| i == input && m == RULE))
        },
    );
    // The untrimmed finding: the tree is deep enough to matter.
    let untrimmed: Vec<Value> = std::fs::read_to_string(&full_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|f: &Value| {
            f["finding_info"]["analytic"]["uid"] == RULE
                && f["unmapped"]["mcp_server"]["name"] == name.as_str()
        })
        .collect();
    assert_eq!(untrimmed.len(), 1, "{untrimmed:?}");
    let original = &untrimmed[0];
    let original_bytes = original.to_string().len();
    let depth = |f: &Value| {
        let mut p = field(f, "evidences.0.process");
        let mut n = 0;
        while let Some(up) = p.get("parent_process") {
            p = up;
            n += 1;
        }
        n
    };
    eprintln!(
        "untrimmed finding: {original_bytes} bytes, {} ancestors",
        depth(original)
    );
    assert!(
        depth(original) >= 9,
        "eight shells, the client and more: {original:#}"
    );
    assert!(original_bytes > SYSLOG_DEFAULT_MAX, "{original_bytes}");

    // Every message rsyslog received is whole JSON within the budget.
    let mut findings = Vec::new();
    for (input, msgid, msg) in rsyslog.raw_messages() {
        let v: Value = serde_json::from_str(&msg).unwrap_or_else(|e| {
            panic!(
                "{input} {msgid}: {} bytes at rsyslog are not JSON ({e}); rsyslog log:\n{}",
                msg.len(),
                rsyslog.daemon.log()
            )
        });
        eprintln!("{input} {msgid}: {} bytes", msg.len());
        assert!(
            msg.len() <= RECORD_MAX_BYTES,
            "{input} {msgid}: {} bytes",
            msg.len()
        );
        if msgid == RULE && v["unmapped"]["mcp_server"]["name"] == name.as_str() {
            findings.push((input, v));
        }
    }
    assert_eq!(findings.len(), 2, "one over TCP, one over UDP");
    let o_proc = field(original, "evidences.0.process");
    for (input, f) in &findings {
        // Marked as trimmed, lineage first.
        let trimmed = field(f, "unmapped.trimmed")
            .as_array()
            .unwrap_or_else(|| panic!("{input}: unmapped.trimmed is not a list: {f:#}"));
        assert!(
            trimmed.iter().any(|t| t == "lineage.args"),
            "{input}: {trimmed:?}"
        );
        eprintln!(
            "{input}: trimmed {trimmed:?} from {} bytes",
            field(f, "unmapped.untrimmed_bytes")
        );
        // The evidence that matters, whole.
        for key in [
            "class_uid",
            "time",
            "severity_id",
            "metadata.uid",
            "finding_info.uid",
            "finding_info.title",
            "finding_info.analytic.uid",
            "device.hostname",
            "unmapped.identity",
            "unmapped.mcp_server.name",
            "unmapped.mcp_server.server_uid",
        ] {
            assert_eq!(field(f, key), field(original, key), "{input}: {key}");
        }
        let p = field(f, "evidences.0.process");
        for key in ["pid", "uid", "name", "cmd_line", "file.path"] {
            assert_eq!(field(p, key), field(o_proc, key), "{input}: process.{key}");
        }
        // The parent is kept whole, as far as its identity goes.
        for key in ["pid", "uid", "name", "file.path"] {
            assert_eq!(
                field(p, &format!("parent_process.{key}")),
                field(o_proc, &format!("parent_process.{key}")),
                "{input}: parent_process.{key}"
            );
        }
    }
    for label in [&tcp, &udp] {
        assert!(
            agent.metric(&format!("mcpwatch_records_trimmed_total{{sink=\"{label}\"}}")) >= 1.0,
            "{label}"
        );
        assert_eq!(
            agent.metric(&format!("mcpwatch_records_over_budget_total{{sink=\"{label}\"}}")),
            0.0,
            "{label}"
        );
    }
    let trimmed: Vec<Value> = findings.into_iter().map(|(_, v)| v).collect();
    validate_ocsf(&trimmed);
}

#[test]
fn webhook_outages_lose_nothing_and_duplicates_carry_the_same_uid() {
    let pki = Pki::new();
    let secret = format!("s3cret-{}", std::process::id());
    let receiver = Receiver::start(&pki, &secret);
    let token_file = pki.path("token");
    std::fs::write(&token_file, format!("{secret}\n")).unwrap();
    let out = format!(
        "webhook+https://localhost:{}/ingest?events=all&batch=20&ca={}&token_file={}",
        receiver.port,
        pki.path("ca.pem").display(),
        token_file.display()
    );
    // Retries back off to at most 4 s here (60 s by default), to keep the test short.
    let config = pki.path("config.yaml");
    std::fs::write(&config, "delivery:\n  retry_max_secs: 4\n").unwrap();
    let agent = Agent::start_with(&["--output", &out, "--config", config.to_str().unwrap()]);
    let mut toks = Vec::new();
    // Execs go on in every phase; each phase lasts until the agent has met it.
    for mode in [
        Mode::Ok,
        Mode::Error500,
        Mode::TooMany,
        Mode::Reset,
        Mode::Down,
        Mode::Ok,
    ] {
        receiver.set(mode);
        let start = Instant::now();
        let before = receiver.hits(mode);
        loop {
            let t = token(&format!("wh-{}", mode_name(mode)));
            exec_token(&t);
            toks.push(t);
            std::thread::sleep(Duration::from_millis(150));
            let met = mode == Mode::Down && start.elapsed() > Duration::from_secs(2)
                || mode != Mode::Down
                    && receiver.hits(mode) > before
                    && start.elapsed() > Duration::from_secs(1);
            if met {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "agent never tried during {mode:?}"
            );
        }
    }
    eventually(
        Duration::from_secs(30),
        "every exec delivered after the outages",
        || toks.iter().all(|t| !receiver.records_with(t).is_empty()),
    );
    // At least once: every exec arrived; any repeat is the same record (same uid).
    let mut dup = 0;
    for t in &toks {
        let recs = receiver.records_with(t);
        let launches: Vec<&Value> = recs.iter().filter(|v| is_launch_of(v, t)).collect();
        assert!(!launches.is_empty(), "{t}: no launch event");
        let uids: HashSet<&str> = launches
            .iter()
            .map(|v| v["metadata"]["uid"].as_str().unwrap())
            .collect();
        assert_eq!(uids.len(), 1, "{t}: one event, one uid: {launches:?}");
        dup += launches.len() - 1;
    }
    let s = receiver.seen.lock().unwrap();
    assert_eq!(s.unauthorized, 0, "token from token_file");
    let gap = s.min_gap_after_429.expect("a request after a 429");
    assert!(
        gap >= Duration::from_millis(900),
        "Retry-After: 1 honoured, next try after {gap:?}"
    );
    drop(s);
    let label = format!("webhook+https://localhost:{}", receiver.port);
    assert!(agent.metric(&format!("mcpwatch_sink_retries_total{{sink=\"{label}\"}}")) >= 4.0);
    eprintln!(
        "{} execs, {dup} duplicates, hits: 500={} 429={} reset={}",
        toks.len(),
        receiver.hits(Mode::Error500),
        receiver.hits(Mode::TooMany),
        receiver.hits(Mode::Reset)
    );
}

#[test]
fn sigkill_mid_delivery_then_restart_delivers_the_spool() {
    let pki = Pki::new();
    let secret = "restart-token";
    let receiver = Receiver::start(&pki, secret);
    let token_file = pki.path("token");
    std::fs::write(&token_file, secret).unwrap();
    let out = format!(
        "webhook+https://localhost:{}?events=all&ca={}&token_file={}",
        receiver.port,
        pki.path("ca.pem").display(),
        token_file.display()
    );
    receiver.set(Mode::Error500);
    let mut agent = Agent::start_with(&["--output", &out]);
    let toks: Vec<String> = (0..15).map(|i| token(&format!("kill{i}"))).collect();
    for t in &toks {
        exec_token(t);
    }
    // Spooled (the jsonl file shows they passed the output stage) and being retried.
    for t in &toks {
        agent.wait_event(Duration::from_secs(5), |v| mcpwatch_e2e::is_exec_with(v, t));
    }
    eventually(Duration::from_secs(5), "a failed delivery attempt", || {
        receiver.hits(Mode::Error500) > 0
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(toks.iter().all(|t| receiver.records_with(t).is_empty()));
    let dir = agent.kill();
    let spool = dir.path().join("spool");
    assert!(
        std::fs::read_dir(&spool).unwrap().count() > 1,
        "spool segments left behind"
    );
    receiver.set(Mode::Ok);
    let agent = Agent::start_in(dir, &["--output", &out]);
    eventually(
        Duration::from_secs(15),
        "the spool delivered after the restart",
        || {
            toks.iter()
                .all(|t| receiver.records_with(t).iter().any(|v| is_launch_of(v, t)))
        },
    );
    let label = format!("webhook+https://localhost:{}", receiver.port);
    eventually(Duration::from_secs(5), "backlog drained", || {
        agent.metric(&format!("mcpwatch_sink_backlog_records{{sink=\"{label}\"}}")) == 0.0
    });
}

/// Sends the telemetry of a few execs to `receiver` through `output`; returns the
/// records of those execs as received.
fn deliver_execs(receiver: &Receiver, output: &str, n: usize) -> (Agent, Vec<Vec<Value>>) {
    let agent = Agent::start_with(&["--output", output]);
    let toks: Vec<String> = (0..n)
        .map(|i| token(&format!("{:?}{i}", receiver.proto)))
        .collect();
    for t in &toks {
        exec_token(t);
    }
    eventually(Duration::from_secs(15), "every exec delivered", || {
        toks.iter()
            .all(|t| receiver.records_with(t).iter().any(|v| is_launch_of(v, t)))
    });
    let recs = toks
        .iter()
        .map(|t| {
            receiver
                .records_with(t)
                .into_iter()
                .filter(|v| is_launch_of(v, t))
                .collect()
        })
        .collect();
    assert_eq!(receiver.seen.lock().unwrap().unauthorized, 0, "{}", agent.log());
    (agent, recs)
}

#[test]
fn splunk_hec_gets_envelopes_with_sourcetype_and_token() {
    let pki = Pki::new();
    let receiver = Receiver::start_as(&pki, Proto::Hec, "Splunk hec-token-1");
    let tf = pki.path("hec.token");
    std::fs::write(&tf, "hec-token-1\n").unwrap();
    let out = format!(
        "hec+https://localhost:{}?events=all&index=mcp&ca={}&token_file={}",
        receiver.port,
        pki.path("ca.pem").display(),
        tf.display()
    );
    let (_agent, recs) = deliver_execs(&receiver, &out, 5);
    assert!(recs.iter().all(|r| r.len() == 1), "{recs:?}");
    let s = receiver.seen.lock().unwrap();
    let env = s
        .envelopes
        .iter()
        .find(|e| e["sourcetype"] == "ocsf:process_activity")
        .expect("envelope");
    assert_eq!(env["index"], "mcp");
    assert_eq!(env["source"], "mcpwatch");
    assert!(env["time"].as_f64().unwrap() > 1.7e9, "{env}");
}

#[test]
fn elastic_bulk_items_are_checked_one_by_one_and_resent_idempotently() {
    let pki = Pki::new();
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode("mcpwatch:pw-123");
    let receiver = Receiver::start_as(&pki, Proto::Bulk, &format!("Basic {basic}"));
    let pf = pki.path("es.password");
    std::fs::write(&pf, "pw-123").unwrap();
    let out = format!(
        "elastic+https://localhost:{}?events=all&batch=50&format=ecs&user=mcpwatch&password_file={}&ca={}",
        receiver.port,
        pf.display(),
        pki.path("ca.pem").display()
    );
    let (agent, recs) = deliver_execs(&receiver, &out, 9);
    let s = receiver.seen.lock().unwrap();
    // Each document indexed exactly once although items were refused and resent.
    assert!(recs.iter().all(|r| r.len() == 1), "{recs:?}");
    assert!(s.bulk_429 > 0, "per-item 429s were answered");
    let action = s.envelopes.iter().find(|a| a.get("create").is_some()).unwrap();
    assert_eq!(action["create"]["_index"], "mcpwatch-events");
    drop(s);
    // The receiver counts a 429 when it answers; the agent counts the retry when it
    // reads that answer, so a 429 on the last batch may still be in flight here.
    let label = format!("elastic+https://localhost:{}", receiver.port);
    agent.wait_metric(
        Duration::from_secs(10),
        &format!("mcpwatch_sink_retries_total{{sink=\"{label}\"}}"),
        |v| v >= 1.0,
    );
    // ECS: the document is an ECS process event.
    let doc = &recs[0][0];
    assert_eq!(doc["event"]["kind"], "event");
    assert_eq!(doc["event"]["category"][0], "process");
    assert!(
        doc["@timestamp"].is_string() && doc["process"]["pid"].is_u64(),
        "{doc}"
    );
}

#[test]
fn loki_push_streams_carry_only_low_cardinality_labels() {
    let pki = Pki::new();
    let receiver = Receiver::start_as(&pki, Proto::Loki, "Bearer loki-tok");
    let tf = pki.path("loki.token");
    std::fs::write(&tf, "loki-tok").unwrap();
    let out = format!(
        "loki+https://localhost:{}?events=all&tenant=soc&ca={}&token_file={}",
        receiver.port,
        pki.path("ca.pem").display(),
        tf.display()
    );
    let (_agent, recs) = deliver_execs(&receiver, &out, 5);
    assert!(recs.iter().all(|r| r.len() == 1), "{recs:?}");
    let s = receiver.seen.lock().unwrap();
    for labels in &s.envelopes {
        let keys: HashSet<&str> = labels.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            HashSet::from(["job", "host", "class", "severity_id"]),
            "{labels}"
        );
    }
}

/// A real Prometheus on a free loopback port, scraping every second.
struct Prometheus {
    daemon: Daemon,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(scrape_configs: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("prometheus.yml");
        std::fs::write(
            &conf,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
                 rule_files: [{rules}]\n\
                 scrape_configs:\n{scrape_configs}",
                rules = repo().join("packaging/prometheus/mcpwatch.rules.yml").display()
            ),
        )
        .unwrap();
        let mut daemon = Daemon::spawn(
            "prometheus",
            Command::new("prometheus")
                .arg(format!("--config.file={}", conf.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}")),
            dir.path().join("prometheus.log"),
        );
        wait_port(port, &mut daemon);
        Self {
            daemon,
            port,
            _dir: dir,
        }
    }

    fn api(&self, path: &str, query: Option<&str>) -> Value {
        let mut req = ureq::get(&format!("http://127.0.0.1:{}{path}", self.port));
        if let Some(q) = query {
            req = req.query("query", q);
        }
        let body = req
            .call()
            .and_then(|r| r.into_body().read_to_string())
            .unwrap_or_default();
        serde_json::from_str(&body).unwrap_or(Value::Null)
    }

    /// The first sample of an instant query.
    fn value(&mut self, q: &str) -> Option<f64> {
        self.daemon.assert_running();
        self.api("/api/v1/query", Some(q))["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|s| s.parse().ok())
    }
}

#[test]
fn prometheus_scrapes_the_agent() {
    let agent = Agent::start();
    let mut prom = Prometheus::start(&format!(
        "  - job_name: mcpwatch\n    static_configs: [{{targets: ['127.0.0.1:{}']}}]\n",
        agent.port
    ));
    eventually(
        Duration::from_secs(20),
        "Prometheus scraped the agent (up == 1)",
        || prom.value("up{job=\"mcpwatch\"}") == Some(1.0),
    );
    exec_token(&token("prom"));
    eventually(Duration::from_secs(10), "exec counter scraped", || {
        prom.value("mcpwatch_events_total{kind=\"exec\"}")
            .is_some_and(|v| v >= 1.0)
    });
    // The shipped rules load and evaluate against the live agent.
    let v = prom.api("/api/v1/rules", None);
    let groups = v["data"]["groups"].as_array().cloned().unwrap_or_default();
    assert!(!groups.is_empty(), "shipped rules not loaded: {v}");
    for g in &groups {
        for r in g["rules"].as_array().unwrap() {
            assert_eq!(r["health"], "ok", "rule {} unhealthy: {r}", r["name"]);
        }
    }
}

#[test]
fn prometheus_scrapes_over_tls_with_basic_auth_from_a_web_config_file() {
    let pki = Pki::new();
    let web = pki.path("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n\
             basic_auth_users:\n  prometheus: {}\n",
            bcrypt::hash("scrape-pw", 6).unwrap()
        ),
    )
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut agent = Daemon::spawn(
        "mcpwatch",
        Command::new(mcpwatch_e2e::agent_binary())
            .arg("run")
            .arg(format!("--listen=127.0.0.1:{port}"))
            .arg(format!("--web-config-file={}", web.display()))
            .arg(format!("--state-dir={}", state.path().display()))
            .arg(format!(
                "--output=jsonl:{}",
                state.path().join("e.jsonl").display()
            )),
        state.path().join("agent.log"),
    );
    wait_port(port, &mut agent);
    // Plain HTTP gets nothing.
    assert!(ureq::get(&format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .is_err());
    let job = |name: &str, pw: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    tls_config: {{ca_file: {}}}\n\
             \x20   basic_auth: {{username: prometheus, password: {pw}}}\n\
             \x20   static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n",
            pki.path("ca.pem").display()
        )
    };
    let mut prom = Prometheus::start(&(job("tls", "scrape-pw") + &job("badpw", "wrong")));
    eventually(Duration::from_secs(20), "both jobs scraped once", || {
        prom.value("up{job=\"tls\"}").is_some() && prom.value("up{job=\"badpw\"}").is_some()
    });
    eventually(Duration::from_secs(10), "TLS + basic auth scrape up", || {
        prom.value("up{job=\"tls\"}") == Some(1.0)
    });
    assert_eq!(
        prom.value("up{job=\"badpw\"}"),
        Some(0.0),
        "a wrong password must not scrape"
    );
    assert!(prom.value("mcpwatch_build_info{job=\"tls\"}").is_some());
    agent.assert_running();
}

fn repo() -> PathBuf {
    std::env::var_os("MCPWATCH_REPO")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap()
                .to_path_buf()
        })
}

#[test]
fn packaged_prometheus_rules_pass_promtool_and_the_dashboard_queries_real_metrics() {
    let dir = repo().join("packaging/prometheus");
    for args in [
        vec!["check", "rules", "mcpwatch.rules.yml"],
        vec!["test", "rules", "mcpwatch.rules.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every metric the dashboard and the rules query exists on a live agent.
    let agent = Agent::start();
    let (_, exposition) = agent.get("/metrics").unwrap();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("../grafana/mcpwatch-dashboard.json")).unwrap(),
    )
    .expect("dashboard is JSON");
    let mut exprs: Vec<String> = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    exprs.push(std::fs::read_to_string(dir.join("mcpwatch.rules.yml")).unwrap());
    let families: HashSet<String> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    for e in &exprs {
        for word in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if let Some(name) = word.strip_prefix("mcpwatch_") {
                let family = ["_total", "_bucket", "_count", "_sum", "_info"]
                    .iter()
                    .fold(format!("mcpwatch_{name}"), |n, s| {
                        n.strip_suffix(s).map(str::to_string).unwrap_or(n)
                    });
                assert!(families.contains(&family), "{word} queried but not exposed");
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// The MCP inventory in the SIEM: appeared / changed / gone and snapshots, with a
// stable server uid across agent restarts and the sanctioned status on every record.

/// A real MCP server (PyPI `mcp-server-time`) over stdio whose client is this test:
/// it completes an `initialize` handshake and stays up until stopped or dropped.
struct HeldServer {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
}

impl HeldServer {
    fn start(program: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let init = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "mcpwatch-e2e-inventory", "version": "1.0"}}});
        writeln!(stdin, "{init}").unwrap();
        let mut line = String::new();
        let n = stdout.read_line(&mut line).unwrap();
        assert!(n > 0, "{} exited before answering initialize", program.display());
        let answer: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(answer["result"]["serverInfo"]["name"], "mcp-time", "{answer}");
        writeln!(
            stdin,
            r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
        )
        .unwrap();
        Self {
            child,
            stdin: Some(stdin),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Closes its stdin: the server exits as it does when its client goes away.
    fn stop(&mut self) {
        self.stdin.take();
        let start = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(start.elapsed() < Duration::from_secs(10), "server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for HeldServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Inventory records (OCSF 6002 / 5020) about process `pid`, with their HEC
/// sourcetype, from `from` on.
fn inventory_of(receiver: &Receiver, pid: u32, from: usize) -> Vec<(Value, String)> {
    let s = receiver.seen.lock().unwrap();
    s.records
        .iter()
        .zip(&s.envelopes)
        .skip(from)
        .filter(|(r, _)| matches!(r["class_uid"].as_u64(), Some(6002 | 5020)))
        .filter(|(r, _)| r["unmapped"]["inventory"]["pid"] == pid)
        .map(|(r, e)| {
            (
                r.clone(),
                e["sourcetype"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// An inventory attribute of a record; the key must be there (null or not).
fn inv_field<'a>(r: &'a Value, k: &str) -> &'a Value {
    mcpwatch_e2e::field(r, &format!("unmapped.inventory.{k}"))
}

fn has(recs: &[(Value, String)], event: &str, state: Option<&str>) -> bool {
    recs.iter().any(|(r, _)| {
        let inv = &r["unmapped"]["inventory"];
        inv["event"] == event && state.is_none_or(|s| inv["state"] == s)
    })
}

/// The server's uid: `app.uid` on lifecycle events, `product.uid` on snapshots, and
/// `unmapped.inventory.server_uid` on both; all must agree.
fn server_uid(r: &Value) -> String {
    let uid = inv_field(r, "server_uid").as_str().unwrap().to_string();
    let mapped = if r["class_uid"] == 6002 {
        &r["app"]["uid"]
    } else {
        &r["product"]["uid"]
    };
    assert_eq!(mapped, uid.as_str(), "{r:#}");
    uid
}

#[test]
fn mcp_inventory_reaches_the_siem_with_stable_uids_across_restarts_and_sanctioned_status() {
    let pki = Pki::new();
    let receiver = Receiver::start_as(&pki, Proto::Hec, "Splunk inv-token");
    let tf = pki.path("hec.token");
    std::fs::write(&tf, "inv-token").unwrap();
    // Default selection (no events=all): the inventory goes to SIEM sinks with alerts.
    let out = format!(
        "hec+https://localhost:{}?ca={}&token_file={}",
        receiver.port,
        pki.path("ca.pem").display(),
        tf.display()
    );
    // One server sanctioned by an entry only it matches (a token in its argv, through
    // a symlink to the console script), one shadow server.
    let tok = token("inv");
    let rules = pki.path("rules.yaml");
    let repo_rules = std::fs::read_to_string(repo().join("rules.yaml")).unwrap();
    assert!(repo_rules.contains("sanctioned_servers: []\n"));
    let entry = format!(
        "sanctioned_servers:\n  - id: inv-{tok}\n    package: mcp-server-time\n    argv: \"{tok}\"\n"
    );
    std::fs::write(&rules, repo_rules.replace("sanctioned_servers: []\n", &entry)).unwrap();
    let time_server = mcpwatch_e2e::venv_bin("mcp-server-time");
    let link = pki.path(&format!("mcp-server-time-{tok}"));
    std::os::unix::fs::symlink(&time_server, &link).unwrap();
    let args = [
        "--rules",
        rules.to_str().unwrap(),
        "--output",
        &out,
        "--inventory-snapshot-interval-secs",
        "2",
    ];

    let mut agent = Agent::start_with(&args);
    let sanctioned = HeldServer::start(&link, &[]);
    let mut shadow = HeldServer::start(&time_server, &["--local-timezone", "UTC"]);
    let pids = [sanctioned.pid(), shadow.pid()];
    let t0 = Instant::now();
    eventually(
        Duration::from_secs(15),
        "appeared, confirmed and snapshot of both servers",
        || {
            pids.iter().all(|&pid| {
                let recs = inventory_of(&receiver, pid, 0);
                has(&recs, "appeared", None)
                    && (has(&recs, "changed", Some("confirmed")) || has(&recs, "appeared", Some("confirmed")))
                    && has(&recs, "snapshot", Some("confirmed"))
            })
        },
    );
    let first_seen = t0.elapsed();
    let before: Vec<Vec<(Value, String)>> = pids.iter().map(|&p| inventory_of(&receiver, p, 0)).collect();
    let uids: Vec<String> = before.iter().map(|recs| server_uid(&recs[0].0)).collect();
    assert_ne!(uids[0], uids[1], "different launch arguments, different servers");
    for (recs, (uid, want)) in before.iter().zip(uids.iter().zip([true, false])) {
        for (r, sourcetype) in recs {
            assert_eq!(&server_uid(r), uid, "one uid per server across its events");
            assert_eq!(inv_field(r, "sanctioned"), want, "{r:#}");
            assert_eq!(r["device"]["uid"], before[0][0].0["device"]["uid"]);
            let class = if r["class_uid"] == 6002 {
                "application_lifecycle"
            } else {
                "software_info"
            };
            assert_eq!(sourcetype, &format!("ocsf:{class}"));
        }
    }
    assert_eq!(
        inv_field(&before[0][0].0, "sanctioned_entry"),
        format!("inv-{tok}").as_str()
    );
    assert!(inv_field(&before[1][0].0, "sanctioned_entry").is_null());
    // One snapshot holds both servers under one uid and time.
    let snap_uids = |recs: &[(Value, String)]| -> HashSet<String> {
        recs.iter()
            .filter(|(r, _)| r["class_uid"] == 5020)
            .map(|(r, _)| r["metadata"]["correlation_uid"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        snap_uids(&before[0])
            .intersection(&snap_uids(&before[1]))
            .next()
            .is_some(),
        "a snapshot with both servers"
    );
    eventually(Duration::from_secs(5), "the sanctioned gauge", || {
        agent.metric("mcpwatch_mcp_servers{state=\"confirmed\",sanctioned=\"true\"}") == 1.0
    });
    assert!(agent.metric("mcpwatch_mcp_servers{state=\"confirmed\",sanctioned=\"false\"}") >= 1.0);

    // Restart the agent: its start-up snapshot re-announces both, same uids.
    assert!(agent.stop().success(), "{}", agent.log());
    let mark = receiver.seen.lock().unwrap().records.len();
    let t1 = Instant::now();
    let agent = Agent::start_with(&args);
    eventually(
        Duration::from_secs(15),
        "the restarted agent's snapshot of both servers",
        || {
            pids.iter()
                .all(|&pid| has(&inventory_of(&receiver, pid, mark), "snapshot", None))
        },
    );
    let resnapshot = t1.elapsed();
    for (i, want) in [true, false].into_iter().enumerate() {
        let recs = inventory_of(&receiver, pids[i], mark);
        let (snap, _) = recs.iter().find(|(r, _)| r["class_uid"] == 5020).unwrap();
        assert_eq!(
            server_uid(snap),
            uids[i],
            "the same uid after the restart: {snap:#}"
        );
        assert_eq!(
            inv_field(snap, "fingerprint"),
            inv_field(&before[i][0].0, "fingerprint")
        );
        assert_eq!(inv_field(snap, "sanctioned"), want);
    }

    // The shadow server exits: gone, under its uid.
    shadow.stop();
    eventually(Duration::from_secs(10), "the shadow server gone", || {
        has(&inventory_of(&receiver, pids[1], mark), "gone", Some("exited"))
    });
    let recs = inventory_of(&receiver, pids[1], mark);
    let (gone, _) = recs
        .iter()
        .find(|(r, _)| r["unmapped"]["inventory"]["event"] == "gone")
        .unwrap();
    assert_eq!(
        (gone["class_uid"].as_u64(), gone["activity_id"].as_u64()),
        (Some(6002), Some(4))
    );
    assert_eq!(server_uid(gone), uids[1]);
    assert_eq!(inv_field(gone, "sanctioned"), false);

    let all: Vec<Value> = pids
        .iter()
        .flat_map(|&pid| inventory_of(&receiver, pid, 0))
        .map(|(r, _)| r)
        .collect();
    validate_ocsf(&all);
    eprintln!(
        "{} inventory records validated; both servers listed {first_seen:?} after launch, \
         re-announced {resnapshot:?} after the restart began",
        all.len()
    );
    drop(agent);
}
