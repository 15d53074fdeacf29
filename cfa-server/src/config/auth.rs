//! `[auth]`: the operator API keys. Whether open endpoints are acceptable depends on the listen
//! address, so that check lives with [`super::Settings::validate`].

use serde::{Deserialize, Serialize};

use super::secret::{Secret, secrets_from_list_or_csv};

/// `[auth]`
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// Operator API keys (`Authorization: Bearer <key>`). Empty: operator endpoints are open,
    /// which start-up and `/ready` both say.
    #[serde(deserialize_with = "secrets_from_list_or_csv")]
    pub api_keys: Vec<Secret>,
    /// Allow open operator endpoints on a non-loopback address (otherwise start-up refuses).
    pub allow_open: bool,
}
