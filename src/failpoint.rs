//! Named fail points for fault-injection tests: `ETCD_BOOTSTRAP_FAILPOINT=<name>` makes the
//! process kill itself with SIGKILL when it reaches that point, as `kill -9` would, so tests can
//! prove that a re-run converges from there.

/// Every fail point, in the order a run meets them.
pub const ALL: &[&str] = &[
    "new:after-certs",
    "restore:before-move",
    "new:after-env",
    "join:before-add",
    "join:after-remove",
    "join:after-add",
    "join:after-start",
    "join:before-promote",
    "heal:after-stop",
    "heal:after-move",
    "fleet-restore:after-stop",
    "fleet-restore:after-move",
];

pub fn hit(name: &str) {
    debug_assert!(ALL.contains(&name), "unknown fail point {name}");
    if std::env::var("ETCD_BOOTSTRAP_FAILPOINT").as_deref() == Ok(name) {
        tracing::warn!(failpoint = name, "fail point reached; killing this process");
        // SAFETY: kill(2) on our own pid.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
