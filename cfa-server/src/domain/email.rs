//! Donor e-mail addresses: parsed once at the edge, normalised, and masked wherever printed.

use std::fmt;

/// A syntactically valid, normalised (trimmed, lower-case) donor e-mail address.
///
/// `Display` and `Debug` both mask it (`j***@example.org`), so an address cannot reach a log by
/// accident; [`DonorEmail::as_str`] is the one way to the raw value.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct DonorEmail(String);

impl DonorEmail {
    /// Parses and normalises an address, explaining what is wrong with a bad one.
    pub fn parse(raw: &str) -> Result<DonorEmail, String> {
        let email = raw.trim().to_lowercase();
        if email.is_empty() {
            return Err("must not be empty".into());
        }
        if email.len() > 254 {
            return Err("must be at most 254 characters".into());
        }
        let Some((local, domain)) = email.split_once('@') else {
            return Err("must be an e-mail address like name@example.org".into());
        };
        let valid_domain = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && domain
                .chars()
                .all(|c| c.is_alphanumeric() || c == '.' || c == '-');
        if local.is_empty()
            || local.len() > 64
            || !valid_domain
            || email.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err("must be an e-mail address like name@example.org".into());
        }
        Ok(DonorEmail(email))
    }

    /// Wraps an address read back from storage, which was validated when it was written.
    pub fn from_trusted(stored: String) -> DonorEmail {
        DonorEmail(stored)
    }

    /// The raw address, for storage and the donor's own API responses only.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The masked form used in logs.
    pub fn masked(&self) -> String {
        mask_email(&self.0)
    }
}

/// Masks an e-mail address for logs: the first character of the local part, then `***`.
pub fn mask_email(address: &str) -> String {
    match address.split_once('@') {
        Some((local, domain)) => {
            let first = local.chars().next().unwrap_or('*');
            format!("{first}***@{domain}")
        }
        None => "***".into(),
    }
}

impl fmt::Display for DonorEmail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for DonorEmail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DonorEmail({})", self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_trimmed_and_lower_cased() {
        let email = DonorEmail::parse("  Ada@Example.ORG ").expect("valid");
        assert_eq!(email.as_str(), "ada@example.org");
    }

    #[test]
    fn malformed_addresses_are_refused() {
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.org",
            "ada@example",
            "a da@example.org",
            "ada@ex..org",
        ] {
            assert!(DonorEmail::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn printing_an_address_never_shows_it_whole() {
        let email = DonorEmail::parse("ada.lovelace@example.org").expect("valid");
        assert_eq!(email.to_string(), "a***@example.org");
        assert!(!format!("{email:?}").contains("lovelace"));
    }
}
