//! Who cancelled a context, from where, and when: [`Context::provenance`].
//!
//! Every cancellation records its origin: `cancel()`, `cancel_with`, a
//! dropped [`CancelHandle`], a deadline, or an integration that names itself
//! ([`CancelHandle::cancel_from`]). A context ended by an ancestor records
//! only that: [`Context::provenance`] walks up to the ancestor whose end was
//! its own and counts the levels, so a cancelled subtree of any size costs no
//! more to record than its root.
//!
//! ```
//! use ctxkit::provenance::Origin;
//! use ctxkit::Context;
//!
//! let (request, cancel) = Context::background().with_cancel();
//! let (query, _q) = request.with_value("db").with_cancel();
//! assert!(query.provenance().is_none(), "live: nothing to tell");
//! cancel.cancel();
//! let why = query.provenance().unwrap();
//! assert_eq!(why.origin(), Origin::Cancel);
//! assert_eq!(why.levels_up(), 2); // the value layer, then `request`
//! assert_eq!(why.site().unwrap().line(), line!() - 4);
//! assert!(why.to_string().starts_with("canceled 2 levels up: cancel() at "));
//! ```
//!
//! # What it costs
//!
//! Every context records where it was created (`#[track_caller]` on the
//! deriving methods) and when, in the eight bytes its node already had
//! (see BENCHMARKS.md, "Provenance"): the call site as a 16-bit number
//! looked up in a per-thread cache, the time as a coarse 32-bit tick of
//! about 4 ms, one relaxed load of a word that a thread of this crate,
//! `ctxkit-clock`, advances every tick while contexts are being made (it
//! stops after a second without any, and restarts on the next). So ages
//! and times are exact to a few milliseconds, and an age wraps after about
//! 208 days. A process starved of CPU (an overloaded machine, a CPU quota)
//! may see them late by as long as it is starved: they are diagnostics,
//! while deadlines keep exact `Instant`s. The cancellation itself is
//! recorded in space the scope no longer needs once it has ended.
//!
//! # Dropped handles
//!
//! A `Drop` cannot know its caller, so a context ended by dropping its
//! handle names where the handle was created (the `with_cancel` or
//! `with_timeout` call). Set `CTXKIT_DROP_BACKTRACE=1` in the environment to
//! also capture a backtrace of every such drop
//! ([`Provenance::drop_backtrace`]): slow (microseconds per drop), for
//! debugging. The variable is read once, on the first drop.
//!
//! # Integrations
//!
//! Code that cancels on behalf of something outside the program (a signal,
//! a client that went away, a server shutting down) names it with
//! [`CancelHandle::cancel_from`]; the provenance then reads
//! `canceled: <name>`, and feature `tracing` reports it as the origin.
//!
//! # tracing
//!
//! With feature `tracing`, every cancellation that is its own origin (not
//! one inherited from a parent) emits a `DEBUG` event with target `ctxkit`
//! and the fields `origin`, `site`, `created_at`, `lived_ms`, `err` and
//! `cause`; its message is the provenance's `Display`. Without the feature
//! nothing is compiled in.
//!
//! [`CancelHandle`]: crate::CancelHandle
//! [`CancelHandle::cancel_from`]: crate::CancelHandle::cancel_from

use crate::context::{Context, Node};
use crate::error::Error;
use crate::tree::Age;
use std::backtrace::Backtrace;
use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::panic::Location;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// The coarse clock, in ticks (wrapping): see `clock.rs`.
#[inline]
pub(crate) fn now_ticks() -> u32 {
    crate::clock::now()
}

/// Ticks as a duration.
fn ticks(ticks: u32) -> Duration {
    crate::clock::duration(ticks)
}

// ---------------------------------------------------------------------------
// Call sites and integration names, as 16-bit numbers.

/// A call site or an integration's name, interned: 0 is "unknown" (the
/// table is full, past 65,535 distinct sites).
pub(crate) type SiteId = u16;

#[derive(Clone, Copy)]
enum Site {
    Location(&'static Location<'static>),
    Source(&'static str),
}

struct Interner {
    locations: HashMap<usize, SiteId>,
    sources: HashMap<&'static str, SiteId>,
    /// By id minus one.
    sites: Vec<Site>,
}

fn interner() -> &'static Mutex<Interner> {
    static INTERNER: OnceLock<Mutex<Interner>> = OnceLock::new();
    INTERNER.get_or_init(|| {
        Mutex::new(Interner {
            locations: HashMap::new(),
            sources: HashMap::new(),
            sites: Vec::new(),
        })
    })
}

