//! SIGKILL mid-burst, restart, and nothing is lost or sent twice.

use crate::support::poll_until;
use crate::support::service::*;
use crate::support::sshd::Sshd;
use std::time::{Duration, Instant};

#[test]
fn the_service_killed_mid_burst_and_restarted_delivers_every_file_once() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "connections = 2");
    let orders: Vec<(String, Vec<u8>)> = (0..1000)
        .map(|n| {
            (
                format!("order-2026-{n:06}.json"),
                order(n, 1000 + (n * 53) % 9000),
            )
        })
        .collect();
    let mut svc = spool.start();
    svc.wait_ready();
    for (n, b) in &orders {
        spool.drop_order(n, b);
    }
    // Kill while files are in every stage: each time after a random amount of
    // progress and a random extra delay, then restart and go on.
    let mut rng = fastrand::Rng::with_seed(0x9e37_79b9);
    let mut kills = 0;
    let started = Instant::now();
    loop {
        let done = spool.archived().len();
        if done >= orders.len() || started.elapsed() > Duration::from_secs(240) {
            break;
        }
        let target = done + rng.usize(10..60);
        poll_until(Duration::from_secs(10), || spool.archived().len() >= target);
        std::thread::sleep(Duration::from_millis(rng.u64(0..30)));
        if spool.archived().len() >= orders.len() {
            break;
        }
        svc.kill();
        kills += 1;
        svc = spool.start();
        svc.wait_ready();
    }
    eprintln!("{kills} kills during a burst of {} files", orders.len());
    assert!(
        kills >= 10,
        "only {kills} kills: the burst ended too soon to test much"
    );
    wait_archived(&spool, &svc, orders.len(), Duration::from_secs(120));
    assert_eq!(svc.stop().code(), Some(0));
    assert_delivered_exactly_once(&spool, sshd.inbox(), &orders);
}
