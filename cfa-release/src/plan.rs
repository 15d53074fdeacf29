//! The release plan: for every component, what changed since its last tag, the bump that asks
//! for, the new version, its changelog and image tags, and why. Read-only.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use git2::Oid;
use semver::Version;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::changelog::{Note, Notes, Section, Style};
use crate::config::{self, Config};
use crate::conventional::{self, Level, Meaning};
use crate::git::{CommitInfo, Git, VersionTag};
use crate::tag::{KNOWN, TagFormat};
use crate::version::{self, History, Policy};

/// What the caller asks for.
#[derive(Clone, Debug, Default)]
pub struct PlanRequest {
    /// Cut pre-releases with this identifier (`rc` → `1.3.0-rc.1`).
    pub pre: Option<String>,
}

/// The whole plan.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    /// The commit the plan was made for; `apply` refuses to tag anything else.
    pub head: String,
    /// The branch HEAD was on (`null` when detached).
    pub branch: Option<String>,
    /// The pre-release identifier, if any.
    pub pre: Option<String>,
    /// Every component, dependencies first.
    pub components: Vec<ComponentPlan>,
    /// Things worth a look: components whose paths match no file, versions tagged elsewhere.
    #[serde(default)]
    pub warnings: Vec<String>,
}

impl Plan {
    /// The components this plan releases.
    pub fn releases(&self) -> impl Iterator<Item = &ComponentPlan> {
        self.components.iter().filter(|c| c.release)
    }
}

/// One component's part of the plan.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ComponentPlan {
    /// The component.
    pub name: String,
    /// Its Cargo package, if it has one.
    pub package: Option<String>,
    /// Whether it is released.
    pub release: bool,
    /// Its last version on the history of HEAD.
    pub old_version: Option<String>,
    /// The tag of that version.
    pub old_tag: Option<String>,
    /// The version it is released as.
    pub new_version: Option<String>,
    /// The tag that will be created.
    pub new_tag: Option<String>,
    /// The bump level.
    pub bump: Level,
    /// Why, one line each; the first is what decided the bump.
    pub reasons: Vec<String>,
    /// The commit that decided the bump (the oldest of those asking for the highest level),
    /// when a commit did.
    #[serde(default)]
    pub decided_by: Option<String>,
    /// Every commit since the last tag that touched it, newest first, with its effect.
    pub commits: Vec<CommitEffect>,
    /// The changelog section (Markdown) of the new version.
    pub changelog: String,
    /// The same notes unrendered, for `apply --changelog` to write in each file's own style.
    #[serde(default)]
    pub notes: Notes,
    /// Image tags: `vX.Y.Z`, and the floating `vX.Y`, `vX`, `latest` it earns.
    pub image_tags: Vec<String>,
    /// Full image references, when the component names an image.
    pub images: Vec<String>,
}

/// What one commit did to a component.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CommitEffect {
    /// The commit's full id.
    pub id: String,
    /// Its first line.
    pub summary: String,
    /// The bump it asks of this component.
    pub bump: Level,
    /// How it was read.
    pub effect: String,
}

/// Components touched only through the root manifest's workspace tables, with the keys.
type Via = BTreeMap<usize, Vec<String>>;

/// A commit (or, inside a merge, one merged commit) with the components it touched.
struct Unit {
    id: Oid,
    summary: String,
    meaning: Meaning,
    touched: BTreeSet<usize>,
    via: Via,
}

struct Entry {
    section: Section,
    scope: Option<String>,
    text: String,
    id: Oid,
}

#[derive(Default)]
struct Assessment {
    level: Level,
    effects: Vec<CommitEffect>,
    entries: Vec<Entry>,
}

impl Assessment {
    fn notes(&self) -> Vec<Note> {
        self.entries
            .iter()
            .map(|e| Note {
                section: e.section,
                scope: e.scope.clone(),
                text: e.text.clone(),
                commit: short(e.id),
            })
            .collect()
    }
}

