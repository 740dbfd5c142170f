//! How a request's context ends: the client going away (HTTP/1.1 and
//! HTTP/2, while the handler neither reads nor writes), the response
//! completing (only once a streaming body is done), and the tree the
//! context hangs in.

mod common;

use axum::extract::State;
use axum::routing::{any, get};
use bytes::Bytes;
use common::*;
use ctxkit::provenance::Origin;
use ctxkit::Context;
use ctxkit_http::{ContextLayer, Ended, PeerAddr, RequestContext};
use http_body_util::BodyExt;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// A root value, visible in every request.
struct Service(&'static str);

fn app(probe: Probe) -> axum::Router {
    axum::Router::new()
        .route(
            // Neither reads nor writes until its context ends.
            "/hang",
            get(
                |State(probe): State<Probe>, ctx: RequestContext| async move {
                    probe.started(&ctx);
                    ctx.done().await;
                    "ended"
                },
            ),
        )
        .route(
            // Streams one chunk per 20 ms, 10 chunks, unless ended first.
            "/stream",
            get(
                |State(probe): State<Probe>, ctx: RequestContext| async move {
                    probe.started(&ctx);
                    let chunks = futures::stream::unfold(0, |sent| async move {
                        if sent == 10 {
                            return None;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Some((
                            Ok::<_, std::io::Error>(Bytes::from_static(b"chunk\n")),
                            sent + 1,
                        ))
                    });
                    axum::body::Body::from_stream(chunks)
                },
            ),
        )
        .route(
            // Answers at once with no body.
            "/empty",
            get(
                |State(probe): State<Probe>, ctx: RequestContext| async move {
                    probe.started(&ctx);
                    http::StatusCode::NO_CONTENT
                },
            ),
        )
        .route("/echo", any(switch_to_echo))
        .route(
            // The echo's 101 with 16 MiB of headers: its write outlasts a
            // client that does not read.
            "/echo-slowly",
            get(
                |probe: State<Probe>, ctx: RequestContext, request: axum::extract::Request| async move {
                    let mut response = switch_to_echo(probe, ctx, request).await;
                    let padding = http::HeaderValue::from_str(&"a".repeat(16 << 20)).unwrap();
                    response.headers_mut().insert("x-padding", padding);
                    response
                },
            ),
        )
        .route(
            "/values",
            get(|ctx: RequestContext| async move {
                format!(
                    "{} {}",
                    ctx.value::<Service>().map_or("none", |s| s.0),
                    PeerAddr::of(&ctx).map_or("none".into(), |a| a.ip().to_string())
                )
            }),
        )
        // An HTTP/1.1 CONNECT's target has no path.
        .fallback(switch_to_echo)
        .with_state(probe)
}

async fn server() -> (TestServer, tokio::sync::mpsc::UnboundedReceiver<Seen>) {
    let (probe, seen) = Probe::new();
    let root = Context::background().with_value(Service("orders"));
    let server =
        TestServer::start(ContextLayer::new(root), Duration::from_secs(1), app(probe)).await;
    (server, seen)
}

#[tokio::test]
async fn closing_the_connection_mid_request_is_client_gone() {
    let (server, mut seen) = server().await;
    for protocol in BOTH {
        let mut client = Connected::open(server.addr, protocol).await;
        let response = client.get("/hang", &[]);
        let pending = tokio::spawn(response);
        let request = next_seen(&mut seen).await;
        assert!(!request.ctx.is_done());
        let closed = Instant::now();
        client.close();
        pending.abort();
        request.assert_both_saw(closed, Ended::ClientGone).await;
        assert_eq!(request.ctx.err(), Some(ctxkit::Error::Canceled));
        let who = request.ctx.provenance().expect("ended");
        assert_eq!(who.origin(), Origin::Integration("client gone"), "{who}");
    }
}

#[tokio::test]
async fn an_http2_stream_reset_is_client_gone_and_the_connection_lives_on() {
    let (server, mut seen) = server().await;
    let mut client = Connected::open(server.addr, Protocol::Http2).await;
    let response = tokio::spawn(client.get("/hang", &[]));
    let request = next_seen(&mut seen).await;
    let reset = Instant::now();
    response.abort(); // drops the response future: RST_STREAM(CANCEL)
    request.assert_both_saw(reset, Ended::ClientGone).await;
    let who = request.ctx.provenance().expect("ended");
    assert_eq!(who.origin(), Origin::Integration("client gone"), "{who}");
    // The same connection still serves.
    let (status, body) = client.fetch("/values", &[]).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "orders 127.0.0.1"));
}

