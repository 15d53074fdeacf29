//! Release notes: what a release's changelog section says, rendered in the style of the file it
//! goes into (ours, or Keep a Changelog's as release-plz and git-cliff write it), and where in
//! that file it goes (pure, no I/O).

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

/// The group a change is listed under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Section {
    /// `!` or `BREAKING CHANGE:`.
    Breaking,
    /// `feat`.
    Features,
    /// `fix`.
    Fixes,
    /// `perf`.
    Performance,
    /// Reverts of released changes.
    Reverts,
    /// Everything else.
    Other,
}

impl Section {
    fn title(self) -> &'static str {
        match self {
            Section::Breaking => "Breaking changes",
            Section::Features => "Features",
            Section::Fixes => "Fixes",
            Section::Performance => "Performance",
            Section::Reverts => "Reverts",
            Section::Other => "Other changes",
        }
    }

    /// Keep a Changelog's group, in its order (Added, Changed, …, Fixed, then release-plz's
    /// Other).
    fn keep_a_changelog(self) -> (u8, &'static str) {
        match self {
            Section::Features => (0, "Added"),
            Section::Breaking | Section::Performance | Section::Reverts => (1, "Changed"),
            Section::Fixes => (4, "Fixed"),
            Section::Other => (6, "Other"),
        }
    }
}

/// One line of the notes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Note {
    /// Where it is listed.
    pub section: Section,
    /// The commit's scope, if any.
    pub scope: Option<String>,
    /// What changed.
    pub text: String,
    /// The commit's short id.
    pub commit: String,
}

/// A release's notes, before they are written in any style.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Notes {
    /// The release date (`YYYY-MM-DD`, the date of HEAD's commit).
    pub date: String,
    /// Every change, newest first.
    pub entries: Vec<Note>,
    /// Components it depends on that this release picks up (`core 1.4.1`).
    pub dependencies: Vec<String>,
}

/// How a changelog file writes its releases.
#[derive(Clone, Debug, PartialEq)]
pub struct Style {
    /// The heading, with `{name}`, `{version}` and `{date}` to fill in.
    heading: String,
    /// Keep a Changelog's groups (Added, Changed, Fixed, …) rather than ours.
    keep_a_changelog: bool,
    /// `-` or `*`.
    bullet: char,
}

impl Default for Style {
    fn default() -> Self {
        Style {
            heading: "## {name} {version} ({date})".into(),
            keep_a_changelog: false,
            bullet: '-',
        }
    }
}

impl Style {
    /// The style of an existing changelog: its newest release heading with the version and
    /// date taken out, its bullets, and whether it follows Keep a Changelog. A file with no
    /// release yet gets Keep a Changelog's heading if it says it follows it, ours otherwise.
    pub fn of(text: &str) -> Style {
        let lower = text.to_ascii_lowercase();
        let keep_a_changelog = lower.contains("keepachangelog.com")
            || lower.contains("## [unreleased]")
            || text.lines().any(|l| {
                let l = l.trim();
                ["### Added", "### Fixed", "### Changed", "### Removed"].contains(&l)
            });
        let bullet = text
            .lines()
            .find_map(|l| {
                let l = l.trim_start();
                if l.starts_with("- ") {
                    Some('-')
                } else if l.starts_with("* ") {
                    Some('*')
                } else {
                    None
                }
            })
            .unwrap_or('-');
        let heading = match text.lines().find(|l| release_heading(l).is_some()) {
            Some(line) => template(line),
            None if keep_a_changelog => "## [{version}] - {date}".into(),
            None => Style::default().heading,
        };
        Style {
            heading,
            keep_a_changelog,
            bullet,
        }
    }

