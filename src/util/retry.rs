//! The one backoff of every retry loop: doubling from `first` to `max`, plus a random jitter of
//! up to half the step (so that nodes started together do not retry in step), and never past a
//! deadline (so that a wait bounded by `discovery.timeout` ends when it says).

use std::time::{Duration, Instant};

/// A random duration up to `max`.
pub(crate) fn jitter(max: Duration) -> Duration {
    let mut b = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    max.mul_f64(f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX))
}

#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
    deadline: Option<Instant>,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            deadline: None,
            attempt: 0,
        }
    }

    /// Never sleep past `deadline`.
    pub(crate) fn until(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    pub(crate) fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// The next pause: the step, plus jitter, cut at the deadline.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self
            .first
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt += 1;
        let delay = step + jitter(step / 2);
        match self.deadline {
            Some(d) => delay.min(d.saturating_duration_since(Instant::now())),
            None => delay,
        }
    }

    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_with_bounded_jitter_and_stops_at_the_deadline() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
        let steps = [500u64, 1000, 2000, 4000, 5000, 5000];
        for s in steps {
            let d = b.next_delay();
            let s = Duration::from_millis(s);
            assert!(d >= s && d <= s + s / 2, "{d:?} for a step of {s:?}");
        }
        let mut b = Backoff::new(Duration::from_secs(3), Duration::from_secs(3))
            .until(Instant::now() + Duration::from_millis(200));
        assert!(b.next_delay() <= Duration::from_millis(200));
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).until(Instant::now());
        assert!(b.expired());
    }
}
