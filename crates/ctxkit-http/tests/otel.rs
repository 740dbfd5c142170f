//! Features `tracing` and `opentelemetry`: the request's span and its
//! OpenTelemetry context, kept in the request's context by `ContextLayer`,
//! and the OpenTelemetry context sent on by the client helpers.

use ctxkit::Context;
use ctxkit_http::client::{PropagateLayer, RequestBuilderExt};
use ctxkit_http::{ContextLayer, ForwardHeaders, RequestContext, Server};
use opentelemetry::baggage::BaggageExt;
use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::{Span as _, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::KeyValue;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::Duration;
use tower::{Layer as _, ServiceExt};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::layer::{Context as LayerContext, Layer, SubscriberExt};

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

fn w3c() -> TextMapCompositePropagator {
    TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ])
}

/// Every test of this file that needs a global propagator wants this one.
fn global_w3c() {
    static SET: Once = Once::new();
    SET.call_once(|| opentelemetry::global::set_text_map_propagator(w3c()));
}

/// Installs the one subscriber of this test binary, at the start of every
/// test (so no span is made before it exists); it records the spans of the
/// threads that ask for it ([`record_spans_here`]) and disables every other.
///
/// Thread-local defaults (`set_default`) would race here: tests run in
/// parallel and a callsite's interest is global.
fn subscriber() -> Recorder {
    static RECORDER: OnceLock<Recorder> = OnceLock::new();
    RECORDER
        .get_or_init(|| {
            let recorder = Recorder::default();
            let subscriber = tracing_subscriber::registry().with(recorder.clone());
            tracing::subscriber::set_global_default(subscriber).unwrap();
            recorder
        })
        .clone()
}

thread_local! {
    static RECORDING: Cell<bool> = const { Cell::new(false) };
}

/// Spans made on this thread are enabled and recorded. The tests run on
/// single-threaded runtimes: the servers' tasks run on the test's thread.
fn record_spans_here() -> Recorder {
    RECORDING.with(|recording| recording.set(true));
    subscriber()
}

