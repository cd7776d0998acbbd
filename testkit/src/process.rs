//! A child process that this process reaps itself with wait4(2), so that its
//! resource usage (CPU time, its own waited-for children included) is known when it
//! ends; std's `Child::wait` throws the rusage away. Dropping it kills and reaps the
//! child.

use std::io;
use std::process::{Command, ExitStatus};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use std::os::unix::process::ExitStatusExt;

/// How often [`Proc::stop`] checks whether the child has exited.
const STOP_POLL: Duration = Duration::from_millis(5);

/// A running (or reaped) child. See the module docs.
pub struct Proc {
    pid: u32,
    spawned: Instant,
    /// The same moment on the wall clock, to compare with a log's timestamps.
    spawned_wall: SystemTime,
    reaped: Option<(ExitStatus, libc::rusage)>,
}

impl Proc {
    pub fn spawn(cmd: &mut Command) -> io::Result<Proc> {
        let spawned = Instant::now();
        let spawned_wall = SystemTime::now();
        let child = cmd.spawn()?;
        // The std handle is dropped (that neither waits nor kills); wait4 reaps it.
        Ok(Proc {
            pid: child.id(),
            spawned,
            spawned_wall,
            reaped: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// When `spawn` was called.
    pub fn spawned(&self) -> Instant {
        self.spawned
    }

    /// When `spawn` was called, on the wall clock.
    pub fn spawned_wall(&self) -> SystemTime {
        self.spawned_wall
    }

    /// Reaps it if it has exited; returns its exit status then.
    pub fn try_reap(&mut self) -> Option<ExitStatus> {
        if self.reaped.is_none() {
            self.reaped = self.wait4(libc::WNOHANG);
        }
        self.reaped.map(|(st, _)| st)
    }

    /// Waits for it to exit: its exit status and resource usage.
    pub fn wait(&mut self) -> (ExitStatus, libc::rusage) {
        loop {
            if let Some(r) = self.reaped {
                return r;
            }
            self.reaped = self.wait4(0);
        }
    }

    /// Sends `sig`, then waits up to `grace` before SIGKILL. Whether it had to be
    /// killed shows in the exit status.
    pub fn stop(&mut self, sig: libc::c_int, grace: Duration) -> (ExitStatus, libc::rusage) {
        if self.try_reap().is_none() {
            self.signal(sig);
            let deadline = Instant::now() + grace;
            while self.try_reap().is_none() {
                if Instant::now() > deadline {
                    self.signal(libc::SIGKILL);
                    break;
                }
                thread::sleep(STOP_POLL);
            }
        }
        self.wait()
    }

    /// SIGKILL and reap: no chance to clean up.
    pub fn kill(&mut self) -> (ExitStatus, libc::rusage) {
        if self.try_reap().is_none() {
            self.signal(libc::SIGKILL);
        }
        self.wait()
    }

    /// Sends `sig` unless it was reaped already (its pid may be someone else's by now).
    pub fn signal(&self, sig: libc::c_int) {
        if self.reaped.is_none() {
            // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped
            // child, so it cannot have been reused.
            unsafe { libc::kill(self.pid as libc::pid_t, sig) };
        }
    }

    /// One wait4 call; `None` while it runs (WNOHANG) or when interrupted by a signal.
    fn wait4(&self, options: libc::c_int) -> Option<(ExitStatus, libc::rusage)> {
        let mut st = 0;
        // SAFETY: rusage is plain data, all zeroes is a valid value.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: pointers to live stack values of the right types.
        let r = unsafe { libc::wait4(self.pid as libc::pid_t, &mut st, options, &mut ru) };
        if r == self.pid as libc::pid_t {
            return Some((ExitStatus::from_raw(st), ru));
        }
        let err = io::Error::last_os_error();
        if r == -1 && err.kind() != io::ErrorKind::Interrupted {
            panic!("wait4({}): {err}", self.pid);
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            self.kill();
        }
    }
}

/// A `timeval` of a rusage (`ru_utime`, `ru_stime`), in seconds.
pub fn secs(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}
