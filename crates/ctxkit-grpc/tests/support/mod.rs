//! What the integration tests share: servers on 127.0.0.1 whose handlers
//! report the contexts they were given, and clients through `ClientLayer`.

#![allow(dead_code)] // each test file uses its own part

use ctxkit::Context;
use ctxkit_grpc::demo::work_client::WorkClient;
use ctxkit_grpc::demo::work_server::{Work, WorkServer};
use ctxkit_grpc::demo::{WorkReply, WorkRequest};
use ctxkit_grpc::{ClientLayer, ClientService, ForwardHeaders, RequestExt, ServerLayer};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tonic::server::NamedService;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};
use tower_layer::Layer;

/// The bound for a cancellation to reach a handler's spawned work.
pub const PROMPT: Duration = Duration::from_millis(500);

/// `work_ms` at or above this: the handler ignores its context and sleeps
/// `work_ms - IGNORE_CONTEXT` milliseconds.
pub const IGNORE_CONTEXT: u32 = 100_000;

/// What a handler saw: its context, and when its spawned task and thread
/// saw that context end.
pub struct Observed {
    pub ctx: Context,
    pub remaining: Option<Duration>,
    pub task_saw_end: tokio::sync::oneshot::Receiver<Instant>,
    pub thread_saw_end: std::sync::mpsc::Receiver<Instant>,
}

impl Observed {
    pub fn value(&self, name: &str) -> Option<String> {
        let value = ForwardHeaders::of(&self.ctx)?.get(name)?;
        Some(value.to_str().unwrap().to_owned())
    }

    /// Waits (bounded) until both the spawned task and thread saw the end;
    /// returns the later of the two instants.
    pub async fn spawned_work_ended(self) -> Instant {
        let task = tokio::time::timeout(Duration::from_secs(5), self.task_saw_end)
            .await
            .expect("the handler's task never saw its context end")
            .unwrap();
        let thread = tokio::task::spawn_blocking(move || {
            self.thread_saw_end
                .recv_timeout(Duration::from_secs(5))
                .expect("the handler's thread never saw its context end")
        })
        .await
        .unwrap();
        task.max(thread)
    }
}

/// A `Work` handler that reports every call and works `work_ms` under its
/// context (see [`IGNORE_CONTEXT`]).
#[derive(Clone)]
pub struct Probe {
    calls: mpsc::UnboundedSender<Observed>,
}

#[tonic::async_trait]
impl Work for Probe {
    async fn r#do(&self, request: Request<WorkRequest>) -> Result<Response<WorkReply>, Status> {
        let ctx = request.context();
        let remaining = ctx.remaining();
        let (task_tx, task_saw_end) = tokio::sync::oneshot::channel();
        let (thread_tx, thread_saw_end) = std::sync::mpsc::channel();
        let task_ctx = ctx.clone();
        tokio::spawn(async move {
            task_ctx.done().await;
            let _ = task_tx.send(Instant::now());
        });
        let thread_ctx = ctx.clone();
        std::thread::spawn(move || {
            thread_ctx.wait();
            let _ = thread_tx.send(Instant::now());
        });
        let _ = self.calls.send(Observed {
            ctx: ctx.clone(),
            remaining,
            task_saw_end,
            thread_saw_end,
        });
        let work_ms = request.into_inner().work_ms;
        if work_ms >= IGNORE_CONTEXT {
            let ms = u64::from(work_ms - IGNORE_CONTEXT);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        } else {
            let work = tokio::time::sleep(Duration::from_millis(work_ms.into()));
            ctx.run(work)
                .await
                .map_err(ctxkit_grpc::IntoStatus::into_status)?;
        }
        Ok(Response::new(WorkReply {
            hop: "probe".into(),
            remaining_ms: remaining.map_or(-1, |r| r.as_millis() as i64),
            request_id: String::new(),
            next: None,
        }))
    }
}

/// A server on 127.0.0.1 serving `Work` (with [`Probe`]) and the test
/// stream service, under `layer`, counting the requests that reach it.
pub struct TestServer {
    pub address: SocketAddr,
    pub calls: mpsc::UnboundedReceiver<Observed>,
    /// The contexts of the tick streams served.
    pub streams: mpsc::UnboundedReceiver<Context>,
    pub requests: Arc<AtomicUsize>,
}