impl Interner {
    fn push(&mut self, site: Site) -> SiteId {
        match SiteId::try_from(self.sites.len() + 1) {
            Ok(id) => {
                self.sites.push(site);
                id
            }
            Err(_) => 0,
        }
    }
}

/// Slots in the per-thread cache of site ids: a direct-mapped table keyed
/// by the `Location`'s address. A program's hot derivation sites are few.
const CACHE_SLOTS: usize = 256;

thread_local! {
    /// `address << 16 | id`, or 0. Addresses of statics fit in 48 bits.
    static CACHE: [Cell<usize>; CACHE_SLOTS] = const { [const { Cell::new(0) }; CACHE_SLOTS] };
}

/// The id of `location`: a look in this thread's cache, and the first time
/// a site is seen on a thread, a global table's lock.
#[inline]
pub(crate) fn site_id(location: &'static Location<'static>) -> SiteId {
    let address = location as *const Location<'static> as usize;
    cached(address).unwrap_or_else(|| site_id_slow(location, address))
}

#[cold]
#[inline(never)]
fn site_id_slow(location: &'static Location<'static>, address: usize) -> SiteId {
    let id = {
        let mut interner = interner().lock().unwrap_or_else(PoisonError::into_inner);
        match interner.locations.get(&address) {
            Some(&id) => id,
            None => {
                let id = interner.push(Site::Location(location));
                interner.locations.insert(address, id);
                id
            }
        }
    };
    remember(address, id);
    id
}

/// The id of an integration's name, cached per thread by the name's
/// address as call sites are (a name and a `Location` are distinct statics,
/// so their addresses never meet): an integration that cancels once per
/// request must not take a process-wide lock per request.
pub(crate) fn source_id(source: &'static str) -> SiteId {
    // An empty name may share its (dangling) address with anything.
    let address = source.as_ptr() as usize;
    let cached = if source.is_empty() {
        None
    } else {
        cached(address)
    };
    cached.unwrap_or_else(|| source_id_slow(source, address))
}

#[cold]
#[inline(never)]
fn source_id_slow(source: &'static str, address: usize) -> SiteId {
    let id = {
        let mut interner = interner().lock().unwrap_or_else(PoisonError::into_inner);
        match interner.sources.get(source) {
            Some(&id) => id,
            None => {
                let id = interner.push(Site::Source(source));
                interner.sources.insert(source, id);
                id
            }
        }
    };
    if !source.is_empty() {
        remember(address, id);
    }
    id
}

/// This thread's slot for a static's address.
fn cache_slot(address: usize) -> usize {
    // Locations are 8-aligned and 24 bytes apart at least.
    (address >> 3) % CACHE_SLOTS
}

/// The id this thread's cache holds for the static at `address`, if any.
#[inline]
fn cached(address: usize) -> Option<SiteId> {
    CACHE
        .try_with(|cache| {
            let entry = cache[cache_slot(address)].get();
            (entry >> 16 == address).then_some(entry as SiteId)
        })
        .ok()
        .flatten()
}

/// Keeps `id` for the static at `address` in this thread's cache (an
/// address above 48 bits, or the unknown id 0, is not kept).
fn remember(address: usize, id: SiteId) {
    if address >> 48 == 0 && id != 0 {
        let _ =
            CACHE.try_with(|cache| cache[cache_slot(address)].set(address << 16 | usize::from(id)));
    }
}

fn site(id: SiteId) -> Option<Site> {
    let index = usize::from(id).checked_sub(1)?;
    let interner = interner().lock().unwrap_or_else(PoisonError::into_inner);
    interner.sites.get(index).copied()
}

fn location(id: SiteId) -> Option<&'static Location<'static>> {
    match site(id)? {
        Site::Location(location) => Some(location),
        Site::Source(_) => None,
    }
}

/// Where a node whose site is unknown (the table was full) says it was
/// created.
#[track_caller]
fn unknown_site() -> &'static Location<'static> {
    Location::caller()
}

