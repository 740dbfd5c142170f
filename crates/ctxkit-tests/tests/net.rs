//! `ctxkit::net`: connects and blocking reads and writes that end with
//! their context, over real sockets on 127.0.0.1 (and Unix socket pairs).
//! Linux: the fd count and the thread states are read from /proc.
#![cfg(target_os = "linux")]

use ctxkit::net::{self, ContextStream};
use ctxkit::{Context, Error};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The bound for "promptly", generous on a busy 2-core machine.
const PROMPT: Duration = Duration::from_millis(500);

/// The fd count is process-wide: the tests here take turns.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("Linux /proc")
        .count()
}

/// Polls `condition` until it holds, for at most `limit`: true if it did.
fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    condition()
}

/// This thread's id, for /proc/self/task/<tid>.
fn thread_id() -> String {
    let link = std::fs::read_link("/proc/thread-self").expect("Linux /proc");
    link.file_name().unwrap().to_string_lossy().into_owned()
}

/// Whether thread `tid` is asleep in the kernel (blocked in a call).
fn is_blocked(tid: &str) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('S'))
}

/// Runs `op` on a thread; returns once that thread is blocked in the kernel,
/// with a receiver for the result.
fn run_blocked<T: Send + 'static>(op: impl FnOnce() -> T + Send + 'static) -> mpsc::Receiver<T> {
    let (tid_tx, tid_rx) = mpsc::channel();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        tid_tx.send(thread_id()).unwrap();
        let _ = tx.send(op());
    });
    let tid = tid_rx.recv().unwrap();
    assert!(
        eventually(Duration::from_secs(5), || is_blocked(&tid)),
        "never blocked"
    );
    rx
}

/// A connected pair on loopback: (ours, the peer's end, which never writes).
fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (peer, _) = listener.accept().unwrap();
    (ours, peer)
}

#[test]
fn the_wrapper_crosses_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<ContextStream<TcpStream>>();
    send_sync::<ContextStream<UnixStream>>();
}

#[test]
fn a_blocked_tcp_read_ends_within_500ms_of_cancel() {
    let _turn = one_at_a_time();
    let (ours, _peer) = tcp_pair();
    let (ctx, cancel) = Context::background().with_cancel();
    let mut stream = ContextStream::new(&ctx, ours);
    let result = run_blocked(move || stream.read(&mut [0; 64]));
    let cancelled = Instant::now();
    cancel.cancel();
    let err = result
        .recv_timeout(Duration::from_secs(5))
        .unwrap()
        .unwrap_err();
    assert!(cancelled.elapsed() < PROMPT, "{:?}", cancelled.elapsed());
    assert_eq!(net::context_error(&err), Some(Error::Canceled));
    assert_eq!(err.kind(), io::ErrorKind::Interrupted);
}

#[test]
fn a_blocked_tcp_read_ends_at_the_deadline() {
    let _turn = one_at_a_time();
    let (ours, _peer) = tcp_pair();
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let (ctx, _cancel) = Context::background().with_timeout(timeout);
    let mut stream = ContextStream::new(&ctx, ours);
    let err = stream.read(&mut [0; 64]).unwrap_err();
    let took = started.elapsed();
    assert!(took >= timeout && took < timeout + PROMPT, "{took:?}");
    assert_eq!(net::context_error(&err), Some(Error::DeadlineExceeded));
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    // Every call from now on reports the context, not the shut-down socket.
    let err = stream.write(b"x").unwrap_err();
    assert_eq!(net::context_error(&err), Some(Error::DeadlineExceeded));
}

#[test]
fn the_peer_of_an_interrupted_stream_reads_end_of_stream() {
    let _turn = one_at_a_time();
    let (ours, mut peer) = tcp_pair();
    let (ctx, cancel) = Context::background().with_cancel();
    let mut stream = ContextStream::new(&ctx, ours);
    stream.write_all(b"hello").unwrap();
    let mut got = [0u8; 5];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello");
    let result = run_blocked(move || stream.read(&mut [0; 64]));
    cancel.cancel();
    assert!(result.recv().unwrap().is_err());
    let mut rest = Vec::new();
    assert_eq!(peer.read_to_end(&mut rest).unwrap(), 0, "a FIN, no reset");
}

