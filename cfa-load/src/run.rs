//! One load run: set-up, the goose attack with faults on a timeline, then the verdict — each
//! fault's own ([`crate::watch`]) and the invariants over the whole run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cfa_cli::client::Client;
use goose::config::GooseConfiguration;
use goose::metrics::GooseMetrics;
use goose::prelude::*;
use goose::threshold::ThresholdResult;
use serde_json::json;
use tokio::sync::watch;

use crate::invariants::{self, Report};
use crate::proxy::FaultProxy;
use crate::scenarios::{self, Mix, Shared};
use crate::server::{ManagedServer, wait_healthy};
use crate::timeline::{self, Ran, Timeline};
pub use crate::timeline::{Fault, PhaseRecord};
use crate::watch::{CONVERGE_WAIT, FaultOutcome};

/// What to run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The server's base URL.
    pub host: String,
    /// The scenario mix.
    pub mix: Mix,
    /// Seed.
    pub seed: u64,
    /// Campaigns to create first (for each fault's cycle, with faults).
    pub campaigns: usize,
    /// Webhook secret.
    pub webhook_secret: Option<String>,
    /// Operator key.
    pub api_key: Option<String>,
    /// Faults, one after another, each as baseline → fault → recovery.
    pub faults: Vec<Fault>,
    /// Seconds of each phase: baseline, fault (unless the fault names its own), and the least
    /// recovery (it lasts until the fault's verdict is in).
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

/// The build of the server under load, from its `GET /version` (`{"version", "git_revision"}`):
/// the verdict names what was measured, not the directory cfa-load ran in. `null` fields when
/// the server does not say (an older build).
pub async fn server_build(client: &Client) -> serde_json::Value {
    match client.get("/version").await {
        Ok(v) => json!({"version": v["version"], "git_revision": v["git_revision"]}),
        Err(_) => json!({"version": null, "git_revision": null}),
    }
}

/// The server cfa-load starts, if any, and the proxies in front of its backends; every fault
/// must be one they can apply.
async fn launch(plan: &Plan) -> anyhow::Result<(Option<ManagedServer>, Vec<(String, FaultProxy)>)> {
    let (server, proxies) = match &plan.server_cmd {
        Some(cmd) => {
            let log = plan.verdict.with_file_name("cfa-load-server.log");
            let (server, proxies) = ManagedServer::launch(cmd, log).await?;
            (Some(server), proxies)
        }
        None => (None, Vec::new()),
    };
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
    Ok((server, proxies))
}