/// The creation site `id` names, or, for the 65,536th distinct site and
/// later, a site in this module.
pub(crate) fn created_at(id: SiteId) -> &'static Location<'static> {
    static UNKNOWN: OnceLock<&'static Location<'static>> = OnceLock::new();
    location(id).unwrap_or_else(|| UNKNOWN.get_or_init(|| unknown_site()))
}

/// How long ago `born` (in ticks) was.
pub(crate) fn age(born: u32) -> Duration {
    ticks(now_ticks().wrapping_sub(born))
}

// ---------------------------------------------------------------------------
// What a scope records when it ends.

/// How a scope ended, as recorded in its status byte (three bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EndKind {
    /// Through its (first) parent: the origin is further up.
    Parent = 0,
    /// A merged scope, through its second parent.
    OtherParent = 1,
    /// `cancel()` or `cancel_with` (the custom-cause bit tells which).
    Handle = 2,
    /// Its handle was dropped.
    Dropped = 3,
    /// Its own deadline.
    Deadline = 4,
    /// `CancelHandle::cancel_from`.
    Integration = 5,
}

impl EndKind {
    pub(crate) fn from_bits(bits: u8) -> EndKind {
        match bits {
            1 => EndKind::OtherParent,
            2 => EndKind::Handle,
            3 => EndKind::Dropped,
            4 => EndKind::Deadline,
            5 => EndKind::Integration,
            _ => EndKind::Parent,
        }
    }
}

/// What an ended scope that was its own origin recorded, read back under
/// its lock.
pub(crate) struct EndRecord {
    pub(crate) kind: EndKind,
    pub(crate) err: Error,
    pub(crate) custom_cause: bool,
    /// The call site of `cancel()`/`cancel_with`, or the integration's name.
    pub(crate) site: SiteId,
    /// When, in ticks.
    pub(crate) at: u32,
}

// ---------------------------------------------------------------------------
// The public value.

/// How a context's cancellation started: the kind of
/// [`Provenance::origin`].
///
/// ```
/// use ctxkit::provenance::Origin;
/// use ctxkit::Context;
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// drop(cancel);
/// assert_eq!(ctx.provenance().unwrap().origin(), Origin::HandleDropped);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Origin {
    /// [`CancelHandle::cancel`](crate::CancelHandle::cancel).
    Cancel,
    /// [`CancelHandle::cancel_with`](crate::CancelHandle::cancel_with)
    /// (or a pattern that cancels with the error that stopped it, such as
    /// an errgroup).
    CancelWith,
    /// The [`CancelHandle`](crate::CancelHandle) was dropped.
    HandleDropped,
    /// The context's own deadline passed (or was moved to the past).
    Deadline,
    /// An integration, by its name
    /// ([`CancelHandle::cancel_from`](crate::CancelHandle::cancel_from)).
    Integration(&'static str),
    /// Not known: the integration's name could not be recorded (more than
    /// 65,535 distinct call sites and names in the process).
    Unknown,
}

/// Who cancelled a context, from where, and when: the value of
/// [`Context::provenance`].
///
/// `Display` reads as a sentence, for logs:
/// `canceled 2 levels up: CancelHandle dropped (created at src/server.rs:80:22), 3.2 s after creation`.
/// `Debug` gives every field.
///
/// Times come from a coarse clock: exact to a few milliseconds (see the
/// [module](crate::provenance) on what it costs and when it runs late).
///
/// ```
/// use ctxkit::provenance::Origin;
/// use ctxkit::{Context, Error};
/// use std::time::Duration;
///
/// let (ctx, _cancel) = Context::background().with_timeout(Duration::ZERO);
/// let why = ctx.provenance().unwrap();
/// assert_eq!(why.origin(), Origin::Deadline);
/// assert_eq!(why.err(), Error::DeadlineExceeded);
/// assert_eq!(why.levels_up(), 0);
/// assert_eq!(why.created_at().line(), line!() - 5);
/// assert!(why.deadline().is_some());
/// ```
#[derive(Clone)]
pub struct Provenance {
    origin: Origin,
    levels_up: usize,
    err: Error,
    site: Option<&'static Location<'static>>,
    created_at: &'static Location<'static>,
    deadline: Option<Instant>,
    canceled_at: Instant,
    lived: Duration,
    drop_backtrace: Option<Arc<Backtrace>>,
}

