//! What the binary-level tests share: starting `cfa-server` as a user would, reading its log,
//! and plain HTTP calls.
#![allow(dead_code)] // each test binary uses its own part

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `cfa-server` run in `dir`, without the caller's `CFA_*`, `OTEL_*` and `RUST_LOG` settings.
pub fn cfa_server(dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cfa-server"));
    command.current_dir(dir).env_remove("RUST_LOG");
    for (name, _) in std::env::vars() {
        if name.starts_with("CFA_") || name.starts_with("OTEL_") {
            command.env_remove(name);
        }
    }
    command
}

/// Collects the server's log lines and finds the address it announces.
pub struct Running {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub log: Vec<String>,
}

impl Running {
    pub fn start(mut command: Command) -> Running {
        let mut child = command
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("cfa-server starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Waits for a log line containing `needle`.
    pub fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                self.log.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
        }
        panic!(
            "no log line containing {needle:?}; log so far:\n{}",
            self.log.join("\n")
        );
    }

    /// Starts `cfa-server run` on a free port with JSON logs (plus `env`); returns it and its
    /// base URL once it listens.
    pub fn serve(dir: &std::path::Path, env: &[(&str, &str)]) -> (Running, String) {
        let mut command = cfa_server(dir);
        command
            .arg("run")
            .env("CFA_LISTEN", "127.0.0.1:0")
            .env("CFA_LOG__FORMAT", "json");
        for (name, value) in env {
            command.env(name, value);
        }
        let mut server = Running::start(command);
        let line = server.wait_for("CareForAll is listening");
        let announced: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        let base = announced["listen"]
            .as_str()
            .expect("listen address")
            .to_string();
        (server, base)
    }

    /// Sends SIGTERM and waits (at most `bound`) for the process to exit.
    pub fn terminate(&mut self, bound: Duration) -> std::process::ExitStatus {
        let terminated = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(terminated.success());
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not stop within {bound:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn rest_of_log(&mut self) -> String {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.log.push(line);
        }
        self.log.join("\n")
    }
}

pub fn http(method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    http_with(method, url, body, &[])
}

/// An HTTP call with extra headers.
pub fn http_with(
    method: &str,
    url: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let mut request = client.request(method.parse().expect("method"), url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("the server answers");
        (
            response.status().as_u16(),
            response.text().await.expect("body"),
        )
    })
}
