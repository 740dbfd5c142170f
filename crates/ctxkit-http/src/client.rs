//! The client side: outgoing requests that carry their context's deadline
//! and values downstream, and stop when the context ends.
//!
//! - [`PropagateLayer`]: for any `tower::Service<http::Request<_>>` client;
//! - [`RequestBuilderExt::send_ctx`] (feature `reqwest`): for reqwest.

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