impl Provenance {
    /// How the cancellation started.
    ///
    /// ```
    /// use ctxkit::provenance::Origin;
    ///
    /// let (ctx, cancel) = ctxkit::Context::background().with_cancel();
    /// cancel.cancel_with(ctxkit::Message::new("reloaded"));
    /// assert_eq!(ctx.provenance().unwrap().origin(), Origin::CancelWith);
    /// ```
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// How many contexts up the chain the origin is: 0 when this context
    /// was cancelled itself, 1 when its parent was, and so on. Every layer
    /// counts (a `with_value` layer too); through a
    /// [`merge`](Context::merge), the parent that ended it is followed.
    ///
    /// ```
    /// let (root, cancel) = ctxkit::Context::background().with_cancel();
    /// let (child, _c) = root.with_cancel();
    /// cancel.cancel();
    /// assert_eq!(root.provenance().unwrap().levels_up(), 0);
    /// assert_eq!(child.provenance().unwrap().levels_up(), 1);
    /// ```
    pub fn levels_up(&self) -> usize {
        self.levels_up
    }

    /// The error the cancellation gave: [`Error::DeadlineExceeded`] for a
    /// deadline, [`Error::Canceled`] otherwise.
    ///
    /// ```
    /// let (ctx, cancel) = ctxkit::Context::background().with_cancel();
    /// cancel.cancel();
    /// assert_eq!(ctx.provenance().unwrap().err(), ctxkit::Error::Canceled);
    /// ```
    pub fn err(&self) -> Error {
        self.err
    }

    /// Where the cancellation was called: the `cancel()` or `cancel_with`
    /// call; for a dropped handle, where the handle was created (a drop has
    /// no caller). `None` for a deadline and an integration.
    ///
    /// ```
    /// let (ctx, cancel) = ctxkit::Context::background().with_cancel();
    /// cancel.cancel();
    /// assert_eq!(ctx.provenance().unwrap().site().unwrap().line(), line!() - 1);
    /// ```
    pub fn site(&self) -> Option<&'static Location<'static>> {
        self.site
    }

    /// Where the context whose cancellation this was (the origin) was
    /// created: its `with_cancel`, `with_timeout`, `merge`... call.
    ///
    /// ```
    /// let (ctx, cancel) = ctxkit::Context::background().with_cancel();
    /// cancel.cancel();
    /// assert_eq!(ctx.provenance().unwrap().created_at().line(), line!() - 2);
    /// ```
    pub fn created_at(&self) -> &'static Location<'static> {
        self.created_at
    }

    /// The deadline that passed, for [`Origin::Deadline`].
    ///
    /// ```
    /// use std::time::Instant;
    ///
    /// let at = Instant::now();
    /// let (ctx, _cancel) = ctxkit::Context::background().with_deadline(at);
    /// assert_eq!(ctx.provenance().unwrap().deadline(), Some(at));
    /// ```
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// When the cancellation happened (to a few milliseconds).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    ///
    /// let (ctx, cancel) = ctxkit::Context::background().with_cancel();
    /// cancel.cancel();
    /// let ago = Instant::now() - ctx.provenance().unwrap().canceled_at();
    /// assert!(ago < Duration::from_secs(60));
    /// ```
    pub fn canceled_at(&self) -> Instant {
        self.canceled_at
    }

    /// How long the origin context had lived when it was cancelled (to a
    /// few milliseconds).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let (ctx, cancel) = ctxkit::Context::background().with_cancel();
    /// cancel.cancel();
    /// assert!(ctx.provenance().unwrap().lived() < Duration::from_secs(60));
    /// ```
    pub fn lived(&self) -> Duration {
        self.lived
    }

    /// A backtrace of the drop that ended the context, for
    /// [`Origin::HandleDropped`] when the environment variable
    /// `CTXKIT_DROP_BACKTRACE=1` was set (read once, on the first drop).
    ///
    /// ```
    /// let (ctx, cancel) = ctxkit::Context::background().with_cancel();
    /// cancel.cancel();
    /// assert!(ctx.provenance().unwrap().drop_backtrace().is_none());
    /// ```
    pub fn drop_backtrace(&self) -> Option<&Backtrace> {
        self.drop_backtrace.as_deref()
    }
}

