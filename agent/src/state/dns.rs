//! DNS messages: parsing (with `simple-dns`) and the address → name cache that tells
//! each connection which domain its process asked for.
//!
//! The cache is two-level and bounded: per process (what *this* process resolved, the
//! strongest attribution) and host-wide (for processes that resolve through a helper
//! such as systemd-resolved or nscd, whose own DNS traffic is not theirs). Later
//! answers replace earlier ones for the same address.

use std::{net::IpAddr, num::NonZeroUsize, sync::Arc};

use lru::LruCache;
use serde::Serialize;
use simple_dns::{rdata::RData, Packet, PacketFlag, QTYPE};

use super::process_table::ProcKey;

/// One parsed DNS message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedDns {
    pub id: u16,
    pub response: bool,
    pub rcode: String,
    /// First question (real clients ask one at a time).
    pub question: Option<String>,
    pub qtype: Option<String>,
    pub answers: Vec<DnsAnswer>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DnsAnswer {
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: String,
    pub ttl: u32,
    /// Address, or target name for CNAME; other types are summarized by type only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

impl ParsedDns {
    /// Every address in the answer section.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.answers
            .iter()
            .filter(|a| a.rtype == "A" || a.rtype == "AAAA")
            .filter_map(|a| a.data.as_deref()?.parse().ok())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DnsParseError {
    #[error("empty DNS payload")]
    Empty,
    #[error("malformed DNS message: {0}")]
    Malformed(String),
}

impl DnsParseError {
    /// Label for the parse-error counter.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Malformed(_) => "malformed",
        }
    }
}

/// Every [`DnsParseError::reason`], for pre-creating the counters.
pub const DNS_PARSE_ERROR_REASONS: [&str; 2] = ["empty", "malformed"];

fn qtype_name(q: QTYPE) -> String {
    match q {
        QTYPE::TYPE(t) => format!("{t:?}"),
        other => format!("{other:?}"),
    }
}

/// Parses a DNS message. Never panics on garbage (fuzzed in the tests below).
pub fn parse(payload: &[u8]) -> Result<ParsedDns, DnsParseError> {
    if payload.is_empty() {
        return Err(DnsParseError::Empty);
    }
    let packet = Packet::parse(payload).map_err(|e| DnsParseError::Malformed(e.to_string()))?;
    let question = packet.questions.first();
    let answers = packet
        .answers
        .iter()
        .map(|rr| {
            let data = match &rr.rdata {
                RData::A(a) => Some(std::net::Ipv4Addr::from(a.address).to_string()),
                RData::AAAA(a) => Some(std::net::Ipv6Addr::from(a.address).to_string()),
                RData::CNAME(c) => Some(c.0.to_string()),
                _ => None,
            };
            DnsAnswer {
                name: rr.name.to_string(),
                rtype: format!("{:?}", rr.rdata.type_code()),
                ttl: rr.ttl,
                data,
            }
        })
        .collect();
    Ok(ParsedDns {
        id: packet.id(),
        response: packet.has_flags(PacketFlag::RESPONSE),
        rcode: format!("{:?}", packet.rcode()),
        question: question.map(|q| q.qname.to_string()),
        qtype: question.map(|q| qtype_name(q.qtype)),
        answers,
    })
}

/// Where a connection's domain came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainSource {
    /// The connecting process itself resolved it.
    Process,
    /// Some process on the host resolved it (e.g. a resolver daemon).
    Host,
}

#[derive(Clone, Copy, Debug)]
pub struct DnsCacheLimits {
    pub processes: usize,
    pub per_process: usize,
    pub host: usize,
}

impl Default for DnsCacheLimits {
    fn default() -> Self {
        Self {
            processes: 4096,
            per_process: 256,
            host: 16_384,
        }
    }
}

pub struct DnsCache {
    per_process: LruCache<ProcKey, LruCache<IpAddr, Arc<str>>>,
    host: LruCache<IpAddr, Arc<str>>,
    per_process_cap: NonZeroUsize,
}

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n.max(1)).expect("non-zero")
}

impl DnsCache {
    pub fn new(limits: DnsCacheLimits) -> Self {
        Self {
            per_process: LruCache::new(nz(limits.processes)),
            host: LruCache::new(nz(limits.host)),
            per_process_cap: nz(limits.per_process),
        }
    }

    /// Remembers that `proc` (if known) resolved `name` to each address of `answer`.
    /// The name is the one asked for, not the end of a CNAME chain: it is what the
    /// process meant to reach.
    pub fn learn(&mut self, proc: Option<ProcKey>, answer: &ParsedDns) {
        let Some(name) = answer.question.as_deref() else {
            return;
        };
        let name: Arc<str> = Arc::from(name.trim_end_matches('.'));
        let cap = self.per_process_cap;
        for ip in answer.addresses() {
            let ip = ip.to_canonical();
            self.host.put(ip, name.clone());
            if let Some(k) = proc {
                self.per_process
                    .get_or_insert_mut(k, || LruCache::new(cap))
                    .put(ip, name.clone());
            }
        }
    }

