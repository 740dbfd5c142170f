//! Query cancellation under a [`ctxkit::Context`].
