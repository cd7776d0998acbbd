//! The WAN part (issue 12): the same sshd behind the testkit's TCP relay, which adds a
//! one-way delay to every chunk in each direction (RTT = twice that) without limiting
//! throughput. For RTT 0 (the relay alone), 20 and 50 ms: a burst with plutus-sync
//! (the default `connections = 2`, `window = 64`; `window = 1`, one file at a time per
//! connection; `connections = 8`) next to `rsync`, `scp` batch and `sftp -b` through
//! the same relay; then a lone-file trickle at 20 ms RTT (close → final name) against
//! the target of 3 round trips + 5 ms.

use crate::burst::burst_plutus;
use crate::latency::trickle_plutus;
use crate::peers::{burst_peer, Peer};
use crate::report::Report;
use plutus_testkit::relay::Relay;
use plutus_testkit::spool::Spool;
use plutus_testkit::sshd::Sshd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How the bench reaches the sshd: straight, or through a relay with a delay.
pub struct Link {
    pub port: u16,
    pub known_hosts: PathBuf,
    pub rtt_ms: Option<u64>,
    _relay: Option<Relay>,
}

impl Link {
    pub fn direct(sshd: &Sshd) -> Link {
        Link {
            port: sshd.port(),
            known_hosts: sshd.known_hosts().to_path_buf(),
            rtt_ms: None,
            _relay: None,
        }
    }

    /// Through a relay adding `rtt_ms / 2` each way.
    pub fn relayed(sshd: &Sshd, rtt_ms: u64) -> Link {
        let relay = Relay::start(format!("127.0.0.1:{}", sshd.port()).parse().unwrap());
        relay.set_delay(Duration::from_micros(rtt_ms * 500));
        Link {
            port: relay.port(),
            known_hosts: sshd.known_hosts_for_port(relay.port()),
            rtt_ms: Some(rtt_ms),
            _relay: Some(relay),
        }
    }

    /// For a row's name: nothing for the direct link.
    pub fn label(&self) -> String {
        self.rtt_ms
            .map_or(String::new(), |r| format!(", RTT {r} ms"))
    }

    /// For file and folder names.
    pub fn slug(&self) -> String {
        self.rtt_ms.map_or(String::new(), |r| format!("-rtt{r}"))
    }
}

/// Sizes of one WAN run.
pub struct WanSizes {
    pub rtts: Vec<u64>,
    /// Files of each burst.
    pub files: usize,
    /// Files `scp` and `sftp -b` move when the RTT is not 0 (they pay several round
    /// trips per file; the figure stands for all `files`).
    pub slow_sample: usize,
    /// Lone files of the trickle at 20 ms RTT (0: none).
    pub trickle: usize,
    /// Whether to run the peers and the other plutus-sync configs.
    pub full: bool,
}

pub fn wan(
    sshd: &Sshd,
    orders: &[(String, Vec<u8>)],
    sizes: &WanSizes,
    results: &Path,
    sfx: &str,
    report: &mut Report,
) {
    let orders = &orders[..orders.len().min(sizes.files)];
    for &rtt in &sizes.rtts {
        let link = Link::relayed(sshd, rtt);
        report
            .wan
            .push(burst_plutus(sshd, &link, orders, 2, None, results, sfx));
        if !sizes.full {
            continue;
        }
        report
            .wan
            .push(burst_plutus(sshd, &link, orders, 2, Some(1), results, sfx));
        report
            .wan
            .push(burst_plutus(sshd, &link, orders, 8, None, results, sfx));
        for peer in [Peer::Rsync, Peer::ScpBatch, Peer::SftpBatch] {
            let sample = (rtt > 0 && !matches!(peer, Peer::Rsync)).then_some(sizes.slow_sample);
            match burst_peer(sshd, &link, orders, peer, sample) {
                Ok(b) => report.wan.push(b),
                Err(skip) => {
                    println!("  {}{}: SKIPPED: {skip}", peer.name(), link.label());
                    report
                        .notes
                        .push(format!("{}{}: skipped: {skip}", peer.name(), link.label()));
                }
            }
        }
    }
    if sizes.trickle > 0 {
        let rtt = 20;
        let link = Link::relayed(sshd, rtt);
        let remote = sshd.inbox().join(format!("latency-plutus{}", link.slug()));
        let sp = Spool::as_installed_via(sshd, &remote, 2, link.port, "");
        // Two a second: each file alone in its batch, as an order in a quiet hour.
        let rate = 2.0;
        let name = format!(
            "plutus-sync {rate}/s x {}s{}",
            sizes.trickle as f64 / rate,
            link.label()
        );
        let log = results.join(format!("e2e{sfx}-latency{}.service.log", link.slug()));
        let mut l = trickle_plutus(&sp, &remote, sizes.trickle, rate, name, &log, 0);
        l.rtt_ms = Some(rtt);
        report.latency.push(l);
    }
}
