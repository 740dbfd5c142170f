//! [`PeerAddr`]: the address of the client at the other end of a connection.

use ctxkit::Context;
use std::net::SocketAddr;

/// The remote address of the connection a request came on: a value of
/// every connection's context (and so of every request's), set by
/// [`Server`](crate::Server).
///
/// ```
/// use ctxkit::Context;
/// use ctxkit_http::PeerAddr;
///
/// let ctx = Context::background().with_value(PeerAddr("127.0.0.1:5000".parse().unwrap()));
/// assert_eq!(PeerAddr::of(&ctx).unwrap().port(), 5000);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerAddr(pub SocketAddr);

impl PeerAddr {
    /// The peer address stored in `ctx`, if any.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_http::PeerAddr;
    ///
    /// assert_eq!(PeerAddr::of(&Context::background()), None); // not a served request
    /// ```
    pub fn of(ctx: &Context) -> Option<SocketAddr> {
        ctx.value::<PeerAddr>().map(|peer| peer.0)
    }
}
