//! Domain rules, free of HTTP and SQL: money, donor e-mails, campaigns, donations and the event
//! envelope.
//!
//! # Layout
//! - [`money`]: currencies and exact minor-unit parsing.
//! - [`email`]: the masked [`email::DonorEmail`].
//! - [`campaign`]: campaigns and their status.
//! - [`donation`]: donations and their life cycle.
//! - [`event`]: the outbox event envelope and the typed events inside it.
//! - [`payment`]: payments, their state machine and provider events.

/// Serialises a type as its wire spelling (`as_str`) and reads it back with its `parse`, so
/// events carry `"COMPLETED"` and `"USD"`, as the API does.
macro_rules! serde_as_str {
    ($type:ty, $as_str:expr) => {
        impl serde::Serialize for $type {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str($as_str(self))
            }
        }

        impl<'de> serde::Deserialize<'de> for $type {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                <$type>::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

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
