//! The test kit: everything the integration tests (`tests/it/`) and the benches
//! (`benches/`) start and check plutus-sync with. It owns what it starts (servers,
//! threads, child processes, temp dirs) and stops it on drop; it never touches the
//! service's code, only its binary, its files and its sockets.
//!
//! - [`sshd`]: a real OpenSSH server in a temp dir (keys, known_hosts, free port),
//!   optionally behind `sftp_wrapper.py`, a misbehaving SFTP server.
//! - [`spool`]: one web-shop side (outbox, archive, journal, config builder) and the
//!   `plutus-sync` commands run against it.
//! - [`service`]: the `plutus-sync` binary as a child, ready when it sends `READY=1`.
//! - [`checks`]: waits and the exactly-once invariants tests end with.
//! - [`orders`]: order files as the web shop writes them.
//! - [`erp`]: an importing ERP that takes each file from the inbox as it appears.
//! - [`relay`]: a TCP relay that adds delay, refuses or cuts connections.
//! - [`process`]: a child reaped with wait4, so its rusage is known.
//! - [`procfs`]: CPU, memory and descendants of processes, pressure stalls (/proc).
//! - [`files`]: names, contents and counts of files in folders.
//! - this file: polling with a deadline, `free_port`, `require_root`.

// libc calls that rustix does not wrap (wait4 with rusage, sysconf) or that tests
// make on purpose (kill with any signal): the workspace denies `unsafe`, the kit may.
#![allow(unsafe_code)]

pub mod checks;
pub mod erp;
pub mod files;
pub mod orders;
pub mod process;
pub mod procfs;
pub mod relay;
pub mod service;
pub mod spool;
pub mod sshd;

use std::net::{Ipv4Addr, TcpListener};
use std::thread;
use std::time::{Duration, Instant};

/// How often the polling helpers re-check their condition.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `cond` until it returns true or `timeout` has elapsed.
///
/// Returns whether the condition became true. The condition is always checked
/// once more after the deadline, so a slow final check cannot lose a success.
pub fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return cond();
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Polls `cond` until it returns true; panics naming `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, cond: impl FnMut() -> bool) {
    if !poll_until(timeout, cond) {
        panic!("timed out after {timeout:?} waiting for {what}");
    }
}

/// For the `#[ignore = "needs root…"]` tests: run anyway (with `--include-ignored`)
/// by someone else, they fail saying why, never pass without testing anything.
pub fn require_root(what: &str) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        panic!("this test {what} and must run as root (CI does)");
    }
}

/// A loopback port that was free a moment ago. It is free only until someone else
/// binds it: a caller that loses the race must pick another (as [`sshd::Sshd`] does).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}
