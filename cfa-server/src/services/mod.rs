//! The services: each business rule of the platform, with the transaction it runs in.
//!
//! # Layout
//! - [`payments`]: intents, provider webhooks, refunds, reconciliation, the sandbox provider.
//! - [`totals`]: the live totals read model, its cache and its refresh.
//! - [`notifications`]: receipts and notices, their senders, donor history links.

pub mod notifications;
pub mod payments;
pub mod totals;
