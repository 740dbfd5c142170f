//! [`ContextBody`]: a response body that ends its request's context when
//! its last byte has been handed over.

use super::request_end::RequestEnd;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::pin::Pin;
use std::task::{ready, Context as TaskContext, Poll};

pin_project! {
    /// The response body of a request served under
    /// [`ContextLayer`](crate::ContextLayer): the handler's body, unchanged,
    /// that keeps the request's context live until the body's end has been
    /// handed to the connection (then the context ends with
    /// [`Ended::Completed`](crate::Ended::Completed)), or until the
    /// connection drops it first ([`Ended::ClientGone`](crate::Ended::ClientGone)).
    ///
    /// The layer's own answers (400 for a malformed deadline header) are a
    /// fixed text body.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_http::{ContextLayer, Ended};
    /// use http_body_util::BodyExt;
    /// use std::convert::Infallible;
    /// use std::sync::{Arc, Mutex};
    /// use tower::{service_fn, Layer, ServiceExt};
    ///
    /// #[tokio::main(flavor = "current_thread")]
    /// async fn main() {
    ///     let seen = Arc::new(Mutex::new(None));
    ///     let handler = service_fn({
    ///         let seen = seen.clone();
    ///         move |request: http::Request<String>| {
    ///             *seen.lock().unwrap() = request.extensions().get::<Context>().cloned();
    ///             async { Ok::<_, Infallible>(http::Response::new(String::from("hello"))) }
    ///         }
    ///     });
    ///     let service = ContextLayer::new(Context::background()).layer(handler);
    ///     let response = service.oneshot(http::Request::new(String::new())).await.unwrap();
    ///     let ctx = seen.lock().unwrap().clone().unwrap();
    ///     assert!(!ctx.is_done()); // the body has not been sent yet
    ///     let body = response.into_body().collect().await.unwrap().to_bytes();
    ///     assert_eq!(body, "hello");
    ///     assert_eq!(Ended::of(&ctx), Some(Ended::Completed));
    /// }
    /// ```
    pub struct ContextBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    /// The end lives beside the handler's body rather than beside the
    /// enum: the fixed text needs none, and the body is 24 bytes smaller.
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B, end: Option<RequestEnd> },
        Text { text: Option<Bytes> },
    }
}

impl<B> ContextBody<B> {
    pub(crate) fn new(body: B, end: Option<RequestEnd>) -> ContextBody<B> {
        ContextBody {
            kind: Kind::Inner { body, end },
        }
    }

    /// A body of fixed text, with no context to end.
    pub(crate) fn text(text: String) -> ContextBody<B> {
        ContextBody {
            kind: Kind::Text {
                text: Some(Bytes::from(text)),
            },
        }
    }
}

impl<B> Body for ContextBody<B>
where
    B: Body,
    B::Data: From<Bytes>,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { mut body, end } => {
                let frame = ready!(body.as_mut().poll_frame(cx));
                // The end: no more frames, an error (the stream is over
                // either way), or a frame after which the body says so
                // (the connection may never poll again).
                if frame.as_ref().is_none_or(Result::is_err) || body.is_end_stream() {
                    if let Some(end) = end.take() {
                        end.complete();
                    }
                }
                Poll::Ready(frame)
            }
            KindProj::Text { text } => Poll::Ready(text.take().map(|t| Ok(Frame::data(t.into())))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body, end } => {
                let done = body.is_end_stream();
                // hyper asks before polling and drops an empty body
                // unpolled: that is its end too.
                if done {
                    if let Some(end) = end {
                        end.mark_answered();
                    }
                }
                done
            }
            Kind::Text { text } => text.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body, .. } => body.size_hint(),
            Kind::Text { text } => {
                SizeHint::with_exact(text.as_ref().map_or(0, |t| t.len() as u64))
            }
        }
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for ContextBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Inner { body, .. } => f.debug_tuple("ContextBody").field(body).finish(),
            Kind::Text { text } => f.debug_tuple("ContextBody").field(text).finish(),
        }
    }
}
