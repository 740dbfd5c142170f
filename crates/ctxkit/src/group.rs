//! Structured concurrency: a group of tasks under one context (errgroup).
