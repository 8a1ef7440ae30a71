//! Network sensor, socket table and DNS attribution, end to end: the real agent, real
//! eBPF, real traffic between network namespaces the test creates (and removes), and
//! real dnsmasq and curl from Debian. Nothing leaves the machine.

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    process::Stdio,
    sync::mpsc,
    time::{Duration, Instant},
};

use mcpwatch_e2e::{
    netns::{KillOnDrop, NetnsPair, Side, CLIENT_V4, SERVER_V4, SERVER_V6},
    Agent,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(5);

fn me() -> u64 {
    u64::from(std::process::id())
}

fn pid_of(ev: &Value) -> Option<u64> {
    ev["process"]["pid"].as_u64()
}

fn ip_port(v: &Value) -> (String, u64) {
    (
        v["ip"].as_str().unwrap_or_default().to_string(),
        v["port"].as_u64().unwrap_or(0),
    )
}

fn is(ev: &Value, kind: &str, pid: u64) -> bool {
    ev["type"] == kind && pid_of(ev) == Some(pid)
}

fn remote_is(ev: &Value, ip: &str, port: u16) -> bool {
    ip_port(&ev["remote"]) == (ip.to_string(), u64::from(port))
}

fn local_port(ev: &Value) -> u64 {
    ev["local"]["port"].as_u64().unwrap_or(0)
}

/// A TCP server in `side` that accepts one connection, reads until EOF and answers
/// `reply` bytes. Returns the bytes it read.
fn one_shot_server(
    pair: &NetnsPair,
    side: Side,
    bind: &'static str,
    reply: usize,
) -> (std::thread::JoinHandle<usize>, SocketAddr) {
    let (tx, rx) = mpsc::channel();
    let h = pair.spawn(side, move || {
        let l = TcpListener::bind(bind).unwrap();
        tx.send(l.local_addr().unwrap()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.write_all(&vec![b'r'; reply]).unwrap();
        got.len()
    });
    (h, rx.recv().unwrap())
}

#[test]
fn tcp_connect_accept_close_with_exact_bytes_to_a_namespace_host() {
    let mut agent = Agent::start();
    let pair = NetnsPair::new("tcp");
    let (server, _) = one_shot_server(&pair, Side::Server, "0.0.0.0:8080", 2345);
    let received = pair.run(Side::Client, || {
        let mut s = TcpStream::connect((SERVER_V4, 8080)).unwrap();
        s.write_all(&[b'q'; 1000]).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got.len()
    });
    assert_eq!(received, 2345);
    assert_eq!(server.join().unwrap(), 1000);

    let listen = agent.wait_event(WAIT, |e| is(e, "network_listen", me()) && local_port(e) == 8080);
    assert_eq!(ip_port(&listen["local"]), ("0.0.0.0".into(), 8080));
    assert_eq!(listen["address_class"], "unspecified");
    assert_eq!(listen["protocol"], "tcp");

    let connect = agent.wait_event(WAIT, |e| {
        is(e, "network_connect", me()) && remote_is(e, SERVER_V4, 8080)
    });
    assert_eq!(connect["result"], "ok", "{connect}");
    assert_eq!(connect["nonblocking"], false);
    assert_eq!(connect["direction"], "outbound");
    assert_eq!(connect["address_class"], "private");
    assert_eq!(connect["local"]["ip"], CLIENT_V4);
    let id = connect["connection_id"].clone();

    let accept = agent.wait_event(WAIT, |e| is(e, "network_accept", me()) && local_port(e) == 8080);
    assert_eq!(accept["remote"]["ip"], CLIENT_V4);
    assert_eq!(accept["remote"]["port"], connect["local"]["port"]);
    assert_eq!(accept["direction"], "inbound");

    let close_out = agent.wait_event(WAIT, |e| is(e, "network_close", me()) && e["connection_id"] == id);
    assert_eq!(close_out["bytes_sent"], 1000, "{close_out}");
    assert_eq!(close_out["bytes_received"], 2345, "{close_out}");
    let close_in = agent.wait_event(WAIT, |e| {
        is(e, "network_close", me()) && e["direction"] == "inbound" && local_port(e) == 8080
    });
    assert_eq!(close_in["bytes_received"], 1000, "{close_in}");
    assert_eq!(close_in["bytes_sent"], 2345, "{close_in}");
    assert_eq!(close_in["connection_id"], accept["connection_id"]);

    assert!(agent.metric("mcpwatch_connections_total{direction=\"outbound\",result=\"ok\"}") >= 1.0);
    assert!(agent.metric("mcpwatch_connections_total{direction=\"inbound\",result=\"ok\"}") >= 1.0);
    mcpwatch_e2e::eventually(WAIT, "socket table gauge", || {
        agent
            .metrics()
            .contains_key("mcpwatch_socket_table_entries{kind=\"connection\"}")
    });
}

#[test]
fn refused_connect_is_reported_with_its_errno() {
    let mut agent = Agent::start();
    let pair = NetnsPair::new("refused");
    let err = pair.run(Side::Client, || {
        TcpStream::connect((SERVER_V4, 8081)).unwrap_err().raw_os_error()
    });
    assert_eq!(err, Some(libc::ECONNREFUSED));
    let ev = agent.wait_event(WAIT, |e| {
        is(e, "network_connect", me()) && remote_is(e, SERVER_V4, 8081)
    });
    assert_eq!(ev["result"], "ECONNREFUSED", "{ev}");
    assert_eq!(ev["errno"], libc::ECONNREFUSED);
    assert_eq!(ev["protocol"], "tcp");
    // Exactly one outcome for the attempt.
    std::thread::sleep(Duration::from_millis(300));
    agent.poll_events();
    assert_eq!(
        agent.count(|e| is(e, "network_connect", me()) && remote_is(e, SERVER_V4, 8081)),
        1
    );
    assert!(agent.metric("mcpwatch_connections_total{direction=\"outbound\",result=\"refused\"}") >= 1.0);
}

/// Non-blocking connect: returns EINPROGRESS; `ready` is called before waiting for the
/// outcome. Returns SO_ERROR.
fn nonblocking_connect(addr: SocketAddr, ready: impl FnOnce()) -> i32 {
    // SAFETY: plain socket calls on an fd this function owns.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
        assert!(fd >= 0);
        let SocketAddr::V4(v4) = addr else { panic!() };
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
        assert_eq!(rc, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EINPROGRESS)
        );
        ready();
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        assert_eq!(libc::poll(&mut p, 1, 8000), 1, "connect did not finish");
        let mut err: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        );
        libc::close(fd);
        err
    }
}

