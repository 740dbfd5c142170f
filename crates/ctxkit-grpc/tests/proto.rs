//! The crate's `proto/work.proto` is the project's shared proto, unchanged.

use std::path::Path;

#[test]
fn the_proto_is_the_shared_one_byte_for_byte() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = crate_dir.join("../../../shared/proto/work.proto");
    if !shared.exists() {
        // Straight to stderr: libtest would capture `eprintln!`.
        let message = format!("skipped: no {} beside the repository\n", shared.display());
        let _ = std::io::Write::write_all(&mut std::io::stderr(), message.as_bytes());
        return;
    }
    let ours = std::fs::read(crate_dir.join("proto/work.proto")).unwrap();
    let theirs = std::fs::read(&shared).unwrap();
    assert!(
        ours == theirs,
        "proto/work.proto differs from {}: copy it again, unchanged",
        shared.display()
    );
}
