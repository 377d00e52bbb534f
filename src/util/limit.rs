//! Caps on the connections a server handles at once, in total and per source address, and a
//! throttle for the log lines about what was refused.
//!
//! Why both caps: the total bounds the server's file descriptors and memory whatever arrives
//! (without it, a flood of raw connections used every descriptor of the process and broke
//! unrelated work: reading files, connecting to etcd); the per-source cap keeps one client, or
//! one attacking host, from taking every slot, so that the others are still served. A
//! connection over either cap is closed at once, which costs the server next to nothing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The server handles its total number of connections already.
    Total,
    /// This source address holds its share already.
    PerSource,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::Total => "too many connections in total",
            Refusal::PerSource => "too many connections from this address",
        })
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// Connections admitted at once: at most `total`, at most `per_source` from one source.
#[derive(Debug, Clone)]
pub(crate) struct ConnLimiter {
    total: usize,
    per_source: usize,
    counts: Arc<Mutex<Counts>>,
}

/// One admitted connection; its slot is given back when this is dropped.
#[derive(Debug)]
pub(crate) struct Permit {
    source: IpAddr,
    counts: Arc<Mutex<Counts>>,
}

/// The source a connection is counted under: its address, an IPv4-mapped IPv6 address as the
/// IPv4 one. Not an IPv6 /64: the members of a cluster often share one, and would then share one
/// member's share (an attacker who rotates addresses within a /64 is still held by the total).
fn source_key(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

impl ConnLimiter {
    pub(crate) fn new(total: usize, per_source: usize) -> Self {
        ConnLimiter {
            total,
            per_source,
            counts: Arc::default(),
        }
    }

    /// Admit a connection from `ip`, or say which cap it would exceed.
    pub(crate) fn try_acquire(&self, ip: IpAddr) -> Result<Permit, Refusal> {
        let source = source_key(ip);
        let mut c = self.counts.lock().expect("poisoned");
        if c.total >= self.total {
            return Err(Refusal::Total);
        }
        let n = c.by_source.entry(source).or_insert(0);
        if *n >= self.per_source {
            return Err(Refusal::PerSource);
        }
        *n += 1;
        c.total += 1;
        Ok(Permit {
            source,
            counts: self.counts.clone(),
        })
    }

    /// Connections admitted and not yet finished.
    #[cfg(test)]
    pub(crate) fn in_use(&self) -> usize {
        self.counts.lock().expect("poisoned").total
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                c.by_source.remove(&self.source);
            }
        }
    }
}

/// At most one report per `every` about a recurring event: a flood of refused connections must
/// not become a flood of log lines. `note` counts an event and, when a report is due, returns how
/// many happened since the last one (this one included).
#[derive(Debug)]
pub(crate) struct Throttle {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    pub(crate) fn new(every: Duration) -> Self {
        Throttle {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    pub(crate) fn note(&self) -> Option<u64> {
        self.note_at(Instant::now())
    }

    fn note_at(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.1 += 1;
        let due =
            s.0.is_none_or(|last| now.duration_since(last) >= self.every);
        if due {
            let n = s.1;
            *s = (Some(now), 0);
            Some(n)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn caps_per_source_and_in_total_and_gives_slots_back() {
        let l = ConnLimiter::new(5, 2);
        let a1 = l.try_acquire(ip("10.0.0.1")).unwrap();
        let _a2 = l.try_acquire(ip("10.0.0.1")).unwrap();
        // The attacker's third connection is refused; another address is still served.
        assert_eq!(
            l.try_acquire(ip("10.0.0.1")).unwrap_err(),
            Refusal::PerSource
        );
        let _b1 = l.try_acquire(ip("10.0.0.2")).unwrap();
        let _b2 = l.try_acquire(ip("10.0.0.2")).unwrap();
        let _c1 = l.try_acquire(ip("10.0.0.3")).unwrap();
        assert_eq!(l.in_use(), 5);
        // Full: refused whoever asks, also a fresh address.
        assert_eq!(l.try_acquire(ip("10.0.0.4")).unwrap_err(), Refusal::Total);
        // A finished connection gives its slot back, to its source and to the total.
        drop(a1);
        assert_eq!(l.in_use(), 4);
        let _a3 = l.try_acquire(ip("10.0.0.1")).unwrap();
        assert_eq!(l.try_acquire(ip("10.0.0.9")).unwrap_err(), Refusal::Total);
    }

    #[test]
    fn mapped_ipv4_counts_as_ipv4_and_ipv6_neighbours_apart() {
        let l = ConnLimiter::new(100, 1);
        let _a = l.try_acquire(ip("10.1.2.3")).unwrap();
        assert_eq!(
            l.try_acquire(ip("::ffff:10.1.2.3")).unwrap_err(),
            Refusal::PerSource
        );
        // Members on one /64 are counted each on its own.
        let _b = l.try_acquire(ip("2001:db8:1:2::11")).unwrap();
        let _c = l.try_acquire(ip("2001:db8:1:2::12")).unwrap();
        assert_eq!(
            l.try_acquire(ip("2001:db8:1:2::11")).unwrap_err(),
            Refusal::PerSource
        );
    }

    #[test]
    fn slots_come_back_when_connections_end_on_other_threads() {
        let l = ConnLimiter::new(8, 8);
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let p = l.try_acquire(ip("10.0.0.1")).unwrap();
                std::thread::spawn(move || drop(p))
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(l.in_use(), 0);
        assert!(l.try_acquire(ip("10.0.0.1")).is_ok());
    }

    #[test]
    fn throttle_reports_once_per_interval_with_the_count() {
        let t = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(t.note_at(t0), Some(1), "the first event is reported");
        for i in 1..1000 {
            assert_eq!(t.note_at(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(t.note_at(t0 + Duration::from_secs(10)), Some(1000));
        assert_eq!(t.note_at(t0 + Duration::from_secs(11)), None);
    }
}
