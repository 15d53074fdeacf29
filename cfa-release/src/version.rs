//! Version arithmetic: the next version of a component and the image tags it earns (pure).

use semver::{Prerelease, Version};

use crate::conventional::Level;

/// Where a component stands before this release.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// The highest stable version tagged on the history of HEAD.
    pub stable: Option<Version>,
    /// The highest version (pre-releases included) tagged on the history of HEAD.
    pub last: Option<Version>,
    /// Every version the component was ever tagged with, on any branch.
    pub all: Vec<Version>,
}

/// How `0.x` versions move, as release-plz (and its `next_version`) moves them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Policy {
    /// On `0.x`, a feature moves the minor; otherwise (the default) the patch, and only a
    /// breaking change moves the minor.
    pub features_always_increment_minor: bool,
}

/// `version` moved by `level`; on `0.x` a breaking change moves the minor, and a feature the
/// patch unless the policy says features always move the minor.
pub fn bump(version: &Version, level: Level, policy: Policy) -> Version {
    let (major, minor, patch) = (version.major, version.minor, version.patch);
    match level {
        Level::None => Version::new(major, minor, patch),
        Level::Patch => Version::new(major, minor, patch + 1),
        Level::Minor if major == 0 && !policy.features_always_increment_minor => {
            Version::new(0, minor, patch + 1)
        }
        Level::Minor => Version::new(major, minor + 1, 0),
        Level::Major if major == 0 => Version::new(0, minor + 1, 0),
        Level::Major => Version::new(major + 1, 0, 0),
    }
}

fn base(version: &Version) -> Version {
    Version::new(version.major, version.minor, version.patch)
}

/// The next version: `initial` for a first release, otherwise the last stable version moved by
/// `level` (never below a pre-release already cut for a higher version). With `pre` (`rc`), the
/// next free `-rc.N` of that version.
pub fn next(
    history: &History,
    initial: &Version,
    level: Level,
    pre: Option<&str>,
    policy: Policy,
) -> Version {
    let target = match (&history.stable, &history.last) {
        (None, None) => base(initial),
        (None, Some(last)) => base(last).max(base(initial)),
        (Some(stable), last) => {
            let bumped = bump(stable, level, policy);
            match last {
                Some(last) if !last.pre.is_empty() && base(last) > *stable => {
                    bumped.max(base(last))
                }
                _ => bumped,
            }
        }
    };
    let Some(id) = pre else {
        return target;
    };
    let taken = history
        .all
        .iter()
        .filter(|v| base(v) == target)
        .filter_map(|v| {
            let (name, n) = v.pre.as_str().rsplit_once('.')?;
            (name == id).then(|| n.parse::<u64>().ok()).flatten()
        })
        .max()
        .unwrap_or(0);
    let mut version = target;
    // `id` was checked when the command line was read (see `check_pre_id`).
    version.pre = Prerelease::new(&format!("{id}.{}", taken + 1)).unwrap_or(Prerelease::EMPTY);
    version
}

/// Checks a pre-release identifier (`rc`, `beta`): ASCII letters, digits and hyphens.
pub fn check_pre_id(id: &str) -> Result<(), String> {
    if !id.is_empty()
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && Prerelease::new(&format!("{id}.1")).is_ok()
    {
        Ok(())
    } else {
        Err(format!(
            "`{id}` is not a pre-release identifier; use letters, digits and hyphens, e.g. `rc`"
        ))
    }
}

