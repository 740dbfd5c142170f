//! Go's context demo, on tokio tasks: two workers tick until a 100 ms
//! timeout ends them; each selects on `ctx.done()`.
//!
//! ```text
//! cargo run -p ctxkit-tests --example workers_async
//! ```

use ctxkit::Context;
use std::time::Duration;

async fn worker(ctx: Context, id: u32) {
    let mut ticker = tokio::time::interval(Duration::from_millis(30));
    ticker.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            err = ctx.done() => {
                println!("worker {id} stopping: {err}");
                return;
            }
            _ = ticker.tick() => println!("worker {id} tick"),
        }
    }
}

#[tokio::main]
async fn main() {
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(100));

    let workers: Vec<_> = (1..=2)
        .map(|id| tokio::spawn(worker(ctx.clone(), id)))
        .collect();

    let err = ctx.done().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    for worker in workers {
        worker.await.expect("worker panicked");
    }
    println!("main done: {err}");
}