/// `canceled 2 levels up: CancelHandle dropped (created at src/server.rs:80:22), 3.2 s after creation`.
impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.origin {
            Origin::Deadline => "deadline exceeded",
            _ => "canceled",
        })?;
        match self.levels_up {
            0 => {}
            1 => f.write_str(" 1 level up")?,
            n => write!(f, " {n} levels up")?,
        }
        f.write_str(": ")?;
        match self.origin {
            Origin::Cancel => f.write_str("cancel()")?,
            Origin::CancelWith => f.write_str("cancel_with()")?,
            Origin::HandleDropped => {
                write!(f, "CancelHandle dropped (created at {})", self.created_at)?
            }
            Origin::Deadline => write!(f, "deadline (set at {})", self.created_at)?,
            Origin::Integration(name) => f.write_str(name)?,
            Origin::Unknown => f.write_str("unknown origin")?,
        }
        if let (Origin::Cancel | Origin::CancelWith, Some(site)) = (self.origin, self.site) {
            write!(f, " at {site}")?;
        }
        write!(f, ", {} after creation", Age(self.lived))
    }
}

impl fmt::Debug for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provenance")
            .field("origin", &self.origin)
            .field("levels_up", &self.levels_up)
            .field("err", &self.err)
            .field("site", &self.site)
            .field("created_at", &self.created_at)
            .field("deadline", &self.deadline)
            .field("canceled_at", &self.canceled_at)
            .field("lived", &self.lived)
            .field(
                "drop_backtrace",
                &self.drop_backtrace.as_ref().map(|_| "captured"),
            )
            .finish()
    }
}

/// [`Context::provenance`]: walks up from `ctx` to the scope whose end was
/// its own.
pub(crate) fn of(ctx: &Context) -> Option<Provenance> {
    ctx.err()?;
    let mut node: &Node = ctx.node()?;
    let mut levels_up = 0;
    loop {
        let next = match node.scope() {
            Some(scope) => match scope.end_kind()? {
                EndKind::Parent => node.parent().node(),
                EndKind::OtherParent => node.other_parent_context()?.node(),
                _ => return Some(build(node, levels_up)),
            },
            // A value layer: its scope is above it.
            None => node.parent().node(),
        };
        node = next?;
        levels_up += 1;
    }
}

fn build(node: &Node, levels_up: usize) -> Provenance {
    let scope = node.scope().expect("an origin is a scope");
    let record = scope.end_record().expect("an origin has ended");
    let created_at = node.created_at();
    let origin = match record.kind {
        EndKind::Handle if record.custom_cause => Origin::CancelWith,
        EndKind::Handle => Origin::Cancel,
        EndKind::Dropped => Origin::HandleDropped,
        EndKind::Deadline => Origin::Deadline,
        EndKind::Integration => match site(record.site) {
            Some(Site::Source(name)) => Origin::Integration(name),
            _ => Origin::Unknown,
        },
        EndKind::Parent | EndKind::OtherParent => unreachable!("not an origin"),
    };
    let site = match record.kind {
        EndKind::Handle => location(record.site),
        EndKind::Dropped => Some(created_at),
        _ => None,
    };
    let now = now_ticks();
    let canceled_at = Instant::now()
        .checked_sub(ticks(now.wrapping_sub(record.at)))
        .unwrap_or_else(Instant::now);
    let drop_backtrace = match record.kind {
        EndKind::Dropped => drop_backtrace_of(node),
        _ => None,
    };
    Provenance {
        origin,
        levels_up,
        err: record.err,
        site,
        created_at,
        deadline: (record.kind == EndKind::Deadline)
            .then(|| scope.own_deadline().instant())
            .flatten(),
        canceled_at,
        lived: ticks(record.at.wrapping_sub(node.born())),
        drop_backtrace,
    }
}

// ---------------------------------------------------------------------------
// Backtraces of dropped handles (opt-in).

const UNREAD: u8 = 0;
const OFF: u8 = 1;
const ON: u8 = 2;

