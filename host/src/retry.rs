//! The one retry policy of the project: exponential backoff with full jitter,
//! bounded by a number of attempts and by the time elapsed since the first one.
//!
//! Full jitter (sleep a uniform random time in `[0, min(max_delay, initial * 2^n)]`)
//! spreads the retries of many clients hitting the same throttled resource (a
//! Kinesis shard, an S3 prefix) instead of having them retry in lock-step.
//!
//! ```
//! # async fn demo() -> Result<(), std::io::Error> {
//! use sluice::retry::RetryPolicy;
//! let policy = RetryPolicy::default();
//! let value = policy
//!     .retry(|_attempt| async { Ok::<_, std::io::Error>(42) }, |_e| true)
//!     .await?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use serde::Deserialize;
use tokio::time::Instant;

use crate::config::units::Dur;

/// How to retry. `Deserialize` so a pipeline table can carry one
/// (`retry = { initial = "100ms", max_delay = "10s", max_attempts = 8 }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(from = "RetrySpec")]
pub struct RetryPolicy {
    /// Upper bound of the first delay.
    pub initial: Duration,
    /// Upper bound of any single delay.
    pub max_delay: Duration,
    /// Attempts in total, the first one included; `u32::MAX` means no limit.
    pub max_attempts: u32,
    /// No new attempt starts after this long since the first; `None`: no limit.
    pub max_elapsed: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            max_attempts: 10,
            max_elapsed: Some(Duration::from_secs(120)),
        }
    }
}

/// The TOML form: every field optional, durations as human strings.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetrySpec {
    initial: Option<Dur>,
    max_delay: Option<Dur>,
    max_attempts: Option<u32>,
    max_elapsed: Option<Dur>,
}

impl From<RetrySpec> for RetryPolicy {
    fn from(s: RetrySpec) -> Self {
        let d = RetryPolicy::default();
        RetryPolicy {
            initial: s.initial.map_or(d.initial, |x| x.0),
            max_delay: s.max_delay.map_or(d.max_delay, |x| x.0),
            max_attempts: s.max_attempts.unwrap_or(d.max_attempts).max(1),
            max_elapsed: s.max_elapsed.map(|x| x.0).or(d.max_elapsed),
        }
    }
}

impl RetryPolicy {
    pub const fn new(initial: Duration, max_delay: Duration, max_attempts: u32, max_elapsed: Option<Duration>) -> Self {
        Self { initial, max_delay, max_attempts, max_elapsed }
    }

    /// Retries until it succeeds: for conditions that always pass (throttling,
    /// a shard being resharded) where giving up would only stop the pipeline.
    pub const fn forever(initial: Duration, max_delay: Duration) -> Self {
        Self { initial, max_delay, max_attempts: u32::MAX, max_elapsed: None }
    }

    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    pub fn with_max_elapsed(mut self, d: Option<Duration>) -> Self {
        self.max_elapsed = d;
        self
    }

    /// The ceiling of the delay after failed attempt number `attempt` (1-based):
    /// `initial * 2^(attempt-1)`, capped at `max_delay`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        self.initial.saturating_mul(1u32 << exp).min(self.max_delay)
    }

    /// A full-jitter delay for failed attempt number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        if ceiling.is_zero() {
            return ceiling;
        }
        let nanos = rand::rng().random_range(0..=ceiling.as_nanos().min(u64::MAX as u128) as u64);
        Duration::from_nanos(nanos)
    }

    /// Stateless form for loops that keep their own counters: the delay
    /// before retry number `retries_so_far + 1`, or `None` when the policy
    /// allows no further attempt (`elapsed` since the first attempt).
    pub fn next_delay(&self, retries_so_far: u32, elapsed: Duration) -> Option<Duration> {
        let failures = retries_so_far.saturating_add(1);
        if failures >= self.max_attempts {
            return None;
        }
        let delay = self.delay(failures);
        match self.max_elapsed {
            Some(max) if elapsed + delay > max => None,
            _ => Some(delay),
        }
    }

    /// A fresh retry state; its clock starts now.
    pub fn start(&self) -> Backoff {
        Backoff { policy: *self, failures: 0, started: Instant::now() }
    }

    /// Runs `op` until it succeeds, fails with an error `retryable` rejects, or
    /// the policy is exhausted; returns the last error then. `op` gets the
    /// attempt number (1-based).
    pub async fn retry<T, E, F, Fut>(&self, mut op: F, retryable: impl Fn(&E) -> bool) -> Result<T, E>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut backoff = self.start();
        loop {
            match op(backoff.failures + 1).await {
                Ok(v) => return Ok(v),
                Err(e) if retryable(&e) => match backoff.next_delay() {
                    Some(d) => tokio::time::sleep(d).await,
                    None => return Err(e),
                },
                Err(e) => return Err(e),
            }
        }
    }
}