/// Reads commits once, whatever number of components ask about them.
struct Planner<'a> {
    git: &'a Git,
    config: &'a Config,
    units: HashMap<Oid, std::rc::Rc<Vec<Unit>>>,
}

fn short(id: Oid) -> String {
    id.to_string()[..7].to_string()
}

impl<'a> Planner<'a> {
    fn touched(&self, paths: &[String]) -> BTreeSet<usize> {
        self.config
            .components
            .iter()
            .enumerate()
            .filter(|(_, c)| paths.iter().any(|p| c.owns(p)))
            .map(|(i, _)| i)
            .collect()
    }

    /// The components a commit touched: through their files, or through a change to the root
    /// manifest's `[workspace.dependencies]` or `[workspace.package]` that they inherit.
    fn touched_by(&self, commit: &CommitInfo) -> Result<(BTreeSet<usize>, Via), Error> {
        let paths = self.git.changed_paths(commit)?;
        let mut touched = self.touched(&paths);
        let mut via = BTreeMap::new();
        if paths.iter().any(|p| p == "Cargo.toml") {
            let read = |id: Option<Oid>| -> Result<Option<String>, Error> {
                Ok(match id {
                    Some(id) => self
                        .git
                        .file_at(id, "Cargo.toml")?
                        .map(|b| String::from_utf8_lossy(&b).into_owned()),
                    None => None,
                })
            };
            let old = read(commit.parents.first().copied())?;
            let new = read(Some(commit.id))?;
            let changes = config::workspace_changes(old.as_deref(), new.as_deref());
            for (i, c) in self.config.components.iter().enumerate() {
                let keys = c.inherits(&changes);
                if !keys.is_empty() && touched.insert(i) {
                    via.insert(i, keys);
                }
            }
        }
        Ok((touched, via))
    }

    fn unit(&self, commit: &CommitInfo, touched: BTreeSet<usize>, via: &Via) -> Unit {
        let via = via
            .iter()
            .filter(|(i, _)| touched.contains(i))
            .map(|(i, k)| (*i, k.clone()))
            .collect();
        Unit {
            id: commit.id,
            summary: commit.summary.clone(),
            meaning: conventional::parse(&commit.message),
            touched,
            via,
        }
    }

    /// A plain commit is one unit. A merge is judged by its diff to its first parent, and that
    /// diff is attributed to the commits it merged (each for the components it touched itself),
    /// so their conventional messages count; what none of them touched falls to the merge's own.
    fn units(&mut self, id: Oid) -> Result<std::rc::Rc<Vec<Unit>>, Error> {
        if let Some(units) = self.units.get(&id) {
            return Ok(units.clone());
        }
        let commit = self.git.commit(id)?;
        let (touched, via) = self.touched_by(&commit)?;
        let mut units = Vec::new();
        if commit.parents.len() > 1 && !touched.is_empty() {
            let mut covered = BTreeSet::new();
            for merged in self.git.merged_commits(&commit)? {
                let merged = self.git.commit(merged)?;
                if merged.parents.len() > 1 {
                    continue;
                }
                let (theirs, their_via) = self.touched_by(&merged)?;
                let own: BTreeSet<usize> = theirs.intersection(&touched).copied().collect();
                if own.is_empty() {
                    continue;
                }
                covered.extend(own.iter().copied());
                units.push(self.unit(&merged, own, &their_via));
            }
            let rest: BTreeSet<usize> = touched.difference(&covered).copied().collect();
            if !rest.is_empty() {
                units.push(self.unit(&commit, rest, &via));
            }
        } else if !touched.is_empty() {
            units.push(self.unit(&commit, touched, &via));
        }
        let units = std::rc::Rc::new(units);
        self.units.insert(id, units.clone());
        Ok(units)
    }

