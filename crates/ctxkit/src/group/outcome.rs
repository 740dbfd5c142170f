//! What a group's task returns: [`TaskOutcome`].

use std::convert::Infallible;

/// What a task of a group returns: `Result<(), E>`, or `()` for a task that
/// cannot fail.
///
/// A group's error type follows from its tasks: a group whose tasks all
/// return `()` has the error type [`Infallible`] and needs no annotation,
/// where `Ok(())` alone would leave the error type open (E0282/E0283).
/// Sealed: the two implementations below are the only ones.
///
/// All tasks of a group share its error type, so a `()` task only fits an
/// infallible group. A task whose body only panics (`|_| panic!(..)`) is a
/// `()` task as far as the compiler can tell: in a group with an error
/// type, give it a return type (`|_| -> Result<(), MyError> { panic!(..) }`).
///
/// ```
/// use ctxkit::{group, Context};
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// let done = AtomicUsize::new(0);
/// // Tasks that cannot fail return `()`: no `scope::<E, _, _>` needed.
/// group::scope(&Context::background(), |g| {
///     for _ in 0..4 {
///         g.spawn(|_ctx| {
///             done.fetch_add(1, Ordering::Relaxed);
///         });
///     }
/// })
/// .unwrap();
/// assert_eq!(done.into_inner(), 4);
/// ```
pub trait TaskOutcome: sealed::Sealed {
    /// The error a failing task returns; [`Infallible`] for `()`.
    type Error;

    /// The outcome as a `Result`.
    ///
    /// ```
    /// use ctxkit::group::TaskOutcome;
    ///
    /// assert_eq!(().into_result(), Ok(()));
    /// assert_eq!(Err::<(), _>("failed").into_result(), Err("failed"));
    /// ```
    fn into_result(self) -> Result<(), Self::Error>;
}

impl TaskOutcome for () {
    type Error = Infallible;

    fn into_result(self) -> Result<(), Infallible> {
        Ok(())
    }
}

impl<E> TaskOutcome for Result<(), E> {
    type Error = E;

    fn into_result(self) -> Result<(), E> {
        self
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for () {}
    impl<E> Sealed for Result<(), E> {}
}
