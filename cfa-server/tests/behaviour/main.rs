//! The behaviour suite: every test runs against each backend, through the real HTTP server.
//!
//! SQLite always runs. PostgreSQL runs when `CFA_TEST_POSTGRES_URL` names a server (for example
//! `postgres://postgres@127.0.0.1:5432/postgres`); each test then gets a database of its own,
//! created, migrated and dropped around it. When the variable is set the server must answer: a
//! test that cannot reach it fails, it is never skipped. When it is not set the PostgreSQL half is
//! reported as ignored, with the variable that enables it.
//!
//! This is a custom harness (libtest-mimic) so the choice of backends is made at run time and
//! shows in the test list.

mod a11y;
mod browser;
mod campaigns;
mod deploy;
mod donations;
mod faults;
mod gateway;
mod health;
mod helpers;
mod idempotency;
mod notifications;
mod outbox;
mod pages;
mod payments;
mod rabbit;
mod redis;
mod security;
mod smtp;
mod spikes;
mod split;
mod totals;

use std::future::Future;
use std::pin::Pin;

use helpers::{Backend, TestContext};
use libtest_mimic::{Arguments, Trial};

/// A test body.
pub type TestFn = fn(TestContext) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// Which backends a test applies to.
#[derive(Clone, Copy)]
pub enum Only {
    /// Both.
    Any,
    /// Several processes on one database: PostgreSQL only (SQLite is single-process).
    Postgres,
    /// Needs RabbitMQ (and PostgreSQL).
    Rabbit,
    /// Needs Redis (and PostgreSQL).
    Redis,
    /// Needs PostgreSQL, RabbitMQ and Redis: the production stack.
    Stack,
    /// Needs Chromium and chromedriver (`CFA_TEST_BROWSER=1`); on SQLite.
    Browser,
}

/// Lists tests: `tests![name, …]` for both backends.
#[macro_export]
macro_rules! tests {
    ($($name:ident),* $(,)?) => {
        pub fn all() -> Vec<(&'static str, $crate::TestFn, $crate::Only)> {
            vec![$((stringify!($name), |ctx| Box::pin($name(ctx)), $crate::Only::Any)),*]
        }
    };
    (redis: $($name:ident),* ; any: $($any:ident),* $(,)?) => {
        pub fn all() -> Vec<(&'static str, $crate::TestFn, $crate::Only)> {
            vec![
                $((stringify!($name), |ctx| Box::pin($name(ctx)), $crate::Only::Redis),)*
                $((stringify!($any), |ctx| Box::pin($any(ctx)), $crate::Only::Any),)*
            ]
        }
    };
    (stack: $($name:ident),* $(,)?) => {
        pub fn all() -> Vec<(&'static str, $crate::TestFn, $crate::Only)> {
            vec![$((stringify!($name), |ctx| Box::pin($name(ctx)), $crate::Only::Stack)),*]
        }
    };
    (rabbit: $($name:ident),* $(,)?) => {
        pub fn all() -> Vec<(&'static str, $crate::TestFn, $crate::Only)> {
            vec![$((stringify!($name), |ctx| Box::pin($name(ctx)), $crate::Only::Rabbit)),*]
        }
    };
    ($($name:ident),* ; postgres: $($pg:ident),* $(,)?) => {
        pub fn all() -> Vec<(&'static str, $crate::TestFn, $crate::Only)> {
            vec![
                $((stringify!($name), |ctx| Box::pin($name(ctx)), $crate::Only::Any),)*
                $((stringify!($pg), |ctx| Box::pin($pg(ctx)), $crate::Only::Postgres),)*
            ]
        }
    };
}

