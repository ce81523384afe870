//! Per-model request figures for `/metrics`: requests by status, latency and queue wait.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// The upper bounds (seconds) of every histogram's buckets: from a proxied token to a cold load.
pub const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// A Prometheus histogram: counts per bucket (not cumulative), sum and count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    pub buckets: [u64; BUCKETS.len()],
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&mut self, value: Duration) {
        let seconds = value.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.buckets[i] += 1;
        }
        self.sum += seconds;
        self.count += 1;
    }

    /// `(le, cumulative count)` for every bucket, then `+Inf`.
    pub fn cumulative(&self) -> impl Iterator<Item = (String, u64)> + '_ {
        let mut total = 0;
        BUCKETS
            .iter()
            .zip(self.buckets)
            .map(move |(bound, n)| {
                total += n;
                (bound.to_string(), total)
            })
            .chain(std::iter::once(("+Inf".to_string(), self.count)))
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// Answers by HTTP status (hub's own refusals included).
    pub requests: BTreeMap<u16, u64>,
    /// From the request's arrival to the end of its answer's body.
    pub latency: Histogram,
    /// How long admitted requests waited for their model.
    pub queue_wait: Histogram,
}

#[derive(Debug, Default)]
pub struct Stats(Mutex<Figures>);

impl Stats {
    pub fn answered(&self, status: u16) {
        *self
            .0
            .lock()
            .expect("stats lock")
            .requests
            .entry(status)
            .or_default() += 1;
    }

    pub fn finished(&self, took: Duration) {
        self.0.lock().expect("stats lock").latency.observe(took);
    }

    pub fn waited(&self, waited: Duration) {
        self.0
            .lock()
            .expect("stats lock")
            .queue_wait
            .observe(waited);
    }

    pub fn figures(&self) -> Figures {
        self.0.lock().expect("stats lock").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_with_every_observation() {
        let mut h = Histogram::default();
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_millis(40));
        h.observe(Duration::from_secs(1000));
        let cumulative: Vec<(String, u64)> = h.cumulative().collect();
        assert_eq!(cumulative[0], ("0.005".to_string(), 1));
        assert_eq!(cumulative[3], ("0.05".to_string(), 2));
        assert_eq!(cumulative.last().unwrap(), &("+Inf".to_string(), 3));
        assert_eq!(h.count, 3);
    }
}
