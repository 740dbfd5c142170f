//! The doc examples of the core that need a crate it does not depend on
//! (`futures`), run as tests: the same code, one module per documented item.

/// `crates/ctxkit/src/or_done.rs`: `pub fn or_done_stream<S: Stream + Unpin>(ctx: &Context, stream: S) -> OrDoneStream<S>`
mod or_done_or_done_stream {
    use ctxkit::{or_done::or_done_stream, Context, Error};
    use futures::StreamExt;

    #[tokio::test]
    async fn example() {
        let (ctx, cancel) = Context::background().with_cancel();
        // A stream that would never end by itself.
        let ticks = futures::stream::iter(1..).then(|n| async move {
            tokio::task::yield_now().await;
            n
        });
        let mut ticks = or_done_stream(&ctx, Box::pin(ticks));
        let mut seen = Vec::new();
        while let Some(n) = ticks.next().await {
            seen.push(n);
            if n == 3 {
                cancel.cancel();
            }
        }
        assert_eq!(seen, [1, 2, 3]);
        assert_eq!(ticks.err(), Some(Error::Canceled));
    }
}

/// `crates/ctxkit/src/or_done.rs`: `pub trait ContextStreamExt: Stream + Unpin + Sized`
mod or_done_context_stream_ext {
    use ctxkit::{or_done::ContextStreamExt, Context};
    use futures::StreamExt;

    #[tokio::test]
    async fn example() {
        let items = futures::stream::iter(["a", "b"]).until_done(&Context::background());
        assert_eq!(items.collect::<Vec<_>>().await, ["a", "b"]);
    }
}

/// `crates/ctxkit/src/or_done.rs`: `pub fn err(&self) -> Option<Error>`
mod or_done_err {
    use ctxkit::{or_done::ContextStreamExt, Context, Error};
    use futures::StreamExt;

    #[tokio::test]
    async fn example() {
        let (ctx, cancel) = Context::background().with_cancel();
        let mut never = futures::stream::pending::<u8>().until_done(&ctx);
        cancel.cancel();
        assert_eq!(never.next().await, None);
        assert_eq!(never.err(), Some(Error::Canceled));
    }
}

/// `crates/ctxkit/src/or_done.rs`: `pub fn into_inner(self) -> S`
mod or_done_into_inner {
    use ctxkit::{or_done::ContextStreamExt, Context};
    use futures::StreamExt;

    #[tokio::test]
    async fn example() {
        let (ctx, cancel) = Context::background().with_cancel();
        cancel.cancel();
        let mut items = futures::stream::iter([1, 2]).until_done(&ctx);
        assert_eq!(items.next().await, None);
        // Nothing was taken: the items are still there to account for.
        assert_eq!(items.into_inner().collect::<Vec<_>>().await, [1, 2]);
    }
}

/// `crates/ctxkit/src/pipeline/tasks.rs`: `pub struct AsyncPipeline<T, E>`
mod pipeline_async_pipeline {
    use ctxkit::{pipeline::AsyncPipeline, Context};
    use std::time::Duration;

    #[tokio::test]
    async fn example() {
        let ctx = Context::background();
        let (mut out, report) = AsyncPipeline::new(&ctx, futures::stream::iter(1..=5u64))
            .stage(3, |_ctx, n| async move {
                tokio::time::sleep(Duration::from_millis(n)).await; // e.g. a lookup
                Ok::<_, std::io::Error>(n * 10)
            })
            .stage(1, |_ctx, n| async move { Ok(n + 1) })
            .collect()
            .await;
        out.sort();
        assert_eq!(out, [11, 21, 31, 41, 51]);
        assert!(report.is_complete());
    }
}

/// `crates/ctxkit/src/pipeline/tasks.rs`: `pub fn new<S>(ctx: &Context, source: S) -> Self`
mod pipeline_new {
    use ctxkit::{pipeline::AsyncPipeline, Context};

    #[tokio::test]
    async fn example() {
        let source = futures::stream::iter(["a", "b"]);
        let (out, _report) =
            AsyncPipeline::<_, std::io::Error>::new(&Context::background(), source)
                .collect()
                .await;
        assert_eq!(out, ["a", "b"]);
    }
}

/// `crates/ctxkit/src/pipeline/tasks.rs`: `pub fn stage<U, F, Fut>(self, workers: usize, f: F) -> AsyncPipeline<U, E>`
mod pipeline_stage {
    use ctxkit::{pipeline::AsyncPipeline, Context};
    use std::io;

    #[tokio::test]
    async fn example() {
        let ctx = Context::background();
        let report = AsyncPipeline::new(&ctx, futures::stream::iter(0..100u32))
            .stage(4, |_ctx, n| async move {
                match n {
                    13 => Err(io::Error::other("unlucky")),
                    n => Ok(n),
                }
            })
            .run(drop)
            .await;
        assert_eq!(report.error().unwrap().to_string(), "unlucky");
    }
}

/// `crates/ctxkit/src/pipeline/tasks.rs`: `pub async fn run(self, mut sink: impl FnMut(T)) -> Report<E>`
mod pipeline_run {
    use ctxkit::{pipeline::AsyncPipeline, Context, Error};

    #[tokio::test]
    async fn example() {
        let (ctx, cancel) = Context::background().with_cancel();
        let mut seen = 0;
        let report = AsyncPipeline::new(&ctx, futures::stream::iter(0u64..))
            .stage(2, |_ctx, n| async move { Ok::<_, std::io::Error>(n) })
            .run(|_| {
                seen += 1;
                if seen == 10 {
                    cancel.cancel(); // an endless source, stopped by its context
                }
            })
            .await;
        assert_eq!(report.delivered, 10);
        assert_eq!(report.err, Some(Error::Canceled));
    }
}

/// `crates/ctxkit/src/pipeline/tasks.rs`: `pub async fn collect(self) -> (Vec<T>, Report<E>)`
mod pipeline_collect {
    use ctxkit::{pipeline::AsyncPipeline, Context};

    #[tokio::test]
    async fn example() {
        let ctx = Context::background();
        let (out, report) = AsyncPipeline::new(&ctx, futures::stream::iter(["a", "b"]))
            .stage(1, |_ctx, s| async move {
                Ok::<_, std::fmt::Error>(s.to_uppercase())
            })
            .collect()
            .await;
        assert_eq!(out, ["A", "B"], "one worker keeps the order");
        assert!(report.is_complete());
    }
}