#[tokio::test]
async fn a_client_that_sends_and_closes_without_reading_is_client_gone() {
    let (server, mut seen) = server().await;
    // HTTP/1.1: the request and an immediate close, nothing read.
    let mut raw = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    raw.write_all(b"GET /hang HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let closed = Instant::now();
    drop(raw);
    let request = next_seen(&mut seen).await;
    request.assert_both_saw(closed, Ended::ClientGone).await;

    // HTTP/2: the preface, a request, and the connection gone at once.
    let mut client = Connected::open(server.addr, Protocol::Http2).await;
    let response = client.get("/hang", &[]);
    let sent = tokio::spawn(response);
    tokio::task::yield_now().await;
    let closed = Instant::now();
    client.close();
    let request = next_seen(&mut seen).await;
    sent.abort();
    request.assert_both_saw(closed, Ended::ClientGone).await;
}

/// A `/stream` request that has started: its connection, what its handler
/// saw, and the response body, unread.
async fn streaming(
    server: &TestServer,
    protocol: Protocol,
    seen: &mut tokio::sync::mpsc::UnboundedReceiver<Seen>,
) -> (Connected, Seen, hyper::body::Incoming) {
    let mut client = Connected::open(server.addr, protocol).await;
    let response = client.get("/stream", &[]).await.unwrap();
    let request = next_seen(seen).await;
    (client, request, response.into_body())
}

#[tokio::test]
async fn a_streaming_body_keeps_the_context_live_until_its_last_byte() {
    let (server, mut seen) = server().await;
    for protocol in BOTH {
        let (_client, request, mut body) = streaming(&server, protocol, &mut seen).await;
        let mut chunks = 0;
        while let Some(frame) = body.frame().await {
            if frame
                .unwrap()
                .data_ref()
                .is_some_and(|data| !data.is_empty())
            {
                chunks += 1;
            }
            if chunks < 10 {
                // The handler returned long ago; the body is still going.
                assert!(
                    !request.ctx.is_done(),
                    "{protocol:?}: ended after {chunks} chunks"
                );
            }
        }
        assert_eq!(chunks, 10);
        let done = Instant::now();
        request.assert_both_saw(done, Ended::Completed).await;
    }
}

#[tokio::test]
async fn a_client_gone_mid_stream_is_client_gone() {
    let (server, mut seen) = server().await;
    for protocol in BOTH {
        let (client, request, mut body) = streaming(&server, protocol, &mut seen).await;
        body.frame().await.unwrap().unwrap();
        let closed = Instant::now();
        drop(body);
        client.close();
        request.assert_both_saw(closed, Ended::ClientGone).await;
    }
}

#[tokio::test]
async fn root_values_and_the_peer_address_are_in_every_request() {
    let (server, _seen) = server().await;
    for protocol in BOTH {
        let mut client = Connected::open(server.addr, protocol).await;
        let (status, body) = client.fetch("/values", &[]).await;
        assert_eq!((status.as_u16(), body.as_str()), (200, "orders 127.0.0.1"));
    }
}

#[tokio::test]
async fn the_layer_alone_serves_hyper_service_fn_and_tower_services() {
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceBuilder;

    let (root, _cancel) = Context::background().with_cancel();
    let (probe, mut seen) = Probe::new();
    let handler = tower::service_fn(move |request: http::Request<hyper::body::Incoming>| {
        let probe = probe.clone();
        async move {
            let ctx = RequestContext(RequestContext::of(&request).unwrap().clone());
            probe.started(&ctx);
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                Bytes::from_static(b"hello"),
            )))
        }
    });
    let service = ServiceBuilder::new()
        .layer(ContextLayer::new(root.clone()))
        .service(handler);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let io = hyper_util::rt::TokioIo::new(stream);
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, TowerToHyperService::new(service))
            .await;
    });
    let mut client = Connected::open(addr, Protocol::Http1).await;
    let (status, body) = client.fetch("/", &[]).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "hello"));
    let request = next_seen(&mut seen).await;
    request
        .assert_both_saw(Instant::now(), Ended::Completed)
        .await;
    client.close();
    assert_eq!(root.registrations(), 0, "the request left its root");
}

#[tokio::test]
async fn the_layer_inside_an_axum_router_serves_with_axum_serve() {
    let (root, _cancel) = Context::background().with_cancel();
    let (probe, mut seen) = Probe::new();
    let app = app(probe).layer(ContextLayer::new(root.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    for protocol in BOTH {
        let mut client = Connected::open(addr, protocol).await;
        let response = client.get("/stream", &[]).await.unwrap();
        let request = next_seen(&mut seen).await;
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), 10 * "chunk\n".len());
        request
            .assert_both_saw(Instant::now(), Ended::Completed)
            .await;

        let pending = tokio::spawn(client.get("/hang", &[]));
        let request = next_seen(&mut seen).await;
        let closed = Instant::now();
        pending.abort();
        client.close();
        request.assert_both_saw(closed, Ended::ClientGone).await;
    }
}

