//! CareForAll server: every service of the donation platform in one library, run by the thin
//! `cfa-server` binary.
//!
//! # Layout
//! - [`config`]: layered configuration (file, `CFA_*` environment, flags), a file per section.
//! - [`startup`]: [`startup::Application`], built then run until stopped; wiring only.
//! - [`domain`]: money, e-mails, campaigns, donations, payments, typed events; no HTTP, no SQL.
//! - [`services`]: the business rules, each with the transaction it runs in, and the consumers.
//! - [`storage`]: one trait per aggregate behind [`storage::Store`] and [`storage::Tx`], on
//!   SQLite and PostgreSQL.
//! - [`files`]: the files the server keeps, private to its user.
//! - [`idempotency`]: `Idempotency-Key` handling.
//! - [`lease`]: leases on claimed rows, renewed while their work is in progress.
//! - [`http`]: handlers that translate between HTTP and the services; errors, middleware.
//! - [`pages`]: the donor pages (server-rendered HTML over the same services).
//! - [`gateway`]: the gateway role's proxy and the rate limits every process applies.
//! - [`messaging`]: the event bus, the outbox relay, RabbitMQ and the consumer runtime.
//! - [`redis_cache`]: Redis as a fast path (second-level cache, idempotent replays).
//! - [`wire`]: reading JSON objects with errors that name the field.
//! - [`telemetry`]: logging and tracing setup.
//! - [`metrics`]: the Prometheus recorder and every metric.

#![warn(clippy::too_many_lines)]

pub mod config;
pub mod domain;
pub mod files;
pub mod gateway;
pub mod http;
pub mod idempotency;
pub mod lease;
pub mod messaging;
pub mod metrics;
pub mod pages;
pub mod redis_cache;
pub mod services;
pub mod startup;
pub mod storage;
pub mod telemetry;
pub mod wire;
