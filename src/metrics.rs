//! Prometheus metrics: counters and histograms the pipeline bumps, gauges filled in at
//! scrape time from the journal and the queue. Never changes control flow. Served as
//! text on `[metrics] listen` by a minimal HTTP responder (GET /metrics only).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

/// Which destination (`primary`, `backup`) a series is about; only with a backup.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabel {
    pub destination: String,
}

pub struct Metrics {
    registry: Registry,
    /// Verified deliveries by destination (with a backup configured).
    pub deliveries_to: Family<DestinationLabel, Counter>,
    /// 1 while that destination accepts files (with a backup configured).
    pub reachable: Family<DestinationLabel, Gauge>,
    /// 1 while new deliveries go to the backup.
    pub failed_over: Gauge,
    pub files: Family<StateLabel, Gauge>,
    pub delivered: Counter,
    pub failed: Counter,
    pub retries: Counter,
    pub quarantined: Counter,
    pub bytes_sent: Counter,
    pub transfer_seconds: Histogram,
    pub latency_seconds: Histogram,
    pub queue_depth: Gauge,
    pub oldest_pending_age_seconds: Gauge<f64, AtomicU64>,
    pub destination_up: Gauge,
    pub last_delivery_timestamp_seconds: Gauge<f64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Scrape-time gauges: states from the journal's index, the queue depth, the age
    /// of the oldest file not yet verified, and whether the destination is up.
    pub fn refresh(&self, j: &plutus_state::Journal, queue_depth: usize, destination_up: bool) {
        use plutus_state::{now_ms, State};
        if let Ok(counts) = j.counts() {
            for (st, n) in counts {
                self.files
                    .get_or_create(&StateLabel {
                        state: st.to_string(),
                    })
                    .set(n as i64);
            }
        }
        self.queue_depth.set(queue_depth as i64);
        let oldest = [State::Pending, State::Sent]
            .into_iter()
            .filter_map(|st| j.oldest_in_state(st).ok().flatten())
            .map(|r| r.detected_at)
            .min();
        self.oldest_pending_age_seconds
            .set(oldest.map_or(0.0, |t| now_ms().saturating_sub(t) as f64 / 1000.0));
        self.destination_up.set(i64::from(destination_up));
    }

