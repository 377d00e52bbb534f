//! The opt-in dead-peer policy (`heal.remove_dead_after`): which member, if any, the leader's
//! agent removes this interval. A pure function over what was observed, tested by tables.
//!
//! A member is removed only on two independent signals, never one (a timeout alone removes
//! members that are merely slow or rebooting): it has been unreachable for longer than the limit,
//! and discovery no longer lists it, or, when the operator chose the policy, a node that
//! discovery lists is waiting to join (etcd 3.4 blocks every add while a voter is down). And only
//! when the cluster keeps a healthy quorum without it.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberHealth {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub is_learner: bool,
    pub reachable: bool,
}

/// When each member was first seen unreachable.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    down_since: HashMap<u64, Instant>,
}

impl Tracker {
    pub(crate) fn update(&mut self, members: &[MemberHealth], now: Instant) {
        self.down_since
            .retain(|id, _| members.iter().any(|m| m.id == *id && !m.reachable));
        for m in members.iter().filter(|m| !m.reachable) {
            self.down_since.entry(m.id).or_insert(now);
        }
    }

    pub(crate) fn down_for(&self, id: u64, now: Instant) -> Option<Duration> {
        self.down_since
            .get(&id)
            .map(|t| now.saturating_duration_since(*t))
    }
}

/// What, besides being unreachable for the limit, makes a member dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SecondSignal {
    /// Gone from discovery (the default with SRV records: a rolling replacement).
    GoneFromDiscovery,
    /// Gone from discovery, or a discovered node waits to join (`heal.remove_dead_after` set).
    GoneOrJoinerWaiting,
}

