//! What `/proc` says about channels: which files a process holds (and whether for
//! reading or writing), and the addresses of TCP sockets by inode. Used once per
//! detection (finding the host, the listen address), never per event.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// One open file of a process: its link target (`pipe:[123]`, `socket:[456]`, a path)
/// and its access mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenFile {
    pub fd: u32,
    pub target: String,
    pub writable: bool,
    pub readable: bool,
}

pub fn open_files(pid: u32) -> Vec<OpenFile> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let fd: u32 = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?.to_string_lossy().into_owned();
            let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
            let flags = info
                .lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
                .unwrap_or(0);
            let acc = flags & 0o3;
            Some(OpenFile {
                fd,
                target,
                readable: acc == 0 || acc == 2,
                writable: acc == 1 || acc == 2,
            })
        })
        .collect()
}

pub fn pipe_target(inode: u64) -> String {
    format!("pipe:[{inode}]")
}

pub fn socket_target(inode: u64) -> String {
    format!("socket:[{inode}]")
}

/// Which process holds `target` (e.g. a socket inode), scanning every process.
pub fn holder_of(target: &str) -> Option<u32> {
    let dir = std::fs::read_dir("/proc").ok()?;
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for f in fds.flatten() {
            if std::fs::read_link(f.path()).is_ok_and(|t| t.as_os_str() == target) {
                return Some(pid);
            }
        }
    }
    None
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSocket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub inode: u64,
    /// Kernel TCP state (0x0A = LISTEN).
    pub state: u8,
}

fn parse_addr(hex: &str) -> Option<SocketAddr> {
    let (ip, port) = hex.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(u32::from_str_radix(ip, 16).ok()?.swap_bytes())),
        32 => {
            // Four host-order 32-bit words.
            let mut b = [0u8; 16];
            for i in 0..4 {
                let w = u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).ok()?;
                b[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
            }
            let v6 = Ipv6Addr::from(b);
            v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Parses `/proc/net/tcp`-format text.
pub fn parse_tcp_table(text: &str) -> Vec<TcpSocket> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(TcpSocket {
                local: parse_addr(f.get(1)?)?,
                remote: parse_addr(f.get(2)?)?,
                state: u8::from_str_radix(f.get(3)?, 16).ok()?,
                inode: f.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// TCP sockets of the host network namespace (as seen by the agent).
pub fn tcp_sockets() -> Vec<TcpSocket> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|t| parse_tcp_table(&t))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v4_and_v6_rows() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:0BB9 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 12345 1 0\n";
        let s = &parse_tcp_table(t)[0];
        assert_eq!(s.local, "127.0.0.1:3001".parse().unwrap());
        assert_eq!(s.remote, "127.0.0.1:54321".parse().unwrap());
        assert_eq!((s.state, s.inode), (1, 12345));
        let t6 = "hdr\n   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 0:0 0:0 0 0 0 777 1\n";
        let s = &parse_tcp_table(t6)[0];
        assert_eq!(s.local, "[::1]:8080".parse().unwrap());
        assert_eq!(s.state, 0x0A);
    }

    #[test]
    fn finds_its_own_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mine = tcp_sockets()
            .into_iter()
            .find(|s| s.local.port() == port && s.state == 0x0A)
            .unwrap();
        let target = socket_target(mine.inode);
        assert!(open_files(std::process::id()).iter().any(|f| f.target == target));
        assert_eq!(holder_of(&target), Some(std::process::id()));
    }
}
