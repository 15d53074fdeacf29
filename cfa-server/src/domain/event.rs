//! The events every state change writes to the outbox (SPEC §4): the envelope the bus carries,
//! and the typed events inside it, shared by the services that write them and the consumers that
//! read them, so a field is named in one place.
//!
//! An event's payload is a snapshot of its aggregate after the change. Its type (`donation.
//! completed`, `payment.refunded`, …) says what happened; [`EventEnvelope::decode`] turns an
//! envelope back into a [`DomainEvent`], and an event of a type no consumer knows decodes to an
//! error the consumer can skip.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::campaign::{Campaign, CampaignStatus};
use super::donation::{Donation, DonationStatus};
use super::money::Currency;
use super::payment::{Payment, PaymentStatus};

/// Trace context carried with an event so one trace spans request → outbox → consumer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TraceContext {
    /// W3C `traceparent` of the request that caused the event, if it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// One domain event, as written to the outbox and published on the bus.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// Unique id; consumers deduplicate on it.
    pub event_id: Uuid,
    /// Dotted type, e.g. `donation.created`.
    pub event_type: String,
    /// The kind of aggregate it concerns, e.g. `donation`.
    pub aggregate_type: String,
    /// The aggregate's id.
    pub aggregate_id: String,
    /// When the change was committed.
    pub occurred_at: DateTime<Utc>,
    /// The aggregate's version after the change.
    pub version: i64,
    /// Trace context of the causing request.
    #[serde(default)]
    pub trace_context: TraceContext,
    /// Event-specific data.
    pub payload: Value,
}

/// An envelope whose type or payload is not one of the platform's events.
#[derive(Debug, thiserror::Error)]
#[error("event {event_type}: {reason}")]
pub struct UnknownEvent {
    /// The envelope's type.
    pub event_type: String,
    /// What did not fit.
    pub reason: String,
}

impl EventEnvelope {
    /// The envelope of `event`, with a fresh id, continuing the trace `traceparent` names (the
    /// span that wrote it: a request's, or a consumer's reacting to an event).
    pub fn new(
        event: &DomainEvent,
        occurred_at: DateTime<Utc>,
        traceparent: Option<String>,
    ) -> EventEnvelope {
        let (aggregate_type, aggregate_id, version) = match event {
            DomainEvent::Donation(e) => ("donation", e.snapshot.donation_id, e.snapshot.version),
            DomainEvent::Payment(e) => ("payment", e.snapshot.payment_id, e.snapshot.version),
            DomainEvent::Campaign(e) => ("campaign", e.snapshot.campaign_id, e.version),
        };
        EventEnvelope {
            event_id: Uuid::new_v4(),
            event_type: event.event_type().to_string(),
            aggregate_type: aggregate_type.to_string(),
            aggregate_id: aggregate_id.to_string(),
            occurred_at,
            version,
            trace_context: TraceContext { traceparent },
            payload: event.payload(),
        }
    }

    /// The exchange-like topic the event belongs to: the part of its type before the first dot.
    pub fn topic(&self) -> &str {
        self.event_type
            .split_once('.')
            .map_or(self.event_type.as_str(), |(topic, _)| topic)
    }

    fn payload<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.payload)
    }

    /// The typed event inside.
    pub fn decode(&self) -> Result<DomainEvent, UnknownEvent> {
        let unknown = |reason: String| UnknownEvent {
            event_type: self.event_type.clone(),
            reason,
        };
        let (topic, change) = self
            .event_type
            .split_once('.')
            .ok_or_else(|| unknown("no topic".into()))?;
        let event = match topic {
            "donation" => DonationChange::parse(change).map(|kind| {
                self.payload()
                    .map(|snapshot| DomainEvent::Donation(DonationEvent { kind, snapshot }))
            }),
            "payment" => PaymentStatus::parse(change).ok().map(|kind| {
                self.payload()
                    .map(|snapshot| DomainEvent::Payment(PaymentEvent { kind, snapshot }))
            }),
            "campaign" => CampaignChange::parse(change).map(|kind| {
                self.payload().map(|snapshot| {
                    DomainEvent::Campaign(CampaignEvent {
                        kind,
                        version: self.version,
                        snapshot,
                    })
                })
            }),
            _ => None,
        };
        event
            .ok_or_else(|| unknown("not an event of this platform".into()))?
            .map_err(|e| unknown(format!("payload: {e}")))
    }
}

/// Every event the platform writes.
#[derive(Clone, Debug, PartialEq)]
pub enum DomainEvent {
    /// A donation changed.
    Donation(DonationEvent),
    /// A payment changed.
    Payment(PaymentEvent),
    /// A campaign changed.
    Campaign(CampaignEvent),
}

