//! `send_ctx` for reqwest: the client helper on the client most services
//! already hold.
//!
//! Import [`RequestBuilderExt`] and end a reqwest call with `send_ctx(&ctx)`
//! instead of `send()`; read the body through the [`ContextResponse`] it
//! returns, and the reads stop when the context ends too.
//!
//! ```
//! use ctxkit::{Context, Error};
//! use ctxkit_http::client::RequestBuilderExt;
//! use std::time::Duration;
//!
//! # // A server on 127.0.0.1 that answers every request with `reply(its head)`,
//! # // then keeps the connection open; the URL to reach it.
//! # async fn serve(reply: fn(&str) -> String) -> String {
//! #     use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! #     let url = format!("http://{}/", listener.local_addr().unwrap());
//! #     tokio::spawn(async move {
//! #         loop {
//! #             let (mut socket, _) = listener.accept().await.unwrap();
//! #             tokio::spawn(async move {
//! #                 let (mut head, mut buf) = (Vec::new(), [0; 1024]);
//! #                 while !head.ends_with(b"\r\n\r\n") {
//! #                     match socket.read(&mut buf).await {
//! #                         Ok(0) | Err(_) => return,
//! #                         Ok(n) => head.extend_from_slice(&buf[..n]),
//! #                     }
//! #                 }
//! #                 let reply = reply(&String::from_utf8_lossy(&head));
//! #                 socket.write_all(reply.as_bytes()).await.unwrap();
//! #                 std::future::pending::<()>().await
//! #             });
//! #         }
//! #     });
//! #     url
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let url = serve(|_| "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello".into()).await;
//! let client = reqwest::Client::new();
//! let (ctx, cancel) = Context::background().with_timeout(Duration::from_secs(5));
//! let text = client.get(&url).send_ctx(&ctx).await?.text().await?;
//! assert_eq!(text, "hello");
//!
//! cancel.cancel();
//! let err = client.get(&url).send_ctx(&ctx).await.unwrap_err();
//! assert_eq!(err.context_error(), Some(Error::Canceled), "nothing was sent");
//! # Ok(())
//! # }
//! ```

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
///
/// # // A server on 127.0.0.1 that answers every request with `reply(its head)`,
/// # // then keeps the connection open; the URL to reach it.
/// # async fn serve(reply: fn(&str) -> String) -> String {
/// #     use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// #     let url = format!("http://{}/", listener.local_addr().unwrap());
/// #     tokio::spawn(async move {
/// #         loop {
/// #             let (mut socket, _) = listener.accept().await.unwrap();
/// #             tokio::spawn(async move {
/// #                 let (mut head, mut buf) = (Vec::new(), [0; 1024]);
/// #                 while !head.ends_with(b"\r\n\r\n") {
/// #                     match socket.read(&mut buf).await {
/// #                         Ok(0) | Err(_) => return,
/// #                         Ok(n) => head.extend_from_slice(&buf[..n]),
/// #                     }
/// #                 }
/// #                 let reply = reply(&String::from_utf8_lossy(&head));
/// #                 socket.write_all(reply.as_bytes()).await.unwrap();
/// #                 std::future::pending::<()>().await
/// #             });
/// #         }
/// #     });
/// #     url
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
/// # let url = serve(|_| "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello".into()).await;
/// assert_eq!(fetch(&Context::background(), &url).await?, "hello");
/// # Ok(())
/// # }
/// ```
pub type Result<T> = std::result::Result<T, ClientError<reqwest::Error>>;

