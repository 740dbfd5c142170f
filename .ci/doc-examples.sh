#!/usr/bin/env bash
# Lists public items whose doc comment holds no ``` block, i.e. no example
# that `cargo test --doc` would compile and run (```ignore and ```text
# blocks do not count).
#
#   .ci/doc-examples.sh [--strict] [CRATE_DIR...]
#
# CRATE_DIR defaults to the four library crates. With --strict, ```no_run
# blocks do not count either: the list is then of items whose example
# compiles but does not run.
#
# Exits 1 when it lists anything. It reads the source, not rustdoc's JSON
# (unstable), so it is approximate:
# - it sees `pub fn|struct|enum|trait|type|const|static|mod|union` items;
#   `pub(crate)` and `#[doc(hidden)]` items and `mod tests` are skipped;
# - a `pub` item that is not reachable from the crate root is listed anyway;
# - the methods of a `pub trait` are checked, fields and variants are not;
# - sealing traits (`Sealed`) are skipped: nobody outside can name them;
# - `pub mod name;` counts the module's own `//!` docs;
# - an item whose docs come from elsewhere (`#[doc = include_str!(..)]`) is
#   counted as documented with an example.
set -euo pipefail
cd "$(dirname "$0")/.."

not_examples='ignore|text|console|sh|toml|json'
if [ "${1:-}" = "--strict" ]; then
    not_examples="$not_examples|no_run"
    shift
fi
if [ "$#" -eq 0 ]; then
    set -- crates/ctxkit crates/ctxkit-sql crates/ctxkit-http crates/ctxkit-grpc
fi

status=0
for crate in "$@"; do
    if [ ! -d "$crate/src" ]; then
        echo "doc-examples: $crate/src is not a directory; pass crate directories such as crates/ctxkit" >&2
        exit 2
    fi
    found=$(find "$crate/src" -name '*.rs' ! -name 'loom_tests.rs' | sort | while read -r file; do
        awk -v file="$file" -v not_examples="$not_examples" '
        function reset() { in_block = 0; has_example = 0; hidden = 0; has_doc = 0; in_fence = 0 }
        # `pub mod name;`: its docs are the module file`s `//!` lines. Returns
        # 2 if they hold an example, 1 if they are docs without one, 0 if none.
        function module_docs(name,    dir, base, candidates, i, path, line, found) {
            dir = file; sub(/\/[^\/]*$/, "", dir)
            base = file; sub(/^.*\//, "", base); sub(/\.rs$/, "", base)
            # A file `a/b.rs` declares its submodules in `a/b/`; `lib.rs`,
            # `main.rs` and `mod.rs` in their own directory.
            if (base != "lib" && base != "mod" && base != "main") dir = dir "/" base
            candidates[1] = dir "/" name ".rs"
            candidates[2] = dir "/" name "/mod.rs"
            found = 0
            for (i = 1; i <= 2; i++) {
                path = candidates[i]
                fence = 0
                while ((getline line < path) > 0) {
                    if (line ~ /^[[:space:]]*\/\/!/ && !found) found = 1
                    if (line ~ /^[[:space:]]*\/\/!.*```/) {
                        if (!fence && line !~ ("```([^`]*[ ,])?(" not_examples ")([ ,]|$)")) found = 2
                        fence = !fence
                    }
                    if (line ~ /#!\[doc *= *include_str!/) { found = 2 }
                }
                close(path)
            }
            return found
        }
        BEGIN { reset(); in_attr = 0; depth = 0; trait_depth = -1 }
        # Unit tests sit at the end of a file; nothing after them is public API.
        /^[[:space:]]*mod tests[[:space:]]*\{/ { exit }
        # Brace depth, to know which `fn` lines are a public trait`s methods.
        # Comments, strings and char literals are left out of the count.
        {
            code = $0
            if (code ~ /^[[:space:]]*\/\//) code = ""
            gsub(/"([^"\\]|\\.)*"/, "", code)
            gsub(/\x27([^\x27\\]|\\.)\x27/, "", code)
            sub(/\/\/.*$/, "", code)
            line_depth = depth
            depth += gsub(/\{/, "{", code) - gsub(/\}/, "}", code)
            in_trait = (trait_depth >= 0 && line_depth > trait_depth)
            if (trait_depth >= 0 && depth <= trait_depth && line_depth > trait_depth) trait_depth = -1
        }
        in_attr {
            if ($0 ~ /doc\(hidden\)/) hidden = 1
            if ($0 ~ /\][[:space:]]*$/) in_attr = 0
            next
        }
        /^[[:space:]]*\/\/\// {
            in_block = 1; has_doc = 1
            # A ``` fence opens a block that rustdoc compiles, unless it is
            # marked as not Rust or not to be compiled.
            if ($0 ~ /```/) {
                if (!in_fence && $0 !~ ("```([^`]*[ ,])?(" not_examples ")([ ,]|$)")) has_example = 1
                in_fence = !in_fence
            }
            next
        }
        /^[[:space:]]*#\[/ {
            if ($0 ~ /doc\(hidden\)/) hidden = 1
            if ($0 ~ /#\[doc *= *include_str!/) { has_doc = 1; has_example = 1 }
            if ($0 !~ /\][[:space:]]*$/) in_attr = 1
            next
        }
        /^[[:space:]]*$/ { next }
        /^[[:space:]]*\/\// { next }
        /^[[:space:]]*pub[[:space:]]+((const|async|unsafe|extern( "[^"]*")?)[[:space:]]+)*(fn|struct|enum|trait|type|const|static|mod|union)[[:space:]]/ \
            || (in_trait && /^[[:space:]]*((const|async|unsafe)[[:space:]]+)*fn[[:space:]]/) {
            line = $0
            if (line ~ /^[[:space:]]*pub[[:space:]]+trait[[:space:]]+Sealed/) { reset(); next }
            if (line ~ /^[[:space:]]*pub[[:space:]]+trait[[:space:]]/ && depth > line_depth) trait_depth = line_depth
            sub(/^[[:space:]]*/, "", line)
            sub(/[[:space:]]*[{(;=].*$/, "", line)
            ok = has_example
            if (!ok && line ~ /^pub mod [A-Za-z0-9_]+$/ && $0 ~ /;[[:space:]]*$/) {
                name = line; sub(/^pub mod /, "", name)
                docs = module_docs(name)
                ok = (docs == 2)
                if (docs == 1) has_doc = 1
            }
            if (!ok && !hidden) {
                printf "%s:%d: %s%s\n", file, NR, line, (has_doc ? "" : " (no doc comment)")
            }
            reset(); next
        }
        { reset() }
        ' "$file"
    done)
    count=0
    if [ -n "$found" ]; then
        printf '%s\n' "$found"
        count=$(printf '%s\n' "$found" | wc -l)
        status=1
    fi
    printf '%s: %d public item(s) without an example\n' "$crate" "$count" >&2
done
exit "$status"
