//! Features `tracing` and `opentelemetry` across both layers: an HTTP
//! client calls a ctxkit-http server whose handler calls a ctxkit-grpc
//! server; the trace id and the baggage reach the gRPC handler, and each
//! hop's span is the next one's parent.

use ctxkit::Context;
use ctxkit_grpc::demo::work_client::WorkClient;
use ctxkit_grpc::demo::work_server::{Work, WorkServer};
use ctxkit_grpc::demo::{WorkReply, WorkRequest};
use ctxkit_grpc::{ClientLayer, RequestExt, ServerLayer};
use ctxkit_http::client::RequestBuilderExt;
use ctxkit_http::{ContextLayer, RequestContext, Server};
use opentelemetry::baggage::BaggageExt;
use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::{Span as _, SpanContext, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::KeyValue;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::Endpoint;
use tonic::{Request, Response, Status};
use tower_layer::Layer;

/// What a hop saw of its caller: the remote parent span and the baggage.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    trace_id: String,
    parent_span_id: String,
    remote: bool,
    tenant: Option<String>,
}

impl Seen {
    fn of(cx: &opentelemetry::Context) -> Seen {
        let span = cx.span();
        let span = span.span_context();
        Seen {
            trace_id: span.trace_id().to_string(),
            parent_span_id: span.span_id().to_string(),
            remote: span.is_remote(),
            tenant: cx.baggage().get("tenant").map(|v| v.to_string()),
        }
    }

    /// `seen` as the WorkReply's `hop`, the way a hop reports it.
    fn encode(&self) -> String {
        let tenant = self.tenant.as_deref().unwrap_or("-");
        let remote = self.remote;
        format!(
            "{} {} {remote} {tenant}",
            self.trace_id, self.parent_span_id
        )
    }

    fn decode(text: &str) -> Seen {
        let fields: Vec<&str> = text.split(' ').collect();
        let [trace_id, parent_span_id, remote, tenant] = fields[..] else {
            panic!("not a report: {text}");
        };
        Seen {
            trace_id: trace_id.to_owned(),
            parent_span_id: parent_span_id.to_owned(),
            remote: remote == "true",
            tenant: (tenant != "-").then(|| tenant.to_owned()),
        }
    }
}

/// The gRPC hop: reports what it sees in its call's context.
struct Leaf {
    in_span: Arc<Mutex<Option<bool>>>,
}

#[tonic::async_trait]
impl Work for Leaf {
    async fn r#do(&self, request: Request<WorkRequest>) -> Result<Response<WorkReply>, Status> {
        let ctx = request.context();
        let cx = ctx
            .value::<opentelemetry::Context>()
            .expect("ServerLayer keeps the caller's OpenTelemetry context");
        let span = ctx
            .value::<tracing::Span>()
            .expect("a subscriber is installed");
        *self.in_span.lock().unwrap() = Some(tracing::Span::current().id() == span.id());
        Ok(Response::new(WorkReply {
            hop: Seen::of(cx).encode(),
            ..WorkReply::default()
        }))
    }
}

/// The HTTP hop's handler: starts a span of its own under its caller's and
/// calls the gRPC hop under it; answers with what it saw, its own span,
/// and the gRPC hop's report, one per line.
async fn edge(
    ctx: RequestContext,
    tracer: SdkTracer,
    grpc: WorkClient<ctxkit_grpc::ClientService<tonic::transport::Channel>>,
) -> String {
    let parent = ctx
        .value::<opentelemetry::Context>()
        .expect("ContextLayer keeps it");
    let seen = Seen::of(parent);
    let own = tracer.start_with_context("edge calls leaf", parent);
    let own_id = own.span_context().span_id().to_string();
    let call_ctx = ctx.with_value(parent.with_span(own));
    let reply = grpc
        .clone()
        .r#do(Request::new(WorkRequest { work_ms: 0 }).with_context(&call_ctx))
        .await
        .expect("the gRPC hop answers")
        .into_inner();
    format!("{}\n{own_id}\n{}", seen.encode(), reply.hop)
}

#[tokio::test]
async fn trace_context_and_baggage_cross_an_http_and_a_grpc_hop() {
    opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ]));
    // Spans only when a subscriber wants them; this runtime is
    // single-threaded, so every server task sees this default.
    let _default = tracing::subscriber::set_default(tracing_subscriber::registry());
    let provider = SdkTracerProvider::builder().build();
    let tracer = provider.tracer("tests");
    let (root, shutdown) = Context::background().with_cancel();

    // The gRPC hop.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = listener.local_addr().unwrap();
    let in_span = Arc::new(Mutex::new(None));
    let leaf = Leaf {
        in_span: in_span.clone(),
    };
    let grpc_server = tokio::spawn({
        let root = root.clone();
        async move {
            tonic::transport::Server::builder()
                .layer(ServerLayer::new(root.clone()))
                .add_service(WorkServer::new(leaf))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async move {
                        root.done().await;
                    },
                )
                .await
        }
    });

    // The HTTP hop, calling the gRPC one through ClientLayer.
    let channel = Endpoint::from_shared(format!("http://{grpc_addr}"))
        .unwrap()
        .connect_lazy();
    let grpc = WorkClient::new(ClientLayer::new().layer(channel));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/edge", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/edge",
        axum::routing::get({
            let tracer = tracer.clone();
            move |ctx: RequestContext| edge(ctx, tracer, grpc)
        }),
    );
    let http_server = tokio::spawn(
        Server::new(ContextLayer::new(root.clone()))
            .grace(Duration::from_secs(5))
            .serve(listener, app),
    );

    // The HTTP client: a span of its own, and baggage.
    let client_span = tracer.start("client");
    let client: SpanContext = client_span.span_context().clone();
    let cx = opentelemetry::Context::new()
        .with_span(client_span)
        .with_baggage([KeyValue::new("tenant", "acme")]);
    let ctx = Context::background().with_value(cx);
    let response = reqwest::Client::new()
        .get(&url)
        .send_ctx(&ctx)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    let lines: Vec<&str> = body.lines().collect();
    let [at_http, http_span_id, at_grpc] = lines[..] else {
        panic!("unexpected answer: {body}");
    };
    let (at_http, at_grpc) = (Seen::decode(at_http), Seen::decode(at_grpc));

    let trace_id = client.trace_id().to_string();
    let client_span_id = client.span_id().to_string();
    // The HTTP hop's parent is the client's span.
    assert_eq!(
        at_http,
        Seen {
            trace_id: trace_id.clone(),
            parent_span_id: client_span_id.clone(),
            remote: true,
            tenant: Some("acme".into()),
        }
    );
    // The gRPC hop's parent is the HTTP hop's own span: same trace, another
    // span id (not the raw traceparent the HTTP hop received), and the
    // baggage crossed both hops.
    assert_eq!(
        at_grpc,
        Seen {
            trace_id,
            parent_span_id: http_span_id.to_owned(),
            remote: true,
            tenant: Some("acme".into()),
        }
    );
    assert_ne!(http_span_id, client_span_id);
    assert_eq!(
        *in_span.lock().unwrap(),
        Some(true),
        "the gRPC handler runs in its call's span"
    );

    shutdown.cancel();
    http_server.await.unwrap().unwrap();
    grpc_server.await.unwrap().unwrap();
}
