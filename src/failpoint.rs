//! Named fail points for fault-injection tests: `ETCD_BOOTSTRAP_FAILPOINT=<name>` makes the
//! process kill itself with SIGKILL when it reaches that point, as `kill -9` would, so tests can
//! prove that a re-run converges from there.
//!
//! Only with the cargo feature `failpoints` (the tests turn it on, `scripts/test.sh`). Without
//! it `hit` does nothing, so a release binary cannot be made to kill itself through its
//! environment; `warn_if_unavailable` says so once at start when the variable is set anyway.

/// The environment variable that names the fail point to die at.
pub(crate) const ENV: &str = "ETCD_BOOTSTRAP_FAILPOINT";

/// Whether this binary was built with fail points (`--features failpoints`).
pub(crate) const ENABLED: bool = cfg!(feature = "failpoints");

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
    "auto-recover:before-force",
    "auto-recover:after-force",
    "fleet-restore:after-stop",
    "fleet-restore:after-move",
];

#[cfg(feature = "failpoints")]
pub(crate) fn hit(name: &str) {
    debug_assert!(ALL.contains(&name), "unknown fail point {name}");
    if std::env::var(ENV).as_deref() == Ok(name) {
        tracing::warn!(failpoint = name, "fail point reached; killing this process");
        // SAFETY: kill(2) on our own pid.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// Built without the `failpoints` feature: nothing (the call sites stay, and compile away).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn hit(name: &str) {
    debug_assert!(ALL.contains(&name), "unknown fail point {name}");
}

/// Called once at start: a fail point asked for from a binary that has none would otherwise be
/// ignored in silence, and a fault-injection run would "pass" without any fault.
pub(crate) fn warn_if_unavailable() {
    if !ENABLED {
        if let Ok(name) = std::env::var(ENV) {
            tracing::warn!(
                failpoint = %name,
                "{ENV} is set but this binary has no fail points (built without the cargo \
                 feature `failpoints`); ignoring it"
            );
        }
    }
}
