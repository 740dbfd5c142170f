//! The progress handler that ties one call to its context.

use super::PROGRESS_OPS;
use crate::Error;
use ctxkit::Context;
use rusqlite::{Connection, ErrorCode, Params, Row};

/// Runs `f` on `conn` with a progress handler that stops SQLite once `ctx`
/// is done; the handler is removed when `f` returns or panics, so it never
/// outlives its call.
pub(crate) fn run<T>(
    conn: &mut Connection,
    ctx: &Context,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> Result<T, Error> {
    if ctx.is_done() {
        return Err(Error::stopped(ctx, None));
    }
    let installed = Installed::new(conn, ctx)?;
    let result = f(installed.conn);
    drop(installed);
    result.map_err(|e| classify(ctx, e))
}

/// Prepares `sql`, maps every row with `f` and checks `ctx` between rows.
pub(crate) fn collect_rows<T, P, F>(
    conn: &Connection,
    ctx: &Context,
    sql: &str,
    params: P,
    mut f: F,
) -> rusqlite::Result<Vec<T>>
where
    P: Params,
    F: FnMut(&Row<'_>) -> rusqlite::Result<T>,
{
    let mut stmt = conn.prepare(sql)?;
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(f(row)?);
        if ctx.is_done() {
            // Reported like SQLite's own stop, so `classify` maps both alike.
            return Err(interrupted());
        }
    }
    Ok(out)
}

/// An error from a call under `ctx`: SQLite's interrupt is the context's stop
/// when the context is done (anyone else's `sqlite3_interrupt` stays a driver
/// error).
pub(crate) fn classify(ctx: &Context, error: rusqlite::Error) -> Error {
    let is_interrupt = error.sqlite_error_code() == Some(ErrorCode::OperationInterrupted);
    if is_interrupt && ctx.is_done() {
        Error::stopped(ctx, Some(Box::new(error)))
    } else {
        Error::driver(error)
    }
}

fn interrupted() -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_INTERRUPT),
        Some("interrupted: the context ended between rows".into()),
    )
}

/// The installed handler; dropping it removes the handler.
struct Installed<'c> {
    conn: &'c mut Connection,
}

impl<'c> Installed<'c> {
    fn new(conn: &'c mut Connection, ctx: &Context) -> Result<Installed<'c>, Error> {
        let watched = ctx.clone();
        conn.progress_handler(PROGRESS_OPS, Some(move || watched.is_done()))
            .map_err(Error::driver)?;
        Ok(Installed { conn })
    }
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        // Removing a handler cannot fail in SQLite; rusqlite only reports a
        // closed connection, which has no handler left to remove.
        let _ = self.conn.progress_handler(0, None::<fn() -> bool>);
    }
}
