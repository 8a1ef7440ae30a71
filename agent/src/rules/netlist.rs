//! Destination sets (CIDRs in prefix trees, domain globs) and egress policies built
//! from them, plus the built-in named lists.

use std::net::IpAddr;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use prefix_trie::PrefixSet;

/// Built-in named lists; a rule file may redefine any of them under `network_lists:`.
pub const BUILTIN_LISTS: &[(&str, &[&str])] = &[
    (
        "cloud_metadata",
        &[
            "169.254.169.254/32",
            "169.254.170.2/32",
            "169.254.169.123/32",
            "100.100.100.200/32",
            "fd00:ec2::254/128",
            "metadata.google.internal",
            "metadata.goog",
            "metadata.azure.com",
            "instance-data",
            "instance-data.ec2.internal",
        ],
    ),
    (
        "private_ranges",
        &[
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "100.64.0.0/10",
            "fc00::/7",
        ],
    ),
    ("loopback", &["127.0.0.0/8", "::1/128", "localhost"]),
    (
        "llm_api_providers",
        &[
            "api.openai.com",
            "*.openai.azure.com",
            "api.anthropic.com",
            "generativelanguage.googleapis.com",
            "*-aiplatform.googleapis.com",
            "api.mistral.ai",
            "api.cohere.com",
            "api.cohere.ai",
            "api.groq.com",
            "api.together.xyz",
            "api.deepseek.com",
            "api.x.ai",
            "api.perplexity.ai",
            "openrouter.ai",
            "api.fireworks.ai",
        ],
    ),
];

/// Is `s` meant as an address (CIDR or bare IP) rather than a domain?
fn parse_net(s: &str) -> Option<IpNet> {
    if let Ok(n) = s.parse::<IpNet>() {
        return Some(n.trunc());
    }
    s.parse::<IpAddr>().ok().map(IpNet::from)
}

pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    parse_net(s).ok_or_else(|| "expected an IPv4/IPv6 address or CIDR (10.0.0.0/8, fd00::/8)".to_string())
}

/// A domain pattern: labels of letters, digits, `-`, `_`, with `*` wildcards.
pub fn check_domain(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && !s.starts_with('.')
        && !s.ends_with('.')
        && !s.contains("..")
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '*'));
    if ok {
        Ok(())
    } else {
        Err("expected a domain name or pattern (api.example.com, *.example.com)".into())
    }
}

/// Addresses and domains; a lookup is a longest-prefix walk or one glob-set match.
#[derive(Clone, Default)]
pub struct NetSet {
    v4: PrefixSet<Ipv4Net>,
    v6: PrefixSet<Ipv6Net>,
    domains: Option<GlobSet>,
    pub entries: Vec<String>,
}

impl NetSet {
    /// Entries are CIDRs, IPs or domain patterns; errors name the bad entry.
    pub fn build<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, (usize, String)> {
        let mut set = NetSet::default();
        let mut globs = GlobSetBuilder::new();
        let mut any_glob = false;
        for (i, e) in entries.into_iter().enumerate() {
            set.entries.push(e.to_string());
            match parse_net(e) {
                Some(IpNet::V4(n)) => {
                    set.v4.insert(n);
                }
                Some(IpNet::V6(n)) => {
                    set.v6.insert(n);
                }
                None => {
                    if e.contains('/') || e.chars().all(|c| c.is_ascii_digit() || c == '.') {
                        return Err((i, "expected an IPv4/IPv6 address or CIDR".into()));
                    }
                    check_domain(e).map_err(|m| (i, m))?;
                    let g = GlobBuilder::new(&e.to_ascii_lowercase())
                        .literal_separator(false)
                        .build()
                        .map_err(|err| (i, err.kind().to_string()))?;
                    globs.add(g);
                    any_glob = true;
                }
            }
        }
        if any_glob {
            set.domains = Some(globs.build().map_err(|e| (0, e.to_string()))?);
        }
        Ok(set)
    }

