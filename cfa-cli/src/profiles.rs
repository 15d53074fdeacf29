//! `cfa-cli profiles`: the config file's profiles as the CLI reads them, and what a command run
//! with the same flags would use (keys shown as set or not, never printed).

use serde_json::json;

use crate::config::{self, ConfigPath, Profile};
use crate::output::{Output, View};

fn set(value: &Option<String>) -> &'static str {
    if value.is_some() { "set" } else { "-" }
}

/// The profiles of `file` and the resolution of `given` with `profile`.
pub fn show(
    given: Profile,
    profile: Option<&str>,
    file: Option<ConfigPath>,
) -> Result<Output, String> {
    let loaded = config::load(file.as_ref())?;
    let resolved = config::resolve(given, profile, file.clone())?;
    let chosen = profile.map(str::to_string).or(loaded.profile.clone());
    let path = file.as_ref().map_or_else(
        || "(no config directory)".to_string(),
        |f| f.path.display().to_string(),
    );
    let exists = file.as_ref().is_some_and(|f| f.path.is_file());
    let rows: Vec<Vec<String>> = loaded
        .profiles
        .iter()
        .map(|(name, p)| {
            vec![
                if chosen.as_deref() == Some(name.as_str()) {
                    "*"
                } else {
                    ""
                }
                .to_string(),
                name.clone(),
                p.server.clone().unwrap_or_default(),
                set(&p.api_key).to_string(),
                set(&p.webhook_secret).to_string(),
            ]
        })
        .collect();
    let mut views = vec![View::Lines(vec![if exists {
        format!("config file: {path}")
    } else {
        format!("config file: {path} (absent; `cfa-cli help profiles` shows its format)")
    }])];
    if !rows.is_empty() {
        views.push(View::Table {
            headers: ["", "name", "server", "api_key", "webhook_secret"]
                .map(String::from)
                .to_vec(),
            rows,
        });
    }
    views.push(View::Record(vec![
        (
            "in use".into(),
            chosen.clone().unwrap_or_else(|| "(none)".into()),
        ),
        ("server".into(), resolved.server.clone()),
        ("api_key".into(), set(&resolved.api_key).into()),
        (
            "webhook_secret".into(),
            set(&resolved.webhook_secret).into(),
        ),
    ]));
    let profiles: serde_json::Map<String, serde_json::Value> = loaded
        .profiles
        .iter()
        .map(|(name, p)| {
            (
                name.clone(),
                json!({
                    "server": p.server,
                    "api_key": p.api_key.is_some(),
                    "webhook_secret": p.webhook_secret.is_some(),
                }),
            )
        })
        .collect();
    Ok(Output {
        json: json!({
            "config_file": path,
            "exists": exists,
            "default": loaded.profile,
            "in_use": chosen,
            "profiles": profiles,
            "resolved": {
                "server": resolved.server,
                "api_key": resolved.api_key.is_some(),
                "webhook_secret": resolved.webhook_secret.is_some(),
            },
        }),
        views,
    })
}
