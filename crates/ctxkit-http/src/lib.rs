//! A [`ctxkit::Context`] for every HTTP request, and clients that pass the
//! deadline on.

#![warn(missing_docs)]

pub mod deadline_header;
