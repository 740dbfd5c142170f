//! The gRPC statuses of context errors, as grpc-go sends them.

use ctxkit::Context;
use ctxkit_http::deadline_header::HeaderError;
use tonic::{Code, Status};

/// Turns an error that may say "a context stopped this" into the
/// [`Status`] grpc-go would answer with: `DEADLINE_EXCEEDED` for a
/// deadline, `CANCELLED` for a cancellation, with Go's messages
/// (`context deadline exceeded`, `context canceled`).
///
/// Rust's orphan rule forbids `From<ctxkit::Error> for Status` outside
/// tonic and ctxkit, hence this trait: `map_err(IntoStatus::into_status)`.
///
/// ```
/// use ctxkit::Context;
/// use ctxkit_grpc::IntoStatus;
/// use tonic::Code;
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// cancel.cancel();
/// let status = ctx.check().map_err(IntoStatus::into_status).unwrap_err();
/// assert_eq!(status.code(), Code::Cancelled);
/// assert_eq!(status.message(), "context canceled");
/// ```
pub trait IntoStatus {
    /// The status for this error.
    ///
    /// ```
    /// use ctxkit::Error;
    /// use ctxkit_grpc::IntoStatus;
    /// use tonic::Code;
    ///
    /// assert_eq!(Error::DeadlineExceeded.into_status().code(), Code::DeadlineExceeded);
    /// assert_eq!(Error::Canceled.into_status().message(), "context canceled");
    /// ```
    fn into_status(self) -> Status;
}

impl IntoStatus for ctxkit::Error {
    fn into_status(self) -> Status {
        Status::new(code_of(self), self.to_string())
    }
}

/// A database call's error: a call its context stopped is
/// `DEADLINE_EXCEEDED` or `CANCELLED` (as for [`ctxkit::Error`]), with the
/// error's message; any other database error is `UNKNOWN`, as grpc-go
/// answers a handler's plain error. Feature `sql`.
///
/// ```
/// use ctxkit_grpc::IntoStatus;
/// use tonic::Code;
///
/// let stopped = ctxkit_sql::Error::from_context(ctxkit::Error::DeadlineExceeded, None);
/// let status = stopped.into_status();
/// assert_eq!(status.code(), Code::DeadlineExceeded);
/// assert_eq!(status.message(), "database call stopped: context deadline exceeded");
/// ```
#[cfg(feature = "sql")]
impl IntoStatus for ctxkit_sql::Error {
    fn into_status(self) -> Status {
        let code = self.context_error().map_or(Code::Unknown, code_of);
        Status::new(code, self.to_string())
    }
}

/// The status of a call whose context `ctx` ended, saying why when the
/// cause is more than the error itself; `None` while `ctx` is live.
///
/// ```
/// use ctxkit::Context;
/// use ctxkit_grpc::{context_status, Ended};
/// use tonic::Code;
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// assert!(context_status(&ctx).is_none());
/// cancel.cancel_with(Ended::ClientGone);
/// let status = context_status(&ctx).unwrap();
/// assert_eq!(status.code(), Code::Cancelled);
/// assert!(status.message().starts_with("context canceled: the client closed"));
/// ```
// Inlined: the layers ask on every poll, and almost always the context is
// live, which is one load; building the status is out of line.
#[inline]
pub fn context_status(ctx: &Context) -> Option<Status> {
    let err = ctx.err()?;
    Some(ended_status(ctx, err))
}

#[cold]
#[inline(never)]
fn ended_status(ctx: &Context, err: ctxkit::Error) -> Status {
    let message = match ctx.cause() {
        Some(cause) if cause.downcast_ref::<ctxkit::Error>().is_none() => {
            format!("{err}: {cause}")
        }
        _ => err.to_string(),
    };
    Status::new(code_of(err), message)
}

/// The status answered to a malformed `grpc-timeout`: `INTERNAL`, as
/// grpc-go's server answers (`malformed grpc-timeout: ...`), with the
/// codec's message naming the header and the expected format.
///
/// ```
/// use ctxkit_grpc::timeout_header_status;
/// use ctxkit_http::deadline_header::TimeoutHeader;
/// use tonic::Code;
///
/// let error = TimeoutHeader::GrpcTimeout.decode(b"5X").unwrap_err();
/// let status = timeout_header_status(&error);
/// assert_eq!(status.code(), Code::Internal);
/// assert!(status.message().contains("'X' is not a unit"));
/// ```
pub fn timeout_header_status(error: &HeaderError) -> Status {
    Status::internal(error.to_string())
}

fn code_of(err: ctxkit::Error) -> Code {
    match err {
        ctxkit::Error::DeadlineExceeded => Code::DeadlineExceeded,
        ctxkit::Error::Canceled => Code::Cancelled,
    }
}

/// The canonical name of a status code, as gRPC's specification and every
/// other implementation spell it: `OK`, `CANCELLED`, `DEADLINE_EXCEEDED`...
///
/// ```
/// use ctxkit_grpc::code_name;
/// use tonic::Code;
///
/// assert_eq!(code_name(Code::DeadlineExceeded), "DEADLINE_EXCEEDED");
/// assert_eq!(code_name(Code::Cancelled), "CANCELLED");
/// ```
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
