//! Tag formats: how a component's version becomes a tag name (`{name}-v{version}`,
//! `v{version}`, `{name}@{version}`, as release-plz, changesets and cargo-release write them)
//! and back (pure, no I/O).

/// The formats other tools use, recognised as earlier releases whatever `tag` says.
pub const KNOWN: [&str; 8] = [
    "{name}-v{version}",
    "{name}@{version}",
    "{name}@v{version}",
    "{name}/v{version}",
    "{name}-{version}",
    "{name}/{version}",
    "v{version}",
    "{version}",
];

/// A tag template with `{version}` once and optionally `{name}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagFormat {
    template: String,
}

impl Default for TagFormat {
    fn default() -> Self {
        TagFormat {
            template: "{name}-v{version}".into(),
        }
    }
}

impl std::fmt::Display for TagFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.template)
    }
}

impl TagFormat {
    /// Parses a template; the error says what a template may hold.
    pub fn parse(template: &str) -> Result<TagFormat, String> {
        let rest = template.replace("{name}", "").replace("{version}", "");
        let bad = |why: &str| {
            Err(format!(
                "`{template}` {why}; write e.g. \"{{name}}-v{{version}}\", \"v{{version}}\" or \"{{name}}@{{version}}\""
            ))
        };
        if template.matches("{version}").count() != 1 {
            return bad("must contain {version} exactly once");
        }
        if template.matches("{name}").count() > 1 {
            return bad("may contain {name} at most once");
        }
        if rest.contains(['{', '}']) {
            return bad("knows only the placeholders {name} and {version}");
        }
        if rest.chars().any(|c| {
            c.is_whitespace()
                || c.is_control()
                || matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\')
        }) || rest.contains("..")
            || template.starts_with(['/', '-', '.'])
            || template.ends_with(['/', '.'])
        {
            return bad("would not be a valid git tag name");
        }
        Ok(TagFormat {
            template: template.to_string(),
        })
    }

    /// Whether the component's name is part of its tags.
    pub fn is_named(&self) -> bool {
        self.template.contains("{name}")
    }

    /// The tag of `version` of component `name`.
    pub fn render(&self, name: &str, version: &impl std::fmt::Display) -> String {
        self.template
            .replace("{name}", name)
            .replace("{version}", &version.to_string())
    }

    /// What comes before and after the version in the tags of component `name`.
    fn around(&self, name: &str) -> (String, String) {
        let filled = self.template.replace("{name}", name);
        let (before, after) = filled
            .split_once("{version}")
            .unwrap_or((filled.as_str(), ""));
        (before.to_string(), after.to_string())
    }

    /// The text in the version's place when `tag` has this format for `name`, and the length
    /// of the text before it (a longer one is a more specific match).
    pub fn version_text<'t>(&self, name: &str, tag: &'t str) -> Option<(&'t str, usize)> {
        let (before, after) = self.around(name);
        let text = tag
            .strip_prefix(before.as_str())?
            .strip_suffix(after.as_str())?;
        (!text.is_empty()).then_some((text, before.len() + after.len()))
    }

    /// A glob for `git tag -l` that lists the tags of `name`.
    pub fn pattern(&self, name: &str) -> String {
        let (before, after) = self.around(name);
        format!("{before}*{after}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_and_read_back() {
        let f = TagFormat::parse("{name}@{version}").expect("format");
        assert_eq!(f.render("cli", &"1.2.3"), "cli@1.2.3");
        assert_eq!(
            f.version_text("cli", "cli@1.2.3").map(|t| t.0),
            Some("1.2.3")
        );
        assert_eq!(f.version_text("cli", "cli-v1.2.3"), None);
        let v = TagFormat::parse("v{version}").expect("format");
        assert!(!v.is_named());
        assert_eq!(v.render("x", &"0.3.0"), "v0.3.0");
        assert_eq!(TagFormat::default().render("core", &"1.0.0"), "core-v1.0.0");
        assert_eq!(TagFormat::default().pattern("core"), "core-v*");
    }

    #[test]
    fn bad_templates_say_why() {
        for (t, why) in [
            ("{name}", "exactly once"),
            ("{version}-{version}", "exactly once"),
            ("{nom}-{version}", "placeholders"),
            ("{name} {version}", "valid git tag"),
            ("-{version}", "valid git tag"),
        ] {
            let e = TagFormat::parse(t).expect_err(t);
            assert!(e.contains(why), "{t}: {e}");
        }
    }
}
