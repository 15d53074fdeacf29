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
        const LIKE: &str = "must be an e-mail address like name@example.org";
        // RFC 5321/5322 syntax is lettre's (the crate that sends the mail), so an address taken
        // here is one the mailer can send to.
        let address: lettre::Address = email.parse().map_err(|_| LIKE.to_string())?;
        // lettre also takes a bare host (`name@localhost`) or an address literal
        // (`name@[192.0.2.1]`): valid for a mail server, never a donor's address.
        let domain = address.domain();
        if !domain.contains('.')
            || domain.ends_with('.')
            || domain.starts_with('[')
            || domain.parse::<std::net::IpAddr>().is_ok()
            || email.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(LIKE.into());
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

/// Masks every e-mail address inside free text (a mail server's error quotes the recipient):
/// each word with an `@` between other characters, words being split at whitespace, angle
/// brackets, quotes, brackets, commas and semicolons.
pub fn mask_addresses_in(text: &str) -> String {
    let is_separator = |c: char| {
        c.is_whitespace()
            || matches!(
                c,
                '<' | '>' | '"' | '\'' | '(' | ')' | '[' | ']' | ',' | ';'
            )
    };
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let trimmed = word.trim_end_matches(['.', ':']);
        match trimmed.split_once('@') {
            Some((local, domain)) if !local.is_empty() && !domain.is_empty() => {
                out.push_str(&mask_email(trimmed));
                out.push_str(&word[trimmed.len()..]);
            }
            _ => out.push_str(word),
        }
        word.clear();
    };
    for c in text.chars() {
        if is_separator(c) {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
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
            "ada@-example.org",
            "ada..lovelace@example.org",
            "ada@[192.0.2.1]",
            "ada@@example.org",
            "ada@example.org.",
            "ada@192.0.2.1",
        ] {
            assert!(DonorEmail::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn the_addresses_people_really_have_are_accepted() {
        for good in [
            "ada+donations@example.org",
            "o'brien@example.co.uk",
            "first.last@sub.example.org",
            "ada@bücher.example",
        ] {
            assert!(
                DonorEmail::parse(good).is_ok(),
                "{good:?} should be accepted"
            );
        }
    }

    #[test]
    fn addresses_quoted_in_a_mail_servers_error_are_masked() {
        let error = "permanent error (550): 5.1.1 <grace.hopper@example.org>: Recipient address \
                     rejected; also bob@example.net. Mail from ops@careforall.org";
        let masked = mask_addresses_in(error);
        assert_eq!(
            masked,
            "permanent error (550): 5.1.1 <g***@example.org>: Recipient address \
             rejected; also b***@example.net. Mail from o***@careforall.org"
        );
        assert_eq!(mask_addresses_in("no address @ here"), "no address @ here");
    }

    #[test]
    fn printing_an_address_never_shows_it_whole() {
        let email = DonorEmail::parse("ada.lovelace@example.org").expect("valid");
        assert_eq!(email.to_string(), "a***@example.org");
        assert!(!format!("{email:?}").contains("lovelace"));
    }
}
