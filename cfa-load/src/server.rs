//! The server cfa-load manages (`--server-cmd`): started behind a fault proxy for each backend
//! named in cfa-load's environment, killed and started again by the `server:kill` fault.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::Context;
use cfa_cli::client::Client;

use crate::proxy::FaultProxy;

/// The backends a proxy can sit in front of: fault target and the variable naming its URL.
const BACKENDS: [(&str, &str); 3] = [
    ("postgres", "CFA_DATABASE_URL"),
    ("rabbitmq", "CFA_AMQP_URL"),
    ("redis", "CFA_REDIS_URL"),
];

/// The server process, with the environment that puts its backends behind the proxies.
pub struct ManagedServer {
    cmd: String,
    /// Where its output goes.
    pub log: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl ManagedServer {
    /// Starts a proxy for each backend named in the environment and the server behind them;
    /// returns the server and the proxies by fault target.
    pub async fn launch(
        cmd: &str,
        log: PathBuf,
    ) -> anyhow::Result<(ManagedServer, Vec<(String, FaultProxy)>)> {
        let mut env = Vec::new();
        let mut proxies = Vec::new();
        for (target, var) in BACKENDS {
            let Ok(url) = std::env::var(var) else {
                continue;
            };
            let Some((_, upstream)) = through(&url, "") else {
                continue;
            };
            let proxy = FaultProxy::start("127.0.0.1:0", &upstream).await?;
            let Some((proxied, _)) = through(&url, &proxy.listen.to_string()) else {
                continue;
            };
            eprintln!(
                "cfa-load: {target} through the fault proxy on {}",
                proxy.listen
            );
            env.push((var.to_string(), proxied));
            proxies.push((target.to_string(), proxy));
        }
        eprintln!(
            "cfa-load: starting the server (`{cmd}`), its output in {}",
            log.display()
        );
        let mut server = ManagedServer {
            cmd: cmd.to_string(),
            log,
            env,
            child: None,
        };
        server.start()?;
        Ok((server, proxies))
    }

    /// Starts the process (again).
    pub fn start(&mut self) -> anyhow::Result<()> {
        // `exec`, so the process killed is the server itself, not a shell around it.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open {}", self.log.display()))?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("exec {}", self.cmd))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start the server with `{}`", self.cmd))?;
        self.child = Some(child);
        Ok(())
    }

    /// Whether the process started is still running (a server that could not bind its port
    /// exits at once, and the load would then measure some other server).
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL, like `kill -9`: no shutdown, claimed rows left to their leases.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process is down (killed and not started again).
    pub fn is_down(&self) -> bool {
        self.child.is_none()
    }
}

impl Drop for ManagedServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Rewrites `scheme://user@host:port/rest` to go through `proxy`; returns the upstream too.
pub fn through(url: &str, proxy: &str) -> Option<(String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let (userinfo, hostport) = authority
        .rsplit_once('@')
        .map_or(("", authority), |(u, h)| (u, h));
    let default_port = match scheme {
        "postgres" | "postgresql" => 5432,
        "amqp" => 5672,
        "redis" => 6379,
        _ => return None,
    };
    let upstream = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:{default_port}")
    };
    let at = if userinfo.is_empty() {
        String::new()
    } else {
        format!("{userinfo}@")
    };
    let slash = if path.is_empty() && !rest.contains('/') {
        ""
    } else {
        "/"
    };
    Some((format!("{scheme}://{at}{proxy}{slash}{path}"), upstream))
}

/// Waits until the server answers `/health`, at most `within`.
pub async fn wait_healthy(client: &Client, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if client.get("/health").await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::through;

    #[test]
    fn a_url_is_rewritten_through_the_proxy_keeping_user_and_path() {
        assert_eq!(
            through("postgres://postgres@127.0.0.1:5432/db", "127.0.0.1:9"),
            Some((
                "postgres://postgres@127.0.0.1:9/db".to_string(),
                "127.0.0.1:5432".to_string()
            ))
        );
        assert_eq!(
            through("amqp://guest:guest@localhost/%2f", "127.0.0.1:9"),
            Some((
                "amqp://guest:guest@127.0.0.1:9/%2f".to_string(),
                "localhost:5672".to_string()
            ))
        );
        assert_eq!(
            through("redis://127.0.0.1", "p:1").map(|x| x.1),
            Some("127.0.0.1:6379".into())
        );
    }
}
