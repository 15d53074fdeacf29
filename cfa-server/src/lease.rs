//! Leases renewed while their work is in progress.
//!
//! A worker that claims rows — the outbox relay, the notification sender — leases them for a
//! short while (`outbox.lease_seconds`, `notifications.lease_seconds`), so that when it dies
//! another worker takes them over within seconds rather than minutes. Work that may outlast the
//! lease (a publish waiting on a slow broker, an SMTP send with its 10 s timeout) must not lose
//! its rows to another worker meanwhile: [`renewing`] runs it with a heartbeat beside it that
//! renews the lease every third of its length, so two heartbeats can be missed before the lease
//! runs out. When the process dies, so does the heartbeat, and the lease runs out on its own.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use crate::storage::StoreError;

/// The shortest time between two renewals, whatever the lease.
const MIN_RENEWAL_INTERVAL: Duration = Duration::from_millis(10);

/// How often a lease of `lease` is renewed: a third of it.
pub fn renewal_interval(lease: Duration) -> Duration {
    (lease / 3).max(MIN_RENEWAL_INTERVAL)
}

/// Runs `work` and, while it runs, calls `renew` every third of `lease` (the first time a third
/// of the lease after the start: work that finishes sooner renews nothing). A failed renewal
/// is logged and the work goes on; the next renewal may succeed before the lease runs out.
pub async fn renewing<T, R, F>(lease: Duration, work: impl Future<Output = T>, renew: R) -> T
where
    R: FnMut() -> F,
    F: Future<Output = Result<(), StoreError>>,
{
    tokio::select! {
        // The work first: once it is done, no renewal is due any more.
        biased;
        done = work => done,
        never = heartbeat(renewal_interval(lease), renew) => match never {},
    }
}

/// Calls `renew` every `every`, forever.
async fn heartbeat<R, F>(every: Duration, mut renew: R) -> Infallible
where
    R: FnMut() -> F,
    F: Future<Output = Result<(), StoreError>>,
{
    let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(e) = renew().await {
            tracing::warn!(error = %e, "renewing a lease failed; the work goes on");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use tokio::sync::Notify;

    use super::*;

    #[tokio::test]
    async fn a_lease_is_renewed_while_its_work_runs_even_after_a_failed_renewal() {
        let renewals = Arc::new(AtomicU32::new(0));
        let enough = Arc::new(Notify::new());
        let work = {
            let enough = enough.clone();
            async move {
                enough.notified().await;
                "sent"
            }
        };
        let renew = || {
            let n = renewals.fetch_add(1, Ordering::SeqCst) + 1;
            if n >= 3 {
                enough.notify_one();
            }
            async move {
                if n == 1 {
                    Err(StoreError::Unavailable("the database blinked".into()))
                } else {
                    Ok(())
                }
            }
        };
        // The work can only finish through the third renewal: the deadline is a hang guard,
        // not a measurement.
        let done = tokio::time::timeout(
            Duration::from_secs(30),
            renewing(Duration::from_millis(30), work, renew),
        )
        .await
        .expect("the heartbeat renews the lease until the work is done");
        assert_eq!(done, "sent");
        assert_eq!(renewals.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn work_that_ends_before_a_renewal_is_due_renews_nothing() {
        let renewals = AtomicU32::new(0);
        let done = renewing(Duration::from_secs(15), async { 7 }, || {
            renewals.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        })
        .await;
        assert_eq!(done, 7);
        assert_eq!(renewals.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_lease_is_renewed_three_times_per_term() {
        assert_eq!(
            renewal_interval(Duration::from_secs(15)),
            Duration::from_secs(5)
        );
        assert_eq!(
            renewal_interval(Duration::ZERO),
            MIN_RENEWAL_INTERVAL,
            "never a busy loop"
        );
    }
}
