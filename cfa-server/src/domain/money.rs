//! Money: integer minor units with an ISO 4217 currency, and the exact parsing of JSON decimals.
//!
//! Below the JSON layer every amount is an `i64` of minor units. The JSON layer carries amounts as
//! decimal numbers for compatibility; they are read from the number's own text (never through a
//! float), so `25.50` is exactly 2550 and `12.345` is refused instead of rounded.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

/// The currencies the platform accepts, with the number of decimals of their minor unit.
const CURRENCIES: &[(&str, u32)] = &[
    ("AUD", 2),
    ("BDT", 2),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("INR", 2),
    ("JPY", 0),
    ("KRW", 0),
    ("MXN", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("USD", 2),
    ("ZAR", 2),
];

/// The largest donation, in major units (SPEC §2).
pub const MAX_DONATION_MAJOR: i64 = 1_000_000;
/// The largest campaign goal, in major units.
pub const MAX_GOAL_MAJOR: i64 = 1_000_000_000;

/// Why an amount is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// Not a positive decimal number within the limit, or more than two decimals.
    #[error("{0}")]
    Invalid(String),
    /// Decimals in a currency without a minor unit (`JPY`): refused because of the currency,
    /// which may be the stored campaign's rather than one the request names.
    #[error("{0} amounts have no decimal places")]
    WholeUnits(&'static str),
}

impl From<String> for AmountError {
    fn from(message: String) -> Self {
        AmountError::Invalid(message)
    }
}

impl From<&str> for AmountError {
    fn from(message: &str) -> Self {
        AmountError::Invalid(message.to_string())
    }
}

/// An ISO 4217 currency the platform supports.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency {
    code: &'static str,
    exponent: u32,
}

impl Currency {
    /// The default currency of a campaign created without one.
    pub const USD: Currency = Currency {
        code: "USD",
        exponent: 2,
    };

    /// Parses a three-letter code, case-insensitively.
    pub fn parse(code: &str) -> Result<Currency, String> {
        let upper = code.trim().to_ascii_uppercase();
        CURRENCIES
            .iter()
            .find(|(c, _)| *c == upper)
            .map(|&(code, exponent)| Currency { code, exponent })
            .ok_or_else(|| {
                let known: Vec<&str> = CURRENCIES.iter().map(|(c, _)| *c).collect();
                format!(
                    "unsupported currency {code:?}; supported: {}",
                    known.join(", ")
                )
            })
    }

    /// The codes of every supported currency, as the OpenAPI document lists them.
    pub fn codes() -> impl Iterator<Item = &'static str> {
        CURRENCIES.iter().map(|(code, _)| *code)
    }

    /// The codes of the currencies without a minor unit (`JPY`): their amounts are whole.
    pub fn whole_unit_codes() -> impl Iterator<Item = &'static str> {
        CURRENCIES
            .iter()
            .filter(|(_, exponent)| *exponent == 0)
            .map(|(code, _)| *code)
    }

    /// The three-letter code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// Decimal places of the minor unit (2 for USD, 0 for JPY).
    pub fn exponent(&self) -> u32 {
        self.exponent
    }

    /// Formats minor units as a plain decimal string: 2550 USD → `25.50`, 2550 JPY → `2550`.
    pub fn format_minor(&self, minor: i64) -> String {
        Decimal::new(minor, self.exponent).to_string()
    }

    /// Formats minor units for people: `$1,234.50`, `€12.00`, `¥500`, `BDT 1,234.50`.
    pub fn display(&self, minor: i64) -> String {
        let plain = self.format_minor(minor.abs());
        let (int, frac) = plain
            .split_once('.')
            .map_or((plain.as_str(), None), |(i, f)| (i, Some(f)));
        let mut grouped = String::new();
        for (i, c) in int.chars().enumerate() {
            if i > 0 && (int.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        if let Some(frac) = frac {
            grouped.push('.');
            grouped.push_str(frac);
        }
        let sign = if minor < 0 { "-" } else { "" };
        match self.code {
            "USD" => format!("{sign}${grouped}"),
            "EUR" => format!("{sign}€{grouped}"),
            "GBP" => format!("{sign}£{grouped}"),
            "JPY" => format!("{sign}¥{grouped}"),
            "INR" => format!("{sign}₹{grouped}"),
            "BDT" => format!("{sign}৳{grouped}"),
            code => format!("{sign}{code} {grouped}"),
        }
    }

    /// Parses the exact text of a JSON number into minor units of this currency, refusing
    /// anything that is not strictly positive, has more decimals than the currency's minor unit
    /// (and at most two), or exceeds `max_major`.
    pub fn parse_amount(&self, text: &str, max_major: i64) -> Result<i64, AmountError> {
        let text = text.trim();
        if text.starts_with('"') {
            return Err("must be a JSON number such as 25.00, not a string".into());
        }
        let value =
            parse_exact(text).ok_or_else(|| format!("must be a decimal number, got {text}"))?;
        let scale = value.normalize().scale();
        if scale > 2 {
            return Err("must have at most 2 decimal places".into());
        }
        if scale > self.exponent {
            return Err(AmountError::WholeUnits(self.code));
        }
        if value <= Decimal::ZERO {
            return Err("must be greater than 0".into());
        }
        if value > Decimal::from(max_major) {
            return Err(format!("must be at most {max_major}").into());
        }
        (value * Decimal::from(10_i64.pow(self.exponent)))
            .to_i64()
            .ok_or_else(|| "is out of range".into())
    }
}

/// Parses a JSON number exactly, exponent included: `2.55e1` is 25.5, and a mantissa with more
/// digits than a `Decimal` holds is refused rather than rounded.
fn parse_exact(text: &str) -> Option<Decimal> {
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().ok()?),
        None => (text, 0),
    };
    let mut value = Decimal::from_str_exact(mantissa).ok()?;
    if exponent < 0 {
        let scale = value.scale().checked_add(exponent.unsigned_abs())?;
        value.set_scale(scale).ok()?;
    } else if exponent > 0 {
        // 10^29 and beyond do not fit a Decimal: `from_i128_with_scale` would panic.
        let power = Decimal::try_from_i128_with_scale(10_i128.checked_pow(exponent as u32)?, 0);
        value = value.checked_mul(power.ok()?)?;
    }
    Some(value)
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl FromStr for Currency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::parse(s)
    }
}

