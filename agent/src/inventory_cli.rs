//! `mcpwatch inventory`: the MCP servers a running agent has seen, as a table; with
//! `--tools`, each server's tool set under it.

use anyhow::{Context as _, Result};
use serde_json::Value;

use crate::{api::client, cli::InventoryArgs};

pub fn run(args: &InventoryArgs) -> Result<()> {
    let body = client::get(args.api, "/v1/mcp-servers")?;
    if args.json {
        println!("{body}");
        return Ok(());
    }
    let servers: Vec<Value> = serde_json::from_str(&body).context("the agent sent invalid JSON")?;
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let rows: Vec<[String; 8]> = servers
        .iter()
        .map(|v| {
            let name = match (v["name"].as_str(), v["version"].as_str()) {
                (Some(n), Some(ver)) => format!("{n} {ver}"),
                (Some(n), None) => n.to_string(),
                _ => "?".into(),
            };
            let host = match (v["host"]["pid"].as_u64(), v["host"]["name"].as_str()) {
                (Some(p), Some(n)) => format!("{n} ({p})"),
                _ => v["client"]["address"].as_str().unwrap_or("-").to_string(),
            };
            let package = match (v["package"]["name"].as_str(), v["package"]["version"].as_str()) {
                (Some(n), Some(ver)) => format!("{n}@{ver}"),
                (Some(n), None) => n.to_string(),
                _ => "-".into(),
            };
            [
                v["pid"].to_string(),
                s(&v["state"]),
                name,
                s(&v["transport"]),
                s(&v["protocol_version"]),
                host,
                package,
                v["user"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v["uid"].to_string()),
            ]
        })
        .collect();
    let header = [
        "PID",
        "STATE",
        "SERVER",
        "TRANSPORT",
        "PROTOCOL",
        "HOST",
        "PACKAGE",
        "USER",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", line(header.to_vec()));
    for (r, v) in rows.iter().zip(&servers) {
        println!("{}", line(r.iter().map(String::as_str).collect()));
        if args.tools {
            print_tools(v);
        }
    }
    if rows.is_empty() {
        println!("(no MCP servers seen yet)");
    }
    Ok(())
}

/// `  tools sha256:…  (N tools)` then one `    name  sha256` line per tool.
fn print_tools(server: &Value) {
    let Some(set) = server["tools"].as_object() else {
        println!("  tools: (not listed yet)");
        return;
    };
    let tools = set
        .get("tools")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    println!(
        "  tools sha256:{}  ({} tools{})",
        set.get("sha256").and_then(Value::as_str).unwrap_or("?"),
        tools.len(),
        if set.get("incomplete").and_then(Value::as_bool) == Some(true) {
            ", incomplete"
        } else {
            ""
        }
    );
    let width = tools
        .iter()
        .filter_map(|t| t["name"].as_str())
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0);
    for t in tools {
        println!(
            "    {:<width$}  {}",
            t["name"].as_str().unwrap_or("?"),
            t["sha256"].as_str().unwrap_or("?")
        );
    }
}
