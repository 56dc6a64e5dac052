//! Guest stdout and stderr: bounded buffers drained by writer threads, so that no guest
//! write ever blocks a thread the runtime needs, and no exit path waits on guest I/O.
//!
//! A guest that inherits stdio ([`WasiConfig::inherit_stdio`](crate::WasiConfig)) writes
//! into a process-wide buffer per stream (256 KiB each). One writer thread per stream
//! (`warden-stdout`, `warden-stderr`) moves the bytes to a *duplicate* of the process's fd 1
//! or 2, never through `std::io::stdout()`, so it never holds the lock that the process's own
//! output (and `std::process::exit`'s flush) takes.
//!
//! **When the reader stalls** (a pipe nobody drains): the writer thread blocks in its OS
//! write; the buffer fills; then a guest's write *waits* for space — an async, abortable
//! wait, so the call's deadline, an `abort()`, an unload or an exit end it like any host
//! wait (see [`host`](crate::host)). Nothing is dropped while the process lives. At exit,
//! [`flush`] waits for the buffers to drain up to a bound the caller chooses (the `warden`
//! binary gives orderly exits 2 s and rude ones none); what a stalled reader has not taken by
//! then is lost with the process. When the reader is gone (`EPIPE`), further guest writes
//! fail as a closed stream and buffered bytes are discarded.
//!
//! Where the promise ends: bytes are delivered in order per stream, but a guest's stdout and
//! the host's own `println!` output are not ordered with each other.

use bytes::Bytes;
use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use wasmtime_wasi::cli::{AsyncStdinStream, IsTerminal, StdinStream, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// Bytes a guest output stream buffers before guest writes wait.
pub const CAPACITY: usize = 256 << 10;

/// Largest single OS write the writer thread makes.
const CHUNK: usize = 64 << 10;

/// Which process stream.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Which {
    Stdout,
    Stderr,
}

#[derive(Default)]
struct Buf {
    bytes: VecDeque<u8>,
    /// Bytes the writer thread took and is writing now.
    in_flight: usize,
    /// The OS write failed (the reader is gone): writes fail, bytes are discarded.
    broken: bool,
    /// Guest writers waiting for space.
    wakers: Vec<Waker>,
    terminal: bool,
    /// Every handle on an embedder's sink is gone: the writer thread drains and ends.
    closed: bool,
}

/// One process stream's buffer and its writer thread.
struct Sink {
    buf: Mutex<Buf>,
    /// Signals the writer thread (bytes arrived) and flushers (bytes left).
    cond: Condvar,
}

impl Sink {
    fn lock(&self) -> std::sync::MutexGuard<'_, Buf> {
        self.buf.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start(which: Which) -> Arc<Sink> {
        let name = match which {
            Which::Stdout => "warden-stdout",
            Which::Stderr => "warden-stderr",
        };
        match raw(which) {
            Some((out, terminal)) => Self::spawn(name, Box::new(out), terminal),
            None => {
                let sink = Self::spawn(name, Box::new(std::io::sink()), false);
                sink.lock().broken = true;
                sink
            }
        }
    }

