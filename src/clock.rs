//! The loop's clock: wall time derived from tokio's, so tests with paused time control both.

use tokio::time::Instant;

use crate::observed::Time;

/// Wall-clock time derived from tokio's clock, so tests with paused time control both.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    instant: Instant,
    wall: Time,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            instant: Instant::now(),
            wall: time::OffsetDateTime::now_utc(),
        }
    }

    pub fn now(&self) -> Time {
        self.wall + (Instant::now() - self.instant)
    }

    pub fn instant_at(&self, at: Time) -> Instant {
        let offset = at - self.wall;
        if offset.is_negative() {
            self.instant
        } else {
            self.instant + offset.unsigned_abs()
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
