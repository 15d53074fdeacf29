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
            .map(|f| (f.to_string(), text(&json[*f])))
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
                    .map(|item| columns.iter().map(|c| text(&item[*c])).collect())
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

/// Prints `output` in `format` on standard output.
pub fn print(output: &Output, format: Format) {
    let mut stdout = anstream::stdout();
    let text = match format {
        Format::Json => serde_json::to_string_pretty(&output.json).unwrap_or_default() + "\n",
        Format::Table => colour(&render(output)),
    };
    let _ = stdout.write_all(text.as_bytes());
}

/// Colours status words (anstream strips it again when colour is off: `NO_COLOR`, a pipe).
fn colour(text: &str) -> String {
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
