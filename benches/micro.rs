//! Micro benchmarks (criterion) of the per-file work that is not the network:
//!
//! - `journal/*`: journal transitions per second, one state change per iteration, with
//!   and without the `flush()` that makes it durable; the whole life of a file as the
//!   pipeline writes it (insert, `sent`, `verified` + flush, `archived`), from one
//!   thread and from four (the flush is a group commit: concurrent callers share one).
//! - `scan/*`: `intake::scan` (one read for size + CRC32 + JSON check) over 1, 4 and
//!   10 KB orders held in memory and over a 16 MiB file (page cache warm), next to
//!   CRC32 alone, to show what the JSON check costs.
//! - `intake/*`: a directory of 10,000 orders taken into a fresh journal
//!   (`sweep::scan` + `intake::take` for each path, as the service's start-up sweep
//!   does), and a sweep of the same outbox once every file is already journaled (what a
//!   periodic sweep costs during a burst).
//!
//! `cargo bench --bench micro` runs them (about a minute and a half on 2 cores);
//! `cargo test --bench micro` runs each once as a smoke test. The journal lives in a
//! temp dir under /tmp (the same disk as the service's), so the flush figures are this
//! disk's fsync. See benches/README.md for the figures.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use plutus_state::{Event, Journal, JournalOptions, NewEntry};
use plutus_sync::config::{self, Settings};
use plutus_sync::intake::{self, Found, Outcome};
use plutus_sync::sweep;
use plutus_testkit::orders::order;
use std::fs;
use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Files in the intake benchmark's outbox, and the size of the large file, in MiB:
/// the real figures under `cargo bench`, small ones under `cargo test` (criterion's
/// test mode runs each routine once, and the setup would dominate).
fn sizes() -> (usize, usize) {
    if std::env::args().any(|a| a == "--bench") {
        (10_000, 16)
    } else {
        (500, 1)
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(3))
        .without_plots()
}

static NEXT: AtomicU64 = AtomicU64::new(0);

fn new_entry() -> NewEntry {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    NewEntry {
        name: format!("order-2026-{n:07}.json"),
        size: 5_500,
        crc32: n as u32 ^ 0x5a5a_5a5a,
        batch: "20261123-1200".into(),
        source_path: format!("/var/spool/plutus-sync/outbox/order-2026-{n:07}.json"),
        found_by: "watch".into(),
    }
}

fn uploaded(id: u64) -> Event {
    Event::Uploaded {
        remote_path: format!("/srv/erp/inbox/order-{id}.json.part"),
    }
}

fn verified(id: u64) -> Event {
    Event::Verified {
        remote_path: format!("/srv/erp/inbox/order-{id}.json"),
        archive_path: format!("/var/spool/plutus-sync/archive/2026/11/23/order-{id}.json"),
        note: None,
    }
}

/// The transitions of one delivered file, flushed where the pipeline flushes: only
/// after `verified`, before the local file moves.
fn lifecycle(j: &Journal, flush_each: bool) {
    let id = j.insert(new_entry()).unwrap().id;
    if flush_each {
        j.flush().unwrap();
    }
    j.apply(id, uploaded(id)).unwrap();
    // `sent` is durable before the rename, always.
    j.flush().unwrap();
    j.apply(id, verified(id)).unwrap();
    j.flush().unwrap();
    j.apply(id, Event::Archived).unwrap();
    if flush_each {
        j.flush().unwrap();
    }
}

fn open_journal(dir: &Path) -> Journal {
    // sled's flusher thread lets go of the lock a moment after a drop.
    for _ in 0..500 {
        match Journal::open(&dir.join("journal"), &JournalOptions::default()) {
            Err(plutus_state::JournalError::Locked { .. }) => {
                std::thread::sleep(Duration::from_millis(2))
            }
            r => return r.unwrap(),
        }
    }
    panic!("journal still locked after 1 s")
}

