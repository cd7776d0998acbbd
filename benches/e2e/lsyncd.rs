//! lsyncd's latency, at its default config and with `delay = 0`.

use crate::peers::{remote_spec, ssh_options};
use crate::report::Latency;
use crate::trickle::trickle;
use crate::util::{verify_dir, which};
use plutus_testkit::checks::tail;
use plutus_testkit::orders;
use plutus_testkit::process::{secs, Proc};
use plutus_testkit::sshd::Sshd;
use std::fs;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub fn lsyncd_name(delay: Option<u32>) -> String {
    match delay {
        None => "lsyncd default config (delay 15 s) 10/s x 30s".into(),
        Some(d) => format!("lsyncd delay = {d} 10/s x 30s"),
    }
}

/// lsyncd's `default.rsync` (rsync over ssh to the same sshd) watching a source dir,
/// at its default `delay` or the given one.
pub fn latency_lsyncd(
    sshd: &Sshd,
    n: usize,
    rate: f64,
    delay: Option<u32>,
) -> Result<Latency, String> {
    let Some(lsyncd) = which("lsyncd") else {
        return Err("`lsyncd` not found (Debian package lsyncd not installed)".into());
    };
    if which("rsync").is_none() {
        return Err("`rsync` not found (Debian package rsync not installed)".into());
    }
    let name = lsyncd_name(delay);
    println!("\n{name}");
    let work = tempfile::Builder::new()
        .prefix("plutus-e2e-lsyncd-")
        .tempdir()
        .unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let slug = delay.map_or("default".to_string(), |d| format!("delay{d}"));
    let remote = sshd.inbox().join(format!("latency-lsyncd-{slug}"));
    fs::create_dir_all(&remote).unwrap();
    let log = work.path().join("lsyncd.log");
    let conf = work.path().join("lsyncd.conf.lua");
    let rsh = format!(
        "/usr/bin/ssh {} -p {}",
        ssh_options(sshd, sshd.known_hosts()).join(" "),
        sshd.port()
    );
    fs::write(
        &conf,
        format!(
            "settings {{\n  logfile = \"{}\",\n  statusFile = \"{}\",\n  nodaemon = true,\n}}\n\
             sync {{\n  default.rsync,\n  source = \"{}/\",\n  target = \"{}\",\n{}  rsync = {{ rsh = \"{rsh}\" }},\n}}\n",
            log.display(),
            work.path().join("lsyncd.status").display(),
            src.display(),
            remote_spec(sshd, &remote),
            delay.map_or(String::new(), |d| format!("  delay = {d},\n")),
        ),
    )
    .unwrap();
    let out = fs::File::create(work.path().join("lsyncd.stdout")).unwrap();
    let mut p = Proc::spawn(
        Command::new(&lsyncd)
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out),
    )
    .map_err(|e| format!("spawn lsyncd: {e}"))?;
    let lsyncd_text = || {
        fs::read_to_string(&log).unwrap_or_default()
            + &fs::read_to_string(work.path().join("lsyncd.stdout")).unwrap_or_default()
    };
    // Ready once its start-up rsync of the (empty) source is done.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !lsyncd_text().contains("finished.") {
        if p.try_reap().is_some() || Instant::now() > deadline {
            return Err(format!(
                "lsyncd did not start: {}",
                tail(&lsyncd_text(), 20)
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
    let orders = orders::seeded(n + 1, 0x91 + n as u64);
    let result = trickle(&src, &remote, &orders, rate);
    let (_, ru) = p.stop(libc::SIGTERM, Duration::from_secs(10));
    let out = result.map_err(|e| format!("{e}; lsyncd log: {}", tail(&lsyncd_text(), 20)))?;
    verify_dir(&remote, &orders).map_err(|e| format!("remote dir after lsyncd: {e}"))?;
    Ok(out.report(
        name,
        false,
        rate,
        secs(ru.ru_utime) + secs(ru.ru_stime),
        "rsync writes a dot temp name, then renames; no journal, no archive",
    ))
}
