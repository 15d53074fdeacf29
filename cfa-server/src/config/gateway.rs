//! `[gateway]` and `[gateway.rate_limit]`: the API gateway's upstreams, timeouts, circuit
//! breakers and retries, and the token buckets in front of the API.

use std::collections::BTreeMap;

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};

use super::ConfigError;

/// The services a gateway can route to, as `[gateway.upstreams]` names them and as their
/// `/api/v1/<service>/health` aliases spell them.
pub const SERVICES: [&str; 4] = ["donations", "payments", "totals", "notifications"];

/// `[gateway]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySettings {
    /// `[gateway.rate_limit]`
    pub rate_limit: RateLimitSettings,
    /// Upstream base URLs per service (`donations`, `payments`, `totals`, `notifications`), for
    /// the gateway role; each a list, or one comma-separated string
    /// (`CFA_GATEWAY__UPSTREAMS__DONATIONS=http://10.0.0.1:8001,http://10.0.0.2:8001`).
    #[serde(deserialize_with = "upstreams_from_lists_or_csv")]
    pub upstreams: BTreeMap<String, Vec<String>>,
    /// Longest an upstream may take to answer, in milliseconds.
    pub timeout_ms: u64,
    /// How often each upstream's `/health` is checked, in milliseconds.
    pub health_interval_ms: u64,
    /// Consecutive failures that open an upstream's circuit breaker.
    pub failure_threshold: u32,
    /// How long an open breaker keeps an upstream out, in seconds.
    pub open_seconds: u64,
    /// Further upstreams tried when one fails (only for requests that are safe to repeat).
    pub retries: u32,
    /// Proxies (CIDRs, e.g. `10.0.0.0/8` or `127.0.0.1/32`) whose `X-Forwarded-For` is
    /// believed: behind them, the client is the nearest address they forwarded for. Any other
    /// peer is the client itself, whatever it claims. Empty by default.
    #[serde(deserialize_with = "strings_from_list_or_csv")]
    pub trusted_proxies: Vec<String>,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            rate_limit: RateLimitSettings::default(),
            upstreams: BTreeMap::new(),
            timeout_ms: 10_000,
            health_interval_ms: 2_000,
            failure_threshold: 3,
            open_seconds: 10,
            retries: 1,
            trusted_proxies: Vec::new(),
        }
    }
}

impl GatewaySettings {
    /// The trusted proxies, parsed; an entry that is not a CIDR or an address is named.
    pub fn trusted_networks(&self) -> Result<Vec<IpNet>, ConfigError> {
        self.trusted_proxies
            .iter()
            .map(|raw| {
                raw.parse::<IpNet>()
                    .or_else(|_| raw.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        ConfigError(format!(
                            "gateway.trusted_proxies: {raw:?} is not a CIDR such as 10.0.0.0/8"
                        ))
                    })
            })
            .collect()
    }

    /// Checks the upstreams: at least one service, each a known one with one or more http(s)
    /// base URLs. Only a gateway in its own process routes over the network, so
    /// [`super::Settings::validate`] calls this for that case alone.
    pub fn validate_upstreams(&self) -> Result<(), ConfigError> {
        if self.upstreams.is_empty() {
            return Err(ConfigError(
                "gateway.upstreams: the gateway role needs upstreams, e.g. \
                 CFA_GATEWAY__UPSTREAMS__DONATIONS='[\"http://10.0.0.1:8001\"]'"
                    .into(),
            ));
        }
        for (service, urls) in &self.upstreams {
            if !SERVICES.contains(&service.as_str()) {
                return Err(ConfigError(format!(
                    "gateway.upstreams.{service}: services are donations, payments, totals, notifications"
                )));
            }
            if urls.is_empty()
                || urls
                    .iter()
                    .any(|u| !(u.starts_with("http://") || u.starts_with("https://")))
            {
                return Err(ConfigError(format!(
                    "gateway.upstreams.{service}: give one or more http(s) base URLs"
                )));
            }
        }
        Ok(())
    }
}

/// Accepts a list of strings, or one comma-separated string (as environment variables give it).
fn strings_from_list_or_csv<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(super::secret::secrets_from_list_or_csv(d)?
        .iter()
        .map(|s| s.expose().to_string())
        .collect())
}