    pub fn contains_ip(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(a) => self.v4.get_spm(&Ipv4Net::from(a)).is_some(),
            IpAddr::V6(a) => self.v6.get_spm(&Ipv6Net::from(a)).is_some(),
        }
    }

    pub fn contains_domain(&self, domain: &str) -> bool {
        let d = domain.trim_end_matches('.').to_ascii_lowercase();
        self.domains.as_ref().is_some_and(|g| g.is_match(&d))
    }

    pub fn extend(&mut self, other: &NetSet) {
        let merged = NetSet::build(
            self.entries
                .iter()
                .chain(other.entries.iter())
                .map(String::as_str),
        )
        .expect("entries were valid");
        *self = merged;
    }
}

/// Where a destination stands under a policy, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed(String),
    Denied(String),
    NotAllowed,
}

/// `egress:` compiled: deny wins over allow; an empty allow set allows nothing.
#[derive(Clone, Default)]
pub struct EgressPolicy {
    pub allow: NetSet,
    pub allow_ports: Vec<u16>,
    pub deny: NetSet,
    pub deny_ports: Vec<u16>,
}

impl EgressPolicy {
    pub fn judge(&self, ip: Option<IpAddr>, port: Option<u16>, domain: Option<&str>) -> Verdict {
        if let Some(p) = port.filter(|p| self.deny_ports.contains(p)) {
            return Verdict::Denied(format!("port {p} is denied"));
        }
        if let Some(ip) = ip.filter(|ip| self.deny.contains_ip(*ip)) {
            return Verdict::Denied(format!("{ip} is in the deny list"));
        }
        if let Some(d) = domain.filter(|d| self.deny.contains_domain(d)) {
            return Verdict::Denied(format!("{d} is in the deny list"));
        }
        let port_ok = self.allow_ports.is_empty() || port.is_some_and(|p| self.allow_ports.contains(&p));
        if !port_ok {
            return Verdict::NotAllowed;
        }
        if let Some(ip) = ip.filter(|ip| self.allow.contains_ip(*ip)) {
            return Verdict::Allowed(format!("{ip} is allowed"));
        }
        if let Some(d) = domain.filter(|d| self.allow.contains_domain(d)) {
            return Verdict::Allowed(format!("{d} is allowed"));
        }
        Verdict::NotAllowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_and_domains() {
        let s = NetSet::build(["10.0.0.0/8", "::1", "*.example.com", "api.openai.com"]).unwrap();
        assert!(s.contains_ip("10.1.2.3".parse().unwrap()));
        assert!(!s.contains_ip("11.1.2.3".parse().unwrap()));
        assert!(s.contains_ip("::1".parse().unwrap()));
        assert!(s.contains_ip("::ffff:10.0.0.1".parse().unwrap()));
        assert!(s.contains_domain("a.b.example.com"));
        assert!(s.contains_domain("API.OpenAI.com."));
        assert!(!s.contains_domain("example.com"));
        assert!(!s.contains_domain("api.openai.com.evil.net"));
    }

    #[test]
    fn bad_entries() {
        assert_eq!(NetSet::build(["10.0.0.0/33"]).err().unwrap().0, 0);
        assert!(NetSet::build(["ok.com", "bad domain"]).is_err());
        assert!(NetSet::build(["300.1.1.1"]).is_err());
    }

    #[test]
    fn policy_deny_wins_and_ports_restrict() {
        let p = EgressPolicy {
            allow: NetSet::build(["10.0.0.0/8", "*.corp"]).unwrap(),
            allow_ports: vec![443],
            deny: NetSet::build(["10.9.0.0/16"]).unwrap(),
            deny_ports: vec![25],
        };
        let ip = |s: &str| Some(s.parse().unwrap());
        assert!(matches!(
            p.judge(ip("10.1.1.1"), Some(443), None),
            Verdict::Allowed(_)
        ));
        assert_eq!(p.judge(ip("10.1.1.1"), Some(80), None), Verdict::NotAllowed);
        assert!(matches!(
            p.judge(ip("10.9.1.1"), Some(443), None),
            Verdict::Denied(_)
        ));
        assert!(matches!(
            p.judge(ip("1.1.1.1"), Some(443), Some("x.corp")),
            Verdict::Allowed(_)
        ));
        assert!(matches!(
            p.judge(ip("10.1.1.1"), Some(25), None),
            Verdict::Denied(_)
        ));
        assert_eq!(
            EgressPolicy::default().judge(ip("127.0.0.1"), Some(1), None),
            Verdict::NotAllowed
        );
    }
}
