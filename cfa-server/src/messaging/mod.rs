//! Moving events from the outbox to the services that react to them.
//!
//! # Layout
//! - [`bus`]: the [`bus::EventBus`] trait and the in-process bus of the embedded default.
//! - [`relay`]: the outbox relay that claims rows, publishes them and marks them sent.

pub mod bus;
pub mod relay;