impl TestServer {
    pub async fn start(layer: ServerLayer) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (calls_tx, calls) = mpsc::unbounded_channel();
        let (streams_tx, streams) = mpsc::unbounded_channel();
        let requests = Arc::new(AtomicUsize::new(0));
        let server = Server::builder()
            .layer(Count(requests.clone()))
            .layer(layer)
            .add_service(WorkServer::new(Probe { calls: calls_tx }))
            .add_service(TicksService(streams_tx))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        tokio::spawn(server);
        TestServer {
            address,
            calls,
            streams,
            requests,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn client(&self) -> WorkClient<ClientService<Channel>> {
        WorkClient::new(ClientLayer::new().layer(channel(&self.url())))
    }

    /// The next call the handler saw (bounded wait).
    pub async fn next_call(&mut self) -> Observed {
        tokio::time::timeout(Duration::from_secs(5), self.calls.recv())
            .await
            .expect("no call reached the handler")
            .unwrap()
    }
}

pub fn channel(url: &str) -> Channel {
    Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect_lazy()
}

/// Counts the requests that reach the server.
#[derive(Clone)]
struct Count(Arc<AtomicUsize>);

impl<S> Layer<S> for Count {
    type Service = Counted<S>;
    fn layer(&self, inner: S) -> Counted<S> {
        Counted(inner, self.0.clone())
    }
}

#[derive(Clone)]
pub struct Counted<S>(S, Arc<AtomicUsize>);

impl<S, B> tower_service::Service<http::Request<B>> for Counted<S>
where
    S: tower_service::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> S::Future {
        self.1.fetch_add(1, Ordering::SeqCst);
        self.0.call(request)
    }
}

/// The path of the test's server-streaming method.
pub const TICKS_PATH: &str = "/ctxkit.test.Ticks/Ticks";

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type TickStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<WorkReply, Status>> + Send>>;

/// A server-streaming method, written as tonic's generated code would be:
/// one `WorkReply` every 20 ms under the call's context, until it ends.
#[derive(Clone)]
pub struct TicksService(mpsc::UnboundedSender<Context>);

impl NamedService for TicksService {
    const NAME: &'static str = "ctxkit.test.Ticks";
}

impl tower_service::Service<http::Request<tonic::body::Body>> for TicksService {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let streams = self.0.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.server_streaming(Ticks(streams), request).await)
        })
    }
}

struct Ticks(mpsc::UnboundedSender<Context>);

impl tonic::server::ServerStreamingService<WorkRequest> for Ticks {
    type Response = WorkReply;
    type ResponseStream = TickStream;
    type Future = BoxFuture<Result<Response<TickStream>, Status>>;

    fn call(&mut self, request: Request<WorkRequest>) -> Self::Future {
        let ctx = request.context();
        let _ = self.0.send(ctx.clone());
        Box::pin(async move {
            let (tx, rx) = mpsc::channel(1);
            tokio::spawn(async move {
                for tick in 0.. {
                    let reply = WorkReply {
                        hop: "ticks".into(),
                        remaining_ms: tick,
                        request_id: String::new(),
                        next: None,
                    };
                    if tx.send(Ok(reply)).await.is_err() {
                        break;
                    }
                    if ctx
                        .run(tokio::time::sleep(Duration::from_millis(20)))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            });
            let stream: TickStream = Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
            Ok(Response::new(stream))
        })
    }
}

/// Calls the tick stream through `ClientLayer`.
pub async fn ticks(url: &str, ctx: &Context) -> Result<tonic::Streaming<WorkReply>, Status> {
    let mut grpc = tonic::client::Grpc::new(ClientLayer::new().layer(channel(url)));
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::from_static(TICKS_PATH);
    let request = ctxkit_grpc::request(ctx, WorkRequest { work_ms: 0 });
    let response = grpc
        .server_streaming(request, path, tonic_prost::ProstCodec::default())
        .await?;
    Ok(response.into_inner())
}

/// A `Work/Do` call sent over a raw HTTP/2 connection, with exactly the
/// metadata given (no client-side timer, unlike tonic's channel): the
/// status the server answered with.
pub async fn raw_call(address: SocketAddr, metadata: &[(&str, &str)], work_ms: u32) -> Status {
    let (mut sender, _socket) = raw_connection(address).await;
    let response = sender
        .send_request(raw_request(address, metadata, work_ms))
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    if let Some(status) = Status::from_header_map(&parts.headers) {
        return status; // trailers-only
    }
    let collected = http_body_util::BodyExt::collect(body).await.unwrap();
    let trailers = collected.trailers().expect("trailers");
    Status::from_header_map(trailers).expect("a grpc-status")
}

/// An HTTP/2 connection to `address`, and a handle on its socket to close
/// it at will.
pub async fn raw_connection(
    address: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>>,
    std::net::TcpStream,
) {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let socket = stream.into_std().unwrap();
    let handle = socket.try_clone().unwrap();
    let stream = tokio::net::TcpStream::from_std(socket).unwrap();
    let io = hyper_util::rt::TokioIo::new(stream);
    let (sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    tokio::spawn(connection);
    (sender, handle)
}

/// A `Work/Do` request for a raw connection.
pub fn raw_request(
    address: SocketAddr,
    metadata: &[(&str, &str)],
    work_ms: u32,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let message = prost::Message::encode_to_vec(&WorkRequest { work_ms });
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    let mut request = http::Request::post(format!("http://{address}/ctxkit.demo.v1.Work/Do"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in metadata {
        request = request.header(*name, *value);
    }
    request
        .body(http_body_util::Full::new(bytes::Bytes::from(frame)))
        .unwrap()
}
