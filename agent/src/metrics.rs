//! Prometheus metrics (OpenMetrics text through the official `prometheus-client`).
//! Labels are low-cardinality only: event kinds, reasons, stages, sinks.

use std::sync::atomic::{AtomicU64, Ordering};

use mcpwatch_common::EventKind;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
        info::Info,
    },
    registry::{Registry, Unit},
};

use crate::state::{process_table::TableStats, sockets::SocketStats};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

/// MCP servers by inventory state and whether the rule file sanctions them.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct McpServerLabels {
    pub state: &'static str,
    pub sanctioned: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    pub sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    pub direction: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    pub rule: String,
    pub severity: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabel {
    pub rule: String,
}

/// Rule engine metrics.
#[derive(Default)]
struct RuleMetrics {
    reloads: Family<ResultLabel, Counter>,
}

type LatencyFamily = Family<SinkLabel, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
}

pub struct Metrics {
    registry: Registry,
    events: Family<KindLabel, Counter>,
    /// `events` per kind, looked up once: the per-event path skips the family's lock and hash.
    events_by_kind: Vec<Option<Counter>>,
    kernel_drops: Family<KindLabel, Counter>,
    kernel_drops_seen: [AtomicU64; mcpwatch_common::MAX_EVENT_KINDS as usize],
    decode_errors: Family<ReasonLabel, Counter>,
    lag: Histogram,
    table_entries: Family<StateLabel, Gauge>,
    table_bytes: Gauge,
    table_refused: Counter,
    sink_events: Family<SinkLabel, Counter>,
    sink_errors: Family<SinkLabel, Counter>,
    payload_discards: Family<ReasonLabel, Counter>,
    http_clients: Family<SourceLabel, Counter>,
    mcp_requests: Family<RequestLabels, Counter>,
    mcp_request_latency: Histogram,
    mcp_requests_pending: Gauge,
    mcp_servers: Family<McpServerLabels, Gauge>,
    mcp_detections: Counter,
    mcp_suspects_unannounced: Counter,
    resident_bytes: Gauge,
    cpu_seconds: Gauge<f64, AtomicU64>,
    // Alerts and their delivery (output/).
    alerts: Family<AlertLabels, Counter>,
    alerts_suppressed: Family<RuleLabel, Counter>,
    sink_retries: Family<SinkLabel, Counter>,
    sink_rejected: Family<SinkLabel, Counter>,
    records_trimmed: Family<SinkLabel, Counter>,
    records_over_budget: Family<SinkLabel, Counter>,
    sink_backlog: Family<SinkLabel, Gauge>,
    sink_oldest_age: Family<SinkLabel, Gauge<f64, AtomicU64>>,
    sink_latency: LatencyFamily,
    spool_bytes: Gauge,
    spool_dropped: Family<ReasonLabel, Counter>,
    recording_events: Family<ResultLabel, Counter>,
    net: NetMetrics,
    rules: RuleMetrics,
}

