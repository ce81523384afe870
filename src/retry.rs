//! Per-model retry delays: exponential with jitter, capped, reset on success.
//!
//! The one place that knows the backoff crate (`backon`, the maintained successor of the
//! unmaintained `backoff`); the rest of hub sees an iterator of delays with `reset`.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// The first retry waits about this long (plus up to 100% jitter).
pub const MIN_DELAY: Duration = Duration::from_millis(500);
/// No retry waits longer than this (plus jitter).
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// The delays before successive retries of one model's failing action.
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(MIN_DELAY, MAX_DELAY)
    }
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        let builder = ExponentialBuilder::new()
            .with_min_delay(min)
            .with_max_delay(max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        Backoff {
            delays: builder.build(),
            builder,
        }
    }

    /// Starts again from the shortest delay, after a success.
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
    }
}

impl Iterator for Backoff {
    type Item = Duration;

    /// Never ends: a failing model keeps retrying at the capped interval.
    fn next(&mut self) -> Option<Duration> {
        Some(self.delays.next().unwrap_or(MAX_DELAY))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<Duration> = backoff.by_ref().take(8).collect();
        // Jitter adds up to 100%, so each delay lies in [base, 2 * base].
        let bases = [100, 200, 400, 800, 1000, 1000, 1000, 1000];
        for (delay, base) in delays.iter().zip(bases) {
            let base = Duration::from_millis(base);
            assert!(
                *delay >= base && *delay <= base * 2,
                "{delay:?} vs {base:?}"
            );
        }
        backoff.reset();
        let first = backoff.next().unwrap();
        assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(200));
    }
}
