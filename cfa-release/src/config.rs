//! `release.toml`: the components of a repository, their files and what they depend on.
//!
//! Cargo path dependencies between components (normal and build dependencies, directly or through
//! `[workspace.dependencies]`) are added to `depends_on` automatically; dev-dependencies are not,
//! since they do not change what is shipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use globset::{GlobSet, GlobSetBuilder};
use semver::Version;
use serde::Deserialize;

use crate::Error;
use crate::tag::TagFormat;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    defaults: Defaults,
    #[serde(default)]
    components: Vec<ComponentFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    initial_version: Option<String>,
    tag: Option<String>,
    features_always_increment_minor: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ComponentFile {
    name: String,
    paths: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    depends_on: Vec<String>,
    manifest: Option<String>,
    changelog: Option<String>,
    image: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    initial_version: Option<String>,
    tag: Option<String>,
    features_always_increment_minor: Option<bool>,
}

/// Why a component depends on another.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Because {
    /// Listed in `depends_on`.
    Configured,
    /// A Cargo path dependency of its manifest.
    Cargo,
}

/// One releasable component.
#[derive(Debug)]
pub struct Component {
    /// Its name, the prefix of its tags (`<name>-v1.2.3`).
    pub name: String,
    /// Include globs, as written.
    pub paths: Vec<String>,
    /// Exclude globs, as written.
    pub exclude: Vec<String>,
    include_set: GlobSet,
    exclude_set: GlobSet,
    /// The components it depends on, and why.
    pub depends_on: BTreeMap<String, Because>,
    /// Its Cargo manifest, relative to the repository root.
    pub manifest: Option<PathBuf>,
    /// Its Cargo package name, read from the manifest.
    pub package: Option<String>,
    /// Where its changelog goes, relative to the repository root.
    pub changelog: PathBuf,
    /// The container image it is published as, if any.
    pub image: Option<String>,
    /// Commit scopes that name it (its own name always does).
    pub scopes: Vec<String>,
    /// The version of its first release: its own `initial_version`, else its manifest's
    /// version, else `defaults.initial_version`.
    pub initial_version: Version,
    /// The version its Cargo manifest declares, if it has one.
    pub manifest_version: Option<Version>,
    /// How its tags are named.
    pub tag: TagFormat,
    /// On `0.x`, a feature moves the minor (`true`) or the patch (`false`, release-plz's default).
    pub features_always_increment_minor: bool,
    /// The `[workspace.dependencies]` keys its normal and build dependencies inherit.
    pub workspace_dependencies: BTreeSet<String>,
    /// The `[workspace.package]` keys its manifest inherits (`edition.workspace = true`, …).
    pub workspace_package: BTreeSet<String>,
}

impl Component {
    /// Whether a repository path (with `/` separators) belongs to this component.
    pub fn owns(&self, path: &str) -> bool {
        self.include_set.is_match(path) && !self.exclude_set.is_match(path)
    }

    /// Whether a commit scope names this component.
    pub fn answers_to(&self, scope: &str) -> bool {
        scope.eq_ignore_ascii_case(&self.name)
            || self.scopes.iter().any(|s| s.eq_ignore_ascii_case(scope))
    }
}

/// Every component, dependencies first.
#[derive(Debug)]
pub struct Config {
    /// The components in dependency order (each after everything it depends on).
    pub components: Vec<Component>,
}

