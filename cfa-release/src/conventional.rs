//! Conventional commit messages: what a commit says it changes, and how much (pure, no I/O).
//!
//! A message is read as a whole: its header, every conventional line of its body (a squash merge
//! lists the commits it squashed there, often as `* feat(x): …`), a `BREAKING CHANGE:` footer,
//! and git's revert convention. Messages that follow no convention still count: they are changes
//! of kind `other`, a patch.

use serde::{Deserialize, Serialize};

/// The commit types this tool recognises (the Angular set that conventional commits grew from).
pub const TYPES: [&str; 11] = [
    "feat", "fix", "perf", "refactor", "docs", "style", "test", "build", "ci", "chore", "revert",
];

/// The subject prefix of the commits `cfa-release apply` makes; they never cause a release.
pub const RELEASE_PREFIX: &str = "chore(release):";

/// How far a change moves a version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// No release.
    #[default]
    None,
    /// `x.y.Z`.
    Patch,
    /// `x.Y.0`.
    Minor,
    /// `X.0.0` (on `0.x`, the minor).
    Major,
}

/// One change a message announces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    /// `feat`, `fix`, … or `other` for a message that follows no convention.
    pub kind: String,
    /// The scope in parentheses, if any.
    pub scope: Option<String>,
    /// Marked `!` or by a `BREAKING CHANGE:` footer.
    pub breaking: bool,
    /// The description after the colon (the whole subject for `other`).
    pub description: String,
}

impl Change {
    /// The bump this change asks for.
    pub fn level(&self) -> Level {
        if self.breaking {
            Level::Major
        } else if self.kind == "feat" {
            Level::Minor
        } else {
            Level::Patch
        }
    }
}

/// What a whole commit message means for a release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Meaning {
    /// A commit `cfa-release apply` made: ignored.
    Release,
    /// A revert of another commit (`reverted` is its id when the message names it).
    Revert {
        /// The full id from "This reverts commit <id>.".
        reverted: Option<String>,
        /// The subject of the revert itself.
        subject: String,
    },
    /// Ordinary changes, at least one.
    Changes {
        /// Every change the message announces.
        changes: Vec<Change>,
        /// The text of a `BREAKING CHANGE:` footer, if any.
        breaking_note: Option<String>,
    },
}

/// Parses a conventional header `type(scope)!: description`; `None` if `line` is not one, or its
/// type is not in [`TYPES`].
pub fn parse_header(line: &str) -> Option<Change> {
    let (head, description) = line.split_once(": ")?;
    let description = description.trim();
    if description.is_empty() {
        return None;
    }
    let (head, breaking) = match head.strip_suffix('!') {
        Some(h) => (h, true),
        None => (head, false),
    };
    let (kind, scope) = match head.split_once('(') {
        Some((kind, rest)) => {
            let scope = rest.strip_suffix(')')?;
            if scope.is_empty() || scope.contains(['(', ')']) {
                return None;
            }
            (kind, Some(scope.to_string()))
        }
        None => (head, None),
    };
    let kind = kind.to_ascii_lowercase();
    if !TYPES.contains(&kind.as_str()) {
        return None;
    }
    Some(Change {
        kind,
        scope,
        breaking,
        description: description.to_string(),
    })
}

/// Reads a whole commit message.
pub fn parse(message: &str) -> Meaning {
    let mut lines = message.lines();
    let subject = lines.next().unwrap_or("").trim().to_string();
    let body: Vec<&str> = lines.collect();
    if subject.starts_with(RELEASE_PREFIX) {
        return Meaning::Release;
    }
    let reverted = body.iter().find_map(|l| {
        let id = l.trim().strip_prefix("This reverts commit ")?;
        let id = id.trim_end_matches('.').trim();
        (id.len() >= 7 && id.chars().all(|c| c.is_ascii_hexdigit())).then(|| id.to_string())
    });
    let header = parse_header(&subject);
    // git names a revert `Revert "…"`, and (since 2.43) a revert of a revert `Reapply "…"`.
    let git_revert = subject.starts_with("Revert \"") || subject.starts_with("Reapply \"");
    if git_revert || header.as_ref().is_some_and(|h| h.kind == "revert") {
        return Meaning::Revert { reverted, subject };
    }
    let breaking_note = body.iter().find_map(|l| {
        let l = l.trim();
        l.strip_prefix("BREAKING CHANGE:")
            .or_else(|| l.strip_prefix("BREAKING-CHANGE:"))
            .map(|n| n.trim().to_string())
    });
    // Squash merges list the squashed commits in the body, as bullets or bare lines.
    let squashed: Vec<Change> = body
        .iter()
        .filter_map(|l| {
            let l = l.trim();
            let l = l
                .strip_prefix("* ")
                .or_else(|| l.strip_prefix("- "))
                .unwrap_or(l);
            parse_header(l)
        })
        .filter(|c| c.kind != "revert")
        .collect();
    let mut changes: Vec<Change> = header.into_iter().collect();
    changes.extend(squashed);
    if changes.is_empty() {
        changes.push(Change {
            kind: "other".into(),
            scope: None,
            breaking: false,
            description: subject,
        });
    }
    if breaking_note.is_some() {
        changes[0].breaking = true;
    }
    Meaning::Changes {
        changes,
        breaking_note,
    }
}

