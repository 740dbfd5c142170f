//! Side by side, in one run, on 127.0.0.1:
//!
//! 1. unary throughput at 64 concurrent calls, like for like: bare tonic
//!    against tonic with `ServerLayer` and `ClientLayer` on both ends, calls
//!    made under a context with a request id and no deadline; and tonic's
//!    own deadline (`grpc-timeout`, with its timers on both ends) against
//!    the layers' calls under a context with a deadline and a request id;
//!    and the time each layer pair adds per call;
//! 2. cancel propagation across three hops (edge → middle → leaf, each a
//!    tonic server calling the next under its call's context): from the
//!    caller's cancel to the leaf handler's spawned task seeing it.
//!
//! `cargo bench -p ctxkit-grpc --bench grpc` (options: `--seconds N` per
//! throughput round, `--rounds N`, `--cancels N`; `--only SIDE
//! [--sequential N]` runs one side alone, for profilers: `bare`,
//! `timeout`, `ctxkit`, `ctxkit-no-deadline`, or one layer without network,
//! `server-layer`, `client-layer`, `server-bare`, `client-bare`, each also
//! with `-no-deadline` appended; `--current-thread` runs it on tokio's
//! current-thread runtime, for exact instruction counts).

use ctxkit::Context;
use ctxkit_grpc::demo::work_client::WorkClient;
use ctxkit_grpc::demo::work_server::{Work, WorkServer};
use ctxkit_grpc::demo::{WorkReply, WorkRequest};
use ctxkit_grpc::{request, ClientLayer, ClientService, ForwardHeaders, RequestExt, ServerLayer};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};
use tower_layer::Layer;

const CONCURRENCY: usize = 64;

/// The `--only` sides that run one layer alone, without network.
const LAYER_SIDES: [&str; 4] = ["server-layer", "client-layer", "server-bare", "client-bare"];

struct Options {
    seconds: f64,
    rounds: usize,
    cancels: usize,
    /// `bare`, `timeout`, `ctxkit` or `ctxkit-no-deadline`: only that
    /// side's throughput rounds (for profiling one side, e.g. under `perf
    /// stat`); or one layer alone, without network (`server-layer` and so
    /// on, see `layer_only`).
    only: Option<String>,
    /// With `--only`: this many calls one at a time instead of the rounds
    /// (a fixed amount of work, for instruction counts under callgrind).
    sequential: Option<usize>,
    /// Tokio's current-thread runtime instead of the multi-thread one: with
    /// `--only SIDE --sequential N`, instruction counts without the idle
    /// workers' spinning, which varies by about ±1 k per call between runs.
    current_thread: bool,
}

fn options() -> Options {
    let mut options = Options {
        seconds: 3.0,
        rounds: 3,
        cancels: 300,
        only: None,
        sequential: None,
        current_thread: false,
    };
    let args: Vec<String> = std::env::args().collect();
    options.current_thread = args.iter().any(|arg| arg == "--current-thread");
    for pair in args.windows(2) {
        match pair[0].as_str() {
            "--seconds" => options.seconds = pair[1].parse().expect("--seconds N"),
            "--rounds" => options.rounds = pair[1].parse().expect("--rounds N"),
            "--cancels" => options.cancels = pair[1].parse().expect("--cancels N"),
            "--only" => options.only = Some(pair[1].clone()),
            "--sequential" => options.sequential = Some(pair[1].parse().expect("--sequential N")),
            _ => {}
        }
    }
    options
}

