//! [`RequestContext`]: the request's context, as a handler argument.

use ctxkit::Context;
use std::ops::Deref;

/// The request's [`Context`], taken from the request's extensions, where
/// [`ContextLayer`](crate::ContextLayer) put it. With feature `axum` it is
/// an axum extractor; it derefs to `Context`.
///
/// Extraction fails with 500 (a [`MissingContext`]) when no layer put a
/// context in the request: a server set up without the layer should fail
/// loudly, not run every request without cancellation.
///
/// ```
/// use ctxkit_http::RequestContext;
///
/// async fn handler(ctx: RequestContext) -> String {
///     match ctx.remaining() {
///         Some(left) => format!("{} ms left", left.as_millis()),
///         None => "no deadline".to_string(),
///     }
/// }
/// let app: axum::Router = axum::Router::new().route("/", axum::routing::get(handler));
/// let app = tower::ServiceBuilder::new()
///     .layer(ctxkit_http::ContextLayer::new(ctxkit::Context::background()))
///     .service(app);
/// # let _ = app;
/// ```
#[derive(Clone, Debug)]
pub struct RequestContext(pub Context);

impl RequestContext {
    /// The context of a request, if a layer put one in its extensions.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_http::RequestContext;
    ///
    /// let mut request = http::Request::new(());
    /// assert!(RequestContext::of(&request).is_none());
    /// request.extensions_mut().insert(Context::background()); // what ContextLayer does
    /// assert!(RequestContext::of(&request).is_some());
    /// ```
    pub fn of<B>(request: &http::Request<B>) -> Option<&Context> {
        request.extensions().get::<Context>()
    }

    /// The context itself.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_http::RequestContext;
    ///
    /// let ctx: Context = RequestContext(Context::background()).into_inner(); // e.g. to move into a thread
    /// assert!(!ctx.is_done());
    /// ```
    pub fn into_inner(self) -> Context {
        self.0
    }
}

impl Deref for RequestContext {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.0
    }
}

/// The rejection of [`RequestContext`] when the request carries no context.
///
/// ```
/// use ctxkit_http::MissingContext;
///
/// assert!(MissingContext.to_string().contains("ContextLayer"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MissingContext;

impl std::fmt::Display for MissingContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "no ctxkit Context in the request's extensions: \
             wrap the service in ctxkit_http::ContextLayer or serve it with ctxkit_http::Server",
        )
    }
}

impl std::error::Error for MissingContext {}

#[cfg(feature = "axum")]
mod axum_impl {
    use super::{MissingContext, RequestContext};
    use axum::extract::FromRequestParts;
    use axum::response::{IntoResponse, Response};
    use http::request::Parts;
    use http::StatusCode;

    impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
        type Rejection = MissingContext;

        async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, MissingContext> {
            parts
                .extensions
                .get::<ctxkit::Context>()
                .cloned()
                .map(RequestContext)
                .ok_or(MissingContext)
        }
    }

    impl IntoResponse for MissingContext {
        fn into_response(self) -> Response {
            (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
        }
    }
}
