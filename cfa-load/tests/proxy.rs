//! The fault proxy's behaviours, each on a local TCP echo pair.

use std::time::{Duration, Instant};

use cfa_load::proxy::{FaultProxy, Mode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An echo server; returns its address.
async fn echo() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buffer).await {
                    if n == 0 || stream.write_all(&buffer[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn round_trip(stream: &mut TcpStream, within: Duration) -> Result<Vec<u8>, String> {
    stream.write_all(b"ping").await.map_err(|e| e.to_string())?;
    let mut buffer = [0u8; 4];
    match tokio::time::timeout(within, stream.read_exact(&mut buffer)).await {
        Err(_) => Err("timed out".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(_)) => Ok(buffer.to_vec()),
    }
}

async fn proxy() -> FaultProxy {
    FaultProxy::start("127.0.0.1:0", &echo().await)
        .await
        .expect("proxy")
}

#[tokio::test]
async fn pass_forwards_both_ways() {
    let proxy = proxy().await;
    let mut stream = TcpStream::connect(proxy.listen).await.expect("connect");
    assert_eq!(
        round_trip(&mut stream, Duration::from_secs(2)).await,
        Ok(b"ping".to_vec())
    );
}

#[tokio::test]
async fn latency_delays_each_direction() {
    let proxy = proxy().await;
    proxy.set(Mode::Latency { ms: 150 });
    let mut stream = TcpStream::connect(proxy.listen).await.expect("connect");
    let start = Instant::now();
    assert_eq!(
        round_trip(&mut stream, Duration::from_secs(5)).await,
        Ok(b"ping".to_vec())
    );
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn reset_breaks_open_connections_and_new_ones() {
    let proxy = proxy().await;
    let mut open = TcpStream::connect(proxy.listen).await.expect("connect");
    assert!(round_trip(&mut open, Duration::from_secs(2)).await.is_ok());
    proxy.set(Mode::Reset);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        round_trip(&mut open, Duration::from_secs(2)).await.is_err(),
        "the open one breaks"
    );
    let mut fresh = TcpStream::connect(proxy.listen)
        .await
        .expect("accepted, then reset");
    let error = round_trip(&mut fresh, Duration::from_secs(2))
        .await
        .expect_err("reset");
    assert!(
        error.contains("reset") || error.contains("eof") || error.contains("broken"),
        "{error}"
    );
    proxy.set(Mode::Pass);
    let mut again = TcpStream::connect(proxy.listen).await.expect("connect");
    assert!(
        round_trip(&mut again, Duration::from_secs(2)).await.is_ok(),
        "recovers"
    );
}

#[tokio::test]
async fn blackhole_swallows_traffic_until_it_ends() {
    let proxy = proxy().await;
    proxy.set(Mode::Blackhole);
    let mut stream = TcpStream::connect(proxy.listen).await.expect("accepted");
    assert_eq!(
        round_trip(&mut stream, Duration::from_millis(500)).await,
        Err("timed out".into()),
        "no answer, no error: the peer just hangs"
    );
    proxy.set(Mode::Pass);
    let mut fresh = TcpStream::connect(proxy.listen).await.expect("connect");
    assert!(round_trip(&mut fresh, Duration::from_secs(2)).await.is_ok());
    // The frozen connection goes on where it stopped: the held ping's echo arrives.
    let mut held = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut held))
        .await
        .expect("the held ping is delivered once the freeze ends")
        .expect("read");
    assert_eq!(&held, b"ping");
}

#[tokio::test]
async fn an_outage_closes_everything_and_refuses_new_connections() {
    let proxy = proxy().await;
    let mut open = TcpStream::connect(proxy.listen).await.expect("connect");
    assert!(round_trip(&mut open, Duration::from_secs(2)).await.is_ok());
    proxy.set(Mode::Outage);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(round_trip(&mut open, Duration::from_secs(2)).await.is_err());
    let refused = TcpStream::connect(proxy.listen)
        .await
        .expect_err("nothing listens");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    proxy.set(Mode::Pass);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut back = TcpStream::connect(proxy.listen)
        .await
        .expect("listening again");
    assert!(round_trip(&mut back, Duration::from_secs(2)).await.is_ok());
    assert_eq!(Mode::parse("latency:50"), Ok(Mode::Latency { ms: 50 }));
    assert!(Mode::parse("flood").is_err());
}
