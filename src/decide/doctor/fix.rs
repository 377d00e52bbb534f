//! The etcdctl command lines the fixes hand to the operator.

use super::DoctorInput;

/// `etcdctl` with the client certificate of `tls.dir`, through the members that answer.
pub(super) fn etcdctl(o: &DoctorInput) -> String {
    let up: Vec<&str> = o
        .members
        .iter()
        .filter(|m| m.reachable)
        .filter_map(|m| m.client_url.as_deref())
        .collect();
    etcdctl_at(o, &up.join(","))
}

pub(super) fn etcdctl_at(o: &DoctorInput, endpoints: &str) -> String {
    let d = &o.tls_dir;
    format!(
        "etcdctl --endpoints {endpoints} --cacert {d}/ca.crt --cert {d}/client.crt --key {d}/client.key"
    )
}

/// `commands` run one after the other with `ctl` (an etcdctl command line) as `$E`: a line to
/// paste into a shell.
pub(super) fn with_etcdctl(ctl: &str, commands: &[String]) -> String {
    let run: Vec<String> = commands.iter().map(|c| format!("$E {c}")).collect();
    format!("E='{ctl}'; {}", run.join("; "))
}

/// Compacting at the current revision, as etcd's NOSPACE procedure does.
pub(super) fn compact(o: &DoctorInput) -> String {
    match o.revision {
        Some(r) => format!("compact {r}"),
        None => "compact <the revision `$E endpoint status -w json` shows>".into(),
    }
}
