//! `send_ctx` for reqwest: the client helper on the client most services
//! already hold.

use super::error::ClientError;
use super::propagation::Propagation;
use bytes::Bytes;
use ctxkit::Context;
use std::future::Future;

/// The result of a reqwest call made under a context.
///
/// ```
/// use ctxkit::Context;
/// use ctxkit_http::client::{reqwest::Result, RequestBuilderExt};
///
/// async fn fetch(ctx: &Context, url: &str) -> Result<String> {
///     reqwest::Client::new().get(url).send_ctx(ctx).await?.text().await
/// }
/// # let _ = fetch;
/// ```
pub type Result<T> = std::result::Result<T, ClientError<reqwest::Error>>;

/// Sends a `reqwest::RequestBuilder` under a [`Context`]: the remaining
/// deadline and the forwarded values go along ([`Propagation`]); a context
/// already done fails at once and sends nothing; a context that ends while
/// the request runs aborts it and returns the context's error.
///
/// ```no_run
/// use ctxkit_http::client::RequestBuilderExt;
///
/// # async fn call(ctx: &ctxkit::Context) -> ctxkit_http::client::reqwest::Result<String> {
/// let client = reqwest::Client::new();
/// let response = client.get("http://127.0.0.1:8080/work").send_ctx(ctx).await?;
/// let text = response.text().await?; // also stops when ctx ends
/// # Ok(text) }
/// ```
pub trait RequestBuilderExt {
    /// Sends the request under `ctx`, propagating as [`Propagation::new`].
    ///
    /// ```
    /// use ctxkit::{Context, Error};
    /// use ctxkit_http::client::RequestBuilderExt;
    ///
    /// #[tokio::main(flavor = "current_thread")]
    /// async fn main() {
    ///     let (ctx, cancel) = Context::background().with_cancel();
    ///     cancel.cancel();
    ///     // A done context sends nothing: no server is needed to see it.
    ///     let result = reqwest::Client::new().get("http://127.0.0.1:9/").send_ctx(&ctx).await;
    ///     assert_eq!(result.unwrap_err().context_error(), Some(Error::Canceled));
    /// }
    /// ```
    fn send_ctx(self, ctx: &Context) -> impl Future<Output = Result<ContextResponse>> + Send;

    /// Sends the request under `ctx`, propagating as `propagation` says.
    fn send_ctx_with(
        self,
        ctx: &Context,
        propagation: &Propagation,
    ) -> impl Future<Output = Result<ContextResponse>> + Send;
}

impl RequestBuilderExt for reqwest::RequestBuilder {
    fn send_ctx(self, ctx: &Context) -> impl Future<Output = Result<ContextResponse>> + Send {
        let propagation = Propagation::new();
        let ctx = ctx.clone();
        async move { send(self, &ctx, &propagation).await }
    }

    fn send_ctx_with(
        self,
        ctx: &Context,
        propagation: &Propagation,
    ) -> impl Future<Output = Result<ContextResponse>> + Send {
        let propagation = propagation.clone();
        let ctx = ctx.clone();
        async move { send(self, &ctx, &propagation).await }
    }
}

async fn send(
    builder: reqwest::RequestBuilder,
    ctx: &Context,
    propagation: &Propagation,
) -> Result<ContextResponse> {
    if ctx.is_done() {
        return Err(ClientError::from_context(ctx));
    }
    let (client, request) = builder.build_split();
    let mut request = request.map_err(ClientError::Inner)?;
    if propagation.apply(ctx, request.headers_mut()).is_err() {
        return Err(ClientError::from_context(ctx));
    }
    let response = stopped_by(ctx, client.execute(request)).await?;
    Ok(ContextResponse {
        ctx: ctx.clone(),
        inner: response,
    })
}

/// `future`'s result, or the context's error if it ends first (dropping
/// `future`, which aborts the request).
async fn stopped_by<T>(
    ctx: &Context,
    future: impl Future<Output = std::result::Result<T, reqwest::Error>>,
) -> Result<T> {
    match ctx.run(future).await {
        Ok(result) => result.map_err(ClientError::Inner),
        Err(_) => Err(ClientError::from_context(ctx)),
    }
}

/// A `reqwest::Response` whose body reads stop with the context's error
/// when the context ends. It derefs to the response for its head.
///
/// ```
/// use ctxkit::{Context, Error};
/// use ctxkit_http::client::RequestBuilderExt;
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// #[tokio::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     // A server that sends the head and one chunk of the body, then stalls.
///     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
///     let url = format!("http://{}/", listener.local_addr()?);
///     tokio::spawn(async move {
///         let (mut socket, _) = listener.accept().await.unwrap();
///         let _ = socket.read(&mut [0; 1024]).await;
///         let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n";
///         socket.write_all(head.as_bytes()).await.unwrap();
///         std::future::pending::<()>().await; // the rest never comes
///     });
///
///     let (ctx, cancel) = Context::background().with_cancel();
///     let mut response = reqwest::Client::new().get(&url).send_ctx(&ctx).await?;
///     assert_eq!(response.status(), 200); // the head, through Deref
///     assert_eq!(response.chunk().await?.unwrap(), "hello");
///     cancel.cancel();
///     let err = response.chunk().await.unwrap_err(); // would wait forever
///     assert_eq!(err.context_error(), Some(Error::Canceled));
///     Ok(())
/// }
/// ```
#[derive(Debug)]
pub struct ContextResponse {
    ctx: Context,
    inner: reqwest::Response,
}

impl ContextResponse {
    /// The whole body.
    ///
    /// # Errors
    ///
    /// The context's error if it ends first; reqwest's otherwise.
    pub async fn bytes(self) -> Result<Bytes> {
        stopped_by(&self.ctx, self.inner.bytes()).await
    }

    /// The whole body as text (invalid UTF-8 replaced).
    ///
    /// # Errors
    ///
    /// The context's error if it ends first; reqwest's otherwise.
    pub async fn text(self) -> Result<String> {
        let bytes = self.bytes().await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The next chunk of the body, `None` at its end.
    ///
    /// # Errors
    ///
    /// The context's error if it ends first; reqwest's otherwise.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>> {
        stopped_by(&self.ctx, self.inner.chunk()).await
    }

    /// The response, no longer watched by the context.
    pub fn into_inner(self) -> reqwest::Response {
        self.inner
    }
}

impl std::ops::Deref for ContextResponse {
    type Target = reqwest::Response;

    fn deref(&self) -> &reqwest::Response {
        &self.inner
    }
}
