//! A worker pool fed by a bounded queue, stopped by a context.
