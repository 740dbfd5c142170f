//! A live picture of a context tree: [`Context::tree`] lists a context's
//! live descendants, and [`Tree`] renders them as indented text, a Mermaid
//! `graph TD`, Graphviz DOT, or (feature `serde`) JSON.
//!
//! ```
//! use ctxkit::Context;
//! use std::time::Duration;
//!
//! let (server, _stop) = Context::background().with_cancel();
//! let request = server.with_value("req-7");
//! let (call, _done) = request.with_timeout(Duration::from_secs(5));
//! # let _ = &call;
//!
//! let tree = server.tree();
//! assert_eq!(tree.len(), 3); // the server, the value layer, the call
//! print!("{tree}");
//! // WithCancel live · age 0 ms · created at src/main.rs:4:49
//! // └─ WithValue(&str) live · age 0 ms · created at src/main.rs:5:23
//! //    └─ WithDeadline live · 5 s left · age 0 ms · created at src/main.rs:6:34
//! assert!(tree.to_mermaid().starts_with("graph TD"));
//! assert!(tree.to_dot().starts_with("digraph"));
//! ```
//!
//! # What a snapshot sees
//!
//! The tree is kept for cancellation, so a snapshot lists what cancellation
//! can reach: every live cancel, deadline and merged context below the
//! starting point, and the value and `without_cancel` layers on the way to
//! them. A value or `without_cancel` layer with no cancellable context below
//! it is invisible: nothing points down at it. Contexts that nobody holds
//! any more are gone (they are freed at once), and a context that has ended
//! has no children any more: its cancellation took them out.
//!
//! [`Context::background`] keeps no bookkeeping for its children: they
//! cost nothing to create and nothing points at them. A snapshot from
//! `background()` (or from a value layer on it) therefore says so
//! ([`Tree::untracked`]), unless [`track_roots`] was switched on before
//! those children were made.
//!
//! Snapshots are weakly consistent: each scope is read under its own lock,
//! one at a time, and never blocks a cancellation for longer than deriving
//! a child would. A snapshot taken while the tree changes may show a
//! context live whose cancellation is under way (its children already
//! gone), may miss contexts created during the snapshot, and may show a
//! child that is being dropped. Each entry is consistent in itself.

use crate::cancel::Scope;
use crate::context::Context;
use crate::error::Error;
use crate::node_ref::{self, NodeRef, WeakNodeRef};
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// A snapshot of a context and its live descendants (see the
/// [module docs](self) for what it can and cannot see).
///
/// Entries are in breadth-first order from the starting context, which is
/// entry 0; each names its parent by index. `Display` is
/// [`to_text`](Tree::to_text).
///
/// ```
/// use ctxkit::Context;
///
/// let (root, _cancel) = Context::background().with_cancel();
/// let (_a, _a_cancel) = root.with_cancel();
/// let (_b, _b_cancel) = root.with_cancel();
/// let tree = root.tree();
/// assert_eq!(tree.len(), 3);
/// assert_eq!(tree.children(0).count(), 2);
/// assert!(tree.entries().iter().all(|entry| entry.err.is_none()));
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Tree {
    entries: Vec<Entry>,
    untracked: bool,
}

