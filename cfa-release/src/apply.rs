//! Carrying out a plan: optional changelog and manifest edits in one release commit, then every
//! tag at once. Safe to run again: what is already done is recognised and left alone.

use std::path::{Path, PathBuf};

use git2::Oid;
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
    // Everything that can refuse is decided before anything is written.
    let mut components = Vec::new();
    let mut existing = Vec::new();
    for r in &releases {
        let component = config.component(&r.name).ok_or_else(|| {
            Error::Refused(format!(
                "the plan names {}, which release.toml does not define; make a new plan",
                r.name
            ))
        })?;
        components.push(component);
        let name = r.new_tag.clone().unwrap_or_default();
        if let Some(at) = git.tag_target(&name)? {
            existing.push((name, at));
        }
    }
    if !existing.is_empty() {
        let first = existing[0].1;
        let same = existing.iter().all(|(_, at)| *at == first);
        // A run that already finished, seen from the commit it started on (as CI re-runs do):
        // every tag on HEAD, or on one release commit made on top of HEAD.
        let done = same
            && existing.len() == releases.len()
            && (first == head || git.is_release_commit_of(first, head)?);
        if done {
            outcome.target = first.to_string();
            outcome.release_commit = (first != head).then(|| first.to_string());
            outcome.tags = existing
                .into_iter()
                .map(|(name, _)| TagOutcome {
                    name,
                    created: false,
                })
                .collect();
            return Ok(outcome);
        }
        if let Some((name, at)) = existing.iter().find(|(_, at)| *at != head) {
            return Err(Error::Refused(format!(
                "tag {name} already exists on {at}, not on HEAD ({head}); a release of that version was made elsewhere (delete the tag if it was a mistake)"
            )));
        }
    }
    if options.bump_manifests {
        for component in &components {
            if let Some(manifest) = &component.manifest {
                manifest_version_is_own(&git.root().join(manifest))?;
            }
        }
    }
    // Files for the release commit, with what they held, to put back if anything fails.
    let mut backups: Vec<(PathBuf, Option<Vec<u8>>)> = Vec::new();
    let result = (|| -> Result<Oid, Error> {
        let mut files: Vec<PathBuf> = Vec::new();
        // Tags already on HEAD (an earlier, interrupted run) pin the release to HEAD.
        let write_files = existing.is_empty();
        for (r, component) in releases.iter().zip(&components) {
            let version = r.new_version.as_deref().unwrap_or_default();
            let touch = |path: &Path, backups: &mut Vec<(PathBuf, Option<Vec<u8>>)>| {
                if !backups.iter().any(|(p, _)| p == path) {
                    backups.push((
                        path.to_path_buf(),
                        std::fs::read(git.root().join(path)).ok(),
                    ));
                }
            };
            if write_files && options.changelog {
                touch(&component.changelog, &mut backups);
                if write_changelog(&git.root().join(&component.changelog), &r.changelog)? {
                    files.push(component.changelog.clone());
                }
            }
            if write_files
                && options.bump_manifests
                && let Some(manifest) = &component.manifest
            {
                touch(manifest, &mut backups);
                if set_manifest_version(&git.root().join(manifest), version)? {
                    files.push(manifest.clone());
                }
                if let Some(package) = &component.package {
                    touch(Path::new("Cargo.lock"), &mut backups);
                    if set_lock_version(&git.root().join("Cargo.lock"), package, version)?
                        && !files.iter().any(|f| f == Path::new("Cargo.lock"))
                    {
                        files.push(PathBuf::from("Cargo.lock"));
                    }
                }
            }
        }
        let mut target = head;
        let who = git.signature()?;
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
            target = git.commit_files(&files, &message, &who)?;
        }
        let tags: Vec<(String, Oid, String)> = releases
            .iter()
            .filter(|r| !existing.iter().any(|(n, _)| Some(n) == r.new_tag.as_ref()))
            .map(|r| {
                let version = r.new_version.as_deref().unwrap_or("");
                (
                    r.new_tag.clone().unwrap_or_default(),
                    target,
                    format!("{} {version}\n\n{}", r.name, r.changelog),
                )
            })
            .collect();
        let branch = git.branch_ref().unwrap_or_default();
        let moved = (target != head).then_some((branch.as_str(), target, head));
        git.create_tags(&tags, &who, moved)?;
        Ok(target)
    })();
    let target = match result {
        Ok(target) => target,
        Err(e) => {
            for (path, content) in backups {
                let full = git.root().join(&path);
                let _ = match content {
                    Some(bytes) => std::fs::write(&full, bytes),
                    None => std::fs::remove_file(&full),
                };
            }
            return Err(e);
        }
    };
    if target != head {
        git.reset_index(target)?;
        outcome.release_commit = Some(target.to_string());
        outcome.target = target.to_string();
    }
    for r in &releases {
        let name = r.new_tag.clone().unwrap_or_default();
        let created = !existing.iter().any(|(n, _)| *n == name);
        outcome.tags.push(TagOutcome { name, created });
    }
    Ok(outcome)
}

/// Refuses a manifest whose version is inherited from the workspace.
fn manifest_version_is_own(path: &Path) -> Result<(), Error> {
    let doc = edit(path)?;
    match doc.get("package").and_then(|p| p.get("version")) {
        Some(v) if v.as_str().is_none() => Err(Error::Refused(format!(
            "{} takes its version from the workspace (version.workspace = true); give the package its own `version` so cfa-release can bump it, or drop --bump-manifests",
            path.display()
        ))),
        _ => Ok(()),
    }
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
