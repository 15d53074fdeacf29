//! Carrying out a plan: optional changelog and manifest edits in one release commit, then every
//! tag at once. Safe to run again: what is already done is recognised and left alone.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::Error;
use crate::config::Config;
use crate::git::Git;
use crate::plan::Plan;

/// How to apply.
#[derive(Clone, Debug, Default)]
pub struct ApplyOptions {
    /// Refuse unless HEAD is this commit (a full id or a prefix).
    pub expect_head: Option<String>,
    /// Prepend each release's section to the component's `CHANGELOG.md`.
    pub changelog: bool,
    /// Set `package.version` in each released component's Cargo.toml (and `Cargo.lock`).
    pub bump_manifests: bool,
}

/// What `apply` did.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Applied {
    /// The commit the tags point at.
    pub target: String,
    /// The release commit made for changelogs and manifests, if any.
    pub release_commit: Option<String>,
    /// Every tag of the plan.
    pub tags: Vec<TagOutcome>,
}

/// One tag.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TagOutcome {
    /// The tag.
    pub name: String,
    /// `false` when it already pointed at the target (a re-run).
    pub created: bool,
}

/// Applies `plan` to the repository.
pub fn apply(
    git: &Git,
    config: &Config,
    plan: &Plan,
    options: &ApplyOptions,
) -> Result<Applied, Error> {
    if git.branch().is_none() {
        return Err(Error::Refused(
            "HEAD is detached; check out the branch you release from (e.g. git switch main)".into(),
        ));
    }
    let dirty = git.dirty_files()?;
    if !dirty.is_empty() {
        let mut list = dirty.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        if dirty.len() > 5 {
            list.push_str(", …");
        }
        return Err(Error::Refused(format!(
            "the work tree has uncommitted changes ({list}); commit or stash them before releasing"
        )));
    }
    let head = git.head()?;
    if plan.head != head.to_string() {
        return Err(Error::Refused(format!(
            "HEAD moved since the plan was made (plan: {}, HEAD: {head}); make a new plan",
            &plan.head[..12.min(plan.head.len())]
        )));
    }
    if let Some(expected) = &options.expect_head
        && !(expected.len() >= 7 && head.to_string().starts_with(&expected.to_lowercase()))
    {
        return Err(Error::Refused(format!(
            "HEAD is {head}, not the expected {expected}; someone pushed in between: plan again"
        )));
    }
    let releases: Vec<_> = plan.releases().collect();
    let mut outcome = Applied {
        target: head.to_string(),
        release_commit: None,
        tags: Vec::new(),
    };
    if releases.is_empty() {
        return Ok(outcome);
    }
    let mut files: Vec<PathBuf> = Vec::new();
    for r in &releases {
        let component = config.component(&r.name).ok_or_else(|| {
            Error::Refused(format!(
                "the plan names {}, which release.toml does not define; make a new plan",
                r.name
            ))
        })?;
        let version = r.new_version.as_deref().unwrap_or_default();
        if options.changelog
            && write_changelog(&git.root().join(&component.changelog), &r.changelog)?
        {
            files.push(component.changelog.clone());
        }
        if options.bump_manifests
            && let Some(manifest) = &component.manifest
        {
            if set_manifest_version(&git.root().join(manifest), version)? {
                files.push(manifest.clone());
            }
            if let Some(package) = &component.package
                && set_lock_version(&git.root().join("Cargo.lock"), package, version)?
                && !files.iter().any(|f| f == Path::new("Cargo.lock"))
            {
                files.push(PathBuf::from("Cargo.lock"));
            }
        }
    }
    let mut target = head;
    if !files.is_empty() {
        let names: Vec<String> = releases
            .iter()
            .map(|r| format!("{} v{}", r.name, r.new_version.as_deref().unwrap_or("")))
            .collect();
        let message = format!(
            "{} {}\n\nMade by cfa-release apply; cfa-release ignores commits like this one.\n",
            crate::conventional::RELEASE_PREFIX,
            names.join(", ")
        );
        target = git.commit_files(&files, &message, &git.signature()?)?;
        outcome.release_commit = Some(target.to_string());
        outcome.target = target.to_string();
    }
    let mut to_create = Vec::new();
    for r in &releases {
        let name = r.new_tag.clone().unwrap_or_default();
        match git.tag_target(&name)? {
            Some(existing) if existing == target => outcome.tags.push(TagOutcome {
                name,
                created: false,
            }),
            Some(existing) => {
                return Err(Error::Refused(format!(
                    "tag {name} already exists on {existing}, not on {target}; a release of that version was made elsewhere (delete the tag if it was a mistake)"
                )));
            }
            None => {
                let message = format!(
                    "{} {}\n\n{}",
                    r.name,
                    r.new_version.as_deref().unwrap_or(""),
                    r.changelog
                );
                to_create.push((name.clone(), target, message));
                outcome.tags.push(TagOutcome {
                    name,
                    created: true,
                });
            }
        }
    }
    git.create_tags(&to_create, &git.signature()?)?;
    Ok(outcome)
}

