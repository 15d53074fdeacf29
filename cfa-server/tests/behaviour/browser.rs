//! The donor pages in a real browser: Debian's Chromium driven over WebDriver (chromedriver and
//! the fantoccini crate), headless, against a server with its relay, sandbox and file mail sink
//! running by themselves. Runs when `CFA_TEST_BROWSER=1` (CI sets it); then a missing Chromium
//! or chromedriver fails the test. `CFA_TEST_AXE` may name axe-core's `axe.min.js`: every page
//! is then also checked by axe-core (WCAG 2 A and AA rules) inside the browser.
//!
//! Screenshots of every page at desktop and phone width go to `CFA_SCREENSHOTS_DIR`, or to
//! `<target>/tmp/screenshots/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::actions::{InputSource, MOUSE_BUTTON_LEFT, MouseActions, PointerAction};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::helpers::{TestApp, TestContext};

/// The browser tests: SQLite only, run when `CFA_TEST_BROWSER=1`.
pub fn all() -> Vec<(&'static str, crate::TestFn, crate::Only)> {
    vec![(
        "a_donor_gives_in_a_real_browser_with_and_without_javascript",
        |ctx| {
            Box::pin(a_donor_gives_in_a_real_browser_with_and_without_javascript(
                ctx,
            ))
        },
        crate::Only::Browser,
    )]
}

/// Chromium's flags for a headless run as root in a container.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
];

/// (name, width, height) of the two screen sizes every page is photographed at.
const SIZES: [(&str, u32, u32); 2] = [("desktop", 1280, 900), ("phone", 390, 844)];

/// chromedriver, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_chromedriver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver runs (Debian: apt-get install chromium chromium-driver)");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return driver;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("chromedriver did not listen on port {port}");
}

