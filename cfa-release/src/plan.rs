//! The release plan: for every component, what changed since its last tag, the bump that asks
//! for, the new version, its changelog and image tags, and why. Read-only.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use git2::Oid;
use semver::Version;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::config::Config;
use crate::conventional::{self, Level, Meaning};
use crate::git::{CommitInfo, Git};
use crate::version::{self, History};

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
    /// Why, one line each.
    pub reasons: Vec<String>,
    /// Every commit since the last tag that touched it, newest first, with its effect.
    pub commits: Vec<CommitEffect>,
    /// The changelog section (Markdown) of the new version.
    pub changelog: String,
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

/// A commit (or, inside a merge, one merged commit) with the components it touched.
struct Unit {
    id: Oid,
    summary: String,
    meaning: Meaning,
    touched: BTreeSet<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Section {
    Breaking,
    Features,
    Fixes,
    Performance,
    Reverts,
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

    fn unit(&self, commit: &CommitInfo, touched: BTreeSet<usize>) -> Unit {
        Unit {
            id: commit.id,
            summary: commit.summary.clone(),
            meaning: conventional::parse(&commit.message),
            touched,
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
        let touched = self.touched(&self.git.changed_paths(&commit)?);
        let mut units = Vec::new();
        if commit.parents.len() > 1 && !touched.is_empty() {
            let mut covered = BTreeSet::new();
            for merged in self.git.merged_commits(&commit)? {
                let merged = self.git.commit(merged)?;
                if merged.parents.len() > 1 {
                    continue;
                }
                let own: BTreeSet<usize> = self
                    .touched(&self.git.changed_paths(&merged)?)
                    .intersection(&touched)
                    .copied()
                    .collect();
                if own.is_empty() {
                    continue;
                }
                covered.extend(own.iter().copied());
                units.push(self.unit(&merged, own));
            }
            let rest: BTreeSet<usize> = touched.difference(&covered).copied().collect();
            if !rest.is_empty() {
                units.push(self.unit(&commit, rest));
            }
        } else if !touched.is_empty() {
            units.push(self.unit(&commit, touched));
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
    let names: Vec<&str> = config.components.iter().map(|c| c.name.as_str()).collect();
    let files = git.files(head)?;
    let mut warnings = Vec::new();
    let mut components = Vec::new();
    for (ci, component) in config.components.iter().enumerate() {
        let tags = git.version_tags(&component.name, &names)?;
        if !files.iter().any(|f| component.owns(f)) {
            warnings.push(format!(
                "{}: no file at HEAD matches its paths ({}); check release.toml",
                component.name,
                component.paths.join(", ")
            ));
        }
        let mut reachable = Vec::new();
        for tag in &tags {
            if git.reachable(head, tag.commit)? {
                reachable.push(tag);
            }
        }
        let last = reachable.iter().max_by(|a, b| a.version.cmp(&b.version));
        let stable = reachable
            .iter()
            .filter(|t| t.version.pre.is_empty())
            .max_by(|a, b| a.version.cmp(&b.version));
        let history = History {
            stable: stable.map(|t| t.version.clone()),
            last: last.map(|t| t.version.clone()),
            all: tags.iter().map(|t| t.version.clone()).collect(),
        };
        let commits = git.first_parent_since(head, last.map(|t| t.commit))?;
        let mut assessment = planner.assess(ci, &commits)?;
        let mut level = assessment.level;
        let mut release = level > Level::None;
        // While on pre-releases, the target is measured from the last stable version, and a
        // stable release after candidates lists everything since that version.
        if let Some(last) = last
            && !last.version.pre.is_empty()
        {
            let since_stable = git.first_parent_since(head, stable.map(|t| t.commit))?;
            let whole = planner.assess(ci, &since_stable)?;
            level = level.max(whole.level);
            if request.pre.is_none() {
                assessment = whole;
            }
        }
        let mut reasons = Vec::new();
        for effect in &assessment.effects {
            if effect.bump > Level::None {
                reasons.push(format!(
                    "{} {} ({})",
                    &effect.id[..7],
                    effect.summary,
                    effect.effect
                ));
            }
        }
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
        match last {
            None => {
                release = true;
                reasons.insert(
                    0,
                    format!(
                        "first release (no {}-v* tag on the history of HEAD)",
                        component.name
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
        let new_version: Option<Version> = release.then(|| {
            version::next(
                &history,
                &component.initial_version,
                level,
                request.pre.as_deref(),
            )
        });
        let mut plan = ComponentPlan {
            name: component.name.clone(),
            package: component.package.clone(),
            release,
            old_version: last.map(|t| t.version.to_string()),
            old_tag: last.map(|t| t.name.clone()),
            new_version: new_version.as_ref().map(Version::to_string),
            new_tag: new_version
                .as_ref()
                .map(|v| format!("{}-v{v}", component.name)),
            bump: if release { level } else { Level::None },
            reasons: if release { reasons } else { Vec::new() },
            commits: assessment.effects.clone(),
            changelog: String::new(),
            image_tags: Vec::new(),
            images: Vec::new(),
        };
        if let Some(new) = &new_version {
            let tag = format!("{}-v{new}", component.name);
            if let Some(existing) = git.tag_target(&tag)?
                && existing != head
            {
                warnings.push(format!(
                    "{tag} already exists on {}; apply accepts it only as the release commit of this HEAD",
                    short(existing)
                ));
            }
            released.insert(component.name.clone(), new.to_string());
            plan.changelog = changelog(
                &component.name,
                new,
                &date,
                &assessment.entries,
                &dependencies,
            );
            plan.image_tags = version::image_tags(new, &history.all);
            if let Some(image) = &component.image {
                plan.images = plan
                    .image_tags
                    .iter()
                    .map(|t| format!("{image}:{t}"))
                    .collect();
            }
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

/// The Markdown section of one release.
fn changelog(
    name: &str,
    version: &Version,
    date: &str,
    entries: &[Entry],
    dependencies: &[String],
) -> String {
    let mut out = format!("## {name} {version} ({date})\n");
    let mut seen = HashSet::new();
    let mut sections: BTreeMap<Section, Vec<String>> = BTreeMap::new();
    for e in entries {
        let line = match &e.scope {
            Some(scope) => format!("- **{scope}:** {} ({})", e.text, short(e.id)),
            None => format!("- {} ({})", e.text, short(e.id)),
        };
        if seen.insert(line.clone()) {
            sections.entry(e.section).or_default().push(line);
        }
    }
    for (section, lines) in sections {
        out.push_str(&format!("\n### {}\n\n", section.title()));
        for line in lines {
            out.push_str(&line);
            out.push('\n');
        }
    }
    if !dependencies.is_empty() {
        out.push_str("\n### Dependencies\n\n");
        for d in dependencies {
            out.push_str(&format!("- {d}\n"));
        }
    }
    if entries.is_empty() && dependencies.is_empty() {
        out.push_str("\nNo changes of its own.\n");
    }
    out
}
