//! `[redis]`: Redis as a second-level cache. Optional everywhere: without it, or when it is slow,
//! requests fall back to the database.

use serde::{Deserialize, Serialize};

use super::DatabaseUrl;

/// `[redis]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSettings {
    /// `redis://host:6379/0`; empty means no Redis. Masked when printed.
    pub url: DatabaseUrl,
    /// A prefix for every key.
    pub prefix: String,
    /// Longest a Redis call may take before the request falls back to the database, in ms.
    pub timeout_ms: u64,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            url: DatabaseUrl(String::new()),
            prefix: "cfa:".into(),
            timeout_ms: 50,
        }
    }
}

impl RedisSettings {
    /// Whether Redis is used: the URL is set to something other than blanks. Trimmed because a
    /// blank `CFA_REDIS_URL=" "` in a shell or compose file means "unset", not a server called
    /// `" "`.
    pub fn enabled(&self) -> bool {
        !self.url.0.trim().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blank_url_means_no_redis() {
        let with = |url: &str| RedisSettings {
            url: DatabaseUrl(url.into()),
            ..RedisSettings::default()
        };
        assert!(!RedisSettings::default().enabled());
        assert!(!with(" ").enabled());
        assert!(with("redis://127.0.0.1:6379").enabled());
    }
}
