//! `etcd-bootstrap doctor`: one line per check, `OK` or `FAIL` with the fix, as a table or as
//! JSON. Thin: `agent::doctor` gathers, `decide::doctor` judges. Exit 0 when every check passes,
//! 1 otherwise (`error::Reported`: the lines already say what is wrong).

use crate::agent;
use crate::config::Config;
use crate::decide::doctor::{self, Finding};
use crate::error::Reported;
use anyhow::Result;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub(crate) struct DoctorReport {
    pub ok: bool,
    pub findings: Vec<Finding>,
}

pub(crate) async fn collect(cfg: &Config) -> Result<DoctorReport> {
    let observed = agent::doctor::observe(cfg).await?;
    let findings = doctor::check(&observed);
    Ok(DoctorReport {
        ok: findings.iter().all(|f| f.ok),
        findings,
    })
}

pub(crate) fn table(r: &DoctorReport) -> String {
    let mut out = String::new();
    for f in &r.findings {
        if f.ok {
            out.push_str(&format!("OK   {}: {}\n", f.check, f.what));
        } else {
            out.push_str(&format!("FAIL {}: {} -> fix: {}\n", f.check, f.what, f.fix));
        }
    }
    out
}

/// Print the report; an error (exit 1) when anything failed.
pub(crate) async fn doctor(cfg: &Config, json: bool) -> Result<()> {
    let report = collect(cfg).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    let failed = report.findings.iter().filter(|f| !f.ok).count();
    if failed > 0 {
        return Err(Reported(format!(
            "doctor: {failed} problem{} found (the FAIL {} above)",
            if failed == 1 { "" } else { "s" },
            if json { "findings" } else { "lines" }
        ))
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_finding_with_the_fix_on_failures() {
        let r = DoctorReport {
            ok: false,
            findings: vec![
                Finding {
                    check: "quorum",
                    ok: true,
                    what: "3 of 3 voting members answer (2 needed)".into(),
                    fix: String::new(),
                },
                Finding {
                    check: "clock",
                    ok: false,
                    what: "etcd3's clock is 3.0 s ahead of this node's (±5 ms)".into(),
                    fix: "keep every member's clock in sync with NTP".into(),
                },
            ],
        };
        assert_eq!(
            table(&r),
            "OK   quorum: 3 of 3 voting members answer (2 needed)\nFAIL clock: etcd3's clock is 3.0 s ahead of this node's (±5 ms) -> fix: keep every member's clock in sync with NTP\n"
        );
        let json: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(json["ok"], false);
        assert_eq!(json["findings"][0]["check"], "quorum");
        assert!(json["findings"][0].get("fix").is_none());
        assert_eq!(
            json["findings"][1]["fix"],
            "keep every member's clock in sync with NTP"
        );
    }
}