#[test]
fn a_blocked_unix_read_ends_within_500ms_of_cancel() {
    let _turn = one_at_a_time();
    let (ours, _peer) = UnixStream::pair().unwrap();
    let (ctx, cancel) = Context::background().with_cancel();
    let mut stream = ContextStream::new(&ctx, ours);
    let result = run_blocked(move || stream.read(&mut [0; 64]));
    let cancelled = Instant::now();
    cancel.cancel();
    let err = result
        .recv_timeout(Duration::from_secs(5))
        .unwrap()
        .unwrap_err();
    assert!(cancelled.elapsed() < PROMPT);
    assert_eq!(net::context_error(&err), Some(Error::Canceled));
}

#[test]
fn a_blocked_write_ends_on_cancel() {
    let _turn = one_at_a_time();
    let (ours, _peer) = UnixStream::pair().unwrap();
    let (ctx, cancel) = Context::background().with_cancel();
    let mut stream = ContextStream::new(&ctx, ours);
    // The peer never reads: the socket buffer fills and write blocks.
    let result = run_blocked(move || {
        let chunk = [7u8; 64 * 1024];
        loop {
            if let Err(err) = stream.write(&chunk) {
                return err;
            }
        }
    });
    let cancelled = Instant::now();
    cancel.cancel();
    let err = result.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(cancelled.elapsed() < PROMPT);
    assert_eq!(net::context_error(&err), Some(Error::Canceled));
}

#[test]
fn one_thread_reads_while_another_writes() {
    let _turn = one_at_a_time();
    let (ours, mut peer) = tcp_pair();
    let (ctx, cancel) = Context::background().with_cancel();
    let stream = std::sync::Arc::new(ContextStream::new(&ctx, ours));
    let reading = run_blocked({
        let stream = stream.clone();
        move || (&*stream).read(&mut [0; 64])
    });
    (&*stream).write_all(b"while blocked").unwrap();
    let mut got = [0u8; 13];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"while blocked");
    cancel.cancel();
    let err = reading
        .recv_timeout(Duration::from_secs(5))
        .unwrap()
        .unwrap_err();
    assert_eq!(net::context_error(&err), Some(Error::Canceled));
    let err = (&*stream).write(b"after").unwrap_err();
    assert_eq!(net::context_error(&err), Some(Error::Canceled));
}

#[test]
fn a_live_context_changes_nothing() {
    let _turn = one_at_a_time();
    let (ours, mut peer) = tcp_pair();
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(60));
    let mut stream = ContextStream::new(&ctx, ours);
    stream.write_all(b"ping").unwrap();
    stream.flush().unwrap();
    let mut got = [0u8; 4];
    peer.read_exact(&mut got).unwrap();
    peer.write_all(b"pong").unwrap();
    drop(peer); // a real end of stream, with the context live
    let mut all = Vec::new();
    stream.read_to_end(&mut all).unwrap();
    assert_eq!(all, b"pong");
    assert_eq!(stream.read(&mut [0; 8]).unwrap(), 0);
}

/// A listener whose accept queue is full and never drained: Linux then
/// drops new SYNs (tcp_abort_on_overflow=0, the default), so a connect
/// hangs as if the host were unreachable. The backlog is cut to 0 by
/// calling listen(2) again; the queue then holds one connection.
fn full_backlog() -> (TcpListener, Vec<TcpStream>, SocketAddr) {
    extern "C" {
        fn listen(fd: i32, backlog: i32) -> i32;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // SAFETY: listen(2) on a listening socket we own only changes its
    // backlog.
    assert_eq!(unsafe { listen(listener.as_raw_fd(), 0) }, 0);
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..16 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(stream) => fillers.push(stream),
            Err(err) if err.kind() == io::ErrorKind::TimedOut => return (listener, fillers, addr),
            Err(err) => panic!("filling the backlog: {err}"),
        }
    }
    panic!("the accept queue never filled: SYNs are not dropped here");
}

#[test]
fn a_connect_that_is_never_accepted_ends_at_the_deadline() {
    let _turn = one_at_a_time();
    let (_listener, _fillers, addr) = full_backlog();
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let (ctx, _cancel) = Context::background().with_timeout(timeout);
    let err = net::connect_ctx(&ctx, addr).unwrap_err();
    let took = started.elapsed();
    assert!(took >= timeout && took < timeout + PROMPT, "{took:?}");
    assert_eq!(
        net::context_error(&err),
        Some(Error::DeadlineExceeded),
        "{err}"
    );
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
}

