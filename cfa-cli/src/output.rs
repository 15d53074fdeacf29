//! Printing results: `--output json` prints the server's JSON (stable, for scripts); `table`
//! prints records and tables for people, coloured only on a terminal without `NO_COLOR`.

use std::io::Write;

use anstyle::{AnsiColor, Style};
use comfy_table::{Table, presets};
use serde_json::Value;

/// `--output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people.
    Table,
    /// For scripts: the JSON the server answered (or, for composite commands, documented below).
    Json,
}

/// A human rendering.
#[derive(Clone, Debug, PartialEq)]
pub enum View {
    /// `key: value` lines.
    Record(Vec<(String, String)>),
    /// A table.
    Table {
        /// Column names.
        headers: Vec<String>,
        /// Rows.
        rows: Vec<Vec<String>>,
    },
    /// Free lines.
    Lines(Vec<String>),
}

/// What a command prints.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    /// For `--output json`.
    pub json: Value,
    /// For `--output table`.
    pub views: Vec<View>,
}

impl Output {
    /// One record view of `fields` read from `json`.
    pub fn record(json: Value, fields: &[&str]) -> Output {
        let pairs = fields
            .iter()
            .filter(|f| !json[**f].is_null())
            .map(|f| (f.to_string(), cell(&json, f)))
            .collect();
        Output {
            views: vec![View::Record(pairs)],
            json,
        }
    }

    /// One table of `columns` over the array `json`.
    pub fn table(json: Value, columns: &[&str]) -> Output {
        let rows = json
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|item| columns.iter().map(|c| cell(item, c)).collect())
                    .collect()
            })
            .unwrap_or_default();
        Output {
            views: vec![View::Table {
                headers: columns.iter().map(|c| c.to_string()).collect(),
                rows,
            }],
            json,
        }
    }
}

/// Fields that hold money: written with their currency's decimals (`500.00`, `¥500` as `500`).
const MONEY: &[&str] = &["amount", "goal_amount", "total_amount", "refunded_amount"];

/// `item[field]` for people: money with its currency's decimals, the rest as [`text`].
pub fn cell(item: &Value, field: &str) -> String {
    if MONEY.contains(&field)
        && let Some(amount) = money(item, field)
    {
        return amount;
    }
    text(&item[field])
}

/// `item[field]` as an amount with its currency's decimals: exact from `<field>_minor` when the
/// server sent it, else from the decimal number.
pub fn money(item: &Value, field: &str) -> Option<String> {
    let digits = decimals(item["currency"].as_str());
    if let Some(minor) = item[format!("{field}_minor")].as_i64() {
        return Some(format_minor(minor, digits));
    }
    let value = &item[field];
    let major = value
        .as_f64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))?;
    Some(format!("{major:.digits$}"))
}

/// Decimals of a currency's minor unit (the server's list: 0 for JPY and KRW, else 2).
fn decimals(currency: Option<&str>) -> usize {
    match currency {
        Some("JPY" | "KRW") => 0,
        _ => 2,
    }
}

/// Minor units as a decimal: 50000, 2 → `500.00`.
pub fn format_minor(minor: i64, digits: usize) -> String {
    if digits == 0 {
        return minor.to_string();
    }
    let unit = 10u64.pow(digits as u32);
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    format!("{sign}{}.{:0digits$}", abs / unit, abs % unit)
}

/// A JSON value as a cell: strings bare, null empty, the rest as JSON.
pub fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The colour of a status word, if it has one.
pub fn status_style(word: &str) -> Style {
    match word {
        "COMPLETED" | "CAPTURED" | "SENT" | "processed" | "ok" | "up" | "ACTIVE" => {
            Style::new().fg_color(Some(AnsiColor::Green.into()))
        }
        "FAILED" | "DEAD" | "rejected" | "down" | "not_found" | "malformed" => {
            Style::new().fg_color(Some(AnsiColor::Red.into()))
        }
        "PENDING" | "INITIATED" | "AUTHORIZED" | "ignored" | "degraded" | "REFUNDED" => {
            Style::new().fg_color(Some(AnsiColor::Yellow.into()))
        }
        _ => Style::new(),
    }
}

/// Renders `output` as text (no colour; [`print`] adds it on a terminal).
pub fn render(output: &Output) -> String {
    let mut out = String::new();
    for view in &output.views {
        match view {
            View::Record(pairs) => {
                let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
                for (k, v) in pairs {
                    out.push_str(&format!("{k:width$}  {v}\n"));
                }
            }
            View::Table { headers, rows } => {
                if rows.is_empty() {
                    out.push_str("(none)\n");
                    continue;
                }
                let mut table = Table::new();
                // Columns only, like kubectl: easy to read, and to cut or awk.
                table.load_preset(presets::NOTHING);
                table.set_header(headers.iter().map(|h| h.to_uppercase()));
                for row in rows {
                    table.add_row(row);
                }
                out.push_str(&table.to_string());
                out.push('\n');
            }
            View::Lines(lines) => {
                for line in lines {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
    }
    out
}

/// Prints `output` in `format` on standard output. A reader that went away (`| head`) is an
/// error the caller ends quietly on ([`quiet`]), never a panic.
pub fn print(output: &Output, format: Format) -> std::io::Result<()> {
    let text = match format {
        Format::Json => serde_json::to_string_pretty(&output.json).unwrap_or_default() + "\n",
        Format::Table => colour(&render(output)),
    };
    let mut stdout = anstream::stdout();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}

/// Writes `bytes` on standard output as they are (no colour handling).
pub fn raw(bytes: &[u8]) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(bytes)?;
    stdout.flush()
}

/// Whether a failed write means the reader closed the pipe (`cfa-cli … | head`): the command
/// then ends quietly, with status 0, as `cat` and `grep` would.
pub fn quiet(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::BrokenPipe
}

/// Colours status words (anstream strips it again when colour is off: `NO_COLOR`, a pipe).
pub fn colour(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let mut first = true;
        for word in line.split(' ') {
            if !first {
                out.push(' ');
            }
            first = false;
            let style = status_style(word);
            if style == Style::new() {
                out.push_str(word);
            } else {
                out.push_str(&format!("{style}{word}{style:#}"));
            }
        }
    }
    out
}

/// Prints one progress line of a multi-step command (to standard error, so `--output json`
/// keeps standard output clean).
pub fn step(line: &str) {
    let mut stderr = anstream::stderr();
    let _ = writeln!(stderr, "{}", colour(line));
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn money_is_written_with_its_currency_decimals() {
        let campaign = json!({"goal_amount": 500.0, "goal_amount_minor": 50000, "currency": "USD"});
        assert_eq!(cell(&campaign, "goal_amount"), "500.00");
        let yen = json!({"amount": 500.0, "amount_minor": 500, "currency": "JPY"});
        assert_eq!(cell(&yen, "amount"), "500");
        let no_minor = json!({"amount": 12.5, "currency": "EUR"});
        assert_eq!(cell(&no_minor, "amount"), "12.50");
        let refund = json!({"refunded_amount_minor": 5, "refunded_amount": 0.05});
        assert_eq!(cell(&refund, "refunded_amount"), "0.05");
        assert_eq!(cell(&json!({"version": 2}), "version"), "2");
        let rendered = render(&Output::record(campaign, &["goal_amount"]));
        assert_eq!(rendered, "goal_amount  500.00\n");
    }
}
