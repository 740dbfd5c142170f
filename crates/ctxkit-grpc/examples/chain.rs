//! A chain of gRPC services that behaves as one context tree.
//!
//! Every hop serves `ctxkit.demo.v1.Work` (`proto/work.proto`). A call's
//! deadline, cancellation and `x-request-id` cross each hop:
//!
//! ```text
//! cargo run -p ctxkit-grpc --example chain -- serve --name leaf --listen 127.0.0.1:7003
//! cargo run -p ctxkit-grpc --example chain -- serve --name middle --listen 127.0.0.1:7002 --next http://127.0.0.1:7003
//! cargo run -p ctxkit-grpc --example chain -- serve --name edge --listen 127.0.0.1:7001 --next http://127.0.0.1:7002
//! cargo run -p ctxkit-grpc --example chain -- call --to http://127.0.0.1:7001 --budget-ms 300 --request-id r-1
//! ```
//!
//! `serve --name NAME --listen ADDR [--next URL] [--max-timeout-ms N]`
//! prints `{"listening":"IP:PORT"}`, then one line per call once the call's
//! context ended:
//! `{"hop":NAME,"request_id":"..","remaining_ms":N,"ended":"completed|canceled|deadline","ms":N}`.
//! With `--next`, each call first calls the next hop under its own context.
//!
//! `call --to URL [--budget-ms N] [--work-ms N] [--request-id ID] [--cancel-after-ms N]`
//! prints the `WorkReply` as JSON (the proto's field names), or
//! `{"status":"CODE","message":".."}`; it exits 0 only on OK. Without
//! `--budget-ms` the call has no deadline; `--budget-ms 0` is already
//! expired, and nothing is sent.
//!
//! stdout carries only these JSON lines; errors go to stderr.

use ctxkit::Context;
use ctxkit_grpc::demo::work_client::WorkClient;
use ctxkit_grpc::demo::work_server::{Work, WorkServer};
use ctxkit_grpc::demo::{WorkReply, WorkRequest};
use ctxkit_grpc::{
    code_name, request, ClientLayer, ClientService, Ended, ForwardHeaders, IntoStatus, RequestExt,
    ServerLayer,
};
use http::HeaderValue;
use serde_json::{json, Value};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};
use tower_layer::Layer;

