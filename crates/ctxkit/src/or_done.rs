//! Channel iteration that ends the moment a context is done: Go's "or-done"
//! pattern.
//!
//! In Go one writes
//!
//! ```go
//! for {
//!     select {
//!     case <-ctx.Done(): return
//!     case v, ok := <-ch: if !ok { return }; use(v)
//!     }
//! }
//! ```
//!
//! Here the same loop is a plain `for`, on threads and in async code:
//!
//! - **Threads** (feature `crossbeam`): [`or_done`] or
//!   [`ReceiverExt::until_done`] turn a `crossbeam_channel::Receiver` into
//!   an [`OrDone`] iterator.
//! - **Async** (feature `tokio`): [`or_done_stream`] or
//!   [`ContextStreamExt::until_done`] wrap any `futures_core::Stream` in an
//!   [`OrDoneStream`]. For a single receive, `ctx.run(rx.recv()).await` is
//!   enough.
//!
//! Both end in one of two ways, and say which: the channel or stream ran
//! out (`err()` is `None`), or the context is done (`err()` is the
//! context's [`Error`](crate::Error)). Both are fused: after the end, they
//! yield nothing.
//!
//! # Guarantees
//!
//! - Once the context is done, the next call ends the iteration, even if
//!   items are waiting; a call blocked (or pending) on an empty channel
//!   returns as soon as the context is cancelled.
//! - An item taken from the channel is always yielded, never dropped: items
//!   not taken stay in the channel, where the caller can still drain and
//!   account for them.
//!
//! Without the `crossbeam` and `tokio` features this module is empty.

// The links above name items of both features.
#![cfg_attr(
    not(all(feature = "crossbeam", feature = "tokio")),
    allow(rustdoc::broken_intra_doc_links)
)]

#[cfg(feature = "crossbeam")]
pub use self::channel::{or_done, OrDone, ReceiverExt};
#[cfg(feature = "tokio")]
pub use self::stream::{or_done_stream, ContextStreamExt, OrDoneStream};

#[cfg(feature = "crossbeam")]
mod channel {
    use crate::{Context, Error};
    use crossbeam_channel::{select, Receiver, TryRecvError};
    use std::fmt;
    use std::iter::FusedIterator;

    /// Iterates over `items` until the channel is disconnected and empty, or
    /// `ctx` is done, whichever comes first.
    ///
    /// The iterator owns clones of the receiver and the context, so it can
    /// move to another thread. See [`OrDone`] for the exact contract.
    ///
    /// ```
    /// use ctxkit::{or_done::or_done, Context, Error};
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let (tx, rx) = crossbeam_channel::unbounded();
    /// let producer = std::thread::spawn(move || {
    ///     for n in 1..=3 {
    ///         tx.send(n).unwrap();
    ///     }
    ///     // Keep the channel open: only the context can end the loop below.
    ///     tx
    /// });
    ///
    /// let mut items = or_done(&ctx, &rx);
    /// let mut sum = 0;
    /// for n in items.by_ref() {
    ///     sum += n;
    ///     if n == 3 {
    ///         cancel.cancel();
    ///     }
    /// }
    /// assert_eq!(sum, 6);
    /// assert_eq!(items.err(), Some(Error::Canceled));
    /// # drop(producer.join());
    /// ```
    pub fn or_done<T>(ctx: &Context, items: &Receiver<T>) -> OrDone<T> {
        OrDone {
            ctx: ctx.clone(),
            items: items.clone(),
            done: None,
            state: State::Running,
        }
    }

    impl<T> OrDone<T> {
        /// [`or_done`] with a done receiver made beforehand for `ctx`, to
        /// share one registration among many iterators.
        pub(crate) fn with_done(ctx: &Context, items: &Receiver<T>, done: &Receiver<()>) -> Self {
            OrDone {
                done: Some(done.clone()),
                ..or_done(ctx, items)
            }
        }
    }

