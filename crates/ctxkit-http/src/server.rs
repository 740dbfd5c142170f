//! The server side: a context for every request.

mod body;
mod deadline;
mod extract;
mod layer;
mod peer;
mod request_end;
mod serve;

pub use body::ContextBody;
pub use deadline::MalformedDeadline;
pub use extract::{MissingContext, RequestContext};
pub use layer::{ContextLayer, ContextService, ResponseFuture};
pub use peer::PeerAddr;
pub use serve::{Server, ShutdownReport};
