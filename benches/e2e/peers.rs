//! The peers' bursts: `scp` per file and batched, `sftp -b` with put + rename, and
//! `rsync`, each with the fixture's key and known_hosts.

use crate::burst::ServerCpu;
use crate::report::Burst;
use crate::util::{fill, kib_mib, verify_dir, which};
use crate::wan::Link;
use plutus_testkit::checks::tail;
use plutus_testkit::files::count_in;
use plutus_testkit::process::{secs, Proc};
use plutus_testkit::procfs::Psi;
use plutus_testkit::sshd::Sshd;
use serde_json::json;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `scp` once per file stops after this many files or this long, whichever first.
const SCP_EACH_SAMPLE: usize = 300;
const SCP_EACH_MAX: Duration = Duration::from_secs(120);

#[derive(Clone, Copy)]
pub enum Peer {
    ScpEach,
    ScpBatch,
    SftpBatch,
    Rsync,
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Peer::ScpEach => "scp once per file",
            Peer::ScpBatch => "scp batch (one scp, all files)",
            Peer::SftpBatch => "sftp -b, put + rename per file",
            Peer::Rsync => "rsync -e ssh --remove-source-files",
        }
    }
    pub fn slug(self) -> &'static str {
        match self {
            Peer::ScpEach => "scp-each",
            Peer::ScpBatch => "scp-batch",
            Peer::SftpBatch => "sftp-b",
            Peer::Rsync => "rsync",
        }
    }
    pub fn binary(self) -> (&'static str, &'static str) {
        match self {
            Peer::ScpEach | Peer::ScpBatch => ("scp", "openssh-client"),
            Peer::SftpBatch => ("sftp", "openssh-client"),
            Peer::Rsync => ("rsync", "rsync"),
        }
    }
    pub fn protocol(self) -> &'static str {
        match self {
            Peer::ScpEach | Peer::ScpBatch => {
                "final name directly (half-written file visible), no check"
            }
            Peer::SftpBatch => "temp name + rename (overwrites), no check",
            Peer::Rsync => "rsync's dot temp name + rename, whole-file checksum",
        }
    }
}

