//! Everything this tool asks of git, behind one small type over git2 (libgit2): no `git` binary,
//! no network.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use git2::{DiffOptions, ObjectType, Oid, Repository, Signature, Sort, StatusOptions};
use semver::Version;

use crate::Error;

/// One commit, as the planner reads it.
#[derive(Clone, Debug)]
pub struct CommitInfo {
    /// Full id.
    pub id: Oid,
    /// Its first line.
    pub summary: String,
    /// The whole message.
    pub message: String,
    /// Parent ids, first parent first.
    pub parents: Vec<Oid>,
    /// Commit time, seconds since the epoch.
    pub time: i64,
}

/// A version tag of a component.
#[derive(Clone, Debug)]
pub struct VersionTag {
    /// The tag's name (`<component>-v<version>` by default).
    pub name: String,
    /// The version it names.
    pub version: Version,
    /// The commit it points at.
    pub commit: Oid,
    /// The tag format it was read with, when not the component's own (an older convention).
    pub foreign: Option<String>,
}

/// A repository with a work tree.
pub struct Git {
    repo: Repository,
    root: PathBuf,
    paths: Mutex<HashMap<Oid, Vec<String>>>,
}

impl Git {
    /// Opens the repository that contains `path`.
    pub fn open(path: &Path) -> Result<Git, Error> {
        let repo = Repository::discover(path).map_err(|e| {
            Error::Refused(format!(
                "{} is not inside a git repository ({}); run cfa-release from your checkout or pass --repo",
                path.display(),
                e.message()
            ))
        })?;
        let root = repo
            .workdir()
            .ok_or_else(|| Error::Refused("the repository is bare; use a checkout".into()))?
            .to_path_buf();
        Ok(Git {
            repo,
            root,
            paths: Mutex::new(HashMap::new()),
        })
    }

    /// The work tree's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The commit HEAD points at.
    pub fn head(&self) -> Result<Oid, Error> {
        let head = self.repo.head().map_err(|_| {
            Error::Refused("HEAD points at no commit yet; commit something first".into())
        })?;
        Ok(head.peel_to_commit()?.id())
    }

    /// The branch HEAD is on, or `None` when it is detached.
    pub fn branch(&self) -> Option<String> {
        if self.repo.head_detached().unwrap_or(true) {
            return None;
        }
        self.repo.head().ok()?.shorthand().ok().map(str::to_string)
    }

    /// Tracked files with uncommitted changes (staged or not); untracked files do not count.
    pub fn dirty_files(&self) -> Result<Vec<String>, Error> {
        let mut options = StatusOptions::new();
        options.include_untracked(false).include_ignored(false);
        let statuses = self.repo.statuses(Some(&mut options))?;
        Ok(statuses
            .iter()
            .filter(|s| !s.status().is_empty())
            .filter_map(|s| s.path().ok().map(str::to_string))
            .collect())
    }

    /// Resolves a revision (`main`, `origin/main`, a tag, an id) to a commit.
    pub fn resolve(&self, rev: &str) -> Result<Oid, Error> {
        let object = self.repo.revparse_single(rev).map_err(|e| {
            Error::Refused(format!("`{rev}` names no commit here: {}", e.message()))
        })?;
        Ok(object.peel_to_commit()?.id())
    }

    /// The best common ancestor of two commits.
    pub fn merge_base(&self, a: Oid, b: Oid) -> Result<Oid, Error> {
        Ok(self.repo.merge_base(a, b)?)
    }

    /// Reads one commit.
    pub fn commit(&self, id: Oid) -> Result<CommitInfo, Error> {
        let commit = self.repo.find_commit(id)?;
        Ok(CommitInfo {
            id,
            summary: String::from_utf8_lossy(commit.summary_bytes().unwrap_or_default())
                .into_owned(),
            message: String::from_utf8_lossy(commit.message_bytes()).into_owned(),
            parents: commit.parent_ids().collect(),
            time: commit.time().seconds(),
        })
    }

    /// Every tag that points (through annotations) at a commit, with that commit.
    pub fn tags(&self) -> Result<Vec<(String, Oid)>, Error> {
        let names = self.repo.tag_names(None)?;
        let mut tags = Vec::new();
        for name in names.iter() {
            let Some(name) = name? else { continue };
            let reference = self.repo.find_reference(&format!("refs/tags/{name}"))?;
            // A tag of a tree or a blob names no release.
            if let Ok(commit) = reference.peel_to_commit() {
                tags.push((name.to_string(), commit.id()));
            }
        }
        Ok(tags)
    }

