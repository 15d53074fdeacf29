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

/// Where the config file is, and whether the user named it.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigPath {
    /// The file.
    pub path: PathBuf,
    /// Named by `--config` or `CFA_CLI_CONFIG`: then it must exist.
    pub explicit: bool,
}

/// The file's path: `--config` / `CFA_CLI_CONFIG`, else the user's config directory.
pub fn path(explicit: Option<PathBuf>) -> Option<ConfigPath> {
    match explicit {
        Some(path) => Some(ConfigPath {
            path,
            explicit: true,
        }),
        None => dirs::config_dir().map(|d| ConfigPath {
            path: d.join("careforall").join("cli.toml"),
            explicit: false,
        }),
    }
}

/// Reads the config file: empty when the default one does not exist; an error when a file the
/// user named does not, or when it does not parse (naming the key).
pub fn load(file_path: Option<&ConfigPath>) -> Result<File, String> {
    let Some(ConfigPath { path, explicit }) = file_path else {
        return Ok(File::default());
    };
    if !path.is_file() {
        if *explicit {
            return Err(format!(
                "the config file {} does not exist (named by --config or CFA_CLI_CONFIG); create it (see `cfa-cli help profiles`) or leave the option out",
                path.display()
            ));
        }
        return Ok(File::default());
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    toml::from_str::<File>(&text)
        .map_err(|e| format!("{} is not a valid CLI config: {e}", path.display()))
}

/// Checks that `server` is an http(s) URL with a host; `source` says where it came from.
pub fn check_server(server: &str, source: &str) -> Result<(), String> {
    let fix = "write it like http://127.0.0.1:8000";
    let url = reqwest::Url::parse(server)
        .map_err(|e| format!("the server `{server}` ({source}) is not a URL ({e}); {fix}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "the server `{server}` ({source}) is not an http:// or https:// URL; {fix}"
        ));
    }
    Ok(())
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
    file_path: Option<ConfigPath>,
) -> Result<Resolved, String> {
    let file = load(file_path.as_ref())?;
    let chosen = profile.map(str::to_string).or(file.profile.clone());
    let from_file = match &chosen {
        Some(name) => file.profiles.get(name).cloned().ok_or_else(|| {
            let known: Vec<&str> = file.profiles.keys().map(String::as_str).collect();
            format!(
                "no profile `{name}` in {}; known: {}",
                file_path
                    .as_ref()
                    .map_or("the config file".to_string(), |p| p
                        .path
                        .display()
                        .to_string()),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )
        })?,
        None => Profile::default(),
    };
    let server = match (given.server, from_file.server) {
        (Some(s), _) => {
            check_server(&s, "from --server or CFA_SERVER")?;
            s
        }
        (None, Some(s)) => {
            check_server(
                &s,
                &format!("from profile `{}`", chosen.unwrap_or_default()),
            )?;
            s
        }
        (None, None) => DEFAULT_SERVER.to_string(),
    };
    Ok(Resolved {
        server,
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
        let named = |p: &std::path::Path| {
            Some(ConfigPath {
                path: p.to_path_buf(),
                explicit: true,
            })
        };
        let r = resolve(Profile::default(), None, named(&file)).expect("resolve");
        assert_eq!(
            (r.server.as_str(), r.api_key.as_deref()),
            ("http://a", Some("ka"))
        );
        let r = resolve(Profile::default(), Some("b"), named(&file)).expect("resolve");
        assert_eq!((r.server.as_str(), r.api_key), ("http://b", None));
        let given = Profile {
            server: Some("http://flag".into()),
            ..Profile::default()
        };
        assert_eq!(
            resolve(given, None, named(&file)).expect("r").server,
            "http://flag"
        );
        let missing = resolve(Profile::default(), Some("c"), named(&file)).expect_err("no c");
        assert!(
            missing.contains("no profile `c`") && missing.contains("a, b"),
            "{missing}"
        );
        let absent = dir.path().join("absent.toml");
        let default_path = Some(ConfigPath {
            path: absent.clone(),
            explicit: false,
        });
        let none = resolve(Profile::default(), None, default_path).expect("r");
        assert_eq!(
            none.server, DEFAULT_SERVER,
            "the default file may be absent"
        );
        let named_absent = resolve(Profile::default(), None, named(&absent)).expect_err("absent");
        assert!(
            named_absent.contains("does not exist") && named_absent.contains("absent.toml"),
            "{named_absent}"
        );
        std::fs::write(&file, "[profiles.a]\nsever = \"typo\"\n").expect("write");
        let bad = resolve(Profile::default(), None, named(&file)).expect_err("typo");
        assert!(bad.contains("sever"), "names the key: {bad}");
    }

    #[test]
    fn a_server_that_is_not_an_http_url_is_refused_with_what_to_write() {
        for bad in [
            "not-a-url",
            "ftp://example.org",
            "127.0.0.1:8000",
            "http://",
        ] {
            let given = Profile {
                server: Some(bad.into()),
                ..Profile::default()
            };
            let e = resolve(given, None, None).expect_err(bad);
            assert!(
                e.contains(bad) && e.contains("http://127.0.0.1:8000"),
                "{bad}: {e}"
            );
        }
        let given = Profile {
            server: Some("https://staging.example.org/".into()),
            ..Profile::default()
        };
        assert!(resolve(given, None, None).is_ok());
    }
}