impl DomainEvent {
    /// The dotted type, e.g. `payment.captured`.
    pub fn event_type(&self) -> &'static str {
        match self {
            DomainEvent::Donation(e) => e.kind.event_type(),
            DomainEvent::Payment(e) => e.kind.event_type(),
            DomainEvent::Campaign(e) => e.kind.event_type(),
        }
    }

    fn payload(&self) -> Value {
        let value = match self {
            DomainEvent::Donation(e) => serde_json::to_value(&e.snapshot),
            DomainEvent::Payment(e) => serde_json::to_value(&e.snapshot),
            DomainEvent::Campaign(e) => serde_json::to_value(&e.snapshot),
        };
        // Plain structs of strings and numbers always serialise.
        value.unwrap_or(Value::Null)
    }
}

/// What happened to a donation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DonationChange {
    /// It was created, `PENDING`.
    Created,
    /// Its payment was captured in full.
    Completed,
    /// Its payment failed.
    Failed,
    /// It was refunded in full.
    Refunded,
    /// Part of it was refunded; it stays `COMPLETED`.
    PartiallyRefunded,
}

impl DonationChange {
    /// The change that brings a donation to `status`.
    pub fn reaching(status: DonationStatus) -> DonationChange {
        match status {
            DonationStatus::Pending => DonationChange::Created,
            DonationStatus::Completed => DonationChange::Completed,
            DonationStatus::Failed => DonationChange::Failed,
            DonationStatus::Refunded => DonationChange::Refunded,
        }
    }

    /// The dotted event type.
    pub fn event_type(self) -> &'static str {
        match self {
            DonationChange::Created => "donation.created",
            DonationChange::Completed => "donation.completed",
            DonationChange::Failed => "donation.failed",
            DonationChange::Refunded => "donation.refunded",
            DonationChange::PartiallyRefunded => "donation.partially_refunded",
        }
    }

    fn parse(change: &str) -> Option<DonationChange> {
        Some(match change {
            "created" => DonationChange::Created,
            "completed" => DonationChange::Completed,
            "failed" => DonationChange::Failed,
            "refunded" => DonationChange::Refunded,
            "partially_refunded" => DonationChange::PartiallyRefunded,
            _ => return None,
        })
    }
}

/// A donation event: what happened, and the donation after it.
#[derive(Clone, Debug, PartialEq)]
pub struct DonationEvent {
    /// What happened.
    pub kind: DonationChange,
    /// The donation after it.
    pub snapshot: DonationSnapshot,
}

impl DonationEvent {
    /// The event announcing that `donation` reached its status.
    pub fn reached(donation: &Donation) -> DonationEvent {
        DonationEvent::of(DonationChange::reaching(donation.status), donation)
    }

    /// The event of `kind` about `donation`.
    pub fn of(kind: DonationChange, d: &Donation) -> DonationEvent {
        DonationEvent {
            kind,
            snapshot: DonationSnapshot {
                donation_id: d.id,
                campaign_id: d.campaign_id,
                donor_email: d.donor_email.as_str().to_string(),
                amount_minor: d.amount_minor,
                refunded_minor: d.refunded_minor,
                currency: d.currency,
                status: d.status,
                payment_intent_id: d.payment_intent_id.clone(),
                version: d.version,
            },
        }
    }
}

/// A donation as its events carry it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DonationSnapshot {
    /// The donation.
    pub donation_id: Uuid,
    /// Its campaign.
    pub campaign_id: Uuid,
    /// Its donor, normalised.
    pub donor_email: String,
    /// Its amount in minor units.
    pub amount_minor: i64,
    /// Refunded so far, minor units.
    #[serde(default)]
    pub refunded_minor: i64,
    /// Its currency.
    pub currency: Currency,
    /// Its status after the change.
    pub status: DonationStatus,
    /// The intent paying for it, once there is one.
    pub payment_intent_id: Option<String>,
    /// Its version after the change.
    pub version: i64,
}

/// A payment event: the status it reached (`REFUNDED` for every refund, partial ones included),
/// and the payment after it.
#[derive(Clone, Debug, PartialEq)]
pub struct PaymentEvent {
    /// What happened: the status the event is named after.
    pub kind: PaymentStatus,
    /// The payment after it.
    pub snapshot: PaymentSnapshot,
}