/// The member to remove now and why, or `None`.
pub(crate) fn pick(
    members: &[MemberHealth],
    tracker: &Tracker,
    now: Instant,
    limit: Duration,
    my_id: u64,
    discovered_peer_urls: &BTreeSet<String>,
    second: SecondSignal,
) -> Option<(u64, String)> {
    let listed: BTreeSet<&String> = members.iter().flat_map(|m| m.peer_urls.iter()).collect();
    let waiting: Vec<&String> = discovered_peer_urls
        .iter()
        .filter(|u| !listed.contains(u))
        .collect();
    let mut candidates: Vec<&MemberHealth> = members
        .iter()
        .filter(|m| m.id != my_id && !m.reachable)
        .filter(|m| tracker.down_for(m.id, now).is_some_and(|d| d >= limit))
        .collect();
    // Learners first: removing one never touches the quorum.
    candidates.sort_by_key(|m| (!m.is_learner, m.id));
    for m in candidates {
        let gone_from_discovery = !m.peer_urls.iter().any(|u| discovered_peer_urls.contains(u));
        let joiner_counts = second == SecondSignal::GoneOrJoinerWaiting && !waiting.is_empty();
        if !gone_from_discovery && !joiner_counts {
            continue;
        }
        if !m.is_learner {
            let remaining: Vec<&MemberHealth> = members
                .iter()
                .filter(|x| !x.is_learner && x.id != m.id)
                .collect();
            let healthy = remaining.iter().filter(|x| x.reachable).count();
            if remaining.is_empty() || healthy < remaining.len() / 2 + 1 {
                continue;
            }
        }
        let why = if gone_from_discovery {
            "no longer in discovery".to_string()
        } else {
            format!(
                "{} waiting to join",
                waiting
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let down = tracker.down_for(m.id, now).unwrap_or_default();
        return Some((
            m.id,
            format!(
                "member {:x} ({}) unreachable for {}s and {why}",
                m.id,
                if m.name.is_empty() {
                    "unstarted"
                } else {
                    &m.name
                },
                down.as_secs()
            ),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: u64, reachable: bool, learner: bool) -> MemberHealth {
        MemberHealth {
            id,
            name: format!("n{id}"),
            peer_urls: vec![format!("https://10.0.0.{id}:2380")],
            is_learner: learner,
            reachable,
        }
    }

    fn urls(ids: &[u64]) -> BTreeSet<String> {
        ids.iter()
            .map(|i| format!("https://10.0.0.{i}:2380"))
            .collect()
    }

    /// (members, discovered peer URLs, when, expected removal)
    type Case = (Vec<MemberHealth>, BTreeSet<String>, Instant, Option<u64>);

    fn check(table: Vec<Case>, t0: Instant, second: SecondSignal) {
        let limit = Duration::from_secs(60);
        for (i, (members, discovered, now, want)) in table.into_iter().enumerate() {
            let mut tr = Tracker::default();
            tr.update(&members, t0);
            let got = pick(&members, &tr, now, limit, 1, &discovered, second).map(|(id, _)| id);
            assert_eq!(got, want, "{second:?} case {i}");
        }
    }

    #[test]
    fn default_rule_needs_the_member_gone_from_discovery() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(61);
        let three = || vec![m(1, true, false), m(2, true, false), m(3, false, false)];
        let table: Vec<Case> = vec![
            // A rolling replacement: 3 destroyed and out of DNS, 4 in DNS waiting: removed.
            (three(), urls(&[1, 2, 4]), later, Some(3)),
            // 3 unreachable but still in DNS (a reboot, a partition), 4 waiting: kept.
            (three(), urls(&[1, 2, 3, 4]), later, None),
            // Out of DNS but not down for the limit yet: kept.
            (
                three(),
                urls(&[1, 2, 4]),
                t0 + Duration::from_secs(59),
                None,
            ),
            // Out of DNS, down, but the two left would not hold a healthy quorum: kept.
            (
                vec![m(1, true, false), m(2, false, false), m(3, false, false)],
                urls(&[1]),
                later,
                None,
            ),
        ];
        check(table, t0, SecondSignal::GoneFromDiscovery);
    }

    #[test]
    fn removal_rules() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(61);
        // (members, discovered, now, expected removal)
        let table: Vec<Case> = vec![
            // Down long enough and gone from discovery: removed.
            (
                vec![m(1, true, false), m(2, true, false), m(3, false, false)],
                urls(&[1, 2]),
                later,
                Some(3),
            ),
            // Not down long enough.
            (
                vec![m(1, true, false), m(2, true, false), m(3, false, false)],
                urls(&[1, 2]),
                t0 + Duration::from_secs(30),
                None,
            ),
            // Still in discovery, nobody waiting: kept (it may come back).
            (
                vec![m(1, true, false), m(2, true, false), m(3, false, false)],
                urls(&[1, 2, 3]),
                later,
                None,
            ),
            // Still in discovery, but node 4 waits to join: removed to make room.
            (
                vec![m(1, true, false), m(2, true, false), m(3, false, false)],
                urls(&[1, 2, 3, 4]),
                later,
                Some(3),
            ),
            // Two of three down: removing one would leave 1 healthy of 2: no quorum, kept.
            (
                vec![m(1, true, false), m(2, false, false), m(3, false, false)],
                urls(&[1]),
                later,
                None,
            ),
            // Five members, two down: remove one, quorum of the four left (3) is healthy.
            (
                vec![
                    m(1, true, false),
                    m(2, true, false),
                    m(3, true, false),
                    m(4, false, false),
                    m(5, false, false),
                ],
                urls(&[1, 2, 3]),
                later,
                Some(4),
            ),
            // A dead learner goes first, quorum untouched.
            (
                vec![m(1, true, false), m(2, false, false), m(3, false, true)],
                urls(&[1]),
                later,
                Some(3),
            ),
            // Never ourselves.
            (
                vec![m(1, false, false), m(2, true, false), m(3, true, false)],
                urls(&[2, 3]),
                later,
                None,
            ),
        ];
        check(table, t0, SecondSignal::GoneOrJoinerWaiting);
    }

    #[test]
    fn tracker_forgets_members_that_come_back() {
        let t0 = Instant::now();
        let mut tr = Tracker::default();
        tr.update(&[m(2, false, false)], t0);
        tr.update(&[m(2, true, false)], t0 + Duration::from_secs(5));
        tr.update(&[m(2, false, false)], t0 + Duration::from_secs(10));
        assert_eq!(
            tr.down_for(2, t0 + Duration::from_secs(10)),
            Some(Duration::ZERO)
        );
    }
}
