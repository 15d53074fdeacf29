//! `changed` (the components CI should build and test) and `check` (the commit-message lint for
//! pull requests).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::Error;
use crate::config::Config;
use crate::conventional;
use crate::git::Git;
use crate::plan::Plan;

/// A component CI should test.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Changed {
    /// The component.
    pub name: String,
    /// Its Cargo package (for `cargo test -p`), if any.
    pub package: Option<String>,
    /// Why.
    pub reasons: Vec<String>,
}

/// The components whose files differ between the merge base of `base` and HEAD and HEAD, plus
/// everything that depends on them.
pub fn changed_since(git: &Git, config: &Config, base: &str) -> Result<Vec<Changed>, Error> {
    let head = git.head()?;
    let base = git.merge_base(git.resolve(base)?, head)?;
    let paths = git.diff_paths(Some(base), head)?;
    // A root manifest change reaches the components that inherit what it changed, as the plan
    // has it: `[workspace.dependencies]` and `[workspace.package]` keys.
    let inherited = if paths.iter().any(|p| p == "Cargo.toml") {
        let read = |id| -> Result<Option<String>, Error> {
            Ok(git
                .file_at(id, "Cargo.toml")?
                .map(|b| String::from_utf8_lossy(&b).into_owned()))
        };
        crate::config::workspace_changes(read(base)?.as_deref(), read(head)?.as_deref())
    } else {
        Vec::new()
    };
    let mut changed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for component in &config.components {
        let own: Vec<&String> = paths.iter().filter(|p| component.owns(p)).collect();
        let mut reasons = Vec::new();
        if let Some(first) = own.first() {
            reasons.push(if own.len() == 1 {
                format!("{first} changed")
            } else {
                format!("{first} and {} more files changed", own.len() - 1)
            });
        }
        for key in component.inherits(&inherited) {
            reasons.push(format!("inherits {key}, which changed"));
        }
        for dep in component.depends_on.keys() {
            if changed.contains_key(dep) {
                reasons.push(format!("depends on {dep}, which changed"));
            }
        }
        if !reasons.is_empty() {
            changed.insert(component.name.clone(), reasons);
        }
    }
    Ok(config
        .components
        .iter()
        .filter_map(|c| {
            Some(Changed {
                name: c.name.clone(),
                package: c.package.clone(),
                reasons: changed.get(&c.name)?.clone(),
            })
        })
        .collect())
}

/// The components a plan releases, as CI's list of what to test on the main branch.
pub fn changed_in_plan(plan: &Plan) -> Vec<Changed> {
    plan.releases()
        .map(|c| Changed {
            name: c.name.clone(),
            package: c.package.clone(),
            reasons: c.reasons.clone(),
        })
        .collect()
}

/// A commit that fails the lint.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Violation {
    /// The commit id.
    pub id: String,
    /// Its subject.
    pub summary: String,
    /// What is wrong and how to fix it.
    pub problem: String,
}

/// Lints every non-merge commit in `range` (`from..to`, or one revision meaning `rev..HEAD`).
pub fn check(git: &Git, range: &str) -> Result<(usize, Vec<Violation>), Error> {
    let (from, to) = match range.split_once("..") {
        Some((from, to)) => (from, if to.is_empty() { "HEAD" } else { to }),
        None => (range, "HEAD"),
    };
    let resolve = |rev: &str| {
        git.resolve(rev).map_err(|e| {
            Error::Usage(format!(
                "--range {range}: {e}; write it as FROM..TO, e.g. origin/main..HEAD"
            ))
        })
    };
    let commits = git.range(resolve(from)?, resolve(to)?)?;
    lint_commits(git, &commits)
}

/// The newest release tag of each component on the history of HEAD (in its own format or an
/// older one), which `check --since-release` starts after. None at all is refused, with the
/// likely reason: a shallow clone, a release branch rebased away from its tags, or no release.
pub fn release_tags(git: &Git, config: &Config) -> Result<Vec<(String, git2::Oid)>, Error> {
    let head = git.head()?;
    let tags = crate::plan::version_tags(config, &git.tags()?)?;
    let mut newest = Vec::new();
    let mut unreachable = 0;
    for component_tags in &tags {
        let mut best: Option<&crate::git::VersionTag> = None;
        for tag in component_tags {
            if !git.reachable(head, tag.commit)? {
                unreachable += 1;
            } else if best.is_none_or(|b| tag.version > b.version) {
                best = Some(tag);
            }
        }
        newest.extend(best.map(|t| (t.name.clone(), t.commit)));
    }
    if newest.is_empty() {
        let why = if git.is_shallow() {
            "this clone is shallow; fetch the whole history and the tags (git fetch --unshallow --tags, or actions/checkout with fetch-depth: 0)".to_string()
        } else if unreachable > 0 {
            format!(
                "{unreachable} release tags exist, but none is on the history of HEAD (was the branch rebased or squashed after the release?); pass --range instead"
            )
        } else {
            "no component has been released yet; cut the first release (cfa-release apply) or pass --range".to_string()
        };
        return Err(Error::Refused(format!(
            "no release tag to check from: {why}"
        )));
    }
    Ok(newest)
}

/// Lints every non-merge commit of HEAD's history after the newest release tags.
pub fn check_since_release(
    git: &Git,
    config: &Config,
) -> Result<(Vec<String>, usize, Vec<Violation>), Error> {
    let tags = release_tags(git, config)?;
    let hide: Vec<git2::Oid> = tags.iter().map(|(_, c)| *c).collect();
    let commits = git.since(git.head()?, &hide)?;
    let (checked, violations) = lint_commits(git, &commits)?;
    Ok((
        tags.into_iter().map(|(n, _)| n).collect(),
        checked,
        violations,
    ))
}

fn lint_commits(git: &Git, commits: &[git2::Oid]) -> Result<(usize, Vec<Violation>), Error> {
    let mut violations = Vec::new();
    let mut checked = 0;
    for id in commits {
        let commit = git.commit(*id)?;
        if commit.parents.len() > 1 {
            continue;
        }
        checked += 1;
        if let Some(problem) = conventional::lint(&commit.message) {
            violations.push(Violation {
                id: id.to_string(),
                summary: commit.summary,
                problem,
            });
        }
    }
    Ok((checked, violations))
}