    /// What `commits` (newest first) mean for component `ci`.
    fn assess(&mut self, ci: usize, commits: &[Oid]) -> Result<Assessment, Error> {
        let mut all = Vec::new();
        for id in commits {
            all.push(self.units(*id)?);
        }
        let units: Vec<&Unit> = all
            .iter()
            .flat_map(|u| u.iter())
            .filter(|u| u.touched.contains(&ci))
            .collect();
        // Reverts inside the range: a revert negates its target, so a commit counts only if no
        // revert of it counts (a revert of a revert brings the original back). A revert whose
        // target is in the range never counts itself; one of a change released before is a patch.
        let target_of = |u: &Unit| match &u.meaning {
            Meaning::Revert {
                reverted: Some(target),
                ..
            } => units
                .iter()
                .find(|o| o.id != u.id && o.id.to_string().starts_with(target.as_str()))
                .map(|o| o.id),
            _ => None,
        };
        let mut reverted_by: HashMap<Oid, Vec<Oid>> = HashMap::new();
        let mut in_range_revert: HashMap<Oid, Oid> = HashMap::new();
        for u in &units {
            if let Some(target) = target_of(u) {
                reverted_by.entry(target).or_default().push(u.id);
                in_range_revert.insert(u.id, target);
            }
        }
        fn counts(id: Oid, reverted_by: &HashMap<Oid, Vec<Oid>>, depth: usize) -> bool {
            depth > 64
                || !reverted_by
                    .get(&id)
                    .is_some_and(|rs| rs.iter().any(|r| counts(*r, reverted_by, depth + 1)))
        }
        let mut cancelled: HashMap<Oid, String> = HashMap::new();
        for u in &units {
            if let Some(target) = in_range_revert.get(&u.id) {
                cancelled.insert(
                    u.id,
                    format!(
                        "reverts {} from this same release: no change of its own",
                        short(*target)
                    ),
                );
            } else if !counts(u.id, &reverted_by, 0) {
                let by = reverted_by.get(&u.id).and_then(|r| r.first()).copied();
                cancelled.insert(
                    u.id,
                    format!(
                        "reverted by {} before release: drops out",
                        by.map(short).unwrap_or_default()
                    ),
                );
            }
        }
        let component = &self.config.components[ci];
        let mut a = Assessment::default();
        for u in units {
            let (level, effect) = if let Some(why) = cancelled.get(&u.id) {
                (Level::None, why.clone())
            } else {
                match &u.meaning {
                    Meaning::Release => (Level::None, "a release commit: ignored".to_string()),
                    Meaning::Revert { subject, .. } => {
                        a.entries.push(Entry {
                            section: Section::Reverts,
                            scope: None,
                            text: subject.clone(),
                            id: u.id,
                        });
                        (
                            Level::Patch,
                            "reverts a change released before → patch".to_string(),
                        )
                    }
                    Meaning::Changes {
                        changes,
                        breaking_note,
                    } => {
                        // A scope naming another component this commit touched is that
                        // component's change; any other scope (or none) applies to all.
                        let mine: Vec<&conventional::Change> = changes
                            .iter()
                            .filter(|c| match &c.scope {
                                None => true,
                                Some(s) if component.answers_to(s) => true,
                                Some(s) => !u
                                    .touched
                                    .iter()
                                    .any(|&o| o != ci && self.config.components[o].answers_to(s)),
                            })
                            .collect();
                        if mine.is_empty() {
                            a.entries.push(Entry {
                                section: Section::Other,
                                scope: None,
                                text: u.summary.clone(),
                                id: u.id,
                            });
                            (
                                Level::Patch,
                                "its changes are scoped to another component, but it touched this one's files → patch"
                                    .to_string(),
                            )
                        } else {
                            let level =
                                mine.iter().map(|c| c.level()).max().unwrap_or(Level::Patch);
                            let kinds: Vec<String> = mine
                                .iter()
                                .map(|c| {
                                    let mut k = c.kind.clone();
                                    if c.breaking {
                                        k.push('!');
                                    }
                                    k
                                })
                                .collect();
                            for c in &mine {
                                let section = if c.breaking {
                                    Section::Breaking
                                } else {
                                    match c.kind.as_str() {
                                        "feat" => Section::Features,
                                        "fix" => Section::Fixes,
                                        "perf" => Section::Performance,
                                        _ => Section::Other,
                                    }
                                };
                                let mut text = c.description.clone();
                                if c.breaking
                                    && let Some(note) = breaking_note
                                {
                                    text = format!("{text} — {note}");
                                }
                                a.entries.push(Entry {
                                    section,
                                    scope: c.scope.clone(),
                                    text,
                                    id: u.id,
                                });
                            }
                            let how = if kinds == ["other"] {
                                "not a conventional commit".to_string()
                            } else {
                                kinds.join(", ")
                            };
                            (level, format!("{how} → {}", level_name(level)))
                        }
                    }
                }
            };
            let effect = match u.via.get(&ci) {
                Some(keys) if level > Level::None => {
                    format!("{effect}; through {}, which it uses", keys.join(", "))
                }
                _ => effect,
            };
            a.level = a.level.max(level);
            a.effects.push(CommitEffect {
                id: u.id.to_string(),
                summary: u.summary.clone(),
                bump: level,
                effect,
            });
        }
        Ok(a)
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::None => "none",
        Level::Patch => "patch",
        Level::Minor => "minor",
        Level::Major => "major",
    }
}