/// One context in a [`Tree`].
///
/// ```
/// use ctxkit::tree::{Kind, State};
/// use ctxkit::Context;
/// use std::time::Duration;
///
/// let (root, _cancel) = Context::background().with_cancel();
/// let (_call, _call_cancel) = root.with_timeout(Duration::from_secs(60));
/// let tree = root.tree();
/// let call = &tree.entries()[1];
/// assert_eq!(call.kind, Kind::Deadline);
/// assert_eq!(call.state, State::Live);
/// assert_eq!(call.parent, Some(0));
/// assert!(call.remaining.unwrap() <= Duration::from_secs(60));
/// assert!(call.created_at.as_deref().unwrap().contains(".rs:"));
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct Entry {
    /// This entry's index in [`Tree::entries`].
    pub id: usize,
    /// The entry it was derived from; `None` for the starting context.
    pub parent: Option<usize>,
    /// For a [merged](Kind::Merged) context, its second parent, when that
    /// is in the snapshot too.
    pub other_parent: Option<usize>,
    /// What the context adds to its parent.
    pub kind: Kind,
    /// Live, or how it ended.
    pub state: State,
    /// Why it ended (its [`cause`](Context::cause), displayed); `None`
    /// while live.
    pub err: Option<String>,
    /// Time left until its deadline (its own or inherited), at the snapshot;
    /// zero once passed; `None` without a deadline.
    pub remaining: Option<Duration>,
    /// How long ago it was created; `None` for `background()`.
    pub age: Option<Duration>,
    /// Where it was created (`file:line:column`); `None` for
    /// `background()`.
    pub created_at: Option<String>,
    /// Threads, tasks and channels waiting for its end (`wait`, `sleep`,
    /// `done()`, `done_receiver()`); counted on cancel, deadline and merged
    /// contexts, where they register.
    pub waiters: usize,
    /// Its pending [`after_func`](Context::after_func) callbacks.
    pub after_funcs: usize,
}

/// What a context adds to its parent.
///
/// ```
/// use ctxkit::tree::Kind;
/// use ctxkit::Context;
///
/// let ctx = Context::background().with_value(1u8);
/// let tree = ctx.tree();
/// assert_eq!(tree.entries()[0].kind, Kind::Value("u8".into()));
/// assert_eq!(Kind::Value("u8".into()).to_string(), "WithValue(u8)");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum Kind {
    /// [`Context::background`]: the root.
    Background,
    /// [`Context::todo`].
    Todo,
    /// [`Context::with_cancel`], or a deadline context that inherited an
    /// earlier deadline and keeps none of its own.
    Cancel,
    /// A context with a deadline of its own ([`Context::with_timeout`] and
    /// friends).
    Deadline,
    /// [`Context::merge`]: ended by either of two parents.
    Merged,
    /// [`Context::with_value`], with the value's type name.
    Value(String),
    /// [`Context::without_cancel`].
    WithoutCancel,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Background => f.write_str("context.Background"),
            Kind::Todo => f.write_str("context.TODO"),
            Kind::Cancel => f.write_str("WithCancel"),
            Kind::Deadline => f.write_str("WithDeadline"),
            Kind::Merged => f.write_str("Merge"),
            Kind::Value(type_name) => write!(f, "WithValue({type_name})"),
            Kind::WithoutCancel => f.write_str("WithoutCancel"),
        }
    }
}

/// Whether a context is live, and if not, which [`Error`] ended it.
///
/// ```
/// use ctxkit::tree::State;
/// use ctxkit::Context;
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// let (_child, _c) = ctx.with_cancel();
/// assert_eq!(ctx.tree().entries()[0].state, State::Live);
/// cancel.cancel();
/// assert_eq!(ctx.tree().entries()[0].state, State::Canceled);
/// assert_eq!(ctx.tree().len(), 1, "its end took its children out");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum State {
    /// Not done.
    Live,
    /// Ended with [`Error::Canceled`].
    Canceled,
    /// Ended with [`Error::DeadlineExceeded`].
    DeadlineExceeded,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Live => "live",
            State::Canceled => "canceled",
            State::DeadlineExceeded => "deadline exceeded",
        })
    }
}

/// Whether children of [`Context::background`] (and of value layers on it)
/// are recorded from now on, so that [`background().tree()`](Context::tree)
/// can list them. Off by default.
///
/// Off, it costs one relaxed load when such a child is created. On, each
/// such child is recorded (a weak reference in a process-wide list, pruned
/// as it grows), so a process that creates many short-lived roots pays a
/// lock per root. Children created while it was off are never listed.
///
/// ```
/// use ctxkit::{tree, Context};
///
/// tree::track_roots(true);
/// let (_job, _cancel) = Context::background().with_cancel();
/// let all = Context::background().tree();
/// assert!(!all.untracked());
/// assert!(all.len() >= 2);
/// tree::track_roots(false);
/// ```
pub fn track_roots(on: bool) {
    TRACK_ROOTS.store(on, Ordering::Relaxed);
}

