//! The transactional outbox: events written in the transaction that caused them, then claimed,
//! delivered and pruned by relays.
//!
//! [`OutboxTx`] writes an event; [`OutboxStore`] is the relays' side (leases, delivery marks,
//! dead letters) and the operators' (counts, revival, pruning).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreResult;
use crate::domain::event::EventEnvelope;

/// One outbox row claimed by a relay.
#[derive(Clone, Debug)]
pub struct OutboxRow {
    /// Sequence number; delivery follows it.
    pub id: i64,
    /// The event.
    pub event: EventEnvelope,
    /// Failed deliveries of this event so far (an unreachable bus counts none).
    pub attempts: i32,
}

/// A claimed row a relay gives back after a failed delivery.
#[derive(Clone, Debug, PartialEq)]
pub struct GivenBack {
    /// The row.
    pub id: i64,
    /// Why it was not delivered.
    pub error: String,
    /// Counts one attempt against it: the event itself failed (not the bus, not an earlier
    /// event in the batch).
    pub attempted: bool,
    /// Set: it failed too often and is set aside as a dead letter.
    pub dead_at: Option<DateTime<Utc>>,
}

/// What the outbox holds right now.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxStats {
    /// Rows not yet delivered.
    pub pending: i64,
    /// Creation time of the oldest undelivered event.
    pub oldest_pending: Option<DateTime<Utc>>,
    /// Delivered rows still kept.
    pub sent: i64,
    /// Rows set aside after too many failed deliveries.
    pub dead: i64,
}

/// The outbox as relays and operators see it.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Claims up to `limit` undelivered outbox rows whose lease is free, leasing them to
    /// `relay` until `lease_until`. Concurrent relays never claim the same row.
    async fn claim_outbox(
        &self,
        relay: &str,
        limit: i64,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<Vec<OutboxRow>>;
    /// Extends to `lease_until` the leases `relay` still holds (claimed, neither delivered nor
    /// given back); answers how many.
    async fn renew_outbox_claims(
        &self,
        relay: &str,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<u64>;
    /// Records what a relay's batch did, in one transaction: `sent` rows delivered at `at`, and
    /// `given_back` rows released with their error (or set aside as dead letters), each only if
    /// `relay` still holds it. All or nothing, so a crash or a lost connection cannot leave part
    /// of a batch given back and the rest still leased: another relay would then publish a later
    /// event before an earlier one.
    async fn settle_outbox(
        &self,
        relay: &str,
        sent: &[i64],
        at: DateTime<Utc>,
        given_back: &[GivenBack],
    ) -> StoreResult<()>;
    /// Outbox rows set aside as dead letters, oldest first, with their last error.
    async fn dead_outbox(&self, limit: i64) -> StoreResult<Vec<(OutboxRow, Option<String>)>>;
    /// Puts a dead outbox row back in line with a fresh attempt count; false if it is not dead.
    async fn revive_outbox(&self, id: i64) -> StoreResult<bool>;
    /// Deletes delivered rows sent before `before`; returns how many.
    async fn prune_outbox(&self, before: DateTime<Utc>) -> StoreResult<u64>;
    /// Counts of the outbox.
    async fn outbox_stats(&self) -> StoreResult<OutboxStats>;
    /// When the oldest undelivered event (not set aside) occurred; one indexed read.
    async fn oldest_pending_outbox(&self) -> StoreResult<Option<DateTime<Utc>>>;
}

/// The outbox inside a write transaction.
#[async_trait]
pub trait OutboxTx: Send {
    /// Writes an event to the outbox.
    async fn insert_outbox(&mut self, event: &EventEnvelope) -> StoreResult<()>;
    /// Writes events to the outbox, in their order, in as few statements as the database's
    /// limit on bound values allows.
    async fn insert_outbox_all(&mut self, events: &[EventEnvelope]) -> StoreResult<()>;
}