/// Waits for the server, then creates the campaigns: one set, or one per fault's cycle and
/// one for the last recovery.
async fn prepare(
    plan: &Plan,
    client: &Client,
    server: Option<&mut ManagedServer>,
) -> anyhow::Result<Arc<Shared>> {
    let healthy = wait_healthy(client, Duration::from_secs(60)).await;
    if let Some(managed) = server {
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
    let shared = Arc::new(Shared::new(
        plan.seed,
        plan.webhook_secret.clone(),
        plan.api_key.clone(),
    ));
    let sets = if plan.faults.is_empty() {
        1
    } else {
        shared
            .set_size
            .store(plan.campaigns, std::sync::atomic::Ordering::Relaxed);
        plan.faults.len() + 1
    };
    for i in 0..plan.campaigns * sets {
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
    Ok(shared)
}

/// Goose, set up; with faults, the rules over every request are returned to be judged on
/// the baseline and recovery phases, and the timeline ends the load rather than a run time.
fn attack(
    plan: &Plan,
    mut config: GooseConfiguration,
    run_time: Option<u64>,
    users: usize,
    shared: &Arc<Shared>,
) -> anyhow::Result<(GooseAttack, Vec<String>)> {
    let mut ours = Vec::new();
    if !plan.faults.is_empty() {
        let (goose_rules, phase_rules) =
            crate::thresholds::split(&config.threshold).map_err(anyhow::Error::msg)?;
        config.threshold = goose_rules;
        ours = phase_rules;
        // A fault must not stop the load: goose judges its rules at the end only.
        config.no_threshold_abort = true;
        config.threshold_abort_delay = None;
    }
    // goose's own tables cut request names at 24 characters, so `POST baseline: /donations`
    // and `POST baseline: /donations (retry)` look alike: cfa-load prints its own (see
    // [`request_table`]); goose's reports (--report-file) keep every detail.
    config.no_print_metrics = true;
    let mut attack = *GooseAttack::initialize_with_config(config)?
        .set_default(GooseDefault::Host, plan.host.as_str())?
        .set_default(GooseDefault::Users, users)?
        .set_default(GooseDefault::IncreaseRate, "8")?
        .set_default(GooseDefault::Timeout, "30")?;
    if let Some(seconds) = run_time.filter(|_| plan.faults.is_empty()) {
        attack = *attack.set_default(GooseDefault::RunTime, seconds as usize)?;
    }
    for scenario in scenarios::scenarios(shared, &plan.mix)? {
        attack = attack.register_scenario(scenario);
    }
    Ok((attack, ours))
}

/// The attack and the timeline side by side: the timeline's end stops goose, and goose's end
/// (a run time, Ctrl-C) cuts the timeline short.
async fn execute(
    attack: GooseAttack,
    timeline: Timeline,
) -> (Result<GooseMetrics, GooseError>, Ran) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let has_faults = !timeline.faults.is_empty();
    let timeline = tokio::spawn(async move {
        let ran = timeline.run(stop_rx).await;
        if has_faults {
            goose::trigger_killswitch("the fault timeline ended");
        }
        ran
    });
    let outcome = attack.execute().await;
    let _ = stop_tx.send(true);
    let ran = timeline.await.unwrap_or_else(|_| Ran {
        phases: Vec::new(),
        found: Vec::new(),
        last_fault_end: None,
        server: None,
    });
    (outcome, ran)
}

/// Goose's threshold results and any error that ended the run.
fn goose_results(
    outcome: Result<GooseMetrics, GooseError>,
) -> (Vec<ThresholdResult>, Option<GooseMetrics>, Option<String>) {
    match outcome {
        Ok(metrics) => (metrics.thresholds.clone(), Some(metrics), None),
        Err(GooseError::ThresholdsFailed { failed, metrics }) => {
            let mut all = metrics.thresholds.clone();
            if all.is_empty() {
                all = failed;
            }
            (all, Some(*metrics.0), None)
        }
        Err(e) => (Vec::new(), None, Some(e.to_string())),
    }
}

/// Runs the load and writes the verdict; returns whether everything passed.
pub async fn run(
    plan: Plan,
    goose_config: GooseConfiguration,
    run_time: Option<u64>,
    users: usize,
) -> anyhow::Result<bool> {
    let client = Client::new(&plan.host, plan.api_key.clone(), Duration::from_secs(10));
    let (mut server, proxies) = launch(&plan).await?;
    let shared = prepare(&plan, &client, server.as_mut()).await?;
    let build = server_build(&client).await;
    let (attack, phase_rules) = attack(&plan, goose_config, run_time, users, &shared)?;
    // A proxy closes when its last handle goes: these stay until the verdict is in.
    let _keep_proxies_alive = proxies.clone();
    let start = Instant::now();
    let timeline = Timeline {
        faults: plan.faults.clone(),
        phase_seconds: plan.phase_seconds,
        proxies,
        server,
        shared: shared.clone(),
        client: client.clone(),
        start,
    };
    let (outcome, mut ran) = execute(attack, timeline).await;
    let _keep_server_alive = ran.server.take();
    let load_end = start.elapsed().as_secs_f64();
    // The last phase's requests ran until the load ended; without faults, all is baseline.
    if ran.phases.is_empty() {
        ran.phases.push(PhaseRecord {
            phase: scenarios::PHASES[0].into(),
            fault: None,
            start_seconds: 0.0,
            end_seconds: load_end,
            cut_short: false,
        });
    }
    if let Some(last) = ran.phases.last_mut() {
        last.end_seconds = last.end_seconds.max(load_end);
    }
    let (mut thresholds, metrics, goose_error) = goose_results(outcome);
    let calm: f64 = ran
        .phases
        .iter()
        .filter(|p| p.fault.is_none())
        .map(|p| p.end_seconds - p.start_seconds)
        .sum();
    for rule in &phase_rules {
        let empty = GooseMetrics::default();
        let metrics = metrics.as_ref().unwrap_or(&empty);
        thresholds.push(crate::thresholds::judge(rule, metrics, calm));
    }
    let statuses = shared.statuses();
    let faults: Vec<FaultOutcome> = ran
        .found
        .drain(..)
        .map(|(fault, phase, found)| timeline::outcome(&fault, found, statuses.get(&phase)))
        .collect();
    // The checker waits out the server's leases after a crash, with margin.
    let converge = if plan.faults.is_empty() {
        plan.converge
    } else {
        plan.converge.max(CONVERGE_WAIT)
    };
    let _ = wait_healthy(&client, Duration::from_secs(30)).await;
    let (campaigns, donations, anomalies) = shared.truth.snapshot();
    let verify_start = start.elapsed().as_secs_f64();
    let report = invariants::verify(&client, &campaigns, &donations, &anomalies, converge).await;
    let after_last_fault = report
        .converged_after_seconds
        .zip(ran.last_fault_end)
        .map(|(c, end)| verify_start + c - end);
    let ok = report.ok
        && thresholds.iter().all(|t| t.passed)
        && goose_error.is_none()
        && faults.iter().all(|f| f.ok)
        && faults.len() == plan.faults.len();
    let verdict = json!({
        "ok": ok,
        "profile": plan.profile,
        "seed": plan.seed,
        "git_revision": build["git_revision"],
        "server_version": build["version"],
        "host": plan.host,
        "mix": plan.mix.to_string(),
        "users": users,
        "phases": ran.phases,
        "faults": plan.faults,
        "fault_outcomes": faults,
        "load_seconds": load_end,
        "thresholds": thresholds,
        "goose_error": goose_error,
        "invariants": report,
        "acknowledged_donations": donations.len(),
        "campaigns": campaigns.len(),
        "convergence_seconds_after_load": report.converged_after_seconds,
        "convergence_seconds_after_last_fault": after_last_fault,
    });
    write(&plan, &verdict, &campaigns, &donations, &anomalies)?;
    if let Some(metrics) = &metrics {
        print!("{}", request_table(metrics));
    }
    summary(&verdict, &report, &thresholds, &faults, &plan);
    Ok(ok)
}

/// verdict.json, and the ground truth beside it for whoever has to explain a failure.
fn write(
    plan: &Plan,
    verdict: &serde_json::Value,
    campaigns: &[String],
    donations: &[crate::truth::Donation],
    anomalies: &[String],
) -> anyhow::Result<()> {
    let truth_path = plan.verdict.with_file_name("truth.json");
    let truth = json!({"campaigns": campaigns, "donations": donations, "anomalies": anomalies});
    std::fs::write(&truth_path, serde_json::to_vec_pretty(&truth)?)
        .with_context(|| format!("cannot write {}", truth_path.display()))?;
    std::fs::write(&plan.verdict, serde_json::to_vec_pretty(verdict)?)
        .with_context(|| format!("cannot write {}", plan.verdict.display()))
}

fn summary(
    verdict: &serde_json::Value,
    report: &Report,
    thresholds: &[ThresholdResult],
    faults: &[FaultOutcome],
    plan: &Plan,
) {
    let mark = |ok: bool| if ok { "ok" } else { "FAIL" };
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
        "seed {}  mix {}  acknowledged donations {}  campaigns {}",
        plan.seed, plan.mix, verdict["acknowledged_donations"], verdict["campaigns"]
    );
    if let Some(revision) = verdict["git_revision"].as_str() {
        println!(
            "server {} built from {revision}",
            verdict["server_version"]
                .as_str()
                .unwrap_or("(version unknown)")
        );
    }
    for f in faults {
        let converged = f
            .converged_seconds_after_fault
            .map_or("NOT converged".to_string(), |s| {
                format!("converged {s:.1} s after")
            });
        println!(
            "  [{}] fault {}: {} acknowledged, {} lost, {} double-counted, {} stuck, {converged}; non-2xx during it {:?}",
            mark(f.ok),
            f.fault,
            f.acknowledged_donations,
            f.lost,
            f.double_counted,
            f.stuck,
            f.non_2xx_during_fault
        );
        for failure in &f.failures {
            println!("        {failure}");
        }
    }
    for c in &report.checks {
        println!("  [{}] {} ({} checked)", mark(c.ok), c.name, c.checked);
        for f in &c.failures {
            println!("        {f}");
        }
    }
    for t in thresholds {
        println!(
            "  [{}] threshold {} (observed {})",
            mark(t.passed),
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

/// Every request of the run with its whole name (method, phase and route), as k6 prints its
/// end-of-test summary: count, failures and response times in milliseconds.
pub fn request_table(metrics: &GooseMetrics) -> String {
    let mut rows: Vec<(&String, &goose::metrics::GooseRequestMetricAggregate)> =
        metrics.requests.iter().collect();
    if rows.is_empty() {
        return String::new();
    }
    rows.sort_by(|a, b| a.0.cmp(b.0));
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0)
        .max(8);
    let mut out = format!(
        "\n  {:width$}  {:>8}  {:>6}  {:>8}  {:>7}  {:>7}  {:>7}  {:>7}\n",
        "request", "count", "fail", "avg ms", "p50", "p95", "p99", "max"
    );
    let ms = |us: u64| format!("{:.0}", us as f64 / 1000.0);
    for (name, r) in &rows {
        let t = &r.raw_data;
        out.push_str(&format!(
            "  {name:width$}  {:>8}  {:>6}  {:>8.1}  {:>7}  {:>7}  {:>7}  {:>7}\n",
            r.success_count + r.fail_count,
            r.fail_count,
            t.average_ms(),
            ms(t.percentile_us(0.50)),
            ms(t.percentile_us(0.95)),
            ms(t.percentile_us(0.99)),
            ms(t.maximum_time_us),
        ));
    }
    let together = crate::thresholds::combined(metrics, |_| true);
    let all = &together.times;
    out.push_str(&format!(
        "  {:width$}  {:>8}  {:>6}  {:>8.1}  {:>7}  {:>7}  {:>7}  {:>7}\n",
        "all",
        together.requests,
        together.failures,
        all.average_ms(),
        ms(all.percentile_us(0.50)),
        ms(all.percentile_us(0.95)),
        ms(all.percentile_us(0.99)),
        ms(all.maximum_time_us),
    ));
    out
}
