//! Whether a process, or any process of a group, is still running on this machine.
//!
//! A zombie counts as gone: it holds no memory, no GPU and no port, and it stays until
//! its parent (or, once that is gone, the init process) reaps it, which under some
//! init processes takes seconds. `kill(pid, 0)` alone would call it alive.

use rustix::process::{Pid, test_kill_process, test_kill_process_group};

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    let Some(p) = Pid::from_raw(pid) else { return false };
    match test_kill_process(p) {
        Err(rustix::io::Errno::SRCH) => false,
        _ => stat(pid).is_none_or(|(state, _)| state != 'Z'),
    }
}

/// Whether any process of group `pgid` exists and is not a zombie.
pub fn group_alive(pgid: i32) -> bool {
    let Some(p) = Pid::from_raw(pgid) else { return false };
    if let Err(rustix::io::Errno::SRCH) = test_kill_process_group(p) {
        return false;
    }
    // Someone is in the group: look for a member that is not a zombie.
    let Ok(entries) = std::fs::read_dir("/proc") else { return true };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .any(|pid| stat(pid).is_some_and(|(state, group)| state != 'Z' && group == pgid))
}

/// The state letter (`R`, `S`, `Z`, …) and process group of `pid`, from
/// `/proc/PID/stat`: "pid (comm) state ppid pgrp …", where comm may hold spaces and
/// parentheses.
fn stat(pid: i32) -> Option<(char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = text.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let group = fields.nth(1)?.parse().ok()?;
    Some((state, group))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_runs_and_a_reaped_one_does_not() {
        assert!(alive(std::process::id() as i32));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        // Exited but not reaped: a zombie, which counts as gone.
        while stat(pid).map(|(s, _)| s) != Some('Z') {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!alive(pid));
        child.wait().unwrap();
        assert!(!alive(pid));
    }
}