impl PaymentEvent {
    /// The event announcing that `p` moved from `old`; a refund names its id and amount (and is
    /// a `payment.refunded` event even when the payment stays `CAPTURED`).
    pub fn moved(old: PaymentStatus, p: &Payment, refund: Option<(&str, i64)>) -> PaymentEvent {
        PaymentEvent {
            kind: if refund.is_some() {
                PaymentStatus::Refunded
            } else {
                p.status
            },
            snapshot: PaymentSnapshot {
                payment_id: p.id,
                payment_intent_id: p.payment_intent_id.clone(),
                donation_id: p.donation_id,
                old_status: old,
                status: p.status,
                amount_minor: p.amount_minor,
                refunded_minor: p.refunded_minor,
                currency: p.currency,
                refund_id: refund.map(|r| r.0.to_string()),
                refund_amount_minor: refund.map(|r| r.1),
                version: p.version,
            },
        }
    }
}

/// A payment as its events carry it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PaymentSnapshot {
    /// The payment.
    pub payment_id: Uuid,
    /// The provider's intent.
    pub payment_intent_id: String,
    /// The donation it pays for.
    pub donation_id: Uuid,
    /// Its status before the change.
    pub old_status: PaymentStatus,
    /// Its status after the change.
    pub status: PaymentStatus,
    /// Its amount, minor units.
    pub amount_minor: i64,
    /// Refunded so far, minor units.
    pub refunded_minor: i64,
    /// Its currency.
    pub currency: Currency,
    /// For a refund: its id.
    pub refund_id: Option<String>,
    /// For a refund: its amount, minor units.
    pub refund_amount_minor: Option<i64>,
    /// Its version after the change.
    pub version: i64,
}

/// What happened to a campaign.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CampaignChange {
    /// It was created.
    Created,
    /// Its title, goal or status changed.
    Updated,
}

impl CampaignChange {
    /// The dotted event type.
    pub fn event_type(self) -> &'static str {
        match self {
            CampaignChange::Created => "campaign.created",
            CampaignChange::Updated => "campaign.updated",
        }
    }

    fn parse(change: &str) -> Option<CampaignChange> {
        match change {
            "created" => Some(CampaignChange::Created),
            "updated" => Some(CampaignChange::Updated),
            _ => None,
        }
    }
}

/// A campaign event.
#[derive(Clone, Debug, PartialEq)]
pub struct CampaignEvent {
    /// What happened.
    pub kind: CampaignChange,
    /// The campaign's version after it (carried by the envelope).
    pub version: i64,
    /// The campaign after it.
    pub snapshot: CampaignSnapshot,
}

impl CampaignEvent {
    /// The event of `kind` about `c`.
    pub fn of(kind: CampaignChange, c: &Campaign) -> CampaignEvent {
        CampaignEvent {
            kind,
            version: c.version,
            snapshot: CampaignSnapshot {
                campaign_id: c.id,
                title: c.title.clone(),
                goal_minor: c.goal_minor,
                currency: c.currency,
                status: c.status,
            },
        }
    }
}

/// A campaign as its events carry it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CampaignSnapshot {
    /// The campaign.
    pub campaign_id: Uuid,
    /// Its title.
    pub title: String,
    /// Its goal, minor units.
    pub goal_minor: i64,
    /// Its currency.
    pub currency: Currency,
    /// Its status.
    pub status: CampaignStatus,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::email::DonorEmail;

    fn donation() -> Donation {
        let at = crate::domain::now();
        Donation {
            id: Uuid::new_v4(),
            campaign_id: Uuid::new_v4(),
            donor_email: DonorEmail::parse("ada@example.org").expect("valid address"),
            donor_name: None,
            amount_minor: 2550,
            currency: Currency::USD,
            status: DonationStatus::Completed,
            refunded_minor: 0,
            payment_intent_id: Some("pi_1".into()),
            version: 3,
            metadata: serde_json::json!({}),
            created_at: at,
            updated_at: at,
        }
    }

    #[test]
    fn a_donation_event_reads_back_as_it_was_written() {
        let event = DomainEvent::Donation(DonationEvent::reached(&donation()));
        let envelope = EventEnvelope::new(&event, crate::domain::now(), None);
        assert_eq!(envelope.event_type, "donation.completed");
        assert_eq!(envelope.payload["status"], "COMPLETED");
        assert_eq!(envelope.payload["currency"], "USD");
        assert_eq!(envelope.decode().expect("decodes"), event);
    }

    #[test]
    fn an_event_of_another_platform_is_refused_not_guessed() {
        let event = DomainEvent::Donation(DonationEvent::reached(&donation()));
        let mut envelope = EventEnvelope::new(&event, crate::domain::now(), None);
        envelope.event_type = "donation.teleported".into();
        assert!(envelope.decode().is_err());
        envelope.event_type = "donation.created".into();
        envelope.payload = serde_json::json!({"donation_id": "not a uuid"});
        assert!(envelope.decode().is_err());
    }
}
