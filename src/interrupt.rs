//! Ctrl-C, SIGTERM and SIGHUP: a run ends within two seconds of the first, and at
//! once at the second, whatever it is doing.
//!
//! A check in every loop would miss the loops nobody thought of (planning 100,000
//! cells, a join inside polars, a search walk). Instead a **watchdog** thread waits
//! for the first signal: it tells the async run ([`requested`]), which stops its
//! servers and exits with 128 + the signal; if the process is still there after
//! [`GRACE`] (or nothing was listening), the watchdog ends it itself. A second signal
//! ends the process from the handler. Either way no server outlives the run: each has
//! a guard process that stops its group when this process ends (`exec::process`).
//!
//! The handler only does what is async-signal-safe: it counts, stores the signal and
//! writes one byte to a pipe; the watchdog does the rest.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

/// The signal that stopped a run; [`crate::error::Outcome::Interrupted`] makes it
/// the exit code (128 + the signal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal(pub i32);

impl Signal {
    const fn exit_code(self) -> i32 {
        crate::error::Outcome::Interrupted(self).code()
    }
}

/// How long the run has to stop cleanly after the first signal.
pub const GRACE: Duration = Duration::from_millis(1500);

static COUNT: AtomicU32 = AtomicU32::new(0);
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// The write end of the watchdog's pipe (-1 before [`install`]).
static WAKE: AtomicI32 = AtomicI32::new(-1);
/// The signal that asks the run to stop, for the async run.
static STOP: OnceLock<tokio::sync::watch::Sender<Option<Signal>>> = OnceLock::new();
/// How many [`Listening`] guards are alive: code that stops cleanly on [`requested`]
/// (and must be given [`GRACE`] to record what it finished).
static LISTENERS: AtomicUsize = AtomicUsize::new(0);

/// While alive, a signal is answered by [`requested`] and the watchdog waits
/// [`GRACE`] before it ends the process; without one it ends the process at once.
/// Held for a whole run, not only while `requested` is polled: between two polls (a
/// step finishing, servers stopping, the run record being written) a signal must not
/// end the process before the run has recorded what it completed.
pub struct Listening(());

impl Drop for Listening {
    fn drop(&mut self) {
        LISTENERS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Say that this code answers [`requested`], until the guard is dropped.
pub fn listen() -> Listening {
    LISTENERS.fetch_add(1, Ordering::SeqCst);
    Listening(())
}

extern "C" fn on_signal(sig: libc::c_int) {
    if COUNT.fetch_add(1, Ordering::SeqCst) >= 1 {
        // SAFETY: _exit is async-signal-safe; the servers' guards stop them.
        unsafe { libc::_exit(Signal(sig).exit_code()) }
    }
    SIGNAL.store(sig, Ordering::SeqCst);
    let fd = WAKE.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write is async-signal-safe; the buffer is a valid byte.
        unsafe {
            libc::write(fd, [1u8].as_ptr().cast(), 1);
        }
    }
}

/// Take SIGINT, SIGTERM and SIGHUP (unless SIGHUP was ignored when the process
/// started, as under `nohup`: the user asked to outlive the terminal) and start the
/// watchdog. Called once, before a command that may start servers or run long.
pub fn install() {
    if STOP.get().is_some() {
        return;
    }
    let (tx, _) = tokio::sync::watch::channel(None);
    let _ = STOP.set(tx);
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two fds into the array it is given. Close-on-exec: no
    // server or tool this run starts inherits the pipe (a write to it would be a
    // phantom signal).
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return;
    }
    WAKE.store(fds[1], Ordering::SeqCst);
    let read_end = fds[0];
    let spawned = std::thread::Builder::new().name("watchdog".into()).spawn(move || watch(read_end));
    if spawned.is_err() {
        return;
    }
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        if sig == libc::SIGHUP && ignored(sig) {
            continue;
        }
        // SAFETY: a zeroed sigaction with a plain handler and an empty mask, as
        // sigaction(2) documents; the handler is async-signal-safe (above).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

/// The watchdog: wait for the handler's byte, tell the run, give it [`GRACE`], then
/// end the process.
fn watch(read_end: libc::c_int) {
    let mut byte = 0u8;
    loop {
        // SAFETY: reads at most one byte into a valid one-byte buffer.
        let n = unsafe { libc::read(read_end, (&mut byte as *mut u8).cast(), 1) };
        if n == 1 {
            break;
        }
        if n == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
    }
    let signal = Signal(SIGNAL.load(Ordering::SeqCst));
    let listening = LISTENERS.load(Ordering::SeqCst) > 0;
    if let Some(tx) = STOP.get() {
        tx.send_replace(Some(signal));
    }
    if listening {
        std::thread::sleep(GRACE);
        eprintln!(
            "interrupted: the run did not stop within {GRACE:?}; exiting now (completed steps are kept, servers are stopped by their guards)"
        );
    } else {
        eprintln!("interrupted");
    }
    // SAFETY: ends the process without running destructors that might block.
    unsafe { libc::_exit(signal.exit_code()) }
}

/// The signal, once one asks the run to stop.
pub async fn requested() -> Signal {
    let Some(tx) = STOP.get() else { return std::future::pending().await };
    let mut rx = tx.subscribe();
    match rx.wait_for(Option::is_some).await {
        Ok(signal) => signal.unwrap_or(Signal(libc::SIGINT)),
        Err(_) => std::future::pending().await,
    }
}

/// Whether a signal has asked the run to stop (for loops outside the async run).
pub fn pending() -> Option<Signal> {
    let sig = SIGNAL.load(Ordering::SeqCst);
    (sig != 0).then_some(Signal(sig))
}

/// Whether `signal` was set to be ignored when this process started.
fn ignored(signal: libc::c_int) -> bool {
    // SAFETY: sigaction with a null new action only reads the current disposition
    // into `old`, a zeroed struct of the right type.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}
