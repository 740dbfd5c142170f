//! The client side: outgoing requests that carry their context's deadline
//! and values downstream, and stop when the context ends.
//!
//! - [`PropagateLayer`]: for any `tower::Service<http::Request<_>>` client;
//! - [`RequestBuilderExt::send_ctx`] (feature `reqwest`): for reqwest.
//!
//! A deadline and a request id, sent on by reqwest under the context that
//! carries them:
//!
//! ```
//! use ctxkit::Context;
//! use ctxkit_http::client::RequestBuilderExt;
//! use ctxkit_http::ForwardHeaders;
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
//! # // Answers with the head of the request it received.
//! # fn echo(head: &str) -> String {
//! #     format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{head}", head.len())
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let url = serve(echo).await;
//! let (ctx, _cancel) = Context::background()
//!     .with_value(ForwardHeaders::new().with("x-request-id", "r-7"))
//!     .with_timeout(Duration::from_secs(10));
//! // This server answers with the head of the request it received.
//! let head = reqwest::Client::new().get(&url).send_ctx(&ctx).await?.text().await?;
//! assert!(head.contains("x-request-id: r-7"));
//! assert!(head.contains("grpc-timeout: "));
//! assert!(head.contains("connect-timeout-ms: "));
//! # Ok(())
//! # }
//! ```

mod error;
mod layer;
mod propagation;
#[cfg(feature = "reqwest")]
pub mod reqwest;

#[cfg(feature = "reqwest")]
pub use self::reqwest::{ContextResponse, RequestBuilderExt};
pub use error::ClientError;
pub use layer::{ClientBody, ClientFuture, PropagateLayer, PropagateService};
pub use propagation::Propagation;