#[tokio::test]
async fn a_head_request_completes() {
    let (server, mut seen) = server().await;
    let mut client = Connected::open(server.addr, Protocol::Http1).await;
    let Conn::Http1(send) = &mut client.conn else {
        unreachable!()
    };
    let request = http::Request::head("/stream")
        .header("host", "127.0.0.1")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = send.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let request = next_seen(&mut seen).await;
    request
        .assert_both_saw(Instant::now(), Ended::Completed)
        .await;
}

#[tokio::test]
async fn an_answer_without_a_body_completes() {
    // hyper asks an empty body whether it is over and drops it unpolled.
    let (server, mut seen) = server().await;
    for protocol in BOTH {
        let mut client = Connected::open(server.addr, protocol).await;
        let (status, body) = client.fetch("/empty", &[]).await;
        assert_eq!((status.as_u16(), body.as_str()), (204, ""));
        let request = next_seen(&mut seen).await;
        request
            .assert_both_saw(Instant::now(), Ended::Completed)
            .await;
    }
    nothing_left_under(&server.server_ctx).await;
}

#[tokio::test]
async fn a_head_request_reset_before_its_answer_is_client_gone() {
    // A HEAD answer has no body to wait for; until the handler answers,
    // the request is as unfinished as any other.
    let (server, mut seen) = server().await;
    let mut client = Connected::open(server.addr, Protocol::Http2).await;
    let response = tokio::spawn(client.send(http::Method::HEAD, "/hang", &[]));
    let request = next_seen(&mut seen).await;
    let reset = Instant::now();
    response.abort(); // RST_STREAM(CANCEL); the connection lives on
    request.assert_both_saw(reset, Ended::ClientGone).await;
}

#[tokio::test]
async fn the_layer_serves_hyper_service_fn_directly() {
    let (root, _cancel) = Context::background().with_cancel();
    let (probe, mut seen) = Probe::new();
    let handler =
        hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let probe = probe.clone();
            async move {
                let ctx = RequestContext(RequestContext::of(&request).unwrap().clone());
                probe.started(&ctx);
                ctx.done().await;
                Ok::<_, std::convert::Infallible>(http::Response::new(
                    http_body_util::Empty::<Bytes>::new(),
                ))
            }
        });
    let service = tower::Layer::layer(&ContextLayer::new(root.clone()), handler);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let io = hyper_util::rt::TokioIo::new(stream);
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .await;
    });
    let mut client = Connected::open(addr, Protocol::Http1).await;
    let pending = tokio::spawn(client.get("/", &[]));
    let request = next_seen(&mut seen).await;
    let closed = Instant::now();
    pending.abort();
    client.close();
    request.assert_both_saw(closed, Ended::ClientGone).await;
}

#[tokio::test]
async fn an_upgraded_connection_keeps_its_request_context_until_it_is_dropped() {
    let (server, mut seen) = server().await;
    let mut stream = upgrade_to_echo(server.addr, "/echo").await;
    let request = next_seen(&mut seen).await;
    // The 101's empty body is long sent: the upgrade, not the body, is
    // the request's end.
    for word in [&b"ping"[..], b"pong"] {
        assert_eq!(echoed(&mut stream, word).await, word);
    }
    assert!(!request.ctx.is_done(), "{:?}", Ended::of(&request.ctx));
    let closed = Instant::now();
    drop(stream); // the handler's echo reads its end and drops the connection
    request.assert_both_saw(closed, Ended::Completed).await;
    nothing_left_under(&server.server_ctx).await;
}

#[tokio::test]
async fn a_client_gone_while_its_101_is_written_is_client_gone() {
    // hyper hands the connection over once the 101 is out: a client that
    // leaves while it is being written never had its upgrade.
    let (server, mut seen) = server().await;
    // A small receive window: what is in flight is the server's send
    // buffer (4 MiB at most by Linux's defaults) and a few KiB.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /echo-slowly HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let request = next_seen(&mut seen).await;
    // The answer has begun; the rest of its head waits for a reader.
    let first = tokio::time::timeout(PATIENCE, tokio::io::AsyncReadExt::read_u8(&mut stream))
        .await
        .expect("the answer begins")
        .unwrap();
    assert_eq!(first, b'H');
    // A reset, not a FIN. (Deprecated for the linger that blocks a drop;
    // a zero linger does not block.)
    #[allow(deprecated)]
    stream.set_linger(Some(Duration::ZERO)).unwrap();
    let closed = Instant::now();
    drop(stream);
    request.assert_both_saw(closed, Ended::ClientGone).await;
    nothing_left_under(&server.server_ctx).await;
}