/// Every tag of the repository that names a version of a component: in the component's own
/// format, or in another well-known one (marked `foreign`, an older convention). A tag in a
/// component's own named format whose version is not semver is an error, not skipped.
pub fn version_tags(
    config: &Config,
    tags: &[(String, Oid)],
) -> Result<Vec<Vec<VersionTag>>, Error> {
    let mut out: Vec<Vec<VersionTag>> = vec![Vec::new(); config.components.len()];
    let known: Vec<TagFormat> = KNOWN
        .iter()
        .filter_map(|k| TagFormat::parse(k).ok())
        .collect();
    let single = config.components.len() == 1;
    for (name, commit) in tags {
        let own = config
            .components
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.tag.version_text(&c.name, name).map(|(t, n)| (i, t, n)))
            .max_by_key(|(_, _, n)| *n);
        if let Some((i, text, _)) = own {
            let component = &config.components[i];
            match semver::Version::parse(text) {
                Ok(version) => {
                    out[i].push(VersionTag {
                        name: name.clone(),
                        version,
                        commit: *commit,
                        foreign: None,
                    });
                    continue;
                }
                Err(e) if component.tag.is_named() => {
                    return Err(Error::Refused(format!(
                        "tag {name} is not `{}` with a semantic version ({e}); delete or rename it (git tag -d {name})",
                        component.tag
                    )));
                }
                Err(_) => {}
            }
        }
        let foreign = config
            .components
            .iter()
            .enumerate()
            .flat_map(|(i, c)| known.iter().map(move |f| (i, c, f)))
            .filter(|(_, c, f)| **f != c.tag && (f.is_named() || single))
            .filter_map(|(i, c, f)| {
                let (text, n) = f.version_text(&c.name, name)?;
                let version = semver::Version::parse(text).ok()?;
                Some((i, f, version, n))
            })
            .max_by_key(|(_, _, _, n)| *n);
        if let Some((i, format, version, _)) = foreign {
            out[i].push(VersionTag {
                name: name.clone(),
                version,
                commit: *commit,
                foreign: Some(format.to_string()),
            });
        }
    }
    Ok(out)
}

/// Where one component stands: its tags on the history of HEAD.
struct Standing<'t> {
    last: Option<&'t VersionTag>,
    stable: Option<&'t VersionTag>,
    history: History,
}

