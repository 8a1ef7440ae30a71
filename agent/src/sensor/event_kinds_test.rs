//! Exact drop accounting needs every kernel record kind to line up in three places:
//! the id the kernel writes into a record header (and uses as its drop counter
//! index), the kinds the agent reads drop counters for, and the metric series it
//! exports. A kind missing from any of them is lost silently (issue 13, defect 3:
//! cgroup-move drops were counted by the kernel and never exported), so this walks
//! every id the kernel can produce through all three.

use std::mem::{offset_of, size_of};

use mcpwatch_common::{
    file::{FileRecord, FILE_OP_OPEN},
    net::{
        tcp_event, AcceptRecord, BindRecord, ConnectRecord, DnsRecord, SocketRecord, TcpRecord, UdpFlowRecord,
    },
    payload::{PayloadHeader, CHANNEL_PIPE},
    process::{CgroupMoveRecord, ExecRecord, ExitRecord, ForkRecord},
    EventKind, MAX_EVENT_KINDS,
};

use super::{decode, loader::drops_by_kind};
use crate::metrics::Metrics;

/// A minimal valid record of `kind`, as the kernel would send it. The match has no
/// wildcard arm: a new kind does not compile until it has a sample here.
fn sample_record(kind: EventKind) -> Vec<u8> {
    let len = match kind {
        EventKind::Exec => size_of::<ExecRecord>(),
        EventKind::Fork => size_of::<ForkRecord>(),
        EventKind::Exit => size_of::<ExitRecord>(),
        EventKind::CgroupMove => size_of::<CgroupMoveRecord>(),
        EventKind::Payload => size_of::<PayloadHeader>(),
        EventKind::Socket => size_of::<SocketRecord>(),
        EventKind::Connect => size_of::<ConnectRecord>(),
        EventKind::Accept => size_of::<AcceptRecord>(),
        EventKind::Bind => size_of::<BindRecord>(),
        EventKind::Tcp => size_of::<TcpRecord>(),
        EventKind::UdpFlow => size_of::<UdpFlowRecord>(),
        EventKind::Dns => size_of::<DnsRecord>(),
        EventKind::File => size_of::<FileRecord>(),
    };
    let mut bytes = vec![0u8; len];
    bytes[..4].copy_from_slice(&(kind as u32).to_ne_bytes());
    // The fields the decoder validates get a valid value.
    match kind {
        EventKind::Payload => bytes[offset_of!(PayloadHeader, channel)] = CHANNEL_PIPE,
        EventKind::Tcp => {
            let at = offset_of!(TcpRecord, event);
            bytes[at..at + 4].copy_from_slice(&tcp_event::LISTEN.to_ne_bytes());
        }
        EventKind::File => {
            let at = offset_of!(FileRecord, op);
            bytes[at..at + 4].copy_from_slice(&FILE_OP_OPEN.to_ne_bytes());
        }
        _ => {}
    }
    bytes
}

/// The value of one exported series, or a failure when the series is absent.
fn series(text: &str, metric: &str, kind: &str) -> u64 {
    let key = format!("{metric}{{kind=\"{kind}\"}} ");
    let line = text
        .lines()
        .find(|l| l.starts_with(&key))
        .unwrap_or_else(|| panic!("series {key} is not exported:\n{text}"));
    line[key.len()..].trim().parse().expect("counter value")
}

#[test]
fn every_kernel_event_kind_round_trips_through_decode_drop_counters_and_metrics() {
    // Every id the kernel may write decodes to a kind, and that kind is listed.
    let kinds: Vec<EventKind> = (0..MAX_EVENT_KINDS).filter_map(EventKind::from_u32).collect();
    assert!(!kinds.is_empty());
    for kind in &kinds {
        assert!(
            EventKind::ALL.contains(kind),
            "{kind:?} ({}) is missing from EventKind::ALL: its drops are never read",
            *kind as u32
        );
    }
    assert_eq!(
        EventKind::ALL.len(),
        kinds.len(),
        "EventKind::ALL lists a kind twice"
    );

    let mut names: Vec<&str> = EventKind::ALL.iter().map(|k| k.name()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(
        names.len(),
        EventKind::ALL.len(),
        "two kinds share a metric label"
    );

    // Drop counters: one total per kind, read at the kind's own index.
    let drops = drops_by_kind(|index| 1000 + u64::from(index));
    let metrics = Metrics::new();
    metrics.set_kernel_drops(&drops);
    for kind in &kinds {
        assert_eq!(
            drops
                .iter()
                .filter(|(k, _)| k == kind)
                .map(|(_, n)| *n)
                .collect::<Vec<_>>(),
            vec![1000 + u64::from(*kind as u32)],
            "drop counter of {kind:?}"
        );
        // A record with this id decodes to an event of the same kind, and counts.
        let event = decode(&sample_record(*kind)).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert_eq!(event.kind(), *kind);
        metrics.event_decoded(event.kind());
    }

    // Both series exist for every kind, with the values set above.
    let text = metrics.encode();
    for kind in &kinds {
        assert_eq!(
            series(&text, "mcpwatch_kernel_drops_total", kind.name()),
            1000 + u64::from(*kind as u32),
            "{kind:?}"
        );
        assert_eq!(series(&text, "mcpwatch_events_total", kind.name()), 1, "{kind:?}");
    }
}
