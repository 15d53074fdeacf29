//! `cfa-release`: which components of a repository changed, by how much (semver, from
//! conventional commits), their changelogs, tags and container image tags — the release step of
//! CI, built on git2 and semver.
//!
//! The command line builds a plain request and calls this library, which never sees clap; the
//! bump rules are pure and tested from tables; git sits behind one small type tested on
//! throwaway repositories.
//!
//! # Layout
//!
//! - [`config`]: `release.toml`, the components, their globs and dependencies (Cargo path
//!   dependencies found automatically).
//! - [`conventional`]: reading commit messages (pure).
//! - [`version`]: next versions, pre-releases and image tags (pure).
//! - [`git`]: the git2 wrapper.
//! - [`plan`]: the read-only release plan.
//! - [`tag`]: tag formats (`{name}-v{version}`, `v{version}`, …), both ways.
//! - [`changelog`]: release notes in the style of the file they go into (pure).
//! - [`apply`]: changelogs, manifests and tags.
//! - [`changes`]: `changed` (what CI should test) and `check` (the commit-message lint).

pub mod apply;
pub mod changelog;
pub mod changes;
pub mod config;
pub mod conventional;
pub mod git;
pub mod plan;
pub mod tag;
pub mod version;

/// Everything that can go wrong, each with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `release.toml` is missing or wrong; the message names the key.
    #[error("release configuration: {0}")]
    Config(String),
    /// The command line asked for something that cannot be (exit status 2).
    #[error("{0}")]
    Usage(String),
    /// The repository is not in a state to release from (dirty, detached, moved, tag clash).
    #[error("{0}")]
    Refused(String),
    /// A file could not be read or written.
    #[error("{0}")]
    Io(String),
    /// libgit2 failed.
    #[error("git: {}", .0.message())]
    Git(#[from] git2::Error),
}