    fn spawn(name: &str, out: Box<dyn Write + Send>, terminal: bool) -> Arc<Sink> {
        let sink = Arc::new(Sink {
            buf: Mutex::new(Buf {
                terminal,
                ..Buf::default()
            }),
            cond: Condvar::new(),
        });
        let drain = sink.clone();
        let spawned = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || drain.drain(out));
        if spawned.is_err() {
            sink.lock().broken = true;
        }
        sink
    }

    /// The writer thread: takes bytes, writes them, wakes waiting guest writers.
    fn drain(&self, mut out: Box<dyn Write + Send>) {
        let mut chunk = Vec::with_capacity(CHUNK);
        loop {
            {
                let mut buf = self.lock();
                while buf.bytes.is_empty() {
                    if buf.closed {
                        return;
                    }
                    buf = self.cond.wait(buf).unwrap_or_else(|p| p.into_inner());
                }
                let n = buf.bytes.len().min(CHUNK);
                chunk.clear();
                chunk.extend(buf.bytes.drain(..n));
                buf.in_flight = n;
                // Space freed: waiting writers may go on.
                for w in buf.wakers.drain(..) {
                    w.wake();
                }
            }
            let ok = out.write_all(&chunk).is_ok();
            let mut buf = self.lock();
            buf.in_flight = 0;
            if !ok {
                buf.broken = true;
                buf.bytes.clear();
                for w in buf.wakers.drain(..) {
                    w.wake();
                }
            }
            self.cond.notify_all();
            if !ok {
                return;
            }
        }
    }

    fn write(&self, bytes: &[u8]) -> StreamResult<()> {
        let mut buf = self.lock();
        if buf.broken {
            return Err(StreamError::Closed);
        }
        buf.bytes.extend(bytes);
        drop(buf);
        self.cond.notify_all();
        Ok(())
    }

    fn room(buf: &Buf) -> usize {
        CAPACITY.saturating_sub(buf.bytes.len())
    }

    fn check_write(&self) -> StreamResult<usize> {
        let buf = self.lock();
        if buf.broken {
            return Err(StreamError::Closed);
        }
        Ok(Self::room(&buf))
    }

    /// Ready when there is room (or the stream is broken, which the next check reports).
    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut buf = self.lock();
        if buf.broken || Self::room(&buf) > 0 {
            return Poll::Ready(());
        }
        if !buf.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            buf.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Waits until everything buffered is written, or `until`. True when drained.
    fn flush_until(&self, until: Instant) -> bool {
        let mut buf = self.lock();
        loop {
            if buf.broken || (buf.bytes.is_empty() && buf.in_flight == 0) {
                return true;
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            buf = self
                .cond
                .wait_timeout(buf, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

static STDOUT: OnceLock<Arc<Sink>> = OnceLock::new();
static STDERR: OnceLock<Arc<Sink>> = OnceLock::new();

fn sink(which: Which) -> &'static Arc<Sink> {
    match which {
        Which::Stdout => STDOUT.get_or_init(|| Sink::start(Which::Stdout)),
        Which::Stderr => STDERR.get_or_init(|| Sink::start(Which::Stderr)),
    }
}

/// A duplicate of the process's fd 1 or 2 (so writing never takes std's stdout lock), and
/// whether it is a terminal.
#[cfg(unix)]
fn raw(which: Which) -> Option<(std::fs::File, bool)> {
    use std::os::fd::AsFd;
    let fd = match which {
        Which::Stdout => std::io::stdout().as_fd().try_clone_to_owned(),
        Which::Stderr => std::io::stderr().as_fd().try_clone_to_owned(),
    }
    .ok()?;
    let file = std::fs::File::from(fd);
    let terminal = std::io::IsTerminal::is_terminal(&file);
    Some((file, terminal))
}

#[cfg(windows)]
fn raw(which: Which) -> Option<(std::fs::File, bool)> {
    use std::os::windows::io::AsHandle;
    let h = match which {
        Which::Stdout => std::io::stdout().as_handle().try_clone_to_owned(),
        Which::Stderr => std::io::stderr().as_handle().try_clone_to_owned(),
    }
    .ok()?;
    let file = std::fs::File::from(h);
    let terminal = std::io::IsTerminal::is_terminal(&file);
    Some((file, terminal))
}

/// Waits until the guest output buffered so far has been written to the process's stdout
/// and stderr, for at most `timeout`. Returns whether everything was written. Call it before
/// an orderly process exit; skip it on a rude one. Never takes std's stdout lock.
pub fn flush(timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    [&STDOUT, &STDERR]
        .iter()
        .all(|s| s.get().is_none_or(|s| s.flush_until(until)))
}

/// Bytes the host's own messages may add beyond [`CAPACITY`] to the process's stderr buffer;
/// past that, a host message is dropped.
const HOST_SLACK: usize = 64 << 10;

/// Writes the host's own text (the binary's messages, `--events json` lines) to the process's
/// stderr through the same buffer and writer thread as guest stderr, so it never blocks on a
/// stalled reader and stays in order with guest stderr. Returns false when the text was
/// dropped (the buffer is full beyond its slack, or the reader is gone). Never takes std's
/// stderr lock; [`flush`] before exiting.
pub fn host_stderr(text: &[u8]) -> bool {
    let sink = sink(Which::Stderr);
    {
        let buf = sink.lock();
        if buf.broken || buf.bytes.len() + text.len() > CAPACITY + HOST_SLACK {
            return false;
        }
    }
    sink.write(text).is_ok()
}

/// Where a guest's stdout or stderr goes: the process's own stream (the default when
/// [`WasiConfig::inherit_stdio`](crate::WasiConfig) is set; all domains share its buffer), or
/// a writer of the embedder's ([`GuestOutput::to_writer`]) with its own buffer and thread.
/// Cheap to clone; clones share the buffer.
#[derive(Clone)]
pub struct GuestOutput(Target);

#[derive(Clone)]
enum Target {
    Process(Which),
    Own(Arc<Owner>),
}

/// The embedder's sink, closed when the last [`GuestOutput`] naming it goes.
struct Owner(Arc<Sink>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.cond.notify_all();
    }
}

impl std::fmt::Debug for GuestOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Target::Process(w) => write!(f, "GuestOutput::{w:?}"),
            Target::Own(_) => f.write_str("GuestOutput::Writer"),
        }
    }
}

impl GuestOutput {
    /// The process's stdout.
    pub fn stdout() -> Self {
        GuestOutput(Target::Process(Which::Stdout))
    }

