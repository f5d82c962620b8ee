//! Signalling and reaping child processes without `unsafe`.
//!
//! `unsafe` is forbidden in this workspace and `libc::kill` is an unsafe
//! FFI call, so signals go through the `kill` utility, and process state
//! ("has it exited yet?", "what are its children?") is read from `/proc`.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};

/// Sends `signal` (e.g. `libc::SIGTERM`) to `pid`; a negative `pid` names a
/// process group. Returns whether the signal was delivered.
pub fn send_signal(pid: i32, signal: libc::c_int) -> bool {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match status {
        Ok(status) => status.success(),
        // No kill(1) installed: the shell builtin does the same job (dash's
        // takes no "--", and needs none: only its first word is an option).
        Err(_) => Command::new("sh")
            .args([
                "-c",
                "kill -\"$0\" \"$1\"",
                &signal.to_string(),
                &pid.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false),
    }
}

/// Whether `pid` has terminated (or never existed), *without* reaping it,
/// so its pid cannot be reused while the caller still acts on it.
pub fn has_terminated(pid: u32) -> bool {
    match stat_fields(pid) {
        Some(fields) => matches!(fields.first().map(String::as_str), Some("Z" | "X")),
        None => true,
    }
}

/// The direct children of `pid`, from `/proc`. They must be collected
/// while `pid` is still alive: once it exits they are re-parented.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parent = pid.to_string();
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&candidate| {
            stat_fields(candidate).is_some_and(|fields| fields.get(1) == Some(&parent))
        })
        .collect()
}

/// The fields of `/proc/PID/stat` after the command name (state, ppid,
/// pgrp, ...); the name is skipped because it may contain spaces and
/// parentheses itself.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// A shell-style exit code: the process's own code, or `128 + signal` when a
/// signal killed it, so a single integer tells both cases apart.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => -1,
    }
}

/// Sends SIGTERM to a server if this test process dies without stopping it
/// (Ctrl-C, a CI timeout's SIGKILL: no Drop runs then).
///
/// Needed for servers in a process group of their own, which a Ctrl-C on
/// `cargo test` does not reach. A small shell loop, itself in its own
/// process group so the same Ctrl-C does not end it first, polls this
/// process every half second. Dropping the watch ends the loop.
pub struct DeathWatch {
    child: Option<Child>,
}

impl DeathWatch {
    /// Watches this process on behalf of `target`.
    pub fn new(target: u32) -> DeathWatch {
        // A zombie counts as dead: in containers nothing may reap it.
        const SCRIPT: &str = r#"
            while :; do
                state=$(sed -n 's/.*) \([A-Z]\).*/\1/p' "/proc/$0/stat" 2>/dev/null)
                case "$state" in ""|Z|X) break ;; esac
                sleep 0.5
            done
            kill -TERM "$1" 2>/dev/null
        "#;
        let child = Command::new("sh")
            .args(["-c", SCRIPT])
            .arg(std::process::id().to_string())
            .arg(target.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            // Without sh the safety net is missing, but the tests still work.
            .ok();
        DeathWatch { child }
    }
}

impl Drop for DeathWatch {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
