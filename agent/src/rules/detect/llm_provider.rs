//! `llm-provider-egress`: any process (in an MCP tree or not) connecting to an LLM API
//! provider (the `llm_api_providers` list) its egress policy does not allow: data
//! leaving for a model nobody approved.

use super::{ConnectionSubject, Finding};
use crate::rules::netlist::Verdict;

/// Is the connection to an LLM provider at all? (Cheap: checked before the engine
/// looks the process tree up.)
pub fn is_provider(c_domain: Option<&str>, rules: &crate::rules::model::CompiledRules) -> bool {
    c_domain.is_some_and(|d| {
        rules
            .list("llm_api_providers")
            .is_some_and(|l| l.contains_domain(d))
    })
}

pub fn detect(c: &ConnectionSubject, exe: Option<&str>) -> Option<Finding> {
    let domain = c.domain()?;
    if !is_provider(Some(domain), c.rules) {
        return None;
    }
    if matches!(
        c.policy()
            .judge(Some(c.remote.ip), Some(c.remote.port), Some(domain)),
        Verdict::Allowed(_)
    ) {
        return None;
    }
    let mut f = Finding::new(
        format!("Data sent to LLM API provider {domain}"),
        format!(
            "process {} (pid {}) connected to {}, an LLM API provider the egress policy does not allow",
            c.comm,
            c.pid,
            c.destination()
        ),
    );
    f.identity = Some(format!("{}->{domain}", exe.unwrap_or(c.comm)));
    Some(f)
}
