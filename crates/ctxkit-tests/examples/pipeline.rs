//! A three-stage pipeline, run twice: once to the end, once stopped by a
//! deadline halfway through. Every item is accounted for either way.
//!
//! ```text
//! cargo run -p ctxkit-tests --example pipeline
//! ```

use ctxkit::pipeline::{AsyncPipeline, Pipeline, Report};
use ctxkit::Context;
use std::time::Duration;

#[derive(Debug)]
struct Unreadable(u32);

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "record {} is unreadable", self.0)
    }
}

impl std::error::Error for Unreadable {}

/// Validate (cheap, 2 workers) -> enrich (slow, 4 workers) -> format (1 worker).
fn records(ctx: &Context, count: u32) -> Pipeline<'static, String, Unreadable> {
    Pipeline::new(ctx, 1..=count)
        .stage(2, |_ctx, id| match id % 1000 {
            0 => Err(Unreadable(id)),
            _ => Ok(id),
        })
        .stage(4, |ctx, id| {
            // A slow lookup that gives up as soon as the run stops.
            ctx.sleep(Duration::from_millis(20))
                .map_err(|_| Unreadable(id))?;
            Ok((id, id * id))
        })
        .stage(1, |_ctx, (id, square)| Ok(format!("record {id}: {square}")))
}

fn print_report<E>(report: &Report<E>) {
    println!(
        "  source: sent {}, ran out: {}",
        report.source.sent, report.source.exhausted
    );
    for (i, stage) in report.stages.iter().enumerate() {
        println!(
            "  stage {i} (workers: {}): received {}, sent {}, failed {}, discarded {}, never taken {}",
            stage.workers, stage.received, stage.sent, stage.failed, stage.discarded, stage.unreceived
        );
    }
    println!(
        "  sink: delivered {}, left undelivered {}",
        report.delivered, report.undelivered
    );
    match &report.err {
        None => println!("  completed"),
        Some(err) => println!(
            "  stopped: {err} (cause: {})",
            report.cause.as_ref().unwrap()
        ),
    }
}

fn main() {
    println!("run 1: 12 records, no deadline pressure");
    let ctx = Context::background();
    let report = records(&ctx, 12).run(|line| println!("  {line}"));
    print_report(&report);

    println!("\nrun 2: 1000 records, 150 ms deadline");
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(150));
    let report = records(&ctx, 1000).run(|line| println!("  {line}"));
    print_report(&report);

    println!("\nrun 3: the same on tokio tasks, a record fails");
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let report = runtime.block_on(
        AsyncPipeline::new(&Context::background(), futures::stream::iter(1..=1000u32))
            .stage(4, |_ctx, id| async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                if id == 42 {
                    return Err(Unreadable(id));
                }
                Ok(id * 2)
            })
            .run(|_| {}),
    );
    print_report(&report);
}