/// Each service's upstreams as a list, or as one comma-separated string.
fn upstreams_from_lists_or_csv<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    struct Urls(#[serde(deserialize_with = "strings_from_list_or_csv")] Vec<String>);
    Ok(BTreeMap::<String, Urls>::deserialize(d)?
        .into_iter()
        .map(|(service, Urls(urls))| (service, urls))
        .collect())
}

/// `[gateway.rate_limit]`: token buckets per client IP and per API key.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    /// Apply the limits (turn off for load tests: `CFA_GATEWAY__RATE_LIMIT__ENABLED=false`).
    pub enabled: bool,
    /// Sustained requests per minute from one client IP (requests without an API key).
    pub per_ip_per_minute: u32,
    /// Sustained requests per minute with one API key.
    pub per_key_per_minute: u32,
    /// Requests a client may send at once before the rate applies.
    pub burst: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            enabled: true,
            per_ip_per_minute: 600,
            per_key_per_minute: 6000,
            burst: 100,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::load;
    use super::super::{Overrides, Role};
    use super::*;

    #[test]
    fn trusted_proxies_are_cidrs_or_addresses_and_a_bad_one_is_named() {
        let s = load(
            "",
            &[("CFA_GATEWAY__TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1")],
            Overrides::default(),
        )
        .expect("loads");
        let nets = s.gateway.trusted_networks().expect("parses");
        assert_eq!(nets.len(), 2);
        assert!(nets[1].contains(&"127.0.0.1".parse::<IpAddr>().expect("ip")));
        let err = load(
            "[gateway]\ntrusted_proxies = [\"10.0.0.0/33\"]\n",
            &[],
            Overrides::default(),
        )
        .expect_err("refused");
        assert!(err.to_string().contains("gateway.trusted_proxies"), "{err}");
    }

    #[test]
    fn gateway_upstreams_come_from_the_environment_and_are_checked() {
        let env = [
            ("CFA_AMQP_URL", "amqp://x"),
            ("CFA_DATABASE_URL", "postgres://db/cfa"),
            (
                "CFA_GATEWAY__UPSTREAMS__DONATIONS",
                "[\"http://127.0.0.1:8001\", \"http://127.0.0.1:8011\"]",
            ),
        ];
        let gateway = Overrides {
            roles: Some(vec![Role::Gateway]),
            ..Overrides::default()
        };
        let s = load("", &env, gateway.clone()).expect("gateway");
        assert_eq!(s.gateway.upstreams["donations"].len(), 2);
        assert_eq!(s.server.listen.port(), 8000);
        let err = load("", &env[..2], gateway.clone()).expect_err("no upstreams");
        assert!(err.to_string().contains("gateway.upstreams"), "{err}");
        let bad = [
            env[0],
            env[1],
            ("CFA_GATEWAY__UPSTREAMS__WALLETS", "[\"http://x\"]"),
        ];
        let err = load("", &bad, gateway).expect_err("unknown service");
        assert!(err.to_string().contains("wallets"), "{err}");
    }

    #[test]
    fn an_upstream_needs_http_urls() {
        let with = |urls: &[&str]| GatewaySettings {
            upstreams: BTreeMap::from([(
                "payments".to_string(),
                urls.iter().map(|u| (*u).to_string()).collect(),
            )]),
            ..GatewaySettings::default()
        };
        for urls in [&[][..], &["10.0.0.1:8002"][..]] {
            let err = with(urls).validate_upstreams().expect_err("not a base URL");
            assert!(
                err.to_string()
                    .contains("gateway.upstreams.payments: give one or more http(s) base URLs"),
                "{err}"
            );
        }
        with(&["https://10.0.0.1:8002"])
            .validate_upstreams()
            .expect("an https URL is fine");
    }

    #[test]
    fn an_all_in_one_process_ignores_the_upstreams() {
        load(
            "",
            &[("CFA_GATEWAY__UPSTREAMS__WALLETS", "[\"nowhere\"]")],
            Overrides::default(),
        )
        .expect("one process routes in-process");
    }
}
