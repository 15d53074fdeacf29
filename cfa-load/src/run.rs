//! One load run: set-up, the goose attack with faults on a timeline, then the invariant verdict.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use cfa_cli::client::Client;
use goose::config::GooseConfiguration;
use goose::prelude::*;
use serde::Serialize;
use serde_json::json;

use crate::invariants::{self, Report};
use crate::proxy::{FaultProxy, Mode};
use crate::scenarios::{self, Mix, PHASES, Shared};

/// A fault: which dependency, and what happens to it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Fault {
    /// `postgres`, `rabbitmq`, `redis`, or `server` (killed with SIGKILL and started again).
    pub target: String,
    /// What the proxy does (for `server`: `kill`).
    pub mode: String,
}

impl Fault {
    /// Parses `postgres:outage`, `redis:latency:300`, `server:kill`.
    pub fn parse(text: &str) -> Result<Fault, String> {
        let (target, mode) = text
            .split_once(':')
            .ok_or_else(|| format!("`{text}`: write target:fault, e.g. postgres:outage"))?;
        match target {
            "postgres" | "rabbitmq" | "redis" => {
                Mode::parse(mode)?;
            }
            "server" if mode == "kill" => {}
            "server" => return Err("the server fault is `server:kill`".into()),
            other => {
                return Err(format!(
                    "`{other}` is not a fault target; use postgres, rabbitmq, redis or server"
                ));
            }
        }
        Ok(Fault {
            target: target.into(),
            mode: mode.into(),
        })
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The server's base URL.
    pub host: String,
    /// The scenario mix.
    pub mix: Mix,
    /// Seed.
    pub seed: u64,
    /// Campaigns to create first.
    pub campaigns: usize,
    /// Webhook secret.
    pub webhook_secret: Option<String>,
    /// Operator key.
    pub api_key: Option<String>,
    /// Faults, one after another, each as baseline → fault → recovery.
    pub faults: Vec<Fault>,
    /// Seconds of each phase.
    pub phase_seconds: (u64, u64, u64),
    /// Command that starts the server (run through `sh -c`), if cfa-load manages it.
    pub server_cmd: Option<String>,
    /// How long the invariants may take to hold after the load.
    pub converge: Duration,
    /// Where the verdict goes.
    pub verdict: PathBuf,
    /// Profile name, for the verdict.
    pub profile: Option<String>,
}

/// One phase as it happened.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseRecord {
    /// baseline / fault / recovery.
    pub phase: String,
    /// The fault active in it.
    pub fault: Option<Fault>,
    /// Seconds since the start of the load.
    pub start_seconds: f64,
    /// Seconds since the start of the load.
    pub end_seconds: f64,
}