fn main() {
    let options = options();
    let runtime = if options.current_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
    .enable_all()
    .build()
    .unwrap();
    runtime.block_on(async {
        match options.only.as_deref() {
            Some("bare") => only(Setup::Bare, &options).await,
            Some("ctxkit") => only(Setup::Ctxkit, &options).await,
            Some("ctxkit-no-deadline") => only(Setup::CtxkitNoDeadline, &options).await,
            Some("timeout") => only(Setup::BareTimeout, &options).await,
            Some(side) if LAYER_SIDES.contains(&side.trim_end_matches("-no-deadline")) => {
                let layer = side.trim_end_matches("-no-deadline");
                let deadline = layer == side;
                layer_only(layer, deadline, options.sequential.unwrap_or(100_000))
            }
            Some(other) => panic!(
                "--only bare, timeout, ctxkit, ctxkit-no-deadline, server-layer, server-bare, \
                 client-layer or client-bare (the last four also with -no-deadline appended), \
                 not {other}"
            ),
            None => {
                layer_cost();
                throughput(&options).await;
                cancel_propagation(&options).await;
            }
        }
    });
}

/// Answers at once, as a hello-world handler; under `ServerLayer` it reads
/// its context's deadline and request id, as a real handler would.
#[derive(Clone)]
struct Echo;

#[tonic::async_trait]
impl Work for Echo {
    async fn r#do(&self, request: Request<WorkRequest>) -> Result<Response<WorkReply>, Status> {
        let ctx = request.context();
        let remaining_ms = ctx.remaining().map_or(-1, |left| left.as_millis() as i64);
        let has_id = ForwardHeaders::of(&ctx).is_some_and(|v| v.get("x-request-id").is_some());
        Ok(Response::new(WorkReply {
            hop: if has_id { "echo" } else { "" }.into(),
            remaining_ms,
            request_id: String::new(),
            next: None,
        }))
    }
}

async fn listen() -> (tokio::net::TcpListener, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    (listener, address)
}

fn incoming(listener: tokio::net::TcpListener) -> tokio_stream::wrappers::TcpListenerStream {
    tokio_stream::wrappers::TcpListenerStream::new(listener)
}

async fn channel(address: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[derive(Clone, Copy, PartialEq)]
enum Setup {
    /// tonic, no deadline: the request id as plain metadata.
    Bare,
    /// tonic's own deadline (`Request::set_timeout`, which sends
    /// `grpc-timeout` and runs tonic's timers on both ends), no context.
    BareTimeout,
    /// `ServerLayer` and `ClientLayer`, calls under a context with a
    /// deadline and a request id: against `BareTimeout`.
    Ctxkit,
    /// `ServerLayer` and `ClientLayer`, calls under a context with a
    /// request id and no deadline (so no `grpc-timeout` and no tonic
    /// timers): against `Bare`, like for like.
    CtxkitNoDeadline,
}

/// Every setup, in the order the throughput rounds alternate them.
const SETUPS: [Setup; 4] = [
    Setup::Bare,
    Setup::BareTimeout,
    Setup::Ctxkit,
    Setup::CtxkitNoDeadline,
];

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Bare => "bare tonic",
            Setup::BareTimeout => "tonic+timeout",
            Setup::Ctxkit => "ctxkit layers",
            Setup::CtxkitNoDeadline => "ctxkit, no deadline",
        }
    }
}

/// An `Echo` server set up as `setup` says, and a channel to it.
async fn serve(setup: Setup) -> (tokio::task::JoinHandle<()>, Channel) {
    let (listener, address) = listen().await;
    let server = match setup {
        Setup::Bare | Setup::BareTimeout => tokio::spawn(async move {
            let router = Server::builder().add_service(WorkServer::new(Echo));
            router
                .serve_with_incoming(incoming(listener))
                .await
                .unwrap();
        }),
        Setup::Ctxkit | Setup::CtxkitNoDeadline => tokio::spawn(async move {
            let mut builder = Server::builder().layer(ServerLayer::new(Context::background()));
            let router = builder.add_service(WorkServer::new(Echo));
            router
                .serve_with_incoming(incoming(listener))
                .await
                .unwrap();
        }),
    };
    (server, channel(address).await)
}

/// A client of both kinds on `channel`, calling under a context with a
/// request id, and a deadline unless `setup` says none (layered), or with
/// the same request id as plain metadata (bare).
struct Caller {
    setup: Setup,
    bare: WorkClient<Channel>,
    layered: WorkClient<ClientService<Channel>>,
    ctx: Context,
    _cancel: ctxkit::CancelHandle,
}

