//! Compile-fail tests (trybuild): the dropped-handle mistakes the compiler
//! can see must not compile under `#![deny(unused_must_use)]`. (What used
//! to fail to compile and now must, non-`Clone` group errors, boxed stage
//! errors, groups without a turbofish, is compiled by `tests/ergonomics.rs`
//! itself; only failures need trybuild, which then only type-checks.)

#[test]
fn ui() {
    trybuild::TestCases::new().compile_fail("tests/ui/fail/*.rs");
}