/// Prepends `section` under the file's title; `false` when the file already has it.
fn write_changelog(path: &Path, section: &str) -> Result<bool, Error> {
    let heading = section.lines().next().unwrap_or_default();
    let version_heading = heading.rsplit_once(" (").map_or(heading, |(h, _)| h);
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::Io(format!("cannot read {}: {e}", path.display()))),
    };
    if existing
        .lines()
        .any(|l| l == heading || l.starts_with(&format!("{version_heading} (")))
    {
        return Ok(false);
    }
    let text = match existing.split_once('\n') {
        Some((title, rest)) if title.starts_with("# ") => {
            format!("{title}\n\n{section}\n{}", rest.trim_start_matches('\n'))
        }
        _ if existing.is_empty() => format!("# Changelog\n\n{section}"),
        _ => format!("# Changelog\n\n{section}\n{existing}"),
    };
    std::fs::write(path, text)
        .map_err(|e| Error::Io(format!("cannot write {}: {e}", path.display())))?;
    Ok(true)
}

fn edit(path: &Path) -> Result<toml_edit::DocumentMut, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Io(format!("cannot read {}: {e}", path.display())))?;
    text.parse()
        .map_err(|e| Error::Io(format!("{} is not valid TOML: {e}", path.display())))
}

fn save(path: &Path, doc: &toml_edit::DocumentMut) -> Result<(), Error> {
    std::fs::write(path, doc.to_string())
        .map_err(|e| Error::Io(format!("cannot write {}: {e}", path.display())))
}

/// Sets `package.version`; `false` when it already was `version`.
fn set_manifest_version(path: &Path, version: &str) -> Result<bool, Error> {
    let mut doc = edit(path)?;
    let package = doc
        .get_mut("package")
        .and_then(|p| p.as_table_like_mut())
        .ok_or_else(|| Error::Refused(format!("{} has no [package] table", path.display())))?;
    match package.get("version") {
        Some(v) if v.as_str() == Some(version) => return Ok(false),
        Some(v) if v.as_str().is_none() => {
            return Err(Error::Refused(format!(
                "{} takes its version from the workspace (version.workspace = true); give the package its own `version` so cfa-release can bump it, or drop --bump-manifests",
                path.display()
            )));
        }
        _ => {}
    }
    package.insert("version", toml_edit::value(version));
    save(path, &doc)?;
    Ok(true)
}

/// Sets the version of a workspace package in `Cargo.lock` (the entry without a `source`).
fn set_lock_version(path: &Path, package: &str, version: &str) -> Result<bool, Error> {
    if !path.is_file() {
        return Ok(false);
    }
    let mut doc = edit(path)?;
    let mut changed = false;
    if let Some(packages) = doc
        .get_mut("package")
        .and_then(|p| p.as_array_of_tables_mut())
    {
        for entry in packages.iter_mut() {
            if entry.get("name").and_then(|n| n.as_str()) == Some(package)
                && entry.get("source").is_none()
                && entry.get("version").and_then(|v| v.as_str()) != Some(version)
            {
                entry.insert("version", toml_edit::value(version));
                changed = true;
            }
        }
    }
    if changed {
        save(path, &doc)?;
    }
    Ok(changed)
}
