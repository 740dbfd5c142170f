//! Rayon work that stops early: a huge CPU-bound job under a 100 ms
//! timeout.
//!
//! ```text
//! cargo run -p ctxkit-tests --example parallel
//! ```

use ctxkit::{parallel, Context};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn main() {
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(100));
    let processed = AtomicU64::new(0);
    let start = Instant::now();
    let total = 1u64 << 40;
    let result = parallel::for_each(&ctx, 0..total, |n| {
        // Stand-in for real work: a few hundred multiplications.
        let mut x = n;
        for i in 0..300 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
        processed.fetch_add(1, Ordering::Relaxed);
    });
    println!(
        "processed {} of {total} items on {} threads in {:?}: {result:?}",
        processed.into_inner(),
        rayon::current_num_threads(),
        start.elapsed()
    );
}
