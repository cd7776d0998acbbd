//! `put_many` against the fake server of `client_tests`: many files in one batch, the
//! round trips they cost, the bounds on what is in flight, and each way one file can
//! fail without failing the others.

use std::io::Cursor;

use super::client::{READ_WINDOW, WRITE_WINDOW};
use super::client_tests::{body, start, Chan, Fake};
use super::put::{put_many, Fsync, Put, PutError, Putted};
use super::reply::StatusCode;
use super::wire::fxp;

/// A file to put: its path and bytes.
struct Src {
    path: Vec<u8>,
    data: Vec<u8>,
}

fn srcs(sizes: &[usize]) -> Vec<Src> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| Src {
            path: format!("/in/order-{i}.json.{i}-0000000{}.part", i % 10).into_bytes(),
            // Each file its own bytes.
            data: body(n + i).into_iter().skip(i).collect(),
        })
        .collect()
}

/// Puts `files` through a client on `fake`; `lie`: the sizes told are one more than
/// the sources give (a source that changed since intake).
fn run(
    fake: Fake,
    files: &[Src],
    fsync: bool,
    lie: Option<usize>,
) -> (Chan, Vec<Result<Putted, PutError>>) {
    let (chan, client) = start(fake);
    if chan.0.lock().unwrap().rounds.is_some() {
        // Count the batch's round trips, not the handshake's.
        chan.0.lock().unwrap().rounds = Some(0);
    }
    let mut readers: Vec<Cursor<&[u8]>> = files.iter().map(|f| Cursor::new(&f.data[..])).collect();
    let mut puts: Vec<Put<'_>> = files
        .iter()
        .zip(readers.iter_mut())
        .enumerate()
        .map(|(i, (f, r))| Put {
            path: &f.path,
            src: r,
            size: f.data.len() as u64 + u64::from(lie == Some(i)),
            crc32: crc32fast::hash(&f.data),
        })
        .collect();
    let out = put_many(&mut client.lock().unwrap(), &mut puts, fsync);
    assert_eq!(out.len(), files.len(), "one result per file");
    (chan, out)
}

fn on_server(chan: &Chan, f: &Src) -> Option<Vec<u8>> {
    chan.0.lock().unwrap().files.get(&f.path).cloned()
}

#[test]
fn a_batch_lands_whole_with_answers_in_reverse_order_in_two_round_trips() {
    let files = srcs(&[0, 1, 700, 32 * 1024, 32 * 1024 + 1, 100_000, 5_000, 2_500]);
    let fake = Fake {
        reverse: true,
        fsync: true,
        rounds: Some(0),
        ..Fake::default()
    };
    let (chan, out) = run(fake, &files, true, None);
    for (f, r) in files.iter().zip(&out) {
        assert_eq!(r.as_ref().unwrap(), &Putted { fsync: Fsync::Ok });
        assert_eq!(on_server(&chan, f).as_ref(), Some(&f.data));
    }
    let fake = chan.0.lock().unwrap();
    // The OPENs, then everything else: a batch costs what one file costs.
    assert_eq!(fake.rounds, Some(2), "round trips for the batch");
    // After the handshake's limits@openssh.com.
    let opens = fake.kinds[1..]
        .iter()
        .take_while(|&&k| k == fxp::OPEN)
        .count();
    assert_eq!(opens, files.len(), "every OPEN goes out first, together");
}

#[test]
fn a_lone_file_costs_two_round_trips_before_its_rename() {
    let files = srcs(&[3_000]);
    let fake = Fake {
        fsync: true,
        rounds: Some(0),
        ..Fake::default()
    };
    let (chan, out) = run(fake, &files, true, None);
    assert!(out[0].is_ok(), "{:?}", out[0]);
    let fake = chan.0.lock().unwrap();
    assert_eq!(fake.rounds, Some(2));
    // OPEN, WRITE, FSYNC (extended), READ, CLOSE: each once, in that order.
    let after_limits: Vec<u8> = fake.kinds[fake.kinds.len() - 5..].to_vec();
    assert_eq!(
        after_limits,
        vec![fxp::OPEN, fxp::WRITE, fxp::EXTENDED, fxp::READ, fxp::CLOSE]
    );
}

#[test]
fn large_files_stay_under_the_write_and_read_windows() {
    let mb = 1024 * 1024;
    let files = srcs(&[3 * mb, 2 * mb + 17, 3 * mb, mb]);
    let (chan, out) = run(Fake::default(), &files, false, None);
    for (f, r) in files.iter().zip(&out) {
        assert_eq!(r.as_ref().unwrap().fsync, Fsync::NotSent);
        assert_eq!(on_server(&chan, f).as_ref(), Some(&f.data));
    }
    let fake = chan.0.lock().unwrap();
    assert!(
        fake.max_write_in_flight <= WRITE_WINDOW,
        "{}",
        fake.max_write_in_flight
    );
    assert!(
        fake.max_read_in_flight <= READ_WINDOW,
        "{}",
        fake.max_read_in_flight
    );
    assert!(
        fake.max_read_in_flight > READ_WINDOW / 2,
        "reads are sent ahead"
    );
    let extended = fake.kinds.iter().filter(|&&k| k == fxp::EXTENDED).count();
    assert_eq!(
        extended, 1,
        "limits@openssh.com only: no FSYNC when not asked"
    );
}

