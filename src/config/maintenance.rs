//! `[maintenance]`: when the agents defragment the members (`defrag_when`, checked every
//! `interval`, inside `window` when one is set) and whether they disarm the NOSPACE alarm once
//! space is back (`disarm_nospace`). The rule and window languages live in `decide::defrag`.

use super::{ser_duration, Validator};
use crate::decide::defrag::{Rule, Window};
use crate::error::ConfigError;
use serde::Serialize;
use std::time::Duration;

pub(crate) const DEFAULT_RULE: &str = "free > 200MiB or quota_used > 80%";

#[derive(Debug, Clone, Serialize)]
pub(crate) struct MaintenanceConfig {
    /// `None`: "" (no scheduled defrags; NOSPACE is still handled).
    #[serde(serialize_with = "ser_rule")]
    pub defrag_when: Option<Rule>,
    #[serde(serialize_with = "ser_duration")]
    pub interval: Duration,
    #[serde(serialize_with = "ser_window")]
    pub window: Option<(String, Window)>,
    pub disarm_nospace: bool,
}

fn ser_rule<S: serde::Serializer>(r: &Option<Rule>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&r.as_ref().map(|r| r.to_string()).unwrap_or_default())
}

fn ser_window<S: serde::Serializer>(w: &Option<(String, Window)>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(w.as_ref().map(|(t, _)| t.as_str()).unwrap_or(""))
}

pub(super) fn validate(
    v: &Validator<'_>,
    raw: super::raw::RawMaintenance,
) -> Result<MaintenanceConfig, ConfigError> {
    let rule_text = raw.defrag_when.unwrap_or_else(|| DEFAULT_RULE.into());
    let defrag_when = if rule_text.trim().is_empty() {
        None
    } else {
        Some(Rule::parse(&rule_text).map_err(|e| {
            v.err(
                "maintenance.defrag_when",
                format!("{rule_text:?}: {e}; write e.g. \"{DEFAULT_RULE}\""),
            )
        })?)
    };
    let interval = v.duration("maintenance.interval", raw.interval, "1h")?;
    if interval < Duration::from_secs(1) {
        return Err(v.err("maintenance.interval", "must be at least 1s"));
    }
    let window = match raw.window.filter(|w| !w.trim().is_empty()) {
        None => None,
        Some(text) => {
            let w = Window::parse(&text).map_err(|e| v.err("maintenance.window", e))?;
            Some((text, w))
        }
    };
    Ok(MaintenanceConfig {
        defrag_when,
        interval,
        window,
        disarm_nospace: raw.disarm_nospace.unwrap_or(true),
    })
}
