//! Where the CLI finds its server and keys: flags, then `CFA_*` variables (clap reads both), then
//! the chosen profile of the config file, then defaults.
//!
//! The file is `<config dir>/careforall/cli.toml` (`~/.config/careforall/cli.toml` on Linux), or
//! `CFA_CLI_CONFIG`:
//!
//! ```toml
//! profile = "staging"            # used when --profile / CFA_PROFILE is not given
//!
//! [profiles.staging]
//! server = "https://staging.example.org"
//! api_key = "…"
//! webhook_secret = "whsec_…"
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// The default server: the all-in-one `cfa-server run`.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8000";

/// One profile.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Base URL of the server (or the gateway).
    pub server: Option<String>,
    /// Operator API key.
    pub api_key: Option<String>,
    /// Webhook signing secret, for `webhooks send`.
    pub webhook_secret: Option<String>,
}

/// The config file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// The default profile's name.
    pub profile: Option<String>,
    /// Profiles by name.
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// The file's path: `CFA_CLI_CONFIG`, else the user's config directory.
pub fn path(explicit: Option<PathBuf>) -> Option<PathBuf> {
    explicit.or_else(|| dirs::config_dir().map(|d| d.join("careforall").join("cli.toml")))
}

/// What the command line settled on.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    /// Base URL.
    pub server: String,
    /// Operator key.
    pub api_key: Option<String>,
    /// Webhook secret.
    pub webhook_secret: Option<String>,
}

/// Merges flags/environment (`given`) over the profile named by `profile` (or the file's default).
pub fn resolve(
    given: Profile,
    profile: Option<&str>,
    file_path: Option<PathBuf>,
) -> Result<Resolved, String> {
    let file = match &file_path {
        Some(p) if p.is_file() => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            toml::from_str::<File>(&text)
                .map_err(|e| format!("{} is not a valid CLI config: {e}", p.display()))?
        }
        _ => File::default(),
    };
    let chosen = profile.map(str::to_string).or(file.profile.clone());
    let from_file = match &chosen {
        Some(name) => file.profiles.get(name).cloned().ok_or_else(|| {
            let known: Vec<&str> = file.profiles.keys().map(String::as_str).collect();
            format!(
                "no profile `{name}` in {}; known: {}",
                file_path
                    .as_ref()
                    .map_or("the config file".to_string(), |p| p.display().to_string()),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )
        })?,
        None => Profile::default(),
    };
    Ok(Resolved {
        server: given
            .server
            .or(from_file.server)
            .unwrap_or_else(|| DEFAULT_SERVER.to_string()),
        api_key: given.api_key.or(from_file.api_key),
        webhook_secret: given.webhook_secret.or(from_file.webhook_secret),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_profile_and_the_profile_over_defaults() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("cli.toml");
        std::fs::write(
            &file,
            "profile = \"a\"\n[profiles.a]\nserver = \"http://a\"\napi_key = \"ka\"\n[profiles.b]\nserver = \"http://b\"\n",
        )
        .expect("write");
        let r = resolve(Profile::default(), None, Some(file.clone())).expect("resolve");
        assert_eq!(
            (r.server.as_str(), r.api_key.as_deref()),
            ("http://a", Some("ka"))
        );
        let r = resolve(Profile::default(), Some("b"), Some(file.clone())).expect("resolve");
        assert_eq!((r.server.as_str(), r.api_key), ("http://b", None));
        let given = Profile {
            server: Some("http://flag".into()),
            ..Profile::default()
        };
        assert_eq!(
            resolve(given, None, Some(file.clone())).expect("r").server,
            "http://flag"
        );
        let missing = resolve(Profile::default(), Some("c"), Some(file.clone())).expect_err("no c");
        assert!(
            missing.contains("no profile `c`") && missing.contains("a, b"),
            "{missing}"
        );
        let none = resolve(
            Profile::default(),
            None,
            Some(dir.path().join("absent.toml")),
        )
        .expect("r");
        assert_eq!(none.server, DEFAULT_SERVER);
        std::fs::write(&file, "[profiles.a]\nsever = \"typo\"\n").expect("write");
        let bad = resolve(Profile::default(), None, Some(file)).expect_err("typo");
        assert!(bad.contains("sever"), "names the key: {bad}");
    }
}