    /// `rx.until_done(&ctx)`: [`or_done`] as a method of
    /// `crossbeam_channel::Receiver`.
    ///
    /// ```
    /// use ctxkit::{or_done::ReceiverExt, Context};
    ///
    /// let (tx, rx) = crossbeam_channel::unbounded();
    /// tx.send("a").unwrap();
    /// tx.send("b").unwrap();
    /// drop(tx); // disconnected: the iteration ends after the last item
    /// let mut items = rx.until_done(&Context::background());
    /// assert_eq!(items.by_ref().collect::<Vec<_>>(), ["a", "b"]);
    /// assert_eq!(items.err(), None, "ended because the channel ran out");
    /// ```
    pub trait ReceiverExt<T> {
        /// Iterates until the channel runs out or `ctx` is done; see [`OrDone`].
        ///
        /// ```
        /// use ctxkit::{or_done::ReceiverExt, Context};
        ///
        /// let (tx, rx) = crossbeam_channel::bounded(1);
        /// tx.send(5).unwrap();
        /// drop(tx);
        /// assert_eq!(rx.until_done(&Context::background()).sum::<i32>(), 5);
        /// ```
        fn until_done(&self, ctx: &Context) -> OrDone<T>;
    }

    impl<T> ReceiverExt<T> for Receiver<T> {
        fn until_done(&self, ctx: &Context) -> OrDone<T> {
            or_done(ctx, self)
        }
    }

    /// An iterator over a crossbeam channel that ends when the context is
    /// done: made by [`or_done`] or [`ReceiverExt::until_done`].
    ///
    /// # Contract
    ///
    /// - `next()` returns `None` if the context is done when it is called,
    ///   without taking an item, even if some are waiting.
    /// - Otherwise it returns the next item, blocking while the channel is
    ///   empty; it returns `None` as soon as the context is done while it
    ///   blocks, or once the channel is disconnected and empty.
    /// - An item taken from the channel is always returned. If the context
    ///   ends while an item arrives, either may win, as in Go's `select`.
    /// - After the first `None`, every call returns `None` ([`FusedIterator`]),
    ///   and [`err`](OrDone::err) tells why it ended.
    ///
    /// # Cost
    ///
    /// Observing the context is one atomic load per item. The first time
    /// `next()` has to block, the iterator asks the context for a
    /// [`done_receiver`](Context::done_receiver), which stays registered with
    /// the context until the context ends (not when the iterator is dropped):
    /// make one iterator per loop, not one per item.
    ///
    /// ```
    /// use ctxkit::{or_done::ReceiverExt, Context, Error};
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let (tx, rx) = crossbeam_channel::unbounded();
    /// tx.send(1).unwrap();
    /// let mut items = rx.until_done(&ctx);
    /// assert_eq!(items.next(), Some(1));
    /// // The channel stays open (`tx` lives): only the cancel can end the wait.
    /// let canceller = std::thread::spawn(move || cancel.cancel());
    /// assert_eq!(items.next(), None);
    /// assert_eq!(items.err(), Some(Error::Canceled));
    /// canceller.join().unwrap();
    /// drop(tx);
    /// ```
    pub struct OrDone<T> {
        ctx: Context,
        items: Receiver<T>,
        /// Made on the first blocking wait; see "Cost".
        done: Option<Receiver<()>>,
        state: State,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum State {
        Running,
        Disconnected,
        Stopped(Error),
    }

    impl<T> OrDone<T> {
        /// Why the iteration ended: `Some(err)` if it ended because the
        /// context is done, `None` if the channel ran out or the iteration
        /// has not ended yet.
        ///
        /// ```
        /// use ctxkit::{or_done::or_done, Context, Error};
        ///
        /// let (ctx, cancel) = Context::background().with_cancel();
        /// let (_tx, rx) = crossbeam_channel::unbounded::<u8>();
        /// let mut items = or_done(&ctx, &rx);
        /// assert_eq!(items.err(), None);
        /// cancel.cancel();
        /// assert_eq!(items.next(), None);
        /// assert_eq!(items.err(), Some(Error::Canceled));
        /// ```
        pub fn err(&self) -> Option<Error> {
            match self.state {
                State::Stopped(err) => Some(err),
                State::Running | State::Disconnected => None,
            }
        }

        /// Records the end: the context's error, since the done receiver only
        /// disconnects once the context is done.
        fn stop(&mut self) -> Option<T> {
            let err = self.ctx.err().expect("the done receiver disconnected");
            self.state = State::Stopped(err);
            None
        }

        fn disconnected(&mut self) -> Option<T> {
            self.state = State::Disconnected;
            None
        }
    }

    impl<T> Iterator for OrDone<T> {
        type Item = T;