/// The image tags `new` earns: `vX.Y.Z` always; `vX.Y`, `vX` and `latest` only when no stable
/// version already released in that line (on any branch) is higher; pre-releases only their own.
pub fn image_tags(new: &Version, existing: &[Version]) -> Vec<String> {
    let mut tags = vec![format!("v{new}")];
    if !new.pre.is_empty() {
        return tags;
    }
    let stable = || existing.iter().filter(|v| v.pre.is_empty() && *v != new);
    if !stable().any(|v| v.major == new.major && v.minor == new.minor && v > new) {
        tags.push(format!("v{}.{}", new.major, new.minor));
    }
    if !stable().any(|v| v.major == new.major && v > new) {
        tags.push(format!("v{}", new.major));
    }
    if !stable().any(|v| v > new) {
        tags.push("latest".into());
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Policy = Policy {
        features_always_increment_minor: true,
    };

    fn v(s: &str) -> Version {
        Version::parse(s).expect("version")
    }

    fn history(stable: Option<&str>, last: Option<&str>, all: &[&str]) -> History {
        History {
            stable: stable.map(v),
            last: last.map(v),
            all: all.iter().map(|s| v(s)).collect(),
        }
    }

    #[test]
    fn levels_move_the_right_digit_and_zero_x_keeps_its_major() {
        let release_plz = Policy::default();
        let minor = Policy {
            features_always_increment_minor: true,
        };
        let table = [
            ("1.2.3", Level::Patch, release_plz, "1.2.4"),
            ("1.2.3", Level::Minor, release_plz, "1.3.0"),
            ("1.2.3", Level::Major, release_plz, "2.0.0"),
            ("0.4.1", Level::Major, release_plz, "0.5.0"),
            ("0.4.1", Level::Minor, release_plz, "0.4.2"),
            ("0.3.159", Level::Minor, release_plz, "0.3.160"),
            ("0.4.1", Level::Patch, release_plz, "0.4.2"),
            ("0.4.1", Level::Minor, minor, "0.5.0"),
            ("0.4.1", Level::Major, minor, "0.5.0"),
            ("1.2.3", Level::Minor, minor, "1.3.0"),
        ];
        for (from, level, policy, to) in table {
            assert_eq!(
                bump(&v(from), level, policy),
                v(to),
                "{from} {level:?} {policy:?}"
            );
        }
    }

    #[test]
    fn a_first_release_takes_the_initial_version() {
        let initial = v("0.1.0");
        assert_eq!(
            next(&History::default(), &initial, Level::Minor, None, P),
            initial
        );
        assert_eq!(
            next(&History::default(), &initial, Level::Minor, Some("rc"), P),
            v("0.1.0-rc.1")
        );
    }

    #[test]
    fn pre_releases_count_up_and_then_promote() {
        let initial = v("0.1.0");
        let h = history(Some("1.2.0"), Some("1.2.0"), &["1.2.0"]);
        assert_eq!(
            next(&h, &initial, Level::Minor, Some("rc"), P),
            v("1.3.0-rc.1")
        );
        let h = history(Some("1.2.0"), Some("1.3.0-rc.1"), &["1.2.0", "1.3.0-rc.1"]);
        assert_eq!(
            next(&h, &initial, Level::Patch, Some("rc"), P),
            v("1.3.0-rc.2")
        );
        assert_eq!(
            next(&h, &initial, Level::None, None, P),
            v("1.3.0"),
            "promotion"
        );
        assert_eq!(
            next(&h, &initial, Level::Major, Some("rc"), P),
            v("2.0.0-rc.1"),
            "a breaking change during the candidates raises the target"
        );
    }

    #[test]
    fn floating_tags_move_only_for_the_highest_in_their_line() {
        let all = [v("1.4.0"), v("2.0.0"), v("2.1.0")];
        assert_eq!(
            image_tags(&v("2.2.0"), &all),
            ["v2.2.0", "v2.2", "v2", "latest"]
        );
        assert_eq!(
            image_tags(&v("1.4.1"), &all),
            ["v1.4.1", "v1.4", "v1"],
            "a hotfix on the old major never takes latest"
        );
        assert_eq!(image_tags(&v("2.0.1"), &all), ["v2.0.1", "v2.0"]);
        assert_eq!(image_tags(&v("3.0.0-rc.1"), &all), ["v3.0.0-rc.1"]);
    }

    #[test]
    fn pre_release_identifiers_are_checked() {
        assert!(check_pre_id("rc").is_ok());
        assert!(check_pre_id("beta-2").is_ok());
        assert!(check_pre_id("").is_err());
        assert!(check_pre_id("r c").is_err());
        assert!(check_pre_id("rc.1").is_err());
    }
}
