//! A child process reaped with wait4, so its rusage is known.

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// A child process reaped with wait4, so its rusage (children included) is known.
pub struct Proc {
    pub pid: i32,
    pub spawned: Instant,
    /// The same moment on the wall clock, to compare with the log's timestamps.
    pub spawned_wall: SystemTime,
    pub reaped: Option<(i32, libc::rusage)>,
}

impl Proc {
    pub fn spawn(cmd: &mut Command) -> std::io::Result<Proc> {
        let spawned = Instant::now();
        let spawned_wall = SystemTime::now();
        let child = cmd.spawn()?;
        // The std handle is dropped (that neither waits nor kills); wait4 reaps it.
        Ok(Proc {
            pid: child.id() as i32,
            spawned,
            spawned_wall,
            reaped: None,
        })
    }

    /// Reaps it if it has exited; returns its exit status then.
    pub fn try_reap(&mut self) -> Option<i32> {
        if let Some((st, _)) = self.reaped {
            return Some(st);
        }
        let mut st = 0;
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(self.pid, &mut st, libc::WNOHANG, &mut ru) };
        if r == self.pid {
            self.reaped = Some((st, ru));
            return Some(st);
        }
        None
    }

    pub fn wait(&mut self) -> (i32, libc::rusage) {
        if let Some(r) = self.reaped {
            return r;
        }
        let mut st = 0;
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            let r = unsafe { libc::wait4(self.pid, &mut st, 0, &mut ru) };
            if r == self.pid {
                break;
            }
            if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                panic!("wait4({}): {}", self.pid, std::io::Error::last_os_error());
            }
        }
        self.reaped = Some((st, ru));
        (st, ru)
    }

    /// `sig`, then wait up to `grace` before SIGKILL.
    pub fn stop(&mut self, sig: i32, grace: Duration) -> (i32, libc::rusage) {
        if self.try_reap().is_none() {
            unsafe { libc::kill(self.pid, sig) };
            let deadline = Instant::now() + grace;
            while self.try_reap().is_none() {
                if Instant::now() > deadline {
                    unsafe { libc::kill(self.pid, libc::SIGKILL) };
                    break;
                }
                thread::sleep(Duration::from_millis(5));
            }
        }
        self.wait()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            self.wait();
        }
    }
}