const USAGE: &str = "usage:
  chain serve --name NAME --listen ADDR [--next URL] [--max-timeout-ms N]
  chain call --to URL [--budget-ms N] [--work-ms N] [--request-id ID] [--cancel-after-ms N]";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.split_first() {
        Some((command, rest)) if command == "serve" => match ServeArgs::parse(rest) {
            Ok(args) => serve(args).await,
            Err(error) => Err(error),
        },
        Some((command, rest)) if command == "call" => match CallArgs::parse(rest) {
            Ok(args) => return call(args).await,
            Err(error) => Err(error),
        },
        _ => Err("expected a command, serve or call".to_owned()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("chain: {error}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// `serve`'s command line.
struct ServeArgs {
    name: String,
    listen: String,
    next: Option<String>,
    max_timeout: Option<Duration>,
}

impl ServeArgs {
    fn parse(args: &[String]) -> Result<ServeArgs, String> {
        let mut parsed = ServeArgs {
            name: String::new(),
            listen: String::new(),
            next: None,
            max_timeout: None,
        };
        for (flag, value) in flags(args)? {
            match flag {
                "--name" => parsed.name = value.to_owned(),
                "--listen" => parsed.listen = value.to_owned(),
                "--next" => parsed.next = Some(value.to_owned()),
                "--max-timeout-ms" => parsed.max_timeout = Some(millis(flag, value)?),
                _ => return Err(format!("unknown option {flag}")),
            }
        }
        if parsed.name.is_empty() || parsed.listen.is_empty() {
            return Err("serve needs --name and --listen".to_owned());
        }
        Ok(parsed)
    }
}

/// `call`'s command line.
struct CallArgs {
    to: String,
    budget: Option<Duration>,
    work_ms: u32,
    request_id: Option<HeaderValue>,
    cancel_after: Option<Duration>,
}

impl CallArgs {
    fn parse(args: &[String]) -> Result<CallArgs, String> {
        let mut parsed = CallArgs {
            to: String::new(),
            budget: None,
            work_ms: 0,
            request_id: None,
            cancel_after: None,
        };
        for (flag, value) in flags(args)? {
            match flag {
                "--to" => parsed.to = value.to_owned(),
                "--budget-ms" => parsed.budget = Some(millis(flag, value)?),
                "--work-ms" => {
                    parsed.work_ms = value.parse().map_err(|_| bad_number(flag, value))?;
                }
                "--request-id" => {
                    let id = HeaderValue::from_str(value)
                        .map_err(|_| format!("--request-id {value:?} is not a metadata value"))?;
                    parsed.request_id = Some(id);
                }
                "--cancel-after-ms" => parsed.cancel_after = Some(millis(flag, value)?),
                _ => return Err(format!("unknown option {flag}")),
            }
        }
        if parsed.to.is_empty() {
            return Err("call needs --to".to_owned());
        }
        Ok(parsed)
    }
}

/// `--flag value` pairs.
fn flags(args: &[String]) -> Result<Vec<(&str, &str)>, String> {
    args.chunks(2)
        .map(|pair| match pair {
            [flag, value] => Ok((flag.as_str(), value.as_str())),
            [flag] => Err(format!("{flag} needs a value")),
            _ => unreachable!("chunks of two"),
        })
        .collect()
}

fn millis(flag: &str, value: &str) -> Result<Duration, String> {
    value
        .parse()
        .map(Duration::from_millis)
        .map_err(|_| bad_number(flag, value))
}

fn bad_number(flag: &str, value: &str) -> String {
    format!("{flag} {value:?} is not a number of milliseconds")
}

/// A client of the hop at `url`, connected now when that works (else on the
/// first call): `grpc-timeout` is measured when a call starts, so a
/// connection made by the first call would make the next hop's deadline
/// later than its caller's by the time it took.
async fn client(url: &str, ctx: &Context) -> Result<WorkClient<ClientService<Channel>>, String> {
    let endpoint = Endpoint::from_shared(url.to_owned()).map_err(|e| format!("{url}: {e}"))?;
    let channel = match ctx.run(endpoint.connect()).await {
        Ok(Ok(channel)) => channel,
        _ => endpoint.connect_lazy(),
    };
    Ok(WorkClient::new(ClientLayer::new().layer(channel)))
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    println!("{}", json!({ "listening": address.to_string() }));
    let hop = Hop {
        name: args.name,
        next: match &args.next {
            Some(url) => {
                let (connecting, _) = Context::background().with_timeout(Duration::from_secs(1));
                Some(client(url, &connecting).await?)
            }
            None => None,
        },
    };
    let mut layer = ServerLayer::new(Context::background());
    if let Some(max) = args.max_timeout {
        layer = layer.max_timeout(max);
    }
    Server::builder()
        .layer(layer)
        .add_service(WorkServer::new(hop))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await
        .map_err(|e| format!("serving on {address}: {e}"))
}

/// One hop of the chain.
#[derive(Clone)]
struct Hop {
    name: String,
    next: Option<WorkClient<ClientService<Channel>>>,
}

#[tonic::async_trait]
impl Work for Hop {
    async fn r#do(&self, request: Request<WorkRequest>) -> Result<Response<WorkReply>, Status> {
        let arrival = Instant::now();
        let ctx = request.context();
        let reply = WorkReply {
            hop: self.name.clone(),
            remaining_ms: ctx.remaining().map_or(-1, |left| left.as_millis() as i64),
            request_id: ForwardHeaders::of(&ctx)
                .and_then(|values| values.get("x-request-id")?.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            next: None,
        };
        let work_ms = request.into_inner().work_ms;
        // The work runs in a task of its own, as a handler's spawned work
        // would: the call's context, not the handler's future, stops it, and
        // the task logs how the context ended even when the caller's reset
        // dropped the handler.
        let (answer, answered) = tokio::sync::oneshot::channel();
        let hop = self.clone();
        tokio::spawn(async move {
            let line = json!({
                "hop": hop.name,
                "request_id": reply.request_id,
                "remaining_ms": reply.remaining_ms,
            });
            let _ = answer.send(hop.work(&ctx, work_ms, reply).await);
            let ended = how_it_ended(&ctx).await;
            log(line, ended, arrival.elapsed());
        });
        answered
            .await
            .unwrap_or_else(|_| Err(Status::internal("the work task panicked")))
    }
}

impl Hop {
    /// Calls the next hop, if any, then works `work_ms` under `ctx`.
    async fn work(
        mut self,
        ctx: &Context,
        work_ms: u32,
        mut reply: WorkReply,
    ) -> Result<Response<WorkReply>, Status> {
        if let Some(next) = &mut self.next {
            let next_reply = next.r#do(request(ctx, WorkRequest { work_ms })).await?;
            reply.next = Some(Box::new(next_reply.into_inner()));
        }
        let work = tokio::time::sleep(Duration::from_millis(work_ms.into()));
        ctx.run(work).await.map_err(IntoStatus::into_status)?;
        Ok(Response::new(reply))
    }
}

/// Waits for the call's context to end and says how, as its `err()` and
/// cause say: `deadline` when its deadline ended it, `completed` when the
/// answer was sent, `canceled` otherwise. A caller's reset that arrives at or
/// after the hop's own deadline ends the context with `DeadlineExceeded`
/// (the server layer sees to it), so it is a `deadline` here too.
async fn how_it_ended(ctx: &Context) -> &'static str {
    match ctx.done().await {
        ctxkit::Error::DeadlineExceeded => "deadline",
        ctxkit::Error::Canceled if Ended::of(ctx) == Some(Ended::Completed) => "completed",
        ctxkit::Error::Canceled => "canceled",
    }
}

fn log(mut line: Value, ended: &str, elapsed: Duration) {
    line["ended"] = ended.into();
    line["ms"] = (elapsed.as_millis() as u64).into();
    println!("{line}");
}

async fn call(args: CallArgs) -> ExitCode {
    let (ctx, _deadline) = match args.budget {
        Some(budget) => Context::background().with_timeout(budget),
        None => Context::background().with_cancel(),
    };
    let mut client = match client(&args.to, &ctx).await {
        Ok(client) => client,
        Err(error) => {
            eprintln!("chain: {error}");
            return ExitCode::from(2);
        }
    };
    let ctx = match args.request_id {
        Some(id) => {
            let mut values = ForwardHeaders::new();
            values.insert(http::header::HeaderName::from_static("x-request-id"), id);
            ctx.with_value(values)
        }
        None => ctx,
    };
    let (ctx, cancel) = ctx.with_cancel();
    if let Some(after) = args.cancel_after {
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            cancel.cancel();
        });
    } else {
        cancel.detach();
    }
    let work = WorkRequest {
        work_ms: args.work_ms,
    };
    match client.r#do(request(&ctx, work)).await {
        Ok(reply) => {
            println!("{}", reply_json(&reply.into_inner()));
            ExitCode::SUCCESS
        }
        Err(status) => {
            let line = json!({ "status": code_name(status.code()), "message": status.message() });
            println!("{line}");
            ExitCode::FAILURE
        }
    }
}

/// The reply with the proto's field names; `next` only when there is one.
fn reply_json(reply: &WorkReply) -> Value {
    let mut value = json!({
        "hop": reply.hop,
        "remaining_ms": reply.remaining_ms,
        "request_id": reply.request_id,
    });
    if let Some(next) = &reply.next {
        value["next"] = reply_json(next);
    }
    value
}