impl Caller {
    fn new(setup: Setup, channel: Channel) -> Caller {
        let (ctx, cancel) = match setup {
            Setup::CtxkitNoDeadline => Context::background().with_cancel(),
            _ => Context::background().with_timeout(Duration::from_secs(3600)),
        };
        Caller {
            setup,
            bare: WorkClient::new(channel.clone()),
            layered: WorkClient::new(ClientLayer::new().layer(channel)),
            ctx: ctx.with_value(ForwardHeaders::new().with("x-request-id", "bench-1")),
            _cancel: cancel,
        }
    }

    async fn call(&mut self) {
        let message = WorkRequest { work_ms: 0 };
        let reply = match self.setup {
            Setup::Bare | Setup::BareTimeout => {
                let mut call = Request::new(message);
                call.metadata_mut()
                    .insert("x-request-id", "bench-1".parse().unwrap());
                if self.setup == Setup::BareTimeout {
                    call.set_timeout(Duration::from_secs(3600));
                }
                self.bare.r#do(call).await
            }
            Setup::Ctxkit | Setup::CtxkitNoDeadline => {
                self.layered.r#do(request(&self.ctx, message)).await
            }
        };
        reply.expect("the call succeeds");
    }
}

/// CPU time this process has used (user + system), from `/proc/self/stat`
/// (clock ticks of 10 ms: over a round of tens of thousands of calls that
/// is well under a microsecond per call).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name may hold spaces: fields count from after its ')'.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// One throughput round: calls per second and CPU microseconds per call.
struct Rate {
    per_second: f64,
    cpu_micros: f64,
    /// Calls in the whole round, warm-up included.
    calls: u64,
}

