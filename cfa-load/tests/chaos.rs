//! A short chaos run on PostgreSQL + RabbitMQ + Redis: cfa-load starts the server behind its
//! fault proxies, kills it, freezes and cuts PostgreSQL, cuts RabbitMQ and black-holes Redis,
//! one after another under load; each fault must end with nothing lost, double-counted or
//! stuck within 15 s of its end, and the whole run's invariants must hold.
//!
//! It needs `CFA_TEST_POSTGRES_URL`, `CFA_TEST_AMQP_URL` and `CFA_TEST_REDIS_URL` (as `.ci/run`
//! sets them). Without them the test is reported as ignored, with the variables that enable it;
//! with them, a backend that cannot be reached fails the test. A custom harness (libtest-mimic),
//! so the choice is made at run time and shows in the test list. The server is this test
//! binary itself, started with `CFA_LOAD_TEST_SERVE=1`, so no other binary must be built first.

use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::Value;
use sqlx::Connection;

const SERVE: &str = "CFA_LOAD_TEST_SERVE";
const SECRET: &str = "whsec_chaos_test";
const KEY: &str = "chaos-test-key";
/// The short version of the chaos profile: every kind of fault, each a few seconds.
const FAULTS: [&str; 5] = [
    "server:kill@3",
    "postgres:blackhole@5",
    "postgres:flap@6",
    "rabbitmq:outage@5",
    "redis:blackhole@5",
];

fn main() {
    if std::env::var_os(SERVE).is_some() {
        serve();
        return;
    }
    let args = Arguments::from_args();
    let urls = [
        "CFA_TEST_POSTGRES_URL",
        "CFA_TEST_AMQP_URL",
        "CFA_TEST_REDIS_URL",
    ]
    .map(|v| std::env::var(v).ok().filter(|u| !u.trim().is_empty()));
    let missing = urls.iter().any(Option::is_none);
    let [pg, amqp, redis] = urls;
    let trial = Trial::test(
        "postgres+rabbitmq+redis::a_short_chaos_run_loses_nothing_and_leaves_nothing_stuck",
        move || match (pg, amqp, redis) {
            (Some(pg), Some(amqp), Some(redis)) => chaos(&pg, &amqp, &redis),
            _ => Ok(()),
        },
    )
    .with_kind("chaos")
    .with_ignored_flag(missing);
    if missing && !args.list {
        println!(
            "note: the chaos run is SKIPPED (shown as ignored). Set CFA_TEST_POSTGRES_URL, \
             CFA_TEST_AMQP_URL and CFA_TEST_REDIS_URL (see README.md) to run it."
        );
    }
    libtest_mimic::run(&args, vec![trial]).exit();
}

/// The server, as `cfa-server run` would start it from the environment cfa-load gives it.
fn serve() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let settings = cfa_server::config::Settings::load(None, &Default::default())
            .expect("the server's configuration");
        // Its logs go to cfa-load-server.log, shown when the test fails.
        let _telemetry = cfa_server::telemetry::init(
            &settings.log,
            &cfa_server::metrics::service(&settings.server),
        )
        .expect("the server's logs");
        let app = cfa_server::startup::Application::build(settings)
            .await
            .expect("the server starts");
        app.run_until_stopped(cfa_server::startup::shutdown_signal())
            .await
            .expect("the server runs");
    });
}

/// `host:port` of a URL, for a reachability check.
fn address(url: &str, port: u16) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:{port}")
    }
}

fn reachable(var: &str, url: &str, port: u16) -> Result<(), Failed> {
    let at = address(url, port);
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&at)
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| Failed::from(format!("{var} is set but {at} does not resolve")))?;
    TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map(|_| ())
        .map_err(|e| format!("{var} is set but nothing answers at {at}: {e}").into())
}

fn chaos(pg: &str, amqp: &str, redis: &str) -> Result<(), Failed> {
    reachable("CFA_TEST_AMQP_URL", amqp, 5672)?;
    reachable("CFA_TEST_REDIS_URL", redis, 6379)?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let name = format!("cfa_chaos_{}", uuid::Uuid::new_v4().simple());
    let database = runtime.block_on(create_database(pg, &name))?;
    let outcome = run_chaos(&database, amqp, redis, &name);
    runtime.block_on(drop_database(pg, &name));
    runtime.block_on(drop_rabbit_names(amqp, &format!("{name}.")));
    outcome
}

async fn create_database(admin: &str, name: &str) -> Result<String, Failed> {
    let mut conn = sqlx::PgConnection::connect(admin).await.map_err(|e| {
        format!("CFA_TEST_POSTGRES_URL is set but PostgreSQL cannot be reached at {admin}: {e}")
    })?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .map_err(|e| format!("creating the database {name}: {e}"))?;
    let base = admin.split('?').next().unwrap_or(admin);
    let server = base.rsplit_once('/').map_or(base, |(s, _)| s);
    Ok(format!("{server}/{name}"))
}

async fn drop_database(admin: &str, name: &str) {
    if let Ok(mut conn) = sqlx::PgConnection::connect(admin).await {
        let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        let _ = sqlx::query(sqlx::AssertSqlSafe(drop))
            .execute(&mut conn)
            .await;
    }
}

