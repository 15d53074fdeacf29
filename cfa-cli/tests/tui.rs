//! `cfa-cli watch`: its views drawn into ratatui's TestBackend for known states, and the real
//! binary driven in a pseudo-terminal under tmux against a server that goes away and returns.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use cfa_cli::tui::app::{App, Backend, CampaignView, DonationRow, Event, Snapshot, WebhookRow};
use cfa_cli::tui::ui;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

fn known_state() -> App {
    let mut app = App::new("http://127.0.0.1:8000", None);
    let snapshot = |total: i64, pending: i64, elapsed: f64| Snapshot {
        at: "12:00:01".into(),
        elapsed,
        readiness: "ready".into(),
        backends: vec![
            Backend {
                name: "bus".into(),
                status: "up".into(),
                kind: "in-process".into(),
            },
            Backend {
                name: "cache".into(),
                status: "up".into(),
                kind: "in-process".into(),
            },
            Backend {
                name: "database".into(),
                status: "up".into(),
                kind: "postgres".into(),
            },
        ],
        campaigns: vec![
            CampaignView {
                id: "c1".into(),
                title: "Clean water".into(),
                currency: "USD".into(),
                raised: "375.5".into(),
                goal: "500.0".into(),
                ratio: 0.751,
                donations: 12,
                active: true,
            },
            CampaignView {
                id: "c2".into(),
                title: "School books".into(),
                currency: "EUR".into(),
                raised: "40.0".into(),
                goal: "200.0".into(),
                ratio: 0.2,
                donations: 3,
                active: false,
            },
        ],
        donations_total: total,
        outbox_pending: pending,
        outbox_oldest_age: Some(0.4),
        donations: vec![DonationRow {
            at: "12:00:00".into(),
            email: "a***@example.org".into(),
            amount: "12.34 USD".into(),
            status: "COMPLETED".into(),
        }],
        webhooks: vec![WebhookRow {
            at: "11:59:59".into(),
            intent: "pi_1".into(),
            status: "CAPTURED".into(),
            outcome: "processed".into(),
        }],
        webhook_outcomes: BTreeMap::from([
            ("processed".to_string(), 24),
            ("ignored".to_string(), 2),
        ]),
        dead_letters: vec![],
        notice: None,
    };
    app.update(Event::Data(Box::new(snapshot(10, 3, 0.0))));
    app.update(Event::Data(Box::new(snapshot(14, 1, 1.0))));
    app
}

fn draw(app: &App) -> String {
    let mut terminal = Terminal::new(TestBackend::new(100, 28)).expect("terminal");
    terminal.draw(|f| ui::draw(f, app)).expect("draw");
    terminal.backend().to_string()
}

#[test]
fn the_dashboard_shows_goals_rates_the_outbox_and_webhooks() {
    let screen = draw(&known_state());
    for expected in [
        "● connected",
        "Clean water",
        "375.5 / 500.0 USD (75%)",
        "School books (closed)",
        "Donations/s: 4",
        "Outbox pending: 1",
        "processed 24",
        "COMPLETED",
        "Dead letters: 0",
    ] {
        assert!(screen.contains(expected), "{expected:?} in\n{screen}");
    }
    insta::assert_snapshot!("connected", screen);
}

#[test]
fn a_disconnected_server_is_said_and_the_last_data_kept() {
    let mut app = known_state();
    app.update(Event::Disconnected("connection refused".into()));
    let screen = draw(&app);
    assert!(
        screen.contains("DISCONNECTED (connection refused); retrying"),
        "{screen}"
    );
    assert!(screen.contains("server unreachable"), "{screen}");
    assert!(
        screen.contains("Clean water"),
        "the last data stays: {screen}"
    );
    insta::assert_snapshot!("disconnected", screen);
}

#[test]
fn help_and_pause_are_drawn() {
    let mut app = known_state();
    app.update(Event::Key(crossterm::event::KeyEvent::new(
        crossterm::event::KeyCode::Char('p'),
        crossterm::event::KeyModifiers::NONE,
    )));
    app.update(Event::Key(crossterm::event::KeyEvent::new(
        crossterm::event::KeyCode::Char('?'),
        crossterm::event::KeyModifiers::NONE,
    )));
    let screen = draw(&app);
    assert!(screen.contains("PAUSED"), "{screen}");
    assert!(screen.contains("choose the campaign"), "{screen}");
    insta::assert_snapshot!("help", screen);
}

/// tmux on its own socket, so the test never touches the user's sessions.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux is installed (.ci/run installs it)")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "watch"]).stdout)
            .into_owned()
    }

    async fn wait_for(&self, text: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{text:?} never appeared on the screen:\n{screen}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

async fn start_server(
    dir: &std::path::Path,
    listen: &str,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let mut settings = cfa_server::config::Settings::default();
    settings.server.listen = listen.parse().expect("address");
    settings.server.data_dir = dir.to_path_buf();
    settings.server.shutdown_grace_seconds = 1;
    let app = cfa_server::startup::Application::build(settings)
        .await
        .expect("server");
    let url = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    (url, stop, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_runs_in_a_real_terminal_survives_the_server_going_away_and_quits_on_q() {
    // A machine with only Rust may lack tmux: skip, and say so; CI requires it.
    if Command::new("tmux").arg("-V").output().is_err() {
        assert!(
            std::env::var_os("CFA_TEST_REQUIRE_TMUX").is_none(),
            "tmux is required here (CFA_TEST_REQUIRE_TMUX is set) but is not installed"
        );
        eprintln!(
            "SKIPPED: the pseudo-terminal test of `cfa-cli watch` needs tmux (apt-get install tmux)"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let (url, stop, done) = start_server(dir.path(), "127.0.0.1:0").await;
    let client = reqwest::Client::new();
    let created = client
        .post(format!("{url}/api/v1/campaigns"))
        .json(&serde_json::json!({"title": "Terminal test", "goal_amount": 100}))
        .send()
        .await
        .expect("campaign");
    assert_eq!(created.status(), 201);
    let tmux = Tmux {
        socket: format!("cfa-watch-test-{}", std::process::id()),
    };
    let command = format!(
        "{} watch --server {url} --interval-ms 200",
        env!("CARGO_BIN_EXE_cfa-cli")
    );
    let started = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "watch",
        "-x",
        "110",
        "-y",
        "32",
        "-e",
        "TERM=xterm-256color",
        &command,
    ]);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let screen = tmux.wait_for("Terminal test").await;
    assert!(screen.contains("● connected"), "{screen}");
    assert!(screen.contains("0.0 / 100.0 USD"), "{screen}");

    // The server goes away: the dashboard says so and keeps running.
    let _ = stop.send(());
    let _ = done.await;
    tmux.wait_for("DISCONNECTED").await;
    // It comes back on the same address: the dashboard reconnects by itself.
    let listen = url.trim_start_matches("http://").to_string();
    let (_, stop, done) = start_server(dir.path(), &listen).await;
    tmux.wait_for("● connected").await;

    tmux.run(&["send-keys", "-t", "watch", "q"]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tmux.run(&["has-session", "-t", "watch"]).status.success() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "q did not quit:\n{}",
            tmux.screen()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop.send(());
    let _ = done.await;
}
