//! Go's context demo, on threads: two workers tick until a 100 ms timeout
//! ends them.
//!
//! ```text
//! cargo run --example workers
//! ```

use ctxkit::Context;
use std::thread;
use std::time::Duration;

fn worker(ctx: Context, id: u32) {
    loop {
        // `sleep` wakes early when the context ends: no tick after the deadline.
        if let Err(err) = ctx.sleep(Duration::from_millis(30)) {
            println!("worker {id} stopping: {err}");
            return;
        }
        println!("worker {id} tick");
    }
}

fn main() {
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(100));

    let workers: Vec<_> = (1..=2)
        .map(|id| {
            let ctx = ctx.clone();
            thread::spawn(move || worker(ctx, id))
        })
        .collect();

    let err = ctx.wait();
    // Give the workers a moment to notice, as Go's demo does; joining them
    // below is what actually guarantees they are gone.
    thread::sleep(Duration::from_millis(10));
    for worker in workers {
        worker.join().expect("worker panicked");
    }
    println!("main done: {err}");
}
