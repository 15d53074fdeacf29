//! Domain rules, free of HTTP and SQL: money, donor e-mails, campaigns, donations and the event
//! envelope.
//!
//! # Layout
//! - [`money`]: currencies and exact minor-unit parsing.
//! - [`email`]: the masked [`email::DonorEmail`].
//! - [`campaign`]: campaigns and their status.
//! - [`donation`]: donations and their life cycle.
//! - [`event`]: the outbox event envelope.
//! - [`payment`]: payments, their state machine and provider events.

pub mod campaign;
pub mod donation;
pub mod email;
pub mod event;
pub mod money;
pub mod payment;

/// The timestamp the platform records: UTC, truncated to microseconds so that every backend
/// stores exactly what it was given and a read-back compares equal.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::{DurationRound, TimeDelta};
    let now = chrono::Utc::now();
    now.duration_trunc(TimeDelta::microseconds(1))
        .unwrap_or(now)
}
