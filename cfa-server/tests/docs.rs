//! The documentation against the binary: every `CFA_*` variable and every route that README.md
//! and docs/ mention must exist, so a renamed key or a removed endpoint fails CI instead of a
//! reader.
//!
//! Configuration names come from the configuration itself (every key of [`Settings`], and the
//! short names); the other tools' variables (cfa-cli's, cfa-load's, the tests') must be read
//! somewhere in the workspace's source. Routes are asked of a running application: a documented
//! route exists when the server answers it with anything but its "no such endpoint" 404 or a
//! 405, so routes added with their docs need no change here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cfa_server::config::{SHORT_ENV_NAMES, Settings};
use serde_json::Value;
use tower::ServiceExt as _;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// Every file under `dir` (recursively) whose name ends with one of `suffixes`.
fn files(dir: &Path, suffixes: &[&str], out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                files(&path, suffixes, out);
            }
        } else if suffixes.iter().any(|s| name.ends_with(s)) {
            out.push(path);
        }
    }
}

/// README.md and every Markdown file under docs/, with their text.
fn documents() -> Vec<(String, String)> {
    let root = repository();
    let mut paths = vec![root.join("README.md")];
    files(&root.join("docs"), &[".md"], &mut paths);
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("a readable document");
            let name = p.strip_prefix(&root).unwrap_or(&p).display().to_string();
            (name, text)
        })
        .collect()
}

/// Each occurrence of `find` in the documents, as (`file:line`, what was found).
fn mentions(find: impl Fn(&str) -> Vec<String>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (file, text) in documents() {
        for (n, line) in text.lines().enumerate() {
            for found in find(line) {
                out.push((format!("{file}:{}", n + 1), found));
            }
        }
    }
    out
}

/// `CFA_` names in a line: `CFA_` then upper-case letters, digits and underscores.
fn cfa_names(line: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("CFA_") {
        let boundary = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        let tail = &rest[at + 4..];
        let len = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = format!("CFA_{}", tail[..len].trim_end_matches('_'));
        if boundary && name.len() > 4 {
            names.push(name);
        }
        rest = &tail[len..];
    }
    names
}

/// The environment names of every configuration key: `CFA_<SECTION>__<KEY>` for each key of
/// the settings (maps, such as `gateway.upstreams`, take any key below them), then the short
/// names.
fn configuration_names() -> (BTreeSet<String>, BTreeSet<String>) {
    fn walk(prefix: &str, value: &Value, keys: &mut BTreeSet<String>, maps: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) if map.is_empty() => {
                maps.insert(prefix.to_string());
            }
            Value::Object(map) => {
                for (key, value) in map {
                    let name = if prefix.is_empty() {
                        key.to_uppercase()
                    } else {
                        format!("{prefix}__{}", key.to_uppercase())
                    };
                    walk(&name, value, keys, maps);
                }
            }
            _ => {
                keys.insert(prefix.to_string());
            }
        }
    }
    let settings = serde_json::to_value(Settings::default()).expect("settings serialise");
    let mut keys = BTreeSet::new();
    let mut maps = BTreeSet::new();
    walk("", &settings, &mut keys, &mut maps);
    let mut names: BTreeSet<String> = keys.iter().map(|k| format!("CFA_{k}")).collect();
    names.extend(
        SHORT_ENV_NAMES
            .iter()
            .map(|(short, _)| format!("CFA_{}", short.to_uppercase())),
    );
    let maps = maps.iter().map(|m| format!("CFA_{m}__")).collect();
    (names, maps)
}

/// Every `"CFA_…"` string literal in the workspace's Rust sources and in .ci/run, and every
/// `${CFA_…}` the compose file substitutes: the variables some tool, test or script reads.
fn names_read_by_the_tools() -> BTreeSet<String> {
    let root = repository();
    let mut paths = vec![root.join(".ci/run")];
    for entry in std::fs::read_dir(&root).expect("the workspace").flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("cfa-") && entry.path().is_dir() {
            files(&entry.path(), &[".rs"], &mut paths);
        }
    }
    let mut names = BTreeSet::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for line in text.lines() {
            for quoted in line.split('"').skip(1).step_by(2) {
                if let [name] = cfa_names(quoted).as_slice()
                    && quoted.starts_with(name.as_str())
                {
                    names.insert(name.clone());
                }
            }
            // Shell: `export CFA_X=…`, `CFA_X=… command`.
            for name in cfa_names(line) {
                if path.ends_with("run") && line.contains(&format!("{name}=")) {
                    names.insert(name);
                }
            }
        }
    }
    // The compose file's own variables: `${CFA_X:-…}` / `${CFA_X:?…}`, substituted by compose.
    let compose = std::fs::read_to_string(root.join("deploy/compose.yaml")).unwrap_or_default();
    for reference in compose.split("${").skip(1) {
        let name: String = reference
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        if name.starts_with("CFA_") {
            names.insert(name);
        }
    }
    names
}

