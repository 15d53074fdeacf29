//! Records the git revision the binary is built from, for `GET /version`: the revision of the
//! checkout, `-dirty` when it has uncommitted changes, or `CFA_GIT_REVISION` when set (an image
//! built without `.git`), else `unknown`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=CFA_GIT_REVISION");
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        println!("cargo:rerun-if-changed={dir}/index");
        // A commit moves the branch HEAD names, not HEAD itself: watch the branch's ref (loose
        // or packed, in the repository's common directory when this is a worktree).
        // Only files that exist: cargo reruns a script on every build for one that does not.
        let common = git(&["rev-parse", "--git-common-dir"]).unwrap_or(dir);
        let branch = git(&["symbolic-ref", "-q", "HEAD"]).map(|b| format!("{common}/{b}"));
        for file in branch.into_iter().chain([format!("{common}/packed-refs")]) {
            if std::path::Path::new(&file).exists() {
                println!("cargo:rerun-if-changed={file}");
            }
        }
    }
    let revision = std::env::var("CFA_GIT_REVISION")
        .ok()
        .filter(|r| !r.trim().is_empty())
        .or_else(|| {
            let head = git(&["rev-parse", "HEAD"])?;
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            Some(if dirty { format!("{head}-dirty") } else { head })
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=CFA_GIT_REVISION={revision}");
}
