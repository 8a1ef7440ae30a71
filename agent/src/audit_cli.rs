//! `mcpwatch audit`: the running agent's recent audit records (`/v1/audit`), as a
//! table or JSON lines; with `--follow`, new records as they come, told when the
//! agent's window moved past records this follower had not yet seen.

use std::time::Duration;

use anyhow::{Context as _, Result};
use serde_json::Value;

use crate::{api::client, cli::AuditArgs};

/// How often `--follow` asks for new records.
const POLL: Duration = Duration::from_millis(500);

pub fn run(args: &AuditArgs) -> Result<()> {
    let mut after = 0u64;
    let mut header = !args.json;
    loop {
        let page = fetch(args, after)?;
        if page.missed > 0 {
            eprintln!(
                "mcpwatch: {} audit records left the agent's window before they were read",
                page.missed
            );
        }
        for r in &page.records {
            if args.json {
                println!("{r}");
            } else {
                if header {
                    println!("{}", row(&COLUMNS.map(str::to_string)));
                    header = false;
                }
                println!("{}", row(&cells(r)));
            }
        }
        let more = page.next > after && page.full;
        after = page.next;
        if more {
            continue;
        }
        if !args.follow {
            if header {
                println!("(no audit records)");
            }
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
}

struct Page {
    next: u64,
    missed: u64,
    records: Vec<Value>,
    /// The page was as long as the agent sends: more may be waiting.
    full: bool,
}

const PAGE: usize = 1000;

fn fetch(args: &AuditArgs, after: u64) -> Result<Page> {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("after", &after.to_string());
    q.append_pair("limit", &PAGE.to_string());
    for (k, v) in [
        ("server", &args.server),
        ("tool", &args.tool),
        ("method", &args.method),
        ("outcome", &args.outcome),
    ] {
        if let Some(v) = v {
            q.append_pair(k, v);
        }
    }
    let body = client::get(args.api, &format!("/v1/audit?{}", q.finish()))?;
    let v: Value = serde_json::from_str(&body).context("the agent sent invalid JSON")?;
    let records = v["records"].as_array().cloned().unwrap_or_default();
    Ok(Page {
        next: v["next"]
            .as_u64()
            .context("the agent's audit page has no cursor")?,
        missed: v["missed"].as_u64().unwrap_or(0),
        full: records.len() >= PAGE,
        records,
    })
}

const COLUMNS: [&str; 8] = [
    "TIME", "SERVER", "CLIENT", "METHOD", "TARGET", "OUTCOME", "LATENCY", "BYTES",
];
const WIDTHS: [usize; 8] = [30, 24, 8, 16, 20, 10, 9, 0];

fn cells(r: &Value) -> [String; 8] {
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let outcome = match (r["outcome"].as_str(), r["error"]["code"].as_i64()) {
        (Some(o), Some(code)) => format!("{o} {code}"),
        (Some(o), None) => o.to_string(),
        _ => "-".into(),
    };
    let latency = r["latency_us"]
        .as_u64()
        .map_or("-".into(), |us| format!("{:.1}ms", us as f64 / 1000.0));
    let bytes = match r["response_bytes"].as_u64() {
        Some(resp) => format!("{}/{}", r["request_bytes"], resp),
        None => format!("{}/-", r["request_bytes"]),
    };
    [
        s(&r["time"]),
        r["server"]["name"]
            .as_str()
            .unwrap_or_else(|| r["server"]["id"].as_str().unwrap_or("?"))
            .to_string(),
        r["client"]["pid"].as_u64().map_or("-".into(), |p| p.to_string()),
        s(&r["method"]),
        s(&r["target"]),
        outcome,
        latency,
        bytes + if r["truncated"] == true { " truncated" } else { "" },
    ]
}

fn row(cells: &[String; 8]) -> String {
    cells
        .iter()
        .zip(WIDTHS)
        .map(|(c, w)| format!("{c:<w$}"))
        .collect::<Vec<_>>()
        .join("  ")
        .trim_end()
        .to_string()
}
