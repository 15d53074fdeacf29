//! `[totals]`: the totals read model's cache. No checks: any TTL, even zero, is safe, because
//! every change to the read model invalidates its entry anyway.

use serde::{Deserialize, Serialize};

/// `[totals]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TotalsSettings {
    /// Longest a cached total lives, in seconds; a safety net only, since every change to the
    /// read model invalidates its entry.
    pub cache_ttl_seconds: u64,
}

impl Default for TotalsSettings {
    fn default() -> Self {
        TotalsSettings {
            cache_ttl_seconds: 5,
        }
    }
}
