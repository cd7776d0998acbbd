//! SIGKILL mid-burst, restart, and nothing is lost or sent twice.

use crate::support::service::*;
use crate::support::sshd::Sshd;
use std::time::{Duration, Instant};

#[test]
fn the_service_killed_mid_burst_and_restarted_delivers_every_file_once() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "connections = 2");
    let orders: Vec<(String, Vec<u8>)> = (0..600)
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
    // Kill at spread-out moments while files are in every stage, restart each time.
    let mut kills = 0;
    let mut rng = fastrand::Rng::with_seed(0x9e37_79b9);
    let started = Instant::now();
    while spool.archived().len() < orders.len()
        && kills < 8
        && started.elapsed() < Duration::from_secs(120)
    {
        std::thread::sleep(Duration::from_millis(rng.u64(20..250)));
        svc.kill();
        kills += 1;
        svc = spool.start();
        svc.wait_ready();
    }
    eprintln!(
        "{kills} kills, {} archived at the last kill",
        spool.archived().len()
    );
    assert!(
        kills >= 3,
        "the burst finished before the service could be killed enough"
    );
    wait_archived(&spool, &svc, orders.len(), Duration::from_secs(120));
    assert_eq!(svc.stop().code(), Some(0));
    assert_delivered_exactly_once(&spool, sshd.inbox(), &orders);
}
