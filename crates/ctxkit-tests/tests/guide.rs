//! The guide (`docs/guide.md`) cannot drift from the code: its Rust blocks
//! run as this crate's doc tests, and here its two programs are checked to
//! be the examples `workers` and `workers_async`, and the output it shows to
//! be what they print.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const GUIDE: &str = include_str!("../../../docs/guide.md");

/// A fenced block of the guide: its info string and its text.
struct Block {
    info: String,
    text: String,
}

fn blocks() -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for line in GUIDE.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block {
                    info: info.trim().to_owned(),
                    text: String::new(),
                })
            }
            (Some(_), Some("")) => blocks.push(open.take().expect("open block")),
            (Some(block), _) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "the guide ends inside a code block");
    blocks
}

/// The example's source without its `//!` header (what the guide shows).
fn example_body(path: &Path) -> String {
    let source = std::fs::read_to_string(path).unwrap();
    let body: Vec<&str> = source
        .lines()
        .skip_while(|line| line.starts_with("//!"))
        .skip_while(|line| line.is_empty())
        .collect();
    body.join("\n") + "\n"
}

/// The guide's block holding `needle`, and the `text` block right after it.
fn program_and_output(needle: &str) -> (String, String) {
    let blocks = blocks();
    let at = blocks
        .iter()
        .position(|b| b.info == "rust" && b.text.contains(needle))
        .unwrap_or_else(|| panic!("no rust block with {needle:?} in the guide"));
    let output = &blocks[at + 1];
    assert_eq!(output.info, "text", "the program's output follows it");
    (blocks[at].text.clone(), output.text.clone())
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// An example binary, built by `cargo test` with the other targets (or
/// built here when it is missing).
fn example_binary(package: &str, name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe.parent().unwrap().parent().unwrap();
    let binary = target.join("examples").join(name);
    if !binary.exists() {
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let status = Command::new(cargo)
            .args(["build", "-p", package, "--example", name])
            .status()
            .unwrap();
        assert!(status.success(), "cannot build the {name} example");
    }
    binary
}

/// The run's lines are lines the guide shows, and the guide's lines that do
/// not depend on timing (all but the ticks) are all printed.
fn check_output(package: &str, name: &str, shown: &str) {
    let output = Command::new(example_binary(package, name))
        .output()
        .unwrap();
    assert!(output.status.success(), "{name} failed: {output:?}");
    let printed = String::from_utf8(output.stdout).unwrap();
    let printed: BTreeSet<&str> = printed.lines().collect();
    let shown: BTreeSet<&str> = shown.lines().collect();
    assert!(
        printed.is_subset(&shown),
        "{name} printed lines the guide does not show: {:?}",
        printed.difference(&shown).collect::<Vec<_>>()
    );
    let fixed: BTreeSet<&str> = shown
        .iter()
        .filter(|l| !l.ends_with("tick"))
        .copied()
        .collect();
    assert!(
        fixed.is_subset(&printed),
        "the guide shows lines {name} did not print: {:?}",
        fixed.difference(&printed).collect::<Vec<_>>()
    );
}

/// The guide's program holding `needle` is `example` (of `package`), and
/// the output it shows is what the example prints.
fn check_program(needle: &str, package: &str, example: &str, source: &str) {
    let (program, shown) = program_and_output(needle);
    let source = workspace().join(source);
    assert_eq!(
        program,
        example_body(&source),
        "docs/guide.md section 4 differs from {}",
        source.display()
    );
    check_output(package, example, &shown);
}

#[test]
fn the_threads_program_is_the_workers_example() {
    check_program(
        "thread::spawn(move || worker(ctx, id))",
        "ctxkit",
        "workers",
        "crates/ctxkit/examples/workers.rs",
    );
}

#[test]
fn the_async_program_is_the_workers_async_example() {
    check_program(
        "tokio::spawn(worker(ctx.clone(), id))",
        "ctxkit-tests",
        "workers_async",
        "crates/ctxkit-tests/examples/workers_async.rs",
    );
}

#[test]
fn the_sections_are_in_order() {
    let headings: Vec<&str> = GUIDE.lines().filter(|l| l.starts_with("## ")).collect();
    let expected = [
        "## 1. The picture: a stop-work order",
        "## 2. The problem: fan-out that must stop",
        "## 3. The structure: a tree of contexts",
        "## 4. The idiomatic program",
        "## 5. Pitfalls, and how ctxkit handles each",
        "## 6. When to reach for it, and when not",
        "## 7. Related patterns",
        "## 8. Services: HTTP, SQL, and gRPC across processes",
        "## 9. Debugging",
        "## Go → ctxkit",
        "## Coming from tokio-util's `CancellationToken`",
    ];
    assert_eq!(headings, expected);
}

/// Every example the guide links to exists.
#[test]
fn the_linked_examples_exist() {
    let mut linked = 0;
    for (at, _) in GUIDE.match_indices("](../") {
        let rest = &GUIDE[at + 5..];
        let path = &rest[..rest.find(')').unwrap()];
        let path = path.split('#').next().unwrap();
        assert!(
            workspace().join(path).exists(),
            "the guide links to a missing {path}"
        );
        linked += 1;
    }
    assert!(linked >= 8, "only {linked} links");
}

/// Every Rust block is a doc test that runs: none is left out.
#[test]
fn every_rust_block_runs() {
    for block in blocks() {
        let rust = block.info.is_empty() || block.info.starts_with("rust");
        assert!(
            !rust || block.info == "rust",
            "a block marked {:?} would not run: {}",
            block.info,
            block.text
        );
    }
}

/// The "Go → ctxkit" table names every function of Go's `context`, every
/// errgroup method and the standard-library integrations.
#[test]
fn the_go_table_is_complete() {
    let table = &GUIDE[GUIDE.find("## Go → ctxkit").unwrap()..];
    let table = &table[..table.find("\n## ").unwrap()];
    let go = [
        "context.Background()",
        "context.TODO()",
        "context.WithCancel(",
        "context.WithCancelCause(",
        "context.WithDeadline(",
        "context.WithDeadlineCause(",
        "context.WithTimeout(",
        "context.WithTimeoutCause(",
        "context.WithValue(",
        "context.WithoutCancel(",
        "context.AfterFunc(",
        "context.Cause(",
        "ctx.Done()",
        "ctx.Err()",
        "ctx.Deadline()",
        "ctx.Value(",
        "errgroup.WithContext(",
        "g.Go(",
        "g.Wait()",
        "g.SetLimit(",
        "g.TryGo(",
        "net/http",
        "database/sql",
        "os/signal",
        "os/exec",
        "`net`",
        "grpc-go",
    ];
    for name in go {
        assert!(table.contains(name), "the Go → ctxkit table lacks {name}");
    }
}

/// The cost figures of "Coming from tokio-util's `CancellationToken`" are
/// those of BENCHMARKS.md's table (row, ctxkit, tokio-util).
#[test]
fn the_cost_figures_are_the_benchmarks() {
    let benchmarks = std::fs::read_to_string(workspace().join("BENCHMARKS.md")).unwrap();
    let figures = [
        ("ChildCreateCancel", "79.4 ns", "145 ns"),
        ("CheckCanceled/Done", "0.933 ns", "12.2 ns"),
        ("ContextCancelDone", "0.611 ns", "71.9 ns"),
        ("CancelTree/depth=10/Root=OpenCanceler", "568 ns", "1.55 µs"),
        ("FanOutWake", "2.69 ms", "5 ms"),
        ("BytesPerLiveChild", "89.7 B", "138.5 B"),
    ];
    for (row, ctxkit, tokio_util) in figures {
        let line = benchmarks
            .lines()
            .find(|line| line.starts_with(&format!("| {row} |")))
            .unwrap_or_else(|| panic!("BENCHMARKS.md has no row {row}"));
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | benchmark | Go | tokio-util | ctxkit | ...
        assert_eq!(
            (cells[3], cells[4]),
            (tokio_util, ctxkit),
            "BENCHMARKS.md's {row} changed: update the guide's figures"
        );
    }
    let section = &GUIDE[GUIDE.find("## Coming from tokio-util").unwrap()..];
    for (ctxkit, tokio_util) in [
        ("79.4 ns", "145 ns"),
        ("0.93 ns", "12.2 ns"),
        ("0.61 ns", "71.9 ns"),
        ("568 ns", "1.55 µs"),
        ("2.69 ms", "5 ms"),
        ("89.7", "138.5"),
    ] {
        assert!(
            section.contains(ctxkit) && section.contains(tokio_util),
            "the guide lacks {ctxkit} / {tokio_util}"
        );
    }
}
