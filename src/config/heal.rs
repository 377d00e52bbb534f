//! `[heal]`: the heal loop: whether it runs, how often it checks, when it removes a dead
//! member, and how many moved-aside data dirs it keeps (`decide::prune`). The section's struct
//! and its validation live together; every bad value is one line naming its key.
//! `heal.interval` is checked against `tls.cert_validity` here too.

use super::{ser_duration, DiscoveryConfig, TlsConfig, Validator};
use crate::error::ConfigError;
use crate::util::time::format_duration;
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct HealConfig {
    pub enabled: bool,
    #[serde(serialize_with = "ser_duration")]
    pub interval: Duration,
    /// Remove a member unreachable for longer than this (`decide::dead_member`). Default "5m"
    /// with SRV discovery, off with static peers or seeds; "" turns it off.
    /// Printed as "" when off, which is how it is turned off (absent means the default).
    #[serde(serialize_with = "ser_opt_duration")]
    pub remove_dead_after: Option<Duration>,
    /// The default is in force (the key was not set): a member is removed only on both signals,
    /// unreachable AND gone from the SRV records. Set explicitly, a node waiting to join also
    /// counts as the second signal.
    #[serde(skip)]
    pub remove_dead_by_default: bool,
    /// Moved-aside data dirs kept by count (the newest N); beyond them only the ones that must
    /// stay (`decide::prune`). Default 2.
    pub keep_moved_aside: usize,
    /// While the file system holding the data dir is more than this percent used, moved-aside
    /// copies that may go go also from within `keep_moved_aside`, oldest first. 100: no limit.
    /// Default 90.
    pub moved_aside_max_disk_percent: u8,
    /// When no quorum can form and the agent of every member of the last recorded membership
    /// answers, bring the cluster back from the best copy by itself (`decide::quorum_recovery`).
    /// Default true.
    pub auto_recover: bool,
}

/// `heal.keep_moved_aside` when not set: the copy of the last heal or restore and the one
/// before it.
pub(crate) const KEEP_MOVED_ASIDE_DEFAULT: i64 = 2;
/// `heal.moved_aside_max_disk_percent` when not set: well before etcd's own writes (WAL, the
/// database growing to its quota) would fail for lack of space.
pub(crate) const MOVED_ASIDE_MAX_DISK_PERCENT_DEFAULT: i64 = 90;

/// `heal.remove_dead_after` when the key is not set and discovery is by SRV records: long
/// enough that a reboot or a DNS hiccup never costs a member, short enough that a rolling
/// replacement is not held up for long.
pub(crate) const REMOVE_DEAD_AFTER_SRV_DEFAULT: Duration = Duration::from_secs(300);

fn ser_opt_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&format_duration(*d)),
        None => s.serialize_str(""),
    }
}

impl HealConfig {
    /// The bounds on moved-aside copies, for `decide::prune`.
    pub(crate) fn prune_limits(&self) -> crate::decide::prune::Limits {
        crate::decide::prune::Limits {
            keep: self.keep_moved_aside,
            max_disk_percent: self.moved_aside_max_disk_percent,
        }
    }
}

/// The agent's shipped unit: `heal.interval` is checked against its `WatchdogSec`.
const AGENT_UNIT: &str = include_str!("../../dist/etcd-bootstrap.service");

