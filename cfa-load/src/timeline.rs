//! The fault timeline: for each fault, a baseline, the fault, and a recovery that lasts until
//! the fault's own verdict is in ([`crate::watch`]); the load ends with the timeline.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cfa_cli::client::Client;
use serde::Serialize;
use tokio::sync::watch;

use crate::proxy::{FaultProxy, Mode};
use crate::scenarios::{PHASES, Shared};
use crate::server::{ManagedServer, wait_healthy};
use crate::watch::{FaultOutcome, Found, Watch};

/// How long a killed server may take to answer again once started.
const RESTART_WAIT: Duration = Duration::from_secs(60);

/// A fault: which dependency, what happens to it, and for how long.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Fault {
    /// `postgres`, `rabbitmq`, `redis`, or `server` (killed with SIGKILL and started again).
    pub target: String,
    /// What the proxy does (`outage`, `blackhole`, `latency:MS`, …; `flap`: one-second
    /// outages with a second between them; for `server`: `kill`).
    pub mode: String,
    /// Seconds the fault lasts, when not the `--phases` fault length.
    pub seconds: Option<u64>,
}

impl Fault {
    /// Parses `postgres:outage`, `redis:latency:300`, `rabbitmq:outage@30`, `server:kill@5`.
    pub fn parse(text: &str) -> Result<Fault, String> {
        let (spec, seconds) = match text.rsplit_once('@') {
            Some((spec, s)) => {
                let s = s.trim_end_matches('s');
                let seconds: u64 = s.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    format!("`{text}`: write the fault's seconds after @, e.g. redis:outage@30")
                })?;
                (spec, Some(seconds))
            }
            None => (text, None),
        };
        let (target, mode) = spec
            .split_once(':')
            .ok_or_else(|| format!("`{text}`: write target:fault, e.g. postgres:outage"))?;
        match target {
            "postgres" | "rabbitmq" | "redis" if mode == "flap" => {}
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
            seconds,
        })
    }

    /// The name its phase's requests carry: `redis-blackhole`, `postgres-latency-300`.
    pub fn name(&self) -> String {
        format!("{}-{}", self.target, self.mode.replace(':', "-"))
    }
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
    /// The load ended before the phase did.
    pub cut_short: bool,
}

/// What the timeline works on.
pub struct Timeline {
    /// The faults, one after another.
    pub faults: Vec<Fault>,
    /// Seconds of baseline, fault (when the fault names none) and at least of recovery.
    pub phase_seconds: (u64, u64, u64),
    /// The proxies, by fault target.
    pub proxies: Vec<(String, FaultProxy)>,
    /// The server, when cfa-load manages it.
    pub server: Option<ManagedServer>,
    /// Shared with the users: the phase and campaign set now.
    pub shared: Arc<Shared>,
    /// For the fault verdicts.
    pub client: Client,
    /// When the load started.
    pub start: Instant,
}

/// What the timeline ran.
pub struct Ran {
    /// Every phase, as it ran.
    pub phases: Vec<PhaseRecord>,
    /// What each fault left behind, without its statuses (added from the load's record).
    pub found: Vec<(Fault, usize, Found)>,
    /// When the last fault ended, seconds since the start of the load.
    pub last_fault_end: Option<f64>,
    /// The server, kept alive for the verdict.
    pub server: Option<ManagedServer>,
}

