//! The behaviours of Go's context tests (`../shared/GO_CONFORMANCE.md`,
//! "Roots" through "after_func"), restated for ctxkit, one module a section.

mod after_func;
mod causes;
mod deadlines;
mod roots;
mod support;
mod tree;
mod values;
mod waits;
mod without_cancel;
