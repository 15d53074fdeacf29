//! The event envelope every state change writes to the outbox (SPEC §4).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

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

impl EventEnvelope {
    /// A new event with a fresh id.
    pub fn new(
        event_type: &str,
        aggregate_type: &str,
        aggregate_id: impl ToString,
        version: i64,
        occurred_at: DateTime<Utc>,
        payload: Value,
    ) -> EventEnvelope {
        EventEnvelope {
            event_id: Uuid::new_v4(),
            event_type: event_type.to_string(),
            aggregate_type: aggregate_type.to_string(),
            aggregate_id: aggregate_id.to_string(),
            occurred_at,
            version,
            // The span writing the event: a request's, or a consumer's reacting to an event.
            trace_context: TraceContext {
                traceparent: crate::telemetry::current_traceparent(),
            },
            payload,
        }
    }

    /// The exchange-like topic the event belongs to: the part of its type before the first dot.
    pub fn topic(&self) -> &str {
        self.event_type
            .split_once('.')
            .map_or(self.event_type.as_str(), |(topic, _)| topic)
    }
}