impl Config {
    /// The component called `name`.
    pub fn component(&self, name: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.name == name)
    }

    /// Reads `file` (usually `<root>/release.toml`) for the repository whose work tree is `root`.
    pub fn load(root: &Path, file: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            Error::Config(format!(
                "cannot read {}: {e}; create it (see docs/RELEASING.md) or pass --config",
                file.display()
            ))
        })?;
        Config::parse(root, &text).map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{}: {m}", file.display())),
            other => other,
        })
    }

    /// Parses the text of a `release.toml` for the work tree at `root`.
    pub fn parse(root: &Path, text: &str) -> Result<Config, Error> {
        let file: File = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        let default_initial = match &file.defaults.initial_version {
            Some(v) => semver(v, "defaults.initial_version")?,
            None => Version::new(0, 1, 0),
        };
        let default_tag = match &file.defaults.tag {
            Some(t) => {
                TagFormat::parse(t).map_err(|e| Error::Config(format!("defaults.tag: {e}")))?
            }
            None => TagFormat::default(),
        };
        let default_minor = file
            .defaults
            .features_always_increment_minor
            .unwrap_or(false);
        let workspace = Workspace::read(root);
        let mut components = Vec::new();
        let mut names = BTreeSet::new();
        for (i, c) in file.components.into_iter().enumerate() {
            let at = format!("components[{i}] ({})", c.name);
            if c.name.is_empty()
                || !c
                    .name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
            {
                return Err(Error::Config(format!(
                    "{at}.name: use letters, digits, `-` and `_` (it starts every tag)"
                )));
            }
            if !names.insert(c.name.clone()) {
                return Err(Error::Config(format!(
                    "{at}.name: `{}` is defined twice",
                    c.name
                )));
            }
            if c.paths.is_empty() {
                return Err(Error::Config(format!(
                    "{at}.paths: list at least one glob, e.g. [\"{}/**\"]",
                    c.name
                )));
            }
            let include_set = globs(&c.paths, &format!("{at}.paths"))?;
            let exclude_set = globs(&c.exclude, &format!("{at}.exclude"))?;
            let manifest = match c.manifest {
                Some(m) => {
                    if !root.join(&m).is_file() {
                        return Err(Error::Config(format!("{at}.manifest: {m} does not exist")));
                    }
                    Some(PathBuf::from(m))
                }
                None => Some(PathBuf::from(&c.name).join("Cargo.toml"))
                    .filter(|m| root.join(m).is_file()),
            };
            let depends_on: BTreeMap<String, Because> = c
                .depends_on
                .iter()
                .map(|d| (d.clone(), Because::Configured))
                .collect();
            let read = match &manifest {
                Some(m) => read_manifest(root, m, &workspace)
                    .map_err(|e| Error::Config(format!("{at}.manifest: {e}")))?,
                None => ManifestInfo::default(),
            };
            let cargo_deps = read.paths;
            let changelog = match c.changelog {
                Some(p) => PathBuf::from(p),
                None => match &manifest {
                    Some(m) => m.with_file_name("CHANGELOG.md"),
                    None => PathBuf::from(format!("CHANGELOG-{}.md", c.name)),
                },
            };
            let initial_version = match &c.initial_version {
                Some(v) => semver(v, &format!("{at}.initial_version"))?,
                None => read
                    .version
                    .clone()
                    .unwrap_or_else(|| default_initial.clone()),
            };
            let tag = match &c.tag {
                Some(t) => {
                    TagFormat::parse(t).map_err(|e| Error::Config(format!("{at}.tag: {e}")))?
                }
                None => default_tag.clone(),
            };
            components.push((
                Component {
                    name: c.name,
                    paths: c.paths,
                    exclude: c.exclude,
                    include_set,
                    exclude_set,
                    depends_on,
                    manifest,
                    package: read.package,
                    changelog,
                    image: c.image,
                    scopes: c.scopes,
                    initial_version,
                    manifest_version: read.version,
                    tag,
                    features_always_increment_minor: c
                        .features_always_increment_minor
                        .unwrap_or(default_minor),
                    workspace_dependencies: read.workspace_dependencies,
                    workspace_package: read.workspace_package,
                },
                cargo_deps,
            ));
        }
        // Cargo path dependencies that are other components.
        let dirs: Vec<(String, PathBuf)> = components
            .iter()
            .filter_map(|(c, _)| {
                let dir = c.manifest.as_ref()?.parent()?.to_path_buf();
                Some((c.name.clone(), normalize(&dir)))
            })
            .collect();
        for (component, cargo_deps) in &mut components {
            for dep in cargo_deps.iter() {
                if let Some((name, _)) = dirs.iter().find(|(_, d)| d == dep)
                    && *name != component.name
                {
                    component
                        .depends_on
                        .entry(name.clone())
                        .or_insert(Because::Cargo);
                }
            }
        }
        let mut components: Vec<Component> = components.into_iter().map(|(c, _)| c).collect();
        let unnamed: Vec<&str> = components
            .iter()
            .filter(|c| !c.tag.is_named())
            .map(|c| c.name.as_str())
            .collect();
        if unnamed.len() > 1 {
            return Err(Error::Config(format!(
                "components {} would share their tags (a tag format without {{name}}); give all but one of them a `tag` with {{name}}",
                unnamed.join(", ")
            )));
        }
        for c in &components {
            for d in c.depends_on.keys() {
                if !names.contains(d) {
                    return Err(Error::Config(format!(
                        "component {}: depends_on names `{d}`, which is not a component",
                        c.name
                    )));
                }
            }
        }
        // Dependency order, refusing cycles.
        let mut ordered: Vec<Component> = Vec::new();
        while !components.is_empty() {
            let ready = components.iter().position(|c| {
                c.depends_on
                    .keys()
                    .all(|d| ordered.iter().any(|o| &o.name == d))
            });
            match ready {
                Some(i) => ordered.push(components.remove(i)),
                None => {
                    let names: Vec<&str> = components.iter().map(|c| c.name.as_str()).collect();
                    return Err(Error::Config(format!(
                        "depends_on forms a cycle among {}",
                        names.join(", ")
                    )));
                }
            }
        }
        Ok(Config {
            components: ordered,
        })
    }
}