#[test]
fn every_cfa_variable_the_docs_mention_exists() {
    let (configuration, maps) = configuration_names();
    let tools = names_read_by_the_tools();
    let unknown: Vec<String> = mentions(cfa_names)
        .into_iter()
        .filter(|(_, name)| {
            let known = if name.contains("__") {
                configuration.contains(name)
                    || maps
                        .iter()
                        .any(|m| name.starts_with(m.as_str()) && name.len() > m.len())
            } else {
                configuration.contains(name) || tools.contains(name)
            };
            !known
        })
        .map(|(at, name)| format!("{at}: {name}"))
        .collect();
    assert!(
        unknown.is_empty(),
        "the docs name variables nothing reads (a configuration key is CFA_<SECTION>__<KEY> of \
         a key in cfa-server/src/config; another tool's must be read in its source):\n{}",
        unknown.join("\n")
    );
    // The check sees the names it must: a configuration key, a short name, another tool's.
    for name in ["CFA_OUTBOX__BATCH_SIZE", "CFA_LISTEN", "CFA_SERVER__ROLES"] {
        assert!(configuration.contains(name), "{name} in {configuration:?}");
    }
    assert!(tools.contains("CFA_TEST_POSTGRES_URL"), "{tools:?}");
    assert!(!configuration.contains("CFA_OUTBOX__BATCH_SISE"));
}

/// Where a path written at `text`'s start ends: at white space, a quote, a table bar, a closing
/// parenthesis, or a comma or semicolon outside `{…}` (`/api/v1/{donations,payments}/health`).
fn path_end(text: &str) -> usize {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' | ';' if depth == 0 => return i,
            c if c.is_whitespace() || "`'\"|)".contains(c) => return i,
            _ => {}
        }
    }
    text.len()
}

/// Paths of other programs that the docs mention with a method: the OTLP collector's.
const NOT_OURS: [&str; 1] = ["/v1/traces"];

/// Routes in a line, as `METHOD path`: a method followed by a path (`GET /health`), and, as
/// `ANY path`, any other path under `/api/` or `/sandbox/` (in a URL too). A path right after a
/// colon is a goose request name (`POST baseline: /donations`), not a route.
fn routes(line: &str) -> Vec<String> {
    const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];
    let mut out = Vec::new();
    for method in METHODS {
        let needle = format!("{method} /");
        let mut rest = line;
        while let Some(at) = rest.find(&needle) {
            let boundary = rest[..at]
                .chars()
                .next_back()
                .is_none_or(|c| !c.is_ascii_alphanumeric());
            let path = &rest[at + method.len() + 1..];
            let end = path_end(path);
            if boundary && !NOT_OURS.contains(&&path[..end]) {
                out.push(format!("{method} {}", &path[..end]));
            }
            rest = &path[end..];
        }
    }
    for prefix in ["/api/", "/sandbox/"] {
        let mut rest = line;
        while let Some(at) = rest.find(prefix) {
            let path = &rest[at..];
            let end = path_end(path);
            let before = &rest[..at];
            let with_method = METHODS.iter().any(|m| before.ends_with(&format!("{m} ")));
            if !with_method && !before.ends_with(": ") {
                out.push(format!("ANY {}", &path[..end]));
            }
            rest = &path[end..];
        }
    }
    out
}

