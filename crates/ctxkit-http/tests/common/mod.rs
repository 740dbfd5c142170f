//! Real servers on 127.0.0.1 and the clients that talk to them, over
//! HTTP/1.1 and HTTP/2 (prior knowledge).
#![allow(dead_code)] // each test file uses its own part

use bytes::Bytes;
use ctxkit::{CancelHandle, Context};
use ctxkit_http::{ContextLayer, Ended, RequestContext, Server, ShutdownReport};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The bound the issue sets for a spawned thread or task to see a
/// request's end.
pub const PROMPT: Duration = Duration::from_millis(500);
/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

pub const BOTH: [Protocol; 2] = [Protocol::Http1, Protocol::Http2];

/// A running `Server`, its root's cancel handle, and the serve task.
pub struct TestServer {
    pub addr: SocketAddr,
    pub server_ctx: Context,
    root_cancel: CancelHandle,
    task: JoinHandle<std::io::Result<ShutdownReport>>,
}

impl TestServer {
    pub async fn start(layer: ContextLayer, grace: Duration, app: axum::Router) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Server::new(layer)
            .grace(grace)
            .drain_timeout(Duration::from_secs(2));
        let server_ctx = server.context();
        let task = tokio::spawn(server.serve(listener, app));
        TestServer {
            addr,
            server_ctx,
            root_cancel: noop_handle(),
            task,
        }
    }

    /// Starts a server under a root this value can cancel.
    pub async fn start_cancellable(
        configure: impl FnOnce(ContextLayer) -> ContextLayer,
        grace: Duration,
        app: axum::Router,
    ) -> TestServer {
        let (root, root_cancel) = Context::background().with_cancel();
        let mut server = TestServer::start(configure(ContextLayer::new(root)), grace, app).await;
        server.root_cancel = root_cancel;
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Ends the root and waits for the shutdown report.
    pub async fn shut_down(self) -> ShutdownReport {
        self.root_cancel.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the server shuts down in bounded time")
            .unwrap()
            .unwrap()
    }
}

fn noop_handle() -> CancelHandle {
    let (_ctx, handle) = Context::background().with_cancel();
    handle
}

/// When a watcher saw its context end, and why it ended.
pub type SawEnd = Arc<Mutex<Option<(Instant, Option<Ended>)>>>;

/// What a handler saw of its request: its context, and when a thread and
/// a task spawned under it saw it end.
#[derive(Clone)]
pub struct Seen {
    pub ctx: Context,
    pub thread_saw: SawEnd,
    pub task_saw: SawEnd,
    threads_done: Arc<(Mutex<bool>, std::sync::Condvar)>,
    task_done: Arc<tokio::sync::Notify>,
}

impl Seen {
    /// Spawns a thread that blocks on `ctx` and a tokio task that awaits it.
    pub fn watch(ctx: &Context) -> Seen {
        let seen = Seen {
            ctx: ctx.clone(),
            thread_saw: Arc::default(),
            task_saw: Arc::default(),
            threads_done: Arc::default(),
            task_done: Arc::default(),
        };
        let (ctx1, saw, done) = (
            ctx.clone(),
            seen.thread_saw.clone(),
            seen.threads_done.clone(),
        );
        std::thread::spawn(move || {
            ctx1.wait();
            *saw.lock().unwrap() = Some((Instant::now(), Ended::of(&ctx1)));
            *done.0.lock().unwrap() = true;
            done.1.notify_all();
        });
        let (ctx2, saw, done) = (ctx.clone(), seen.task_saw.clone(), seen.task_done.clone());
        tokio::spawn(async move {
            ctx2.done().await;
            *saw.lock().unwrap() = Some((Instant::now(), Ended::of(&ctx2)));
            done.notify_one();
        });
        seen
    }