fn semver(text: &str, key: &str) -> Result<Version, Error> {
    Version::parse(text)
        .map_err(|e| Error::Config(format!("{key}: `{text}` is not a semantic version ({e})")))
}

fn globs(patterns: &[String], key: &str) -> Result<GlobSet, Error> {
    let mut builder = GlobSetBuilder::new();
    for p in patterns {
        let glob = globset::GlobBuilder::new(p)
            .literal_separator(true)
            .build()
            .map_err(|e| Error::Config(format!("{key}: `{p}` is not a glob ({e})")))?;
        builder.add(glob);
    }
    builder
        .build()
        .map_err(|e| Error::Config(format!("{key}: {e}")))
}

/// Collapses `a/./b` and `a/x/../b` so directories compare equal.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// What the root manifest declares for its members.
#[derive(Debug, Default)]
struct Workspace {
    /// `[workspace.dependencies]` entries with a `path`, relative to the root.
    paths: BTreeMap<String, PathBuf>,
    /// `[workspace.package] version`.
    version: Option<Version>,
}

impl Workspace {
    fn read(root: &Path) -> Workspace {
        let Ok(text) = std::fs::read_to_string(root.join("Cargo.toml")) else {
            return Workspace::default();
        };
        let Ok(table) = text.parse::<toml::Table>() else {
            return Workspace::default();
        };
        let workspace = table.get("workspace");
        let deps = workspace
            .and_then(|w| w.get("dependencies"))
            .and_then(|d| d.as_table());
        let paths = deps
            .into_iter()
            .flatten()
            .filter_map(|(name, spec)| {
                let path = spec.get("path")?.as_str()?;
                Some((name.clone(), normalize(Path::new(path))))
            })
            .collect();
        let version = workspace
            .and_then(|w| w.get("package"))
            .and_then(|p| p.get("version"))
            .and_then(|v| v.as_str())
            .and_then(|v| Version::parse(v).ok());
        Workspace { paths, version }
    }
}