/// Retry state of one operation (or of one long-running loop, reset on success).
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: RetryPolicy,
    failures: u32,
    started: Instant,
}

impl Backoff {
    /// Records a failed attempt and returns how long to wait before the next
    /// one, or `None` when the policy allows no further attempt.
    pub fn next_delay(&mut self) -> Option<Duration> {
        let d = self.policy.next_delay(self.failures, self.started.elapsed());
        self.failures = self.failures.saturating_add(1);
        d
    }

    /// `next_delay`, then sleeps it. False when exhausted (nothing slept).
    pub async fn wait(&mut self) -> bool {
        match self.next_delay() {
            Some(d) => {
                tokio::time::sleep(d).await;
                true
            }
            None => false,
        }
    }

    /// After a success: the next failure starts again from the first delay and
    /// the elapsed-time budget restarts.
    pub fn reset(&mut self) {
        self.failures = 0;
        self.started = Instant::now();
    }

    /// Failed attempts since the start or the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_and_caps() {
        let p = RetryPolicy::new(Duration::from_millis(100), Duration::from_secs(1), 10, None);
        assert_eq!(p.ceiling(1), Duration::from_millis(100));
        assert_eq!(p.ceiling(2), Duration::from_millis(200));
        assert_eq!(p.ceiling(4), Duration::from_millis(800));
        assert_eq!(p.ceiling(5), Duration::from_secs(1));
        assert_eq!(p.ceiling(1000), Duration::from_secs(1));
    }

    #[test]
    fn delays_are_jittered_within_the_ceiling() {
        let p = RetryPolicy::new(Duration::from_millis(100), Duration::from_secs(1), 10, None);
        let delays: Vec<_> = (0..200).map(|_| p.delay(3)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(400)));
        // Full jitter: not all the same, and some well below the ceiling.
        assert!(delays.iter().any(|d| *d < Duration::from_millis(200)));
        assert!(delays.iter().any(|d| *d != delays[0]));
    }

    #[test]
    fn attempts_are_bounded() {
        let p = RetryPolicy::new(Duration::ZERO, Duration::ZERO, 3, None);
        let mut b = p.start();
        assert!(b.next_delay().is_some()); // after attempt 1
        assert!(b.next_delay().is_some()); // after attempt 2
        assert!(b.next_delay().is_none()); // attempt 3 was the last
        b.reset();
        assert!(b.next_delay().is_some());
        // The stateless form agrees.
        assert!(p.next_delay(0, Duration::ZERO).is_some());
        assert!(p.next_delay(1, Duration::ZERO).is_some());
        assert!(p.next_delay(2, Duration::ZERO).is_none());
        let q = p.with_max_attempts(100).with_max_elapsed(Some(Duration::from_secs(1)));
        assert!(q.next_delay(0, Duration::from_secs(2)).is_none());
    }

    #[tokio::test]
    async fn elapsed_is_bounded() {
        let p = RetryPolicy::new(Duration::from_millis(20), Duration::from_millis(20), u32::MAX, Some(Duration::from_millis(200)));
        let mut b = p.start();
        let mut n = 0;
        while b.wait().await {
            n += 1;
            assert!(n < 10_000, "must stop by elapsed time");
        }
        assert!(n >= 1);
        assert!(b.elapsed() <= Duration::from_millis(400));
    }

    #[tokio::test]
    async fn retry_stops_on_success_and_on_fatal_errors() {
        let p = RetryPolicy::new(Duration::from_millis(10), Duration::from_millis(10), 5, None);
        let r: Result<u32, &str> = p.retry(|n| async move { if n < 3 { Err("again") } else { Ok(n) } }, |_| true).await;
        assert_eq!(r, Ok(3));
        let mut calls = 0;
        let r: Result<(), &str> = p
            .retry(
                |_| {
                    calls += 1;
                    async { Err("fatal") }
                },
                |e| *e != "fatal",
            )
            .await;
        assert_eq!((r, calls), (Err("fatal"), 1));
        let r: Result<(), &str> = p.retry(|_| async { Err("again") }, |_| true).await;
        assert_eq!(r, Err("again"));
    }

    #[test]
    fn deserializes_with_defaults() {
        let p: RetryPolicy = toml::from_str("initial = \"50ms\"\nmax_attempts = 4").unwrap();
        assert_eq!(p.initial, Duration::from_millis(50));
        assert_eq!(p.max_attempts, 4);
        assert_eq!(p.max_delay, RetryPolicy::default().max_delay);
        assert!(toml::from_str::<RetryPolicy>("bogus = 1").is_err());
    }
}
