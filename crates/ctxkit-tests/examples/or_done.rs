//! Or-done: consume a channel until it runs out or a context ends it, on a
//! thread (crossbeam) and in a task (a `Stream`).
//!
//! ```text
//! cargo run -p ctxkit-tests --example or_done
//! ```

use ctxkit::or_done::{ContextStreamExt, ReceiverExt};
use ctxkit::Context;
use futures::StreamExt;
use std::thread;
use std::time::Duration;

/// A producer that would tick forever, every 20 ms, while anyone listens.
fn ticker() -> crossbeam_channel::Receiver<u32> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    thread::spawn(move || {
        for n in 1.. {
            thread::sleep(Duration::from_millis(20));
            if tx.send(n).is_err() {
                return; // the consumer is gone
            }
        }
    });
    rx
}

fn main() {
    println!("threads: a ticker read under a 110 ms timeout");
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(110));
    let mut ticks = ticker().until_done(&ctx);
    for n in ticks.by_ref() {
        println!("  tick {n}");
    }
    // The loop ended while blocked waiting for the next tick.
    println!("  ended: {:?}", ticks.err());

    println!("threads: a channel that runs out first");
    let (tx, rx) = crossbeam_channel::unbounded();
    for word in ["alpha", "beta"] {
        tx.send(word).unwrap();
    }
    drop(tx);
    let mut words = rx.until_done(&Context::background());
    for word in words.by_ref() {
        println!("  {word}");
    }
    println!("  ended: {:?} (the channel ran out)", words.err());

    println!("async: a stream cancelled by another task");
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(async {
        let (ctx, cancel) = Context::background().with_cancel();
        let (tx, rx) = futures::channel::mpsc::unbounded();
        tokio::spawn(async move {
            for n in 1..=3 {
                tx.unbounded_send(n).unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            println!("  producer: cancelling (and keeping the channel open)");
            cancel.cancel();
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(tx);
        });
        let mut items = rx.until_done(&ctx);
        while let Some(n) = items.next().await {
            println!("  item {n}");
        }
        println!("  ended: {:?}", items.err());
    });
    // Dropping the runtime drops the sleeping producer.
}