/// What a component's manifest says about it.
#[derive(Debug, Default)]
struct ManifestInfo {
    package: Option<String>,
    version: Option<Version>,
    /// Directories (relative to the root) of its path dependencies.
    paths: Vec<PathBuf>,
    workspace_dependencies: BTreeSet<String>,
    workspace_package: BTreeSet<String>,
}

/// The keys of `[workspace.dependencies]` and `[workspace.package]` that differ between two
/// texts of the root manifest (`None`: the file did not exist), as `section key` pairs.
pub fn workspace_changes(old: Option<&str>, new: Option<&str>) -> Vec<(&'static str, String)> {
    let parse = |text: Option<&str>| text.and_then(|t| t.parse::<toml::Table>().ok());
    let (old, new) = (parse(old), parse(new));
    let mut changed = Vec::new();
    for section in ["dependencies", "package"] {
        let table = |doc: &Option<toml::Table>| {
            doc.as_ref()
                .and_then(|d| d.get("workspace"))
                .and_then(|w| w.get(section))
                .and_then(|t| t.as_table())
                .cloned()
                .unwrap_or_default()
        };
        let (a, b) = (table(&old), table(&new));
        let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for key in keys {
            if a.get(key) != b.get(key) {
                changed.push((section, key.clone()));
            }
        }
    }
    changed
}