/// Read on every root scope's creation; see [`track_roots`].
static TRACK_ROOTS: AtomicBool = AtomicBool::new(false);

/// The root scopes recorded while [`track_roots`] was on.
static ROOTS: Mutex<Roots> = Mutex::new(Roots {
    nodes: Vec::new(),
    prune_at: 64,
});

struct Roots {
    nodes: Vec<WeakNodeRef>,
    /// The length at which the next insert first drops the dead entries:
    /// twice the live count at the last pruning, so that pruning costs
    /// amortised constant time per root and the list stays within twice the
    /// live roots (plus 64).
    prune_at: usize,
}

/// Whether root scopes are being recorded (one relaxed load: the flag
/// orders nothing).
#[inline]
pub(crate) fn roots_tracked() -> bool {
    TRACK_ROOTS.load(Ordering::Relaxed)
}

/// Records a scope with no scope above it, while [`track_roots`] is on.
#[cold]
pub(crate) fn track_root(node: &NodeRef) {
    let weak = NodeRef::downgrade(node);
    let mut dead = Vec::new();
    let mut live = Vec::new();
    {
        let mut roots = ROOTS.lock().unwrap_or_else(|poison| poison.into_inner());
        if roots.nodes.len() >= roots.prune_at {
            // Upgrading under the lock is safe; the strong references are
            // dropped after it (a last one may release its node).
            let nodes = std::mem::take(&mut roots.nodes);
            for weak in nodes {
                match weak.upgrade() {
                    Some(strong) => {
                        live.push(strong);
                        roots.nodes.push(weak);
                    }
                    None => dead.push(weak),
                }
            }
            roots.prune_at = (roots.nodes.len() * 2).max(64);
        }
        roots.nodes.push(weak);
    }
    drop(live);
    drop(dead);
}

/// The recorded root scopes that still live.
fn live_roots() -> Vec<NodeRef> {
    let roots = ROOTS.lock().unwrap_or_else(|poison| poison.into_inner());
    roots
        .nodes
        .iter()
        .filter_map(WeakNodeRef::upgrade)
        .collect()
}

impl Context {
    /// A snapshot of this context and its live descendants, to print or to
    /// inspect: see [`Tree`] and the [`tree`](crate::tree) module for what
    /// it shows and how consistent it is.
    ///
    /// It never blocks cancellation: each scope is read under its own lock,
    /// for as long as copying its list of children takes. A tree of 10,000
    /// contexts is read and rendered in milliseconds.
    ///
    /// ```
    /// use ctxkit::Context;
    ///
    /// let (root, _cancel) = Context::background().with_cancel();
    /// let workers: Vec<_> = (0..3).map(|_| root.with_cancel()).collect();
    /// let tree = root.tree();
    /// assert_eq!(tree.children(0).count(), workers.len());
    /// ```
    pub fn tree(&self) -> Tree {
        Snapshot::new(self).run()
    }
}

/// The state of one snapshot: the entries so far, and which node each is.
struct Snapshot<'a> {
    root: &'a Context,
    entries: Vec<Entry>,
    /// Entry index by node address.
    index: HashMap<usize, usize>,
    /// Everything the snapshot holds, released with it, outside every lock:
    /// a last strong reference dropped releases its node, which takes locks.
    held: Vec<NodeRef>,
    spare: Vec<WeakNodeRef>,
    untracked: bool,
}