/// Calls per second at `CONCURRENCY` concurrent calls for `seconds`.
async fn round(setup: Setup, seconds: f64) -> Rate {
    let (server, channel) = serve(setup).await;
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (stop, calls) = (stop.clone(), calls.clone());
        let channel = channel.clone();
        tasks.push(tokio::spawn(async move {
            let mut caller = Caller::new(setup, channel);
            while !stop.load(Ordering::Relaxed) {
                caller.call().await;
                calls.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Warm up, then count over the measured window.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start_calls = calls.load(Ordering::Relaxed);
    let (started, start_cpu) = (Instant::now(), cpu_time());
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let done = calls.load(Ordering::Relaxed) - start_calls;
    let (elapsed, cpu) = (started.elapsed().as_secs_f64(), cpu_time() - start_cpu);
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    server.abort();
    Rate {
        per_second: done as f64 / elapsed,
        cpu_micros: cpu.as_secs_f64() * 1e6 / done as f64,
        calls: calls.load(Ordering::Relaxed),
    }
}

/// One call at a time: the mean latency in microseconds.
async fn sequential(setup: Setup, calls: usize) -> f64 {
    let (server, channel) = serve(setup).await;
    let mut caller = Caller::new(setup, channel);
    let mut total = Duration::ZERO;
    for i in 0..calls + 200 {
        let started = Instant::now();
        caller.call().await;
        if i >= 200 {
            total += started.elapsed(); // the first 200 warm up
        }
    }
    server.abort();
    total.as_secs_f64() * 1e6 / calls as f64
}

/// Pending on its first poll, as a call waiting for the network is (so the
/// layers register their wake-ups as they do for real), ready on the next.
struct PendingOnce<T>(Option<T>, bool);

impl<T: Unpin> std::future::Future for PendingOnce<T> {
    type Output = T;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<T> {
        if !self.1 {
            self.1 = true;
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        std::task::Poll::Ready(self.0.take().expect("polled after completion"))
    }
}

/// Answers every request with a one-frame body, after one pending poll:
/// the service the layers wrap in `layer_cost`, with no network and no
/// tonic in the way.
#[derive(Clone)]
struct Instant200;

impl tower_service::Service<http::Request<()>> for Instant200 {
    type Response = http::Response<http_body_util::Full<bytes::Bytes>>;
    type Error = std::convert::Infallible;
    type Future = PendingOnce<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<()>) -> Self::Future {
        let body = http_body_util::Full::new(bytes::Bytes::from_static(b"reply"));
        PendingOnce(Some(Ok(http::Response::new(body))), false)
    }
}

/// Sends one request through `service` and reads its body to the end,
/// polling with a no-op waker (everything is ready by the second poll).
/// The response future is dropped before the body is read, as hyper does
/// on both ends (a layer's registration for the context's end, kept by a
/// future, is gone before the call ends).
fn exchange<S, B>(service: &mut S, request: http::Request<()>)
where
    S: tower_service::Service<http::Request<()>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    use std::future::Future;
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let response = {
        let mut future = std::pin::pin!(service.call(request));
        loop {
            if let std::task::Poll::Ready(response) = future.as_mut().poll(&mut cx) {
                break response;
            }
        }
    };
    let mut body = std::pin::pin!(response.unwrap().into_body());
    while let std::task::Poll::Ready(Some(frame)) = body.as_mut().poll_frame(&mut cx) {
        frame.unwrap();
    }
}

/// The request `ServerLayer` sees in `layer_cost`: `grpc-timeout` (with
/// `deadline`), a request id and the content type, as tonic's channel sends
/// them.
fn server_request(deadline: bool) -> http::Request<()> {
    let mut request = http::Request::new(());
    let headers = request.headers_mut();
    if deadline {
        headers.insert("grpc-timeout", http::HeaderValue::from_static("3599999m"));
    }
    headers.insert("x-request-id", http::HeaderValue::from_static("bench-1"));
    headers.insert(
        "content-type",
        http::HeaderValue::from_static("application/grpc"),
    );
    request
}

/// The request `ClientLayer` sees in `layer_cost`: under `ctx`, with the
/// metadata tonic's client has set by then (so that, as there, the layer's
/// first insert does not allocate the map).
fn client_request(ctx: &Context) -> http::Request<()> {
    let mut request = http::Request::new(());
    let headers = request.headers_mut();
    headers.insert("te", http::HeaderValue::from_static("trailers"));
    headers.insert(
        "content-type",
        http::HeaderValue::from_static("application/grpc"),
    );
    request.extensions_mut().insert(ctx.clone());
    request
}

/// A context with a request id, and a deadline an hour away if `deadline`:
/// what the client layer's calls are made under in `layer_cost`.
fn client_context(deadline: bool) -> (Context, ctxkit::CancelHandle) {
    let (ctx, cancel) = if deadline {
        Context::background().with_timeout(Duration::from_secs(3600))
    } else {
        Context::background().with_cancel()
    };
    let ctx = ctx.with_value(ForwardHeaders::new().with("x-request-id", "bench-1"));
    (ctx, cancel)
}

/// `calls` exchanges through one layer alone (`server-layer` or
/// `client-layer`) or through the service it wraps, unwrapped, with the
/// same requests (`server-bare`, `client-bare`): a fixed amount of work for
/// instruction counts under callgrind, without threads, network or tonic.
/// Without `deadline`, the calls carry a request id and no deadline.
fn layer_only(layer: &str, deadline: bool, calls: usize) {
    let (ctx, _cancel) = client_context(deadline);
    let client_request = || client_request(&ctx);
    match layer {
        "server-layer" => {
            let mut server = ServerLayer::new(Context::background()).layer(Instant200);
            for _ in 0..calls {
                exchange(&mut server, server_request(deadline));
            }
        }
        "server-bare" => {
            for _ in 0..calls {
                exchange(&mut Instant200, server_request(deadline));
            }
        }
        "client-bare" => {
            for _ in 0..calls {
                exchange(&mut Instant200, client_request());
            }
        }
        _ => {
            let mut client = ClientLayer::new().layer(Instant200);
            for _ in 0..calls {
                exchange(&mut client, client_request());
            }
        }
    }
    let kind = if deadline { "" } else { ", no deadline" };
    println!("{layer}{kind}: {calls} exchanges");
}

/// The layers' own work per call, without network or tonic: a request
/// with `grpc-timeout` and `x-request-id` through `ServerLayer`, and one
/// under a context with a deadline and a request id through `ClientLayer`,
/// each against the same service unwrapped; then the same without a
/// deadline (nanoseconds per call, best of five runs of 200,000).
fn layer_cost() {
    println!("## The layers' own work per call (no network), best of 5 x 200,000");
    for deadline in [true, false] {
        let (ctx, _cancel) = client_context(deadline);
        let client_request = || client_request(&ctx);
        let time = |run: &mut dyn FnMut()| {
            (0..5)
                .map(|_| {
                    let started = Instant::now();
                    for _ in 0..200_000 {
                        run();
                    }
                    started.elapsed().as_nanos() as f64 / 200_000.0
                })
                .fold(f64::INFINITY, f64::min)
        };
        let mut bare = Instant200;
        let mut server = ServerLayer::new(Context::background()).layer(Instant200);
        let mut client = ClientLayer::new().layer(Instant200);
        let server_bare = time(&mut || exchange(&mut bare, server_request(deadline)));
        let server_layered = time(&mut || exchange(&mut server, server_request(deadline)));
        let client_bare = time(&mut || exchange(&mut bare, client_request()));
        let client_layered = time(&mut || exchange(&mut client, client_request()));
        let kind = if deadline {
            "with a deadline"
        } else {
            "no deadline"
        };
        println!(
            "ServerLayer, {kind}: {server_layered:.0} ns against {server_bare:.0} ns bare: {:+.0} ns",
            server_layered - server_bare
        );
        println!(
            "ClientLayer, {kind}: {client_layered:.0} ns against {client_bare:.0} ns bare: {:+.0} ns",
            client_layered - client_bare
        );
        println!(
            "both ends, {kind}: {:+.2} µs per call",
            (server_layered - server_bare + client_layered - client_bare) / 1000.0
        );
    }
    println!();
}

/// Throughput rounds of one side only.
async fn only(setup: Setup, options: &Options) {
    if let Some(calls) = options.sequential {
        let mean = sequential(setup, calls).await;
        println!(
            "{}: {calls} calls one at a time, {mean:.1} µs each",
            setup.name()
        );
        return;
    }
    for _ in 0..options.rounds {
        let rate = round(setup, options.seconds).await;
        println!(
            "{}: {:.0} calls/s, {:.2} µs CPU per call, {} calls",
            setup.name(),
            rate.per_second,
            rate.cpu_micros,
            rate.calls
        );
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

async fn throughput(options: &Options) {
    println!("## Unary calls, {CONCURRENCY} concurrent, one HTTP/2 connection, 127.0.0.1");
    let mut results = SETUPS.map(|setup| (setup, Vec::new()));
    for _ in 0..options.rounds {
        // Alternate, so that drift on a shared machine hits both alike.
        for (setup, rates) in results.iter_mut() {
            rates.push(round(*setup, options.seconds).await);
        }
    }
    let mut medians = Vec::new();
    for (setup, rates) in &results {
        let shown: Vec<String> = rates
            .iter()
            .map(|r| format!("{:.0}/s {:.1}µs", r.per_second, r.cpu_micros))
            .collect();
        let rate = median(rates.iter().map(|r| r.per_second).collect());
        let cpu = median(rates.iter().map(|r| r.cpu_micros).collect());
        println!(
            "{:<19} median {rate:>8.0} calls/s, {cpu:>6.2} µs CPU per call   rounds: {}",
            setup.name(),
            shown.join(", ")
        );
        medians.push((rate, cpu));
    }
    // Like for like: no deadline on either side (the >= 95% target), then
    // a deadline on both, each propagating it its own way; and, as before,
    // the layers with a deadline against bare tonic without one.
    for (layered, against) in [(3, 0), (2, 1), (2, 0)] {
        let ((rate, cpu), (base_rate, base_cpu)) = (medians[layered], medians[against]);
        println!(
            "{} against {}: throughput {:.1}%, CPU per call (both ends, one process) {:+.2} µs",
            SETUPS[layered].name(),
            SETUPS[against].name(),
            100.0 * rate / base_rate,
            cpu - base_cpu
        );
    }
    let mut latencies = SETUPS.map(|setup| (setup, Vec::new()));
    for _ in 0..options.rounds {
        for (setup, means) in latencies.iter_mut() {
            means.push(sequential(*setup, 2000).await);
        }
    }
    let [bare, timeout, layered, layered_plain] = latencies.map(|(_, means)| median(means));
    println!(
        "one call at a time: mean latency {bare:.1} µs bare, {timeout:.1} µs tonic+timeout, \
         {layered:.1} µs layered, {layered_plain:.1} µs layered without a deadline"
    );
    println!();
}

/// A hop that calls `next` (if any) under its call's context, then waits
/// for that context to end; the leaf reports when its spawned task saw
/// the end.
#[derive(Clone)]
struct Relay {
    next: Option<WorkClient<ClientService<Channel>>>,
    arrived: Option<mpsc::UnboundedSender<Context>>,
}

#[tonic::async_trait]
impl Work for Relay {
    async fn r#do(&self, request: Request<WorkRequest>) -> Result<Response<WorkReply>, Status> {
        let ctx = request.context();
        if let Some(arrived) = &self.arrived {
            let _ = arrived.send(ctx.clone());
        }
        if let Some(next) = &self.next {
            let mut next = next.clone();
            next.r#do(request_under(&ctx)).await?;
        }
        let err = ctx.done().await;
        Err(ctxkit_grpc::IntoStatus::into_status(err))
    }
}

fn request_under(ctx: &Context) -> Request<WorkRequest> {
    request(ctx, WorkRequest { work_ms: 0 })
}

async fn hop(relay: Relay) -> SocketAddr {
    let (listener, address) = listen().await;
    tokio::spawn(
        Server::builder()
            .layer(ServerLayer::new(Context::background()))
            .add_service(WorkServer::new(relay))
            .serve_with_incoming(incoming(listener)),
    );
    address
}

async fn cancel_propagation(options: &Options) {
    println!("## Cancel propagation across three hops (caller → edge → middle → leaf), 127.0.0.1");
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let leaf = hop(Relay {
        next: None,
        arrived: Some(arrived_tx),
    })
    .await;
    let client =
        |address| async move { WorkClient::new(ClientLayer::new().layer(channel(address).await)) };
    let middle = hop(Relay {
        next: Some(client(leaf).await),
        arrived: None,
    })
    .await;
    let edge = hop(Relay {
        next: Some(client(middle).await),
        arrived: None,
    })
    .await;
    let caller = client(edge).await;
    let mut latencies = Vec::with_capacity(options.cancels);
    for _ in 0..options.cancels + 20 {
        let (ctx, cancel) = Context::background().with_cancel();
        let mut caller = caller.clone();
        let call = tokio::spawn(async move { caller.r#do(request_under(&ctx)).await });
        let leaf_ctx = arrived.recv().await.unwrap();
        let (seen_tx, seen) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            leaf_ctx.done().await;
            let _ = seen_tx.send(Instant::now());
        });
        tokio::task::yield_now().await;
        let cancelled = Instant::now();
        cancel.cancel();
        let seen = seen.await.unwrap();
        let status = call.await.unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::Cancelled);
        latencies.push(seen - cancelled);
    }
    let mut latencies: Vec<Duration> = latencies.split_off(20); // warm-up dropped
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "{} cancels: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        at(0.50),
        at(0.90),
        at(0.99),
        latencies[latencies.len() - 1]
    );
}
