//! `cfa-load`: proves the platform's promises under load and faults. Goose drives the real HTTP
//! API; a fault proxy sits between the server and its backends and changes on a timeline; the
//! ground truth the load recorded is compared with the platform's state at the end.
//!
//! # Layout
//!
//! - [`scenarios`]: the goose scenarios (donor journey, webhook storm, totals and history reads)
//!   and the mix.
//! - [`truth`]: what the server acknowledged, so the end state is known.
//! - [`proxy`]: the fault-injecting TCP proxy.
//! - [`server`]: the server cfa-load starts behind its proxies, and kills.
//! - [`timeline`]: the faults, each as baseline → fault → recovery, and what ran.
//! - [`watch`]: each fault's own verdict, taken while the load goes on.
//! - [`thresholds`]: with faults, thresholds judge the baseline and recovery phases only.
//! - [`invariants`]: the checks, polled until they hold or a deadline passes.
//! - [`run`]: one run — set-up, the attack with its fault timeline, the verdict.

pub mod invariants;
pub mod proxy;
pub mod run;
pub mod scenarios;
pub mod server;
pub mod thresholds;
pub mod timeline;
pub mod truth;
pub mod watch;
