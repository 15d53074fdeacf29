//! The services: each business rule of the platform, with the transaction it runs in.
//!
//! # Layout
//! - [`payments`]: intents, provider webhooks, refunds, reconciliation, the sandbox provider.
//! - [`totals`]: the live totals read model, its cache and its refresh.
//! - [`notifications`]: receipts and notices, their senders, donor history links.

pub mod notifications;
pub mod payments;
pub mod totals;

use crate::config::Role;

/// One event consumer: the role whose processes run it, its name (its inbox key and, with
/// RabbitMQ, its queue) and the topics it listens to (the part of an event type before the dot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsumerSpec {
    /// The role that runs it.
    pub role: Role,
    /// Its inbox and queue name.
    pub name: &'static str,
    /// The topics it listens to.
    pub topics: &'static [&'static str],
}

/// Every consumer of the platform, written once: the buses declare their queues from it, the
/// metrics report their lag and dead letters from it, start-up runs the ones of its roles.
pub const CONSUMERS: &[ConsumerSpec] = &[
    ConsumerSpec {
        role: Role::Donation,
        name: "donation-status",
        topics: &["payment"],
    },
    ConsumerSpec {
        role: Role::Totals,
        name: "totals",
        topics: &["donation", "campaign"],
    },
    ConsumerSpec {
        role: Role::Notification,
        name: "notifications",
        topics: &["donation", "payment"],
    },
];