    /// The content of `path` in a commit's tree, if it has that file.
    pub fn file_at(&self, commit: Oid, path: &str) -> Result<Option<Vec<u8>>, Error> {
        let tree = self.repo.find_commit(commit)?.tree()?;
        let Ok(entry) = tree.get_path(Path::new(path)) else {
            return Ok(None);
        };
        Ok(entry
            .to_object(&self.repo)?
            .as_blob()
            .map(|b| b.content().to_vec()))
    }

    /// Whether the history was cut short (`git clone --depth N`).
    pub fn is_shallow(&self) -> bool {
        self.repo.is_shallow()
    }

    /// Whether `ancestor` is `head` or in its history.
    pub fn reachable(&self, head: Oid, ancestor: Oid) -> Result<bool, Error> {
        Ok(head == ancestor || self.repo.graph_descendant_of(head, ancestor)?)
    }

    /// The first-parent history from `head` down to (not including) anything reachable from
    /// `since`; newest first.
    pub fn first_parent_since(&self, head: Oid, since: Option<Oid>) -> Result<Vec<Oid>, Error> {
        let mut walk = self.repo.revwalk()?;
        walk.set_sorting(Sort::TOPOLOGICAL)?;
        walk.simplify_first_parent()?;
        walk.push(head)?;
        if let Some(since) = since {
            walk.hide(since)?;
        }
        Ok(walk.collect::<Result<Vec<_>, _>>()?)
    }

    /// Every commit a merge brought in: reachable from its other parents, not from its first.
    pub fn merged_commits(&self, merge: &CommitInfo) -> Result<Vec<Oid>, Error> {
        let mut walk = self.repo.revwalk()?;
        walk.set_sorting(Sort::TOPOLOGICAL)?;
        for parent in &merge.parents[1..] {
            walk.push(*parent)?;
        }
        walk.hide(merge.parents[0])?;
        Ok(walk.collect::<Result<Vec<_>, _>>()?)
    }

    /// Every commit in `from..to` (all parents), newest first.
    pub fn range(&self, from: Oid, to: Oid) -> Result<Vec<Oid>, Error> {
        let mut walk = self.repo.revwalk()?;
        walk.set_sorting(Sort::TOPOLOGICAL)?;
        walk.push(to)?;
        walk.hide(from)?;
        Ok(walk.collect::<Result<Vec<_>, _>>()?)
    }

    /// Every commit reachable from `to` but from none of `hide` (all parents), newest first.
    pub fn since(&self, to: Oid, hide: &[Oid]) -> Result<Vec<Oid>, Error> {
        let mut walk = self.repo.revwalk()?;
        walk.set_sorting(Sort::TOPOLOGICAL)?;
        walk.push(to)?;
        for h in hide {
            walk.hide(*h)?;
        }
        Ok(walk.collect::<Result<Vec<_>, _>>()?)
    }

