//! The progress handler that ties one call to its context.

use super::PROGRESS_OPS;
use crate::Error;
use ctxkit::Context;
use rusqlite::{Connection, ErrorCode, Params, Row};
use std::cell::RefCell;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Weak};

/// Runs `f` on `conn` with its progress handler watching `ctx`: SQLite
/// stops once `ctx` is done. The handler watches `ctx` only while `f` runs
/// (until it returns or panics), so it never stops another call.
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

/// Rows mapped between two checks of the context in `collect_rows`.
const ROW_CHECK: usize = 16;

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
        // Every few rows: SQLite's handler covers the stepping, this covers
        // slow work in `f`, and a check per row would show in a long scan.
        if out.len() % ROW_CHECK == 0 && ctx.is_done() {
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

/// The context of the call running on one connection, read by that
/// connection's progress handler.
///
/// The handler is installed once per connection and owns the only strong
/// reference to its `Slot`; the per-thread table below keeps a `Weak`. When
/// the connection closes, or someone installs another progress handler, the
/// closure and its `Slot` are dropped, the `Weak` dies, and the next call
/// installs a fresh handler: a dead entry can never be mistaken for a live
/// one, even if a new connection reuses the address.
#[derive(Default)]
struct Slot {
    /// The running call's context, null between calls (the handler then
    /// never stops anything).
    current: AtomicPtr<Context>,
}

impl Slot {
    fn should_stop(&self) -> bool {
        // Acquire pairs with the Release store in `Installed::new`: the
        // context behind the pointer is fully visible.
        let current = self.current.load(Ordering::Acquire);
        // SAFETY: a non-null pointer is the `&Context` of the call now running
        // on this connection; `Installed` clears it (also on unwind) before
        // that borrow ends, and SQLite only calls the handler from inside the
        // statement calls made during it.
        !current.is_null() && unsafe { (*current).is_done() }
    }
}

thread_local! {
    /// Connections (by their `sqlite3*` address) this thread installed a
    /// handler on. Few per thread, so a vector.
    static SLOTS: RefCell<Vec<(usize, Weak<Slot>)>> = const { RefCell::new(Vec::new()) };
}

/// The slot of `conn`'s handler, installing the handler if it is missing.
fn slot(conn: &mut Connection) -> Result<Arc<Slot>, Error> {
    // SAFETY: the pointer is only used as a key, never dereferenced.
    let key = unsafe { conn.handle() } as usize;
    let known = SLOTS.with_borrow_mut(|slots| {
        let found = slots.iter().find(|(k, _)| *k == key)?.1.upgrade();
        if found.is_none() || slots.len() > 32 {
            slots.retain(|(_, weak)| weak.strong_count() > 0);
        }
        found
    });
    if let Some(slot) = known {
        return Ok(slot);
    }
    let slot = Arc::new(Slot::default());
    let handler_slot = slot.clone();
    conn.progress_handler(PROGRESS_OPS, Some(move || handler_slot.should_stop()))
        .map_err(Error::driver)?;
    SLOTS.with_borrow_mut(|slots| {
        slots.retain(|(k, _)| *k != key);
        slots.push((key, Arc::downgrade(&slot)));
    });
    Ok(slot)
}

/// The call's context published to the handler; dropping it (also on
/// unwind) withdraws it.
struct Installed<'c> {
    conn: &'c mut Connection,
    slot: Arc<Slot>,
}

impl<'c> Installed<'c> {
    fn new(conn: &'c mut Connection, ctx: &Context) -> Result<Installed<'c>, Error> {
        let slot = slot(conn)?;
        slot.current
            .store(ctx as *const Context as *mut Context, Ordering::Release);
        Ok(Installed { conn, slot })
    }
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        self.slot.current.store(ptr::null_mut(), Ordering::Release);
    }
}