    /// The section of one release, in this style.
    pub fn render(&self, name: &str, version: &str, notes: &Notes) -> String {
        let mut out = self
            .heading
            .replace("{name}", name)
            .replace("{version}", version)
            .replace("{date}", &notes.date);
        out.push('\n');
        let mut seen = HashSet::new();
        let mut groups: BTreeMap<(u8, &str), Vec<String>> = BTreeMap::new();
        // Breaking changes first inside whatever group holds them.
        let mut entries: Vec<&Note> = notes.entries.iter().collect();
        entries.sort_by_key(|e| e.section != Section::Breaking);
        for e in entries {
            let mut text = e.text.clone();
            if self.keep_a_changelog && e.section == Section::Breaking {
                text = format!("[**breaking**] {text}");
            }
            let line = match &e.scope {
                Some(scope) => format!("{} **{scope}:** {text} ({})", self.bullet, e.commit),
                None => format!("{} {text} ({})", self.bullet, e.commit),
            };
            if seen.insert(line.clone()) {
                let group = if self.keep_a_changelog {
                    e.section.keep_a_changelog()
                } else {
                    (e.section as u8, e.section.title())
                };
                groups.entry(group).or_default().push(line);
            }
        }
        for ((_, title), lines) in groups {
            out.push_str(&format!("\n### {title}\n\n"));
            for line in lines {
                out.push_str(&line);
                out.push('\n');
            }
        }
        if !notes.dependencies.is_empty() {
            out.push_str("\n### Dependencies\n\n");
            for d in &notes.dependencies {
                out.push_str(&format!("{} {d}\n", self.bullet));
            }
        }
        if notes.entries.is_empty() && notes.dependencies.is_empty() {
            out.push_str("\nNo changes of its own.\n");
        }
        out
    }
}

/// Whether the changelog already has a release heading for `version`.
pub fn has_release(text: &str, version: &str) -> bool {
    text.lines()
        .filter_map(release_heading)
        .any(|(start, end, line)| &line[start..end] == version)
}

/// `text` with `section` inserted before its first release heading, so a title, a preamble
/// and an `## [Unreleased]` section stay on top; with no release yet, before the link
/// definitions that close a Keep a Changelog file, or at the end.
pub fn insert(text: &str, section: &str) -> String {
    if text.trim().is_empty() {
        return format!("# Changelog\n\n{section}");
    }
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let at = lines
        .iter()
        .position(|l| release_heading(l).is_some())
        .or_else(|| {
            // The trailing block of `[x]: url` lines, if any.
            let mut start = None;
            for (i, l) in lines.iter().enumerate().rev() {
                let t = l.trim();
                if t.is_empty() {
                    continue;
                }
                if t.starts_with('[') && t.contains("]: ") {
                    start = Some(i);
                } else {
                    break;
                }
            }
            start
        });
    match at {
        Some(i) => {
            let mut out: String = lines[..i].concat();
            if !out.ends_with("\n\n") {
                out.push('\n');
            }
            out.push_str(section);
            out.push('\n');
            out.push_str(&lines[i..].concat());
            out
        }
        None => format!("{}\n\n{section}", text.trim_end()),
    }
}

/// A heading (`##` or deeper, or `#` with a version) that names a release: where its version
/// is in it. `[Unreleased]` is not one.
fn release_heading(line: &str) -> Option<(usize, usize, &str)> {
    let line = line.trim_end_matches(['\n', '\r']);
    if !line.starts_with('#') || line.to_ascii_lowercase().contains("unreleased") {
        return None;
    }
    let (start, end) = find_version(line)?;
    Some((start, end, line))
}

/// The first semantic version in `text` (`1.2.3`, `0.4.0-rc.1`), as a byte range.
fn find_version(text: &str) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'.');
        if bytes[i].is_ascii_digit() && boundary {
            let mut end = i;
            while end < bytes.len()
                && (bytes[end].is_ascii_alphanumeric() || matches!(bytes[end], b'.' | b'-' | b'+'))
            {
                end += 1;
            }
            // Trailing punctuation belongs to the sentence, not the version.
            let candidate = text[i..end].trim_end_matches(['.', '-', '+']);
            if semver::Version::parse(candidate).is_ok() {
                return Some((i, i + candidate.len()));
            }
        }
        i += 1;
    }
    None
}

