//! A fault-injecting TCP proxy (tokio, in process): put it between the server and PostgreSQL,
//! RabbitMQ or Redis, then change its [`Mode`] on a timeline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does to traffic.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mode {
    /// Forwards everything.
    Pass,
    /// Forwards everything, each chunk delayed in both directions.
    Latency {
        /// The delay, milliseconds.
        ms: u64,
    },
    /// Resets every open connection, and every new one as soon as it is accepted.
    Reset,
    /// A freeze: accepts, but forwards nothing either way while it lasts (peers hang until
    /// their timeouts); what was sent meanwhile goes through when it ends, as over TCP.
    Blackhole,
    /// Nothing listens: new connections are refused, open ones closed.
    Outage,
}

impl Mode {
    /// Parses `pass`, `latency:200`, `reset`, `blackhole`, `outage`.
    pub fn parse(text: &str) -> Result<Mode, String> {
        match text.split_once(':') {
            Some(("latency", ms)) => ms
                .parse()
                .map(|ms| Mode::Latency { ms })
                .map_err(|_| format!("`{text}`: latency takes milliseconds, e.g. latency:200")),
            None => match text {
                "pass" => Ok(Mode::Pass),
                "reset" => Ok(Mode::Reset),
                "blackhole" => Ok(Mode::Blackhole),
                "outage" => Ok(Mode::Outage),
                "latency" => Ok(Mode::Latency { ms: 200 }),
                _ => Err(format!(
                    "`{text}` is not a fault; use pass, latency:MS, reset, blackhole or outage"
                )),
            },
            _ => Err(format!(
                "`{text}` is not a fault; use pass, latency:MS, reset, blackhole or outage"
            )),
        }
    }
}

/// A running proxy.
#[derive(Clone)]
pub struct FaultProxy {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// Where traffic goes.
    pub upstream: String,
    mode: Arc<watch::Sender<Mode>>,
}

impl FaultProxy {
    /// Starts a proxy on `listen` (port 0 for any) to `upstream` (`host:port`), passing traffic.
    pub async fn start(listen: &str, upstream: &str) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = watch::channel(Mode::Pass);
        let proxy = FaultProxy {
            listen: addr,
            upstream: upstream.to_string(),
            mode: Arc::new(tx),
        };
        let upstream = upstream.to_string();
        tokio::spawn(async move {
            let mut listener = Some(listener);
            let mut rx = rx;
            loop {
                let Some(open) = &listener else {
                    // An outage: the port is closed (connections are refused) until it ends.
                    if rx.changed().await.is_err() {
                        return;
                    }
                    if *rx.borrow() != Mode::Outage {
                        listener = TcpListener::bind(addr).await.ok();
                    }
                    continue;
                };
                tokio::select! {
                    accepted = open.accept() => {
                        let Ok((inbound, _)) = accepted else { return };
                        match *rx.borrow() {
                            Mode::Outage => drop(inbound),
                            Mode::Reset => reset(inbound),
                            _ => {
                                tokio::spawn(serve(inbound, upstream.clone(), rx.clone()));
                            }
                        }
                    }
                    changed = rx.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        if *rx.borrow() == Mode::Outage {
                            listener = None;
                        }
                    }
                }
            }
        });
        Ok(proxy)
    }

    /// Changes what the proxy does, for open connections too.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// What the proxy does now.
    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }
}

/// Closes with an RST rather than a FIN: the peer sees "connection reset".
fn reset(stream: TcpStream) {
    // Deprecated because a non-zero linger blocks the thread on drop; a zero one never does.
    #[allow(deprecated)]
    let _ = stream.set_linger(Some(Duration::ZERO));
    drop(stream);
}

async fn serve(inbound: TcpStream, upstream: String, mut mode: watch::Receiver<Mode>) {
    let Ok(outbound) = TcpStream::connect(&upstream).await else {
        reset(inbound);
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (mut in_read, mut in_write) = inbound.into_split();
    let (mut out_read, mut out_write) = outbound.into_split();
    let up = pump(&mut in_read, &mut out_write, mode.clone());
    let down = pump(&mut out_read, &mut in_write, mode.clone());
    let stop = async {
        loop {
            if mode.changed().await.is_err() {
                return;
            }
            if matches!(*mode.borrow(), Mode::Reset | Mode::Outage) {
                return;
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = stop => {}
    }
    if let (Ok(inbound), Ok(_)) = (in_read.reunite(in_write), out_read.reunite(out_write)) {
        reset(inbound);
    }
}

async fn pump(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut current = *mode.borrow();
        if current == Mode::Blackhole {
            // A freeze: the chunk is held, and as nothing more is read the sender's buffers
            // fill, as TCP holds data through a partition. It goes on when the freeze ends, so
            // a connection outlives a freeze shorter than its peers' timeouts, as a real one
            // does (dropping the bytes would leave both ends waiting for each other forever).
            let Ok(after) = mode.wait_for(|m| *m != Mode::Blackhole).await else {
                return;
            };
            current = *after;
        }
        match current {
            Mode::Reset | Mode::Outage => return,
            Mode::Latency { ms } => tokio::time::sleep(Duration::from_millis(ms)).await,
            _ => {}
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