/// Whether `CTXKIT_DROP_BACKTRACE=1` was set: read once, then one relaxed
/// load per drop.
#[inline]
pub(crate) fn drop_backtraces() -> bool {
    static STATE: AtomicU8 = AtomicU8::new(UNREAD);
    match STATE.load(Ordering::Relaxed) {
        OFF => false,
        ON => true,
        _ => {
            let on = std::env::var_os("CTXKIT_DROP_BACKTRACE").is_some_and(|value| value == "1");
            STATE.store(if on { ON } else { OFF }, Ordering::Relaxed);
            on
        }
    }
}

/// The most recent drop backtraces, by node address. Bounded: the oldest
/// go first.
struct Backtraces {
    by_node: HashMap<usize, (u64, Arc<Backtrace>)>,
    order: VecDeque<(usize, u64)>,
    next: u64,
}

const KEPT_BACKTRACES: usize = 4096;

fn backtraces() -> &'static Mutex<Backtraces> {
    static BACKTRACES: OnceLock<Mutex<Backtraces>> = OnceLock::new();
    BACKTRACES.get_or_init(|| {
        Mutex::new(Backtraces {
            by_node: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
        })
    })
}

/// Records a backtrace for the drop about to end `node`, before it ends
/// it, so that whoever sees it ended by the drop finds the backtrace.
/// Returns the entry's number, for [`forget_drop_backtrace`].
#[cold]
pub(crate) fn record_drop_backtrace(node: &Node) -> u64 {
    let backtrace = Arc::new(Backtrace::force_capture());
    let address = node as *const Node as usize;
    let mut table = backtraces().lock().unwrap_or_else(PoisonError::into_inner);
    let number = table.next;
    table.next += 1;
    // A node at this address before ours has been freed: its entry is stale.
    table.by_node.insert(address, (number, backtrace));
    table.order.push_back((address, number));
    while table.order.len() > KEPT_BACKTRACES {
        let (old, old_number) = table.order.pop_front().expect("non-empty");
        if table
            .by_node
            .get(&old)
            .is_some_and(|(n, _)| *n == old_number)
        {
            table.by_node.remove(&old);
        }
    }
    number
}

/// Removes the backtrace recorded as `number` for `node`: the drop did not
/// end it (something else had).
#[cold]
pub(crate) fn forget_drop_backtrace(node: &Node, number: u64) {
    let address = node as *const Node as usize;
    let mut table = backtraces().lock().unwrap_or_else(PoisonError::into_inner);
    if table
        .by_node
        .get(&address)
        .is_some_and(|(n, _)| *n == number)
    {
        table.by_node.remove(&address);
    }
}

fn drop_backtrace_of(node: &Node) -> Option<Arc<Backtrace>> {
    if !drop_backtraces() {
        return None;
    }
    let address = node as *const Node as usize;
    let table = backtraces().lock().unwrap_or_else(PoisonError::into_inner);
    table
        .by_node
        .get(&address)
        .map(|(_, backtrace)| backtrace.clone())
}

// ---------------------------------------------------------------------------
// tracing.

/// Emits the `tracing` event of a cancellation that `node` originated.
#[cfg(feature = "tracing")]
#[cold]
pub(crate) fn emit(node: &Node) {
    if !tracing::enabled!(target: "ctxkit", tracing::Level::DEBUG) {
        return;
    }
    let provenance = build(node, 0);
    let origin = match provenance.origin {
        Origin::Cancel => "cancel",
        Origin::CancelWith => "cancel_with",
        Origin::HandleDropped => "handle_dropped",
        Origin::Deadline => "deadline",
        Origin::Integration(name) => name,
        Origin::Unknown => "unknown",
    };
    let cause = node
        .scope()
        .and_then(crate::cancel::Scope::cause)
        .map(|cause| cause.to_string());
    tracing::debug!(
        target: "ctxkit",
        origin,
        site = provenance.site.map(tracing::field::display),
        created_at = %provenance.created_at,
        lived_ms = provenance.lived.as_millis() as u64,
        err = %provenance.err,
        cause = cause.as_deref(),
        "{provenance}"
    );
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn site_ids_are_stable_and_distinct() {
        let here = Location::caller();
        let there = {
            #[track_caller]
            fn at() -> &'static Location<'static> {
                Location::caller()
            }
            at()
        };
        let a = site_id(here);
        assert_ne!(a, 0);
        assert_eq!(site_id(here), a, "cached");
        assert_ne!(site_id(there), a);
        assert_eq!(location(a).map(|l| l.line()), Some(here.line()));
        let s = source_id("test source");
        assert_eq!(source_id("test source"), s);
        assert!(matches!(site(s), Some(Site::Source("test source"))));
    }

    #[test]
    fn human_durations() {
        assert_eq!(Age(Duration::from_micros(300)).to_string(), "< 1 ms");
        assert_eq!(Age(Duration::from_millis(850)).to_string(), "850 ms");
        assert_eq!(Age(Duration::from_millis(3210)).to_string(), "3.2 s");
        assert_eq!(Age(Duration::from_secs(270)).to_string(), "4 min 30 s");
        assert_eq!(Age(Duration::from_secs(7200)).to_string(), "2 h 0 min");
    }
}