    /// The process's stderr.
    pub fn stderr() -> Self {
        GuestOutput(Target::Process(Which::Stderr))
    }

    /// The embedder's writer, fed by its own writer thread through a [`CAPACITY`] buffer:
    /// a writer that blocks makes guest writes wait (abortably) once the buffer is full; one
    /// that fails makes them fail as a closed stream. The thread ends, after writing what is
    /// buffered, when the last clone of this value is dropped.
    pub fn to_writer(writer: impl Write + Send + 'static) -> Self {
        let sink = Sink::spawn("warden-guest-output", Box::new(writer), false);
        GuestOutput(Target::Own(Arc::new(Owner(sink))))
    }

    fn sink(&self) -> &Arc<Sink> {
        match &self.0 {
            Target::Process(w) => sink(*w),
            Target::Own(o) => &o.0,
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        self.sink().lock().terminal
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(Stream(self.sink().clone()))
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(Stream(self.sink().clone()))
    }
}

/// A guest's stdin fed by the embedder: any async reader. A guest's read waits (abortably)
/// until the reader has bytes. Cheap to clone; clones share the reader.
#[derive(Clone)]
pub struct GuestInput(Arc<AsyncStdinStream>);

impl GuestInput {
    /// Stdin that reads from `reader`.
    pub fn new(reader: impl tokio::io::AsyncRead + Send + Sync + 'static) -> Self {
        GuestInput(Arc::new(AsyncStdinStream::new(reader)))
    }
}

impl std::fmt::Debug for GuestInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GuestInput")
    }
}

impl IsTerminal for GuestInput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdinStream for GuestInput {
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::InputStream> {
        #[cfg(feature = "failpoints")]
        return Box::new(failing::Input(self.0.p2_stream()));
        #[cfg(not(feature = "failpoints"))]
        self.0.p2_stream()
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncRead + Send + Sync> {
        self.0.async_stream()
    }
}

/// The `wasi-read` failpoint at the entry of every guest read of an embedder's stdin
/// (preview1's `fd_read`, preview2's `input-stream.read` and `blocking-read`): an injected
/// failure is the guest's I/O error, as a failing reader's would be.
#[cfg(feature = "failpoints")]
mod failing {
    use bytes::Bytes;
    use wasmtime_wasi::p2::{InputStream, Pollable, StreamError, StreamResult};

    pub(super) struct Input(pub(super) Box<dyn InputStream>);

    fn injected() -> StreamError {
        StreamError::LastOperationFailed(wasmtime::format_err!("failpoint wasi-read"))
    }

    #[async_trait::async_trait]
    impl InputStream for Input {
        fn read(&mut self, size: usize) -> StreamResult<Bytes> {
            warden_core::failpoint!("wasi-read", Err(injected()));
            self.0.read(size)
        }

        async fn blocking_read(&mut self, size: usize) -> StreamResult<Bytes> {
            warden_core::failpoint!("wasi-read", Err(injected()));
            self.0.blocking_read(size).await
        }

        fn skip(&mut self, n: usize) -> StreamResult<usize> {
            self.0.skip(n)
        }

        async fn blocking_skip(&mut self, n: usize) -> StreamResult<usize> {
            self.0.blocking_skip(n).await
        }

        async fn cancel(&mut self) {
            self.0.cancel().await
        }
    }

    #[async_trait::async_trait]
    impl Pollable for Input {
        async fn ready(&mut self) {
            self.0.ready().await
        }
    }
}

/// One handle on a sink, as WASI's streams want it.
struct Stream(Arc<Sink>);

impl OutputStream for Stream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        // The entry of every guest write to stdout/stderr, preview1's `fd_write` and
        // preview2's `output-stream.write` alike: an injected failure is the guest's I/O error.
        #[cfg(feature = "failpoints")]
        warden_core::failpoint!(
            "wasi-write",
            Err(StreamError::LastOperationFailed(wasmtime::format_err!(
                "failpoint wasi-write"
            )))
        );
        self.0.write(&bytes)
    }

    fn flush(&mut self) -> StreamResult<()> {
        // Accepted bytes are the writer thread's to deliver; waiting for them here would make
        // a guest's flush an unabortable wait on the reader.
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.0.check_write()
    }
}

#[async_trait::async_trait]
impl Pollable for Stream {
    async fn ready(&mut self) {
        std::future::poll_fn(|cx| self.0.poll_ready(cx)).await
    }
}

impl tokio::io::AsyncWrite for Stream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let sink = &self.0;
        loop {
            match sink.check_write() {
                Err(_) => return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
                Ok(0) => {
                    if sink.poll_ready(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
                Ok(room) => {
                    let n = room.min(data.len());
                    return Poll::Ready(
                        sink.write(&data[..n])
                            .map(|()| n)
                            .map_err(|_| std::io::ErrorKind::BrokenPipe.into()),
                    );
                }
            }
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