/// The server process cfa-load manages, with proxies in front of its backends.
struct ManagedServer {
    cmd: String,
    log: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl ManagedServer {
    fn start(&mut self) -> anyhow::Result<()> {
        // `exec`, so the process killed is the server itself, not a shell around it.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open {}", self.log.display()))?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("exec {}", self.cmd))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start the server with `{}`", self.cmd))?;
        self.child = Some(child);
        Ok(())
    }

    /// Whether the process started is still running (a server that could not bind its port
    /// exits at once, and the load would then measure some other server).
    fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ManagedServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Rewrites `scheme://user@host:port/rest` to go through `proxy`; returns the upstream too.
fn through(url: &str, proxy: &str) -> Option<(String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let (userinfo, hostport) = authority
        .rsplit_once('@')
        .map_or(("", authority), |(u, h)| (u, h));
    let default_port = match scheme {
        "postgres" | "postgresql" => 5432,
        "amqp" => 5672,
        "redis" => 6379,
        _ => return None,
    };
    let upstream = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:{default_port}")
    };
    let at = if userinfo.is_empty() {
        String::new()
    } else {
        format!("{userinfo}@")
    };
    let slash = if path.is_empty() && !rest.contains('/') {
        ""
    } else {
        "/"
    };
    Some((format!("{scheme}://{at}{proxy}{slash}{path}"), upstream))
}

async fn wait_healthy(client: &Client, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if client.get("/health").await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

fn git_revision() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs the load and writes the verdict; returns whether everything passed.
pub async fn run(
    plan: Plan,
    goose_config: GooseConfiguration,
    run_time: Option<u64>,
    users: usize,
) -> anyhow::Result<bool> {
    let client = Client::new(&plan.host, plan.api_key.clone(), Duration::from_secs(10));
    // The proxies, and the server behind them, when cfa-load starts it.
    let mut proxies: Vec<(String, FaultProxy)> = Vec::new();
    let mut server = None;
    if let Some(cmd) = &plan.server_cmd {
        let mut env = Vec::new();
        for (target, var) in [
            ("postgres", "CFA_DATABASE_URL"),
            ("rabbitmq", "CFA_AMQP_URL"),
            ("redis", "CFA_REDIS_URL"),
        ] {
            let Ok(url) = std::env::var(var) else {
                continue;
            };
            let Some((_, upstream)) = through(&url, "") else {
                continue;
            };
            let proxy = FaultProxy::start("127.0.0.1:0", &upstream).await?;
            let Some((proxied, _)) = through(&url, &proxy.listen.to_string()) else {
                continue;
            };
            eprintln!(
                "cfa-load: {target} through the fault proxy on {}",
                proxy.listen
            );
            env.push((var.to_string(), proxied));
            proxies.push((target.to_string(), proxy));
        }
        let log = plan.verdict.with_file_name("cfa-load-server.log");
        eprintln!(
            "cfa-load: starting the server (`{cmd}`), its output in {}",
            log.display()
        );
        let mut managed = ManagedServer {
            cmd: cmd.clone(),
            log,
            env,
            child: None,
        };
        managed.start()?;
        server = Some(managed);
    }
    for fault in &plan.faults {
        if fault.target == "server" {
            anyhow::ensure!(
                server.is_some(),
                "the fault server:kill needs --server-cmd, so cfa-load can start the server again"
            );
        } else if !proxies.iter().any(|(t, _)| *t == fault.target) {
            anyhow::bail!(
                "the fault {}:{} needs --server-cmd and the {} URL in cfa-load's environment (CFA_DATABASE_URL, CFA_AMQP_URL, CFA_REDIS_URL), so the server can be put behind a proxy",
                fault.target,
                fault.mode,
                fault.target
            );
        }
    }
    let healthy = wait_healthy(&client, Duration::from_secs(60)).await;
    if let Some(managed) = server.as_mut() {
        anyhow::ensure!(
            managed.running(),
            "the server started with --server-cmd exited; see {} (is another server already on {}?)",
            managed.log.display(),
            plan.host
        );
    }
    anyhow::ensure!(
        healthy,
        "the server at {} does not answer /health; start it (cfa-server run) or pass --server-cmd",
        plan.host
    );
    // Set-up: the campaigns every scenario works on.
    let shared = Arc::new(Shared::new(
        plan.seed,
        plan.webhook_secret.clone(),
        plan.api_key.clone(),
    ));
    for i in 0..plan.campaigns {
        let c = client
            .post(
                "/api/v1/campaigns",
                &json!({"title": format!("Load {i} (seed {})", plan.seed), "goal_amount": 100000}),
            )
            .await
            .context("cannot create the load's campaigns")?;
        shared
            .truth
            .campaign(c["id"].as_str().unwrap_or_default().to_string());
    }
    // The timeline runs beside goose.
    let (b, f, r) = plan.phase_seconds;
    let timeline_seconds = plan.faults.len() as u64 * (b + f + r);
    let mut attack = *GooseAttack::initialize_with_config(goose_config)?
        .set_default(GooseDefault::Host, plan.host.as_str())?
        .set_default(GooseDefault::Users, users)?
        .set_default(GooseDefault::IncreaseRate, "8")?
        .set_default(GooseDefault::Timeout, "30")?;
    let run_seconds = run_time.unwrap_or(0).max(timeline_seconds);
    if run_seconds > 0 {
        attack = *attack.set_default(GooseDefault::RunTime, run_seconds as usize)?;
    }
    for scenario in scenarios::scenarios(&shared, &plan.mix)? {
        attack = attack.register_scenario(scenario);
    }
    let start = Instant::now();
    let timeline = {
        let shared = shared.clone();
        let faults = plan.faults.clone();
        let proxies = proxies.clone();
        let mut server = server.take();
        tokio::spawn(async move {
            let mut phases = Vec::new();
            let mut last_fault_end = None;
            for fault in &faults {
                for (i, seconds) in [b, f, r].into_iter().enumerate() {
                    if i == 1 {
                        let name = format!("{}-{}", fault.target, fault.mode.replace(':', "-"));
                        *shared.fault_name.write().unwrap_or_else(|p| p.into_inner()) = name;
                    }
                    shared.phase.store(i, Ordering::Relaxed);
                    let begin = start.elapsed().as_secs_f64();
                    if i == 1 {
                        if fault.target == "server" {
                            if let Some(s) = server.as_mut() {
                                s.kill();
                            }
                        } else if let Some((_, p)) =
                            proxies.iter().find(|(t, _)| *t == fault.target)
                        {
                            p.set(Mode::parse(&fault.mode).unwrap_or(Mode::Pass));
                        }
                    }
                    tokio::time::sleep(Duration::from_secs(seconds)).await;
                    if i == 1 {
                        if fault.target == "server" {
                            if let Some(s) = server.as_mut() {
                                let _ = s.start();
                            }
                        } else if let Some((_, p)) =
                            proxies.iter().find(|(t, _)| *t == fault.target)
                        {
                            p.set(Mode::Pass);
                        }
                        last_fault_end = Some(start.elapsed().as_secs_f64());
                    }
                    phases.push(PhaseRecord {
                        phase: PHASES[i].into(),
                        fault: (i == 1).then(|| fault.clone()),
                        start_seconds: begin,
                        end_seconds: start.elapsed().as_secs_f64(),
                    });
                }
            }
            (phases, last_fault_end, server)
        })
    };
    let outcome = attack.execute().await;
    let (phases, last_fault_end, server) = timeline.await.unwrap_or((Vec::new(), None, None));
    let _keep_server_alive = server;
    for (_, p) in &proxies {
        p.set(Mode::Pass);
    }
    let load_end = start.elapsed().as_secs_f64();
    let (threshold_results, goose_error) = match outcome {
        Ok(metrics) => (metrics.thresholds.clone(), None),
        Err(GooseError::ThresholdsFailed { failed, metrics }) => {
            let mut all = metrics.thresholds.clone();
            if all.is_empty() {
                all = failed;
            }
            (all, None)
        }
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    // The verdict, after convergence.
    let _ = wait_healthy(&client, Duration::from_secs(30)).await;
    let (campaigns, donations, anomalies) = shared.truth.snapshot();
    let verify_start = start.elapsed().as_secs_f64();
    let report: Report =
        invariants::verify(&client, &campaigns, &donations, &anomalies, plan.converge).await;
    let converged_after_last_fault = report
        .converged_after_seconds
        .zip(last_fault_end)
        .map(|(c, end)| verify_start + c - end);
    let thresholds_ok = threshold_results.iter().all(|t| t.passed);
    let ok = report.ok && thresholds_ok && goose_error.is_none();
    let verdict = json!({
        "ok": ok,
        "profile": plan.profile,
        "seed": plan.seed,
        "git_revision": git_revision(),
        "host": plan.host,
        "mix": plan.mix,
        "users": users,
        "phases": phases,
        "faults": plan.faults,
        "load_seconds": load_end,
        "thresholds": threshold_results,
        "goose_error": goose_error,
        "invariants": report,
        "acknowledged_donations": donations.len(),
        "campaigns": campaigns.len(),
        "convergence_seconds_after_load": report.converged_after_seconds,
        "convergence_seconds_after_last_fault": converged_after_last_fault,
    });
    // The ground truth itself, for whoever has to explain a failed invariant.
    let truth_path = plan.verdict.with_file_name("truth.json");
    let truth = json!({"campaigns": campaigns, "donations": donations, "anomalies": anomalies});
    std::fs::write(&truth_path, serde_json::to_vec_pretty(&truth)?)
        .with_context(|| format!("cannot write {}", truth_path.display()))?;
    std::fs::write(&plan.verdict, serde_json::to_vec_pretty(&verdict)?)
        .with_context(|| format!("cannot write {}", plan.verdict.display()))?;
    summary(&verdict, &report, &threshold_results, &plan);
    Ok(ok)
}

fn summary(
    verdict: &serde_json::Value,
    report: &Report,
    thresholds: &[goose::threshold::ThresholdResult],
    plan: &Plan,
) {
    println!();
    println!(
        "== cfa-load verdict: {} ==",
        if verdict["ok"] == true {
            "PASS"
        } else {
            "FAIL"
        }
    );
    println!(
        "seed {}  mix {:?}  acknowledged donations {}  campaigns {}",
        plan.seed, plan.mix, verdict["acknowledged_donations"], verdict["campaigns"]
    );
    for c in &report.checks {
        println!(
            "  [{}] {} ({} checked)",
            if c.ok { "ok" } else { "FAIL" },
            c.name,
            c.checked
        );
        for f in &c.failures {
            println!("        {f}");
        }
    }
    for t in thresholds {
        println!(
            "  [{}] threshold {} (observed {})",
            if t.passed { "ok" } else { "FAIL" },
            t.rule,
            t.observed
        );
    }
    match report.converged_after_seconds {
        Some(s) => println!("  converged {s:.1} s after the load ended"),
        None => println!("  did NOT converge within {} s", plan.converge.as_secs()),
    }
    if let Some(s) = verdict["convergence_seconds_after_last_fault"].as_f64() {
        println!("  converged {s:.1} s after the last fault ended");
    }
    println!("  verdict written to {}", plan.verdict.display());
}
