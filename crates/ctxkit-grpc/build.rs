//! Generates the `ctxkit.demo.v1.Work` service from `proto/work.proto` with
//! protox, a protobuf compiler in Rust: the build needs no system `protoc`.
//!
//! The proto stays byte for byte the project's shared one, so the docs it
//! lacks (its messages and service have no comments of their own) are added
//! here: as attributes for the messages and the generated client and server
//! types, and after generation for the constructors tonic leaves bare.

use std::path::PathBuf;

const PACKAGE: &str = "ctxkit.demo.v1";

/// Doc attributes for the types the proto leaves without comments.
const MESSAGE_DOCS: [(&str, &str); 2] = [
    (
        "WorkRequest",
        "The request of `Work.Do`: how long the hop works.",
    ),
    (
        "WorkReply",
        "The reply of `Work.Do`: what the hop saw of its call (its name, \
         remaining deadline and request id), and its next hop's reply.",
    ),
];

const CLIENT_DOC: &str = "A client of `ctxkit.demo.v1.Work`. Wrap its transport \
    in [`ClientLayer`](crate::ClientLayer) so that calls made under a context \
    carry its deadline, cancellation and values.";

const SERVER_DOC: &str = "A tower service serving `ctxkit.demo.v1.Work` with a \
    [`Work`] implementation. Serve it behind [`ServerLayer`](crate::ServerLayer) \
    so that each call's handler gets a context.";

/// Docs for the constructors tonic generates without any: the first line
/// of the generated method in each module, and the doc put before it.
const METHOD_DOCS: [(&str, &str, &str); 6] = [
    (
        "work_client",
        "pub fn new(inner: T) -> Self {",
        "A client sending its calls through `inner`, a channel or a service \
         wrapping one.",
    ),
    (
        "work_client",
        "pub fn with_origin(inner: T, origin: Uri) -> Self {",
        "Like [`new`](Self::new), with `origin` as the scheme and authority of \
         every call's URI.",
    ),
    (
        "work_client",
        "pub fn with_interceptor<F>(",
        "Like [`new`](Self::new), running `interceptor` on every request \
         before it is sent.",
    ),
    (
        "work_server",
        "pub fn new(inner: T) -> Self {",
        "A service answering calls with `inner`.",
    ),
    (
        "work_server",
        "pub fn from_arc(inner: Arc<T>) -> Self {",
        "Like [`new`](Self::new), with an `inner` already shared.",
    ),
    (
        "work_server",
        "pub fn with_interceptor<F>(",
        "Like [`new`](Self::new), running `interceptor` on every request \
         before `inner` sees it.",
    ),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/work.proto");
    let descriptors = protox::compile(["work.proto"], ["proto"])?;
    let mut builder = tonic_prost_build::configure()
        .client_attribute(format!("{PACKAGE}.Work"), doc(CLIENT_DOC))
        .server_attribute(format!("{PACKAGE}.Work"), doc(SERVER_DOC));
    for (message, text) in MESSAGE_DOCS {
        builder = builder.message_attribute(format!(".{PACKAGE}.{message}"), doc(text));
    }
    builder.compile_fds(descriptors)?;
    document_constructors()?;
    Ok(())
}

/// `#[doc = " text"]`, as `/// text` is.
fn doc(text: &str) -> String {
    format!("#[doc = {:?}]", format!(" {text}"))
}

/// Puts a doc before each constructor of [`METHOD_DOCS`] that has none. A
/// line not found (another tonic version) is left as it is: tonic's own
/// `allow(missing_docs)` on its modules keeps the build working, only the
/// page loses a line.
fn document_constructors() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join(format!("{PACKAGE}.rs"));
    let generated = std::fs::read_to_string(&out)?;
    let mut documented = String::with_capacity(generated.len() + 1024);
    let mut module = "";
    let mut previous = "";
    for line in generated.lines() {
        let code = line.trim_start();
        if let Some(name) = code
            .strip_prefix("pub mod ")
            .and_then(|rest| rest.strip_suffix(" {"))
        {
            module = if name == "work_client" {
                "work_client"
            } else {
                "work_server"
            };
        }
        let wanted = METHOD_DOCS
            .iter()
            .find(|(in_module, first_line, _)| *in_module == module && code == *first_line);
        let undocumented = !previous.trim_start().starts_with("///")
            && !previous.trim_start().starts_with("#[doc");
        if let (Some((_, _, text)), true) = (wanted, undocumented) {
            let indent = &line[..line.len() - code.len()];
            documented.push_str(&format!("{indent}{}\n", doc(text)));
        }
        documented.push_str(line);
        documented.push('\n');
        previous = line;
    }
    std::fs::write(&out, documented)?;
    Ok(())
}