#[test]
fn a_refused_write_fails_its_file_and_not_the_others() {
    let files = srcs(&[5_000, 70_000, 5_000]);
    let fake = Fake {
        fail_write_path: Some(files[1].path.clone()),
        ..Fake::default()
    };
    let (_chan, out) = run(fake, &files, false, None);
    assert!(out[0].is_ok() && out[2].is_ok(), "{out:?}");
    match &out[1] {
        Err(PutError::Status { request, status }) => {
            assert_eq!(*request, "WRITE");
            assert_eq!(status.code, StatusCode::Failure);
        }
        r => panic!("{r:?}"),
    }
}

#[test]
fn a_refused_write_stops_its_file_and_the_files_not_started() {
    // A full disk refuses WRITEs: the file's other bytes are not sent, and the files
    // after it are only closed and removed, as one file at a time stops there.
    let files = srcs(&[5 << 20, 5_000, 5_000]);
    let fake = Fake {
        fail_write_path: Some(files[0].path.clone()),
        ..Fake::default()
    };
    let (chan, out) = run(fake, &files, false, None);
    assert!(
        matches!(
            &out[0],
            Err(PutError::Status {
                request: "WRITE",
                ..
            })
        ),
        "{:?}",
        out[0]
    );
    for r in &out[1..] {
        assert!(
            matches!(r, Err(PutError::Skipped(m)) if m.contains("WRITE")),
            "{r:?}"
        );
    }
    let fake = chan.0.lock().unwrap();
    let writes = fake.kinds.iter().filter(|&&k| k == fxp::WRITE).count();
    assert!(
        writes < 5 * 32,
        "{writes} WRITEs: the rest of the file was still sent"
    );
    assert!(
        !fake.kinds.contains(&fxp::READ),
        "no read-back of a refused file"
    );
    assert!(
        !fake.files.contains_key(&files[1].path),
        "a skipped temp is removed"
    );
}

#[test]
fn a_refused_open_fails_its_file_and_not_the_others() {
    let files = srcs(&[100, 200, 300]);
    let fake = Fake {
        refuse_open: Some(files[0].path.clone()),
        ..Fake::default()
    };
    let (chan, out) = run(fake, &files, false, None);
    assert!(
        matches!(
            &out[0],
            Err(PutError::Status {
                request: "OPEN",
                ..
            })
        ),
        "{:?}",
        out[0]
    );
    assert!(out[1].is_ok() && out[2].is_ok(), "{out:?}");
    assert_eq!(on_server(&chan, &files[0]), None);
}

#[test]
fn a_last_open_refused_late_fails_its_file_only_and_waits_on_nothing() {
    // Found in review: the answers the wait for the last OPEN brought in were not
    // taken, and the final wait found nothing in flight: every file failed as a
    // session error.
    let files = srcs(&[100, 200]);
    let fake = Fake {
        refuse_open: Some(files[1].path.clone()),
        late_refusal: true,
        ..Fake::default()
    };
    let (_chan, out) = run(fake, &files, false, None);
    assert!(
        matches!(
            &out[1],
            Err(PutError::Status {
                request: "OPEN",
                ..
            })
        ),
        "{:?}",
        out[1]
    );
    assert!(out[0].is_ok(), "file 0: {:?}", out[0]);
}

#[test]
fn a_stall_fails_every_file_not_done_and_breaks_the_session() {
    let files = srcs(&[4_000, 4_000, 4_000]);
    let fake = Fake {
        // The handshake's limits@openssh.com and the three OPENs are answered.
        stall_after: Some(4),
        ..Fake::default()
    };
    let (chan, client) = start(fake);
    let mut readers: Vec<Cursor<&[u8]>> = files.iter().map(|f| Cursor::new(&f.data[..])).collect();
    let mut puts: Vec<Put<'_>> = files
        .iter()
        .zip(readers.iter_mut())
        .map(|(f, r)| Put {
            path: &f.path,
            src: r,
            size: f.data.len() as u64,
            crc32: crc32fast::hash(&f.data),
        })
        .collect();
    let mut c = client.lock().unwrap();
    let out = put_many(&mut c, &mut puts, false);
    for r in &out {
        assert!(
            matches!(r, Err(PutError::Session(m)) if m.contains("timed out")),
            "{r:?}"
        );
    }
    assert!(c.is_broken());
    drop(chan);
}

