//! [`Secret`]: a string that serialises and debug-prints as `****`, so the effective
//! configuration can be printed and logged without leaking keys or passwords; [`DatabaseUrl`]:
//! a connection URL whose password never prints.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret string that serialises and debug-prints as `****`.
#[derive(Clone)]
pub struct Secret(pub SecretString);

impl Secret {
    /// The secret itself, for comparison only.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(SecretString::from(value))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("****")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("****")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Secret(SecretString::from(s)))
    }
}

/// Accepts a list of strings, or one comma-separated string (handy in environment variables).
pub(super) fn secrets_from_list_or_csv<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<Secret>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCsv {
        List(Vec<String>),
        Csv(String),
    }
    let values = match ListOrCsv::deserialize(d)? {
        ListOrCsv::List(list) => list,
        ListOrCsv::Csv(csv) => csv.split(',').map(str::to_string).collect(),
    };
    Ok(values
        .iter()
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(Secret::from)
        .collect())
}

/// A database URL whose password never prints.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(pub String);

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&mask_url(&self.0))
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&mask_url(&self.0))
    }
}

/// Replaces the password of a `scheme://user:password@host` URL, and the value of any
/// `password`-like query parameter, with `****`.
pub fn mask_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let base = match base.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((credentials, host)) => match credentials.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:****@{host}"),
                None => base.to_string(),
            },
            None => base.to_string(),
        },
        None => base.to_string(),
    };
    match query {
        None => base,
        Some(query) => {
            let masked: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if k.to_ascii_lowercase().contains("password") => {
                        format!("{k}=****")
                    }
                    _ => pair.to_string(),
                })
                .collect();
            format!("{base}?{}", masked.join("&"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Overrides;
    use super::super::tests::load;
    use super::*;

    #[test]
    fn api_keys_accept_a_comma_separated_variable() {
        let s = load(
            "",
            &[("CFA_AUTH__API_KEYS", "one,two")],
            Overrides::default(),
        )
        .expect("loads");
        let keys: Vec<&str> = s.auth.api_keys.iter().map(Secret::expose).collect();
        assert_eq!(keys, ["one", "two"]);
    }

    #[test]
    fn blank_entries_in_a_list_are_dropped_and_the_rest_trimmed() {
        let s = load(
            "[payments]\nwebhook_secret = [\" whsec_1 \", \"\", \"whsec_2\"]\n",
            &[],
            Overrides::default(),
        )
        .expect("loads");
        let secrets: Vec<&str> = s
            .payments
            .webhook_secret
            .iter()
            .map(Secret::expose)
            .collect();
        assert_eq!(secrets, ["whsec_1", "whsec_2"]);
    }

    #[test]
    fn a_secret_never_prints() {
        let secret = Secret::from("hunter2");
        assert_eq!(format!("{secret:?}"), "****");
        assert_eq!(
            serde_json::to_string(&secret).expect("serialises"),
            "\"****\""
        );
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn passwords_in_query_parameters_are_masked_too() {
        assert_eq!(
            mask_url("postgres://app@db/cfa?password=hunter2&sslmode=require&sslpassword=x"),
            "postgres://app@db/cfa?password=****&sslmode=require&sslpassword=****"
        );
    }
}