serde_as_str!(Currency, |c: &Currency| c.code());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_exponents_are_refused_not_panicked_on() {
        for text in ["1e29", "1e30", "5e48", "1e49", "1e38", "9.9e45", "1e-40"] {
            assert!(
                Currency::USD
                    .parse_amount(text, MAX_DONATION_MAJOR)
                    .is_err(),
                "{text}"
            );
        }
    }

    fn usd(text: &str) -> Result<i64, String> {
        Currency::USD
            .parse_amount(text, MAX_DONATION_MAJOR)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn decimal_amounts_become_exact_minor_units() {
        assert_eq!(usd("25.50"), Ok(2550));
        assert_eq!(usd("25.5"), Ok(2550));
        assert_eq!(usd("25"), Ok(2500));
        assert_eq!(usd("0.01"), Ok(1));
        assert_eq!(usd("0.1"), Ok(10));
        assert_eq!(usd("19.99"), Ok(1999));
        assert_eq!(usd("1000000"), Ok(100_000_000));
        assert_eq!(usd("2.55e1"), Ok(2550));
        assert_eq!(
            usd("25.500"),
            Ok(2550),
            "trailing zeros are not extra precision"
        );
    }

    #[test]
    fn amounts_that_cannot_be_represented_are_refused() {
        assert!(usd("12.345").is_err());
        assert!(usd("0").is_err());
        assert!(usd("0.00").is_err());
        assert!(usd("-5").is_err());
        assert!(usd("1000000.01").is_err());
        assert!(usd("\"25.00\"").is_err());
        assert!(usd("1e400").is_err());
        assert!(usd("0.001").is_err());
        assert!(
            usd("25.0000000000000000000000000000001e0").is_err(),
            "too many digits to hold exactly"
        );
        assert!(usd("1000000.00000000000000000000000001e0").is_err());
        assert_eq!(usd("2550e-2"), Ok(2550));
    }

    #[test]
    fn zero_decimal_currencies_refuse_fractions() {
        let jpy = Currency::parse("jpy").expect("JPY is supported");
        assert_eq!(jpy.parse_amount("500", MAX_DONATION_MAJOR), Ok(500));
        assert_eq!(
            jpy.parse_amount("500.5", MAX_DONATION_MAJOR),
            Err(AmountError::WholeUnits("JPY")),
            "refused for the currency, so the API can say `currency_precision`"
        );
        assert!(matches!(
            jpy.parse_amount("500.555", MAX_DONATION_MAJOR),
            Err(AmountError::Invalid(_))
        ));
        assert_eq!(jpy.format_minor(500), "500");
    }

    #[test]
    fn minor_units_format_with_the_currency_decimals() {
        assert_eq!(Currency::USD.format_minor(2550), "25.50");
        assert_eq!(Currency::USD.format_minor(1), "0.01");
        assert_eq!(Currency::USD.format_minor(100_000_000), "1000000.00");
    }

    #[test]
    fn amounts_for_people_have_symbols_and_thousands_separators() {
        assert_eq!(Currency::USD.display(123_450), "$1,234.50");
        assert_eq!(Currency::USD.display(5), "$0.05");
        assert_eq!(
            Currency::parse("EUR").expect("EUR").display(100_000_000),
            "€1,000,000.00"
        );
        assert_eq!(Currency::parse("JPY").expect("JPY").display(1500), "¥1,500");
        assert_eq!(
            Currency::parse("CHF").expect("CHF").display(1200),
            "CHF 12.00"
        );
    }

    #[test]
    fn unknown_currencies_are_named() {
        let err = Currency::parse("XYZ").expect_err("XYZ is not a currency");
        assert!(err.contains("XYZ"), "{err}");
    }
}
