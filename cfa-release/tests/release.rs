//! cfa-release on throwaway repositories built with git2: every history a release tool meets,
//! driven through the real binary with the user's git configuration kept out (HOME points at an
//! empty directory and the system configuration is disabled).

use std::process::Command;

use git2::{Index, IndexEntry, IndexTime, Oid, Repository, Signature, Time};
use serde_json::Value;
use tempfile::TempDir;

/// Two crates (`core`, a library, and `server`, which depends on it by path) and a CLI.
const CONFIG: &str = r#"
[[components]]
name = "core"
paths = ["core/**"]

[[components]]
name = "server"
paths = ["server/**"]
exclude = ["**/*.md"]
scopes = ["api"]
image = "registry.example/server"

[[components]]
name = "cli"
paths = ["cli/**"]
"#;

struct Repo {
    dir: TempDir,
    repo: Repository,
    clock: i64,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

impl Repo {
    /// A repository on `main` with the config and the three crates committed.
    fn new() -> Repo {
        let dir = TempDir::new().expect("tempdir");
        let mut options = git2::RepositoryInitOptions::new();
        options.initial_head("main");
        let repo = Repository::init_opts(dir.path().join("repo"), &options).expect("init");
        let mut repo = Repo {
            dir,
            repo,
            clock: 1_767_225_600, // 2026-01-01
        };
        repo.commit(
            "chore: set up",
            &[
                ("release.toml", CONFIG),
                (
                    "core/Cargo.toml",
                    "[package]\nname = \"core\"\nversion = \"0.1.0\"\n",
                ),
                ("core/src/lib.rs", "// core\n"),
                (
                    "server/Cargo.toml",
                    "[package]\nname = \"server\"\nversion = \"0.1.0\"\n\n[dependencies]\ncore = { path = \"../core\" }\n",
                ),
                ("server/src/main.rs", "fn main() {}\n"),
                (
                    "cli/Cargo.toml",
                    "[package]\nname = \"cli\"\nversion = \"0.1.0\"\n",
                ),
                ("cli/src/main.rs", "fn main() {}\n"),
            ],
        );
        repo.checkout();
        repo
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("repo")
    }

    fn signature(&mut self) -> Signature<'static> {
        self.clock += 60;
        Signature::new("Test", "test@example.org", &Time::new(self.clock, 0)).expect("signature")
    }

    /// A commit of `files` on top of `parents` (HEAD's commit when empty), moving `reference`.
    fn commit_with(
        &mut self,
        reference: &str,
        parents: &[Oid],
        message: &str,
        files: &[(&str, &str)],
    ) -> Oid {
        let parents: Vec<Oid> = if parents.is_empty() {
            self.repo
                .head()
                .ok()
                .and_then(|h| h.target())
                .into_iter()
                .collect()
        } else {
            parents.to_vec()
        };
        let mut index = Index::new().expect("index");
        if let Some(first) = parents.first() {
            let tree = self
                .repo
                .find_commit(*first)
                .expect("parent")
                .tree()
                .expect("tree");
            index.read_tree(&tree).expect("read tree");
        }
        for (path, content) in files {
            let entry = IndexEntry {
                ctime: IndexTime::new(0, 0),
                mtime: IndexTime::new(0, 0),
                dev: 0,
                ino: 0,
                mode: 0o100644,
                uid: 0,
                gid: 0,
                file_size: content.len() as u32,
                id: self.repo.blob(content.as_bytes()).expect("blob"),
                flags: path.len() as u16,
                flags_extended: 0,
                path: path.as_bytes().to_vec(),
            };
            index.add(&entry).expect("add");
        }
        let who = self.signature();
        let tree = index.write_tree_to(&self.repo).expect("write tree");
        let tree = self.repo.find_tree(tree).expect("tree");
        let parents: Vec<git2::Commit> = parents
            .iter()
            .map(|p| self.repo.find_commit(*p).expect("parent"))
            .collect();
        let parents: Vec<&git2::Commit> = parents.iter().collect();
        self.repo
            .commit(Some(reference), &who, &who, message, &tree, &parents)
            .expect("commit")
    }

    fn commit(&mut self, message: &str, files: &[(&str, &str)]) -> Oid {
        self.commit_with("HEAD", &[], message, files)
    }

    /// Makes the work tree match HEAD (commits are built without it).
    fn checkout(&self) {
        self.repo
            .checkout_head(Some(git2::build::CheckoutBuilder::new().force()))
            .expect("checkout");
    }

    fn tag(&mut self, name: &str, at: Oid) {
        let who = self.signature();
        let object = self.repo.find_object(at, None).expect("object");
        self.repo
            .tag(name, &object, &who, name, false)
            .expect("tag");
    }

    fn head(&self) -> Oid {
        self.repo.head().expect("head").target().expect("target")
    }