fn journal(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let j = Arc::new(open_journal(dir.path()));

    let mut g = c.benchmark_group("journal");
    g.throughput(Throughput::Elements(1));
    // sled stalls now and then (its own background flush every 500 ms): flat
    // sampling keeps a stall from skewing the linear regression.
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(30);
    g.bench_function("insert", |b| {
        b.iter(|| black_box(j.insert(new_entry()).unwrap()))
    });
    // Each transition is timed alone: the entry it applies to is made (and flushed,
    // so the timed flush covers only the timed write) in the untimed setup.
    for flush in [false, true] {
        let sfx = if flush { "+flush" } else { "" };
        let step =
            |setup: &dyn Fn() -> u64, ev: &dyn Fn(u64) -> Event, b: &mut criterion::Bencher| {
                b.iter_batched(
                    || {
                        let id = setup();
                        j.flush().unwrap();
                        id
                    },
                    |id| {
                        let r = j.apply(id, ev(id)).unwrap();
                        if flush {
                            j.flush().unwrap();
                        }
                        r
                    },
                    BatchSize::SmallInput,
                )
            };
        let pending = || j.insert(new_entry()).unwrap().id;
        let sent = || {
            let id = pending();
            j.apply(id, uploaded(id)).unwrap();
            id
        };
        let ver = || {
            let id = sent();
            j.apply(id, verified(id)).unwrap();
            id
        };
        if flush {
            g.sample_size(10);
            g.bench_function("insert+flush", |b| {
                b.iter(|| {
                    let r = j.insert(new_entry()).unwrap();
                    j.flush().unwrap();
                    r
                })
            });
        }
        g.bench_function(format!("pending->sent{sfx}"), |b| {
            step(&pending, &uploaded, b)
        });
        g.bench_function(format!("sent->verified{sfx}"), |b| {
            step(&sent, &verified, b)
        });
        g.bench_function(format!("verified->archived{sfx}"), |b| {
            step(&ver, &|_| Event::Archived, b)
        });
    }
    g.finish();

    // Whole files: elements are files, not transitions.
    let mut g = c.benchmark_group("journal-file");
    g.throughput(Throughput::Elements(1));
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.bench_function("4 transitions, no flush", |b| {
        b.iter(|| {
            let id = j.insert(new_entry()).unwrap().id;
            j.apply(id, uploaded(id)).unwrap();
            j.apply(id, verified(id)).unwrap();
            j.apply(id, Event::Archived).unwrap();
        })
    });
    g.bench_function(
        "4 transitions, flush after sent and verified (pipeline)",
        |b| b.iter(|| lifecycle(&j, false)),
    );
    g.bench_function("4 transitions, flush after each", |b| {
        b.iter(|| lifecycle(&j, true))
    });
    // Four threads doing the pipeline's writes at once, as four workers do: their
    // flushes overlap and share (group commit). Time per file across all threads.
    g.bench_function("pipeline, 4 threads (group commit)", |b| {
        b.iter_custom(|iters| {
            let threads = 4u64;
            let per = iters.div_ceil(threads);
            let start = Arc::new(Barrier::new(threads as usize + 1));
            let hs: Vec<_> = (0..threads)
                .map(|_| {
                    let (j, start) = (j.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        for _ in 0..per {
                            lifecycle(&j, false);
                        }
                    })
                })
                .collect();
            start.wait();
            let t = Instant::now();
            for h in hs {
                h.join().unwrap();
            }
            // Scaled back to `iters` files (a few more may have run).
            t.elapsed().mul_f64(iters as f64 / (per * threads) as f64)
        })
    });
    g.finish();
}

fn scan(c: &mut Criterion) {
    let mut g = c.benchmark_group("scan");
    for size in [1_000usize, 4_000, 10_000] {
        let body = order(size, size);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(format!("crc32+json {} KB order", size / 1000), |b| {
            b.iter(|| {
                let s = intake::scan(black_box(&body[..])).unwrap();
                assert!(s.json.is_ok());
                s
            })
        });
        if size == 10_000 {
            g.bench_function("crc32 only, 10 KB order", |b| {
                b.iter(|| crc32fast::hash(black_box(&body)))
            });
        }
    }

    // 16 MiB of orders in one JSON array, read from a file (page cache warm).
    let mib = sizes().1;
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.json");
    let mut data = b"[".to_vec();
    let mut n = 0;
    while data.len() < mib << 20 {
        if n > 0 {
            data.push(b',');
        }
        data.extend_from_slice(&order(n, 8_000));
        n += 1;
    }
    data.push(b']');
    fs::write(&big, &data).unwrap();
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.bench_function(format!("crc32+json {mib} MiB file"), |b| {
        b.iter(|| {
            let s = intake::scan(fs::File::open(&big).unwrap()).unwrap();
            assert!(s.json.is_ok());
            s
        })
    });
    g.bench_function(format!("crc32 only, {mib} MiB file"), |b| {
        b.iter(|| crc32fast::hash(&fs::read(&big).unwrap()))
    });
    g.finish();
}

