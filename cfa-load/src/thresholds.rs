//! Thresholds when the timeline has faults: they judge the baseline and recovery phases only.
//!
//! Goose judges a rule that names a request (`p99<2s for POST baseline: /donations`) itself,
//! only at the end (`--no-threshold-abort`, so a fault cannot stop the load). A rule over every
//! request (`error-rate<1%`) would count the fault's own failures, so cfa-load takes it from
//! goose and judges it over the requests of the baseline and recovery phases, from goose's
//! metrics. Goose parses every rule first, so the text here is known to be valid.

use std::collections::BTreeMap;

use goose::metrics::{GooseMetrics, GooseRequestMetricTimingData, TimeBuckets};
use goose::threshold::{Threshold, ThresholdResult};

/// The rules goose judges (they name a request) and the rules judged here (over every
/// baseline and recovery request); an invalid rule is refused with goose's reason.
pub fn split(rules: &[String]) -> Result<(Vec<String>, Vec<String>), String> {
    let mut goose = Vec::new();
    let mut ours = Vec::new();
    for rule in rules {
        rule.parse::<Threshold>()
            .map_err(|e| format!("--threshold {rule:?}: {e}"))?;
        if rule.contains(" for ") {
            goose.push(rule.clone());
        } else {
            ours.push(rule.trim().to_string());
        }
    }
    Ok((goose, ours))
}

/// Whether goose's request key (`POST baseline: /donations`) ran outside any fault.
fn outside_faults(key: &str) -> bool {
    key.split_once(' ')
        .is_some_and(|(_, name)| name.starts_with("baseline: ") || name.starts_with("recovery: "))
}

/// Requests counted together.
pub(crate) struct Together {
    pub(crate) requests: usize,
    pub(crate) failures: usize,
    pub(crate) times: GooseRequestMetricTimingData,
}

/// The baseline and recovery requests together.
fn together(metrics: &GooseMetrics) -> Together {
    combined(metrics, outside_faults)
}

/// The requests whose goose key `keep` accepts, together.
pub(crate) fn combined(metrics: &GooseMetrics, keep: impl Fn(&str) -> bool) -> Together {
    let mut buckets: BTreeMap<u64, usize> = BTreeMap::new();
    let mut all = Together {
        requests: 0,
        failures: 0,
        times: GooseRequestMetricTimingData::default(),
    };
    for (_, r) in metrics.requests.iter().filter(|(k, _)| keep(k)) {
        all.requests += r.success_count + r.fail_count;
        all.failures += r.fail_count;
        let t = &r.raw_data;
        for (bucket, count) in t.times_us.iter() {
            *buckets.entry(*bucket).or_default() += count;
        }
        if t.counter > 0
            && (all.times.counter == 0 || t.minimum_time_us < all.times.minimum_time_us)
        {
            all.times.minimum_time_us = t.minimum_time_us;
        }
        all.times.maximum_time_us = all.times.maximum_time_us.max(t.maximum_time_us);
        all.times.total_time_us += t.total_time_us;
        all.times.counter += t.counter;
    }
    all.times.times_us = buckets.into_iter().collect::<TimeBuckets>();
    all
}

/// Judges `rule` (over every request) on the baseline and recovery requests, which ran for
/// `seconds` together.
pub fn judge(rule: &str, metrics: &GooseMetrics, seconds: f64) -> ThresholdResult {
    let all = together(metrics);
    let (metric, op, limit) = parts(rule);
    let observed = match metric {
        "error-rate" if all.requests > 0 => {
            Some((all.failures as f64 / all.requests as f64 * 100.0, "%"))
        }
        "rps" if all.requests > 0 && seconds >= 1.0 => {
            Some((all.requests as f64 / seconds, " rps"))
        }
        "avg" if all.times.counter > 0 => Some((
            all.times.total_time_us as f64 / all.times.counter as f64 / 1000.0,
            "ms",
        )),
        "max" if all.times.counter > 0 => Some((all.times.maximum_time_us as f64 / 1000.0, "ms")),
        p if p.starts_with('p') && all.times.counter > 0 => {
            let percent: f32 = p[1..].parse().unwrap_or(100.0);
            Some((
                all.times.percentile_us(percent / 100.0) as f64 / 1000.0,
                "ms",
            ))
        }
        _ => None,
    };
    let Some((value, unit)) = observed else {
        return ThresholdResult {
            rule: rule.into(),
            observed: "no samples in baseline or recovery".into(),
            value: None,
            passed: false,
            aborted: false,
        };
    };
    let passed = match op {
        "<" => value < limit,
        "<=" => value <= limit,
        ">" => value > limit,
        _ => value >= limit,
    };
    ThresholdResult {
        rule: rule.into(),
        observed: format!("{value:.2}{unit} over baseline and recovery"),
        value: Some(value),
        passed,
        aborted: false,
    }
}

/// A valid rule's metric, operator and limit (milliseconds for a time, a percent, a rate).
fn parts(rule: &str) -> (&str, &str, f64) {
    let at = rule.find(['<', '>']).unwrap_or(rule.len());
    let (metric, rest) = rule.split_at(at);
    let op_len = if rest.get(1..2) == Some("=") { 2 } else { 1 };
    let (op, value) = rest.split_at(op_len.min(rest.len()));
    let value = value.trim().trim_end_matches('%');
    let (number, scale) = if let Some(v) = value.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = value.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = value.strip_suffix('s') {
        (v, 1000.0)
    } else {
        (value, 1.0)
    };
    let limit = number.trim().parse::<f64>().unwrap_or(0.0) * scale;
    (metric.trim(), op, limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_over_every_request_are_judged_here_and_named_ones_by_goose() {
        let (goose, ours) = split(&[
            "error-rate<1%".to_string(),
            "p99<2s for POST baseline: /donations".to_string(),
        ])
        .expect("valid");
        assert_eq!(goose, ["p99<2s for POST baseline: /donations"]);
        assert_eq!(ours, ["error-rate<1%"]);
        assert!(split(&["p100<1s".to_string()]).is_err());
    }

    #[test]
    fn a_rule_reads_as_metric_operator_and_limit() {
        assert_eq!(parts("error-rate<1%"), ("error-rate", "<", 1.0));
        assert_eq!(parts("p99<=2s"), ("p99", "<=", 2000.0));
        assert_eq!(parts("avg<500"), ("avg", "<", 500.0));
        assert_eq!(parts("max < 250ms"), ("max", "<", 250.0));
        assert_eq!(parts("rps>=20"), ("rps", ">=", 20.0));
    }

    #[test]
    fn only_baseline_and_recovery_requests_count() {
        assert!(outside_faults("POST baseline: /donations"));
        assert!(outside_faults("GET recovery: /totals"));
        assert!(!outside_faults("POST redis-outage: /donations"));
        assert!(!outside_faults("POST server-kill: /donations (retry)"));
    }
}