pub fn ssh_options(sshd: &Sshd, known_hosts: &Path) -> Vec<String> {
    [
        "-F",
        "/dev/null",
        "-i",
        &sshd.client_key().display().to_string(),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        &format!("UserKnownHostsFile={}", known_hosts.display()),
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "LogLevel=ERROR",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

pub fn remote_spec(sshd: &Sshd, dir: &Path) -> String {
    format!("{}@127.0.0.1:{}/", sshd.user(), dir.display())
}

/// `peer`'s burst of `orders` through `link`; `sample`: only the first this many files
/// (the figure stands for all of them).
pub fn burst_peer(
    sshd: &Sshd,
    link: &Link,
    orders: &[(String, Vec<u8>)],
    peer: Peer,
    sample: Option<usize>,
) -> Result<Burst, String> {
    let (bin, package) = peer.binary();
    let Some(bin_path) = which(bin) else {
        return Err(format!(
            "`{bin}` not found (Debian package {package} not installed)"
        ));
    };
    if matches!(peer, Peer::Rsync) && which("ssh").is_none() {
        return Err("`ssh` not found (Debian package openssh-client not installed)".into());
    }
    println!(
        "\n{}{}: burst of {} files",
        peer.name(),
        link.label(),
        orders.len()
    );
    let work = tempfile::Builder::new()
        .prefix("plutus-e2e-peer-")
        .tempdir()
        .unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let sample = match (peer, sample) {
        (_, Some(n)) => &orders[..orders.len().min(n)],
        (Peer::ScpEach, None) => &orders[..orders.len().min(SCP_EACH_SAMPLE)],
        _ => orders,
    };
    fill(&src, sample, true);
    let remote = sshd
        .inbox()
        .join(format!("burst-{}{}", peer.slug(), link.slug()));
    fs::create_dir_all(&remote).unwrap();
    let errlog = work.path().join("stderr.log");
    let rss_file = work.path().join("rss");
    let port = link.port.to_string();
    let opts = ssh_options(sshd, &link.known_hosts);
    let target = remote_spec(sshd, &remote);
    let err = || {
        fs::File::options()
            .create(true)
            .append(true)
            .open(&errlog)
            .unwrap()
    };
    let base = |c: &mut Command| {
        c.current_dir(&src)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err());
    };

    let server = ServerCpu::new(sshd);
    let psi = Psi::start("cpu", "some");
    let started = Instant::now();
    let mut usage = Usage::default();
    let mut sent = 0usize;
    match peer {
        Peer::ScpEach => {
            for (name, _) in sample {
                let mut c = measured(&bin_path, &rss_file);
                c.arg("-q")
                    .args(&opts)
                    .args(["-P", &port])
                    .arg(name)
                    .arg(&target);
                base(&mut c);
                usage.add(run(&mut c, &errlog, &rss_file)?);
                sent += 1;
                if started.elapsed() > SCP_EACH_MAX {
                    break;
                }
            }
        }
        Peer::ScpBatch => {
            let mut c = measured(&bin_path, &rss_file);
            c.arg("-q").args(&opts).args(["-P", &port]);
            c.args(sample.iter().map(|(n, _)| n)).arg(&target);
            base(&mut c);
            usage.add(run(&mut c, &errlog, &rss_file)?);
            sent = sample.len();
        }
        Peer::SftpBatch => {
            let batch = work.path().join("batch");
            let mut text = format!("cd {}\n", remote.display());
            for (n, _) in sample {
                text.push_str(&format!("put {n} {n}.part\nrename {n}.part {n}\n"));
            }
            fs::write(&batch, text).unwrap();
            let mut c = measured(&bin_path, &rss_file);
            c.arg("-q")
                .args(&opts)
                .args(["-P", &port, "-b"])
                .arg(&batch);
            c.arg(format!("{}@127.0.0.1", sshd.user()));
            base(&mut c);
            usage.add(run(&mut c, &errlog, &rss_file)?);
            sent = sample.len();
        }
        Peer::Rsync => {
            let mut c = measured(&bin_path, &rss_file);
            let rsh = format!("ssh {} -p {port}", opts.join(" "));
            c.args(["-a", "--remove-source-files", "-e", &rsh, "./"])
                .arg(&target);
            base(&mut c);
            usage.add(run(&mut c, &errlog, &rss_file)?);
            sent = sample.len();
            if count_in(&src) != 0 {
                return Err(format!("rsync left {} files in the source", count_in(&src)));
            }
        }
    }
    let wall = started.elapsed();
    let server_cpu = server.delta();
    let pressure = psi.share();
    let moved = &sample[..sent];
    verify_dir(&remote, moved)
        .map_err(|e| format!("{}: remote dir after the run: {e}", peer.name()))?;
    let b = Burst {
        name: format!("{}{}", peer.name(), link.label()),
        plutus: false,
        protocol: peer.protocol(),
        files: sent,
        of: orders.len(),
        wall_s: wall.as_secs_f64(),
        client_cpu_s: usage.cpu(),
        client_rss_kib: usage.maxrss_kib,
        server_cpu_s: server_cpu,
        cpu_pressure_pct: pressure,
        detail: json!({
            "command": bin_path.display().to_string(),
            "rtt_ms": link.rtt_ms,
            "runs": usage.runs,
            "client_user_s": usage.user,
            "client_sys_s": usage.sys,
        }),
    };
    println!(
        "  {} files in {:.2} s ({:.1} files/s{}); client CPU {:.2} s, peak RSS {} MiB; server CPU {server_cpu:.2} s",
        sent,
        b.wall_s,
        b.rate(),
        if sent < orders.len() {
            format!(", all {} would take ~{:.0} s", orders.len(), b.wall_s * orders.len() as f64 / sent as f64)
        } else {
            String::new()
        },
        b.client_cpu_s,
        kib_mib(b.client_rss_kib),
    );
    Ok(b)
}

#[derive(Default)]
pub struct Usage {
    pub runs: usize,
    pub user: f64,
    pub sys: f64,
    pub maxrss_kib: Option<u64>,
}

impl Usage {
    pub fn add(&mut self, (ru, rss): (libc::rusage, Option<u64>)) {
        self.runs += 1;
        self.user += secs(ru.ru_utime);
        self.sys += secs(ru.ru_stime);
        self.maxrss_kib = self.maxrss_kib.max(rss);
    }
    pub fn cpu(&self) -> f64 {
        self.user + self.sys
    }
}

/// `bin`, under `/usr/bin/time -f %M` when that is installed, for the peak RSS of the
/// command and its children. (wait4's own `ru_maxrss` is no use here: Linux folds the
/// pre-exec high-water mark of a child into it, and a child forked from this bench
/// starts with the bench's RSS; /usr/bin/time is small.)
pub fn measured(bin: &Path, rss_file: &Path) -> Command {
    match which("time").filter(|t| t.starts_with("/usr/bin")) {
        Some(time) => {
            let mut c = Command::new(time);
            c.args(["-f", "%M", "-o"]).arg(rss_file).arg(bin);
            c
        }
        None => Command::new(bin),
    }
}

/// Runs a command to the end: its rusage (waited-for children included) and peak RSS
/// (KiB, when run through `measured`), or its stderr when it failed.
pub fn run(
    c: &mut Command,
    errlog: &Path,
    rss_file: &Path,
) -> Result<(libc::rusage, Option<u64>), String> {
    let _ = fs::remove_file(rss_file);
    let mut p = Proc::spawn(c).map_err(|e| format!("spawn {c:?}: {e}"))?;
    let (st, ru) = p.wait();
    if st.success() {
        let rss = fs::read_to_string(rss_file)
            .ok()
            .and_then(|t| t.lines().last()?.trim().parse().ok());
        Ok((ru, rss))
    } else {
        Err(format!(
            "{:?} failed ({st}): {}",
            c.get_program(),
            tail(&fs::read_to_string(errlog).unwrap_or_default(), 10)
        ))
    }
}
