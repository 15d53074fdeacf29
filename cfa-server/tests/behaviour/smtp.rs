//! A small SMTP server for the tests: accepts messages, or refuses a given number of them (or
//! all) with a temporary error, as a real server under trouble would.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::Mutex;

/// A running sink.
pub struct SmtpSink {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The messages it accepted (the DATA section of each).
    pub messages: Arc<Mutex<Vec<String>>>,
}

impl SmtpSink {
    /// Starts a sink that refuses the first `refusals` messages (-1: all of them).
    pub async fn start(refusals: i64) -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let refusals = Arc::new(AtomicI64::new(refusals));
        let store = messages.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (store, refusals) = (store.clone(), refusals.clone());
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut lines = BufReader::new(read).lines();
                    if write.write_all(b"220 sink ESMTP\r\n").await.is_err() {
                        return;
                    }
                    while let Ok(Some(line)) = lines.next_line().await {
                        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                        let reply: &[u8] = match verb.as_str() {
                            "EHLO" => b"250-sink\r\n250 8BITMIME\r\n",
                            "HELO" | "RCPT" | "RSET" | "NOOP" => b"250 OK\r\n",
                            "MAIL" => {
                                let left = refusals.load(Ordering::SeqCst);
                                if left != 0 {
                                    if left > 0 {
                                        refusals.fetch_sub(1, Ordering::SeqCst);
                                    }
                                    b"451 4.3.0 try again later\r\n"
                                } else {
                                    b"250 OK\r\n"
                                }
                            }
                            "DATA" => {
                                if write.write_all(b"354 go ahead\r\n").await.is_err() {
                                    return;
                                }
                                let mut data = String::new();
                                while let Ok(Some(l)) = lines.next_line().await {
                                    if l == "." {
                                        break;
                                    }
                                    data.push_str(&l);
                                    data.push('\n');
                                }
                                store.lock().await.push(data);
                                b"250 queued\r\n"
                            }
                            "QUIT" => {
                                let _ = write.write_all(b"221 bye\r\n").await;
                                return;
                            }
                            _ => b"502 not implemented\r\n",
                        };
                        if write.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        SmtpSink { port, messages }
    }
}