/// A release heading with its version and date replaced by placeholders, and a link around
/// the version dropped (it pointed at the old release's comparison).
fn template(line: &str) -> String {
    let line = line.trim_end_matches(['\n', '\r']);
    let Some((start, end)) = find_version(line) else {
        return Style::default().heading;
    };
    let (mut before, mut after) = (line[..start].to_string(), line[end..].to_string());
    if before.ends_with('[')
        && after.starts_with("](")
        && let Some(close) = after.find(')')
    {
        after = format!("]{}", &after[close + 1..]);
    }
    if let Some(at) = date_in(&after) {
        after = format!("{}{{date}}{}", &after[..at], &after[at + 10..]);
    } else if let Some(at) = date_in(&before) {
        before = format!("{}{{date}}{}", &before[..at], &before[at + 10..]);
    }
    format!("{before}{{version}}{after}")
}

/// Where a `YYYY-MM-DD` date starts in `text`.
fn date_in(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    (0..bytes.len().saturating_sub(9)).find(|&i| {
        let d = &bytes[i..i + 10];
        d.iter().enumerate().all(|(k, b)| {
            if k == 4 || k == 7 {
                *b == b'-'
            } else {
                b.is_ascii_digit()
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notes() -> Notes {
        Notes {
            date: "2026-12-02".into(),
            entries: vec![
                Note {
                    section: Section::Fixes,
                    scope: None,
                    text: "round half to even".into(),
                    commit: "2abe038".into(),
                },
                Note {
                    section: Section::Features,
                    scope: Some("api".into()),
                    text: "partial refunds".into(),
                    commit: "f9aaef3".into(),
                },
            ],
            dependencies: Vec::new(),
        }
    }

    const KEEP: &str = "# Changelog\n\nAll notable changes to this project will be documented in this file.\n\nThe format is based on [Keep a Changelog](https://keepachangelog.com/en/1.1.0/).\n\n## [Unreleased]\n\n## [0.3.1](https://github.com/o/r/compare/v0.3.0...v0.3.1) - 2026-10-01\n\n### Fixed\n\n* a bug\n";

    #[test]
    fn keep_a_changelog_files_keep_their_preamble_unreleased_and_style() {
        let style = Style::of(KEEP);
        let section = style.render("server", "0.3.2", &notes());
        assert!(
            section.starts_with("## [0.3.2] - 2026-12-02\n\n### Added\n\n* **api:** partial refunds (f9aaef3)\n\n### Fixed\n\n* round half to even (2abe038)\n"),
            "{section}"
        );
        let text = insert(KEEP, &section);
        let unreleased = text.find("## [Unreleased]").expect("unreleased");
        let new = text.find("## [0.3.2]").expect("new");
        let old = text.find("## [0.3.1]").expect("old");
        assert!(text.starts_with("# Changelog\n\nAll notable"), "{text}");
        assert!(unreleased < new && new < old, "{text}");
        assert!(has_release(&text, "0.3.2") && !has_release(&text, "0.3.3"));
    }

    #[test]
    fn our_own_style_and_other_headings_are_kept() {
        let ours = "# Changelog\n\n## server 1.4.0 (2026-11-01)\n\n### Fixes\n\n- x (1234567)\n";
        let section = Style::of(ours).render("server", "1.5.0", &notes());
        assert!(
            section.starts_with("## server 1.5.0 (2026-12-02)\n\n### Features\n"),
            "{section}"
        );
        let versioned = "# History\n\nIntro.\n\n## Version 2.0.0 — released 2026-01-02\n";
        assert_eq!(
            Style::of(versioned)
                .render("x", "2.1.0", &notes())
                .lines()
                .next(),
            Some("## Version 2.1.0 — released 2026-12-02")
        );
        let bare = "# Changelog\n\n## [Unreleased]\n\n- nothing yet\n\n[unreleased]: https://x/compare/v1...HEAD\n";
        let text = insert(bare, "## [1.0.0] - 2026-12-02\n");
        assert!(
            text.contains("- nothing yet\n\n## [1.0.0] - 2026-12-02\n\n[unreleased]:"),
            "{text}"
        );
        assert_eq!(insert("", "## a 1.0.0\n"), "# Changelog\n\n## a 1.0.0\n");
    }
}