#[test]
fn nonblocking_connect_reports_attempt_then_later_outcome() {
    let mut agent = Agent::start();
    let pair = NetnsPair::new("async");
    let (server, _) = one_shot_server(&pair, Side::Server, "0.0.0.0:8082", 1);
    // With the server's link down the SYN goes nowhere; the handshake completes only
    // once the link is back (on the kernel's retransmit), well after connect returned.
    pair.set_link(Side::Server, false);
    let server_ns = pair.server.clone();
    let err = pair.run(Side::Client, move || {
        nonblocking_connect(format!("{SERVER_V4}:8082").parse().unwrap(), || {
            std::thread::sleep(Duration::from_millis(300));
            let st = std::process::Command::new("ip")
                .args(["-n", &server_ns, "link", "set", "veth0", "up"])
                .status()
                .unwrap();
            assert!(st.success());
        })
    });
    assert_eq!(err, 0);
    let _ = server.join();

    let attempt = agent.wait_event(WAIT, |e| {
        is(e, "network_connect", me()) && remote_is(e, SERVER_V4, 8082) && e["result"] == "in_progress"
    });
    assert_eq!(attempt["nonblocking"], true);
    let outcome = agent.wait_event(WAIT, |e| {
        is(e, "network_connect", me()) && remote_is(e, SERVER_V4, 8082) && e["result"] == "ok"
    });
    assert_eq!(outcome["nonblocking"], true);
    assert_eq!(outcome["connection_id"], attempt["connection_id"]);
    assert!(
        outcome["time"].as_str() > attempt["time"].as_str(),
        "outcome {outcome} not after attempt {attempt}"
    );

    // And a non-blocking connect that fails later: refused.
    let err = pair.run(Side::Client, || {
        nonblocking_connect(format!("{SERVER_V4}:8083").parse().unwrap(), || {})
    });
    assert_eq!(err, libc::ECONNREFUSED);
    let failed = agent.wait_event(WAIT, |e| {
        is(e, "network_connect", me()) && remote_is(e, SERVER_V4, 8083) && e["result"] != "in_progress"
    });
    assert_eq!(failed["result"], "ECONNREFUSED", "{failed}");
    assert_eq!(failed["nonblocking"], true);
}

