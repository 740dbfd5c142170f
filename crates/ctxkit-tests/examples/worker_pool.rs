//! A worker pool: a full queue refusing `try_submit`, then 3 workers under a
//! 150 ms deadline, on threads and then on tokio; every job is accounted for.
//!
//! ```text
//! cargo run -p ctxkit-tests --example worker_pool
//! ```

use ctxkit::pool::{Pool, SubmitError, TaskPool};
use ctxkit::Context;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// Resizes "image" `id`: 40 ms of work, cut short if the pool is cancelled.
fn resize(ctx: &Context, id: u32) -> String {
    match ctx.sleep(Duration::from_millis(40)) {
        Ok(()) => format!("image {id} resized"),
        Err(err) => format!("image {id} abandoned half-way ({err})"),
    }
}

/// `try_submit` never waits: on a full queue the job comes straight back.
fn full_queue() {
    let (started_tx, started) = mpsc::channel();
    let pool = Pool::new(&Context::background(), 1, 1, move |ctx, id: u32| {
        started_tx.send(id).expect("main is listening");
        ctx.wait(); // busy until the pool is shut down
    });
    pool.submit(1).expect("an empty pool accepts a job");
    let running = started.recv().expect("the worker starts job 1");
    pool.submit(2).expect("the queue has room for one");
    match pool.try_submit(3) {
        Err(SubmitError::Full(job)) => {
            println!("job {running} running, job 2 queued: try_submit hands job {job} back")
        }
        other => println!("unexpected: {other:?}"),
    }
    let report = pool.shutdown();
    println!(
        "after shutdown: {} job ran, {} queued job came back unrun\n",
        report.completed.len(),
        report.not_run.len()
    );
}

fn main() {
    full_queue();

    // The whole batch has 150 ms; the pool stops when that runs out.
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(150));
    let pool = Pool::new(&ctx, 3, 4, resize);

    let mut refused = Vec::new();
    thread::scope(|s| {
        s.spawn(|| {
            for id in 1..=20 {
                // Waits while the queue is full; refused once the time is up.
                match pool.submit(id) {
                    Ok(()) => println!("submitted image {id}"),
                    Err(err) => {
                        println!("image {id} refused: {err}");
                        refused.push(err.into_job());
                    }
                }
            }
        });
    });

    let report = pool.join();
    println!("--- report ---");
    for line in &report.completed {
        println!("done: {line}");
    }
    println!("queued but never started: {:?}", report.not_run);
    println!("refused at submit: {refused:?}");
    println!(
        "{} completed + {} not run + {} refused = {} submitted",
        report.completed.len(),
        report.not_run.len(),
        refused.len(),
        report.len() + refused.len()
    );

    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(on_tokio());
}

/// The same batch on tokio tasks.
async fn on_tokio() {
    println!("--- the same batch on tokio ---");
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(150));
    let pool = TaskPool::new(&ctx, 3, 4, |ctx, id: u32| async move {
        match ctx.run(tokio::time::sleep(Duration::from_millis(40))).await {
            Ok(()) => format!("image {id} resized"),
            Err(err) => format!("image {id} abandoned half-way ({err})"),
        }
    });
    let mut refused = Vec::new();
    for id in 1..=20 {
        if let Err(err) = pool.submit(id).await {
            refused.push(err.into_job());
        }
    }
    let report = pool.join().await;
    println!(
        "{} completed + {} not run {:?} + {} refused {:?} = {} submitted",
        report.completed.len(),
        report.not_run.len(),
        report.not_run,
        refused.len(),
        refused,
        report.len() + refused.len()
    );
}
