//! Moving events from the outbox to the services that react to them.
//!
//! # Layout
//! - [`bus`]: the [`bus::EventBus`] trait and the in-process bus of the embedded default.
//! - [`consumer`]: idempotent event handlers and the donation-status consumer.
//! - [`dead_letters`]: the [`dead_letters::DeadLetters`] a broker keeps, listed and replayed by
//!   operators.
//! - [`rabbit`]: the RabbitMQ bus, its consumers, retries and dead letters.
//! - [`relay`]: the outbox relay that claims rows, publishes them and marks them sent.

pub mod bus;
pub mod consumer;
pub mod dead_letters;
pub mod rabbit;
pub mod relay;