impl<'a> Snapshot<'a> {
    fn new(root: &'a Context) -> Snapshot<'a> {
        Snapshot {
            root,
            entries: Vec::new(),
            index: HashMap::new(),
            held: Vec::new(),
            spare: Vec::new(),
            untracked: false,
        }
    }

    fn run(mut self) -> Tree {
        self.entries.push(entry_of(self.root, 0, None));
        if let Some(node) = self.root.node_ref() {
            self.index.insert(address(node), 0);
        }
        // Scopes whose children are still to be read, in order.
        let mut pending = std::collections::VecDeque::new();
        match self.root.scope_node() {
            Some(scope) => pending.push_back(scope.clone()),
            None if roots_tracked() => {
                for root in live_roots() {
                    if self.link(&root) {
                        pending.push_back(root.clone());
                    }
                    self.held.push(root);
                }
            }
            None => self.untracked = true,
        }
        // Merged contexts met through their second parent, with that
        // parent's entry: listed under their first parent if the walk meets
        // it, under the second otherwise (see `link`).
        let mut second_parents: Vec<(NodeRef, usize)> = Vec::new();
        loop {
            while let Some(scope_node) = pending.pop_front() {
                let scope = scope_node.scope().expect("pending holds scope nodes");
                let Some(view) = scope.snapshot(&mut self.spare) else {
                    continue; // ended: no children any more
                };
                let owner = self.index.get(&address(&scope_node)).copied();
                if let Some(owner) = owner {
                    self.entries[owner].waiters = view.waiters;
                    self.entries[owner].after_funcs = view.callbacks;
                }
                for child in view.children {
                    let second = owner.filter(|_| is_second_parent(&child, scope));
                    match second {
                        Some(second) => second_parents.push((child.clone(), second)),
                        None if self.link(&child) => pending.push_back(child.clone()),
                        None => {}
                    }
                    self.held.push(child);
                }
                self.held.push(scope_node);
            }
            if second_parents.is_empty() {
                break;
            }
            for (child, second) in second_parents.drain(..) {
                if let Some(&known) = self.index.get(&address(&child)) {
                    self.entries[known].other_parent = Some(second);
                } else {
                    // Its first parent is outside the snapshot: list it
                    // under the second, alone.
                    self.add_chain(vec![child.clone()], second);
                    pending.push_back(child);
                }
            }
        }
        Tree {
            entries: self.entries,
            untracked: self.untracked,
        }
    }

    /// Adds `child`, a scope registered with the scope of an entry (or a
    /// recorded root), and the layers between it and the entry it hangs
    /// from. Returns whether it is new and below the starting context: then
    /// its own children are to be read.
    fn link(&mut self, child: &NodeRef) -> bool {
        if self.index.contains_key(&address(child)) {
            return false;
        }
        // The chain from `child` up to the first node listed already.
        let mut chain = vec![child.clone()];
        let attach_to = loop {
            let top = chain.last().expect("starts with the child");
            match top.parent().node_ref() {
                Some(parent) => {
                    if let Some(&known) = self.index.get(&address(parent)) {
                        break Some(known);
                    }
                    if parent.scope().is_some() {
                        // Another scope, not listed: `child` hangs below
                        // the starting context's scope but not below it.
                        break None;
                    }
                    chain.push(parent.clone());
                }
                // Reached `background()`: ours if we started there.
                None => break self.root.node_ref().is_none().then_some(0),
            }
        };
        match attach_to {
            Some(parent) => {
                self.add_chain(chain, parent);
                true
            }
            None => {
                self.held.extend(chain);
                false
            }
        }
    }

    /// Lists `chain` (a node, then its parents, upwards) below `parent`.
    fn add_chain(&mut self, chain: Vec<NodeRef>, mut parent: usize) {
        for node in chain.into_iter().rev() {
            let id = self.entries.len();
            let context = Context::from_node_ref(node.clone());
            self.entries.push(entry_of(&context, id, Some(parent)));
            self.index.insert(address(&node), id);
            self.held.push(node);
            parent = id;
        }
    }
}

/// Whether `child` is a merged context registered with `scope` as its
/// second parent.
fn is_second_parent(child: &NodeRef, scope: &Scope) -> bool {
    child
        .other_parent()
        .is_some_and(|(other, _)| std::ptr::eq(other, scope))
}

fn address(node: &NodeRef) -> usize {
    node_ref::raw_address(node)
}

/// The entry for `context`, without its registrations (read with its
/// scope's children).
fn entry_of(context: &Context, id: usize, parent: Option<usize>) -> Entry {
    let node = context.node_ref();
    Entry {
        id,
        parent,
        other_parent: None,
        kind: node.map_or(Kind::Background, |node| node.kind()),
        state: match context.err() {
            None => State::Live,
            Some(Error::Canceled) => State::Canceled,
            Some(Error::DeadlineExceeded) => State::DeadlineExceeded,
        },
        err: context.cause().map(|cause| cause.to_string()),
        remaining: context.remaining(),
        age: node.map(|node| node.age()),
        created_at: node.map(|node| node.created_at().to_string()),
        waiters: 0,
        after_funcs: 0,
    }
}

impl Tree {
    /// Every entry, the starting context first, in breadth-first order.
    ///
    /// ```
    /// let (root, _c) = ctxkit::Context::background().with_cancel();
    /// assert_eq!(root.tree().entries()[0].id, 0);
    /// ```
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// How many contexts the snapshot lists, the starting one included.
    ///
    /// ```
    /// let (root, _c) = ctxkit::Context::background().with_cancel();
    /// assert_eq!(root.tree().len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always false: a snapshot lists at least its starting context.
    ///
    /// ```
    /// assert!(!ctxkit::Context::background().tree().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the starting context keeps no bookkeeping of its children
    /// ([`Context::background`], or a value layer on it, while
    /// [`track_roots`] is off): then the snapshot cannot list them.
    ///
    /// ```
    /// let tree = ctxkit::Context::background().tree();
    /// # if !tree.untracked() { return; } // another test switched tracking on
    /// assert!(tree.untracked());
    /// assert!(tree.to_text().contains("not tracked"));
    /// ```
    pub fn untracked(&self) -> bool {
        self.untracked
    }

