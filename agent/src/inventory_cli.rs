//! `mcpwatch inventory`: the MCP servers a running agent has seen, as a table.

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
    for r in &rows {
        println!("{}", line(r.iter().map(String::as_str).collect()));
    }
    if rows.is_empty() {
        println!("(no MCP servers seen yet)");
    }
    Ok(())
}
