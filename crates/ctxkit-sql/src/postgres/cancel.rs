//! Cancel requests that stop the query they aim at and nothing after it.
//!
//! Three facts about PostgreSQL shape this file (see the module docs):
//! a cancel request is only *delivered* once the server closes the cancel
//! connection, a cancel that reaches an idle backend is ignored, and one that
//! is still in flight when the query ends hits the next query. So a cancel is
//! written, then we wait for the server's close (as libpq's `PQcancel`
//! does), and we repeat until the query has ended.

use super::tls;
use futures_util::FutureExt;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context as TaskContext, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres::{CancelToken, Client, Socket};

/// How long one cancel request may take, connect to close.
const CANCEL_ACK: Duration = Duration::from_secs(1);
/// How long a call keeps cancelling before it returns and leaves the rest
/// to a background task (a cancel that cannot reach the server).
const GIVE_UP: Duration = Duration::from_secs(2);
/// How long a background clean-up keeps cancelling a dropped query.
const CLEANUP_LIMIT: Duration = Duration::from_secs(60);

/// A stream whose shutdown waits for the peer to close: the cancel
/// connection's end is the server's acknowledgement that the backend has been
/// signalled.
///
/// Reads and writes pass straight through, so a TLS connector wraps it like
/// any socket: you meet it only as [`CancelStream`](super::CancelStream), in
/// the bounds of [`set_cancel_tls`](super::set_cancel_tls).
///
/// ```
/// use ctxkit_sql::postgres::AwaitClose;
/// use tokio::io::{AsyncRead, AsyncWrite};
/// use tokio::net::TcpStream;
///
/// // What TLS connectors (postgres-native-tls, tokio-postgres-rustls) ask of
/// // the stream they wrap.
/// fn tls_can_wrap<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>() {}
/// tls_can_wrap::<AwaitClose<TcpStream>>();
/// ```
pub struct AwaitClose<S> {
    inner: S,
    write_closed: bool,
}

impl<S> AwaitClose<S> {
    fn new(inner: S) -> Self {
        AwaitClose {
            inner,
            write_closed: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AwaitClose<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for AwaitClose<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        if !self.write_closed {
            ready!(Pin::new(&mut self.inner).poll_shutdown(cx))?;
            self.write_closed = true;
        }
        // The server sends nothing on a cancel connection: read until EOF.
        let mut scratch = [0u8; 64];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            ready!(Pin::new(&mut self.inner).poll_read(cx, &mut buf))?;
            if buf.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

/// The backend a client talks to, as its cancel key names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct BackendKey {
    process_id: i32,
    secret_key: i32,
}

/// What a call needs to cancel a client's query, and the fence that keeps
/// the next call waiting while a dropped query is being stopped.
pub(crate) struct Backend {
    token: CancelToken,
    /// The server address of the connection as the server reports it
    /// (`inet_server_addr()`), `None` over a Unix socket.
    addr: Option<SocketAddr>,
    hostname: String,
    fence: Fence,
}

static BACKENDS: Mutex<Option<HashMap<BackendKey, Arc<Backend>>>> = Mutex::new(None);
/// Entries are a few dozen bytes; past this many, entries without a pending
/// clean-up are forgotten (they are found again on next use).
const MAX_BACKENDS: usize = 4096;

impl Backend {
    /// The backend of `client`, learnt on first use (one extra round trip
    /// per connection), after any clean-up of a dropped query on it ended.
    pub(crate) async fn of(client: &Client) -> Result<Arc<Backend>, tokio_postgres::Error> {
        let token = client.cancel_token();
        let Some(key) = backend_key(&token) else {
            return Ok(Arc::new(Backend::fallback(token)));
        };
        if let Some(backend) = lookup(key) {
            return Ok(backend);
        }
        let backend = Arc::new(Backend {
            addr: server_addr(client).await?,
            hostname: hostname(&token),
            token,
            fence: Fence::default(),
        });
        Ok(remember(key, backend))
    }

    fn fallback(token: CancelToken) -> Backend {
        Backend {
            hostname: hostname(&token),
            token,
            addr: None,
            fence: Fence::default(),
        }
    }

    pub(crate) fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Sends one cancel request and waits until the server has delivered it
    /// (closed the connection), at most [`CANCEL_ACK`].
    async fn cancel_once(&self) {
        let attempt = async {
            match self.addr {
                Some(addr) => {
                    let tcp = TcpStream::connect(addr).await?;
                    tcp.set_nodelay(true)?;
                    tls::send(&self.token, AwaitClose::new(tcp), &self.hostname).await
                }
                // No address (a Unix socket): tokio-postgres dials what the
                // connection used, without waiting for the server's close.
                None => Ok(self.token.cancel_query(tokio_postgres::NoTls).await?),
            }
        };
        let _ = tokio::time::timeout(CANCEL_ACK, attempt).await;
    }

    /// Cancels until `query` has ended and returns its output; `None` when it
    /// is still running after [`GIVE_UP`] (the caller leaves it to a
    /// background clean-up).
    pub(crate) async fn cancel_until_done<F: Future + Unpin>(
        &self,
        query: &mut F,
    ) -> Option<F::Output> {
        self.cancel_until(query, GIVE_UP).await
    }

    async fn cancel_until<F: Future + Unpin>(
        &self,
        query: &mut F,
        limit: Duration,
    ) -> Option<F::Output> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            // A cancel that reached the backend between two messages of the
            // query is ignored by the server: send another until it ends.
            self.cancel_once().await;
            if let Ok(out) = tokio::time::timeout(pause, &mut *query).await {
                return Some(out);
            }
            if started.elapsed() >= limit {
                return None;
            }
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Stops a query whose call was dropped: `sentinel`, queued behind it on
    /// the same connection, ends only after it; the fence holds later calls
    /// back until no cancel of ours is in flight.
    pub(crate) fn clean_up_in_background<S>(self: Arc<Self>, sentinel: S, reset_after: bool)
    where
        S: Future<Output = bool> + Send + 'static,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.fence.pending.fetch_add(1, Ordering::AcqRel);
        runtime.spawn(async move {
            let mut sentinel = Box::pin(sentinel);
            let ok = self
                .cancel_until(&mut sentinel, CLEANUP_LIMIT)
                .await
                .unwrap_or(false);
            if reset_after && !ok {
                // Our cancel hit the sentinel `RESET`: the next call resets.
                self.fence.reset_needed.store(true, Ordering::Release);
            }
            self.fence.release();
        });
    }
}

/// Holds calls back while a dropped query of the same backend is stopped.
#[derive(Default)]
pub(crate) struct Fence {
    pending: AtomicUsize,
    reset_needed: AtomicBool,
    released: Notify,
}

impl Fence {
    /// Waits until no clean-up is pending; returns whether the session's
    /// `statement_timeout` must be reset first.
    pub(crate) async fn pass(&self) -> bool {
        loop {
            let released = self.released.notified();
            // Acquire: pairs with the release decrement, so the clean-up's
            // effects (reset flag) are seen.
            if self.pending.load(Ordering::Acquire) == 0 {
                return self.reset_needed.swap(false, Ordering::AcqRel);
            }
            released.await;
        }
    }