    /// Waits (bounded) until both the thread and the task saw the end, and
    /// asserts that both did so within `PROMPT` of `since` with `expected`.
    pub async fn assert_both_saw(&self, since: Instant, expected: Ended) {
        tokio::time::timeout(PATIENCE, self.task_done.notified())
            .await
            .expect("the task sees the end");
        let threads_done = self.threads_done.clone();
        tokio::task::spawn_blocking(move || {
            let (lock, cond) = &*threads_done;
            let guard = lock.lock().unwrap();
            let (_guard, timeout) = cond
                .wait_timeout_while(guard, PATIENCE, |done| !*done)
                .unwrap();
            assert!(!timeout.timed_out(), "the thread sees the end");
        })
        .await
        .unwrap();
        for (who, saw) in [("thread", &self.thread_saw), ("task", &self.task_saw)] {
            let (at, ended) = saw.lock().unwrap().expect("seen");
            assert_eq!(ended, Some(expected), "{who} saw the wrong cause");
            let late = at.saturating_duration_since(since);
            assert!(
                late <= PROMPT,
                "{who} saw {expected:?} {late:?} after it happened"
            );
        }
    }
}

/// Handlers report each request they start here.
#[derive(Clone)]
pub struct Probe {
    tx: mpsc::UnboundedSender<Seen>,
}

impl Probe {
    pub fn new() -> (Probe, mpsc::UnboundedReceiver<Seen>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Probe { tx }, rx)
    }

    /// Reports a request and starts watching its context.
    pub fn started(&self, ctx: &RequestContext) -> Seen {
        let seen = Seen::watch(ctx);
        let _ = self.tx.send(seen.clone());
        seen
    }
}

pub async fn next_seen(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("the handler starts")
        .expect("probe open")
}

/// Waits (bounded) for `ctx` to end.
pub async fn ended(ctx: &Context) -> ctxkit::Error {
    tokio::time::timeout(PATIENCE, ctx.done())
        .await
        .expect("the request's context ends")
}

/// A hyper client connection to `addr`, of either protocol.
pub enum Conn {
    Http1(http1::SendRequest<Empty<Bytes>>),
    Http2(http2::SendRequest<Empty<Bytes>>),
}

pub struct Connected {
    pub conn: Conn,
    pub driver: JoinHandle<()>,
}

impl Connected {
    pub async fn open(addr: SocketAddr, protocol: Protocol) -> Connected {
        let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
        match protocol {
            Protocol::Http1 => {
                let (send, conn) = http1::handshake(io).await.unwrap();
                let driver = tokio::spawn(async move {
                    let _ = conn.await;
                });
                Connected {
                    conn: Conn::Http1(send),
                    driver,
                }
            }
            Protocol::Http2 => {
                let (send, conn) = http2::handshake(TokioExecutor::new(), io).await.unwrap();
                let driver = tokio::spawn(async move {
                    let _ = conn.await;
                });
                Connected {
                    conn: Conn::Http2(send),
                    driver,
                }
            }
        }
    }

    /// Sends `GET path` with `headers`; resolves to the response head.
    pub fn get(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> impl std::future::Future<Output = hyper::Result<http::Response<hyper::body::Incoming>>>
           + Send
           + 'static {
        self.send(http::Method::GET, path, headers)
    }

