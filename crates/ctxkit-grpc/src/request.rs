//! Where a call's context lives: the request's extensions.

use ctxkit::Context;

/// The context of a gRPC request: put there by
/// [`ServerLayer`](crate::ServerLayer) for a handler, or by the caller for
/// [`ClientLayer`](crate::ClientLayer) to honour.
///
/// ```
/// use ctxkit::Context;
/// use ctxkit_grpc::RequestExt;
/// use std::time::Duration;
///
/// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(1));
/// let request = tonic::Request::new(()).with_context(&ctx);
/// assert_eq!(request.context().deadline(), ctx.deadline());
/// assert!(tonic::Request::new(()).context().deadline().is_none()); // none: background
/// ```
pub trait RequestExt {
    /// The request's context; [`Context::background`] when it has none
    /// (the server was built without [`ServerLayer`](crate::ServerLayer)).
    ///
    /// ```
    /// use ctxkit_grpc::RequestExt;
    ///
    /// let request = tonic::Request::new(());
    /// assert!(!request.context().is_done()); // no layer: a background context
    /// ```
    fn context(&self) -> Context;

    /// The request, to be sent under `ctx`: its deadline, cancellation and
    /// forwarded values apply to the call.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_grpc::RequestExt;
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let request = tonic::Request::new(()).with_context(&ctx);
    /// cancel.cancel();
    /// assert!(request.context().is_done()); // the same context
    /// ```
    fn with_context(self, ctx: &Context) -> Self;
}

impl<T> RequestExt for tonic::Request<T> {
    fn context(&self) -> Context {
        self.extensions()
            .get::<Context>()
            .cloned()
            .unwrap_or_else(Context::background)
    }

    fn with_context(mut self, ctx: &Context) -> Self {
        self.extensions_mut().insert(ctx.clone());
        self
    }
}

/// A request carrying `message`, to be sent under `ctx`; the same as
/// `tonic::Request::new(message).with_context(ctx)`.
///
/// ```
/// use ctxkit::Context;
/// use ctxkit_grpc::{request, RequestExt};
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// let request = request(&ctx, "hello");
/// cancel.cancel();
/// assert!(request.context().is_done());
/// ```
pub fn request<T>(ctx: &Context, message: T) -> tonic::Request<T> {
    tonic::Request::new(message).with_context(ctx)
}