/// `WatchdogSec=` of the shipped agent unit (systemd's time span: "2min", "120s", "120").
pub(crate) fn agent_watchdog() -> Option<Duration> {
    let value = AGENT_UNIT
        .lines()
        .find_map(|l| l.trim().strip_prefix("WatchdogSec="))?
        .trim();
    let digits = value.len() - value.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let n: u64 = value[..digits].parse().ok()?;
    let secs = match value[digits..].trim() {
        "" | "s" | "sec" => n,
        "m" | "min" => n * 60,
        "h" | "hr" => n * 3600,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

pub(super) fn validate(
    v: &Validator<'_>,
    raw: super::raw::RawHeal,
    discovery: &DiscoveryConfig,
    tls: &TlsConfig,
) -> Result<HealConfig, ConfigError> {
    let interval = v.duration_ms("heal.interval", raw.interval, "15s")?;
    // The agent tells systemd's watchdog it is alive once per heal.interval (also while a
    // re-join runs); systemd kills it after WatchdogSec without one. Half of WatchdogSec leaves
    // room for a slow check, as sd_watchdog_enabled(3) advises.
    if let Some(watchdog) = agent_watchdog() {
        if interval * 2 > watchdog {
            return Err(v.err(
                "heal.interval",
                format!(
                    "{} is longer than half the agent unit's WatchdogSec ({}): systemd would kill the agent between two checks; use at most {}",
                    format_duration(interval),
                    format_duration(watchdog),
                    format_duration(watchdog / 2)
                ),
            ));
        }
    }
    let remove_dead_by_default = raw.remove_dead_after.is_none() && discovery.srv_domain.is_some();
    let remove_dead_after = match raw.remove_dead_after.filter(|s| !s.is_empty()) {
        None if remove_dead_by_default => Some(REMOVE_DEAD_AFTER_SRV_DEFAULT.max(interval * 2)),
        None => None,
        Some(text) => {
            let d = v.duration("heal.remove_dead_after", Some(text), "")?;
            if d < interval * 2 {
                return Err(v.err(
                    "heal.remove_dead_after",
                    "must be at least two heal.interval: a member is judged dead only after several checks",
                ));
            }
            Some(d)
        }
    };
    // Renewal starts when a third of a certificate's lifetime is left and is tried once per
    // heal.interval (also with heal.enabled = false): leave several tries, and time to fix a
    // failing signer, inside that third.
    if interval.saturating_mul(10) > tls.cert_validity {
        // Name the one that was set; when both were, the interval (the usual mistake).
        let key = if v.merged.sources.contains_key("heal.interval")
            || !v.merged.sources.contains_key("tls.cert_validity")
        {
            "heal.interval"
        } else {
            "tls.cert_validity"
        };
        return Err(v.err(
            key,
            format!(
                "heal.interval ({}) must be at most a tenth of tls.cert_validity ({}): certificates are renewed in the last third of their lifetime, checked once per heal.interval",
                format_duration(interval),
                format_duration(tls.cert_validity)
            ),
        ));
    }
    let keep_moved_aside = match raw.keep_moved_aside.unwrap_or(KEEP_MOVED_ASIDE_DEFAULT) {
        n @ 0..=1000 => n as usize,
        n => {
            return Err(v.err(
                "heal.keep_moved_aside",
                format!("{n} is out of range (0-1000)"),
            ))
        }
    };
    let moved_aside_max_disk_percent = match raw
        .moved_aside_max_disk_percent
        .unwrap_or(MOVED_ASIDE_MAX_DISK_PERCENT_DEFAULT)
    {
        n @ 1..=100 => n as u8,
        n => {
            return Err(v.err(
                "heal.moved_aside_max_disk_percent",
                format!("{n} is out of range (1-100; 100 turns the disk limit off)"),
            ))
        }
    };
    Ok(HealConfig {
        enabled: raw.enabled.unwrap_or(true),
        interval,
        remove_dead_after,
        remove_dead_by_default,
        keep_moved_aside,
        moved_aside_max_disk_percent,
        auto_recover: raw.auto_recover.unwrap_or(true),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{setup, GOOD};
    use crate::config::Config;
    use std::time::Duration;

    /// A rolling replacement completes with default settings under SRV discovery: dead members
    /// are removed after 5 minutes on both signals. Static peers keep their slots (off), and ""
    /// turns it off.
    #[test]
    fn remove_dead_after_defaults_on_with_srv_only() {
        let load = |body: &str| {
            let (_d, p) = setup(body);
            Config::load(Some(&p), &[]).unwrap().heal
        };
        let srv = load(GOOD);
        assert_eq!(srv.remove_dead_after, Some(Duration::from_secs(300)));
        assert!(srv.remove_dead_by_default);
        let statics = load(&GOOD.replace("size = 3", "size = 1").replace(
            "srv_domain = \"lab.test\"",
            "peers = [\"a=https://10.0.0.1:2380\"]",
        ));
        assert_eq!(statics.remove_dead_after, None);
        let off = load(&format!("{GOOD}[heal]\nremove_dead_after = \"\"\n"));
        assert_eq!(off.remove_dead_after, None);
        let set = load(&format!("{GOOD}[heal]\nremove_dead_after = \"90s\"\n"));
        assert_eq!(set.remove_dead_after, Some(Duration::from_secs(90)));
        assert!(!set.remove_dead_by_default);
    }

    /// heal.interval feeds the agent unit's watchdog: at most half its WatchdogSec (2min).
    #[test]
    fn heal_interval_fits_the_shipped_watchdog() {
        assert_eq!(super::agent_watchdog(), Some(Duration::from_secs(120)));
        let load = |i: &str| {
            let (_d, p) = setup(&format!("{GOOD}[heal]\ninterval = \"{i}\"\n"));
            Config::load(Some(&p), &[])
        };
        assert_eq!(load("60s").unwrap().heal.interval, Duration::from_secs(60));
        assert_eq!(
            load("500ms").unwrap().heal.interval,
            Duration::from_millis(500)
        );
        for i in ["61s", "5m"] {
            let e = load(i).unwrap_err();
            assert_eq!(e.key, "heal.interval", "{e}");
            assert!(e.message.contains("WatchdogSec (2m)"), "{e}");
        }
    }

    /// Moved-aside copies: 2 by count and 90% of the disk unless set; out of range is one line
    /// naming the key (exit 2); the environment overrides the file.
    #[test]
    fn moved_aside_limits() {
        let load = |body: &str, env: &[(&str, &str)]| {
            let (_d, p) = setup(body);
            let env: Vec<(String, String)> = env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Config::load(Some(&p), &env)
        };
        let default = load(GOOD, &[]).unwrap().heal;
        assert!(default.auto_recover, "heal.auto_recover defaults to true");
        assert!(
            !load(&format!("{GOOD}[heal]\nauto_recover = false\n"), &[])
                .unwrap()
                .heal
                .auto_recover
        );
        assert_eq!(default.keep_moved_aside, 2);
        assert_eq!(default.moved_aside_max_disk_percent, 90);
        let set = load(
            &format!("{GOOD}[heal]\nkeep_moved_aside = 0\nmoved_aside_max_disk_percent = 100\n"),
            &[],
        )
        .unwrap()
        .heal;
        assert_eq!(set.keep_moved_aside, 0);
        assert_eq!(set.moved_aside_max_disk_percent, 100);
        let env = load(
            &format!("{GOOD}[heal]\nkeep_moved_aside = 0\n"),
            &[("ETCD_BOOTSTRAP_HEAL_KEEP_MOVED_ASIDE", "5")],
        )
        .unwrap()
        .heal;
        assert_eq!(env.keep_moved_aside, 5);
        for (body, key) in [
            ("keep_moved_aside = -1", "heal.keep_moved_aside"),
            ("keep_moved_aside = 1001", "heal.keep_moved_aside"),
            (
                "moved_aside_max_disk_percent = 0",
                "heal.moved_aside_max_disk_percent",
            ),
            (
                "moved_aside_max_disk_percent = 101",
                "heal.moved_aside_max_disk_percent",
            ),
            ("keep_moved_aside = \"2\"", "heal.keep_moved_aside"),
        ] {
            let err = load(&format!("{GOOD}[heal]\n{body}\n"), &[]).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(key), "{body}: {text}");
            assert_eq!(
                crate::error::exit_code_for(&err.into()),
                2,
                "{body}: {text}"
            );
        }
    }
}
