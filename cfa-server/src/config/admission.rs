//! `[admission]`: how many requests that need the database run at once, and how many wait for
//! their turn, before the platform says it is overloaded.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, require_at_most, require_positive};

/// `[admission]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionSettings {
    /// Requests that need the database running at once; `0` (the default) means
    /// `database.max_connections` on PostgreSQL, so the pool is never raced for, and four times
    /// that on SQLite, whose writes wait for the one writer connection in a queue of their own
    /// (never for the pool) and share commits: the more of them in flight, the fewer commits.
    pub max_in_flight: usize,
    /// Requests waiting for their turn, first come first served; one more is refused at once
    /// with `503 overloaded`.
    pub max_queued: usize,
    /// Longest a request waits in the queue before `503 overloaded`, in seconds; below
    /// `server.request_timeout_seconds`, so the answer says "overloaded", not "timed out", and by
    /// default below the gateway's `gateway.timeout_ms` (10 s), so a queued request behind the
    /// gateway gets its answer rather than the gateway's time-out.
    pub queue_timeout_seconds: u64,
    /// The `Retry-After` sent with `503 overloaded`, in seconds.
    pub retry_after_seconds: u64,
    /// New donations wait while the oldest event not yet delivered to the consumers is older
    /// than this, in seconds, and are refused `503 overloaded` if it lasts until
    /// `queue_timeout_seconds`; `0` (the default) takes every donation however far behind the
    /// event pipeline is ("take the money, count it late").
    pub max_event_lag_seconds: u64,
}

impl Default for AdmissionSettings {
    fn default() -> Self {
        AdmissionSettings {
            max_in_flight: 0,
            max_queued: 10_000,
            queue_timeout_seconds: 8,
            retry_after_seconds: 2,
            max_event_lag_seconds: 0,
        }
    }
}

impl AdmissionSettings {
    /// How far behind the event pipeline may be before new donations wait; `None` when they
    /// never do.
    pub fn max_event_lag(&self) -> Option<Duration> {
        (self.max_event_lag_seconds > 0).then(|| Duration::from_secs(self.max_event_lag_seconds))
    }

    /// The queue's deadline.
    pub fn queue_timeout(&self) -> Duration {
        Duration::from_secs(self.queue_timeout_seconds)
    }

    /// Requests running at once, given the pool's size and whether the database is SQLite.
    pub fn in_flight(&self, pool: u32, sqlite: bool) -> usize {
        match self.max_in_flight {
            0 if sqlite => 4 * pool.max(1) as usize,
            0 => pool.max(1) as usize,
            n => n,
        }
    }

    /// Checks the ranges, and that the queue gives up before the request does.
    pub fn validate(&self, request_timeout_seconds: u64) -> Result<(), ConfigError> {
        require_positive(&[
            (
                "admission.queue_timeout_seconds",
                self.queue_timeout_seconds,
            ),
            ("admission.retry_after_seconds", self.retry_after_seconds),
        ])?;
        require_at_most(&[(
            "admission.retry_after_seconds",
            self.retry_after_seconds,
            3_600,
        )])?;
        if self.queue_timeout_seconds >= request_timeout_seconds {
            return Err(ConfigError(format!(
                "admission.queue_timeout_seconds ({}) must be below server.request_timeout_seconds \
                 ({request_timeout_seconds}), so a queued request is told it may retry",
                self.queue_timeout_seconds
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_must_give_up_before_the_request_does() {
        let settings = AdmissionSettings {
            queue_timeout_seconds: 30,
            ..AdmissionSettings::default()
        };
        let err = settings.validate(30).expect_err("refused");
        assert!(
            err.to_string().contains("admission.queue_timeout_seconds"),
            "{err}"
        );
        AdmissionSettings::default()
            .validate(30)
            .expect("the defaults pass");
    }

    #[test]
    fn in_flight_follows_the_pool_unless_set() {
        assert_eq!(AdmissionSettings::default().in_flight(16, false), 16);
        assert_eq!(AdmissionSettings::default().in_flight(16, true), 64);
        let set = AdmissionSettings {
            max_in_flight: 3,
            ..AdmissionSettings::default()
        };
        assert_eq!(set.in_flight(16, false), 3);
        assert_eq!(set.in_flight(16, true), 3);
    }
}
