//! What kind of place an address is: the first thing an analyst asks of a connection.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressClass {
    Loopback,
    LinkLocal,
    /// RFC 1918, carrier-grade NAT (100.64/10) and IPv6 unique-local (fc00::/7).
    Private,
    /// Instance metadata services: credentials live there (169.254.169.254 and kin).
    CloudMetadata,
    Multicast,
    /// 0.0.0.0 / :: (e.g. a listener on every interface).
    Unspecified,
    Public,
}

/// Cloud instance-metadata endpoints: AWS/GCP/Azure/OpenStack/Oracle (169.254.169.254),
/// AWS ECS task metadata (169.254.170.2), Alibaba (100.100.100.200), AWS IPv6 IMDS.
const METADATA_V4: [Ipv4Addr; 3] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(100, 100, 100, 200),
];
const METADATA_V6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)];

pub fn classify(ip: IpAddr) -> AddressClass {
    // A v4-mapped v6 address (dual-stack socket) is the v4 address.
    match ip.to_canonical() {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(a: Ipv4Addr) -> AddressClass {
    let o = a.octets();
    if METADATA_V4.contains(&a) {
        AddressClass::CloudMetadata
    } else if a.is_loopback() {
        AddressClass::Loopback
    } else if a.is_unspecified() {
        AddressClass::Unspecified
    } else if a.is_link_local() {
        AddressClass::LinkLocal
    } else if a.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64) {
        AddressClass::Private
    } else if a.is_multicast() || a.is_broadcast() {
        AddressClass::Multicast
    } else {
        AddressClass::Public
    }
}

fn classify_v6(a: Ipv6Addr) -> AddressClass {
    let first = a.segments()[0];
    if METADATA_V6.contains(&a) {
        AddressClass::CloudMetadata
    } else if a.is_loopback() {
        AddressClass::Loopback
    } else if a.is_unspecified() {
        AddressClass::Unspecified
    } else if (first & 0xffc0) == 0xfe80 {
        AddressClass::LinkLocal
    } else if (first & 0xfe00) == 0xfc00 {
        AddressClass::Private
    } else if a.is_multicast() {
        AddressClass::Multicast
    } else {
        AddressClass::Public
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> AddressClass {
        classify(s.parse().unwrap())
    }

    #[test]
    fn classes() {
        assert_eq!(c("127.0.0.53"), AddressClass::Loopback);
        assert_eq!(c("::1"), AddressClass::Loopback);
        assert_eq!(c("::ffff:127.0.0.1"), AddressClass::Loopback);
        assert_eq!(c("169.254.169.254"), AddressClass::CloudMetadata);
        assert_eq!(c("::ffff:169.254.169.254"), AddressClass::CloudMetadata);
        assert_eq!(c("fd00:ec2::254"), AddressClass::CloudMetadata);
        assert_eq!(c("169.254.1.1"), AddressClass::LinkLocal);
        assert_eq!(c("fe80::1"), AddressClass::LinkLocal);
        assert_eq!(c("10.1.2.3"), AddressClass::Private);
        assert_eq!(c("172.31.0.1"), AddressClass::Private);
        assert_eq!(c("172.32.0.1"), AddressClass::Public);
        assert_eq!(c("192.168.0.1"), AddressClass::Private);
        assert_eq!(c("100.64.0.1"), AddressClass::Private);
        assert_eq!(c("fd77::2"), AddressClass::Private);
        assert_eq!(c("0.0.0.0"), AddressClass::Unspecified);
        assert_eq!(c("::"), AddressClass::Unspecified);
        assert_eq!(c("224.0.0.251"), AddressClass::Multicast);
        assert_eq!(c("8.8.8.8"), AddressClass::Public);
        assert_eq!(c("2001:4860::8888"), AddressClass::Public);
    }
}
