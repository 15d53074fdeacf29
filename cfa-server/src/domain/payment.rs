//! Payments and their state machine (SPEC §2):
//! `INITIATED` → `AUTHORIZED` | `FAILED`; `AUTHORIZED` → `CAPTURED` | `FAILED` | `REFUNDED`;
//! `CAPTURED` → `REFUNDED`. Refunds may be partial: the payment stays `CAPTURED` with a
//! `refunded_minor` until the whole amount is refunded.

use chrono::{DateTime, NaiveDateTime, Utc};
use uuid::Uuid;

use super::money::Currency;

/// Where a payment stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PaymentStatus {
    /// Intent created, nothing confirmed.
    Initiated,
    /// The provider holds the money.
    Authorized,
    /// The money is taken.
    Captured,
    /// Declined or voided before capture.
    Failed,
    /// Refunded in full.
    Refunded,
}

impl PaymentStatus {
    /// Every status.
    pub const ALL: [PaymentStatus; 5] = [
        PaymentStatus::Initiated,
        PaymentStatus::Authorized,
        PaymentStatus::Captured,
        PaymentStatus::Failed,
        PaymentStatus::Refunded,
    ];

    /// The wire and storage spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Initiated => "INITIATED",
            PaymentStatus::Authorized => "AUTHORIZED",
            PaymentStatus::Captured => "CAPTURED",
            PaymentStatus::Failed => "FAILED",
            PaymentStatus::Refunded => "REFUNDED",
        }
    }

    /// Parses the wire spelling, case-insensitively.
    pub fn parse(raw: &str) -> Result<PaymentStatus, String> {
        let upper = raw.trim().to_ascii_uppercase();
        PaymentStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == upper)
            .ok_or_else(|| {
                format!(
                    "must be one of INITIATED, AUTHORIZED, CAPTURED, FAILED, REFUNDED; got {raw:?}"
                )
            })
    }

    /// Whether the state machine has an edge from `self` to `to`. Exhaustive on purpose.
    pub fn can_become(self, to: PaymentStatus) -> bool {
        use PaymentStatus::*;
        match (self, to) {
            (Initiated, Authorized)
            | (Initiated, Failed)
            | (Authorized, Captured)
            | (Authorized, Failed)
            | (Authorized, Refunded)
            | (Captured, Refunded) => true,
            (Initiated, Initiated)
            | (Initiated, Captured)
            | (Initiated, Refunded)
            | (Authorized, Initiated)
            | (Authorized, Authorized)
            | (Captured, Initiated)
            | (Captured, Authorized)
            | (Captured, Captured)
            | (Captured, Failed)
            | (Failed, _)
            | (Refunded, _) => false,
        }
    }

    /// Whether the payment may still change without a refund.
    pub fn is_open(self) -> bool {
        matches!(self, PaymentStatus::Initiated | PaymentStatus::Authorized)
    }

    /// The outbox event type for reaching this status.
    pub fn event_type(self) -> &'static str {
        match self {
            PaymentStatus::Initiated => "payment.initiated",
            PaymentStatus::Authorized => "payment.authorized",
            PaymentStatus::Captured => "payment.captured",
            PaymentStatus::Failed => "payment.failed",
            PaymentStatus::Refunded => "payment.refunded",
        }
    }
}

/// A payment for one donation.
#[derive(Clone, Debug, PartialEq)]
pub struct Payment {
    /// Our id.
    pub id: Uuid,
    /// The provider's intent id (`pi_…`).
    pub payment_intent_id: String,
    /// The donation it pays for.
    pub donation_id: Uuid,
    /// Equal to the donation's amount.
    pub amount_minor: i64,
    /// Equal to the donation's currency.
    pub currency: Currency,
    /// Where it stands.
    pub status: PaymentStatus,
    /// The provider (`sandbox`).
    pub gateway: String,
    /// Handed to the client to confirm the intent with the provider.
    pub client_secret: String,
    /// 1 at creation, +1 per applied transition (partial refunds included).
    pub version: i64,
    /// Sum of applied refunds.
    pub refunded_minor: i64,
    /// Timestamp of the last applied provider event; older events are ignored.
    pub last_event_at: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl Payment {
    /// What may still be refunded.
    pub fn refundable_minor(&self) -> i64 {
        self.amount_minor - self.refunded_minor
    }
}

/// One recorded transition.
#[derive(Clone, Debug, PartialEq)]
pub struct PaymentTransition {
    /// The payment.
    pub payment_id: Uuid,
    /// Status before.
    pub from: PaymentStatus,
    /// Status after.
    pub to: PaymentStatus,
    /// The payment's version after.
    pub version: i64,
    /// The provider event that caused it.
    pub event_id: String,
    /// The provider event's own timestamp.
    pub event_at: DateTime<Utc>,
    /// For refunds, which refund.
    pub refund_id: Option<String>,
    /// For refunds, how much.
    pub amount_minor: Option<i64>,
    /// When we recorded it.
    pub recorded_at: DateTime<Utc>,
}

/// What a provider event asks of a payment.
#[derive(Clone, Debug, PartialEq)]
pub struct ProviderEvent {
    /// Its id (for history).
    pub event_id: String,
    /// The state it names.
    pub status: PaymentStatus,
    /// When it happened at the provider.
    pub at: DateTime<Utc>,
    /// For `REFUNDED`: the refund's id and amount; absent means "the rest".
    pub refund: Option<(String, Option<i64>)>,
}

/// The decision about one provider event, before anything is written.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Apply it: the payment becomes `next`.
    Apply {
        /// The new status.
        next: PaymentStatus,
        /// The new refunded total.
        refunded_minor: i64,
        /// For refunds: id and amount of this refund.
        refund: Option<(String, i64)>,
    },
    /// Older than the last applied event.
    OutOfOrder,
    /// Not an edge of the state machine (or a refund that does not fit).
    Invalid(String),
}