/// Sends a `reqwest::RequestBuilder` under a [`Context`]: the remaining
/// deadline and the forwarded values go along ([`Propagation`]); a context
/// already done fails at once and sends nothing; a context that ends while
/// the request runs aborts it and returns the context's error.
///
/// ```
/// use ctxkit::Context;
/// use ctxkit_http::client::RequestBuilderExt;
/// use std::time::Duration;
///
/// # // A server on 127.0.0.1 that answers every request with `reply(its head)`,
/// # // then keeps the connection open; the URL to reach it.
/// # async fn serve(reply: fn(&str) -> String) -> String {
/// #     use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// #     let url = format!("http://{}/", listener.local_addr().unwrap());
/// #     tokio::spawn(async move {
/// #         loop {
/// #             let (mut socket, _) = listener.accept().await.unwrap();
/// #             tokio::spawn(async move {
/// #                 let (mut head, mut buf) = (Vec::new(), [0; 1024]);
/// #                 while !head.ends_with(b"\r\n\r\n") {
/// #                     match socket.read(&mut buf).await {
/// #                         Ok(0) | Err(_) => return,
/// #                         Ok(n) => head.extend_from_slice(&buf[..n]),
/// #                     }
/// #                 }
/// #                 let reply = reply(&String::from_utf8_lossy(&head));
/// #                 socket.write_all(reply.as_bytes()).await.unwrap();
/// #                 std::future::pending::<()>().await
/// #             });
/// #         }
/// #     });
/// #     url
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let url = serve(|_| "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ndone".into()).await;
/// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(5));
/// let client = reqwest::Client::new();
/// let response = client.get(&url).send_ctx(&ctx).await?;
/// let text = response.text().await?; // also stops when ctx ends
/// assert_eq!(text, "done");
/// # Ok(())
/// # }
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
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_http::client::{Propagation, RequestBuilderExt};
    /// use ctxkit_http::deadline_header::TimeoutHeader;
    /// use std::time::Duration;
    ///
    /// # // A server on 127.0.0.1 that answers every request with `reply(its head)`,
    /// # // then keeps the connection open; the URL to reach it.
    /// # async fn serve(reply: fn(&str) -> String) -> String {
    /// #     use tokio::io::{AsyncReadExt, AsyncWriteExt};
    /// #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    /// #     let url = format!("http://{}/", listener.local_addr().unwrap());
    /// #     tokio::spawn(async move {
    /// #         loop {
    /// #             let (mut socket, _) = listener.accept().await.unwrap();
    /// #             tokio::spawn(async move {
    /// #                 let (mut head, mut buf) = (Vec::new(), [0; 1024]);
    /// #                 while !head.ends_with(b"\r\n\r\n") {
    /// #                     match socket.read(&mut buf).await {
    /// #                         Ok(0) | Err(_) => return,
    /// #                         Ok(n) => head.extend_from_slice(&buf[..n]),
    /// #                     }
    /// #                 }
    /// #                 let reply = reply(&String::from_utf8_lossy(&head));
    /// #                 socket.write_all(reply.as_bytes()).await.unwrap();
    /// #                 std::future::pending::<()>().await
    /// #             });
    /// #         }
    /// #     });
    /// #     url
    /// # }
    /// # // Answers with the head of the request it received.
    /// # fn echo(head: &str) -> String {
    /// #     format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{head}", head.len())
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let url = serve(echo).await;
    /// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(10));
    /// // A Connect backend: its own deadline header only.
    /// let connect_only = Propagation::new().deadline_headers(&[TimeoutHeader::ConnectTimeoutMs]);
    /// let request = reqwest::Client::new().get(&url);
    /// // This server answers with the head of the request it received.
    /// let head = request.send_ctx_with(&ctx, &connect_only).await?.text().await?;
    /// assert!(head.contains("connect-timeout-ms: "));
    /// assert!(!head.contains("grpc-timeout"));
    /// # Ok(())
    /// # }
    /// ```
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
    ///
    /// ```
    /// use ctxkit::{Context, Error};
    /// use ctxkit_http::client::RequestBuilderExt;
    /// use std::time::Duration;
    ///
    /// # // A server on 127.0.0.1 that answers every request with `reply(its head)`,
    /// # // then keeps the connection open; the URL to reach it.
    /// # async fn serve(reply: fn(&str) -> String) -> String {
    /// #     use tokio::io::{AsyncReadExt, AsyncWriteExt};
    /// #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    /// #     let url = format!("http://{}/", listener.local_addr().unwrap());
    /// #     tokio::spawn(async move {
    /// #         loop {
    /// #             let (mut socket, _) = listener.accept().await.unwrap();
    /// #             tokio::spawn(async move {
    /// #                 let (mut head, mut buf) = (Vec::new(), [0; 1024]);
    /// #                 while !head.ends_with(b"\r\n\r\n") {
    /// #                     match socket.read(&mut buf).await {
    /// #                         Ok(0) | Err(_) => return,
    /// #                         Ok(n) => head.extend_from_slice(&buf[..n]),
    /// #                     }
    /// #                 }
    /// #                 let reply = reply(&String::from_utf8_lossy(&head));
    /// #                 socket.write_all(reply.as_bytes()).await.unwrap();
    /// #                 std::future::pending::<()>().await
    /// #             });
    /// #         }
    /// #     });
    /// #     url
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let whole = serve(|_| "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello".into()).await;
    /// # let stalls = serve(|_| "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhello".into()).await;
    /// let client = reqwest::Client::new();
    /// let body = client.get(&whole).send_ctx(&Context::background()).await?.bytes().await?;
    /// assert_eq!(body, "hello");
    ///
    /// // This server sends 5 of the 100 bytes it announces, then stalls.
    /// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(200));
    /// let response = client.get(&stalls).send_ctx(&ctx).await?;
    /// let err = response.bytes().await.unwrap_err(); // would wait forever
    /// assert_eq!(err.context_error(), Some(Error::DeadlineExceeded));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn bytes(self) -> Result<Bytes> {
        stopped_by(&self.ctx, self.inner.bytes()).await
    }

    /// The whole body as text (invalid UTF-8 replaced).
    ///
    /// # Errors
    ///
    /// The context's error if it ends first; reqwest's otherwise.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_http::client::RequestBuilderExt;
    ///
    /// # // A server on 127.0.0.1 that answers every request with `reply(its head)`,
    /// # // then keeps the connection open; the URL to reach it.
    /// # async fn serve(reply: fn(&str) -> String) -> String {
    /// #     use tokio::io::{AsyncReadExt, AsyncWriteExt};
    /// #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    /// #     let url = format!("http://{}/", listener.local_addr().unwrap());
    /// #     tokio::spawn(async move {
    /// #         loop {
    /// #             let (mut socket, _) = listener.accept().await.unwrap();
    /// #             tokio::spawn(async move {
    /// #                 let (mut head, mut buf) = (Vec::new(), [0; 1024]);
    /// #                 while !head.ends_with(b"\r\n\r\n") {
    /// #                     match socket.read(&mut buf).await {
    /// #                         Ok(0) | Err(_) => return,
    /// #                         Ok(n) => head.extend_from_slice(&buf[..n]),
    /// #                     }
    /// #                 }
    /// #                 let reply = reply(&String::from_utf8_lossy(&head));
    /// #                 socket.write_all(reply.as_bytes()).await.unwrap();
    /// #                 std::future::pending::<()>().await
    /// #             });
    /// #         }
    /// #     });
    /// #     url
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let url = serve(|_| "HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nnaïve".into()).await;
    /// let ctx = Context::background();
    /// let text = reqwest::Client::new().get(&url).send_ctx(&ctx).await?.text().await?;
    /// assert_eq!(text, "naïve");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn text(self) -> Result<String> {
        let bytes = self.bytes().await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The next chunk of the body, `None` at its end.
    ///
    /// # Errors
    ///
    /// The context's error if it ends first; reqwest's otherwise.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_http::client::RequestBuilderExt;
    ///
    /// # // A server on 127.0.0.1 that answers every request with `reply(its head)`,
    /// # // then keeps the connection open; the URL to reach it.
    /// # async fn serve(reply: fn(&str) -> String) -> String {
    /// #     use tokio::io::{AsyncReadExt, AsyncWriteExt};
    /// #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    /// #     let url = format!("http://{}/", listener.local_addr().unwrap());
    /// #     tokio::spawn(async move {
    /// #         loop {
    /// #             let (mut socket, _) = listener.accept().await.unwrap();
    /// #             tokio::spawn(async move {
    /// #                 let (mut head, mut buf) = (Vec::new(), [0; 1024]);
    /// #                 while !head.ends_with(b"\r\n\r\n") {
    /// #                     match socket.read(&mut buf).await {
    /// #                         Ok(0) | Err(_) => return,
    /// #                         Ok(n) => head.extend_from_slice(&buf[..n]),
    /// #                     }
    /// #                 }
    /// #                 let reply = reply(&String::from_utf8_lossy(&head));
    /// #                 socket.write_all(reply.as_bytes()).await.unwrap();
    /// #                 std::future::pending::<()>().await
    /// #             });
    /// #         }
    /// #     });
    /// #     url
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let url = serve(|_| {
    /// #     let body = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    /// #     format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{body}")
    /// # }).await;
    /// let ctx = Context::background();
    /// let mut response = reqwest::Client::new().get(&url).send_ctx(&ctx).await?;
    /// let mut body = Vec::new();
    /// while let Some(chunk) = response.chunk().await? {
    ///     body.extend_from_slice(&chunk);
    /// }
    /// assert_eq!(body, b"hello world");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn chunk(&mut self) -> Result<Option<Bytes>> {
        stopped_by(&self.ctx, self.inner.chunk()).await
    }

    /// The response, no longer watched by the context.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_http::client::RequestBuilderExt;
    ///
    /// # // A server on 127.0.0.1 that answers every request with `reply(its head)`,
    /// # // then keeps the connection open; the URL to reach it.
    /// # async fn serve(reply: fn(&str) -> String) -> String {
    /// #     use tokio::io::{AsyncReadExt, AsyncWriteExt};
    /// #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    /// #     let url = format!("http://{}/", listener.local_addr().unwrap());
    /// #     tokio::spawn(async move {
    /// #         loop {
    /// #             let (mut socket, _) = listener.accept().await.unwrap();
    /// #             tokio::spawn(async move {
    /// #                 let (mut head, mut buf) = (Vec::new(), [0; 1024]);
    /// #                 while !head.ends_with(b"\r\n\r\n") {
    /// #                     match socket.read(&mut buf).await {
    /// #                         Ok(0) | Err(_) => return,
    /// #                         Ok(n) => head.extend_from_slice(&buf[..n]),
    /// #                     }
    /// #                 }
    /// #                 let reply = reply(&String::from_utf8_lossy(&head));
    /// #                 socket.write_all(reply.as_bytes()).await.unwrap();
    /// #                 std::future::pending::<()>().await
    /// #             });
    /// #         }
    /// #     });
    /// #     url
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let url = serve(|_| "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello".into()).await;
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let response = reqwest::Client::new().get(&url).send_ctx(&ctx).await?;
    /// let response: reqwest::Response = response.into_inner();
    /// cancel.cancel();
    /// // Read to the end: the context no longer watches it.
    /// assert_eq!(response.text().await?, "hello");
    /// # Ok(())
    /// # }
    /// ```
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
