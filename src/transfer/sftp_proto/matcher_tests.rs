//! The matcher: replies in any order find their requests, each exactly once; what a
//! request cannot get, and ids that are not outstanding, are refused without
//! disturbing anything; what is in flight is counted exactly.

use proptest::prelude::*;

use super::testing::{limits_data, reply, status};
use super::*;

const H: &[u8] = b"handle";

fn matcher() -> Matcher<usize> {
    Matcher::new(Bounds::default())
}

/// Sends `req` tagged `tag`; its id.
fn send(m: &mut Matcher<usize>, req: &Request<'_>, tag: usize) -> u32 {
    let mut out = Vec::new();
    let id = m.send(req, tag, &mut out).unwrap();
    // The packet went out with that id, right after the type byte.
    assert_eq!(&out[5..9], &id.to_be_bytes());
    id
}

fn write(data: &[u8]) -> Request<'_> {
    Request::Write {
        handle: H,
        offset: 0,
        data,
    }
}

fn read(len: u32) -> Request<'static> {
    Request::Read {
        handle: H,
        offset: 0,
        len,
    }
}

/// A request of each kind we send, with a reply it may get other than STATUS.
fn one_of_each() -> Vec<(Request<'static>, ReplyBody)> {
    let attrs = || ReplyBody::Attrs(Attrs::default());
    let open = Request::Open {
        path: b"p",
        flags: OpenFlags::WRITE | OpenFlags::CREAT,
        attrs: Attrs::default(),
    };
    vec![
        (open, ReplyBody::Handle(H.to_vec())),
        (
            Request::Opendir { path: b"/in" },
            ReplyBody::Handle(H.to_vec()),
        ),
        (read(10), ReplyBody::Data(b"0123456789".to_vec())),
        (Request::Readdir { handle: H }, ReplyBody::Name(Vec::new())),
        (Request::Stat { path: b"p" }, attrs()),
        (Request::Lstat { path: b"p" }, attrs()),
        (Request::Fstat { handle: H }, attrs()),
        (
            Request::Limits,
            ReplyBody::ExtendedReply(limits_data(&Limits::default())),
        ),
        (write(b"abc"), status(StatusCode::Ok)),
        (Request::Close { handle: H }, status(StatusCode::Ok)),
        (Request::Remove { path: b"p" }, status(StatusCode::Ok)),
        (
            Request::Rename {
                from: b"p",
                to: b"q",
            },
            status(StatusCode::Ok),
        ),
        (Request::Fsync { handle: H }, status(StatusCode::Ok)),
    ]
}

#[test]
fn each_request_kind_gets_its_own_reply_or_a_status() {
    for (req, body) in one_of_each() {
        for body in [body, status(StatusCode::Failure)] {
            let mut m = matcher();
            let id = send(&mut m, &req, 7);
            let a = m.receive(reply(id, body.clone())).unwrap();
            assert_eq!((a.id, a.request, a.tag), (id, req.kind(), 7));
            assert_eq!(m.outstanding(), 0);
            match (body, a.response) {
                (ReplyBody::ExtendedReply(_), Response::Limits(l)) => {
                    assert_eq!(l, Limits::default())
                }
                (ReplyBody::Status(s), Response::Status(r)) => assert_eq!(s, r),
                (ReplyBody::Handle(b), Response::Handle(r))
                | (ReplyBody::Data(b), Response::Data(r)) => {
                    assert_eq!(b, r)
                }
                (ReplyBody::Name(b), Response::Name(r)) => assert_eq!(b, r),
                (ReplyBody::Attrs(b), Response::Attrs(r)) => assert_eq!(b, r),
                (b, r) => panic!("{:?}: {b:?} became {r:?}", req.kind()),
            }
        }
    }
}

#[test]
fn a_reply_of_a_type_the_request_cannot_get_is_refused_and_it_stays_outstanding() {
    let wrong = [
        ReplyBody::Handle(H.to_vec()),
        ReplyBody::Data(Vec::new()),
        ReplyBody::Name(Vec::new()),
        ReplyBody::Attrs(Attrs::default()),
        ReplyBody::ExtendedReply(limits_data(&Limits::default())),
    ];
    let mut refused = 0;
    for (req, right) in one_of_each() {
        for body in wrong.iter().filter(|w| w.kind() != right.kind()) {
            let mut m = matcher();
            let id = send(&mut m, &req, 1);
            let e = m.receive(reply(id, body.clone())).unwrap_err();
            assert!(
                matches!(e, MatchError::WrongReply { id: i, .. } if i == id),
                "{e}"
            );
            assert_eq!(m.outstanding(), 1);
            assert!(m.receive(reply(id, status(StatusCode::Ok))).is_ok());
            refused += 1;
        }
    }
    // 5 kinds answered by STATUS refuse all 5 others; 8 refuse all but their own.
    assert_eq!(refused, 5 * 5 + 8 * 4);
}

