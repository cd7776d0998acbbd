//! Shared helpers for the `it` integration-test binary.
//!
//! Every test module is compiled into one binary (see `tests/it/main.rs`), so a
//! helper that only some modules use would otherwise trip `dead_code`.
#![allow(dead_code)]

pub mod erp;
pub mod orders;
pub mod relay;
pub mod service;
pub mod sshd;

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
