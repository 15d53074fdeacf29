//! `[auth]`: the operator API keys. Who may use the operator endpoints without a key depends on
//! the listen address too: [`super::Settings::operators_local_only`].

use serde::{Deserialize, Serialize};

use super::secret::{Secret, secrets_from_list_or_csv};

/// `[auth]`
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// Operator API keys (`Authorization: Bearer <key>`). Empty: operator endpoints are open on
    /// a loopback address, and answer only this host's requests on any other; start-up and
    /// `/ready` both say which.
    #[serde(deserialize_with = "secrets_from_list_or_csv")]
    pub api_keys: Vec<Secret>,
    /// Open the operator endpoints to everyone on a non-loopback address when no keys are set
    /// (otherwise they answer only requests from this host).
    pub allow_open: bool,
}