#[test]
fn ipv6_connect_and_dual_stack_listener() {
    let mut agent = Agent::start();
    let pair = NetnsPair::new("v6");
    let (server, _) = one_shot_server(&pair, Side::Server, "[::]:8090", 7);
    let got = pair.run(Side::Client, || {
        let mut s = TcpStream::connect((SERVER_V6, 8090)).unwrap();
        s.write_all(b"hello v6").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got.len()
    });
    assert_eq!((got, server.join().unwrap()), (7, 8));
    let listen = agent.wait_event(WAIT, |e| is(e, "network_listen", me()) && local_port(e) == 8090);
    assert_eq!(listen["local"]["ip"], "::");
    let connect = agent.wait_event(WAIT, |e| {
        is(e, "network_connect", me()) && remote_is(e, SERVER_V6, 8090)
    });
    assert_eq!(connect["result"], "ok");
    assert_eq!(connect["address_class"], "private");
    let close = agent.wait_event(WAIT, |e| {
        is(e, "network_close", me()) && e["connection_id"] == connect["connection_id"]
    });
    assert_eq!(
        (close["bytes_sent"].as_u64(), close["bytes_received"].as_u64()),
        (Some(8), Some(7))
    );
}

#[test]
fn loopback_listener_with_accepted_peer() {
    let mut agent = Agent::start();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let client = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"ping").unwrap();
        // SO_LINGER 0: closing sends a reset instead of a FIN.
        let lg = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt on a socket this thread owns, with a valid option value.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&lg as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as u32,
            )
        };
        assert_eq!(rc, 0);
        s.local_addr().unwrap().port()
    });
    let (mut conn, peer) = l.accept().unwrap();
    let mut buf = [0u8; 4];
    conn.read_exact(&mut buf).unwrap();
    let client_port = client.join().unwrap();
    assert_eq!(peer.port(), client_port);

    let listen = agent.wait_event(WAIT, |e| {
        is(e, "network_listen", me()) && local_port(e) == u64::from(port)
    });
    assert_eq!(listen["local"]["ip"], "127.0.0.1");
    assert_eq!(listen["address_class"], "loopback");
    let accept = agent.wait_event(WAIT, |e| {
        is(e, "network_accept", me()) && local_port(e) == u64::from(port)
    });
    assert_eq!(
        ip_port(&accept["remote"]),
        ("127.0.0.1".into(), u64::from(client_port))
    );
    assert_eq!(accept["address_class"], "loopback");
    assert_eq!(accept["fd"], conn.as_raw_fd());
    // The client reset the connection; its end is reported when the server closes it.
    drop(conn);
    let close = agent.wait_event(WAIT, |e| {
        is(e, "network_close", me()) && e["connection_id"] == accept["connection_id"]
    });
    assert_eq!(close["result"], "ECONNRESET", "{close}");
    assert_eq!(close["bytes_received"], 4);
    // Gauges are refreshed once a second.
    mcpwatch_e2e::eventually(WAIT, "listener gauge", || {
        agent.metric("mcpwatch_listeners") >= 1.0
    });
}

#[test]
fn udp_sends_are_reported_per_destination_with_periodic_totals() {
    let mut agent = Agent::start_with(&["--net-report-interval-secs", "1"]);
    let pair = NetnsPair::new("udp");
    pair.run(Side::Client, || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..3 {
            s.send_to(&[1u8; 100], (SERVER_V4, 9000)).unwrap();
        }
        let c = UdpSocket::bind("[::]:0").unwrap();
        c.connect((SERVER_V6, 9001)).unwrap();
        c.send(&[2u8; 50]).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        s.send_to(&[1u8; 100], (SERVER_V4, 9000)).unwrap();
    });
    let first = agent.wait_event(WAIT, |e| {
        is(e, "network_send", me()) && remote_is(e, SERVER_V4, 9000)
    });
    assert_eq!(first["protocol"], "udp");
    assert_eq!(
        (first["bytes_sent"].as_u64(), first["packets_sent"].as_u64()),
        (Some(100), Some(1))
    );
    assert_eq!(first["address_class"], "private");
    let update = agent.wait_event(WAIT, |e| {
        is(e, "network_progress", me()) && remote_is(e, SERVER_V4, 9000)
    });
    assert_eq!(
        (update["bytes_sent"].as_u64(), update["packets_sent"].as_u64()),
        (Some(400), Some(4))
    );
    assert_eq!(update["connection_id"], first["connection_id"]);

    let connect = agent.wait_event(WAIT, |e| {
        is(e, "network_connect", me()) && remote_is(e, SERVER_V6, 9001)
    });
    assert_eq!(
        (connect["protocol"].as_str(), connect["result"].as_str()),
        (Some("udp"), Some("ok"))
    );
    let sent = agent.wait_event(WAIT, |e| {
        is(e, "network_send", me()) && remote_is(e, SERVER_V6, 9001)
    });
    assert_eq!(sent["bytes_sent"], 50);
}