impl Timeline {
    /// Runs every fault's cycle; stops early (putting everything back) when `stop` turns true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Ran {
        let mut ran = Ran {
            phases: Vec::new(),
            found: Vec::new(),
            last_fault_end: None,
            server: None,
        };
        for (k, fault) in self.faults.clone().iter().enumerate() {
            let (end_tx, end_rx) = watch::channel(None);
            let watcher =
                tokio::spawn(Watch::new(self.client.clone(), self.shared.clone(), k).run(end_rx));
            let baseline = self.phase(0, None, ran.phases.len());
            let whole = pause(Duration::from_secs(self.phase_seconds.0), &mut stop).await;
            ran.phases.push(self.ended(baseline, !whole));
            if !whole {
                break;
            }
            let faulted = self.phase(1, Some(fault), ran.phases.len());
            let whole = self.fault(fault, &mut stop).await;
            let _ = end_tx.send(Some(Instant::now()));
            ran.last_fault_end = Some(self.start.elapsed().as_secs_f64());
            // The recovery's donations go to the next cycle's campaigns.
            self.shared.campaign_set.store(k + 1, Ordering::Relaxed);
            ran.phases.push(self.ended(faulted, !whole));
            let recovery = self.phase(2, None, ran.phases.len());
            let whole = whole && pause(Duration::from_secs(self.phase_seconds.2), &mut stop).await;
            // The recovery lasts until the fault's verdict is in.
            let found = watcher.await;
            ran.phases.push(self.ended(recovery, !whole));
            if let Ok(found) = found {
                ran.found.push((fault.clone(), ran.phases.len() - 2, found));
            }
            if !whole {
                break;
            }
        }
        ran.server = self.server.take();
        ran
    }

    /// Starts phase `i` (an index into [`PHASES`]), the `number`th of the run; returns its
    /// record so far.
    fn phase(&self, i: usize, fault: Option<&Fault>, number: usize) -> PhaseRecord {
        if let Some(f) = fault {
            *self
                .shared
                .fault_name
                .write()
                .unwrap_or_else(|p| p.into_inner()) = f.name();
        }
        let begin = self.start.elapsed().as_secs_f64();
        // The users' statuses are counted against the phase's number.
        self.shared.phase_number.store(number, Ordering::Relaxed);
        self.shared.phase.store(i, Ordering::Relaxed);
        PhaseRecord {
            phase: PHASES[i].into(),
            fault: fault.cloned(),
            start_seconds: begin,
            end_seconds: begin,
            cut_short: false,
        }
    }

    fn ended(&self, mut record: PhaseRecord, cut_short: bool) -> PhaseRecord {
        record.end_seconds = self.start.elapsed().as_secs_f64();
        record.cut_short = cut_short;
        record
    }

    /// Applies the fault for its length and puts things back; false when stopped early.
    async fn fault(&mut self, fault: &Fault, stop: &mut watch::Receiver<bool>) -> bool {
        let length = Duration::from_secs(fault.seconds.unwrap_or(self.phase_seconds.1));
        if fault.target == "server" {
            if let Some(s) = self.server.as_mut() {
                s.kill();
            }
            let whole = pause(length, stop).await;
            if let Some(Err(e)) = self.server.as_mut().map(ManagedServer::start) {
                eprintln!("cfa-load: cannot start the server again: {e:#}");
            }
            // The fault ends when the server answers again.
            if !wait_healthy(&self.client, RESTART_WAIT).await {
                eprintln!("cfa-load: the server does not answer /health after its restart");
            }
            return whole;
        }
        let Some((_, proxy)) = self.proxies.iter().find(|(t, _)| *t == fault.target) else {
            return true;
        };
        let proxy = proxy.clone();
        let whole = if fault.mode == "flap" {
            flap(&proxy, length, stop).await
        } else {
            proxy.set(Mode::parse(&fault.mode).unwrap_or(Mode::Pass));
            pause(length, stop).await
        };
        proxy.set(Mode::Pass);
        whole
    }
}

/// One-second outages with a second of normal service between them, for `length`.
async fn flap(proxy: &FaultProxy, length: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    let end = Instant::now() + length;
    let second = Duration::from_secs(1);
    while Instant::now() < end {
        proxy.set(Mode::Outage);
        if !pause(second.min(end - Instant::now()), stop).await {
            return false;
        }
        proxy.set(Mode::Pass);
        let left = end.saturating_duration_since(Instant::now());
        if !pause(second.min(left), stop).await {
            return false;
        }
    }
    true
}

/// Sleeps `length`; false when `stop` turned true first.
async fn pause(length: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        () = tokio::time::sleep(length) => true,
        _ = stop.wait_for(|s| *s) => false,
    }
}

/// A fault's outcome, with the statuses its phase got.
pub fn outcome(
    fault: &Fault,
    found: Found,
    statuses: Option<&std::collections::BTreeMap<u16, u64>>,
) -> FaultOutcome {
    let non_2xx = statuses
        .into_iter()
        .flatten()
        .filter(|(s, _)| !(200..300).contains(*s))
        .map(|(s, n)| {
            let status = if *s == 0 {
                "no answer".to_string()
            } else {
                s.to_string()
            };
            (status, *n)
        })
        .collect();
    let limit = crate::watch::CONVERGE_LIMIT.as_secs();
    let ok = found.lost == 0
        && found.double_counted == 0
        && found.stuck == 0
        && found.converged_after.is_some_and(|s| s <= limit as f64);
    FaultOutcome {
        fault: fault.name(),
        acknowledged_donations: found.acknowledged,
        lost: found.lost,
        double_counted: found.double_counted,
        stuck: found.stuck,
        converged_seconds_after_fault: found.converged_after,
        converge_limit_seconds: limit,
        non_2xx_during_fault: non_2xx,
        failures: found.failures,
        ok,
    }
}

#[cfg(test)]
mod tests {
    use super::Fault;

    #[test]
    fn a_fault_names_its_target_mode_and_length() {
        let f = Fault::parse("rabbitmq:outage@30").expect("parses");
        assert_eq!(
            (f.target.as_str(), f.mode.as_str(), f.seconds),
            ("rabbitmq", "outage", Some(30))
        );
        assert_eq!(f.name(), "rabbitmq-outage");
        let f = Fault::parse("redis:latency:300").expect("parses");
        assert_eq!((f.mode.as_str(), f.seconds), ("latency:300", None));
        assert_eq!(f.name(), "redis-latency-300");
        assert_eq!(
            Fault::parse("postgres:flap@30s").expect("parses").seconds,
            Some(30)
        );
        assert_eq!(Fault::parse("server:kill@5").expect("parses").mode, "kill");
        assert!(Fault::parse("server:flap").is_err());
        assert!(Fault::parse("redis:outage@0").is_err());
        assert!(Fault::parse("disk:full").is_err());
    }
}