fn settings(dir: &Path) -> Settings {
    for d in ["outbox", "archive", "quarantine"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    // settle is irrelevant here: the files are older than it by the time they are
    // taken (it only delays files younger than it).
    let text =
        "[source]\noutbox = \"outbox\"\narchive = \"archive\"\nquarantine = \"quarantine\"\n\
                settle = \"1ms\"\n[journal]\npath = \"journal\"\n\
                [destination]\nurl = \"file:///nonexistent/inbox\"\n";
    config::parse(text, &dir.join("config.toml"), dir).unwrap()
}

fn intake(c: &mut Criterion) {
    let spool = tempfile::tempdir().unwrap();
    let s = settings(spool.path());
    let mut rng = fastrand::Rng::with_seed(10_000);
    let mut bytes = 0;
    let files = sizes().0;
    for n in 0..files {
        let body = order(n, 1000 + rng.usize(0..9000));
        bytes += body.len();
        fs::write(
            s.source.outbox.join(format!("order-2026-{n:06}.json")),
            body,
        )
        .unwrap();
    }
    std::thread::sleep(Duration::from_millis(5));

    let mut g = c.benchmark_group("intake");
    g.throughput(Throughput::Elements(files as u64));
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    g.bench_function(
        format!(
            "sweep+take {files} files ({} MB) into a fresh journal",
            bytes / 1_000_000
        ),
        |b| {
            b.iter_batched(
                || {
                    let d = tempfile::tempdir().unwrap();
                    let j = open_journal(d.path());
                    (d, j)
                },
                |(d, j)| {
                    let paths = sweep::scan(&j, &s).unwrap();
                    assert_eq!(paths.len(), files);
                    for p in &paths {
                        match intake::take(&j, &s, p, Found::Sweep, || false).unwrap() {
                            Outcome::Pending(_) => {}
                            other => panic!("{}: {other:?}", p.display()),
                        }
                    }
                    (d, j)
                },
                BatchSize::PerIteration,
            )
        },
    );

    // The same outbox with every file already journaled (pending): a periodic sweep
    // during a burst finds nothing new but still looks each name up.
    let d = tempfile::tempdir().unwrap();
    let j = open_journal(d.path());
    for p in sweep::scan(&j, &s).unwrap() {
        intake::take(&j, &s, &p, Found::Sweep, || false).unwrap();
    }
    g.bench_function(format!("sweep of {files} files, all journaled"), |b| {
        b.iter(|| assert!(sweep::scan(&j, &s).unwrap().is_empty()))
    });
    g.finish();
}

/// `Journal::open` after a clean close and after an unclean stop, which checks every
/// entry against the state index (exactly-once issue, rule 6): what a restart costs.
fn reopen(c: &mut Criterion) {
    let n = if std::env::args().any(|a| a == "--bench") {
        100_000
    } else {
        500
    };
    let dir = tempfile::tempdir().unwrap();
    {
        let j = open_journal(dir.path());
        for _ in 0..n {
            lifecycle(&j, false);
        }
    }
    let mut g = c.benchmark_group("reopen");
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    g.bench_function(format!("{n} entries, clean close"), |b| {
        b.iter(|| drop(black_box(open_journal(dir.path()))))
    });
    g.bench_function(format!("{n} entries, unclean stop (index checked)"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                {
                    // What a kill leaves: no clean-close mark.
                    let db = (0..500)
                        .find_map(|_| {
                            sled::open(dir.path().join("journal")).ok().or_else(|| {
                                std::thread::sleep(Duration::from_millis(2));
                                None
                            })
                        })
                        .expect("journal still locked after 1 s");
                    db.open_tree("meta").unwrap().remove("clean_close").unwrap();
                    db.flush().unwrap();
                }
                let t = Instant::now();
                drop(black_box(open_journal(dir.path())));
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = journal, scan, intake, reopen
}
criterion_main!(benches);
