//! Carrying out a plan: optional changelog and manifest edits in one release commit, then every
//! tag at once. Safe to run again: what is already done is recognised and left alone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use git2::Oid;
use serde::Serialize;

use crate::Error;
use crate::changelog::{self, Notes, Style};
use crate::config::Config;
use crate::git::Git;
use crate::plan::{ComponentPlan, Plan};

/// How to apply.
#[derive(Clone, Debug, Default)]
pub struct ApplyOptions {
    /// Refuse unless HEAD is this commit (a full id or a prefix).
    pub expect_head: Option<String>,
    /// Insert each release's section in the component's `CHANGELOG.md`, before its newest
    /// release and in its style.
    pub changelog: bool,
    /// Set `package.version` in each released component's Cargo.toml (and `Cargo.lock`), and
    /// the version its dependents (and `[workspace.dependencies]`) require of it.
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
    // What each released package becomes, for the dependents that require a version of it.
    let bumped: BTreeMap<String, String> = releases
        .iter()
        .zip(&components)
        .filter_map(|(r, c)| Some((c.package.clone()?, r.new_version.clone()?)))
        .collect();
    let mut manifests = Vec::new();
    if options.bump_manifests {
        for component in &components {
            if let Some(manifest) = &component.manifest {
                manifest_version_is_own(&git.root().join(manifest))?;
            }
        }
        for file in git.files(head)? {
            if file == "Cargo.toml" || file.ends_with("/Cargo.toml") {
                let path = PathBuf::from(file);
                if rewrite_requirements(git.root(), &path, &bumped, false)? {
                    manifests.push(path);
                }
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
                if write_changelog(&git.root().join(&component.changelog), r)? {
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
        if write_files {
            for manifest in &manifests {
                let full = git.root().join(manifest);
                if !backups.iter().any(|(p, _)| p == manifest) {
                    backups.push((manifest.clone(), std::fs::read(&full).ok()));
                }
                rewrite_requirements(git.root(), manifest, &bumped, true)?;
                if !files.contains(manifest) {
                    files.push(manifest.clone());
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

/// Inserts the release's section before the file's newest release, in the file's own style;
/// `false` when the file already has that version.
fn write_changelog(path: &Path, release: &ComponentPlan) -> Result<bool, Error> {
    let version = release.new_version.as_deref().unwrap_or_default();
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::Io(format!("cannot read {}: {e}", path.display()))),
    };
    if changelog::has_release(&existing, version) {
        return Ok(false);
    }
    // A plan written before plans carried their notes has only the rendered section.
    let section = if release.notes == Notes::default() {
        release.changelog.clone()
    } else {
        Style::of(&existing).render(&release.name, version, &release.notes)
    };
    std::fs::write(path, changelog::insert(&existing, &section))
        .map_err(|e| Error::Io(format!("cannot write {}: {e}", path.display())))?;
    Ok(true)
}

/// The dependency tables of a manifest: `[dependencies]`, `[dev-dependencies]`,
/// `[build-dependencies]`, their `[target.*]` forms, and `[workspace.dependencies]`.
fn dependency_tables(doc: &mut toml_edit::DocumentMut) -> Vec<&mut dyn toml_edit::TableLike> {
    const KINDS: [&str; 3] = ["dependencies", "dev-dependencies", "build-dependencies"];
    let mut tables: Vec<&mut dyn toml_edit::TableLike> = Vec::new();
    for (key, item) in doc.as_table_mut().iter_mut() {
        match key.get() {
            k if KINDS.contains(&k) => tables.extend(item.as_table_like_mut()),
            "workspace" => {
                if let Some(d) = item
                    .as_table_like_mut()
                    .and_then(|w| w.get_mut("dependencies"))
                    .and_then(|d| d.as_table_like_mut())
                {
                    tables.push(d);
                }
            }
            "target" => {
                for (_, target) in item
                    .as_table_like_mut()
                    .into_iter()
                    .flat_map(|t| t.iter_mut())
                {
                    for (kind, deps) in target
                        .as_table_like_mut()
                        .into_iter()
                        .flat_map(|t| t.iter_mut())
                    {
                        if KINDS.contains(&kind.get()) {
                            tables.extend(deps.as_table_like_mut());
                        }
                    }
                }
            }
            _ => {}
        }
    }
    tables
}

/// Rewrites the `version` that path dependencies on a bumped package require of it (`core =
/// { path = "../core", version = "0.36.15" }` → `"0.36.16"`), keeping its operator; a
/// requirement too complex to rewrite that the new version does not meet is refused. With
/// `write` false nothing is written: the answer is whether anything would change.
fn rewrite_requirements(
    root: &Path,
    manifest: &Path,
    bumped: &BTreeMap<String, String>,
    write: bool,
) -> Result<bool, Error> {
    if bumped.is_empty() {
        return Ok(false);
    }
    let path = root.join(manifest);
    let Ok(mut doc) = edit(&path) else {
        // Not a manifest cargo can read either; nothing of ours to keep resolving.
        return Ok(false);
    };
    let mut changed = false;
    for table in dependency_tables(&mut doc) {
        for (key, item) in table.iter_mut() {
            let Some(spec) = item.as_table_like_mut() else {
                continue;
            };
            let package = spec
                .get("package")
                .and_then(|p| p.as_str())
                .unwrap_or(key.get())
                .to_string();
            let Some(new) = bumped.get(&package) else {
                continue;
            };
            if spec.get("path").is_none() {
                continue;
            }
            let Some(old) = spec
                .get("version")
                .and_then(|v| v.as_str())
                .map(str::to_string)
            else {
                continue;
            };
            let Some(rewritten) = requirement(&old, new).map_err(|why| {
                Error::Refused(format!(
                    "{} requires {package} `{old}`, which {why} {new}; write a plain version there (e.g. \"{new}\") or drop --bump-manifests; nothing was changed",
                    manifest.display()
                ))
            })?
            else {
                continue;
            };
            if let Some(value) = spec.get_mut("version").and_then(|v| v.as_value_mut()) {
                let decor = value.decor().clone();
                *value = toml_edit::Value::from(rewritten);
                *value.decor_mut() = decor;
                changed = true;
            }
        }
    }
    if changed && write {
        save(&path, &doc)?;
    }
    Ok(changed)
}

/// The requirement `old` rewritten for `new`: `None` when it is already `new`, or a range the
/// new version meets; an error saying why when it cannot be rewritten.
fn requirement(old: &str, new: &str) -> Result<Option<String>, &'static str> {
    let trimmed = old.trim();
    let operator: String = trimmed
        .chars()
        .take_while(|c| matches!(c, '=' | '^' | '~'))
        .collect();
    let bare = trimmed[operator.len()..].trim();
    let simple = !bare.is_empty()
        && bare
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'));
    if simple {
        return Ok((bare != new).then(|| format!("{operator}{new}")));
    }
    let req = semver::VersionReq::parse(trimmed).map_err(|_| "is not a version requirement for")?;
    let version = semver::Version::parse(new).map_err(|_| "cannot be compared with")?;
    if req.matches(&version) {
        Ok(None)
    } else {
        Err("is a range that cannot be rewritten to take")
    }
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