fn main() {
    let args = Arguments::from_args();
    let postgres = std::env::var("CFA_TEST_POSTGRES_URL")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let amqp = std::env::var("CFA_TEST_AMQP_URL")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let redis_url = std::env::var("CFA_TEST_REDIS_URL")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let groups = [
        ("health", health::all()),
        ("campaigns", campaigns::all()),
        ("donations", donations::all()),
        ("gateway", gateway::all()),
        ("idempotency", idempotency::all()),
        ("outbox", outbox::all()),
        ("payments", payments::all()),
        ("faults", faults::all()),
        ("totals", totals::all()),
        ("notifications", notifications::all()),
        ("pages", pages::all()),
        ("rabbit", rabbit::all()),
        ("redis", redis::all()),
        ("security", security::all()),
        ("spikes", spikes::all()),
        ("split", split::all()),
        ("deploy", deploy::all()),
        ("browser", browser::all()),
    ];
    let browser = std::env::var("CFA_TEST_BROWSER").is_ok_and(|v| v == "1");
    let mut trials = Vec::new();
    for (group, tests) in groups {
        for (name, test, only) in tests {
            if matches!(only, Only::Redis) {
                let both = postgres.clone().zip(redis_url.clone());
                trials.push(
                    Trial::test(
                        format!("postgres+redis::{group}::{name}"),
                        move || match both {
                            Some((pg, redis)) => {
                                helpers::run(Backend::PostgresRedis(pg, redis), test)
                            }
                            None => Ok(()),
                        },
                    )
                    .with_kind("redis")
                    .with_ignored_flag(postgres.is_none() || redis_url.is_none()),
                );
                continue;
            }
            if matches!(only, Only::Stack) {
                let all = postgres
                    .clone()
                    .zip(amqp.clone())
                    .zip(redis_url.clone())
                    .map(|((pg, amqp), redis)| (pg, amqp, redis));
                trials.push(
                    Trial::test(
                        format!("postgres+rabbitmq+redis::{group}::{name}"),
                        move || match all {
                            Some((pg, amqp, redis)) => {
                                helpers::run(Backend::Stack(pg, amqp, redis), test)
                            }
                            None => Ok(()),
                        },
                    )
                    .with_kind("stack")
                    .with_ignored_flag(postgres.is_none() || amqp.is_none() || redis_url.is_none()),
                );
                continue;
            }
            if matches!(only, Only::Rabbit) {
                let both = postgres.clone().zip(amqp.clone());
                trials.push(
                    Trial::test(
                        format!("postgres+rabbitmq::{group}::{name}"),
                        move || match both {
                            Some((pg, amqp)) => {
                                helpers::run(Backend::PostgresRabbit(pg, amqp), test)
                            }
                            None => Ok(()),
                        },
                    )
                    .with_kind("rabbitmq")
                    .with_ignored_flag(postgres.is_none() || amqp.is_none()),
                );
                continue;
            }
            if matches!(only, Only::Browser) {
                trials.push(
                    Trial::test(format!("sqlite::{group}::{name}"), move || {
                        if browser {
                            helpers::run(Backend::Sqlite, test)
                        } else {
                            Ok(())
                        }
                    })
                    .with_kind("browser")
                    .with_ignored_flag(!browser),
                );
                continue;
            }
            if matches!(only, Only::Any) {
                trials.push(
                    Trial::test(format!("sqlite::{group}::{name}"), move || {
                        helpers::run(Backend::Sqlite, test)
                    })
                    .with_kind("sqlite"),
                );
            }
            let url = postgres.clone();
            trials.push(
                Trial::test(format!("postgres::{group}::{name}"), move || match url {
                    Some(url) => helpers::run(Backend::Postgres(url), test),
                    None => Ok(()),
                })
                .with_kind("postgres")
                .with_ignored_flag(postgres.is_none()),
            );
        }
    }
    if redis_url.is_none() && !args.list {
        println!(
            "note: the Redis tests are SKIPPED (shown as ignored). Set CFA_TEST_REDIS_URL=redis://127.0.0.1:6379 \
             (with CFA_TEST_POSTGRES_URL) to run them."
        );
    }
    if amqp.is_none() && !args.list {
        println!(
            "note: the RabbitMQ tests are SKIPPED (shown as ignored). Set CFA_TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f \
             (with CFA_TEST_POSTGRES_URL) to run them."
        );
    }
    if !browser && !args.list {
        println!(
            "note: the browser test is SKIPPED (shown as ignored). Install Debian's chromium and \
             chromium-driver and set CFA_TEST_BROWSER=1 to run it."
        );
    }
    if postgres.is_none() && !args.list {
        println!(
            "note: the PostgreSQL half of the behaviour suite is SKIPPED (shown as ignored). \
             Set CFA_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres to run it."
        );
    }
    libtest_mimic::run(&args, trials).exit();
}