/// A span's name and fields.
type Opened = (&'static str, BTreeMap<String, String>);

/// Every span opened, by span id.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<BTreeMap<u64, Opened>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: Subscriber> Layer<S> for Recorder {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::sometimes() // decided per thread
    }

    fn enabled(&self, _: &Metadata<'_>, _: LayerContext<'_, S>) -> bool {
        RECORDING.with(Cell::get)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: LayerContext<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let name = attrs.metadata().name();
        self.0.lock().unwrap().insert(id.into_u64(), (name, fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: LayerContext<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        let (_, fields) = spans.get_mut(&id.into_u64()).expect("a span opened here");
        values.record(&mut Fields(fields));
    }
}

impl Recorder {
    fn fields(&self, id: u64) -> Opened {
        self.0.lock().unwrap()[&id].clone()
    }
}

/// What a handler reports about the span it runs in.
async fn span_report(ctx: RequestContext) -> String {
    let Some(span) = ctx.value::<tracing::Span>() else {
        return "no span".to_owned();
    };
    let current = tracing::Span::current().id();
    format!(
        "{} {}",
        span.id().expect("an enabled span").into_u64(),
        current == span.id()
    )
}

#[tokio::test]
async fn a_served_request_runs_in_its_span_which_its_context_holds() {
    let recorder = record_spans_here();

    let (root, shutdown) = Context::background().with_cancel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/work", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/work", axum::routing::get(span_report));
    let server = tokio::spawn(Server::new(ContextLayer::new(root)).serve(listener, app));

    let client = reqwest::Client::new();
    let request = client.get(&url).header("x-request-id", "r-7");
    let body = request.send_ctx(&Context::background()).await.unwrap();
    let body = body.text().await.unwrap();
    let (id, inside) = body.split_once(' ').expect(&body);
    assert_eq!(inside, "true", "the handler runs in the request's span");

    let (name, fields) = recorder.fields(id.parse().unwrap());
    assert_eq!(name, "http_request");
    assert_eq!(fields["http.request.method"], "GET");
    assert_eq!(fields["url.path"], "/work");
    assert_eq!(fields["request_id"], "r-7");
    assert_eq!(fields["otel.kind"], "server");
    let peer = &fields["client.address"];
    assert!(peer.starts_with("127.0.0.1:"), "{peer}");

    // Without a request id, the field stays empty.
    let body = client
        .get(&url)
        .send_ctx(&Context::background())
        .await
        .unwrap();
    let body = body.text().await.unwrap();
    let (id, _) = body.split_once(' ').expect(&body);
    assert!(!recorder
        .fields(id.parse().unwrap())
        .1
        .contains_key("request_id"));

    shutdown.cancel();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_span_no_subscriber_wants_is_not_kept() {
    subscriber(); // which does not record this thread's spans
    let service = ContextLayer::new(Context::background()).layer(tower::service_fn(
        |request: http::Request<String>| async move {
            let ctx = RequestContext(RequestContext::of(&request).unwrap().clone());
            Ok::<_, Infallible>(http::Response::new(span_report(ctx).await))
        },
    ));
    let response = service.oneshot(http::Request::new(String::new())).await;
    let body = response.unwrap().into_body();
    let body = http_body_util::BodyExt::collect(body)
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(body, "no span");
}

/// What a handler reports about the OpenTelemetry context it was given.
fn otel_report(ctx: &Context) -> String {
    let Some(cx) = ctx.value::<opentelemetry::Context>() else {
        return "none".to_owned();
    };
    let span = cx.span();
    let span = span.span_context();
    let tenant = cx.baggage().get("tenant").map(|v| v.to_string());
    format!(
        "{} {} {} {}",
        span.trace_id(),
        span.span_id(),
        span.is_remote(),
        tenant.as_deref().unwrap_or("-")
    )
}

async fn otel_report_of(layer: ContextLayer, headers: &[(&str, &[u8])]) -> String {
    let service = layer.layer(tower::service_fn(
        |request: http::Request<String>| async move {
            let report = otel_report(RequestContext::of(&request).unwrap());
            Ok::<_, Infallible>(http::Response::new(report))
        },
    ));
    let mut request = http::Request::new(String::new());
    for (name, value) in headers {
        let value = http::HeaderValue::from_bytes(value).unwrap();
        let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        request.headers_mut().append(name, value);
    }
    let response = service.oneshot(request).await.unwrap();
    let body = http_body_util::BodyExt::collect(response.into_body()).await;
    String::from_utf8(body.unwrap().to_bytes().to_vec()).unwrap()
}

#[tokio::test]
async fn the_layer_extracts_trace_context_and_baggage_with_its_propagator() {
    subscriber();
    let layer = ContextLayer::new(Context::background()).propagator(w3c());
    let headers: [(&str, &[u8]); 2] = [
        ("traceparent", PARENT.as_bytes()),
        ("baggage", b"tenant=acme"),
    ];
    let report = otel_report_of(layer.clone(), &headers).await;
    assert_eq!(report, format!("{TRACE_ID} {PARENT_SPAN_ID} true acme"));

    // Nothing to extract: no value, which costs the request nothing.
    let report = otel_report_of(layer.clone(), &[]).await;
    assert_eq!(report, "none");
    let headers: [(&str, &[u8]); 1] = [("traceparent", b"00-garbage")];
    let report = otel_report_of(layer.clone(), &headers).await;
    assert_eq!(report, "none");

    // Bytes that are not UTF-8 are skipped, not a panic nor a 400: the next
    // baggage field is still read.
    let headers: [(&str, &[u8]); 3] = [
        ("traceparent", b"00-\xff\xfe"),
        ("baggage", b"tenant=\xffacme"),
        ("baggage", b"tenant=second"),
    ];
    let report = otel_report_of(layer.clone(), &headers).await;
    assert_eq!(
        report,
        "00000000000000000000000000000000 0000000000000000 false second"
    );

    // Only baggage: the propagator given to the layer is the one used.
    let only_baggage =
        ContextLayer::new(Context::background()).propagator(BaggagePropagator::new());
    let headers: [(&str, &[u8]); 2] = [
        ("traceparent", PARENT.as_bytes()),
        ("baggage", b"tenant=acme"),
    ];
    let report = otel_report_of(only_baggage, &headers).await;
    assert_eq!(
        report,
        "00000000000000000000000000000000 0000000000000000 false acme"
    );
}

#[tokio::test]
async fn the_layer_uses_the_global_propagator_by_default() {
    subscriber();
    global_w3c();
    let headers: [(&str, &[u8]); 1] = [("traceparent", PARENT.as_bytes())];
    let report = otel_report_of(ContextLayer::new(Context::background()), &headers).await;
    assert_eq!(report, format!("{TRACE_ID} {PARENT_SPAN_ID} true -"));
}

/// The headers a `PropagateLayer` client sends for `ctx` (and `preset`).
async fn sent_by_propagate_layer(ctx: &Context, preset: &[(&str, &str)]) -> http::HeaderMap {
    let inner = tower::service_fn(|request: http::Request<String>| async move {
        Ok::<_, Infallible>(http::Response::new(request.headers().clone()))
    });
    let client = PropagateLayer::default().layer(inner);
    let mut request = http::Request::new(String::new());
    for (name, value) in preset {
        let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    request.extensions_mut().insert(ctx.clone());
    let response = client.oneshot(request).await.unwrap();
    response.into_body().into_inner()
}

#[tokio::test]
async fn clients_send_the_contexts_opentelemetry_context_before_raw_forwarded_values() {
    subscriber();
    global_w3c();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let tracer = provider.tracer("tests");
    let span = tracer.start("handler's own span");
    let own = span.span_context().clone();
    let cx = opentelemetry::Context::new()
        .with_span(span)
        .with_baggage([KeyValue::new("tenant", "acme")]);
    // The raw headers the request came with, as the server layer keeps them.
    let forwarded = ForwardHeaders::new()
        .with("traceparent", PARENT)
        .with("x-request-id", "r-1");
    let ctx = Context::background().with_value(forwarded).with_value(cx);

    let headers = sent_by_propagate_layer(&ctx, &[]).await;
    let traceparent = headers["traceparent"].to_str().unwrap();
    assert_eq!(
        traceparent,
        format!("00-{}-{}-01", own.trace_id(), own.span_id()),
        "the handler's span, not the caller's"
    );
    assert_eq!(headers["baggage"], "tenant=acme");
    assert_eq!(headers["x-request-id"], "r-1");

    // What the caller set on the request itself wins.
    let headers = sent_by_propagate_layer(&ctx, &[("baggage", "set=here")]).await;
    assert_eq!(headers["baggage"], "set=here");

    // A context without an OpenTelemetry context: the forwarded values only.
    let ctx = Context::background().with_value(ForwardHeaders::new().with("traceparent", PARENT));
    let headers = sent_by_propagate_layer(&ctx, &[]).await;
    assert_eq!(headers["traceparent"], PARENT);
    assert!(headers.get("baggage").is_none());
}

#[tokio::test]
async fn send_ctx_carries_the_opentelemetry_context_to_a_served_handler() {
    subscriber();
    global_w3c();
    let (root, shutdown) = Context::background().with_cancel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(|ctx: RequestContext| async move { otel_report(&ctx) }),
    );
    let server = tokio::spawn(
        Server::new(ContextLayer::new(root))
            .grace(Duration::from_secs(5))
            .serve(listener, app),
    );

    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let span = provider.tracer("tests").start("client");
    let sent = span.span_context().clone();
    let cx = opentelemetry::Context::new()
        .with_span(span)
        .with_baggage([KeyValue::new("tenant", "acme")]);
    let ctx = Context::background().with_value(cx);
    let response = reqwest::Client::new()
        .get(&url)
        .send_ctx(&ctx)
        .await
        .unwrap();
    let report = response.text().await.unwrap();
    assert_eq!(
        report,
        format!("{} {} true acme", sent.trace_id(), sent.span_id())
    );

    shutdown.cancel();
    server.await.unwrap().unwrap();
}
