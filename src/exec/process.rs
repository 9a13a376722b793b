//! A launched server as a process group that always ends with the run.
//!
//! A server runs in its own process group, whose id (the leader's pid) is kept from
//! the moment it is spawned: everything the server starts (vLLM's engine and workers,
//! a shell's background jobs) is stopped with it, however the leader ended, even after
//! the leader is dead and reaped.
//!
//! Each group also gets a **guard**: a small `pipeline guard PGID` process in a group
//! of its own, whose stdin is a pipe from this process. When this process ends by any
//! means, SIGKILL and the OOM killer included, the kernel closes the pipe, and the
//! guard stops the group. A guard that dies first (killed by hand, by the OOM
//! killer) leaves its server unprotected: the run notices at once, says so, and stops
//! that server (the next measure that needs it starts it again, with a new guard).
//! `PR_SET_PDEATHSIG` would only reach the leader (not its
//! children), and it fires when the *thread* that spawned the child exits, which in a
//! thread pool is not the process; the pipe depends on neither.

use std::io::Read;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process_group};

use crate::error::{Failure, Kind, Outcome};

/// Set when this process turned transparent huge pages off for itself
/// ([`huge_pages_off`]): a server it spawns gets them back, as its user's machine has
/// them, since the kernel's flag is inherited by every child and kept across `exec`.
static HUGE_PAGES_RESTORED_IN_SERVERS: AtomicBool = AtomicBool::new(false);

/// Turn transparent huge pages off for this process (not for the servers it starts).
/// mimalloc asks for them on every region it maps, and a command that touches a little
/// of many regions from several threads then holds whole 2 MiB pages: a no-op run of
/// 10,001 steps was 74 MB resident with them and 43 MB without (benches/noop.sh). Every
/// command but `sim-server` calls this first thing; a process that had them off already
/// keeps it so, and so do its servers.
pub fn huge_pages_off() {
    use rustix::thread::{disable_transparent_huge_pages, transparent_huge_pages_are_disabled};
    if transparent_huge_pages_are_disabled() == Ok(false) && disable_transparent_huge_pages(true).is_ok() {
        HUGE_PAGES_RESTORED_IN_SERVERS.store(true, Ordering::SeqCst);
    }
}

/// How long a server gets to exit after SIGTERM before SIGKILL.
pub const GRACE: Duration = Duration::from_secs(10);

pub struct ServerProcess {
    child: tokio::process::Child,
    pgid: Pid,
    /// The guard, watched by a task of its own, and the write end of its pipe;
    /// dropping the pipe releases the guard.
    guard: Option<Guard>,
}

struct Guard {
    watch: tokio::task::JoinHandle<()>,
    pipe: tokio::process::ChildStdin,
    /// Set before the pipe is dropped: the guard's exit is expected.
    released: Arc<AtomicBool>,
}

