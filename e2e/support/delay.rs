//! A delay on the way to the apiserver: a TCP proxy on 127.0.0.1 that one client (a
//! replica) uses as its apiserver. [`Delay::hold`] makes what the client sends arrive late,
//! as a slow network would: every byte read from the client during a hold of `d` is
//! delivered `d` after it was read, so once the hold has ended, in order and spaced as it
//! was sent. The client's close of its side is delivered the same way, so a request it gave
//! up on, or sent just before it exited, still arrives whole, and the close only as long
//! after it as it came: a network does not take back what was sent. What the apiserver sends
//! is never held, so the client keeps seeing its watches and keeps deciding. TLS passes
//! through untouched (the serving certificate names 127.0.0.1).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

pub struct Delay {
    pub addr: SocketAddr,
    hold: Hold,
    accepting: tokio::task::JoinHandle<()>,
}

/// Until when sending is held, and by how long each byte read meanwhile is delayed.
#[derive(Clone, Default)]
struct Hold(Arc<Mutex<Option<(Instant, Duration)>>>);

impl Hold {
    /// When what is read now is to be delivered.
    fn due(&self) -> Instant {
        let now = Instant::now();
        match *self.0.lock().unwrap() {
            Some((until, delay)) if now < until => now + delay,
            _ => now,
        }
    }
}

impl Delay {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Delay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let hold = Hold::default();
        let accepting = tokio::spawn(accept(listener, upstream, hold.clone()));
        Delay {
            addr,
            hold,
            accepting,
        }
    }

    /// The proxy as a kubeconfig's `server`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// From now on, for `length`, what clients send reaches the apiserver `length` late.
    pub fn hold(&self, length: Duration) {
        *self.hold.0.lock().unwrap() = Some((Instant::now() + length, length));
    }
}

impl Drop for Delay {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

async fn accept(listener: TcpListener, upstream: SocketAddr, hold: Hold) {
    loop {
        if let Ok((client, _)) = listener.accept().await {
            tokio::spawn(forward(client, upstream, hold.clone()));
        }
    }
}

/// One connection, until both sides have closed it.
async fn forward(client: TcpStream, upstream: SocketAddr, hold: Hold) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (client_read, mut client_write) = client.into_split();
    let (mut server_read, server_write) = server.into_split();
    let (queue, queued) = mpsc::unbounded_channel();
    let back = async move {
        // Answers go back at once. Once the client is gone they are read and dropped, so
        // that the apiserver can still answer what reaches it late.
        if tokio::io::copy(&mut server_read, &mut client_write)
            .await
            .is_err()
        {
            let _ = tokio::io::copy(&mut server_read, &mut tokio::io::sink()).await;
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(
        read(client_read, queue, hold),
        deliver(queued, server_write),
        back
    );
}

/// Reads what the client sends, each chunk stamped with when it is due; an empty chunk is
/// the client's close (or its reset, when it exited with answers unread).
async fn read(
    mut client: OwnedReadHalf,
    queue: mpsc::UnboundedSender<(Instant, Vec<u8>)>,
    hold: Hold,
) {
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = client.read(&mut buf).await.unwrap_or(0);
        if queue.send((hold.due(), buf[..n].to_vec())).is_err() || n == 0 {
            return;
        }
    }
}

/// Writes each chunk to the apiserver when it is due, in the order read; closes the way to
/// the apiserver when the client's close is due.
async fn deliver(
    mut queued: mpsc::UnboundedReceiver<(Instant, Vec<u8>)>,
    mut server: OwnedWriteHalf,
) {
    while let Some((due, chunk)) = queued.recv().await {
        tokio::time::sleep_until(due.into()).await;
        if chunk.is_empty() || server.write_all(&chunk).await.is_err() {
            break;
        }
    }
    let _ = server.shutdown().await;
}
