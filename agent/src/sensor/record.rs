//! The leaf every sensor's decoder builds on: reading a fixed-layout record out of
//! ring-buffer bytes, kernel strings and socket addresses, and the decode errors the
//! reader counts. Imports nothing from the other decoders.

use std::{
    mem::size_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use mcpwatch_common::{
    net::{AF_INET, AF_INET6},
    EventKind,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than a header")]
    NoHeader(usize),
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    #[error("{kind} record of {len} bytes, expected {expected}")]
    Short {
        kind: &'static str,
        len: usize,
        expected: usize,
    },
    #[error("bad {0} value {1}")]
    BadField(&'static str, u32),
}

/// Every [`DecodeError::reason`], for pre-creating the counters.
pub const DECODE_ERROR_REASONS: [&str; 4] = ["no_header", "unknown_kind", "short_record", "bad_field"];

impl DecodeError {
    /// Low-cardinality label for the decode-error counter.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoHeader(_) => "no_header",
            Self::UnknownKind(_) => "unknown_kind",
            Self::Short { .. } => "short_record",
            Self::BadField(..) => "bad_field",
        }
    }
}

/// A record the kernel sends without its unused tail (at least `min` bytes): the
/// missing bytes read as zero.
pub fn read_prefix<T: Copy + aya::Pod>(bytes: &[u8], kind: EventKind, min: usize) -> Result<T, DecodeError> {
    if bytes.len() < min {
        return Err(DecodeError::Short {
            kind: kind.name(),
            len: bytes.len(),
            expected: min,
        });
    }
    let mut v = std::mem::MaybeUninit::<T>::zeroed();
    let n = bytes.len().min(size_of::<T>());
    // SAFETY: `T` is Pod (all-zero and any bytes are valid) and at most its size is copied.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), v.as_mut_ptr().cast::<u8>(), n);
        Ok(v.assume_init())
    }
}

/// A whole fixed-size record.
pub fn read_record<T: Copy>(bytes: &[u8], kind: EventKind) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Short {
            kind: kind.name(),
            len: bytes.len(),
            expected: size_of::<T>(),
        });
    }
    // SAFETY: length checked; records are plain integers and byte arrays (any bit
    // pattern is valid) and ring-buffer data is only 8-byte aligned, hence unaligned.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Text up to the first NUL, lossily decoded (kernel strings are bytes, not UTF-8).
pub fn c_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The one decoder of kernel socket addresses (network records, payload tuples,
/// `/proc/net/tcp` rows): an address family, 16 address bytes in network order (an
/// IPv4 address in the first four) and a host-order port. `None` for a family other
/// than IPv4/IPv6. A dual-stack socket's IPv4 peer (`::ffff:a.b.c.d`) comes out as
/// the IPv4 address, so one peer has one spelling whichever socket saw it.
pub fn socket_addr(family: u16, addr: &[u8; 16], port: u16) -> Option<SocketAddr> {
    let ip = match family {
        AF_INET => IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])),
        AF_INET6 => {
            let v6 = Ipv6Addr::from(*addr);
            v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_addresses_of_both_families_and_mapped_v4() {
        let mut v4 = [0u8; 16];
        v4[..4].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(
            socket_addr(AF_INET, &v4, 80),
            Some("127.0.0.1:80".parse().unwrap())
        );
        let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert_eq!(
            socket_addr(AF_INET6, &v6.octets(), 443),
            Some("[2001:db8::1]:443".parse().unwrap())
        );
        let mapped: Ipv6Addr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(
            socket_addr(AF_INET6, &mapped.octets(), 53),
            Some("10.0.0.1:53".parse().unwrap())
        );
        assert_eq!(socket_addr(1, &v4, 0), None);
    }

    #[test]
    fn short_records_are_errors() {
        assert!(matches!(
            read_record::<u64>(&[0; 7], EventKind::Exit),
            Err(DecodeError::Short { expected: 8, .. })
        ));
        assert_eq!(read_prefix::<u64>(&[1, 0], EventKind::Exit, 2), Ok(1));
        assert_eq!(c_str(b"ab\0cd"), "ab");
    }
}