/// The concrete paths a documented one stands for: `[…]` optional, `{a,b}` each of a and b, a
/// query dropped, a placeholder (`{id}`, `<id>`, `$id`) filled with an id; `None` for a prefix
/// (`/api/v1/totals/…`) or a pattern, which name no single route.
fn expand(path: &str) -> Option<Vec<String>> {
    let path = path.trim_end_matches(['.', ':']);
    if let Some(open) = path.find('[') {
        let close = open + path[open..].find(']')?;
        let with = format!(
            "{}{}{}",
            &path[..open],
            &path[open + 1..close],
            &path[close + 1..]
        );
        let without = format!("{}{}", &path[..open], &path[close + 1..]);
        let mut out = expand(&with)?;
        out.extend(expand(&without)?);
        return Some(out);
    }
    let path = path.split('?').next().unwrap_or(path);
    if path.contains('…') || path.contains('*') || path.contains("...") {
        return None;
    }
    if let Some(open) = path.find('{')
        && let Some(len) = path[open..].find('}')
        && path[open..open + len].contains(',')
    {
        let close = open + len;
        let mut out = Vec::new();
        for choice in path[open + 1..close].split(',') {
            out.extend(expand(&format!(
                "{}{}{}",
                &path[..open],
                choice.trim(),
                &path[close + 1..]
            ))?);
        }
        return Some(out);
    }
    let filled: Vec<String> = path
        .split('/')
        .map(|segment| {
            let placeholder = (segment.starts_with('{') && segment.ends_with('}'))
                || (segment.starts_with('<') && segment.ends_with('>'))
                || segment.starts_with('$');
            if placeholder {
                "00000000-0000-4000-8000-000000000000".to_string()
            } else {
                segment.to_string()
            }
        })
        .collect();
    let path = filled.join("/");
    if path.contains(['<', '>', '{', '}', '|']) {
        return None;
    }
    Some(vec![path])
}

#[test]
fn every_route_the_docs_mention_is_served() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = Settings::default();
    settings.server.data_dir = dir.path().to_path_buf();
    settings.server.listen = "127.0.0.1:0".parse().expect("address");
    settings.gateway.rate_limit.enabled = false;
    let app = runtime.block_on(async {
        let application = cfa_server::startup::Application::build(settings)
            .await
            .expect("the application builds");
        cfa_server::http::app(application.state().clone())
    });
    // A path given without a method may name a group of routes (`/api/v1/admin`): it is fine
    // when it is the start of a documented route.
    let document = serde_json::to_value(cfa_server::http::openapi()).expect("the document");
    let documented: Vec<String> = document["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .cloned()
        .collect();
    let groups_routes = |path: &str| {
        let group = format!("{}/", path.trim_end_matches('/'));
        documented.iter().any(|p| p.starts_with(&group))
    };
    let mut checked = BTreeSet::new();
    let mut missing = Vec::new();
    for (at, route) in mentions(routes) {
        let (method, path) = route.split_once(' ').expect("method and path");
        let Some(paths) = expand(path) else {
            continue;
        };
        for path in paths {
            let probe = if method == "ANY" { "GET" } else { method };
            let request = axum::http::Request::builder()
                .method(probe)
                .uri(&path)
                .body(axum::body::Body::empty())
                .expect("a request");
            let response = runtime
                .block_on(app.clone().oneshot(request))
                .expect("an answer");
            let status = response.status().as_u16();
            let body = runtime
                .block_on(axum::body::to_bytes(response.into_body(), 1 << 20))
                .unwrap_or_default();
            let no_route =
                status == 404 && String::from_utf8_lossy(&body).contains("\"no such endpoint\"");
            let no_method = status == 405 && method != "ANY";
            let group = method == "ANY" && groups_routes(&path);
            if (no_route || no_method) && !group {
                missing.push(format!("{at}: {method} {path} ({status})"));
            }
            checked.insert(format!("{probe} {path}"));
        }
    }
    assert!(
        missing.is_empty(),
        "the docs mention routes the server does not serve:\n{}",
        missing.join("\n")
    );
    // The check saw the routes it must, and tells a missing one from a missing resource.
    for route in [
        "GET /health",
        "GET /ready",
        "GET /metrics",
        "POST /api/v1/donations",
        "GET /api/v1/donations/00000000-0000-4000-8000-000000000000",
        "GET /api/v1/payments/health",
    ] {
        assert!(checked.contains(route), "{route} not among {checked:?}");
    }
    let request = axum::http::Request::builder()
        .uri("/api/v1/no-such-thing")
        .body(axum::body::Body::empty())
        .expect("a request");
    let response = runtime
        .block_on(app.clone().oneshot(request))
        .expect("an answer");
    let body = runtime
        .block_on(axum::body::to_bytes(response.into_body(), 1 << 20))
        .unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&body).contains("\"no such endpoint\""),
        "an unknown path is recognised as one"
    );
}