    fn release(&self) {
        self.pending.fetch_sub(1, Ordering::AcqRel);
        self.released.notify_waiters();
    }
}

fn lookup(key: BackendKey) -> Option<Arc<Backend>> {
    let map = BACKENDS.lock().unwrap_or_else(|p| p.into_inner());
    map.as_ref()?.get(&key).cloned()
}

fn remember(key: BackendKey, backend: Arc<Backend>) -> Arc<Backend> {
    let mut guard = BACKENDS.lock().unwrap_or_else(|p| p.into_inner());
    let map = guard.get_or_insert_with(HashMap::new);
    if map.len() >= MAX_BACKENDS {
        map.retain(|_, b| b.fence.pending.load(Ordering::Acquire) > 0);
    }
    map.entry(key).or_insert(backend).clone()
}

/// Asks the server where it is: the address the cancel connection dials.
async fn server_addr(client: &Client) -> Result<Option<SocketAddr>, tokio_postgres::Error> {
    let rows = client
        .simple_query("SELECT host(inet_server_addr()), inet_server_port()")
        .await?;
    let row = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => Some(row),
        _ => None,
    });
    let addr = row.and_then(|row| {
        let ip: IpAddr = row.get(0)?.parse().ok()?;
        let port: u16 = row.get(1)?.parse().ok()?;
        Some(SocketAddr::new(ip, port))
    });
    Ok(addr)
}

/// The cancel key of `token`, read from the request it would send: the
/// request is written into memory, nothing goes over the network.
fn backend_key(token: &CancelToken) -> Option<BackendKey> {
    let mut capture = Capture::default();
    token
        .cancel_query_raw(&mut capture, PassThrough)
        .now_or_never()?
        .ok()?;
    // The request: length 16, code 80877102, process id, secret key.
    let request = capture
        .written
        .get(capture.written.len().checked_sub(16)?..)?;
    let word =
        |i: usize| i32::from_be_bytes([request[i], request[i + 1], request[i + 2], request[i + 3]]);
    (word(0) == 16 && word(4) == 80_877_102).then(|| BackendKey {
        process_id: word(8),
        secret_key: word(12),
    })
}

/// The host name the connection was configured with (for TLS), read the
/// same way: tokio-postgres hands it to the connector before it dials.
fn hostname(token: &CancelToken) -> String {
    let mut probe = HostProbe::default();
    let _ = token.cancel_query(&mut probe).now_or_never();
    probe.seen.unwrap_or_default()
}

/// An in-memory peer that accepts a TLS request and records what is written.
#[derive(Default)]
struct Capture {
    written: Vec<u8>,
    answered: bool,
}

impl AsyncRead for Capture {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.answered {
            self.answered = true;
            buf.put_slice(b"S");
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Capture {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.written.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A "TLS" layer that is no layer: for [`Capture`] only, never a network.
struct PassThrough;

impl<S: AsyncRead + AsyncWrite + Unpin> TlsConnect<S> for PassThrough {
    type Stream = Plain<S>;
    type Error = io::Error;
    type Future = std::future::Ready<io::Result<Plain<S>>>;

    fn connect(self, stream: S) -> Self::Future {
        std::future::ready(Ok(Plain(stream)))
    }
}

struct Plain<S>(S);

impl<S: AsyncRead + Unpin> AsyncRead for Plain<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Plain<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for Plain<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

/// Records the host name tokio-postgres would connect a cancel to, then
/// refuses, so nothing is dialled.
#[derive(Default)]
struct HostProbe {
    seen: Option<String>,
}

impl MakeTlsConnect<Socket> for &mut HostProbe {
    type Stream = Plain<Socket>;
    type TlsConnect = PassThrough;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<PassThrough> {
        self.seen = Some(domain.to_owned());
        Err(io::Error::other("host name probe: not connecting"))
    }
}