#[test]
fn short_reads_are_told_so_the_caller_reads_back_its_own_way() {
    let files = srcs(&[900, 5_000]);
    let fake = Fake {
        short: Some(1000),
        ..Fake::default()
    };
    let (chan, out) = run(fake, &files, false, None);
    assert!(
        out[0].is_ok(),
        "a file within one short answer is whole: {:?}",
        out[0]
    );
    assert!(
        matches!(
            out[1],
            Err(PutError::ShortRead {
                fsync: Fsync::NotSent
            })
        ),
        "{:?}",
        out[1]
    );
    // The temp is written and closed: the caller's own read-back can prove it.
    assert_eq!(on_server(&chan, &files[1]).as_ref(), Some(&files[1].data));
}

#[test]
fn a_source_that_changed_fails_its_file_and_its_temp_is_removed() {
    let files = srcs(&[2_000, 3_000]);
    let (chan, out) = run(Fake::default(), &files, false, Some(0));
    match &out[0] {
        Err(PutError::SourceChanged { size, crc32 }) => {
            assert_eq!(*size, files[0].data.len() as u64);
            assert_eq!(*crc32, crc32fast::hash(&files[0].data));
        }
        r => panic!("{r:?}"),
    }
    assert!(out[1].is_ok(), "{:?}", out[1]);
    assert_eq!(on_server(&chan, &files[0]), None, "the temp is removed");
    assert!(chan.0.lock().unwrap().kinds.contains(&fxp::REMOVE));
}

#[test]
fn a_read_back_that_differs_is_a_mismatch_with_what_came_back() {
    let files = srcs(&[1_500]);
    let fake = Fake {
        corrupt_reads: true,
        ..Fake::default()
    };
    let (chan, out) = run(fake, &files, false, None);
    let mut bad = files[0].data.clone();
    bad[0] ^= 0xff;
    match &out[0] {
        Err(PutError::Mismatch { size, crc32 }) => {
            assert_eq!(*size, 1_500);
            assert_eq!(*crc32, crc32fast::hash(&bad));
        }
        r => panic!("{r:?}"),
    }
    // Left for the caller, which removes it with its own error.
    assert!(on_server(&chan, &files[0]).is_some());
}

#[test]
fn an_fsync_refused_is_no_failure_and_is_reported() {
    let files = srcs(&[1_000, 2_000]);
    let fake = Fake {
        fsync: true,
        fsync_status: Some(StatusCode::OpUnsupported),
        ..Fake::default()
    };
    let (_chan, out) = run(fake, &files, true, None);
    for r in out {
        match r.unwrap().fsync {
            Fsync::Refused(s) => assert_eq!(s.code, StatusCode::OpUnsupported),
            f => panic!("{f:?}"),
        }
    }
}

#[test]
fn a_lost_connection_status_on_fsync_fails_the_file() {
    let files = srcs(&[1_000]);
    let fake = Fake {
        fsync: true,
        fsync_status: Some(StatusCode::ConnectionLost),
        ..Fake::default()
    };
    let (_chan, out) = run(fake, &files, true, None);
    assert!(
        matches!(
            &out[0],
            Err(PutError::Status {
                request: "FSYNC",
                ..
            })
        ),
        "{:?}",
        out[0]
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// Whatever the sizes, the order of the answers and the file that fails: every
    /// other file lands whole and is reported so (or, after the failed one, is
    /// skipped and leaves nothing), the failed one is reported failed, and nothing
    /// more than the windows is ever in flight.
    #[test]
    fn each_file_gets_its_own_outcome(
        sizes in proptest::collection::vec(0usize..150_000, 1..12),
        reverse: bool,
        fail in proptest::option::of(0usize..12),
    ) {
        let files = srcs(&sizes);
        let fail = fail.filter(|&i| i < files.len());
        let fake = Fake {
            reverse,
            fail_write_path: fail.map(|i| files[i].path.clone()),
            ..Fake::default()
        };
        let (chan, out) = run(fake, &files, false, None);
        for (i, (f, r)) in files.iter().zip(&out).enumerate() {
            if fail == Some(i) && !f.data.is_empty() {
                proptest::prop_assert!(
                    matches!(r, Err(PutError::Status { request: "WRITE", .. })),
                    "{:?}", r
                );
            } else if fail.is_some_and(|k| i > k && !files[k].data.is_empty())
                && matches!(r, Err(PutError::Skipped(_)))
            {
                // After a refused WRITE a file not started yet may be skipped (when
                // the refusal came in before its turn), never partly sent.
                proptest::prop_assert_eq!(on_server(&chan, f), None);
            } else {
                proptest::prop_assert!(r.is_ok(), "file {}: {:?}", i, r);
                let got = on_server(&chan, f);
                proptest::prop_assert_eq!(got.as_ref(), Some(&f.data));
            }
        }
        let fake = chan.0.lock().unwrap();
        proptest::prop_assert!(fake.max_write_in_flight <= WRITE_WINDOW);
        proptest::prop_assert!(fake.max_read_in_flight <= READ_WINDOW);
    }
}