#[test]
fn long_tcp_connections_report_bytes_periodically() {
    let mut agent = Agent::start_with(&["--net-report-interval-secs", "1"]);
    let pair = NetnsPair::new("long");
    let (server, _) = one_shot_server(&pair, Side::Server, "0.0.0.0:8095", 0);
    pair.run(Side::Client, || {
        let mut s = TcpStream::connect((SERVER_V4, 8095)).unwrap();
        s.write_all(&[0u8; 300]).unwrap();
        std::thread::sleep(Duration::from_millis(1200));
        s.write_all(&[0u8; 200]).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    });
    let _ = server.join();
    let connect = agent.wait_event(WAIT, |e| {
        is(e, "network_connect", me()) && remote_is(e, SERVER_V4, 8095)
    });
    let progress = agent.wait_event(WAIT, |e| {
        is(e, "network_progress", me()) && e["connection_id"] == connect["connection_id"]
    });
    assert_eq!(progress["bytes_sent"], 500, "{progress}");
    assert_eq!(progress["remote"]["ip"], SERVER_V4);
    let close = agent.wait_event(WAIT, |e| {
        is(e, "network_close", me()) && e["connection_id"] == connect["connection_id"]
    });
    assert_eq!(close["bytes_sent"], 500);
    assert!(close["duration_ms"].as_u64().unwrap() >= 1200, "{close}");
}