    /// The entries derived from entry `id` (through their first parent).
    ///
    /// ```
    /// let (root, _c) = ctxkit::Context::background().with_cancel();
    /// let _child = root.with_cancel();
    /// assert_eq!(root.tree().children(0).count(), 1);
    /// ```
    pub fn children(&self, id: usize) -> impl Iterator<Item = &Entry> + '_ {
        self.entries
            .iter()
            .filter(move |entry| entry.parent == Some(id))
    }

    /// The tree as indented text, one context per line.
    ///
    /// ```
    /// let (root, _c) = ctxkit::Context::background().with_cancel();
    /// let _child = root.with_cancel();
    /// let text = root.tree().to_text();
    /// assert!(text.starts_with("WithCancel live"));
    /// assert!(text.lines().nth(1).unwrap().starts_with("└─ WithCancel live"));
    /// ```
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let children = self.children_lists();
        let mut stack: Vec<(usize, String, bool)> = vec![(0, String::new(), true)];
        while let Some((id, prefix, last)) = stack.pop() {
            let entry = &self.entries[id];
            let (branch, indent) = match (id, last) {
                (0, _) => ("", ""),
                (_, true) => ("└─ ", "   "),
                (_, false) => ("├─ ", "│  "),
            };
            let _ = writeln!(out, "{prefix}{branch}{}", Describe(entry, self));
            let below = format!("{prefix}{indent}");
            let kids = &children[id];
            for (n, &kid) in kids.iter().enumerate().rev() {
                stack.push((kid, below.clone(), n + 1 == kids.len()));
            }
        }
        if self.untracked {
            out.push_str(
                "(children of context.Background are not tracked: call \
                 ctxkit::tree::track_roots(true) before creating them)\n",
            );
        }
        out
    }

    /// The tree as a Mermaid flowchart (`graph TD`): one node per context,
    /// labelled with its kind, state, deadline, age and creation site; an
    /// arrow from each parent; a dotted arrow from a merge's second parent;
    /// ended contexts in the `done` class.
    ///
    /// ```
    /// let (root, _c) = ctxkit::Context::background().with_cancel();
    /// let _child = root.with_cancel();
    /// let mermaid = root.tree().to_mermaid();
    /// assert!(mermaid.starts_with("graph TD\n"));
    /// assert!(mermaid.contains("  n0 --> n1\n"));
    /// ```
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("graph TD\n");
        for entry in &self.entries {
            let label = self.label_lines(entry).join("<br/>");
            let _ = writeln!(out, "  n{}[\"{}\"]", entry.id, mermaid_escape(&label));
        }
        for entry in &self.entries {
            if let Some(parent) = entry.parent {
                let _ = writeln!(out, "  n{parent} --> n{}", entry.id);
            }
            if let Some(other) = entry.other_parent {
                let _ = writeln!(out, "  n{other} -.-> n{}", entry.id);
            }
        }
        let done: Vec<String> = self
            .entries
            .iter()
            .filter(|entry| entry.state != State::Live)
            .map(|entry| format!("n{}", entry.id))
            .collect();
        if !done.is_empty() {
            out.push_str("  classDef done fill:#eee,stroke:#999,color:#666\n");
            let _ = writeln!(out, "  class {} done", done.join(","));
        }
        out
    }

    /// The tree as a Graphviz DOT digraph, for `dot -Tsvg`: one box per
    /// context, an edge from each parent, a dashed edge from a merge's
    /// second parent, ended contexts grey.
    ///
    /// ```
    /// let (root, _c) = ctxkit::Context::background().with_cancel();
    /// let _child = root.with_cancel();
    /// let dot = root.tree().to_dot();
    /// assert!(dot.starts_with("digraph ctxkit {\n"));
    /// assert!(dot.contains("  n0 -> n1;\n"));
    /// ```
    pub fn to_dot(&self) -> String {
        let mut out =
            String::from("digraph ctxkit {\n  node [shape=box, fontname=\"monospace\"];\n");
        for entry in &self.entries {
            let label = self
                .label_lines(entry)
                .iter()
                .map(|line| dot_escape(line))
                .collect::<Vec<_>>()
                .join("\\n");
            let style = if entry.state == State::Live {
                ""
            } else {
                ", color=gray, fontcolor=gray"
            };
            let _ = writeln!(out, "  n{} [label=\"{label}\"{style}];", entry.id);
        }
        for entry in &self.entries {
            if let Some(parent) = entry.parent {
                let _ = writeln!(out, "  n{parent} -> n{};", entry.id);
            }
            if let Some(other) = entry.other_parent {
                let _ = writeln!(out, "  n{other} -> n{} [style=dashed];", entry.id);
            }
        }
        out.push_str("}\n");
        out
    }

    /// The tree as JSON: `{"entries": [...], "untracked": false}`, one
    /// object per [`Entry`] with its fields (durations as
    /// `{"secs", "nanos"}`); [`from_json`](Tree::from_json) reads it back.
    ///
    /// ```
    /// let (root, _c) = ctxkit::Context::background().with_cancel();
    /// let tree = root.tree();
    /// let json = tree.to_json();
    /// assert!(json.starts_with("{\"entries\":[{\"id\":0,"));
    /// assert_eq!(ctxkit::tree::Tree::from_json(&json).unwrap(), tree);
    /// ```
    #[cfg(feature = "serde")]
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a tree always serializes")
    }

    /// Reads a tree written by [`to_json`](Tree::to_json).
    ///
    /// ```
    /// let err = ctxkit::tree::Tree::from_json("{}").unwrap_err();
    /// assert!(err.to_string().contains("missing field"));
    /// ```
    #[cfg(feature = "serde")]
    pub fn from_json(json: &str) -> Result<Tree, serde_json::Error> {
        serde_json::from_str(json)
    }

    fn children_lists(&self) -> Vec<Vec<usize>> {
        let mut children = vec![Vec::new(); self.entries.len()];
        for entry in &self.entries {
            if let Some(parent) = entry.parent {
                children[parent].push(entry.id);
            }
        }
        children
    }

    /// The label of an entry in the graph renderings, one line per fact.
    fn label_lines(&self, entry: &Entry) -> Vec<String> {
        let mut lines = vec![entry.kind.to_string(), state_line(entry)];
        if let Some(remaining) = entry.remaining {
            lines.push(format!("{} left", Human(remaining)));
        }
        if let Some(age) = entry.age {
            lines.push(format!("age {}", Age(age)));
        }
        if let Some(site) = &entry.created_at {
            lines.push(site.clone());
        }
        if entry.waiters > 0 {
            lines.push(format!("{} waiting", entry.waiters));
        }
        if entry.after_funcs > 0 {
            lines.push(format!("{} after_func", entry.after_funcs));
        }
        lines
    }
}