#[cfg(all(test, feature = "tracing", not(loom)))]
mod tracing_tests {
    use crate::Context;
    use std::fmt;
    use std::sync::{Arc, Mutex};
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    /// Every event's target, level and fields.
    type Events = Vec<(String, tracing::Level, Vec<(String, String)>)>;

    /// Keeps every event.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Events>>);

    struct Fields(Vec<(String, String)>);

    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            self.0.push((field.name().to_owned(), format!("{value:?}")));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.push((field.name().to_owned(), value.to_owned()));
        }
    }

    impl Subscriber for Capture {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut fields = Fields(Vec::new());
            event.record(&mut fields);
            let metadata = event.metadata();
            self.0.lock().unwrap().push((
                metadata.target().to_owned(),
                *metadata.level(),
                fields.0,
            ));
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    // One test, not two: scoped subscribers set and dropped by parallel
    // tests race on tracing's callsite interest cache.
    #[test]
    fn origin_cancellations_are_events_with_their_provenance() {
        an_origin_cancellation_is_one_event_with_its_provenance();
        drops_deadlines_and_integrations_are_events_too();
    }

    fn an_origin_cancellation_is_one_event_with_its_provenance() {
        let capture = Capture::default();
        let (ctx, child, line) = tracing::subscriber::with_default(capture.clone(), || {
            let (ctx, cancel) = Context::background().with_cancel();
            let (child, _c) = ctx.with_cancel();
            let (grandchild, _g) = child.with_cancel();
            cancel.cancel_with(crate::Message::new("reloaded"));
            drop(grandchild);
            (ctx, child, line!() - 2)
        });
        let events = capture.0.lock().unwrap();
        // One event: the children's inherited ends are not origins.
        assert_eq!(events.len(), 1, "{:?}", events);
        let (target, level, fields) = &events[0];
        assert_eq!(target, "ctxkit");
        assert_eq!(*level, tracing::Level::DEBUG);
        let field = |name: &str| {
            fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("no {name} in {fields:?}"))
        };
        assert_eq!(field("origin"), "cancel_with");
        assert!(field("site").contains(&format!("provenance.rs:{line}:")));
        assert!(field("created_at").contains("provenance.rs:"));
        assert_eq!(field("err"), "context canceled");
        assert_eq!(field("cause"), "reloaded");
        assert!(field("lived_ms").parse::<u64>().is_ok());
        assert_eq!(field("message"), ctx.provenance().unwrap().to_string());
        assert!(child.provenance().is_some());
    }

    fn drops_deadlines_and_integrations_are_events_too() {
        let capture = Capture::default();
        tracing::subscriber::with_default(capture.clone(), || {
            let (_a, cancel) = Context::background().with_cancel();
            drop(cancel);
            let _b = Context::background().with_timeout(std::time::Duration::ZERO);
            let (_c, cancel) = Context::background().with_cancel();
            cancel.cancel_from("test integration");
        });
        let events = capture.0.lock().unwrap();
        let origins: Vec<_> = events
            .iter()
            .map(|(_, _, fields)| {
                fields
                    .iter()
                    .find(|(n, _)| n == "origin")
                    .map(|(_, v)| v.clone())
                    .unwrap()
            })
            .collect();
        assert_eq!(
            origins,
            // The timeout's handle is dropped after its deadline ended it:
            // no event for that.
            ["handle_dropped", "deadline", "test integration"]
        );
    }
}