/// Waits until something listens on UDP `port` in the namespace.
fn wait_udp_listener(pair: &NetnsPair, side: Side, port: u16) {
    let start = Instant::now();
    loop {
        let out = pair.command(side, "ss").args(["-lnu"]).output().unwrap();
        if String::from_utf8_lossy(&out.stdout).contains(&format!(":{port} ")) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nothing listens on udp/{port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn curl_connection_carries_the_domain_it_resolved_and_exact_bytes() {
    let mut agent = Agent::start();
    let mut pair = NetnsPair::new("dns");
    let name = format!("web-{}.mcpw.test", std::process::id());
    // dnsmasq from Debian answers for the test name inside the server namespace.
    let dnsmasq = pair
        .command(Side::Server, "dnsmasq")
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            &format!("--listen-address={SERVER_V4}"),
            &format!("--address=/{name}/{SERVER_V4}"),
            "--user=root",
            "--group=root",
            "--pid-file=",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting dnsmasq (run `cargo xtask setup`)");
    let _dnsmasq = KillOnDrop(dnsmasq);
    wait_udp_listener(&pair, Side::Server, 53);
    pair.set_resolver(Side::Client, SERVER_V4);

    let body = "x".repeat(777);
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let response_len = response.len();
    let (tx, rx) = mpsc::channel();
    let server = pair.spawn(Side::Server, move || {
        let l = TcpListener::bind((SERVER_V4, 80)).unwrap();
        tx.send(()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "client closed early");
            req.extend_from_slice(&buf[..n]);
        }
        s.write_all(response.as_bytes()).unwrap();
        req.len()
    });
    rx.recv().unwrap();

    let curl = pair
        .command(Side::Client, "curl")
        .args(["-sS", "-o", "/dev/null", "--max-time", "10"])
        .arg(format!("http://{name}/mcpw"))
        .stdout(Stdio::null())
        .spawn()
        .expect("starting curl");
    let curl_pid = u64::from(curl.id());
    let out = curl.wait_with_output().unwrap();
    assert!(out.status.success(), "curl failed");
    let request_len = server.join().unwrap();

    let answer = agent.wait_event(WAIT, |e| is(e, "dns_response", curl_pid) && e["qtype"] == "A");
    assert_eq!(answer["question"], name.as_str(), "{answer}");
    assert_eq!(answer["rcode"], "NoError");
    assert_eq!(answer["server"]["ip"], SERVER_V4);
    assert!(answer["answers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["type"] == "A" && a["data"] == SERVER_V4));
    let query = agent.wait_event(WAIT, |e| is(e, "dns_query", curl_pid));
    assert_eq!(query["question"], name.as_str());

    let connect = agent.wait_event(WAIT, |e| {
        is(e, "network_connect", curl_pid) && remote_is(e, SERVER_V4, 80) && e["result"] == "ok"
    });
    assert_eq!(connect["domain"], name.as_str(), "{connect}");
    assert_eq!(connect["domain_source"], "process");
    assert_eq!(connect["process"]["exe"], "/usr/bin/curl");
    let close = agent.wait_event(WAIT, |e| {
        is(e, "network_close", curl_pid) && e["connection_id"] == connect["connection_id"]
    });
    assert_eq!(close["domain"], name.as_str());
    assert_eq!(close["bytes_sent"].as_u64(), Some(request_len as u64), "{close}");
    assert_eq!(
        close["bytes_received"].as_u64(),
        Some(response_len as u64),
        "{close}"
    );
    assert!(agent.metric("mcpwatch_dns_messages_total{kind=\"response\"}") >= 1.0);
    // getaddrinfo's netlink socket (SOCK_RAW, AF_NETLINK) is not a raw IP socket.
    assert_eq!(agent.count(|e| is(e, "network_socket", curl_pid)), 0);
    mcpwatch_e2e::eventually(WAIT, "DNS cache gauge", || {
        agent.metric("mcpwatch_dns_cache_entries{kind=\"host_addresses\"}") >= 1.0
    });
}

#[test]
fn garbage_dns_answers_are_counted_not_fatal() {
    let mut agent = Agent::start();
    let pair = NetnsPair::new("baddns");
    let series = "mcpwatch_dns_parse_errors_total{reason=\"malformed\"}";
    let before = agent.metric(series);
    let (tx, rx) = mpsc::channel();
    let server = pair.spawn(Side::Server, move || {
        let s = UdpSocket::bind((SERVER_V4, 53)).unwrap();
        tx.send(()).unwrap();
        let mut buf = [0u8; 512];
        for _ in 0..2 {
            let (_, from) = s.recv_from(&mut buf).unwrap();
            // Garbage that is not a DNS message: a header promising records that are not there.
            s.send_to(b"\x12\x34\x81\x80\x00\x05\x00\x09\xff", from).unwrap();
        }
    });
    rx.recv().unwrap();
    pair.run(Side::Client, || {
        let c = UdpSocket::bind("0.0.0.0:0").unwrap();
        c.connect((SERVER_V4, 53)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut buf = [0u8; 512];
        for _ in 0..2 {
            c.send(b"\x00\x01garbage query").unwrap();
            c.recv(&mut buf).unwrap();
        }
    });
    server.join().unwrap();
    mcpwatch_e2e::eventually(WAIT, "DNS parse errors counted", || {
        agent.metric(series) >= before + 4.0
    });
    // The agent is still up and still reporting.
    assert_eq!(agent.get("/healthz").unwrap().0, 200);
    agent.wait_event(WAIT, |e| {
        is(e, "network_connect", me()) && remote_is(e, SERVER_V4, 53)
    });
}

#[test]
fn raw_icmp_socket_and_ping_are_reported() {
    let mut agent = Agent::start();
    let pair = NetnsPair::new("icmp");
    let fd = pair.run(Side::Client, || {
        // SAFETY: plain socket calls on an fd this closure owns.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP);
            assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
            // ICMP echo request, id 0x4d57, seq 1; checksum computed below.
            let mut pkt = [8u8, 0, 0, 0, 0x4d, 0x57, 0, 1, b'm', b'c', b'p', b'w'];
            let sum: u32 = pkt
                .chunks(2)
                .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
                .sum();
            let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
            pkt[2..4].copy_from_slice(&sum.to_be_bytes());
            let dst = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from(SERVER_V4.parse::<std::net::Ipv4Addr>().unwrap()).to_be(),
                },
                sin_zero: [0; 8],
            };
            let n = libc::sendto(
                fd,
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&dst as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            );
            assert_eq!(n, pkt.len() as isize);
            libc::close(fd);
            fd
        }
    });
    let sock = agent.wait_event(WAIT, |e| is(e, "network_socket", me()) && e["fd"] == fd);
    assert_eq!(sock["protocol"], "icmp");
    assert_eq!(sock["socket_type"], "raw");
    assert_eq!(sock["result"], "ok");
    let send = agent.wait_event(WAIT, |e| {
        is(e, "network_send", me()) && e["protocol"] == "icmp" && e["remote"]["ip"] == SERVER_V4
    });
    assert_eq!(send["bytes_sent"], 12);
}