    pub fn lookup(&mut self, proc: Option<ProcKey>, ip: IpAddr) -> Option<(Arc<str>, DomainSource)> {
        let ip = ip.to_canonical();
        if let Some(k) = proc {
            if let Some(name) = self.per_process.get_mut(&k).and_then(|c| c.get(&ip)) {
                return Some((name.clone(), DomainSource::Process));
            }
        }
        self.host.get(&ip).map(|n| (n.clone(), DomainSource::Host))
    }

    /// (processes with a cache, addresses host-wide)
    pub fn sizes(&self) -> (usize, usize) {
        (self.per_process.len(), self.host.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::{
        rdata::{A, AAAA, CNAME},
        Name, Question, ResourceRecord, CLASS, QCLASS, TYPE,
    };

    fn answer_packet() -> Vec<u8> {
        let mut p = Packet::new_reply(0x1234);
        p.questions.push(Question::new(
            Name::new_unchecked("api.example.test"),
            QTYPE::TYPE(TYPE::A),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        p.answers.push(ResourceRecord::new(
            Name::new_unchecked("api.example.test"),
            CLASS::IN,
            60,
            RData::CNAME(CNAME(Name::new_unchecked("edge.example.test"))),
        ));
        p.answers.push(ResourceRecord::new(
            Name::new_unchecked("edge.example.test"),
            CLASS::IN,
            60,
            RData::A(A {
                address: u32::from(std::net::Ipv4Addr::new(198, 51, 100, 7)),
            }),
        ));
        p.answers.push(ResourceRecord::new(
            Name::new_unchecked("edge.example.test"),
            CLASS::IN,
            60,
            RData::AAAA(AAAA {
                address: u128::from("2001:db8::7".parse::<std::net::Ipv6Addr>().unwrap()),
            }),
        ));
        p.build_bytes_vec().unwrap()
    }

    #[test]
    fn parses_answers_and_cname_chain() {
        let d = parse(&answer_packet()).unwrap();
        assert!(d.response);
        assert_eq!(d.id, 0x1234);
        assert_eq!(d.question.as_deref(), Some("api.example.test"));
        assert_eq!(d.qtype.as_deref(), Some("A"));
        assert_eq!(d.rcode, "NoError");
        assert_eq!(d.answers[0].rtype, "CNAME");
        assert_eq!(d.answers[0].data.as_deref(), Some("edge.example.test"));
        let addrs: Vec<IpAddr> = d.addresses().collect();
        assert_eq!(
            addrs,
            vec![
                "198.51.100.7".parse::<IpAddr>().unwrap(),
                "2001:db8::7".parse().unwrap()
            ]
        );
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        assert_eq!(parse(&[]), Err(DnsParseError::Empty));
        assert!(parse(b"\x01\x02\x03").is_err());
        let good = answer_packet();
        // Every truncation and a deterministic pseudo-random corruption of each byte.
        for len in 0..good.len() {
            let _ = parse(&good[..len]);
        }
        let mut x: u32 = 0x9e37_79b9;
        for i in 0..good.len() * 8 {
            let mut bad = good.clone();
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            bad[i % good.len()] = x as u8;
            let _ = parse(&bad);
        }
        for n in 0..300 {
            let junk: Vec<u8> = (0..n).map(|i| (i * 131 + 7) as u8).collect();
            let _ = parse(&junk);
        }
    }

    #[test]
    fn cache_prefers_the_process_then_the_host_and_is_bounded() {
        let mut c = DnsCache::new(DnsCacheLimits {
            processes: 2,
            per_process: 1,
            host: 2,
        });
        let p1 = ProcKey { pid: 1, start_ns: 1 };
        let p2 = ProcKey { pid: 2, start_ns: 2 };
        let d = parse(&answer_packet()).unwrap();
        c.learn(Some(p1), &d);
        let v4: IpAddr = "198.51.100.7".parse().unwrap();
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        // per_process holds 1 address: the last one learned (v6).
        assert_eq!(
            c.lookup(Some(p1), v6),
            Some((Arc::from("api.example.test"), DomainSource::Process))
        );
        assert_eq!(
            c.lookup(Some(p1), v4),
            Some((Arc::from("api.example.test"), DomainSource::Host))
        );
        assert_eq!(c.lookup(Some(p2), v4).map(|x| x.1), Some(DomainSource::Host));
        // A v4-mapped address finds the v4 entry.
        assert!(c.lookup(None, "::ffff:198.51.100.7".parse().unwrap()).is_some());
        assert_eq!(c.sizes(), (1, 2));
        c.learn(Some(p2), &d);
        c.learn(Some(ProcKey { pid: 3, start_ns: 3 }), &d);
        assert_eq!(c.sizes().0, 2);
    }
}