fn standing<'t>(git: &Git, head: Oid, tags: &'t [VersionTag]) -> Result<Standing<'t>, Error> {
    let mut reachable = Vec::new();
    for tag in tags {
        if git.reachable(head, tag.commit)? {
            reachable.push(tag);
        }
    }
    // Two tags of one version (an old format and the new): the component's own wins.
    let rank = |t: &&VersionTag| (t.version.clone(), t.foreign.is_none());
    let last = reachable.iter().copied().max_by_key(rank);
    let stable = reachable
        .iter()
        .copied()
        .filter(|t| t.version.pre.is_empty())
        .max_by_key(rank);
    let history = History {
        stable: stable.map(|t| t.version.clone()),
        last: last.map(|t| t.version.clone()),
        all: tags.iter().map(|t| t.version.clone()).collect(),
    };
    Ok(Standing {
        last,
        stable,
        history,
    })
}

/// The reasons of a component's commits, the one that decided the bump first: the oldest of
/// the commits asking for the highest level (the newest is not the one that decided).
fn commit_reasons(effects: &[CommitEffect]) -> (Vec<String>, Option<String>) {
    let top = effects.iter().map(|e| e.bump).max().unwrap_or(Level::None);
    let decided = effects
        .iter()
        .rposition(|e| e.bump == top && top > Level::None);
    let line = |e: &CommitEffect| format!("{} {} ({})", &e.id[..7], e.summary, e.effect);
    let mut reasons: Vec<String> = decided.map(|i| line(&effects[i])).into_iter().collect();
    for (i, e) in effects.iter().enumerate() {
        if e.bump > Level::None && Some(i) != decided {
            reasons.push(line(e));
        }
    }
    (reasons, decided.map(|i| effects[i].id.clone()))
}

/// Makes the plan for HEAD.
pub fn plan(git: &Git, config: &Config, request: &PlanRequest) -> Result<Plan, Error> {
    if let Some(pre) = &request.pre {
        version::check_pre_id(pre).map_err(Error::Usage)?;
    }
    let head = git.head()?;
    let head_info = git.commit(head)?;
    let date = chrono::DateTime::from_timestamp(head_info.time, 0)
        .map(|d| d.date_naive().to_string())
        .unwrap_or_default();
    let mut planner = Planner {
        git,
        config,
        units: HashMap::new(),
    };
    let mut released: BTreeMap<String, String> = BTreeMap::new();
    let all_tags = version_tags(config, &git.tags()?)?;
    let files = git.files(head)?;
    let mut warnings = Vec::new();
    let mut components = Vec::new();
    for (ci, component) in config.components.iter().enumerate() {
        if !files.iter().any(|f| component.owns(f)) {
            warnings.push(format!(
                "{}: no file at HEAD matches its paths ({}); check release.toml",
                component.name,
                component.paths.join(", ")
            ));
        }
        let s = standing(git, head, &all_tags[ci])?;
        let plan = plan_component(
            &mut planner,
            ci,
            &s,
            request,
            &released,
            &date,
            &mut warnings,
        )?;
        if let Some(new) = &plan.new_version {
            released.insert(component.name.clone(), new.clone());
        }
        components.push(plan);
    }
    Ok(Plan {
        head: head.to_string(),
        branch: git.branch(),
        pre: request.pre.clone(),
        components,
        warnings,
    })
}