/// Decides what an event does to a payment. The ordering check comes first: an event older than
/// the last applied one is ignored even if its transition would be valid. Refunds identified by a
/// refund id are the exception: they add up in any order and are deduplicated by their id, so a
/// partial refund delivered after a later one is still applied.
pub fn decide(payment: &Payment, event: &ProviderEvent) -> Decision {
    let keyed_refund = event.status == PaymentStatus::Refunded && event.refund.is_some();
    if let Some(last) = payment.last_event_at
        && event.at < last
        && !keyed_refund
    {
        return Decision::OutOfOrder;
    }
    let from = payment.status;
    if event.status == PaymentStatus::Refunded {
        if !matches!(from, PaymentStatus::Captured | PaymentStatus::Authorized) {
            return Decision::Invalid(format!("a {} payment cannot be refunded", from.as_str()));
        }
        let (refund_id, amount) = match &event.refund {
            Some((id, amount)) => (id.clone(), amount.unwrap_or(payment.refundable_minor())),
            None => (event.event_id.clone(), payment.refundable_minor()),
        };
        if amount <= 0 {
            return Decision::Invalid("a refund amount must be greater than 0".into());
        }
        if amount > payment.refundable_minor() {
            return Decision::Invalid(format!(
                "refund of {amount} exceeds the {} still refundable",
                payment.refundable_minor()
            ));
        }
        if from == PaymentStatus::Authorized && amount != payment.amount_minor {
            return Decision::Invalid("an authorized payment can only be refunded in full".into());
        }
        let refunded_minor = payment.refunded_minor + amount;
        let next = if refunded_minor == payment.amount_minor {
            PaymentStatus::Refunded
        } else {
            PaymentStatus::Captured
        };
        return Decision::Apply {
            next,
            refunded_minor,
            refund: Some((refund_id, amount)),
        };
    }
    if from.can_become(event.status) {
        Decision::Apply {
            next: event.status,
            refunded_minor: payment.refunded_minor,
            refund: None,
        }
    } else {
        Decision::Invalid(format!(
            "a {} payment cannot become {}",
            from.as_str(),
            event.status.as_str()
        ))
    }
}

/// Parses a provider timestamp: RFC 3339 with `Z` or an offset, a naive ISO date-time (read as
/// UTC), or Unix seconds.
pub fn parse_timestamp(raw: &serde_json::Value) -> Result<DateTime<Utc>, String> {
    match raw {
        serde_json::Value::Number(n) => n
            .as_f64()
            .and_then(|secs| DateTime::from_timestamp_micros((secs * 1_000_000.0) as i64))
            .ok_or_else(|| format!("{n} is not a valid Unix timestamp")),
        serde_json::Value::String(s) => {
            let s = s.trim();
            if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                return Ok(t.with_timezone(&Utc));
            }
            for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
                if let Ok(naive) = NaiveDateTime::parse_from_str(s, format) {
                    return Ok(naive.and_utc());
                }
            }
            Err(format!(
                "{s:?} is not an ISO 8601 timestamp (e.g. 2026-11-26T10:00:00Z)"
            ))
        }
        other => Err(format!("{other} is not a timestamp")),
    }
}

serde_as_str!(PaymentStatus, |s: &PaymentStatus| s.as_str());

#[cfg(test)]
mod tests {
    use super::PaymentStatus::*;
    use super::*;