/// Deletes the queues and exchanges the run's server declared under its namespace.
async fn drop_rabbit_names(url: &str, namespace: &str) {
    let Ok(connection) =
        lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await
    else {
        return;
    };
    let Ok(channel) = connection.create_channel().await else {
        return;
    };
    let topology = cfa_server::messaging::rabbit::Topology::new(namespace);
    let delay = cfa_server::config::Settings::default().amqp.retry_delay_ms;
    for consumer in ["donation-status", "totals", "notifications"] {
        for queue in [
            topology.queue(consumer),
            topology.retry_queue(consumer, delay),
            topology.dead_queue(consumer),
        ] {
            let _ = channel
                .queue_delete(queue.as_str().into(), Default::default())
                .await;
        }
    }
    for topic in ["donation", "payment"] {
        let _ = channel
            .exchange_delete(topology.exchange(topic).as_str().into(), Default::default())
            .await;
    }
}

fn free_port() -> Result<u16, Failed> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

fn run_chaos(database: &str, amqp: &str, redis: &str, name: &str) -> Result<(), Failed> {
    let dir = tempfile::TempDir::new().map_err(|e| e.to_string())?;
    let port = free_port()?;
    let verdict_path = dir.path().join("verdict.json");
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut command = Command::new(env!("CARGO_BIN_EXE_cfa-load"));
    command
        .env(SERVE, "1")
        .env("CFA_DATABASE_URL", database)
        .env("CFA_AMQP_URL", amqp)
        .env("CFA_REDIS_URL", redis)
        // Queues and keys of their own, so nothing another run left behind reaches this one.
        .env("CFA_AMQP__NAMESPACE", format!("{name}."))
        .env("CFA_REDIS__PREFIX", format!("{name}:"))
        .env("CFA_LISTEN", format!("127.0.0.1:{port}"))
        .env("CFA_SERVER__DATA_DIR", dir.path())
        .env("CFA_GATEWAY__RATE_LIMIT__ENABLED", "false")
        .env("CFA_PAYMENTS__WEBHOOK_SECRET", SECRET)
        .env("CFA_AUTH__API_KEYS", KEY)
        .env("CFA_LOG__LEVEL", "warn")
        .args([
            "--profile",
            "chaos",
            "--phases",
            "3,5,5",
            "--seed",
            "15",
            "--users",
            "6",
        ])
        .args(FAULTS.iter().flat_map(|f| ["--fault", f]))
        .args(["--host", &format!("http://127.0.0.1:{port}")])
        .args(["--server-cmd", &format!("{}", me.display())])
        .args(["--webhook-secret", SECRET, "--api-key", KEY, "--quiet"])
        .arg("--verdict")
        .arg(&verdict_path);
    let out = command
        .output()
        .map_err(|e| format!("cannot run cfa-load: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let log = std::fs::read_to_string(dir.path().join("cfa-load-server.log")).unwrap_or_default();
    let tail: String = log.lines().rev().take(20).collect::<Vec<_>>().join("\n");
    let context = format!(
        "{stdout}\n{}\nthe server's last lines (newest first):\n{tail}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdict: Value = std::fs::read(&verdict_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| format!("no verdict.json written\n{context}"))?;
    judge(&verdict, out.status.code(), &context)
}

/// What a user of the platform would notice, from the verdict.
fn judge(verdict: &Value, code: Option<i32>, context: &str) -> Result<(), Failed> {
    let fail = |what: String| Err(Failed::from(format!("{what}\n{context}")));
    if code != Some(0) || verdict["ok"] != true {
        return fail(format!("the chaos run failed (exit {code:?})"));
    }
    let outcomes = verdict["fault_outcomes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = outcomes
        .iter()
        .filter_map(|o| o["fault"].as_str())
        .collect();
    let want: Vec<String> = FAULTS
        .iter()
        .map(|f| f.split('@').next().unwrap_or(f).replace(':', "-"))
        .collect();
    if names != want {
        return fail(format!("faults judged {names:?}, ran {want:?}"));
    }
    for o in &outcomes {
        let converged = o["converged_seconds_after_fault"].as_f64();
        if o["lost"] != 0 || o["double_counted"] != 0 || o["stuck"] != 0 {
            return fail(format!("a fault left damage: {o}"));
        }
        if !converged.is_some_and(|s| s <= 15.0) || o["acknowledged_donations"] == 0 {
            return fail(format!(
                "a fault did not converge within 15 s, or saw no donation: {o}"
            ));
        }
    }
    // The killed server answered nothing for a while: the load kept going and saw it.
    if outcomes[0]["non_2xx_during_fault"]["no answer"]
        .as_u64()
        .unwrap_or(0)
        == 0
    {
        return fail(format!(
            "no failed request while the server was down: {}",
            outcomes[0]
        ));
    }
    // Every phase that ran is in the verdict: three per fault, the fault ones named.
    let phases = verdict["phases"].as_array().cloned().unwrap_or_default();
    let faulted = phases.iter().filter(|p| p["phase"] == "fault").count();
    if phases.len() != 3 * FAULTS.len() || faulted != FAULTS.len() {
        return fail(format!("phases recorded: {phases:?}"));
    }
    // The table docs/LOAD.md keeps, for the CI log.
    eprintln!(
        "fault | acknowledged | lost | double-counted | stuck | converged after | non-2xx during"
    );
    for o in &outcomes {
        eprintln!(
            "{} | {} | {} | {} | {} | {} s | {}",
            o["fault"].as_str().unwrap_or("?"),
            o["acknowledged_donations"],
            o["lost"],
            o["double_counted"],
            o["stuck"],
            o["converged_seconds_after_fault"],
            o["non_2xx_during_fault"]
        );
    }
    Ok(())
}
