//! `mcpwatch print-config`: the effective configuration, as a config file with the
//! source of each value beside it (or as JSON).

use crate::config::Provenance;

/// A YAML config file with one `# source` comment per key. JSON scalars and arrays
/// are valid YAML flow values, so the output can be fed back as `--config`.
pub fn as_yaml(p: &Provenance) -> String {
    let mut out = String::from("# mcpwatch effective configuration\n");
    match &p.config_file {
        Some(path) => out.push_str(&format!("# config file: {}\n", path.display())),
        None => out.push_str(&format!(
            "# config file: none (no --config, no MCPWATCH_CONFIG, no {})\n",
            crate::config::DEFAULT_CONFIG_PATH
        )),
    }
    // Sources line up in one column; a long value (a nested section) just pushes its own.
    let width = p
        .settings
        .iter()
        .map(|(k, s)| k.len() + s.value.to_string().len() + 2)
        .filter(|w| *w <= 48)
        .max()
        .unwrap_or(0);
    for (key, setting) in &p.settings {
        let line = format!("{key}: {}", setting.value);
        out.push_str(&format!("{line:<width$}  # {}\n", setting.source));
    }
    out
}

pub fn as_json(p: &Provenance) -> String {
    serde_json::to_string_pretty(p).expect("provenance serializes")
}