    fn release(&self, args: &[&str]) -> Run {
        let home = self.dir.path().join("home");
        std::fs::create_dir_all(&home).expect("home");
        let out = Command::new(env!("CARGO_BIN_EXE_cfa-release"))
            .args(args)
            .arg("--repo")
            .arg(self.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", &home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .expect("run cfa-release");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs cfa-release with its standard output a pipe whose reader is already gone, as
    /// `cfa-release explain | head` after `head` has read its lines.
    fn release_into_a_closed_pipe(&self, args: &[&str]) -> Run {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_cfa-release"))
            .args(args)
            .arg("--repo")
            .arg(self.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdout(writer)
            .output()
            .expect("run cfa-release");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::new(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn plan(&self, extra: &[&str]) -> Value {
        let mut args = vec!["plan", "--output", "json"];
        args.extend(extra);
        let run = self.release(&args);
        assert_eq!(run.code, 0, "{}", run.stderr);
        run.json()
    }

    /// Tags every component at `version` on HEAD, as an earlier release would have.
    fn released(&mut self, version: &str) {
        let head = self.head();
        for c in ["core", "server", "cli"] {
            self.tag(&format!("{c}-v{version}"), head);
        }
    }
}

fn component<'a>(plan: &'a Value, name: &str) -> &'a Value {
    plan["components"]
        .as_array()
        .expect("components")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {plan}"))
}

fn new_version(plan: &Value, name: &str) -> Value {
    component(plan, name)["new_version"].clone()
}

#[test]
fn a_first_release_takes_the_initial_versions_and_a_second_apply_finds_nothing() {
    let repo = Repo::new();
    let plan = repo.plan(&[]);
    for c in ["core", "server", "cli"] {
        assert_eq!(new_version(&plan, c), "0.1.0", "{c}");
        assert_eq!(component(&plan, c)["release"], true);
    }
    let apply = repo.release(&["apply", "--output", "json"]);
    assert_eq!(apply.code, 0, "{}", apply.stderr);
    let applied = apply.json();
    let tags: Vec<&str> = applied["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .map(|t| t["name"].as_str().expect("name"))
        .collect();
    assert_eq!(tags, ["core-v0.1.0", "server-v0.1.0", "cli-v0.1.0"]);
    let tag = repo
        .repo
        .find_reference("refs/tags/server-v0.1.0")
        .expect("tag")
        .peel_to_tag()
        .expect("an annotated tag");
    assert!(
        tag.message()
            .ok()
            .flatten()
            .unwrap_or_default()
            .contains("server 0.1.0")
    );
    let again = repo.release(&["apply"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again.stdout.contains("nothing to release"),
        "{}",
        again.stdout
    );
}

#[test]
fn feat_fix_and_breaking_changes_move_the_right_digit() {
    let mut repo = Repo::new();
    repo.commit("chore: 1.0", &[]);
    repo.released("1.0.0");
    repo.commit(
        "fix: handle empty input",
        &[("cli/src/main.rs", "fn main() { }\n")],
    );
    repo.commit(
        "feat(api): refunds",
        &[("server/src/main.rs", "fn main() { 1; }\n")],
    );
    repo.commit(
        "refactor: new storage layout\n\nBREAKING CHANGE: the data directory must be migrated",
        &[("core/src/lib.rs", "// core 2\n")],
    );
    let plan = repo.plan(&[]);
    assert_eq!(new_version(&plan, "cli"), "1.0.1");
    assert_eq!(component(&plan, "cli")["bump"], "patch");
    assert_eq!(new_version(&plan, "core"), "2.0.0");
    // server: its own feat, and core (a dependency) changed: minor wins.
    assert_eq!(new_version(&plan, "server"), "1.1.0");
    let server = component(&plan, "server");
    let reasons: Vec<&str> = server["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .map(|r| r.as_str().expect("reason"))
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("feat(api): refunds")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("depends on core, which is released as 2.0.0")),
        "{reasons:?}"
    );
    let changelog = component(&plan, "core")["changelog"]
        .as_str()
        .expect("text");
    assert!(changelog.contains("### Breaking changes"), "{changelog}");
    assert!(
        changelog.contains("the data directory must be migrated"),
        "{changelog}"
    );

    let mut bang = Repo::new();
    bang.commit("chore: 1.0", &[]);
    bang.released("1.0.0");
    bang.commit(
        "feat(cli)!: new flags",
        &[("cli/src/main.rs", "fn main() {2;}\n")],
    );
    assert_eq!(new_version(&bang.plan(&[]), "cli"), "2.0.0");
    assert_eq!(component(&bang.plan(&[]), "core")["release"], false);
}

#[test]
fn on_zero_x_a_breaking_change_moves_the_minor() {
    let mut repo = Repo::new();
    repo.released("0.3.0");
    repo.commit(
        "feat!: drop the old API",
        &[("server/src/main.rs", "fn main() {3;}\n")],
    );
    repo.commit("fix: typo", &[("cli/src/main.rs", "fn main() {3;}\n")]);
    let plan = repo.plan(&[]);
    assert_eq!(new_version(&plan, "server"), "0.4.0");
    assert_eq!(new_version(&plan, "cli"), "0.3.1");
}

#[test]
fn every_conventional_line_of_a_squash_merge_counts_for_the_component_it_names() {
    let mut repo = Repo::new();
    repo.released("1.0.0");
    repo.commit(
        "Watch mode and a totals fix (#42)\n\n* feat(cli): watch mode\n\n* fix(server): totals rounding\n",
        &[
            ("cli/src/main.rs", "fn main() {4;}\n"),
            ("server/src/main.rs", "fn main() {4;}\n"),
        ],
    );
    let plan = repo.plan(&[]);
    assert_eq!(new_version(&plan, "cli"), "1.1.0", "the feat is the CLI's");
    assert_eq!(
        new_version(&plan, "server"),
        "1.0.1",
        "the fix is the server's"
    );
    let cli = component(&plan, "cli")["changelog"].as_str().expect("text");
    assert!(cli.contains("**cli:** watch mode"), "{cli}");
    assert!(!cli.contains("totals rounding"), "{cli}");
}

#[test]
fn a_merge_is_judged_by_its_diff_and_the_messages_of_the_commits_it_merged() {
    let mut repo = Repo::new();
    repo.released("1.0.0");
    let base = repo.head();
    let f1 = repo.commit_with(
        "refs/heads/feature",
        &[base],
        "feat(cli): export as CSV",
        &[("cli/src/main.rs", "fn main() {5;}\n")],
    );
    // A change made and undone on the branch never reaches main's diff.
    let f2 = repo.commit_with(
        "refs/heads/feature",
        &[f1],
        "feat: temporary core hook",
        &[("core/src/lib.rs", "// hook\n")],
    );
    let f3 = repo.commit_with(
        "refs/heads/feature",
        &[f2],
        "fix: remove the hook again",
        &[("core/src/lib.rs", "// core\n")],
    );
    let main = repo.commit("docs: readme", &[("README.md", "hi\n")]);
    repo.commit_with(
        "HEAD",
        &[main, f3],
        "Merge branch 'feature'",
        &[("cli/src/main.rs", "fn main() {5;}\n")],
    );
    repo.checkout();
    let plan = repo.plan(&[]);
    assert_eq!(new_version(&plan, "cli"), "1.1.0");
    assert_eq!(component(&plan, "core")["release"], false, "{plan}");
    assert_eq!(component(&plan, "server")["release"], false);
}

#[test]
fn pre_releases_count_up_and_a_plain_release_promotes_them() {
    let mut repo = Repo::new();
    repo.released("1.2.0");
    repo.commit(
        "feat: new report",
        &[("cli/src/main.rs", "fn main() {6;}\n")],
    );
    repo.checkout();
    let plan = repo.plan(&["--pre", "rc"]);
    assert_eq!(new_version(&plan, "cli"), "1.3.0-rc.1");
    assert_eq!(
        component(&plan, "cli")["image_tags"],
        serde_json::json!(["v1.3.0-rc.1"])
    );
    let apply = repo.release(&["apply", "--pre", "rc"]);
    assert_eq!(apply.code, 0, "{}", apply.stderr);
    repo.commit(
        "fix: report header",
        &[("cli/src/main.rs", "fn main() {7;}\n")],
    );
    repo.checkout();
    assert_eq!(
        new_version(&repo.plan(&["--pre", "rc"]), "cli"),
        "1.3.0-rc.2"
    );
    let stable = repo.plan(&[]);
    assert_eq!(new_version(&stable, "cli"), "1.3.0");
    assert_eq!(component(&stable, "core")["release"], false);
    let bad = repo.release(&["plan", "--pre", "r c"]);
    assert_eq!(bad.code, 2, "a usage error");
    assert!(
        bad.stderr.contains("pre-release identifier"),
        "{}",
        bad.stderr
    );
}

#[test]
fn a_shared_crate_cascades_to_its_dependents_through_cargo_path_dependencies() {
    let mut repo = Repo::new();
    repo.released("1.0.0");
    repo.commit("fix(core): overflow", &[("core/src/lib.rs", "// fixed\n")]);
    let plan = repo.plan(&[]);
    assert_eq!(new_version(&plan, "core"), "1.0.1");
    assert_eq!(
        new_version(&plan, "server"),
        "1.0.1",
        "server depends on core"
    );
    assert_eq!(component(&plan, "cli")["release"], false);
    let changelog = component(&plan, "server")["changelog"]
        .as_str()
        .expect("text");
    assert!(
        changelog.contains("### Dependencies\n\n- core 1.0.1"),
        "{changelog}"
    );
}

#[test]
fn a_hotfix_on_an_old_major_never_takes_latest() {
    let mut repo = Repo::new();
    repo.commit("feat: 1.4", &[("server/src/main.rs", "fn main() {14;}\n")]);
    let old = repo.head();
    repo.released("1.4.0");
    repo.commit("feat!: 2.0", &[("server/src/main.rs", "fn main() {20;}\n")]);
    repo.released("2.0.0");
    // A maintenance branch from 1.4.0, checked out.
    repo.commit_with(
        "refs/heads/v1",
        &[old],
        "fix: security patch",
        &[("server/src/main.rs", "fn main() {141;}\n")],
    );
    repo.repo.set_head("refs/heads/v1").expect("switch");
    repo.checkout();
    let plan = repo.plan(&[]);
    let server = component(&plan, "server");
    assert_eq!(server["new_version"], "1.4.1");
    assert_eq!(
        server["image_tags"],
        serde_json::json!(["v1.4.1", "v1.4", "v1"])
    );
    assert_eq!(
        server["images"][0], "registry.example/server:v1.4.1",
        "{server}"
    );
}

#[test]
fn reverts_cancel_unreleased_changes_and_patch_released_ones() {
    let mut repo = Repo::new();
    let released_feat = repo.commit("feat: a", &[("cli/src/main.rs", "fn main() {8;}\n")]);
    repo.released("1.0.0");
    let feat = repo.commit("feat: experimental", &[("core/src/lib.rs", "// x\n")]);
    repo.commit(
        &format!("Revert \"feat: experimental\"\n\nThis reverts commit {feat}.\n"),
        &[("core/src/lib.rs", "// core\n")],
    );
    repo.commit(
        &format!("revert: feat: a\n\nThis reverts commit {released_feat}.\n"),
        &[("cli/src/main.rs", "fn main() {}\n")],
    );
    let plan = repo.plan(&[]);
    assert_eq!(component(&plan, "core")["release"], false, "{plan}");
    assert_eq!(new_version(&plan, "cli"), "1.0.1");
}

#[test]
fn apply_writes_changelogs_and_manifests_in_one_release_commit_that_later_plans_ignore() {
    let mut repo = Repo::new();
    repo.released("1.0.0");
    repo.commit(
        "feat(cli): colours",
        &[("cli/src/main.rs", "fn main() {9;}\n")],
    );
    repo.checkout();
    let before = repo.head();
    let apply = repo.release(&[
        "apply",
        "--changelog",
        "--bump-manifests",
        "--output",
        "json",
    ]);
    assert_eq!(apply.code, 0, "{}", apply.stderr);
    let applied = apply.json();
    let commit = applied["release_commit"]
        .as_str()
        .expect("a release commit");
    assert_eq!(repo.head().to_string(), commit);
    assert_eq!(
        repo.repo
            .find_commit(repo.head())
            .expect("commit")
            .parent_id(0)
            .expect("parent"),
        before
    );
    let changelog =
        std::fs::read_to_string(repo.path().join("cli/CHANGELOG.md")).expect("changelog");
    assert!(
        changelog.starts_with("# Changelog\n\n## cli 1.1.0 ("),
        "{changelog}"
    );
    assert!(changelog.contains("**cli:** colours"), "{changelog}");
    let manifest = std::fs::read_to_string(repo.path().join("cli/Cargo.toml")).expect("manifest");
    assert!(manifest.contains("version = \"1.1.0\""), "{manifest}");
    let target = repo
        .repo
        .find_reference("refs/tags/cli-v1.1.0")
        .expect("tag")
        .peel_to_commit()
        .expect("commit")
        .id();
    assert_eq!(
        target.to_string(),
        commit,
        "the tag is on the release commit"
    );
    let after = repo.plan(&[]);
    assert_eq!(component(&after, "cli")["release"], false, "{after}");

    // Interrupted after the commit, before the tags: the re-run tags the same commit.
    repo.repo.tag_delete("cli-v1.1.0").expect("delete tag");
    let again = repo.release(&[
        "apply",
        "--changelog",
        "--bump-manifests",
        "--output",
        "json",
    ]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let again = again.json();
    assert_eq!(
        again["release_commit"],
        Value::Null,
        "nothing new to commit"
    );
    assert_eq!(again["tags"][0]["name"], "cli-v1.1.0");
    assert_eq!(repo.head().to_string(), commit);
    let changelog =
        std::fs::read_to_string(repo.path().join("cli/CHANGELOG.md")).expect("changelog");
    assert_eq!(changelog.matches("## cli 1.1.0").count(), 1);
}

#[test]
fn apply_refuses_a_dirty_tree_a_detached_head_and_a_plan_for_another_head() {
    let mut repo = Repo::new();
    std::fs::write(repo.path().join("cli/src/main.rs"), "dirty").expect("write");
    let dirty = repo.release(&["apply"]);
    assert_eq!(dirty.code, 1);
    assert!(
        dirty
            .stderr
            .contains("uncommitted changes (cli/src/main.rs)"),
        "{}",
        dirty.stderr
    );
    repo.checkout();

    let plan = repo.release(&["plan", "--output", "json"]);
    let file = repo.dir.path().join("plan.json");
    std::fs::write(&file, &plan.stdout).expect("save plan");
    repo.commit("fix: late", &[("cli/src/main.rs", "fn main() {10;}\n")]);
    repo.checkout();
    let moved = repo.release(&["apply", "--plan", file.to_str().expect("path")]);
    assert_eq!(moved.code, 1);
    assert!(
        moved.stderr.contains("HEAD moved since the plan"),
        "{}",
        moved.stderr
    );
    assert!(
        repo.repo.tag_names(None).expect("tags").is_empty(),
        "nothing tagged"
    );

    let head = repo.head();
    repo.repo.set_head_detached(head).expect("detach");
    let detached = repo.release(&["apply"]);
    assert_eq!(detached.code, 1);
    assert!(
        detached.stderr.contains("HEAD is detached"),
        "{}",
        detached.stderr
    );
}

#[test]
fn a_malformed_config_or_a_tag_that_is_not_semver_is_a_clear_error() {
    let mut repo = Repo::new();
    repo.commit(
        "chore: typo",
        &[(
            "release.toml",
            "[[components]]\nname = \"x\"\npath = [\"x/**\"]\n",
        )],
    );
    repo.checkout();
    let bad = repo.release(&["plan"]);
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("release.toml"), "{}", bad.stderr);
    assert!(bad.stderr.contains("path"), "names the key: {}", bad.stderr);

    let mut repo = Repo::new();
    repo.commit(
        "chore: cycle",
        &[(
            "release.toml",
            "[[components]]\nname = \"a\"\npaths = [\"a/**\"]\ndepends_on = [\"b\"]\n[[components]]\nname = \"b\"\npaths = [\"b/**\"]\ndepends_on = [\"a\"]\n",
        )],
    );
    repo.checkout();
    let cycle = repo.release(&["plan"]);
    assert!(cycle.stderr.contains("cycle"), "{}", cycle.stderr);

    let mut repo = Repo::new();
    let head = repo.head();
    repo.tag("cli-vnext", head);
    let tag = repo.release(&["plan"]);
    assert_eq!(tag.code, 1);
    assert!(tag.stderr.contains("cli-vnext is not"), "{}", tag.stderr);
}

#[test]
fn check_lints_the_messages_of_a_range() {
    let mut repo = Repo::new();
    let base = repo.head();
    repo.commit("feat(cli): ok", &[("cli/a", "1")]);
    repo.commit("Fixed stuff", &[("cli/b", "1")]);
    repo.commit("feature: nope", &[("cli/c", "1")]);
    let run = repo.release(&[
        "check",
        "--range",
        &format!("{base}..HEAD"),
        "--output",
        "json",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = run.json();
    assert_eq!(report["checked"], 3);
    let problems: Vec<&str> = report["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .map(|v| v["summary"].as_str().expect("summary"))
        .collect();
    assert_eq!(problems, ["feature: nope", "Fixed stuff"]);
    let good = repo.release(&["check", "--range", &format!("{base}..HEAD~2")]);
    assert_eq!(good.code, 0, "{}{}", good.stdout, good.stderr);
}

#[test]
fn changed_lists_what_a_pull_request_touched_and_its_dependents() {
    let mut repo = Repo::new();
    repo.released("1.0.0");
    let main = repo.head();
    repo.repo
        .branch("main-copy", &repo.repo.find_commit(main).expect("c"), false)
        .expect("branch");
    repo.commit("fix(core): edge case", &[("core/src/lib.rs", "// edge\n")]);
    let run = repo.release(&["changed", "--since", "main-copy", "--output", "json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let json = run.json();
    assert_eq!(json["packages"], serde_json::json!(["core", "server"]));
    // On main, without --since: what the release plan releases.
    let plan = repo.release(&["changed", "--output", "json"]).json();
    assert_eq!(plan["packages"], serde_json::json!(["core", "server"]));
}

#[test]
fn changed_lists_the_components_that_inherit_a_workspace_dependency_a_pull_request_bumped() {
    let mut repo = Repo::new();
    let workspace = |serde: &str| {
        format!(
            "[workspace]\nmembers = [\"core\", \"server\", \"cli\"]\n\n[workspace.dependencies]\nserde = \"{serde}\"\n"
        )
    };
    repo.commit(
        "chore: a workspace",
        &[
            ("Cargo.toml", workspace("1.0").as_str()),
            (
                "cli/Cargo.toml",
                "[package]\nname = \"cli\"\nversion = \"0.1.0\"\n\n[dependencies]\nserde.workspace = true\n",
            ),
        ],
    );
    repo.released("1.0.0");
    let main = repo.head();
    repo.repo
        .branch("main-copy", &repo.repo.find_commit(main).expect("c"), false)
        .expect("branch");
    repo.commit(
        "build(deps): serde 1.0.228",
        &[("Cargo.toml", workspace("1.0.228").as_str())],
    );
    repo.checkout();
    let run = repo.release(&["changed", "--since", "main-copy", "--output", "json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let json = run.json();
    assert_eq!(json["packages"], serde_json::json!(["cli"]), "{json}");
}

#[test]
fn the_plan_json_is_stable() {
    let mut repo = Repo::new();
    repo.released("1.0.0");
    repo.commit(
        "feat(api): webhooks",
        &[("server/src/main.rs", "fn main() {11;}\n")],
    );
    repo.commit(
        "fix(core): rounding",
        &[("core/src/lib.rs", "// rounding\n")],
    );
    repo.commit("docs: server notes", &[("server/NOTES.md", "excluded\n")]);
    repo.commit("Tidy the CLI", &[("cli/src/main.rs", "fn main() {12;}\n")]);
    let mut plan = repo.plan(&[]);
    plan["head"] = Value::String("<head>".into());
    insta::assert_json_snapshot!("plan", plan);
}

#[test]
fn explain_walks_through_one_component() {
    let mut repo = Repo::new();
    repo.released("1.0.0");
    repo.commit(
        "feat(cli): colours",
        &[("cli/src/main.rs", "fn main() {13;}\n")],
    );
    let run = repo.release(&["explain", "cli"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("last release: cli-v1.0.0"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("feat(cli): colours — feat → minor"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("→ 1.1.0"), "{}", run.stdout);
    let missing = repo.release(&["explain", "nope"]);
    assert_eq!(missing.code, 2, "a usage error");
    assert!(
        missing.stderr.contains("core, server, cli"),
        "{}",
        missing.stderr
    );
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let mut repo = Repo::new();
    repo.released("1.0.0");
    repo.commit(
        "feat(cli): colours",
        &[("cli/src/main.rs", "fn main() {13;}\n")],
    );
    for args in [&["explain", "cli"][..], &["plan"]] {
        let run = repo.release_into_a_closed_pipe(args);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.is_empty(),
            "{args:?} says nothing: {}",
            run.stderr
        );
    }
}

#[test]
fn a_revert_of_a_revert_brings_the_change_back() {
    let mut repo = Repo::new();
    repo.released("1.0.0");
    let feat = repo.commit(
        "feat(cli): thing",
        &[("cli/src/main.rs", "fn main() {20;}\n")],
    );
    let revert = repo.commit(
        &format!("Revert \"feat(cli): thing\"\n\nThis reverts commit {feat}.\n"),
        &[("cli/src/main.rs", "fn main() {}\n")],
    );
    let plan = repo.plan(&[]);
    assert_eq!(component(&plan, "cli")["release"], false, "{plan}");
    repo.commit(
        &format!("Reapply \"feat(cli): thing\"\n\nThis reverts commit {revert}.\n"),
        &[("cli/src/main.rs", "fn main() {20;}\n")],
    );
    assert_eq!(new_version(&repo.plan(&[]), "cli"), "1.1.0");
}

#[test]
fn promoting_a_candidate_lists_everything_since_the_last_release() {
    let mut repo = Repo::new();
    repo.released("1.0.0");
    repo.commit(
        "feat(cli): big feature",
        &[("cli/src/main.rs", "fn main() {21;}\n")],
    );
    repo.checkout();
    assert_eq!(repo.release(&["apply", "--pre", "rc"]).code, 0);
    let plan = repo.plan(&[]);
    let cli = component(&plan, "cli");
    assert_eq!(cli["new_version"], "1.1.0");
    assert!(
        cli["changelog"]
            .as_str()
            .expect("text")
            .contains("**cli:** big feature"),
        "{cli}"
    );
}

#[test]
fn a_refused_apply_changes_nothing() {
    // A manifest that cannot be bumped: refused before any changelog is written.
    let mut repo = Repo::new();
    repo.released("1.0.0");
    repo.commit(
        "feat(core): shared",
        &[(
            "core/Cargo.toml",
            "[package]\nname = \"core\"\nversion.workspace = true\n",
        )],
    );
    repo.checkout();
    let head = repo.head();
    let run = repo.release(&["apply", "--changelog", "--bump-manifests"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("version.workspace"), "{}", run.stderr);
    assert_eq!(repo.head(), head, "no release commit");
    let statuses = repo.repo.statuses(None).expect("status");
    let changed: Vec<String> = statuses
        .iter()
        .filter_map(|s| s.path().ok().map(str::to_string))
        .collect();
    assert!(
        changed.is_empty(),
        "the work tree is as it was: {changed:?}"
    );
    assert!(
        repo.repo
            .tag_names(Some("core-v1.1*"))
            .expect("tags")
            .is_empty()
    );

    // A version already released on another branch: refused before the release commit.
    let mut repo = Repo::new();
    repo.released("1.0.0");
    let base = repo.head();
    let hotfix = repo.commit_with(
        "refs/heads/hotfix",
        &[base],
        "fix(cli): on the hotfix branch",
        &[("cli/src/main.rs", "fn main() {22;}\n")],
    );
    repo.tag("cli-v1.0.1", hotfix);
    repo.commit(
        "fix(cli): on main",
        &[("cli/src/main.rs", "fn main() {23;}\n")],
    );
    repo.checkout();
    let head = repo.head();
    let plan = repo.plan(&[]);
    assert!(
        plan["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("cli-v1.0.1 already exists")),
        "{plan}"
    );
    let run = repo.release(&["apply", "--changelog"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("already exists"), "{}", run.stderr);
    assert_eq!(repo.head(), head);
    assert!(!repo.path().join("cli/CHANGELOG.md").exists());
}

#[test]
fn re_running_apply_from_the_commit_it_started_on_finds_the_release_done() {
    // CI re-runs a job on the commit it was triggered by, below the release commit it made.
    let mut repo = Repo::new();
    repo.released("1.0.0");
    let start = repo.commit(
        "feat(cli): colours",
        &[("cli/src/main.rs", "fn main() {24;}\n")],
    );
    repo.checkout();
    let first = repo
        .release(&["apply", "--changelog", "--output", "json"])
        .json();
    let release_commit = first["release_commit"]
        .as_str()
        .expect("commit")
        .to_string();
    repo.repo
        .reference(
            "refs/heads/main",
            start,
            true,
            "CI checks out the pushed commit",
        )
        .expect("reset");
    repo.checkout();
    let again = repo.release(&["apply", "--changelog", "--output", "json"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let again = again.json();
    assert_eq!(again["release_commit"], release_commit.as_str());
    assert_eq!(again["tags"][0]["created"], false);
}

#[test]
fn components_whose_names_share_a_prefix_keep_their_own_tags_and_empty_globs_warn() {
    let mut repo = Repo::new();
    repo.commit(
        "chore: config",
        &[(
            "release.toml",
            "[[components]]\nname = \"cli\"\npaths = [\"cli/**\"]\n[[components]]\nname = \"cli-v2\"\npaths = [\"cli2/**\"]\n",
        )],
    );
    let head = repo.head();
    repo.tag("cli-v2-v1.0.0", head);
    repo.checkout();
    let plan = repo.plan(&[]);
    assert_eq!(
        component(&plan, "cli")["old_version"],
        Value::Null,
        "{plan}"
    );
    assert_eq!(component(&plan, "cli-v2")["old_version"], "1.0.0");
    assert!(
        plan["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("cli-v2: no file at HEAD matches")),
        "{plan}"
    );
}

/// The names of the tags pointing at `at`.
fn tags_on(repo: &Repo, at: Oid) -> Vec<String> {
    let mut names: Vec<String> = repo
        .repo
        .tag_names(None)
        .expect("tags")
        .iter()
        .flatten()
        .flatten()
        .filter(|n| {
            repo.repo
                .revparse_single(n)
                .and_then(|o| o.peel_to_commit())
                .map(|c| c.id() == at)
                .unwrap_or(false)
        })
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

fn warnings(plan: &Value) -> Vec<String> {
    plan["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .map(|w| w.as_str().expect("text").to_string())
        .collect()
}

#[test]
fn tag_formats_come_from_release_toml() {
    let mut repo = Repo::new();
    repo.commit(
        "chore: tag formats",
        &[(
            "release.toml",
            &format!("[defaults]\ntag = \"{{name}}@{{version}}\"\n{CONFIG}")
                .replace("name = \"cli\"\n", "name = \"cli\"\ntag = \"v{version}\"\n"),
        )],
    );
    repo.checkout();
    let apply = repo.release(&["apply", "--output", "json"]);
    assert_eq!(apply.code, 0, "{}", apply.stderr);
    assert_eq!(
        tags_on(&repo, repo.head()),
        ["core@0.1.0", "server@0.1.0", "v0.1.0"]
    );
    repo.commit(
        "fix(cli): typo",
        &[("cli/src/main.rs", "fn main() {30;}\n")],
    );
    let plan = repo.plan(&[]);
    let cli = component(&plan, "cli");
    assert_eq!(cli["old_tag"], "v0.1.0", "{plan}");
    assert_eq!(cli["new_tag"], "v0.1.1");
    assert_eq!(component(&plan, "core")["release"], false, "{plan}");
    assert!(warnings(&plan).is_empty(), "{plan}");

    let bad = repo.commit(
        "chore: a bad format",
        &[("release.toml", "[defaults]\ntag = \"{name}\"\n")],
    );
    let _ = bad;
    repo.checkout();
    let run = repo.release(&["plan"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("defaults.tag") && run.stderr.contains("{version}"),
        "{}",
        run.stderr
    );
}

#[test]
fn tags_in_another_format_count_as_releases_with_a_warning() {
    // Released as `core-v1.0.0` …, then release.toml moves to `{name}@{version}`.
    let mut repo = Repo::new();
    repo.released("1.0.0");
    repo.commit(
        "chore: new tag format",
        &[(
            "release.toml",
            &format!("[defaults]\ntag = \"{{name}}@{{version}}\"\n{CONFIG}"),
        )],
    );
    repo.commit(
        "fix(cli): typo",
        &[("cli/src/main.rs", "fn main() {31;}\n")],
    );
    repo.checkout();
    let plan = repo.plan(&[]);
    let cli = component(&plan, "cli");
    assert_eq!(cli["old_version"], "1.0.0", "{plan}");
    assert_eq!(cli["new_version"], "1.0.1");
    assert_eq!(cli["new_tag"], "cli@1.0.1");
    let w = warnings(&plan);
    assert!(
        w.iter()
            .any(|w| w.contains("cli-v1.0.0") && w.contains("{name}-v{version}")),
        "{w:?}"
    );

    // A single crate tagged `7.0.0` (cocogitto's history): 7.0.1, not a first release at 0.1.0.
    let mut single = Repo::new();
    single.commit(
        "chore: one crate",
        &[
            (
                "release.toml",
                "[[components]]\nname = \"cli\"\npaths = [\"cli/**\"]\n",
            ),
            (
                "cli/Cargo.toml",
                "[package]\nname = \"cli\"\nversion = \"7.0.0\"\n",
            ),
        ],
    );
    let head = single.head();
    single.tag("7.0.0", head);
    single.commit("fix: a bug", &[("cli/src/main.rs", "fn main() {32;}\n")]);
    single.checkout();
    let plan = single.plan(&[]);
    assert_eq!(new_version(&plan, "cli"), "7.0.1", "{plan}");
    assert_eq!(component(&plan, "cli")["new_tag"], "cli-v7.0.1");

    // The manifest is ahead of every tag cfa-release can read: the plan says so.
    let mut ahead = Repo::new();
    ahead.released("6.0.0");
    ahead.commit(
        "fix(cli): a bug",
        &[
            ("cli/src/main.rs", "fn main() {33;}\n"),
            (
                "cli/Cargo.toml",
                "[package]\nname = \"cli\"\nversion = \"7.0.0\"\n",
            ),
        ],
    );
    ahead.checkout();
    let plan = ahead.plan(&[]);
    assert_eq!(new_version(&plan, "cli"), "6.0.1");
    assert!(
        warnings(&plan)
            .iter()
            .any(|w| w.contains("cli: the plan says 6.0.1 but its manifest already says 7.0.0")),
        "{plan}"
    );
    let text = ahead.release(&["plan"]);
    assert!(
        text.stderr.contains("warning: cli: the plan says 6.0.1"),
        "{}",
        text.stderr
    );

    // With no tag at all, the first release is the manifest's version.
    let mut fresh = Repo::new();
    fresh.commit(
        "chore: 7",
        &[(
            "cli/Cargo.toml",
            "[package]\nname = \"cli\"\nversion = \"7.0.0\"\n",
        )],
    );
    fresh.checkout();
    assert_eq!(new_version(&fresh.plan(&[]), "cli"), "7.0.0");
}

#[test]
fn on_zero_x_a_feature_is_a_patch_unless_features_always_increment_minor() {
    let mut repo = Repo::new();
    repo.released("0.3.159");
    repo.commit(
        "feat(cli): colours",
        &[("cli/src/main.rs", "fn main() {34;}\n")],
    );
    repo.checkout();
    assert_eq!(
        new_version(&repo.plan(&[]), "cli"),
        "0.3.160",
        "release-plz's default"
    );
    repo.commit(
        "chore: features move the minor",
        &[(
            "release.toml",
            &format!("[defaults]\nfeatures_always_increment_minor = true\n{CONFIG}"),
        )],
    );
    repo.checkout();
    assert_eq!(new_version(&repo.plan(&[]), "cli"), "0.4.0");
}

#[test]
fn the_why_names_the_commit_that_decided_the_bump() {
    let mut repo = Repo::new();
    repo.released("1.0.0");
    let feat = repo.commit(
        "feat(cli): colours",
        &[("cli/src/main.rs", "fn main() {35;}\n")],
    );
    repo.commit(
        "fix(cli): typo",
        &[("cli/src/main.rs", "fn main() {36;}\n")],
    );
    repo.commit(
        "docs(cli): usage",
        &[("cli/src/main.rs", "fn main() {37;}\n")],
    );
    let plan = repo.plan(&[]);
    let cli = component(&plan, "cli");
    assert_eq!(cli["decided_by"], feat.to_string().as_str(), "{plan}");
    assert!(
        cli["reasons"][0]
            .as_str()
            .is_some_and(|r| r.contains("feat(cli): colours")),
        "{plan}"
    );
    let text = repo.release(&["plan"]);
    let line = text
        .stdout
        .lines()
        .find(|l| l.starts_with("cli "))
        .expect("cli's line");
    assert!(line.contains("feat(cli): colours"), "{}", text.stdout);
    let explain = repo.release(&["explain", "cli"]);
    assert!(
        explain
            .stdout
            .contains(&format!("decided by: {}", &feat.to_string()[..7])),
        "{}",
        explain.stdout
    );
}

#[test]
fn a_workspace_dependency_change_releases_the_components_that_use_it() {
    let mut repo = Repo::new();
    repo.commit(
        "chore: a workspace",
        &[
            (
                "Cargo.toml",
                "[workspace]\nmembers = [\"core\", \"server\", \"cli\"]\n\n[workspace.dependencies]\nserde = \"1.0\"\nrand = \"0.8\"\n",
            ),
            (
                "cli/Cargo.toml",
                "[package]\nname = \"cli\"\nversion = \"0.1.0\"\n\n[dependencies]\nserde.workspace = true\n\n[dev-dependencies]\nrand.workspace = true\n",
            ),
        ],
    );
    repo.released("1.0.0");
    repo.commit(
        "build(deps): serde 1.0.228",
        &[(
            "Cargo.toml",
            "[workspace]\nmembers = [\"core\", \"server\", \"cli\"]\n\n[workspace.dependencies]\nserde = \"1.0.228\"\nrand = \"0.8\"\n",
        )],
    );
    repo.commit(
        "build(deps): rand 0.9 for the tests",
        &[(
            "Cargo.toml",
            "[workspace]\nmembers = [\"core\", \"server\", \"cli\"]\n\n[workspace.dependencies]\nserde = \"1.0.228\"\nrand = \"0.9\"\n",
        )],
    );
    repo.checkout();
    let plan = repo.plan(&[]);
    let cli = component(&plan, "cli");
    assert_eq!(cli["new_version"], "1.0.1", "{plan}");
    assert_eq!(
        cli["commits"].as_array().expect("commits").len(),
        1,
        "{plan}"
    );
    assert!(
        cli["reasons"][0].as_str().is_some_and(
            |r| r.contains("serde 1.0.228") && r.contains("[workspace.dependencies] serde")
        ),
        "{plan}"
    );
    for other in ["core", "server"] {
        assert_eq!(component(&plan, other)["release"], false, "{plan}");
    }
}

#[test]
fn apply_changelog_goes_below_a_keep_a_changelog_preamble_in_its_style() {
    let mut repo = Repo::new();
    let keep = "# Changelog\n\nAll notable changes to this project will be documented in this file.\n\nThe format is based on [Keep a Changelog](https://keepachangelog.com/en/1.1.0/),\nand this project adheres to [Semantic Versioning](https://semver.org/spec/v2.0.0.html).\n\n## [Unreleased]\n\n## [1.0.0] - 2026-01-01\n\n### Added\n\n- the first commands\n";
    repo.commit("docs(cli): changelog", &[("cli/CHANGELOG.md", keep)]);
    repo.released("1.0.0");
    repo.commit(
        "feat(cli): colours",
        &[("cli/src/main.rs", "fn main() {38;}\n")],
    );
    repo.commit(
        "fix(cli): typo",
        &[("cli/src/main.rs", "fn main() {39;}\n")],
    );
    repo.checkout();
    let run = repo.release(&["apply", "--changelog"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let text = std::fs::read_to_string(repo.path().join("cli/CHANGELOG.md")).expect("changelog");
    let (preamble, rest) = text.split_once("## [Unreleased]\n").expect("unreleased");
    assert_eq!(
        preamble,
        keep.split_once("## [Unreleased]\n").expect("keep").0,
        "the preamble is untouched"
    );
    assert!(
        rest.starts_with("\n## [1.1.0] - 2026-01-01\n\n### Added\n\n- **cli:** colours ("),
        "{text}"
    );
    assert!(rest.contains("### Fixed\n\n- **cli:** typo ("), "{text}");
    assert!(
        rest.find("## [1.1.0]") < rest.find("## [1.0.0] - 2026-01-01"),
        "{text}"
    );
    assert_eq!(text.matches("## [").count(), 3, "{text}");
}

/// A Cargo workspace whose server and root pin the core crate's version next to its path.
fn pinned_workspace(server_pin: &str) -> Repo {
    let mut repo = Repo::new();
    repo.commit(
        "chore: a workspace",
        &[
            (
                "Cargo.toml",
                "[workspace]\nmembers = [\"core\", \"server\", \"cli\"]\nresolver = \"2\"\n\n[workspace.dependencies]\nacme-core = { path = \"core\", version = \"0.1.0\" }\n",
            ),
            (
                "core/Cargo.toml",
                "[package]\nname = \"acme-core\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
            ),
            (
                "server/Cargo.toml",
                &format!(
                    "[package]\nname = \"server\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nacme-core = {{ path = \"../core\", version = \"{server_pin}\" }}\n"
                ),
            ),
            (
                "cli/Cargo.toml",
                "[package]\nname = \"cli\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nacme-core.workspace = true\n",
            ),
        ],
    );
    repo.released("0.1.0");
    repo.commit(
        "feat(core)!: a new storage layout",
        &[("core/src/lib.rs", "// core 0.2\n")],
    );
    repo.checkout();
    repo
}

fn cargo_metadata(repo: &Repo) -> std::process::Output {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["metadata", "--offline", "--format-version", "1"])
        .arg("--manifest-path")
        .arg(repo.path().join("Cargo.toml"))
        .output()
        .expect("run cargo metadata")
}

#[test]
fn bump_manifests_rewrites_the_versions_dependents_pin_so_the_workspace_resolves() {
    let repo = pinned_workspace("0.1.0");
    let before = cargo_metadata(&repo);
    assert!(
        before.status.success(),
        "{}",
        String::from_utf8_lossy(&before.stderr)
    );
    let run = repo.release(&["apply", "--bump-manifests", "--output", "json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(new_version(&repo.plan(&[]), "core"), Value::Null);
    let read = |p: &str| std::fs::read_to_string(repo.path().join(p)).expect(p);
    assert!(read("core/Cargo.toml").contains("version = \"0.2.0\""));
    assert!(
        read("server/Cargo.toml")
            .contains("acme-core = { path = \"../core\", version = \"0.2.0\" }"),
        "{}",
        read("server/Cargo.toml")
    );
    assert!(
        read("Cargo.toml").contains("acme-core = { path = \"core\", version = \"0.2.0\" }"),
        "{}",
        read("Cargo.toml")
    );
    let after = cargo_metadata(&repo);
    assert!(
        after.status.success(),
        "the released workspace resolves: {}",
        String::from_utf8_lossy(&after.stderr)
    );
    let statuses = repo.repo.statuses(None).expect("status");
    assert!(
        statuses
            .iter()
            .all(|s| s.status().is_empty() || s.status() == git2::Status::WT_NEW),
        "every rewritten manifest is in the release commit"
    );
}

#[test]
fn bump_manifests_refuses_a_pin_it_cannot_rewrite_before_changing_anything() {
    let repo = pinned_workspace(">=0.1, <0.2");
    let head = repo.head();
    let run = repo.release(&["apply", "--bump-manifests", "--changelog"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stderr
            .contains("server/Cargo.toml requires acme-core `>=0.1, <0.2`"),
        "{}",
        run.stderr
    );
    assert_eq!(repo.head(), head);
    assert!(
        repo.repo
            .tag_names(Some("core-v0.2*"))
            .expect("tags")
            .is_empty()
    );
    assert!(!repo.path().join("core/CHANGELOG.md").exists());
    let manifest = std::fs::read_to_string(repo.path().join("core/Cargo.toml")).expect("core");
    assert!(manifest.contains("version = \"0.1.0\""), "{manifest}");
}

fn git(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let home = dir.join("git-home");
    std::fs::create_dir_all(&home).expect("home");
    Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("HOME", &home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("run git")
}

#[test]
fn check_since_release_lints_what_came_after_the_newest_tags_in_a_fresh_clone() {
    let mut repo = Repo::new();
    repo.commit("Fixed stuff before the first release", &[("cli/a", "1")]);
    repo.checkout();
    assert_eq!(repo.release(&["apply"]).code, 0);
    repo.commit("feat(cli): ok", &[("cli/b", "1")]);
    repo.commit("Fixed stuff", &[("cli/c", "1")]);
    let clone = repo.dir.path().join("clone");
    let out = git(
        repo.dir.path(),
        &["clone", "-q", repo.path().to_str().expect("path"), "clone"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let in_clone = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cfa-release"))
            .args(args)
            .current_dir(&clone)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .expect("run")
    };
    let run = in_clone(&["check", "--since-release", "--output", "json"]);
    assert_eq!(
        run.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: Value = serde_json::from_slice(&run.stdout).expect("json");
    assert_eq!(report["checked"], 2, "{report}");
    assert_eq!(report["violations"][0]["summary"], "Fixed stuff");
    assert_eq!(report["after_tags"][0], "core-v0.1.0");
    // The default range (origin/main..HEAD) sees nothing in a clone of main.
    let default = in_clone(&["check"]);
    assert_eq!(default.status.code(), Some(0));

    // A shallow clone cannot see the tags: refused, saying how to fetch them.
    let url = format!("file://{}", repo.path().display());
    let out = git(
        repo.dir.path(),
        &["clone", "-q", "--depth", "1", &url, "shallow"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(env!("CARGO_BIN_EXE_cfa-release"))
        .args(["check", "--since-release"])
        .current_dir(repo.dir.path().join("shallow"))
        .output()
        .expect("run");
    assert_eq!(run.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("shallow"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}
