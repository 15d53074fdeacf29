//! An accessibility audit of rendered HTML, for the tests of the donor pages: what axe-core's
//! rules `html-has-lang`, `document-title`, `page-has-heading-one`, `heading-order`, `label`,
//! `button-name`, `link-name` and `meta-viewport` check, done on the markup the server sends.
//! Colour contrast is checked on the stylesheet by a unit test in `cfa_server::pages`; the
//! browser test adds axe-core itself when `CFA_TEST_AXE` names its script.

/// Every problem found in `html`; empty when the page passes.
pub fn audit(html: &str) -> Vec<String> {
    let mut problems = Vec::new();
    match tags(html, "html").first().and_then(|t| attr(t, "lang")) {
        Some(lang) if !lang.trim().is_empty() => {}
        _ => problems.push("the <html> element has no lang".to_string()),
    }
    let title = between(html, "<title>", "</title>").unwrap_or_default();
    if title.trim().is_empty() {
        problems.push("the page has no title".into());
    }
    let viewport = tags(html, "meta")
        .iter()
        .any(|t| attr(t, "name").as_deref() == Some("viewport"));
    if !viewport {
        problems.push("no viewport meta: the page does not fit a phone".into());
    }
    let h1 = tags(html, "h1").len();
    if h1 != 1 {
        problems.push(format!("{h1} <h1> elements; a page has exactly one"));
    }
    problems.extend(heading_order(html));
    let labelled: Vec<String> = tags(html, "label")
        .iter()
        .filter_map(|t| attr(t, "for"))
        .collect();
    for tag in tags(html, "input")
        .iter()
        .chain(tags(html, "progress").iter())
    {
        if attr(tag, "type").as_deref() == Some("hidden") {
            continue;
        }
        match attr(tag, "id") {
            Some(id) if labelled.contains(&id) => {}
            _ => problems.push(format!("a control without a label: {tag}")),
        }
    }
    for (open, close) in [("<button", "</button>"), ("<a ", "</a>")] {
        for (i, _) in html.match_indices(open) {
            let rest = &html[i..];
            let text = rest
                .find('>')
                .and_then(|start| {
                    rest[start + 1..]
                        .find(close)
                        .map(|end| &rest[start + 1..start + 1 + end])
                })
                .map(strip_tags)
                .unwrap_or_default();
            if text.trim().is_empty() {
                problems.push(format!("{open}…> without text"));
            }
        }
    }
    for external in ["src=\"http", "href=\"http", "src=\"//", "href=\"//"] {
        if html.contains(external) {
            problems.push(format!("loads something from another site ({external}…)"));
        }
    }
    problems
}

/// Headings never skip a level going down (`h1` then `h3` is a skip).
fn heading_order(html: &str) -> Vec<String> {
    let mut levels = Vec::new();
    for (i, _) in html.match_indices("<h") {
        if let Some(level) = html[i + 2..].chars().next().and_then(|c| c.to_digit(10)) {
            levels.push(level);
        }
    }
    levels
        .windows(2)
        .filter(|w| w[1] > w[0] + 1)
        .map(|w| format!("heading h{} follows h{}: a level is skipped", w[1], w[0]))
        .collect()
}

/// The opening tags `<name …>` of an element.
fn tags<'a>(html: &'a str, name: &str) -> Vec<&'a str> {
    let open = format!("<{name}");
    html.match_indices(&open)
        .filter(|(i, _)| {
            html[i + open.len()..]
                .chars()
                .next()
                .is_some_and(|c| c == ' ' || c == '>' || c == '/')
        })
        .filter_map(|(i, _)| html[i..].find('>').map(|end| &html[i..=i + end]))
        .collect()
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let marker = format!(" {name}=\"");
    let start = tag.find(&marker)? + marker.len();
    tag[start..].split('"').next().map(str::to_string)
}

fn between<'a>(html: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = html.find(start)? + start.len();
    html[from..].find(end).map(|to| &html[from..from + to])
}

fn strip_tags(text: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for c in text.chars() {
        match c {
            '<' => inside = true,
            '>' => inside = false,
            c if !inside => out.push(c),
            _ => {}
        }
    }
    out
}

/// Fails unless the audit catches each kind of problem it claims to (a checker that finds
/// nothing would pass every page).
pub fn check_the_checker() {
    let bad = "<html><head><title></title></head><body><h1>a</h1><h3>b</h3><h1>c</h1>\
               <input type=\"text\" id=\"x\"><button></button><a href=\"http://cdn\"></a></body></html>";
    let problems = audit(bad);
    for expected in [
        "lang",
        "title",
        "viewport",
        "2 <h1>",
        "skipped",
        "label",
        "<button",
        "<a ",
        "another site",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "{expected}: {problems:?}"
        );
    }
}