#[test]
fn op_unsupported_to_an_extension_is_an_answer_not_an_error() {
    let mut m = matcher();
    let fsync = send(&mut m, &Request::Fsync { handle: H }, 1);
    let limits = send(&mut m, &Request::Limits, 2);
    for id in [limits, fsync] {
        let a = m
            .receive(reply(id, status(StatusCode::OpUnsupported)))
            .unwrap();
        assert_eq!(
            a.response,
            Response::Status(Status {
                code: StatusCode::OpUnsupported,
                message: String::new(),
                language: String::new()
            })
        );
    }
}

#[test]
fn a_status_with_a_code_v3_does_not_define_is_an_answer() {
    let mut m = matcher();
    let id = send(
        &mut m,
        &Request::Rename {
            from: b"a.part",
            to: b"a",
        },
        1,
    );
    let a = m.receive(reply(id, status(StatusCode::Other(11)))).unwrap();
    assert!(matches!(
        a.response,
        Response::Status(Status {
            code: StatusCode::Other(11),
            ..
        })
    ));
}

#[test]
fn a_read_may_get_less_data_than_asked_or_eof_but_never_more() {
    let mut m = matcher();
    let short = send(&mut m, &read(10), 1);
    let eof = send(&mut m, &read(10), 2);
    let long = send(&mut m, &read(10), 3);
    assert!(m
        .receive(reply(short, ReplyBody::Data(b"0123".to_vec())))
        .is_ok());
    assert!(m.receive(reply(eof, status(StatusCode::Eof))).is_ok());
    let e = m
        .receive(reply(long, ReplyBody::Data(vec![0; 11])))
        .unwrap_err();
    assert!(
        matches!(
            e,
            MatchError::DataTooLong {
                asked: 10,
                got: 11,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!((m.outstanding(), m.bytes_outstanding()), (1, 10));
}

#[test]
fn a_malformed_limits_reply_is_refused_and_the_request_stays_outstanding() {
    let mut m = matcher();
    let id = send(&mut m, &Request::Limits, 1);
    let e = m
        .receive(reply(id, ReplyBody::ExtendedReply(vec![0; 31])))
        .unwrap_err();
    assert!(
        matches!(
            e,
            MatchError::BadReply {
                request: RequestKind::Limits,
                source: CodecError::Truncated { .. },
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(m.outstanding(), 1);
}

#[test]
fn replies_to_unknown_and_answered_ids_are_refused() {
    let mut m = matcher();
    let a = send(&mut m, &Request::Close { handle: H }, 1);
    let b = send(&mut m, &Request::Close { handle: H }, 2);
    assert!(m.receive(reply(a, status(StatusCode::Ok))).is_ok());
    for id in [a, b + 1, 0, u32::MAX] {
        let e = m.receive(reply(id, status(StatusCode::Ok))).unwrap_err();
        assert!(
            matches!(e, MatchError::UnknownId { id: i, reply: ReplyKind::Status } if i == id),
            "{e}"
        );
    }
    assert_eq!(m.receive(reply(b, status(StatusCode::Ok))).unwrap().tag, 2);
}

#[test]
fn version_outside_the_handshake_is_refused() {
    let v = ServerVersion {
        version: 3,
        extensions: Vec::new(),
    };
    assert!(matches!(
        matcher().receive_packet(ServerPacket::Version(v.clone())),
        Err(MatchError::UnexpectedVersion)
    ));
    assert_eq!(expect_version(ServerPacket::Version(v.clone())).unwrap(), v);
    let v4 = ServerVersion { version: 4, ..v };
    assert!(matches!(
        expect_version(ServerPacket::Version(v4)),
        Err(MatchError::UnsupportedVersion(4))
    ));
    let s = ServerPacket::Reply(reply(0, status(StatusCode::Failure)));
    assert!(matches!(
        expect_version(s),
        Err(MatchError::NotVersion(ReplyKind::Status))
    ));
}

#[test]
fn outstanding_counts_requests_and_data_bytes_in_flight() {
    let mut m = matcher();
    let w = send(&mut m, &write(&[1; 1000]), 1);
    let r = send(&mut m, &read(4096), 2);
    send(&mut m, &Request::Fsync { handle: H }, 3);
    assert_eq!((m.outstanding(), m.bytes_outstanding()), (3, 5096));
    let mut pending: Vec<_> = m.pending().map(|(_, kind, tag)| (*tag, kind)).collect();
    pending.sort_unstable_by_key(|p| p.0);
    assert_eq!(
        pending,
        [
            (1, RequestKind::Write),
            (2, RequestKind::Read),
            (3, RequestKind::Fsync)
        ]
    );
    m.receive(reply(r, ReplyBody::Data(vec![0; 100]))).unwrap();
    assert_eq!((m.outstanding(), m.bytes_outstanding()), (2, 1000));
    m.receive(reply(w, status(StatusCode::Ok))).unwrap();
    assert_eq!((m.outstanding(), m.bytes_outstanding()), (1, 0));
}

#[test]
fn a_request_over_the_bounds_is_refused_and_nothing_is_sent() {
    let bounds = Bounds {
        max_packet: 100,
        max_read: 50,
        max_write: 40,
    };
    let mut m: Matcher<usize> = Matcher::new(bounds);
    let mut out = b"earlier packets".to_vec();
    let long_path = [b'x'; 100];
    for (req, what) in [
        (write(&[0; 41]), "write data"),
        (read(51), "read length"),
        (Request::Stat { path: &long_path }, "packet"),
    ] {
        let e = m.send(&req, 1, &mut out).unwrap_err();
        assert!(
            matches!(e, MatchError::OverBound { what: w, .. } if w == what),
            "{e}"
        );
        assert_eq!(out, b"earlier packets");
        assert_eq!((m.outstanding(), m.bytes_outstanding()), (0, 0));
    }
    // At the bounds exactly: sent. A 40-byte WRITE with a 6-byte handle is 71 bytes.
    assert!(m.send(&write(&[0; 40]), 1, &mut out).is_ok());
    assert!(m.send(&read(50), 2, &mut out).is_ok());
    let path = [b'x'; 87]; // 4 + 1 + 4 + 4 + 87 = 100
    assert!(m.send(&Request::Stat { path: &path }, 3, &mut out).is_ok());
}

#[test]
fn bounds_follow_the_servers_limits_within_openssh_sizes() {
    let openssh = Limits {
        max_packet_length: 262_144,
        max_read_length: 261_120,
        max_write_length: 261_120,
        max_open_handles: 1019,
    };
    assert_eq!(
        Bounds::from_limits(&openssh),
        Bounds {
            max_packet: 262_144,
            max_read: 261_120,
            max_write: 261_120
        }
    );
    let none = Limits::default();
    assert_eq!(Bounds::from_limits(&none), Bounds::default());
    let huge = Limits {
        max_packet_length: u64::MAX,
        max_read_length: u64::MAX,
        max_write_length: 1 << 40,
        max_open_handles: 0,
    };
    assert_eq!(
        Bounds::from_limits(&huge),
        Bounds {
            max_packet: DEFAULT_MAX_PACKET,
            max_read: 261_120,
            max_write: 261_120
        }
    );
    let small = Limits {
        max_packet_length: 9000,
        max_read_length: 0,
        max_write_length: 20_000,
        max_open_handles: 0,
    };
    assert_eq!(
        Bounds::from_limits(&small),
        Bounds {
            max_packet: 9000,
            max_read: 7976,
            max_write: 7976
        }
    );
}

#[test]
fn ids_wrap_around_and_skip_ids_still_outstanding() {
    let mut m = matcher();
    m.set_next_id(u32::MAX);
    let a = send(&mut m, &Request::Close { handle: H }, 0);
    let b = send(&mut m, &Request::Close { handle: H }, 1);
    assert_eq!((a, b), (u32::MAX, 0));
    // Around again with `a` still waiting: it is skipped, not given twice.
    m.receive(reply(b, status(StatusCode::Ok))).unwrap();
    m.set_next_id(u32::MAX);
    let c = send(&mut m, &Request::Close { handle: H }, 2);
    assert_eq!(c, 0);
    assert_eq!(m.receive(reply(a, status(StatusCode::Ok))).unwrap().tag, 0);
    assert_eq!(m.receive(reply(c, status(StatusCode::Ok))).unwrap().tag, 2);
}

/// A request to send in a property test: its kind (an index into `one_of_each`),
/// whether it fails (answered with a STATUS), and for READ/WRITE a size.
fn arb_specs() -> impl Strategy<Value = Vec<(usize, bool, u32)>> {
    proptest::collection::vec((0..13usize, any::<bool>(), 0..2000u32), 1..40)
}

/// What was sent for one spec: id, kind, the reply it will get, data bytes in flight.
type Sent = (u32, RequestKind, ReplyBody, u32);

/// Sends the requests of `specs`, each tagged with its index.
fn send_all(m: &mut Matcher<usize>, specs: &[(usize, bool, u32)]) -> Vec<Sent> {
    let kinds = one_of_each();
    specs
        .iter()
        .enumerate()
        .map(|(tag, &(k, fails, size))| {
            let data = vec![0u8; size as usize];
            let (req, body, bytes) = match &kinds[k] {
                (Request::Read { .. }, _) => (
                    read(size),
                    ReplyBody::Data(vec![1; size as usize / 2]),
                    size,
                ),
                (Request::Write { .. }, b) => (write(&data), b.clone(), size),
                (r, b) => (r.clone(), b.clone(), 0),
            };
            let body = if fails {
                status(StatusCode::from_u32(size % 12))
            } else {
                body
            };
            (send(m, &req, tag), req.kind(), body, bytes)
        })
        .collect()
}

proptest! {
    #[test]
    fn any_order_of_replies_matches_each_request_exactly_once(
        (specs, order) in arb_specs().prop_flat_map(|s| {
            let n = s.len();
            (Just(s), Just((0..n).collect::<Vec<_>>()).prop_shuffle())
        })
    ) {
        let mut m = matcher();
        let sent = send_all(&mut m, &specs);
        let ids: std::collections::HashSet<u32> = sent.iter().map(|s| s.0).collect();
        prop_assert_eq!(ids.len(), sent.len(), "ids are distinct");
        let mut bytes: u64 = sent.iter().map(|s| u64::from(s.3)).sum();
        let mut seen = vec![false; sent.len()];
        for (done, &i) in order.iter().enumerate() {
            prop_assert_eq!((m.outstanding(), m.bytes_outstanding()), (sent.len() - done, bytes));
            let (id, kind, body, b) = sent[i].clone();
            let a = m.receive(reply(id, body)).unwrap();
            prop_assert_eq!((a.tag, a.id, a.request), (i, id, kind));
            prop_assert!(!seen[i]);
            seen[i] = true;
            bytes -= u64::from(b);
        }
        prop_assert_eq!((m.outstanding(), m.bytes_outstanding()), (0, 0));
    }

    #[test]
    fn duplicate_unknown_and_ill_typed_replies_are_refused_without_disturbing_the_others(
        specs in arb_specs(),
        bad in proptest::collection::vec((0..40usize, 0..3u8, any::<u32>()), 0..30),
    ) {
        let mut m = matcher();
        let sent = send_all(&mut m, &specs);
        let ids: std::collections::HashSet<u32> = sent.iter().map(|s| s.0).collect();
        // Replies come in send order; before the reply to `step`, the bad ones for it.
        for step in 0..sent.len() {
            for &(_, how, n) in bad.iter().filter(|b| b.0 % sent.len() == step) {
                let n = n as usize;
                let wrong = match how {
                    0 if step > 0 => reply(sent[n % step].0, status(StatusCode::Ok)),
                    0 | 1 => {
                        let mut id = n as u32;
                        while ids.contains(&id) {
                            id = id.wrapping_add(1);
                        }
                        reply(id, status(StatusCode::Ok))
                    }
                    _ => {
                        let (id, kind, ..) = sent[step + n % (sent.len() - step)];
                        let body = match kind {
                            RequestKind::Open | RequestKind::Opendir => ReplyBody::Name(Vec::new()),
                            _ => ReplyBody::Handle(H.to_vec()),
                        };
                        reply(id, body)
                    }
                };
                let before = (m.outstanding(), m.bytes_outstanding());
                prop_assert!(m.receive(wrong).is_err());
                prop_assert_eq!((m.outstanding(), m.bytes_outstanding()), before);
            }
            let (id, _, body, _) = sent[step].clone();
            prop_assert_eq!(m.receive(reply(id, body)).unwrap().tag, step);
        }
        prop_assert_eq!((m.outstanding(), m.bytes_outstanding()), (0, 0));
    }
}
