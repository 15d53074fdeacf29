//! CareForAll server: every service of the donation platform in one library, run by the thin
//! `cfa-server` binary.
//!
//! # Layout
//! - [`config`]: layered configuration (file, `CFA_*` environment, flags).
//! - [`startup`]: [`startup::Application`], built then run until stopped.
//! - [`domain`]: money, e-mails, campaigns, donations, events; no HTTP, no SQL.
//! - [`storage`]: the [`storage::Store`] and [`storage::Tx`] traits, SQLite and PostgreSQL.
//! - [`idempotency`]: `Idempotency-Key` handling.
//! - [`http`]: handlers, errors, middleware.
//! - [`messaging`]: the event bus, the outbox relay and the consumers.
//! - [`notifications`]: receipts and notices, their senders, donor history links.
//! - [`redis_cache`]: Redis as a fast path (second-level cache, idempotent replays).
//! - [`payments`]: applying provider events, reconciliation, signatures, the sandbox provider.
//! - [`telemetry`]: logging setup.
//! - [`totals`]: the live totals read model, its cache and its refresh.

pub mod config;
pub mod domain;
pub mod gateway;
pub mod http;
pub mod idempotency;
pub mod messaging;
pub mod metrics;
pub mod redis_cache;
pub mod services;
pub mod startup;
pub mod storage;
pub mod telemetry;
pub mod wire;