    /// Sends `method path` with `headers`; resolves to the response head.
    pub fn send(
        &mut self,
        method: http::Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> impl std::future::Future<Output = hyper::Result<http::Response<hyper::body::Incoming>>>
           + Send
           + 'static {
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1")
            .body(Empty::new())
            .unwrap();
        for &(name, value) in headers {
            request.headers_mut().insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        let future: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>> =
            match &mut self.conn {
                Conn::Http1(send) => Box::pin(send.send_request(request)),
                Conn::Http2(send) => {
                    *request.version_mut() = http::Version::HTTP_2;
                    *request.uri_mut() = format!("http://127.0.0.1{path}").parse().unwrap();
                    Box::pin(send.send_request(request))
                }
            };
        future
    }

    /// `GET path`, read in full: (status, body).
    pub async fn fetch(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (http::StatusCode, String) {
        if let Conn::Http1(send) = &mut self.conn {
            send.ready().await.unwrap();
        }
        let response = self.get(path, headers).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Closes the TCP connection at once.
    pub fn close(self) {
        self.driver.abort();
    }
}

/// Waits (bounded) until nothing is registered under `ctx`: every
/// connection and request under it has ended or been let go.
pub async fn nothing_left_under(ctx: &Context) {
    let deadline = Instant::now() + PATIENCE;
    while ctx.registrations() != 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        ctx.registrations(),
        0,
        "connections or requests left registered"
    );
}

/// A handler that switches the connection to an echo of whatever the
/// client sends, in a task under the request's context: it stops when the
/// client closes or the context ends, and then drops the connection.
/// Asked to upgrade, it answers `101 Switching Protocols`; asked to
/// `CONNECT` (an HTTP/1.1 tunnel, or an HTTP/2 stream as a WebSocket over
/// HTTP/2 opens one), `200 OK`.
pub async fn switch_to_echo(
    axum::extract::State(probe): axum::extract::State<Probe>,
    ctx: RequestContext,
    mut request: axum::extract::Request,
) -> http::Response<axum::body::Body> {
    probe.started(&ctx);
    let upgrade = hyper::upgrade::on(&mut request);
    let ctx = ctx.0;
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let mut io = TokioIo::new(upgraded);
        let mut buf = [0; 64];
        loop {
            let read = tokio::select! {
                _ = ctx.done() => return,
                read = io.read(&mut buf) => read,
            };
            match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if io.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    if request.method() == http::Method::CONNECT {
        return http::Response::new(axum::body::Body::empty());
    }
    http::Response::builder()
        .status(http::StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::CONNECTION, "upgrade")
        .header(http::header::UPGRADE, "echo")
        .body(axum::body::Body::empty())
        .unwrap()
}

/// Asks `path` on `addr` to switch to the echo protocol over HTTP/1.1:
/// the connection once the `101`'s head has been read.
pub async fn upgrade_to_echo(addr: SocketAddr, path: &str) -> TcpStream {
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n"
    );
    handed_over(addr, &request, "HTTP/1.1 101").await
}

/// Opens an HTTP/1.1 `CONNECT` tunnel through `addr` (to the echo: the
/// server's fallback): the connection once the `200`'s head has been read.
pub async fn connect_to_echo(addr: SocketAddr) -> TcpStream {
    let request = "CONNECT 127.0.0.1:9 HTTP/1.1\r\nhost: 127.0.0.1:9\r\n\r\n";
    handed_over(addr, request, "HTTP/1.1 200").await
}

/// Sends `request` to `addr` and reads the answer's head, which must
/// start with `status_line`: the connection, handed over to the handler.
async fn handed_over(addr: SocketAddr, request: &str, status_line: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    // Byte by byte, so as not to read past the head.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = tokio::time::timeout(PATIENCE, stream.read_u8())
            .await
            .expect("the server answers")
            .expect("the connection stays open until the answer");
        head.push(byte);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with(status_line), "{head}");
    stream
}

/// Opens a tunnel to the echo at `path` over HTTP/2 with an extended
/// `CONNECT` (RFC 8441, protocol `echo`, as a WebSocket over HTTP/2
/// does): the stream, once the `200` came. The server's settings must
/// have arrived (any answer on the connection before this one).
pub async fn tunnel_to_echo(
    client: &mut Connected,
    path: &str,
) -> TokioIo<hyper::upgrade::Upgraded> {
    let Conn::Http2(send) = &mut client.conn else {
        panic!("extended CONNECT is HTTP/2's");
    };
    let mut request = http::Request::builder()
        .method(http::Method::CONNECT)
        .version(http::Version::HTTP_2)
        .uri(format!("http://127.0.0.1{path}"))
        .body(Empty::new())
        .unwrap();
    request
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("echo"));
    let response = tokio::time::timeout(PATIENCE, send.send_request(request))
        .await
        .expect("the server answers")
        .expect("the server enables extended CONNECT");
    assert_eq!(response.status(), http::StatusCode::OK);
    TokioIo::new(hyper::upgrade::on(response).await.unwrap())
}

/// Sends `word` on an echo connection and reads back as many bytes.
pub async fn echoed(stream: &mut (impl AsyncRead + AsyncWrite + Unpin), word: &[u8]) -> Vec<u8> {
    stream.write_all(word).await.unwrap();
    let mut back = vec![0; word.len()];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut back))
        .await
        .expect("the echo answers")
        .expect("the upgraded connection is open");
    back
}