impl fmt::Display for Tree {
    /// As [`to_text`](Tree::to_text).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

/// The state, and the cause when it says more than the error does.
fn state_line(entry: &Entry) -> String {
    let err = match entry.state {
        State::Live => return "live".to_owned(),
        State::Canceled => Error::Canceled,
        State::DeadlineExceeded => Error::DeadlineExceeded,
    };
    match &entry.err {
        Some(cause) if *cause != err.to_string() => format!("{}: {cause}", entry.state),
        _ => entry.state.to_string(),
    }
}

/// One line of the text rendering.
struct Describe<'a>(&'a Entry, &'a Tree);

impl fmt::Display for Describe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Describe(entry, tree) = *self;
        write!(f, "{} {}", entry.kind, state_line(entry))?;
        if let Some(remaining) = entry.remaining {
            write!(f, " · {} left", Human(remaining))?;
        }
        if let Some(age) = entry.age {
            write!(f, " · age {}", Age(age))?;
        }
        if let Some(site) = &entry.created_at {
            write!(f, " · created at {site}")?;
        }
        if entry.waiters > 0 {
            write!(f, " · {} waiting", entry.waiters)?;
        }
        if entry.after_funcs > 0 {
            write!(f, " · {} after_func", entry.after_funcs)?;
        }
        if let Some(other) = entry.other_parent {
            let other = &tree.entries[other];
            write!(f, " · also under #{} ({})", other.id, other.kind)?;
        }
        Ok(())
    }
}

