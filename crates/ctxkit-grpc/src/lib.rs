//! Deadlines, cancellation and values across gRPC services, under a [`ctxkit::Context`].