impl ServerProcess {
    /// Spawn `cmd` as the leader of a new process group, with a guard (`guard_bin
    /// guard PGID`) that stops the group if this process dies.
    /// `name` is the server's, for the warning when its guard dies first.
    pub fn spawn(mut cmd: tokio::process::Command, guard_bin: &Path, name: &str) -> std::io::Result<ServerProcess> {
        cmd.process_group(0).kill_on_drop(true);
        if HUGE_PAGES_RESTORED_IN_SERVERS.load(Ordering::SeqCst) {
            // SAFETY: between fork and exec the child makes one system call (prctl),
            // which allocates nothing and takes no lock.
            unsafe {
                cmd.pre_exec(|| rustix::thread::disable_transparent_huge_pages(false).map_err(std::io::Error::from));
            }
        }
        let mut child = cmd.spawn()?;
        let pgid = child.id().and_then(|p| Pid::from_raw(p as i32)).ok_or_else(|| std::io::Error::other("the server exited at once"))?;
        let guard = tokio::process::Command::new(guard_bin)
            .arg("guard")
            .arg(pgid.as_raw_nonzero().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .and_then(|mut g| g.stdin.take().map(|pipe| (g, pipe)).ok_or_else(|| std::io::Error::other("it has no stdin")));
        match guard {
            Ok((guard, pipe)) => {
                let released = Arc::new(AtomicBool::new(false));
                let watch = tokio::spawn(watch_guard(guard, pgid, name.to_string(), released.clone()));
                Ok(ServerProcess { child, pgid, guard: Some(Guard { watch, pipe, released }) })
            }
            // No server runs without its guard.
            Err(e) => {
                let _ = kill_process_group(pgid, Signal::KILL);
                let _ = child.start_kill();
                Err(std::io::Error::other(format!("cannot start its guard `{} guard`: {e}", guard_bin.display())))
            }
        }
    }

    /// The leader's exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM the group; SIGKILL it when the leader (or, after it, the rest of the
    /// group) is still there after [`GRACE`]. Then release the guard.
    pub async fn stop(mut self) {
        let deadline = Instant::now() + GRACE;
        let _ = kill_process_group(self.pgid, Signal::TERM);
        if tokio::time::timeout(GRACE, self.child.wait()).await.is_err() {
            let _ = kill_process_group(self.pgid, Signal::KILL);
            let _ = self.child.wait().await;
        }
        // Grandchildren (vLLM's workers) may outlive the leader while they free GPUs.
        while group_alive(self.pgid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = kill_process_group(self.pgid, Signal::KILL);
        if let Some(Guard { watch, pipe, released }) = self.guard.take() {
            released.store(true, Ordering::SeqCst);
            drop(pipe);
            let _ = tokio::time::timeout(Duration::from_secs(2), watch).await;
        }
    }
}

/// Wait for a server's guard to exit; unless it was released, the server has lost its
/// protection against this run dying: say so and stop the server's group now (the
/// leader's exit then shows as the server exiting during its measurement).
async fn watch_guard(mut guard: tokio::process::Child, pgid: Pid, name: String, released: Arc<AtomicBool>) {
    let status = guard.wait().await;
    if released.load(Ordering::SeqCst) || !group_alive(pgid) {
        return;
    }
    let how = status.map_or_else(|e| e.to_string(), |s| s.to_string());
    eprintln!(
        "warning: the guard of server `{name}` ended ({how}); stopping the server now, since nothing would stop it if this run were killed"
    );
    let _ = kill_process_group(pgid, Signal::TERM);
    let deadline = Instant::now() + GRACE;
    while group_alive(pgid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = kill_process_group(pgid, Signal::KILL);
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // A server dropped without `stop` (a panic, an early return) takes its group
        // along at once: the last line of defence, where nothing can wait.
        if let Some(guard) = &self.guard {
            guard.released.store(true, Ordering::SeqCst);
            let _ = kill_process_group(self.pgid, Signal::KILL);
        }
    }
}

/// Whether any process of group `pgid` is left (zombies aside).
fn group_alive(pgid: Pid) -> bool {
    crate::processes::group_alive(pgid.as_raw_nonzero().get())
}

/// `pipeline guard PGID`: wait until stdin closes (the run that started this guard
/// ended, however it ended), then stop group `pgid` as [`ServerProcess::stop`] would.
pub fn guard(pgid: i32) -> Result<Outcome, Failure> {
    use std::io::IsTerminal;
    let by_hand = || Failure {
        error: anyhow::anyhow!("`pipeline guard` is started by `pipeline run` beside each server, not by hand"),
        kind: Kind::User,
    };
    // Started by hand, a guard would stop whatever group it names at the first Ctrl-D.
    let own = rustix::process::getpgrp().as_raw_nonzero().get();
    if pgid <= 1 || pgid == own || std::io::stdin().is_terminal() {
        return Err(by_hand());
    }
    let Some(pgid) = Pid::from_raw(pgid) else { return Err(by_hand()) };
    let mut buf = [0u8; 64];
    let mut stdin = std::io::stdin().lock();
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    if !group_alive(pgid) {
        return Ok(Outcome::Done);
    }
    let _ = kill_process_group(pgid, Signal::TERM);
    let deadline = Instant::now() + GRACE;
    while group_alive(pgid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = kill_process_group(pgid, Signal::KILL);
    Ok(Outcome::Done)
}