/// A duration to the unit a reader wants: `850 µs`, `12 ms`, `3.2 s`,
/// `4 min 5 s`.
struct Human(Duration);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d < Duration::from_millis(1) {
            write!(f, "{} µs", d.as_micros())
        } else if d < Duration::from_secs(1) {
            write!(f, "{} ms", d.as_millis())
        } else if d < Duration::from_secs(60) {
            write!(f, "{:.1} s", d.as_secs_f64())
        } else if d < Duration::from_secs(3600) {
            write!(f, "{} min {} s", d.as_secs() / 60, d.as_secs() % 60)
        } else {
            write!(f, "{} h {} min", d.as_secs() / 3600, d.as_secs() / 60 % 60)
        }
    }
}

/// An age, read from a coarse clock (see `Context::provenance`): below a
/// millisecond it says so rather than print microseconds it does not know.
/// Provenance says how long a context lived with it too.
pub(crate) struct Age(pub(crate) Duration);

impl fmt::Display for Age {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 < Duration::from_millis(1) {
            f.write_str("< 1 ms")
        } else {
            Human(self.0).fmt(f)
        }
    }
}

/// Mermaid labels in `["..."]`: quotes and angle brackets as entity codes
/// (`<br/>`, the line break, is added after escaping).
fn mermaid_escape(label: &str) -> String {
    let mut out = String::with_capacity(label.len());
    for (n, line) in label.split("<br/>").enumerate() {
        if n > 0 {
            out.push_str("<br/>");
        }
        for c in line.chars() {
            match c {
                '"' => out.push_str("#quot;"),
                '<' => out.push_str("#lt;"),
                '>' => out.push_str("#gt;"),
                '#' => out.push_str("#35;"),
                c if c.is_control() => out.push(' '),
                c => out.push(c),
            }
        }
    }
    out
}