#[test]
fn a_connect_that_is_never_accepted_ends_on_cancel() {
    let _turn = one_at_a_time();
    let (_listener, _fillers, addr) = full_backlog();
    let (ctx, cancel) = Context::background().with_timeout(Duration::from_secs(30));
    let result = run_blocked(move || net::connect_ctx(&ctx, addr));
    let cancelled = Instant::now();
    cancel.cancel();
    let err = result
        .recv_timeout(Duration::from_secs(5))
        .unwrap()
        .unwrap_err();
    assert!(cancelled.elapsed() < PROMPT, "{:?}", cancelled.elapsed());
    assert_eq!(net::context_error(&err), Some(Error::Canceled), "{err}");
}

#[test]
fn connect_bad_input() {
    let _turn = one_at_a_time();
    // A done context connects nothing.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let err = net::connect_ctx(&ctx, listener.local_addr().unwrap()).unwrap_err();
    assert_eq!(net::context_error(&err), Some(Error::Canceled));
    assert_eq!(
        listener.accept().unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );

    // A refused connect is the socket's error, unchanged.
    let closed = listener.local_addr().unwrap();
    drop(listener);
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(5));
    let err = net::connect_ctx(&ctx, closed).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    assert_eq!(net::context_error(&err), None);

    // No address at all.
    let none: &[SocketAddr] = &[];
    let err = net::connect_ctx(&Context::background(), none).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn no_fd_leaks_over_10000_cycles() {
    let _turn = one_at_a_time();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // The peer: answers one byte per connection and closes.
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let _ = stream.write_all(b"!");
        }
    });
    // Warm up the thread pools (callbacks, timer) so they count in the base.
    cycle(addr, 0);
    cycle(addr, 1);
    let (_, warm_cancel) = Context::background().with_timeout(Duration::from_millis(1));
    drop(warm_cancel);
    let before = open_fds();

    let started = Instant::now();
    for i in 0..10_000 {
        cycle(addr, i);
    }
    let took = started.elapsed();
    assert!(
        eventually(Duration::from_secs(10), || open_fds() <= before),
        "fds: {before} before, {} after",
        open_fds()
    );
    eprintln!("10,000 cycles in {took:?}");
}

/// One connect / read / drop, ending in one of four ways.
fn cycle(addr: SocketAddr, i: usize) {
    let (ctx, cancel) = Context::background().with_timeout(Duration::from_secs(10));
    match i % 4 {
        // Connect, read the answer, close.
        0 => {
            let mut stream = ContextStream::new(&ctx, net::connect_ctx(&ctx, addr).unwrap());
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).unwrap();
        }
        // Connect, cancel, then read: the context's error.
        1 => {
            let mut stream = ContextStream::new(&ctx, net::connect_ctx(&ctx, addr).unwrap());
            cancel.cancel();
            let err = stream.read(&mut [0; 8]).unwrap_err();
            assert_eq!(net::context_error(&err), Some(Error::Canceled));
        }
        // A cancelled context: no connect at all.
        2 => {
            cancel.cancel();
            assert!(net::connect_ctx(&ctx, addr).is_err());
        }
        // A Unix pair, cancelled while the stream is in use.
        _ => {
            let (ours, _peer) = UnixStream::pair().unwrap();
            let mut stream = ContextStream::new(&ctx, ours);
            stream.write_all(b"x").unwrap();
            cancel.cancel();
            assert!(stream.read(&mut [0; 8]).is_err());
        }
    }
}

/// The module docs' async example: `ctx.run` on tokio socket futures.
#[test]
fn tokio_run_bounds_a_socket_read() {
    let _turn = one_at_a_time();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run_bounds_a_socket_read());
}

async fn run_bounds_a_socket_read() {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(50));
    let mut stream = ctx
        .run(tokio::net::TcpStream::connect(
            listener.local_addr().unwrap(),
        ))
        .await
        .unwrap()
        .unwrap();
    let mut buf = [0; 64];
    assert_eq!(
        ctx.run(stream.read(&mut buf)).await.unwrap_err(),
        Error::DeadlineExceeded
    );
}
