//! `[metrics]`: where the Prometheus scrape is served.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// `[metrics]`
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Serve `/metrics` on this address only (e.g. `127.0.0.1:9100`, reachable by Prometheus but
    /// not by the public), instead of beside the API. Unset: `/metrics` is on `server.listen`.
    pub listen: Option<SocketAddr>,
}
