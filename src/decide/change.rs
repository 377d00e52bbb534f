//! What a configuration change asks of a running member (`systemctl reload`, or an agent
//! restarted with a changed configuration): nothing, something the agent takes up at once, a
//! restart of etcd (rolled one member at a time, never by itself), or nothing at all because the
//! change cannot be made to a running member.
//!
//! The rule for etcd: etcd reads its flags, environment, unit or manifest, and its binary or
//! image, only when it starts. So a change needs etcd restarted exactly when the files rendered
//! for etcd (with the binary, release and image they run) differ from those it runs with; the
//! caller compares them (`rendered_differs`), which covers every current and future key that
//! reaches etcd without a list to keep in step. The keys named here are for the log and for
//! what cannot change.

/// Keys a running member cannot change, and why. A key matches itself and its sub-keys.
pub(crate) const FIXED: &[(&str, &str)] = &[
    ("cluster.name", IDENTITY),
    ("member.name", IDENTITY),
    ("member.advertise_address", IDENTITY),
    ("member.data_dir", IDENTITY),
    ("member.client_port", IDENTITY),
    ("member.peer_port", IDENTITY),
    ("member.agent_port", IDENTITY),
    ("tls.dir", WHERE),
    ("etcd.service_manager", WHERE),
    ("etcd.container_runtime", WHERE),
    ("etcd.env_file", WHERE),
    ("etcd.unit_path", WHERE),
    ("etcd.manifest_path", WHERE),
    ("metrics.listen", BOUND),
];

const IDENTITY: &str = "it is part of this member's identity in the cluster (its peers know it by it); replace the member instead: a new VM, or `etcd-bootstrap leave` and a fresh data dir";
const WHERE: &str = "it says where or how the running etcd is kept, which would be left behind unmanaged; stop the agent and etcd, then start them with the new configuration";
const BOUND: &str = "the agent binds it at its start; restart the agent (`systemctl restart etcd-bootstrap`), which does not restart etcd";

/// Keys whose change needs etcd restarted even where the rendered files do not show it (the
/// binary at the same path replaced by another release).
pub(crate) const RESTART: &[&str] = &[
    "etcd.binary",
    "etcd.download_url",
    "etcd.sha256",
    "etcd.image",
    "etcd.flags",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// Nothing that matters changed.
    Unchanged,
    /// The agent takes it up at once (heal, backup, maintenance, discovery, certificate
    /// settings); etcd keeps running.
    AtOnce { keys: Vec<String> },
    /// etcd must be restarted: one member at a time, under the rollout lock.
    RestartEtcd { keys: Vec<String> },
    /// Refused as a whole: the running member keeps the configuration it has.
    Refused { key: String, why: &'static str },
}

/// Whether `key` is `pattern` or one of its sub-keys (`etcd.flags.heartbeat-interval`).
fn matches(key: &str, pattern: &str) -> bool {
    key == pattern
        || key
            .strip_prefix(pattern)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// `changed`: the keys whose value differs between the configuration in force and the new one;
/// `rendered_differs`: whether etcd's files (with binary, release and image) rendered from the
/// new one differ from those etcd runs with.
pub(crate) fn classify(changed: &[String], rendered_differs: bool) -> Change {
    for key in changed {
        if let Some((pattern, why)) = FIXED.iter().find(|(p, _)| matches(key, p)) {
            return Change::Refused {
                key: pattern.to_string(),
                why,
            };
        }
    }
    let restart = rendered_differs
        || changed
            .iter()
            .any(|k| RESTART.iter().any(|p| matches(k, p)));
    match (changed.is_empty(), restart) {
        (_, true) => Change::RestartEtcd {
            keys: changed.to_vec(),
        },
        (true, false) => Change::Unchanged,
        (false, false) => Change::AtOnce {
            keys: changed.to_vec(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn classify_table() {
        use Change::*;
        let restart = |k: &[&str]| RestartEtcd { keys: keys(k) };
        let at_once = |k: &[&str]| AtOnce { keys: keys(k) };
        let refused = |key: &str, why| Refused {
            key: key.into(),
            why,
        };
        // (changed keys, rendered files differ, verdict)
        let table: Vec<(&[&str], bool, Change)> = vec![
            (&[], false, Unchanged),
            // Only what the agent does: at once, no restart.
            (&["heal.interval"], false, at_once(&["heal.interval"])),
            (
                &["heal.remove_dead_after", "heal.enabled"],
                false,
                at_once(&["heal.remove_dead_after", "heal.enabled"]),
            ),
            (&["backup.interval"], false, at_once(&["backup.interval"])),
            (&["backup"], false, at_once(&["backup"])),
            (
                &["maintenance.defrag_when"],
                false,
                at_once(&["maintenance.defrag_when"]),
            ),
            (
                &["discovery.timeout"],
                false,
                at_once(&["discovery.timeout"]),
            ),
            (
                &["tls.cert_validity"],
                false,
                at_once(&["tls.cert_validity"]),
            ),
            // What reaches etcd: a restart, whether or not the caller saw the files differ.
            (
                &["etcd.flags.heartbeat-interval"],
                true,
                restart(&["etcd.flags.heartbeat-interval"]),
            ),
            (&["etcd.flags"], false, restart(&["etcd.flags"])),
            (&["etcd.image"], true, restart(&["etcd.image"])),
            (&["etcd.binary"], false, restart(&["etcd.binary"])),
            (
                &["etcd.download_url", "etcd.sha256"],
                false,
                restart(&["etcd.download_url", "etcd.sha256"]),
            ),
            // The rendered files are the rule: a key not listed that reaches etcd.
            (
                &["member.metrics_port"],
                true,
                restart(&["member.metrics_port"]),
            ),
            (&[], true, restart(&[])),
            // A prefix is not a key: etcd.flagsx is not etcd.flags.
            (&["etcd.flagsx"], false, at_once(&["etcd.flagsx"])),
            // What a running member cannot change: refused as a whole, with the rest.
            (
                &["heal.interval", "member.client_port"],
                true,
                refused("member.client_port", IDENTITY),
            ),
            (&["cluster.name"], false, refused("cluster.name", IDENTITY)),
            (
                &["etcd.service_manager"],
                true,
                refused("etcd.service_manager", WHERE),
            ),
            (&["metrics.listen"], false, refused("metrics.listen", BOUND)),
        ];
        for (i, (changed, differs, want)) in table.into_iter().enumerate() {
            assert_eq!(
                classify(&keys(changed), differs),
                want,
                "row {i}: {changed:?}"
            );
        }
    }
}