/// One component's part of the plan, given what the components before it release.
fn plan_component(
    planner: &mut Planner<'_>,
    ci: usize,
    s: &Standing<'_>,
    request: &PlanRequest,
    released: &BTreeMap<String, String>,
    date: &str,
    warnings: &mut Vec<String>,
) -> Result<ComponentPlan, Error> {
    let (git, config) = (planner.git, planner.config);
    let component = &config.components[ci];
    let head = git.head()?;
    let commits = git.first_parent_since(head, s.last.map(|t| t.commit))?;
    let mut assessment = planner.assess(ci, &commits)?;
    let mut level = assessment.level;
    let mut release = level > Level::None;
    // While on pre-releases, the target is measured from the last stable version, and a
    // stable release after candidates lists everything since that version.
    if let Some(last) = s.last
        && !last.version.pre.is_empty()
    {
        let since_stable = git.first_parent_since(head, s.stable.map(|t| t.commit))?;
        let whole = planner.assess(ci, &since_stable)?;
        level = level.max(whole.level);
        if request.pre.is_none() {
            assessment = whole;
        }
    }
    let (mut reasons, decided_by) = commit_reasons(&assessment.effects);
    let mut dependencies = Vec::new();
    for dep in component.depends_on.keys() {
        if let Some(v) = released.get(dep) {
            reasons.push(format!(
                "depends on {dep}, which is released as {v} → patch"
            ));
            dependencies.push(format!("{dep} {v}"));
            level = level.max(Level::Patch);
            release = true;
        }
    }
    match s.last {
        None => {
            release = true;
            reasons.insert(
                0,
                format!(
                    "first release (no {} tag on the history of HEAD)",
                    component.tag.pattern(&component.name)
                ),
            );
        }
        Some(last) if !last.version.pre.is_empty() && request.pre.is_none() => {
            release = true;
            reasons.push(format!(
                "promotes the pre-release {} to a release",
                last.version
            ));
        }
        _ => {}
    }
    let policy = Policy {
        features_always_increment_minor: component.features_always_increment_minor,
    };
    let new_version: Option<Version> = release.then(|| {
        version::next(
            &s.history,
            &component.initial_version,
            level,
            request.pre.as_deref(),
            policy,
        )
    });
    let new_tag = new_version
        .as_ref()
        .map(|v| component.tag.render(&component.name, v));
    warn_about_versions(
        component,
        s,
        new_version.as_ref(),
        new_tag.as_deref(),
        warnings,
    );
    let mut plan = ComponentPlan {
        name: component.name.clone(),
        package: component.package.clone(),
        release,
        old_version: s.last.map(|t| t.version.to_string()),
        old_tag: s.last.map(|t| t.name.clone()),
        new_version: new_version.as_ref().map(Version::to_string),
        new_tag: new_tag.clone(),
        bump: if release { level } else { Level::None },
        decided_by: if release { decided_by } else { None },
        reasons: if release { reasons } else { Vec::new() },
        commits: assessment.effects.clone(),
        changelog: String::new(),
        notes: Notes::default(),
        image_tags: Vec::new(),
        images: Vec::new(),
    };
    if let (Some(new), Some(tag)) = (&new_version, &new_tag) {
        if let Some(existing) = git.tag_target(tag)?
            && existing != head
        {
            warnings.push(format!(
                "{tag} already exists on {}; apply accepts it only as the release commit of this HEAD",
                short(existing)
            ));
        }
        plan.notes = Notes {
            date: date.to_string(),
            entries: assessment.notes(),
            dependencies,
        };
        plan.changelog = Style::default().render(&component.name, &new.to_string(), &plan.notes);
        plan.image_tags = version::image_tags(new, &s.history.all);
        if let Some(image) = &component.image {
            plan.images = plan
                .image_tags
                .iter()
                .map(|t| format!("{image}:{t}"))
                .collect();
        }
    }
    Ok(plan)
}

/// Warnings a release-plz user would want before tagging: a last release read from a tag in
/// an older format, and a version below the one the manifest already declares.
fn warn_about_versions(
    component: &config::Component,
    s: &Standing<'_>,
    new: Option<&Version>,
    new_tag: Option<&str>,
    warnings: &mut Vec<String>,
) {
    let name = &component.name;
    if let Some(last) = s.last
        && let Some(format) = &last.foreign
    {
        warnings.push(format!(
            "{name}: its last release is read from {} (format `{format}`), not from a `{}` tag; the next tag is {}; set tag = \"{format}\" in release.toml to keep the old format",
            last.name,
            component.tag,
            new_tag.unwrap_or("written in the new format")
        ));
    }
    let planned = new.or(s.last.map(|t| &t.version));
    if let (Some(planned), Some(manifest)) = (planned, &component.manifest_version)
        && planned < manifest
    {
        warnings.push(format!(
            "{name}: the plan says {planned} but its manifest already says {manifest}; its releases may be tagged in a format cfa-release does not know (set `tag` in release.toml, e.g. \"v{{version}}\"), or the manifest was bumped by hand"
        ));
    }
}