async fn browser(driver: &Driver, profile: &Path, javascript: bool) -> Client {
    let mut args: Vec<String> = FLAGS.iter().map(|f| f.to_string()).collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    args.push("--window-size=1280,900".into());
    let mut options = json!({ "args": args });
    if !javascript {
        options["args"]
            .as_array_mut()
            .expect("args")
            .push("--blink-settings=scriptEnabled=false".into());
        options["prefs"] = json!({"profile.managed_default_content_settings.javascript": 2});
    }
    if Path::new("/usr/bin/chromium").exists() {
        options["binary"] = json!("/usr/bin/chromium");
    }
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("browserName".into(), json!("chrome"));
    capabilities.insert("goog:chromeOptions".into(), options);
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

fn screenshot_dir() -> PathBuf {
    let dir = std::env::var_os("CFA_SCREENSHOTS_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

/// Photographs the page at both sizes, checks it fits the phone's width, and runs axe-core on
/// it when asked to; leaves the window at desktop size.
async fn photograph(client: &Client, name: &str, javascript: bool) {
    for (size, width, height) in SIZES {
        client.set_window_size(width, height).await.expect("resize");
        let png = client.screenshot().await.expect("screenshot");
        std::fs::write(screenshot_dir().join(format!("{name}-{size}.png")), png)
            .expect("write the screenshot");
        if javascript && size == "phone" {
            let fits = client
                .execute(
                    "return document.documentElement.scrollWidth <= window.innerWidth;",
                    vec![],
                )
                .await
                .expect("measure");
            assert_eq!(fits, json!(true), "{name} scrolls sideways on a phone");
        }
    }
    client.set_window_size(1280, 900).await.expect("resize");
    if javascript {
        axe(client, name).await;
    }
    let html = client.source().await.expect("source");
    let problems = crate::a11y::audit(&html);
    assert!(problems.is_empty(), "{name}: {problems:?}");
}

/// axe-core's WCAG 2 A and AA rules on the current page, when `CFA_TEST_AXE` names its script.
async fn axe(client: &Client, name: &str) {
    let Some(path) = std::env::var_os("CFA_TEST_AXE") else {
        return;
    };
    let source = std::fs::read_to_string(&path).expect("CFA_TEST_AXE names axe.min.js");
    client.execute(&source, vec![]).await.expect("axe loads");
    let violations = client
        .execute_async(
            "var done = arguments[arguments.length - 1];
             axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa']}})
               .then(function (r) { done(r.violations.map(function (v) {
                 return v.id + ': ' + v.help + ' (' + v.nodes.length + ')'; })); })
               .catch(function (e) { done(['axe failed: ' + e]); });",
            vec![],
        )
        .await
        .expect("axe runs");
    assert_eq!(violations, json!([]), "axe-core on {name}");
}

/// Polls until `check` is true, or fails naming `what`.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn text(client: &Client, css: &str) -> String {
    match client.find(Locator::Css(css)).await {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Fills the donate form: the second preset amount, a name and an address.
async fn fill_the_form(client: &Client, email: &str) {
    client
        .find(Locator::Css("label[for=amount-50]"))
        .await
        .expect("the 50 preset")
        .click()
        .await
        .expect("choose 50");
    client
        .find(Locator::Id("donor_name"))
        .await
        .expect("name field")
        .send_keys("Ada Lovelace")
        .await
        .expect("type");
    client
        .find(Locator::Id("donor_email"))
        .await
        .expect("e-mail field")
        .send_keys(email)
        .await
        .expect("type");
}

/// The history link in the newest receipt mailed to `email`, decoded from its `.eml` file.
fn history_link(data_dir: &Path, email: &str) -> Option<String> {
    let entries = std::fs::read_dir(data_dir.join("mail")).ok()?;
    for entry in entries.filter_map(Result::ok) {
        let eml = std::fs::read_to_string(entry.path()).ok()?;
        if !eml.contains(&format!("To: {email}")) {
            continue;
        }
        // Quoted-printable: soft line breaks and `=3D` for `=`.
        let plain = eml
            .replace("=\r\n", "")
            .replace("=\n", "")
            .replace("=3D", "=");
        let at = plain.find("/history?token=")?;
        let start = plain[..at].rfind("http")?;
        let end = plain[start..]
            .find(|c: char| c.is_whitespace() || c == '"' || c == '<')
            .map_or(plain.len(), |e| start + e);
        return Some(plain[start..end].to_string());
    }
    None
}

async fn with_javascript(app: &TestApp, client: &Client, campaign: &str, data_dir: &Path) {
    let url = format!("{}/campaigns/{campaign}", app.address);
    client
        .goto(&format!("{}/", app.address))
        .await
        .expect("open");
    photograph(client, "home", true).await;
    client.goto(&url).await.expect("open the campaign");
    photograph(client, "campaign", true).await;
    // A second window watches the campaign; it must move without a reload.
    let first = client.window().await.expect("window");
    let second = client.new_window(true).await.expect("a second tab").handle;
    client
        .switch_to_window(second.clone())
        .await
        .expect("switch");
    client.goto(&url).await.expect("open the campaign again");
    client
        .execute("window.kept = 42;", vec![])
        .await
        .expect("mark");
    client.switch_to_window(first).await.expect("switch back");
    fill_the_form(client, "ada@example.org").await;
    client
        .find(Locator::Css("form.donate button[type=submit]"))
        .await
        .expect("donate button")
        .click()
        .await
        .expect("donate");
    until("the checkout page", || async {
        text(client, "h1").await == "Sandbox checkout"
    })
    .await;
    photograph(client, "checkout", true).await;
    client
        .find(Locator::Css("button[value=succeed]"))
        .await
        .expect("pay button")
        .click()
        .await
        .expect("pay");
    until("the thank-you page", || async {
        client
            .current_url()
            .await
            .is_ok_and(|u| u.path().ends_with("/thanks"))
    })
    .await;
    client
        .execute("window.kept = 7;", vec![])
        .await
        .expect("mark");
    until("the receipt, shown without a reload", || async {
        text(client, "[data-detail]")
            .await
            .contains("receipt was sent")
    })
    .await;
    let kept = client
        .execute("return window.kept;", vec![])
        .await
        .expect("read");
    assert_eq!(kept, json!(7), "the thank-you page updated in place");
    assert!(text(client, "h1").await.contains("Thank you"));
    photograph(client, "thanks", true).await;
    client
        .switch_to_window(second)
        .await
        .expect("to the watcher");
    until("the total in the second tab", || async {
        text(client, "[data-total]").await == "$50.00"
    })
    .await;
    let kept = client
        .execute("return window.kept;", vec![])
        .await
        .expect("read");
    assert_eq!(kept, json!(42), "the second tab was not reloaded");
    assert_eq!(text(client, "[data-donors]").await, "1 donor");
    let link = history_link(data_dir, "ada@example.org").expect("a receipt with its link");
    client.goto(&link).await.expect("follow the history link");
    assert_eq!(text(client, "h1").await, "Your donations");
    assert!(text(client, "table").await.contains("$50.00"));
    photograph(client, "history", true).await;
}

async fn without_javascript(app: &TestApp, client: &Client, campaign: &str, data_dir: &Path) {
    let url = format!("{}/campaigns/{campaign}", app.address);
    client.goto(&url).await.expect("open the campaign");
    photograph(client, "campaign-nojs", false).await;
    fill_the_form(client, "nojs@example.org").await;
    client
        .find(Locator::Css("form.donate button[type=submit]"))
        .await
        .expect("donate button")
        .click()
        .await
        .expect("donate");
    until("the checkout page", || async {
        text(client, "h1").await == "Sandbox checkout"
    })
    .await;
    client
        .find(Locator::Css("button[value=succeed]"))
        .await
        .expect("pay button")
        .click()
        .await
        .expect("pay");
    until(
        "the thank-you page refreshing itself to the receipt",
        || async {
            text(client, "[data-detail]")
                .await
                .contains("receipt was sent")
        },
    )
    .await;
    photograph(client, "thanks-nojs", false).await;
    client.goto(&url).await.expect("the campaign again");
    assert_eq!(text(client, "[data-total]").await, "$100.00");
    let link = history_link(data_dir, "nojs@example.org").expect("a receipt with its link");
    client.goto(&link).await.expect("follow the history link");
    assert!(text(client, "table").await.contains("$50.00"));
    // A double click on "Donate": two submissions of one form, one donation.
    client.goto(&url).await.expect("the campaign again");
    fill_the_form(client, "twice@example.org").await;
    let button = client
        .find(Locator::Css("form.donate button[type=submit]"))
        .await
        .expect("donate button");
    let double_click = MouseActions::new("mouse".into())
        .then(PointerAction::MoveToElement {
            element: button,
            duration: None,
            x: 0.0,
            y: 0.0,
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        });
    client
        .perform_actions(double_click)
        .await
        .expect("double click");
    until("the checkout page", || async {
        text(client, "h1").await == "Sandbox checkout"
    })
    .await;
    let history = app
        .get(&format!(
            "/api/v1/donations/history?campaign_id={campaign}&donor_email=twice@example.org"
        ))
        .await;
    assert_eq!(
        history.json.as_array().map(Vec::len),
        Some(1),
        "a double click makes one donation: {:?}",
        history.json
    );
}

async fn a_donor_gives_in_a_real_browser_with_and_without_javascript(ctx: TestContext) {
    let app = ctx.spawn_app_with(|s| s.outbox.relay_enabled = true).await;
    let campaign = app.create_campaign("Clean water for Khulna", 2500.0).await;
    let driver = start_chromedriver();
    let profiles = tempfile::tempdir().expect("profiles");
    let client = browser(&driver, &profiles.path().join("js"), true).await;
    with_javascript(&app, &client, &campaign, &ctx.data_dir()).await;
    client.close().await.expect("close");
    let client = browser(&driver, &profiles.path().join("nojs"), false).await;
    without_javascript(&app, &client, &campaign, &ctx.data_dir()).await;
    client.close().await.expect("close");
}