    pub fn new() -> Metrics {
        // 1 ms .. ~33 s: a loopback delivery takes milliseconds, a WAN one seconds.
        let buckets = || prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 16);
        let m = Metrics {
            registry: Registry::with_prefix("plutus_sync"),
            deliveries_to: Family::default(),
            reachable: Family::default(),
            failed_over: Gauge::default(),
            files: Family::default(),
            delivered: Counter::default(),
            failed: Counter::default(),
            retries: Counter::default(),
            quarantined: Counter::default(),
            bytes_sent: Counter::default(),
            transfer_seconds: Histogram::new(buckets()),
            latency_seconds: Histogram::new(buckets()),
            queue_depth: Gauge::default(),
            oldest_pending_age_seconds: Gauge::default(),
            destination_up: Gauge::default(),
            last_delivery_timestamp_seconds: Gauge::default(),
        };
        m.destination_up.set(1);
        let mut m = m;
        let r = &mut m.registry;
        r.register("files", "Journal entries by state", m.files.clone());
        r.register(
            "deliveries",
            "Files verified in the inbox",
            m.delivered.clone(),
        );
        r.register(
            "failures",
            "Files given up on (state failed)",
            m.failed.clone(),
        );
        r.register(
            "retries",
            "File attempts that failed and were scheduled again",
            m.retries.clone(),
        );
        r.register(
            "quarantined",
            "Files quarantined as invalid",
            m.quarantined.clone(),
        );
        r.register(
            "sent_bytes",
            "Bytes uploaded and verified",
            m.bytes_sent.clone(),
        );
        r.register(
            "transfer_duration_seconds",
            "Upload, read-back and rename of one file",
            m.transfer_seconds.clone(),
        );
        r.register(
            "close_to_verified_seconds",
            "From a file's detection in the outbox to its verified final name in the inbox",
            m.latency_seconds.clone(),
        );
        r.register(
            "queue_depth",
            "Entries waiting for or in a worker",
            m.queue_depth.clone(),
        );
        r.register(
            "oldest_pending_age_seconds",
            "Age of the oldest file not yet verified",
            m.oldest_pending_age_seconds.clone(),
        );
        r.register(
            "destination_up",
            "1 while the destination accepts files, 0 while backing off",
            m.destination_up.clone(),
        );
        r.register(
            "last_delivery_timestamp_seconds",
            "Unix time of the last verified delivery",
            m.last_delivery_timestamp_seconds.clone(),
        );
        m
    }

    /// The failover series, registered only when a backup is configured (so a config
    /// without one exposes exactly what it did before).
    pub fn with_failover(mut self) -> Metrics {
        let r = &mut self.registry;
        r.register(
            "destination_deliveries",
            "Files verified in the inbox, by destination (primary, backup)",
            self.deliveries_to.clone(),
        );
        r.register(
            "destination_reachable",
            "1 while the destination (primary, backup) accepts files, 0 while backing off",
            self.reachable.clone(),
        );
        r.register(
            "failed_over",
            "1 while new deliveries go to the backup destination",
            self.failed_over.clone(),
        );
        for site in [plutus_state::Site::Primary, plutus_state::Site::Backup] {
            self.delivered_to(site);
            self.reachable.get_or_create(&label(site)).set(1);
        }
        self
    }

    /// The delivery counter of destination `site`.
    pub fn delivered_to(&self, site: plutus_state::Site) -> Counter {
        self.deliveries_to.get_or_create(&label(site)).clone()
    }

    /// Scrape-time failover gauges.
    pub fn refresh_failover(&self, primary_up: bool, backup_up: bool, failed_over: bool) {
        use plutus_state::Site;
        for (site, up) in [(Site::Primary, primary_up), (Site::Backup, backup_up)] {
            self.reachable
                .get_or_create(&label(site))
                .set(i64::from(up));
        }
        self.failed_over.set(i64::from(failed_over));
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

fn label(site: plutus_state::Site) -> DestinationLabel {
    DestinationLabel {
        destination: site.to_string(),
    }
}

/// Scrapes served at once. One scraper needs one; each reads the journal's counts,
/// so a flood of them must not queue work without bound.
pub const MAX_SCRAPES: usize = 4;

const BUSY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// Serve `GET /metrics` on `addr` until cancelled; `refresh` fills the scrape-time gauges.
/// At most [`MAX_SCRAPES`] connections at once, each dropped if it sends no request
/// within 5 s; more are answered 503 at once.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    refresh: Arc<dyn Fn() + Send + Sync>,
    cancel: CancellationToken,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES));
    loop {
        let (mut stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    warn!("metrics accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // A fresh socket's send buffer is empty: this never blocks.
            let _ = stream.try_write(BUSY);
            debug!(%peer, "metrics: {MAX_SCRAPES} scrapes in progress, answered 503");
            continue;
        };
        let (metrics, refresh) = (metrics.clone(), refresh.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let mut head = vec![0u8; 4096];
            let n = match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut head)).await
            {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let req = String::from_utf8_lossy(&head[..n]);
            let resp = if req.starts_with("GET /metrics ") || req.starts_with("GET /metrics?") {
                let r = refresh.clone();
                let _ = tokio::task::spawn_blocking(move || r()).await;
                let body = metrics.render();
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                debug!(%peer, "metrics: not found: {}", req.lines().next().unwrap_or(""));
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_string()
            };
            let _ = stream.write_all(resp.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

pub fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let std = std::net::TcpListener::bind(addr)?;
    std.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(std)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_names_every_metric_the_dashboards_use() {
        let m = Metrics::new();
        m.delivered.inc();
        m.files
            .get_or_create(&StateLabel {
                state: "archived".into(),
            })
            .set(3);
        m.latency_seconds.observe(0.004);
        let text = m.render();
        for name in [
            "plutus_sync_files{state=\"archived\"} 3",
            "plutus_sync_deliveries_total 1",
            "plutus_sync_failures_total 0",
            "plutus_sync_retries_total 0",
            "plutus_sync_sent_bytes_total 0",
            "plutus_sync_transfer_duration_seconds_bucket",
            "plutus_sync_close_to_verified_seconds_count 1",
            "plutus_sync_queue_depth 0",
            "plutus_sync_oldest_pending_age_seconds 0",
            "plutus_sync_destination_up 1",
            "plutus_sync_last_delivery_timestamp_seconds 0",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