    fn payment(status: PaymentStatus, refunded: i64, last: Option<&str>) -> Payment {
        let t = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .expect("time")
                .with_timezone(&Utc)
        };
        Payment {
            id: Uuid::nil(),
            payment_intent_id: "pi_1".into(),
            donation_id: Uuid::nil(),
            amount_minor: 1000,
            currency: Currency::USD,
            status,
            gateway: "sandbox".into(),
            client_secret: "s".into(),
            version: 1,
            refunded_minor: refunded,
            last_event_at: last.map(t),
            created_at: t("2026-01-01T00:00:00Z"),
            updated_at: t("2026-01-01T00:00:00Z"),
        }
    }

    fn event(
        status: PaymentStatus,
        at: &str,
        refund: Option<(&str, Option<i64>)>,
    ) -> ProviderEvent {
        ProviderEvent {
            event_id: "evt".into(),
            status,
            at: DateTime::parse_from_rfc3339(at)
                .expect("time")
                .with_timezone(&Utc),
            refund: refund.map(|(id, a)| (id.to_string(), a)),
        }
    }

    #[test]
    fn the_state_machine_has_exactly_the_specified_edges() {
        let edges: Vec<_> = PaymentStatus::ALL
            .into_iter()
            .flat_map(|f| PaymentStatus::ALL.into_iter().map(move |t| (f, t)))
            .filter(|(f, t)| f.can_become(*t))
            .collect();
        assert_eq!(
            edges,
            vec![
                (Initiated, Authorized),
                (Initiated, Failed),
                (Authorized, Captured),
                (Authorized, Failed),
                (Authorized, Refunded),
                (Captured, Refunded),
            ]
        );
    }

    #[test]
    fn an_older_event_is_ignored_before_its_transition_is_judged() {
        let p = payment(Captured, 0, Some("2026-01-01T10:00:00Z"));
        // Invalid as a transition too, but the ordering check wins.
        assert_eq!(
            decide(&p, &event(Authorized, "2026-01-01T09:00:00Z", None)),
            Decision::OutOfOrder
        );
        assert!(matches!(
            decide(&p, &event(Authorized, "2026-01-01T11:00:00Z", None)),
            Decision::Invalid(_)
        ));
    }

    #[test]
    fn partial_refunds_add_up_whatever_order_they_arrive_in() {
        let p = payment(Captured, 400, Some("2026-01-01T12:00:00Z"));
        assert_eq!(
            decide(
                &p,
                &event(Refunded, "2026-01-01T11:00:00Z", Some(("r1", Some(100))))
            ),
            Decision::Apply {
                next: Captured,
                refunded_minor: 500,
                refund: Some(("r1".into(), 100))
            }
        );
    }

    #[test]
    fn partial_refunds_keep_the_payment_captured_until_the_last_cent() {
        let p = payment(Captured, 0, None);
        assert_eq!(
            decide(
                &p,
                &event(Refunded, "2026-01-01T10:00:00Z", Some(("r1", Some(400))))
            ),
            Decision::Apply {
                next: Captured,
                refunded_minor: 400,
                refund: Some(("r1".into(), 400))
            }
        );
        let p = payment(Captured, 400, None);
        assert_eq!(
            decide(
                &p,
                &event(Refunded, "2026-01-01T10:00:00Z", Some(("r2", Some(600))))
            ),
            Decision::Apply {
                next: Refunded,
                refunded_minor: 1000,
                refund: Some(("r2".into(), 600))
            }
        );
        assert!(matches!(
            decide(
                &p,
                &event(Refunded, "2026-01-01T10:00:00Z", Some(("r3", Some(601))))
            ),
            Decision::Invalid(_)
        ));
        assert_eq!(
            decide(&p, &event(Refunded, "2026-01-01T10:00:00Z", None)),
            Decision::Apply {
                next: Refunded,
                refunded_minor: 1000,
                refund: Some(("evt".into(), 600))
            },
            "a refund without an amount refunds the rest"
        );
    }

    #[test]
    fn timestamps_with_z_offsets_naive_and_unix_are_read_as_the_same_instant() {
        let expected = DateTime::parse_from_rfc3339("2026-11-26T10:00:00Z")
            .expect("t")
            .with_timezone(&Utc);
        for raw in [
            serde_json::json!("2026-11-26T10:00:00Z"),
            serde_json::json!("2026-11-26T12:00:00+02:00"),
            serde_json::json!("2026-11-26T10:00:00"),
            serde_json::json!("2026-11-26 10:00:00.000"),
            serde_json::json!(expected.timestamp()),
        ] {
            assert_eq!(parse_timestamp(&raw), Ok(expected), "{raw}");
        }
        assert!(parse_timestamp(&serde_json::json!("yesterday")).is_err());
        assert!(parse_timestamp(&serde_json::json!(null)).is_err());
    }
}