        fn next(&mut self) -> Option<T> {
            if self.state != State::Running {
                return None;
            }
            if let Some(err) = self.ctx.err() {
                self.state = State::Stopped(err);
                return None;
            }
            // Fast path: an item is ready, no need to wait (nor to register).
            match self.items.try_recv() {
                Ok(item) => return Some(item),
                Err(TryRecvError::Disconnected) => return self.disconnected(),
                Err(TryRecvError::Empty) => {}
            }
            let done = self.done.get_or_insert_with(|| self.ctx.done_receiver());
            select! {
                recv(self.items) -> item => match item {
                    Ok(item) => Some(item),
                    Err(_) => self.disconnected(),
                },
                recv(done) -> _ => self.stop(),
            }
        }
    }

    impl<T> FusedIterator for OrDone<T> {}

    impl<T> fmt::Debug for OrDone<T> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("OrDone")
                .field("ctx", &self.ctx)
                .field("state", &self.state)
                .finish_non_exhaustive()
        }
    }
}

#[cfg(feature = "tokio")]
mod stream {
    use crate::{Context, Error, OwnedDone};
    use futures_core::{FusedStream, Stream};
    use std::fmt;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context as TaskContext, Poll};

    /// Yields the items of `stream` until it ends or `ctx` is done, whichever
    /// comes first. See [`OrDoneStream`] for the exact contract.
    ///
    /// ```
    /// use ctxkit::{or_done::or_done_stream, Context, Error};
    /// use futures::StreamExt;
    ///
    /// # // The parts of the `futures` crate this example uses, so that it runs
    /// # // as a doctest of the core, which depends on `futures-core` only.
    /// # mod futures {
    /// #     pub trait StreamExt: futures_core::Stream + Unpin + Sized {
    /// #         fn next(&mut self) -> impl std::future::Future<Output = Option<Self::Item>> + '_ {
    /// #             std::future::poll_fn(move |cx| std::pin::Pin::new(&mut *self).poll_next(cx))
    /// #         }
    /// #     }
    /// #     impl<S: futures_core::Stream + Unpin> StreamExt for S {}
    /// #     pub mod stream {
    /// #         use futures_core::Stream;
    /// #         use std::{pin::Pin, task::{Context, Poll}};
    /// #         pub struct PollFn<F>(F);
    /// #         impl<T, F: FnMut(&mut Context<'_>) -> Poll<Option<T>> + Unpin> Stream for PollFn<F> {
    /// #             type Item = T;
    /// #             fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
    /// #                 (self.0)(cx)
    /// #             }
    /// #         }
    /// #         pub fn poll_fn<T, F: FnMut(&mut Context<'_>) -> Poll<Option<T>>>(f: F) -> PollFn<F> {
    /// #             PollFn(f)
    /// #         }
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    /// for n in 1..=5 {
    ///     tx.send(n).await.unwrap();
    /// }
    /// // The channel stays open (`tx` lives): only the context can end the loop.
    /// let items = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    /// let mut items = or_done_stream(&ctx, items);
    /// let mut seen = Vec::new();
    /// while let Some(n) = items.next().await {
    ///     seen.push(n);
    ///     if n == 3 {
    ///         cancel.cancel();
    ///     }
    /// }
    /// assert_eq!(seen, [1, 2, 3]);
    /// assert_eq!(items.err(), Some(Error::Canceled));
    /// # drop(tx);
    /// # }
    /// ```
    pub fn or_done_stream<S: Stream + Unpin>(ctx: &Context, stream: S) -> OrDoneStream<S> {
        OrDoneStream {
            ctx: ctx.clone(),
            stream,
            done: None,
            ended: None,
        }
    }

    /// `stream.until_done(&ctx)`: [`or_done_stream`] as a method of every
    /// `Unpin` stream. Pin other streams first: `Box::pin(stream).until_done(&ctx)`.
    ///
    /// ```
    /// use ctxkit::{or_done::ContextStreamExt, Context};
    /// use futures::StreamExt;
    ///
    /// # // The parts of the `futures` crate this example uses, so that it runs
    /// # // as a doctest of the core, which depends on `futures-core` only.
    /// # mod futures {
    /// #     pub trait StreamExt: futures_core::Stream + Unpin + Sized {
    /// #         fn next(&mut self) -> impl std::future::Future<Output = Option<Self::Item>> + '_ {
    /// #             std::future::poll_fn(move |cx| std::pin::Pin::new(&mut *self).poll_next(cx))
    /// #         }
    /// #         async fn collect<C: Default + Extend<Self::Item>>(mut self) -> C {
    /// #             let mut all = C::default();
    /// #             while let Some(item) = self.next().await {
    /// #                 all.extend([item]);
    /// #             }
    /// #             all
    /// #         }
    /// #     }
    /// #     impl<S: futures_core::Stream + Unpin> StreamExt for S {}
    /// #     pub mod stream {
    /// #         use futures_core::Stream;
    /// #         use std::{pin::Pin, task::{Context, Poll}};
    /// #         pub struct Iter<I>(I);
    /// #         impl<I: Iterator + Unpin> Stream for Iter<I> {
    /// #             type Item = I::Item;
    /// #             fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<I::Item>> {
    /// #                 Poll::Ready(self.0.next())
    /// #             }
    /// #         }
    /// #         pub fn iter<I: IntoIterator>(items: I) -> Iter<I::IntoIter> {
    /// #             Iter(items.into_iter())
    /// #         }
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let items = futures::stream::iter(["a", "b"]).until_done(&Context::background());
    /// assert_eq!(items.collect::<Vec<_>>().await, ["a", "b"]);
    /// # }
    /// ```
    pub trait ContextStreamExt: Stream + Unpin + Sized {
        /// Yields items until the stream ends or `ctx` is done; see
        /// [`OrDoneStream`].
        ///
        /// ```
        /// use ctxkit::{or_done::ContextStreamExt, Context, Error};
        /// use futures::StreamExt;
        /// use std::time::Duration;
        ///
        /// # // The parts of the `futures` crate this example uses, so that it runs
        /// # // as a doctest of the core, which depends on `futures-core` only.
        /// # mod futures {
        /// #     pub trait StreamExt: futures_core::Stream + Unpin + Sized {
        /// #         fn next(&mut self) -> impl std::future::Future<Output = Option<Self::Item>> + '_ {
        /// #             std::future::poll_fn(move |cx| std::pin::Pin::new(&mut *self).poll_next(cx))
        /// #         }
        /// #     }
        /// #     impl<S: futures_core::Stream + Unpin> StreamExt for S {}
        /// #     pub mod stream {
        /// #         use futures_core::Stream;
        /// #         use std::{pin::Pin, task::{Context, Poll}};
        /// #         pub struct Pending<T>(std::marker::PhantomData<T>);
        /// #         impl<T> Stream for Pending<T> {
        /// #             type Item = T;
        /// #             fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<T>> {
        /// #                 Poll::Pending
        /// #             }
        /// #         }
        /// #         pub fn pending<T>() -> Pending<T> {
        /// #             Pending(std::marker::PhantomData)
        /// #         }
        /// #     }
        /// # }
        /// # #[tokio::main(flavor = "current_thread")]
        /// # async fn main() {
        /// // A stream with nothing to say, and a context that ends in 10 ms.
        /// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(10));
        /// let mut quiet = futures::stream::pending::<u8>().until_done(&ctx);
        /// assert_eq!(quiet.next().await, None, "woken by the deadline");
        /// assert_eq!(quiet.err(), Some(Error::DeadlineExceeded));
        /// # }
        /// ```
        fn until_done(self, ctx: &Context) -> OrDoneStream<Self> {
            or_done_stream(ctx, self)
        }
    }

    impl<S: Stream + Unpin> ContextStreamExt for S {}

    /// A stream that ends when its context is done: made by
    /// [`or_done_stream`] or [`ContextStreamExt::until_done`].
    ///
    /// # Contract
    ///
    /// - If the context is done when it is polled, it ends (`Ready(None)`)
    ///   without polling the inner stream, even if items are ready.
    /// - Otherwise it yields the inner stream's next item; while the inner
    ///   stream is pending, it wakes and ends as soon as the context is done.
    /// - An item the inner stream yields is always passed on.
    /// - After the first `None` it yields `None` forever ([`FusedStream`]),
    ///   and [`err`](OrDoneStream::err) tells why it ended.
    ///
    /// It is `Send` when the inner stream is, and works on any executor.
    ///
    /// # Cost
    ///
    /// One atomic load per poll, and no allocation. The first time the inner
    /// stream is pending, the adapter registers a waker with the context
    /// (through [`Context::done_owned`]); the registration goes when the
    /// stream ends or the adapter is dropped.
    ///
    /// ```
    /// use ctxkit::{or_done::ContextStreamExt, Context, Error};
    /// use futures::StreamExt;
    ///
    /// # // The parts of the `futures` crate this example uses, so that it runs
    /// # // as a doctest of the core, which depends on `futures-core` only.
    /// # mod futures {
    /// #     pub trait StreamExt: futures_core::Stream + Unpin + Sized {
    /// #         fn next(&mut self) -> impl std::future::Future<Output = Option<Self::Item>> + '_ {
    /// #             std::future::poll_fn(move |cx| std::pin::Pin::new(&mut *self).poll_next(cx))
    /// #         }
    /// #     }
    /// #     impl<S: futures_core::Stream + Unpin> StreamExt for S {}
    /// #     pub mod stream {
    /// #         use futures_core::Stream;
    /// #         use std::{pin::Pin, task::{Context, Poll}};
    /// #         pub struct PollFn<F>(F);
    /// #         impl<T, F: FnMut(&mut Context<'_>) -> Poll<Option<T>> + Unpin> Stream for PollFn<F> {
    /// #             type Item = T;
    /// #             fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
    /// #                 (self.0)(cx)
    /// #             }
    /// #         }
    /// #         pub fn poll_fn<T, F: FnMut(&mut Context<'_>) -> Poll<Option<T>>>(f: F) -> PollFn<F> {
    /// #             PollFn(f)
    /// #         }
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    /// tx.send(1).unwrap();
    /// let mut items = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).until_done(&ctx);
    /// assert_eq!(items.next().await, Some(1));
    /// // The channel is empty and stays open (`tx` lives): the stream is pending
    /// // until another task cancels the context.
    /// let canceller = tokio::spawn(async move { cancel.cancel() });
    /// assert_eq!(items.next().await, None);
    /// assert_eq!(items.err(), Some(Error::Canceled));
    /// canceller.await.unwrap();
    /// drop(tx);
    /// # }
    /// ```
    pub struct OrDoneStream<S> {
        ctx: Context,
        stream: S,
        /// Made the first time the inner stream is pending; see "Cost".
        done: Option<OwnedDone>,
        /// `Some(None)`: the inner stream ended; `Some(Some(err))`: the
        /// context ended the iteration.
        ended: Option<Option<Error>>,
    }

    impl<S> OrDoneStream<S> {
        /// Why the stream ended: `Some(err)` if it ended because the context
        /// is done, `None` if the inner stream ended or the stream has not
        /// ended yet.
        ///
        /// ```
        /// use ctxkit::{or_done::ContextStreamExt, Context, Error};
        /// use futures::StreamExt;
        ///
        /// # // The parts of the `futures` crate this example uses, so that it runs
        /// # // as a doctest of the core, which depends on `futures-core` only.
        /// # mod futures {
        /// #     pub trait StreamExt: futures_core::Stream + Unpin + Sized {
        /// #         fn next(&mut self) -> impl std::future::Future<Output = Option<Self::Item>> + '_ {
        /// #             std::future::poll_fn(move |cx| std::pin::Pin::new(&mut *self).poll_next(cx))
        /// #         }
        /// #     }
        /// #     impl<S: futures_core::Stream + Unpin> StreamExt for S {}
        /// #     pub mod stream {
        /// #         use futures_core::Stream;
        /// #         use std::{pin::Pin, task::{Context, Poll}};
        /// #         pub struct Pending<T>(std::marker::PhantomData<T>);
        /// #         impl<T> Stream for Pending<T> {
        /// #             type Item = T;
        /// #             fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<T>> {
        /// #                 Poll::Pending
        /// #             }
        /// #         }
        /// #         pub fn pending<T>() -> Pending<T> {
        /// #             Pending(std::marker::PhantomData)
        /// #         }
        /// #     }
        /// # }
        /// # #[tokio::main(flavor = "current_thread")]
        /// # async fn main() {
        /// let (ctx, cancel) = Context::background().with_cancel();
        /// let mut never = futures::stream::pending::<u8>().until_done(&ctx);
        /// assert_eq!(never.err(), None, "not ended yet");
        /// cancel.cancel();
        /// assert_eq!(never.next().await, None);
        /// assert_eq!(never.err(), Some(Error::Canceled));
        /// # }
        /// ```
        pub fn err(&self) -> Option<Error> {
            self.ended.flatten()
        }

        /// Gives back the inner stream, with the items it still holds.
        ///
        /// ```
        /// use ctxkit::{or_done::ContextStreamExt, Context};
        /// use futures::StreamExt;
        ///
        /// # // The parts of the `futures` crate this example uses, so that it runs
        /// # // as a doctest of the core, which depends on `futures-core` only.
        /// # mod futures {
        /// #     pub trait StreamExt: futures_core::Stream + Unpin + Sized {
        /// #         fn next(&mut self) -> impl std::future::Future<Output = Option<Self::Item>> + '_ {
        /// #             std::future::poll_fn(move |cx| std::pin::Pin::new(&mut *self).poll_next(cx))
        /// #         }
        /// #         async fn collect<C: Default + Extend<Self::Item>>(mut self) -> C {
        /// #             let mut all = C::default();
        /// #             while let Some(item) = self.next().await {
        /// #                 all.extend([item]);
        /// #             }
        /// #             all
        /// #         }
        /// #     }
        /// #     impl<S: futures_core::Stream + Unpin> StreamExt for S {}
        /// #     pub mod stream {
        /// #         use futures_core::Stream;
        /// #         use std::{pin::Pin, task::{Context, Poll}};
        /// #         pub struct Iter<I>(I);
        /// #         impl<I: Iterator + Unpin> Stream for Iter<I> {
        /// #             type Item = I::Item;
        /// #             fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<I::Item>> {
        /// #                 Poll::Ready(self.0.next())
        /// #             }
        /// #         }
        /// #         pub fn iter<I: IntoIterator>(items: I) -> Iter<I::IntoIter> {
        /// #             Iter(items.into_iter())
        /// #         }
        /// #     }
        /// # }
        /// # #[tokio::main(flavor = "current_thread")]
        /// # async fn main() {
        /// let (ctx, cancel) = Context::background().with_cancel();
        /// cancel.cancel();
        /// let mut items = futures::stream::iter([1, 2]).until_done(&ctx);
        /// assert_eq!(items.next().await, None);
        /// // Nothing was taken: the items are still there to account for.
        /// assert_eq!(items.into_inner().collect::<Vec<_>>().await, [1, 2]);
        /// # }
        /// ```
        pub fn into_inner(self) -> S {
            self.stream
        }

        fn end(&mut self, why: Option<Error>) {
            self.ended = Some(why);
            // Leave the context's registry now rather than when dropped.
            self.done = None;
        }

        fn owned_done(&mut self) -> Pin<&mut OwnedDone> {
            let ctx = &self.ctx;
            Pin::new(self.done.get_or_insert_with(|| ctx.done_owned()))
        }
    }

    impl<S: Stream + Unpin> Stream for OrDoneStream<S> {
        type Item = S::Item;

        fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<S::Item>> {
            let this = self.get_mut();
            if this.ended.is_some() {
                return Poll::Ready(None);
            }
            if let Some(err) = this.ctx.err() {
                this.end(Some(err));
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.stream).poll_next(cx) {
                Poll::Ready(Some(item)) => return Poll::Ready(Some(item)),
                Poll::Ready(None) => {
                    this.end(None);
                    return Poll::Ready(None);
                }
                Poll::Pending => {}
            }
            // The inner stream will wake us for its next item; the context
            // must wake us too, for its end.
            match this.owned_done().poll(cx) {
                Poll::Ready(err) => {
                    this.end(Some(err));
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            }
        }

        fn size_hint(&self) -> (usize, Option<usize>) {
            match self.ended {
                Some(_) => (0, Some(0)),
                // The context may end the stream at any time.
                None => (0, self.stream.size_hint().1),
            }
        }
    }

    impl<S: Stream + Unpin> FusedStream for OrDoneStream<S> {
        fn is_terminated(&self) -> bool {
            self.ended.is_some()
        }
    }

    impl<S> fmt::Debug for OrDoneStream<S> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("OrDoneStream")
                .field("ctx", &self.ctx)
                .field("ended", &self.ended)
                .finish_non_exhaustive()
        }
    }
}