#[tokio::test]
async fn a_connect_tunnel_keeps_its_request_context_until_it_is_dropped() {
    // An HTTP/1.1 CONNECT answered 200 hands the connection over, as a 101
    // does: the tunnel, not the (empty) body, is the request's end.
    let (server, mut seen) = server().await;
    let mut stream = connect_to_echo(server.addr).await;
    let request = next_seen(&mut seen).await;
    assert_eq!(echoed(&mut stream, b"ping").await, b"ping");
    assert!(!request.ctx.is_done(), "{:?}", Ended::of(&request.ctx));
    let closed = Instant::now();
    drop(stream);
    request.assert_both_saw(closed, Ended::Completed).await;
    nothing_left_under(&server.server_ctx).await;
}

#[tokio::test]
async fn an_http2_tunnel_outlives_its_answer_and_ends_with_its_connection() {
    // A WebSocket over HTTP/2 (RFC 8441): the stream is the tunnel, and
    // hyper drops the 200's body unsent. The stream's own end is not
    // visible from the connection, which carries other streams: the
    // request's context is left to the connection's.
    let (server, mut seen) = server().await;
    let mut client = Connected::open(server.addr, Protocol::Http2).await;
    client.fetch("/values", &[]).await; // the server's settings are in
    let mut tunnel = tunnel_to_echo(&mut client, "/echo").await;
    let request = next_seen(&mut seen).await;
    for word in [&b"ping"[..], b"pong"] {
        assert_eq!(echoed(&mut tunnel, word).await, word);
    }
    assert!(!request.ctx.is_done(), "{:?}", Ended::of(&request.ctx));
    // The connection serves other requests meanwhile.
    let (status, body) = client.fetch("/values", &[]).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "orders 127.0.0.1"));
    assert_eq!(echoed(&mut tunnel, b"again").await, b"again");
    // The client's tunnel holds its connection open: the connection
    // closes once both are gone, and with it the request's context, as
    // the client's leaving.
    drop(tunnel);
    let closed = Instant::now();
    client.close();
    request.assert_both_saw(closed, Ended::ClientGone).await;
    nothing_left_under(&server.server_ctx).await;
}

#[tokio::test]
async fn an_http2_tunnel_under_another_server_leaves_the_context_to_its_parent() {
    let (addr, cancel_root, mut seen) = under_axum_serve().await;
    let mut client = Connected::open(addr, Protocol::Http2).await;
    client.fetch("/values", &[]).await;
    let mut tunnel = tunnel_to_echo(&mut client, "/echo").await;
    let request = next_seen(&mut seen).await;
    assert_eq!(echoed(&mut tunnel, b"ping").await, b"ping");
    ends_with_its_parent(&request, cancel_root).await;
}

#[tokio::test]
async fn an_upgrade_under_another_server_leaves_the_context_to_its_parent() {
    // axum::serve upgrades too, but the layer cannot see the upgraded
    // connection's end there: the context is not ended at the 101.
    let (addr, cancel_root, mut seen) = under_axum_serve().await;
    let mut stream = upgrade_to_echo(addr, "/echo").await;
    let request = next_seen(&mut seen).await;
    assert_eq!(echoed(&mut stream, b"ping").await, b"ping");
    ends_with_its_parent(&request, cancel_root).await;
}

/// The app under `axum::serve`, with the layer alone: its address, its
/// root's handle, and the requests its handlers see.
async fn under_axum_serve() -> (
    std::net::SocketAddr,
    ctxkit::CancelHandle,
    tokio::sync::mpsc::UnboundedReceiver<Seen>,
) {
    let (root, cancel_root) = Context::background().with_cancel();
    let (probe, seen) = Probe::new();
    let app = app(probe).layer(ContextLayer::new(root));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, cancel_root, seen)
}

/// `request`'s context, live after its answer, ends with its parent's
/// end (the root's cancel), not with one of the layer's.
async fn ends_with_its_parent(request: &Seen, cancel_root: ctxkit::CancelHandle) {
    assert!(!request.ctx.is_done(), "{:?}", Ended::of(&request.ctx));
    cancel_root.cancel();
    assert_eq!(ended(&request.ctx).await, ctxkit::Error::Canceled);
    assert_eq!(
        Ended::of(&request.ctx),
        None,
        "its parent's end, not the layer's"
    );
}
