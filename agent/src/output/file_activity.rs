//! `file_access` events as OCSF File System Activity (1001), for sinks that take
//! telemetry. Open is Open (14), unlink Delete (4), rename Rename (5, the target in
//! `file_result`), chmod Set Attributes (6); a failed call has `status_id` 2 and its
//! errno in `status_detail`.

use serde_json::{json, Map, Value};

use super::{host::HostInfo, ocsf};
use crate::{sensor::FileOp, state::files::FileAccessEvent};

pub const KIND: &str = "file_activity";

fn file(path: &str) -> Value {
    let name = path.rsplit('/').next().unwrap_or(path);
    // The kernel reported a path, not what it names: type Unknown.
    json!({"name": name, "path": path, "type_id": 0, "type": "Unknown"})
}

pub fn time_ms(e: &FileAccessEvent) -> u64 {
    time::OffsetDateTime::parse(&e.time, &time::format_description::well_known::Rfc3339)
        .ok()
        .and_then(|d| u64::try_from(d.unix_timestamp_nanos() / 1_000_000).ok())
        .unwrap_or(0)
}

pub fn ocsf(e: &FileAccessEvent, host: &HostInfo, event_uid: &str) -> Value {
    let (activity_id, activity) = match e.op {
        FileOp::Open => (14, "Open"),
        FileOp::Unlink => (4, "Delete"),
        FileOp::Rename => (5, "Rename"),
        FileOp::Chmod => (6, "Set Attributes"),
    };
    let mut process = Map::new();
    if let Some(p) = &e.process {
        process.insert("pid".into(), json!(p.pid));
        process.insert("uid".into(), json!(p.entity_id));
        process.insert("name".into(), json!(p.comm));
        if !p.argv.is_empty() {
            process.insert("cmd_line".into(), json!(p.argv.join(" ")));
        }
        if let Some(exe) = &p.exe {
            process.insert(
                "file".into(),
                json!({"name": exe.rsplit('/').next().unwrap_or(exe), "path": exe, "type_id": 1, "type": "Regular File"}),
            );
        }
    }
    let (status_id, status) = if e.succeeded() {
        (1, "Success")
    } else {
        (2, "Failure")
    };
    let mut o = json!({
        "class_uid": 1001,
        "class_name": "File System Activity",
        "category_uid": 1,
        "category_name": "System Activity",
        "activity_id": activity_id,
        "activity_name": activity,
        "type_uid": 1001 * 100 + activity_id,
        "type_name": format!("File System Activity: {activity}"),
        "severity_id": 1,
        "severity": "Informational",
        "status_id": status_id,
        "status": status,
        "time": time_ms(e),
        "metadata": ocsf::metadata(event_uid),
        "device": ocsf::device(host),
        "actor": {"process": Value::Object(process)},
        "file": file(&e.path),
        "unmapped": {
            "access": e.mode_label(),
            "created": e.created,
            "truncated": e.truncated,
            "path_resolved": e.path_resolved,
            "path_truncated": e.path_truncated,
            "mode": e.mode,
            "mcp_tree_root_pid": e.tree_root,
        },
    });
    if !e.succeeded() {
        o["status_detail"] = json!(e.result);
    }
    if let Some(t) = &e.target {
        o["file_result"] = file(t);
    }
    o
}

#[cfg(test)]
pub mod fixtures {
    use super::*;
    use crate::state::files::fixtures::event;

    pub fn ocsf_records() -> Vec<Value> {
        let host = HostInfo {
            hostname: "host-01".into(),
            id: "0123456789abcdef0123456789abcdef".into(),
        };
        [
            (FileOp::Open, "ok"),
            (FileOp::Open, "ENOENT"),
            (FileOp::Unlink, "ok"),
            (FileOp::Rename, "ok"),
            (FileOp::Chmod, "EPERM"),
        ]
        .into_iter()
        .map(|(op, r)| ocsf(&event(op, r), &host, "e1"))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;

    #[test]
    fn activities_statuses_and_the_rename_target_map() {
        let r = ocsf_records();
        assert_eq!(r[0]["type_uid"], 100114);
        assert_eq!(r[0]["file"]["path"], "/home/dev/.aws/credentials");
        assert_eq!(r[0]["file"]["name"], "credentials");
        assert_eq!(r[0]["status_id"], 1);
        assert!(r[0].get("status_detail").is_none());
        assert_eq!(r[1]["status_id"], 2);
        assert_eq!(r[1]["status_detail"], "ENOENT");
        assert_eq!(r[2]["activity_name"], "Delete");
        assert_eq!(r[3]["file_result"]["path"], "/tmp/x");
        assert_eq!(r[4]["activity_id"], 6);
        assert_eq!(r[0]["actor"]["process"]["pid"], 42);
        assert_eq!(r[0]["unmapped"]["access"], "read");
    }
}