/// DOT double-quoted strings: backslashes and quotes escaped, no raw line
/// breaks.
fn dot_escape(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    for c in line.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Snapshots racing the departures they must not disturb: a child leaving
/// the parent's `first_child` slot while a snapshot moves it into the
/// registry, a child arriving, and the parent's end. The models call the
/// scope's snapshot directly: the rest of `Context::tree` is
/// single-threaded bookkeeping.
#[cfg(all(test, loom))]
mod loom_tests {
    use crate::context::Context;
    use crate::node_ref::{NodeRef, WeakNodeRef};
    use loom::thread;
    use std::sync::Arc;

    /// Exhaustive, then with a preemption bound of 3, as the core's models.
    fn model<F: Fn() + Sync + Send + 'static>(f: F) {
        let f = Arc::new(f);
        for bound in [None, Some(3)] {
            let f = f.clone();
            let mut builder = loom::model::Builder::new();
            builder.preemption_bound = bound;
            builder.check(move || f());
        }
    }

    fn weak(ctx: &Context) -> WeakNodeRef {
        NodeRef::downgrade(ctx.node_ref().expect("a derived context"))
    }

    /// Reads `ctx`'s scope as `Context::tree` does, and lets go of what it
    /// took after the lock; returns how many children it saw.
    fn snapshot(ctx: &Context) -> usize {
        let mut spare = Vec::new();
        let scope = ctx.scope().expect("a scope");
        let seen = scope
            .snapshot(&mut spare)
            .map_or(0, |view| view.children.len());
        drop(spare);
        seen
    }

    /// A child cancelled and dropped while a snapshot moves it out of the
    /// slot: it leaves its parent either way, and is freed.
    #[test]
    fn snapshot_vs_child_cancel_and_drop() {
        model(|| {
            let (parent, _cancel) = Context::background().with_cancel();
            let (child, child_cancel) = parent.with_cancel();
            let child_weak = weak(&child);
            let leaver = thread::spawn(move || {
                drop(child_cancel);
                drop(child);
            });
            assert!(snapshot(&parent) <= 1);
            leaver.join().unwrap();
            assert!(child_weak.upgrade().is_none(), "the child is freed");
            assert_eq!(parent.registrations(), 0, "nothing left registered");
        });
    }

    /// A detached child whose last owner lets go while a snapshot holds it
    /// or finds it being released: the snapshot's reference, dropped last,
    /// releases it properly.
    #[test]
    fn snapshot_vs_last_owner_release() {
        model(|| {
            let (parent, _cancel) = Context::background().with_cancel();
            let (child, child_cancel) = parent.with_cancel();
            child_cancel.detach();
            let child_weak = weak(&child);
            let leaver = thread::spawn(move || drop(child));
            snapshot(&parent);
            leaver.join().unwrap();
            assert!(child_weak.upgrade().is_none(), "the child is freed");
            assert_eq!(parent.registrations(), 0, "nothing left registered");
        });
    }

    /// The parent ends while a snapshot moves its child: the child ends
    /// with it, and nothing stays registered.
    #[test]
    fn snapshot_vs_parent_cancel() {
        model(|| {
            let (parent, cancel) = Context::background().with_cancel();
            let (child, _child_cancel) = parent.with_cancel();
            let snapshotter = {
                let parent = parent.clone();
                thread::spawn(move || snapshot(&parent))
            };
            cancel.cancel();
            assert!(snapshotter.join().unwrap() <= 1);
            assert!(child.is_done());
            assert_eq!(parent.registrations(), 0);
        });
    }

    /// A child that takes the empty slot and leaves again while a snapshot
    /// moves it: the snapshot may move it before the child has recorded
    /// that it sits in the slot, and its departure must still find it.
    #[test]
    fn snapshot_vs_child_arriving_in_the_slot_and_leaving() {
        model(|| {
            let (parent, _cancel) = Context::background().with_cancel();
            let deriver = {
                let parent = parent.clone();
                thread::spawn(move || {
                    let (child, handle) = parent.with_cancel();
                    handle.detach();
                    drop(child);
                })
            };
            snapshot(&parent);
            deriver.join().unwrap();
            assert_eq!(parent.registrations(), 0, "nothing left registered");
        });
    }

    /// A child arriving while a snapshot empties the slot: it lands in the
    /// slot or the registry, and is cancelled with its parent.
    #[test]
    fn snapshot_vs_new_child() {
        model(|| {
            let (parent, cancel) = Context::background().with_cancel();
            let (_first, _first_cancel) = parent.with_cancel();
            let deriver = {
                let parent = parent.clone();
                thread::spawn(move || {
                    let (child, handle) = parent.with_cancel();
                    handle.detach();
                    child
                })
            };
            snapshot(&parent);
            let second = deriver.join().unwrap();
            assert_eq!(parent.registrations(), 2);
            cancel.cancel();
            assert!(second.is_done());
            assert_eq!(parent.registrations(), 0);
        });
    }
}
