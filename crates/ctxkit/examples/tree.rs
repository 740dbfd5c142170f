//! A small service with requests in flight, seen from the inside: its live
//! context tree as text and as Mermaid, then one connection cut off, and
//! who cancelled a request on it.
//!
//! ```text
//! cargo run --example tree
//! ```

use ctxkit::{CancelHandle, Context};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// A request id, carried as a context value.
#[derive(Debug)]
struct RequestId(&'static str);

/// One connection: its context, its handle, and its requests' workers.
struct Connection {
    handle: CancelHandle,
    requests: Vec<(Context, JoinHandle<()>)>,
}

/// A connection under `server` with a request per id, each served by a
/// thread that works until its context ends.
fn connect(server: &Context, ids: &[&'static str]) -> Connection {
    let (conn, handle) = server.with_cancel();
    let requests = ids
        .iter()
        .map(|&id| {
            let ctx = conn
                .with_value(RequestId(id))
                .with_timeout_detached(Duration::from_secs(30));
            let worker = {
                let ctx = ctx.clone();
                thread::spawn(move || {
                    // The request's work: sleep in slices until told to stop.
                    while ctx.sleep(Duration::from_millis(20)).is_ok() {}
                })
            };
            (ctx, worker)
        })
        .collect();
    Connection { handle, requests }
}

fn main() {
    let (server, shutdown) = Context::background().with_cancel();
    let _audit = server.after_func(|| println!("(server stopped)"));
    let first = connect(&server, &["req-1", "req-2"]);
    let second = connect(&server, &["req-3"]);

    println!("== live tree ==");
    print!("{}", server.tree());
    println!();
    println!("== as Mermaid ==");
    print!("{}", server.tree().to_mermaid());

    println!();
    println!("== the client of req-1 and req-2 goes away ==");
    first.handle.cancel();
    let (req_1, _) = &first.requests[0];
    let id = req_1.value::<RequestId>().expect("set above");
    println!("{} ended: {:?}", id.0, req_1.err().expect("cancelled"));
    match req_1.provenance() {
        Some(provenance) => println!("who: {provenance}"),
        None => println!("who: (not recorded)"),
    }

    println!();
    println!("== what is left ==");
    print!("{}", server.tree());

    println!();
    shutdown.cancel(); // ends every request left, then runs the audit
    for (_, worker) in first.requests.into_iter().chain(second.requests) {
        worker.join().expect("a worker panicked");
    }
    drop(second.handle);
}
