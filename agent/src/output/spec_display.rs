//! A sink spec printed back as text, for `print-config`: the same text `from_str`
//! (spec.rs) accepts.

use super::spec::{Format, SinkSpec};

/// Options only where they differ from a bare path's defaults. Remote sinks keep their
/// original text: it cannot hold credentials (`from_str` refuses them in URLs).
impl std::fmt::Display for SinkSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let j = match self {
            SinkSpec::Syslog(_, r) | SinkSpec::Http(_, r) => return f.write_str(&r.raw),
            SinkSpec::Jsonl(j) => j,
        };
        let base = match &j.path {
            None => "jsonl:-".to_string(),
            Some(p) => format!("jsonl:{}", p.display()),
        };
        let Ok(SinkSpec::Jsonl(bare)) = base.parse::<SinkSpec>() else {
            return f.write_str(&base);
        };
        let mut opts = Vec::new();
        if j.format != bare.format {
            opts.push(format!(
                "format={}",
                match j.format {
                    Format::Native => "native",
                    Format::Ocsf => "ocsf",
                    Format::Ecs => "ecs",
                }
            ));
        }
        if j.events != bare.events {
            opts.push(format!("events={}", j.events.option_value()));
        }
        if j.max_bytes != bare.max_bytes {
            opts.push(format!("max_bytes={}", j.max_bytes));
        }
        if j.keep != bare.keep {
            opts.push(format!("keep={}", j.keep));
        }
        match opts.is_empty() {
            true => f.write_str(&base),
            false => write!(f, "{base}?{}", opts.join("&")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_specs_print_as_they_parse() {
        for text in [
            "jsonl:-",
            "jsonl:/var/log/mcpwatch/events.jsonl",
            "jsonl:/var/log/mcpwatch/alerts.jsonl?format=ocsf&events=alerts&max_bytes=1000&keep=3",
            "syslog+tls://siem.example:6514",
        ] {
            assert_eq!(text.parse::<SinkSpec>().unwrap().to_string(), text);
        }
    }
}