impl Component {
    /// The workspace keys among `changes` (from [`workspace_changes`]) that change what this
    /// component ships, written as `[workspace.dependencies] tokio`.
    pub fn inherits(&self, changes: &[(&'static str, String)]) -> Vec<String> {
        changes
            .iter()
            .filter(|(section, key)| match *section {
                "dependencies" => self.workspace_dependencies.contains(key),
                _ => self.workspace_package.contains(key),
            })
            .map(|(section, key)| format!("[workspace.{section}] {key}"))
            .collect()
    }
}

/// The package name and version of a manifest, the directories (relative to the root) of its
/// path dependencies, and what it inherits from the workspace.
fn read_manifest(
    root: &Path,
    manifest: &Path,
    workspace: &Workspace,
) -> Result<ManifestInfo, String> {
    let text = std::fs::read_to_string(root.join(manifest))
        .map_err(|e| format!("cannot read {}: {e}", manifest.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("{} is not valid TOML: {e}", manifest.display()))?;
    let package_table = table.get("package").and_then(|p| p.as_table());
    let package = package_table
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_string);
    let mut info = ManifestInfo {
        package,
        ..ManifestInfo::default()
    };
    for (key, value) in package_table.into_iter().flatten() {
        if value.get("workspace").and_then(|w| w.as_bool()) == Some(true) {
            info.workspace_package.insert(key.clone());
        }
    }
    info.version = match package_table.and_then(|p| p.get("version")) {
        Some(toml::Value::String(v)) => Some(
            Version::parse(v)
                .map_err(|e| format!("package.version `{v}` is not a semantic version ({e})"))?,
        ),
        Some(_) => workspace.version.clone(),
        None => None,
    };
    let dir = manifest.parent().unwrap_or(Path::new(""));
    let mut sections: Vec<&toml::Table> = ["dependencies", "build-dependencies"]
        .iter()
        .filter_map(|s| table.get(*s).and_then(|d| d.as_table()))
        .collect();
    if let Some(targets) = table.get("target").and_then(|t| t.as_table()) {
        for target in targets.values() {
            for s in ["dependencies", "build-dependencies"] {
                if let Some(d) = target.get(s).and_then(|d| d.as_table()) {
                    sections.push(d);
                }
            }
        }
    }
    for section in sections {
        for (name, spec) in section {
            if let Some(path) = spec.get("path").and_then(|p| p.as_str()) {
                info.paths.push(normalize(&dir.join(path)));
            } else if spec.get("workspace").and_then(|w| w.as_bool()) == Some(true) {
                let key = spec.get("package").and_then(|p| p.as_str()).unwrap_or(name);
                info.workspace_dependencies.insert(name.clone());
                if let Some(path) = workspace
                    .paths
                    .get(key)
                    .or_else(|| workspace.paths.get(name))
                {
                    info.paths.push(path.clone());
                }
            }
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, path: &str, text: &str) {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    #[test]
    fn cargo_path_dependencies_direct_or_through_the_workspace_become_depends_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        write(
            root,
            "Cargo.toml",
            "[workspace]\nmembers = [\"crates/*\"]\n[workspace.dependencies]\nshared = { path = \"crates/shared\" }\n",
        );
        write(
            root,
            "crates/shared/Cargo.toml",
            "[package]\nname = \"shared\"\n",
        );
        write(
            root,
            "crates/api/Cargo.toml",
            "[package]\nname = \"api\"\n[dependencies]\nshared.workspace = true\n",
        );
        write(
            root,
            "crates/tool/Cargo.toml",
            "[package]\nname = \"tool\"\n[dependencies]\napi = { path = \"../api\" }\n[dev-dependencies]\nshared = { path = \"../shared\" }\n",
        );
        let config = Config::parse(
            root,
            r#"
[[components]]
name = "tool"
paths = ["crates/tool/**"]
manifest = "crates/tool/Cargo.toml"
[[components]]
name = "api"
paths = ["crates/api/**"]
manifest = "crates/api/Cargo.toml"
[[components]]
name = "shared"
paths = ["crates/shared/**"]
manifest = "crates/shared/Cargo.toml"
"#,
        )
        .expect("config");
        let order: Vec<&str> = config.components.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(order, ["shared", "api", "tool"], "dependencies first");
        let api = config.component("api").expect("api");
        assert_eq!(api.depends_on.get("shared"), Some(&Because::Cargo));
        let tool = config.component("tool").expect("tool");
        assert_eq!(
            tool.depends_on.keys().collect::<Vec<_>>(),
            ["api"],
            "a dev-dependency does not count"
        );
        assert_eq!(tool.package.as_deref(), Some("tool"));
        assert_eq!(tool.changelog, PathBuf::from("crates/tool/CHANGELOG.md"));
    }

    #[test]
    fn mistakes_name_the_key() {
        let root = Path::new("/nonexistent");
        let error = |text: &str| match Config::parse(root, text) {
            Err(Error::Config(m)) => m,
            other => panic!("expected a config error, got {other:?}"),
        };
        assert!(
            error("[[components]]\nname = \"a\"\npaths = []\n").contains("components[0] (a).paths")
        );
        assert!(error("[[components]]\nname = \"a b\"\npaths = [\"a\"]\n").contains(".name"));
        assert!(
            error("[[components]]\nname = \"a\"\npaths = [\"a/[\"]\n").contains("is not a glob")
        );
        assert!(
            error("[[components]]\nname = \"a\"\npaths = [\"a\"]\ndepends_on = [\"z\"]\n")
                .contains("`z`, which is not a component")
        );
        assert!(
            error("[[components]]\nname = \"a\"\npaths = [\"a\"]\ninitial_version = \"1\"\n")
                .contains("initial_version")
        );
        assert!(error("[defaults]\ninitial = 1\n").contains("initial"));
    }

    #[test]
    fn globs_match_whole_path_segments_and_excludes_win() {
        let root = Path::new("/nonexistent");
        let config = Config::parse(
            root,
            "[[components]]\nname = \"s\"\npaths = [\"server/**\", \"Cargo.lock\"]\nexclude = [\"**/*.md\"]\n",
        )
        .expect("config");
        let s = &config.components[0];
        assert!(s.owns("server/src/main.rs"));
        assert!(s.owns("Cargo.lock"));
        assert!(!s.owns("server/README.md"));
        assert!(!s.owns("server-old/x.rs"));
        assert!(!s.owns("sub/Cargo.lock"));
        assert!(s.answers_to("S"));
    }
}
