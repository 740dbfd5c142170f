//! `IntoStatus` for `ctxkit_sql::Error`, on real SQLite errors.

use ctxkit::Context;
use ctxkit_grpc::IntoStatus;
use ctxkit_sql::sqlite::ConnectionExt;
use tonic::Code;

#[test]
fn a_query_its_context_stopped_is_cancelled_or_deadline_exceeded() {
    let mut conn = rusqlite::Connection::open_in_memory().unwrap();
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let status = conn
        .execute_ctx(&ctx, "SELECT 1", [])
        .unwrap_err()
        .into_status();
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");

    let (ctx, _cancel) = Context::background().with_timeout(std::time::Duration::ZERO);
    let status = conn
        .execute_ctx(&ctx, "SELECT 1", [])
        .unwrap_err()
        .into_status();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
}

#[test]
fn any_other_database_error_is_unknown() {
    let mut conn = rusqlite::Connection::open_in_memory().unwrap();
    let error = conn
        .execute_ctx(&Context::background(), "NOT SQL", [])
        .unwrap_err();
    let status = error.into_status();
    assert_eq!(status.code(), Code::Unknown, "{status:?}");
    assert!(
        status.message().contains("syntax error"),
        "{}",
        status.message()
    );
}