/// Network sensor metrics.
#[derive(Default)]
struct NetMetrics {
    connections: Family<ConnectionLabels, Counter>,
    listeners: Gauge,
    dns_messages: Family<KindLabel, Counter>,
    dns_parse_errors: Family<ReasonLabel, Counter>,
    socket_table: Family<KindLabel, Gauge>,
    dns_cache: Family<KindLabel, Gauge>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Self {
            registry: Registry::default(),
            events: Family::default(),
            events_by_kind: Vec::new(),
            kernel_drops: Family::default(),
            kernel_drops_seen: Default::default(),
            decode_errors: Family::default(),
            // 100 µs … ~26 s
            lag: Histogram::new(exponential_buckets(0.0001, 2.0, 18)),
            table_entries: Family::default(),
            table_bytes: Gauge::default(),
            table_refused: Counter::default(),
            sink_events: Family::default(),
            sink_errors: Family::default(),
            payload_discards: Family::default(),
            http_clients: Family::default(),
            mcp_requests: Family::default(),
            // 100 µs … ~13 min: tool calls run for minutes.
            mcp_request_latency: Histogram::new(exponential_buckets(0.0001, 2.0, 24)),
            mcp_requests_pending: Gauge::default(),
            mcp_servers: Family::default(),
            mcp_detections: Counter::default(),
            mcp_suspects_unannounced: Counter::default(),
            resident_bytes: Gauge::default(),
            cpu_seconds: Gauge::default(),
            net: NetMetrics::default(),
            rules: RuleMetrics::default(),
            alerts: Family::default(),
            alerts_suppressed: Family::default(),
            sink_retries: Family::default(),
            sink_rejected: Family::default(),
            records_trimmed: Family::default(),
            records_over_budget: Family::default(),
            sink_backlog: Family::default(),
            sink_oldest_age: Family::default(),
            // 1 ms … ~65 s
            sink_latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 17))
            }),
            spool_bytes: Gauge::default(),
            spool_dropped: Family::default(),
            recording_events: Family::default(),
        };
        // The process_* family by convention carries no application prefix.
        m.registry.register_with_unit(
            "process_resident_memory",
            "Resident memory of the agent",
            Unit::Bytes,
            m.resident_bytes.clone(),
        );
        m.registry.register_with_unit(
            "process_cpu",
            "CPU time (user + system) used by the agent",
            Unit::Seconds,
            m.cpu_seconds.clone(),
        );
        let app = m.registry.sub_registry_with_prefix("mcpwatch");
        app.register(
            "build",
            "Agent build information",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        app.register("events", "Kernel events decoded, by kind", m.events.clone());
        // Indexed by the kind's numeric id (ids are small; unknown ids stay `None`).
        m.events_by_kind = (0..32)
            .map(|v| {
                EventKind::from_u32(v).map(|k| m.events.get_or_create(&KindLabel { kind: k.name() }).clone())
            })
            .collect();
        app.register(
            "kernel_drops",
            "Kernel events lost because the ring buffer was full, by kind",
            m.kernel_drops.clone(),
        );
        app.register(
            "decode_errors",
            "Ring buffer records that could not be decoded, by reason",
            m.decode_errors.clone(),
        );
        app.register_with_unit(
            "ringbuf_consumer_lag",
            "Age of kernel events when the agent decoded them (ring buffer consumer lag)",
            Unit::Seconds,
            m.lag.clone(),
        );
        app.register(
            "process_table_entries",
            "Processes in the table, live or exited (kept for a grace period)",
            m.table_entries.clone(),
        );
        app.register_with_unit(
            "process_table_memory",
            "Approximate memory held by the process table",
            Unit::Bytes,
            m.table_bytes.clone(),
        );
        app.register(
            "process_table_refused",
            "Processes not tracked because the table was full",
            m.table_refused.clone(),
        );
        app.register("sink_events", "Events written, by sink", m.sink_events.clone());
        app.register(
            "sink_errors",
            "Events a sink failed to write, by sink",
            m.sink_errors.clone(),
        );
        app.register(
            "payload_discards",
            "Captured payload bytes that could not be used for MCP recognition, by reason",
            m.payload_discards.clone(),
        );
        app.register(
            "mcp_requests",
            "Audited MCP requests on confirmed servers' sessions, by method (MCP's own, else other) and outcome",
            m.mcp_requests.clone(),
        );
        app.register(
            "mcp_request_latency_seconds",
            "From an audited request passing the server to its answer",
            m.mcp_request_latency.clone(),
        );
        app.register(
            "mcp_requests_pending",
            "Audited requests waiting for their answer",
            m.mcp_requests_pending.clone(),
        );
        app.register(
            "mcp_http_client_lookups",
            "How the client of each confirmed HTTP MCP session was found: capture (both ends captured), connections (the state stage's socket table), procfs (a /proc scan: opened before the agent), none",
            m.http_clients.clone(),
        );
        app.register(
            "mcp_servers",
            "MCP servers in the inventory, by state and sanctioned (true) or shadow (false)",
            m.mcp_servers.clone(),
        );
        app.register(
            "mcp_handshakes",
            "MCP handshakes (request/response pairs) recognised on the wire",
            m.mcp_detections.clone(),
        );
        app.register(
            "mcp_suspects_unannounced",
            "Suspected MCP servers that ended (exited, dismissed) before they spoke MCP or lived past the grace period: kept off the SIEM",
            m.mcp_suspects_unannounced.clone(),
        );
        app.register(
            "connections",
            "Connections by direction (outbound connect, inbound accept) and result",
            m.net.connections.clone(),
        );
        app.register(
            "listeners",
            "Listening TCP sockets known to the agent",
            m.net.listeners.clone(),
        );
        app.register(
            "dns_messages",
            "DNS messages parsed, by kind (query, response)",
            m.net.dns_messages.clone(),
        );
        app.register(
            "dns_parse_errors",
            "DNS messages that could not be parsed, by reason",
            m.net.dns_parse_errors.clone(),
        );
        app.register(
            "socket_table_entries",
            "Entries in the socket table, by kind",
            m.net.socket_table.clone(),
        );
        app.register(
            "dns_cache_entries",
            "DNS cache size: processes with a cache, and addresses host-wide",
            m.net.dns_cache.clone(),
        );
        for direction in ["outbound", "inbound"] {
            for result in ["ok", "refused", "timeout", "unreachable", "failed"] {
                let _ = m
                    .net
                    .connections
                    .get_or_create(&ConnectionLabels { direction, result });
            }
        }
        for kind in ["query", "response"] {
            let _ = m.net.dns_messages.get_or_create(&KindLabel { kind });
        }
        for reason in crate::state::dns::DNS_PARSE_ERROR_REASONS {
            let _ = m.net.dns_parse_errors.get_or_create(&ReasonLabel { reason });
        }
        app.register(
            "rule_reloads",
            "Rule file reloads (SIGHUP or file change), by result (ok, error)",
            m.rules.reloads.clone(),
        );
        for result in ["ok", "error"] {
            let _ = m.rules.reloads.get_or_create(&ResultLabel { result });
        }
        app.register("alerts", "Alerts raised, by rule and severity", m.alerts.clone());
        app.register(
            "alerts_suppressed",
            "Repeats of an alert folded into it by the per rule+identity throttle, by rule",
            m.alerts_suppressed.clone(),
        );
        app.register(
            "sink_retries",
            "Delivery attempts that failed and will be retried, by sink",
            m.sink_retries.clone(),
        );
        app.register(
            "sink_rejected",
            "Records a receiver refused for good (e.g. HTTP 400 on the content), by sink",
            m.sink_rejected.clone(),
        );
        app.register(
            "records_trimmed",
            "Records delivered trimmed into the sink's record budget (record_max_bytes), by sink",
            m.records_trimmed.clone(),
        );
        app.register(
            "records_over_budget",
            "Records delivered over the sink's record budget even after trimming (sent whole, never cut), by sink",
            m.records_over_budget.clone(),
        );
        app.register(
            "sink_backlog_records",
            "Spooled records not yet acknowledged by the sink",
            m.sink_backlog.clone(),
        );
        app.register_with_unit(
            "sink_oldest_unsent_age",
            "Age of the oldest record the sink has not had acknowledged (0 when caught up)",
            Unit::Seconds,
            m.sink_oldest_age.clone(),
        );
        app.register_with_unit(
            "sink_delivery_latency",
            "Time from acceptance (spooled) to acknowledgement by the receiver",
            Unit::Seconds,
            m.sink_latency.clone(),
        );
        app.register_with_unit(
            "spool",
            "Size of the on-disk delivery spool",
            Unit::Bytes,
            m.spool_bytes.clone(),
        );
        app.register(
            "spool_dropped",
            "Records dropped before delivery, by reason (spool full, write error)",
            m.spool_dropped.clone(),
        );
        for reason in ["spool_full", "write_error", "not_serializable"] {
            let _ = m.spool_dropped.get_or_create(&ReasonLabel { reason });
        }
        app.register(
            "recording_events",
            "Sensor events for the recording (--record): written, dropped (queue or size bound full, or writing stopped), failed",
            m.recording_events.clone(),
        );
        // Every series exists from the start (at 0), so rate() and absence alerts work.
        for kind in EventKind::ALL {
            let _ = m.events.get_or_create(&KindLabel { kind: kind.name() });
            let _ = m.kernel_drops.get_or_create(&KindLabel { kind: kind.name() });
        }
        for reason in crate::sensor::DECODE_ERROR_REASONS {
            let _ = m.decode_errors.get_or_create(&ReasonLabel { reason });
        }
        m
    }

    pub fn event_decoded(&self, kind: EventKind) {
        match self.events_by_kind.get(kind as usize) {
            Some(Some(c)) => {
                c.inc();
            }
            _ => {
                self.events.get_or_create(&KindLabel { kind: kind.name() }).inc();
            }
        }
    }

    pub fn decode_error(&self, reason: &'static str) {
        self.decode_errors.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn observe_lag(&self, ns: u64) {
        self.lag.observe(ns as f64 / 1e9);
    }

    /// Sets the kernel drop counters from the kernel's running totals.
    pub fn set_kernel_drops(&self, totals: &[(EventKind, u64)]) {
        for (kind, total) in totals {
            let seen = &self.kernel_drops_seen[*kind as usize];
            let prev = seen.swap(*total, Ordering::Relaxed);
            if *total > prev {
                self.kernel_drops
                    .get_or_create(&KindLabel { kind: kind.name() })
                    .inc_by(total - prev);
            }
        }
    }

    pub fn set_table_stats(&self, s: &TableStats) {
        self.table_entries
            .get_or_create(&StateLabel { state: "live" })
            .set(s.live as i64);
        self.table_entries
            .get_or_create(&StateLabel { state: "exited" })
            .set(s.exited as i64);
        self.table_bytes.set(s.approx_bytes as i64);
    }

    pub fn payload_discarded(&self, reason: &'static str) {
        self.payload_discards.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn mcp_request(&self, method: &'static str, outcome: &'static str, latency_us: Option<u64>) {
        self.mcp_requests
            .get_or_create(&RequestLabels { method, outcome })
            .inc();
        if let Some(us) = latency_us {
            self.mcp_request_latency.observe(us as f64 / 1e6);
        }
    }

    pub fn set_mcp_requests_pending(&self, n: usize) {
        self.mcp_requests_pending.set(n as i64);
    }

    pub fn http_client_lookup(&self, source: &'static str) {
        self.http_clients.get_or_create(&SourceLabel { source }).inc();
    }

    pub fn mcp_detection(&self) {
        self.mcp_detections.inc();
    }

    pub fn mcp_suspect_unannounced(&self) {
        self.mcp_suspects_unannounced.inc();
    }

    pub fn set_mcp_servers(&self, counts: &[(crate::mcp::inventory::ServerState, bool, usize)]) {
        for (state, sanctioned, n) in counts {
            let state = match state {
                crate::mcp::inventory::ServerState::Suspected => "suspected",
                crate::mcp::inventory::ServerState::Confirmed => "confirmed",
                crate::mcp::inventory::ServerState::Exited => "exited",
            };
            let sanctioned = if *sanctioned { "true" } else { "false" };
            self.mcp_servers
                .get_or_create(&McpServerLabels { state, sanctioned })
                .set(*n as i64);
        }
    }

    pub fn connection(&self, direction: &'static str, result: &'static str) {
        self.net
            .connections
            .get_or_create(&ConnectionLabels { direction, result })
            .inc();
    }

    pub fn dns_message(&self, kind: &'static str) {
        self.net.dns_messages.get_or_create(&KindLabel { kind }).inc();
    }

    pub fn dns_parse_error(&self, reason: &'static str) {
        self.net
            .dns_parse_errors
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn set_socket_table(&self, s: &SocketStats, dns_processes: usize, dns_addresses: usize) {
        let set = |f: &Family<KindLabel, Gauge>, kind, v: usize| {
            f.get_or_create(&KindLabel { kind }).set(v as i64);
        };
        set(&self.net.socket_table, "connection", s.connections);
        set(&self.net.socket_table, "listener", s.listeners);
        set(&self.net.socket_table, "datagram_flow", s.flows);
        set(&self.net.socket_table, "connected_datagram", s.connected_datagram);
        set(&self.net.dns_cache, "processes", dns_processes);
        set(&self.net.dns_cache, "host_addresses", dns_addresses);
        self.net.listeners.set(s.listeners as i64);
    }

    pub fn rule_reload(&self, result: &'static str) {
        self.rules.reloads.get_or_create(&ResultLabel { result }).inc();
    }

    pub fn table_refused(&self) {
        self.table_refused.inc();
    }

    /// The delivered-events counter of a sink, for callers that count per event.
    pub fn sink_written_counter(&self, sink: &str) -> Counter {
        self.sink_events
            .get_or_create(&SinkLabel {
                sink: sink.to_string(),
            })
            .clone()
    }

    pub fn sink_failed(&self, sink: &str) {
        self.sink_errors
            .get_or_create(&SinkLabel {
                sink: sink.to_string(),
            })
            .inc();
    }

    pub fn alert_raised(&self, rule: &str, severity: crate::alert::Severity) {
        self.alerts
            .get_or_create(&AlertLabels {
                rule: rule.to_string(),
                severity: severity.label(),
            })
            .inc();
    }

    /// Makes a rule's series exist at 0 before its first alert (for rate() and absence).
    pub fn alert_rule_known(&self, rule: &str, severity: crate::alert::Severity) {
        let _ = self.alerts.get_or_create(&AlertLabels {
            rule: rule.to_string(),
            severity: severity.label(),
        });
        let _ = self.alerts_suppressed.get_or_create(&RuleLabel {
            rule: rule.to_string(),
        });
    }

    pub fn alert_suppressed(&self, rule: &str) {
        self.alerts_suppressed
            .get_or_create(&RuleLabel {
                rule: rule.to_string(),
            })
            .inc();
    }

    /// Makes a sink's series exist at 0 from the start.
    pub fn sink_registered(&self, sink: &str) {
        let l = SinkLabel {
            sink: sink.to_string(),
        };
        let _ = self.sink_events.get_or_create(&l);
        let _ = self.sink_errors.get_or_create(&l);
        let _ = self.sink_retries.get_or_create(&l);
        let _ = self.sink_rejected.get_or_create(&l);
        let _ = self.records_trimmed.get_or_create(&l);
        let _ = self.records_over_budget.get_or_create(&l);
        let _ = self.sink_backlog.get_or_create(&l);
        let _ = self.sink_oldest_age.get_or_create(&l);
        let _ = self.sink_latency.get_or_create(&l);
    }

    pub fn sink_sent(&self, sink: &str, n: u64) {
        self.sink_events
            .get_or_create(&SinkLabel {
                sink: sink.to_string(),
            })
            .inc_by(n);
    }

    pub fn sink_retry(&self, sink: &str) {
        let l = SinkLabel {
            sink: sink.to_string(),
        };
        self.sink_errors.get_or_create(&l).inc();
        self.sink_retries.get_or_create(&l).inc();
    }

    pub fn sink_rejected(&self, sink: &str) {
        self.sink_rejected
            .get_or_create(&SinkLabel {
                sink: sink.to_string(),
            })
            .inc();
    }

    /// A record delivered trimmed into the sink's budget.
    pub fn record_trimmed(&self, sink: &str) {
        self.records_trimmed
            .get_or_create(&SinkLabel {
                sink: sink.to_string(),
            })
            .inc();
    }

    /// A record delivered over the sink's budget, trimmed as far as it went.
    pub fn record_over_budget(&self, sink: &str) {
        self.records_over_budget
            .get_or_create(&SinkLabel {
                sink: sink.to_string(),
            })
            .inc();
    }

    pub fn sink_progress(&self, sink: &str, backlog: u64, oldest_age_s: f64) {
        let l = SinkLabel {
            sink: sink.to_string(),
        };
        self.sink_backlog.get_or_create(&l).set(backlog as i64);
        self.sink_oldest_age.get_or_create(&l).set(oldest_age_s);
    }

    pub fn observe_delivery(&self, sink: &str, seconds: f64) {
        self.sink_latency
            .get_or_create(&SinkLabel {
                sink: sink.to_string(),
            })
            .observe(seconds);
    }

    pub fn set_spool_bytes(&self, bytes: u64) {
        self.spool_bytes.set(bytes as i64);
    }

    /// One event for the recording: `written`, `dropped` or `failed`.
    pub fn recording_event(&self, result: &'static str) {
        self.recording_events.get_or_create(&ResultLabel { result }).inc();
    }

    pub fn spool_dropped(&self, reason: &'static str, n: u64) {
        self.spool_dropped
            .get_or_create(&ReasonLabel { reason })
            .inc_by(n);
    }

    /// Reads the agent's own resource use (called at scrape time).
    fn refresh_self(&self) {
        if let Ok(me) = procfs::process::Process::myself() {
            if let Ok(stat) = me.stat() {
                let page = procfs::page_size();
                self.resident_bytes.set((stat.rss * page) as i64);
                let ticks = crate::clock::ticks_per_second() as f64;
                self.cpu_seconds.set((stat.utime + stat.stime) as f64 / ticks);
            }
        }
    }

    /// OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        self.refresh_self();
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
