//! The services: each business rule of the platform, with the transaction it runs in.
//!
//! A service takes a command (plain data, already parsed from the wire) and the store or the
//! transaction to work in; it applies the domain's rules, writes the change and the event that
//! announces it to the outbox in that transaction, and answers with the result or its own error
//! enum. It knows nothing of HTTP: handlers translate to and from it, and consumers call it too.
//!
//! # Layout
//! - [`campaigns`]: creating and updating campaigns.
//! - [`donations`]: creating donations, the operator's override, the donation-status consumer.
//! - [`payments`]: intents, provider webhooks, refunds, reconciliation, the sandbox provider.
//! - [`totals`]: the live totals read model, its cache and its refresh.
//! - [`live`]: the broadcast channels that carry changed totals to the pages' viewers.
//! - [`notifications`]: receipts and notices, their senders, donor history links.

pub mod campaigns;
pub mod donations;
pub mod live;
pub mod notifications;
pub mod payments;
pub mod totals;
pub mod totals_cache;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::config::Role;
use crate::domain::event::{DomainEvent, EventEnvelope};
use crate::messaging::consumer::Handler;
use crate::storage::Store;
use notifications::HistoryLinks;
use totals::TotalsCache;

/// The outbox envelope of `event`, which happened at `at`; it continues the trace of the span
/// writing it (a request's, or a consumer's reacting to an earlier event).
pub fn outbox_event(event: DomainEvent, at: DateTime<Utc>) -> EventEnvelope {
    EventEnvelope::new(&event, at, crate::telemetry::current_traceparent())
}

/// What the consumers are built from.
#[derive(Clone)]
pub struct ConsumerDeps {
    /// The database.
    pub store: Arc<dyn Store>,
    /// The totals cache the totals consumer invalidates.
    pub totals_cache: Arc<dyn TotalsCache>,
    /// The viewers the totals consumer tells of each change.
    pub live: Arc<live::LiveTotals>,
    /// Signs the history links in notices.
    pub history_links: HistoryLinks,
    /// Wakes the notification sender after a notice is queued.
    pub mail_wake: Arc<Notify>,
    /// Who may be written to, and how often.
    pub notice_policy: notifications::NoticePolicy,
}

/// One event consumer: the role whose processes run it, its name (its inbox key and, with
/// RabbitMQ, its queue), the topics it listens to (the part of an event type before the dot)
/// and how to build it.
#[derive(Clone, Copy, Debug)]
pub struct ConsumerSpec {
    /// The role that runs it.
    pub role: Role,
    /// Its inbox and queue name.
    pub name: &'static str,
    /// The topics it listens to.
    pub topics: &'static [&'static str],
    /// Builds it.
    pub build: fn(&ConsumerDeps) -> Arc<dyn Handler>,
}

/// Every consumer of the platform, written once: the buses declare their queues from it, the
/// metrics report their lag and dead letters from it, start-up runs the ones of its roles.
pub const CONSUMERS: &[ConsumerSpec] = &[
    donations::STATUS_CONSUMER,
    totals::CONSUMER,
    notifications::CONSUMER,
];