/// Why a message fails the lint of `cfa-release check`, if it does.
pub fn lint(message: &str) -> Option<String> {
    let subject = message.lines().next().unwrap_or("").trim();
    if subject.starts_with("Merge ")
        || subject.starts_with("Revert \"")
        || subject.starts_with("Reapply \"")
    {
        return None;
    }
    if subject.len() > 100 {
        return Some(format!(
            "the subject is {} characters long; keep it to 100",
            subject.len()
        ));
    }
    if parse_header(subject).is_some() {
        return None;
    }
    let looks_typed = subject
        .split_once(':')
        .map(|(head, _)| head.split(['(', '!']).next().unwrap_or(head).to_string());
    Some(match looks_typed {
        Some(t) if !t.contains(' ') && !TYPES.contains(&t.to_ascii_lowercase().as_str()) => {
            format!(
                "`{t}` is not a commit type; use one of {}",
                TYPES.join(", ")
            )
        }
        _ => "the subject is not `type(scope): description` (e.g. `fix(server): reject empty amounts`)"
            .to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(message: &str) -> Vec<Change> {
        match parse(message) {
            Meaning::Changes { changes, .. } => changes,
            other => panic!("expected changes, got {other:?}"),
        }
    }

    #[test]
    fn headers_give_type_scope_and_breaking_mark() {
        let c = parse_header("feat(cli)!: watch mode").expect("conventional");
        assert_eq!(c.kind, "feat");
        assert_eq!(c.scope.as_deref(), Some("cli"));
        assert!(c.breaking);
        assert_eq!(c.level(), Level::Major);
        assert_eq!(
            parse_header("fix: off by one").map(|c| c.level()),
            Some(Level::Patch)
        );
        assert_eq!(parse_header("wip: stuff"), None, "unknown type");
        assert_eq!(parse_header("feat:missing space"), None);
        assert_eq!(parse_header("feat(): empty scope"), None);
        assert_eq!(parse_header("Add a thing"), None);
    }

    #[test]
    fn a_footer_makes_the_commit_breaking() {
        let m = parse("fix: new wire format\n\nBREAKING CHANGE: clients must upgrade");
        let Meaning::Changes {
            changes,
            breaking_note,
        } = m
        else {
            panic!("changes")
        };
        assert_eq!(changes[0].level(), Level::Major);
        assert_eq!(breaking_note.as_deref(), Some("clients must upgrade"));
    }

    #[test]
    fn every_conventional_line_of_a_squash_body_counts() {
        let c = changes(
            "Watch mode (#42)\n\n* feat(cli): watch\n\n* fix(server): totals\n- perf: faster\nnot one: of these\n",
        );
        let kinds: Vec<&str> = c.iter().map(|c| c.kind.as_str()).collect();
        assert_eq!(kinds, ["feat", "fix", "perf"]);
    }

    #[test]
    fn messages_without_a_convention_are_patches() {
        let c = changes("Update things");
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].kind, "other");
        assert_eq!(c[0].level(), Level::Patch);
    }

    #[test]
    fn reverts_and_release_commits_are_recognised() {
        let id = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            parse(&format!(
                "Revert \"feat: x\"\n\nThis reverts commit {id}.\n"
            )),
            Meaning::Revert {
                reverted: Some(id.into()),
                subject: "Revert \"feat: x\"".into()
            }
        );
        assert!(matches!(
            parse("revert: feat: x"),
            Meaning::Revert { reverted: None, .. }
        ));
        assert_eq!(parse("chore(release): cfa-server v1.2.0"), Meaning::Release);
        assert!(matches!(
            parse(&format!(
                "Reapply \"feat: x\"\n\nThis reverts commit {id}.\n"
            )),
            Meaning::Revert {
                reverted: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn the_lint_says_what_is_wrong() {
        assert_eq!(lint("feat(cli): watch"), None);
        assert_eq!(lint("Merge pull request #1 from a/b"), None);
        assert!(
            lint("feature: watch")
                .expect("bad type")
                .contains("not a commit type")
        );
        assert!(lint("Add watch").expect("no type").contains("type(scope)"));
        assert!(
            lint(&format!("fix: {}", "x".repeat(120)))
                .expect("long")
                .contains("100")
        );
    }
}
