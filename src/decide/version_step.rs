//! Which change of etcd release a rolling restart may make, decided before any member stops.
//!
//! etcd's rules: within a minor release, any patch may replace any other (the data format does
//! not change). Across minors, a cluster goes up one minor at a time, each member in turn, and
//! the cluster's version moves up once every member runs the new minor; a skipped minor is not
//! supported. 3.5 -> 3.6 additionally needs every member on a recent 3.5 patch first (3.5.32: the
//! earlier patches lack fixes for upgrade blockers such as "too many learner members" and members
//! that come back after their removal). Going down a
//! minor is possible only through etcd's downgrade API (3.6 -> 3.5), which etcd-bootstrap does
//! not drive: it is refused, with the way to do it.

use crate::model::etcd_version::EtcdVersion;

/// The oldest 3.5 patch a member may go to 3.6 from.
pub(crate) const MIN_3_5_FOR_3_6: EtcdVersion = EtcdVersion::new(3, 5, 32);

/// What going from the releases the members run to `to` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Every member runs `to` already: only files or flags change.
    Same,
    /// Patch releases of the same minor.
    Patch,
    /// One minor up (from some members at least).
    MinorUp,
    /// Not allowed: why, and the allowed way to get there.
    Refused { why: String, path: String },
}

/// `running`: the release each member reports (Maintenance.Status), unknown ones left out;
/// `to`: the release the new binary or image is (None: it could not be told).
pub(crate) fn check(running: &[EtcdVersion], to: Option<EtcdVersion>) -> Step {
    let Some(to) = to else {
        return Step::Refused {
            why: "the release of the new etcd cannot be told (no `etcd --version` answer, or an image tag without a version)".into(),
            path: "point etcd.binary at an etcd that answers `etcd --version`, or use an image tagged with its release (etcd:3.5.30)".into(),
        };
    };
    let mut step = Step::Same;
    for &from in running {
        let this = one(from, to);
        match (&step, &this) {
            (_, Step::Refused { .. }) => return this,
            (Step::Same, _) | (Step::Patch, Step::MinorUp) => step = this,
            _ => {}
        }
    }
    step
}

fn one(from: EtcdVersion, to: EtcdVersion) -> Step {
    let minor = |v: EtcdVersion| format!("{}.{}", v.major, v.minor);
    if from == to {
        return Step::Same;
    }
    if from.major != to.major {
        return Step::Refused {
            why: format!("{from} -> {to} changes the major release"),
            path: "etcd supports no upgrade across major releases".into(),
        };
    }
    if from.minor == to.minor {
        return Step::Patch;
    }
    if to.minor < from.minor {
        return Step::Refused {
            why: format!("{from} -> {to} goes down a minor release, which only etcd's downgrade API can do (from 3.6 on), and etcd-bootstrap does not drive it"),
            path: format!("stay on {}, or downgrade by hand with `etcdctl downgrade validate {}` then `etcdctl downgrade enable {}` before rolling the older release", minor(from), minor(to), minor(to)),
        };
    }
    if to.minor > from.minor + 1 {
        let next = EtcdVersion::new(from.major, from.minor + 1, 0);
        return Step::Refused {
            why: format!("{from} -> {to} skips a minor release; etcd goes up one minor at a time"),
            path: format!(
                "roll the latest {} patch to every member first, then {}",
                minor(next),
                minor(to)
            ),
        };
    }
    if to.major == 3 && to.minor == 6 && from < MIN_3_5_FOR_3_6 {
        return Step::Refused {
            why: format!(
                "{from} -> {to}: etcd goes to 3.6 only from {MIN_3_5_FOR_3_6} or a later 3.5 patch"
            ),
            path: format!(
                "roll {MIN_3_5_FOR_3_6} or a later 3.5 patch to every member first, then {to}"
            ),
        };
    }
    Step::MinorUp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> EtcdVersion {
        EtcdVersion::parse(text).unwrap()
    }

    /// What a row expects: that step, or a refusal whose reason holds the text.
    enum Want {
        Is(Step),
        RefusedFor(&'static str),
    }

    #[test]
    fn release_steps() {
        use Step::*;
        use Want::*;
        let table: Vec<(&[&str], Option<&str>, Want)> = vec![
            (&["3.5.30", "3.5.30", "3.5.30"], Some("3.5.30"), Is(Same)),
            (&["3.5.21", "3.5.30"], Some("3.5.30"), Is(Patch)),
            // A patch down within a minor: the data format is the same.
            (&["3.5.30"], Some("3.5.21"), Is(Patch)),
            (&["3.4.23", "3.4.23"], Some("3.5.30"), Is(MinorUp)),
            // Half-way through a rollout: the members already on it count as the same.
            (&["3.5.30", "3.4.23", "3.4.23"], Some("3.5.30"), Is(MinorUp)),
            (&["3.5.32"], Some("3.6.6"), Is(MinorUp)),
            (&["3.5.33", "3.5.32"], Some("3.6.0"), Is(MinorUp)),
            // 3.5.30, this lab's newest 3.5, is not recent enough for 3.6.
            (
                &["3.5.32", "3.5.30"],
                Some("3.6.6"),
                RefusedFor("only from 3.5.32"),
            ),
            (&["3.4.23"], Some("3.6.6"), RefusedFor("skips a minor")),
            (
                &["3.5.30", "3.5.30"],
                Some("3.4.23"),
                RefusedFor("goes down a minor"),
            ),
            (&["3.6.6"], Some("3.5.30"), RefusedFor("downgrade API")),
            (&["3.5.30"], Some("4.0.0"), RefusedFor("major")),
            (&["3.5.30"], None, RefusedFor("cannot be told")),
            // No member's release known (none answered): only the new one is checked.
            (&[], Some("3.5.30"), Is(Same)),
        ];
        for (running, to, want) in table {
            let running: Vec<EtcdVersion> = running.iter().map(|r| v(r)).collect();
            let got = check(&running, to.map(v));
            let ok = match &want {
                Is(step) => got == *step,
                RefusedFor(text) => matches!(&got, Refused { why, .. } if why.contains(text)),
            };
            assert!(ok, "{running:?} -> {to:?}: {got:?}");
        }
    }

    #[test]
    fn a_refusal_names_the_allowed_path() {
        let Step::Refused { path, .. } = check(&[v("3.4.23")], Some(v("3.6.6"))) else {
            panic!()
        };
        assert!(path.contains("latest 3.5 patch"), "{path}");
        let Step::Refused { path, .. } = check(&[v("3.5.30")], Some(v("3.6.6"))) else {
            panic!()
        };
        assert!(path.contains("3.5.32 or a later 3.5 patch"), "{path}");
        assert!(matches!(
            check(&[v("3.6.6")], Some(v("3.5.30"))),
            Step::Refused { .. }
        ));
    }
}