    /// The paths a commit changed against its first parent (everything, for a root commit);
    /// both sides of a rename count.
    pub fn changed_paths(&self, commit: &CommitInfo) -> Result<Vec<String>, Error> {
        if let Some(paths) = self
            .paths
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&commit.id)
        {
            return Ok(paths.clone());
        }
        let paths = self.diff_paths(commit.parents.first().copied(), commit.id)?;
        self.paths
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(commit.id, paths.clone());
        Ok(paths)
    }

    /// The paths that differ between two commits' trees (`from` `None`: the empty tree).
    pub fn diff_paths(&self, from: Option<Oid>, to: Oid) -> Result<Vec<String>, Error> {
        let new = self.repo.find_commit(to)?.tree()?;
        let old = match from {
            Some(id) => Some(self.repo.find_commit(id)?.tree()?),
            None => None,
        };
        let mut options = DiffOptions::new();
        options.skip_binary_check(true);
        let diff = self
            .repo
            .diff_tree_to_tree(old.as_ref(), Some(&new), Some(&mut options))?;
        let mut paths = Vec::new();
        for delta in diff.deltas() {
            for file in [delta.old_file(), delta.new_file()] {
                if let Some(p) = file.path().and_then(|p| p.to_str()) {
                    let p = p.replace('\\', "/");
                    if !paths.contains(&p) {
                        paths.push(p);
                    }
                }
            }
        }
        Ok(paths)
    }

    /// The identity to tag and commit as: the repository's `user.name`/`user.email`, or
    /// `cfa-release <cfa-release@localhost>` where none is configured (a bare CI runner).
    pub fn signature(&self) -> Result<Signature<'static>, Error> {
        match self.repo.signature() {
            Ok(s) => Ok(s),
            Err(_) => Ok(Signature::now("cfa-release", "cfa-release@localhost")?),
        }
    }

    /// Whether `commit` is a release commit made by `apply` directly on top of `parent`.
    pub fn is_release_commit_of(&self, commit: Oid, parent: Oid) -> Result<bool, Error> {
        let info = self.commit(commit)?;
        Ok(info.parents.first() == Some(&parent)
            && info
                .summary
                .starts_with(crate::conventional::RELEASE_PREFIX))
    }

    /// The commit a tag name points at, if the tag exists.
    pub fn tag_target(&self, name: &str) -> Result<Option<Oid>, Error> {
        match self.repo.find_reference(&format!("refs/tags/{name}")) {
            Ok(r) => Ok(Some(r.peel_to_commit()?.id())),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// A commit of the given work-tree files (relative to the root) on top of HEAD, without
    /// moving any reference (see [`Git::create_tags`]) or touching the index.
    pub fn commit_files(
        &self,
        files: &[PathBuf],
        message: &str,
        who: &Signature<'_>,
    ) -> Result<Oid, Error> {
        let parent = self.repo.find_commit(self.head()?)?;
        let mut index = git2::Index::new()?;
        index.read_tree(&parent.tree()?)?;
        for file in files {
            let bytes = std::fs::read(self.root.join(file))
                .map_err(|e| Error::Io(format!("cannot read {}: {e}", file.display())))?;
            let path = file.to_string_lossy().replace('\\', "/");
            let entry = git2::IndexEntry {
                ctime: git2::IndexTime::new(0, 0),
                mtime: git2::IndexTime::new(0, 0),
                dev: 0,
                ino: 0,
                mode: 0o100644,
                uid: 0,
                gid: 0,
                file_size: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
                id: self.repo.blob(&bytes)?,
                flags: u16::try_from(path.len()).unwrap_or(0xfff).min(0xfff),
                flags_extended: 0,
                path: path.into_bytes(),
            };
            index.add(&entry)?;
        }
        let tree = self.repo.find_tree(index.write_tree_to(&self.repo)?)?;
        Ok(self
            .repo
            .commit(None, who, who, message, &tree, &[&parent])?)
    }

    /// Makes the index match `commit` (after the branch moved to a commit made from the work
    /// tree's files, so the work tree stays clean).
    pub fn reset_index(&self, commit: Oid) -> Result<(), Error> {
        let tree = self.repo.find_commit(commit)?.tree()?;
        let mut index = self.repo.index()?;
        index.read_tree(&tree)?;
        index.write()?;
        Ok(())
    }

    /// The full reference name of the branch HEAD is on.
    pub fn branch_ref(&self) -> Option<String> {
        if self.repo.head_detached().unwrap_or(true) {
            return None;
        }
        self.repo.head().ok()?.name().ok().map(str::to_string)
    }

    /// Every file in a commit's tree.
    pub fn files(&self, commit: Oid) -> Result<Vec<String>, Error> {
        let tree = self.repo.find_commit(commit)?.tree()?;
        let mut files = Vec::new();
        tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            if entry.kind() == Some(ObjectType::Blob)
                && let Ok(name) = entry.name()
            {
                files.push(format!("{dir}{name}"));
            }
            git2::TreeWalkResult::Ok
        })?;
        Ok(files)
    }

    /// Creates annotated tags, and moves `branch` (`(reference, new commit, expected current)`)
    /// if given, all or none: the objects first, then every reference in one locked transaction.
    pub fn create_tags(
        &self,
        tags: &[(String, Oid, String)],
        tagger: &Signature<'_>,
        branch: Option<(&str, Oid, Oid)>,
    ) -> Result<(), Error> {
        let mut objects = Vec::new();
        for (name, target, message) in tags {
            let object = self.repo.find_object(*target, Some(ObjectType::Commit))?;
            let tag = self
                .repo
                .tag_annotation_create(name, &object, tagger, message)?;
            objects.push((format!("refs/tags/{name}"), tag));
        }
        let mut transaction = self.repo.transaction()?;
        if let Some((reference, _, _)) = branch {
            transaction.lock_ref(reference)?;
        }
        for (reference, _) in &objects {
            transaction.lock_ref(reference)?;
        }
        if let Some((reference, new, expected)) = branch {
            let current = self.repo.refname_to_id(reference)?;
            if current != expected {
                return Err(Error::Refused(format!(
                    "{reference} moved while releasing; nothing was changed, plan again"
                )));
            }
            transaction.set_target(reference, new, Some(tagger), "cfa-release apply")?;
        }
        for (reference, tag) in &objects {
            if self.repo.find_reference(reference).is_ok() {
                return Err(Error::Refused(format!(
                    "{reference} appeared while tagging; nothing was tagged, run again"
                )));
            }
            transaction.set_target(reference, *tag, Some(tagger), "cfa-release apply")?;
        }
        transaction.commit()?;
        Ok(())
    }
}
