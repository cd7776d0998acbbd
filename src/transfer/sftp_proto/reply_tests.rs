//! Replies parsed from the bytes a server sends, broken ones refused with the error
//! that says what is wrong, and any reply a server could encode parsed back as it was.

use proptest::prelude::*;

use super::testing::{arb_attrs, arb_server_packet, cat, encode_packet};
use super::wire::Reader;
use super::*;

fn parse(packet: &[u8]) -> Result<ServerPacket, CodecError> {
    ServerPacket::parse(packet)
}

fn parse_reply(packet: &[u8]) -> Reply {
    match parse(packet).unwrap() {
        ServerPacket::Reply(r) => r,
        other => panic!("not a reply: {other:?}"),
    }
}

#[test]
fn version_reply_lists_extensions_with_their_data() {
    let packet = cat(&[
        &[2, 0, 0, 0, 3],
        &[0, 0, 0, 24],
        b"posix-rename@openssh.com",
        &[0, 0, 0, 1],
        b"1",
        &[0, 0, 0, 17],
        b"fsync@openssh.com",
        &[0, 0, 0, 1],
        b"1",
        &[0, 0, 0, 18],
        b"limits@openssh.com",
        &[0, 0, 0, 1],
        b"1",
    ]);
    let ServerPacket::Version(v) = parse(&packet).unwrap() else {
        panic!()
    };
    assert_eq!(v.version, 3);
    assert_eq!(v.extensions.len(), 3);
    assert!(v.supports(ext::FSYNC, b"1"));
    assert!(v.supports(ext::LIMITS, b"1"));
    assert!(
        !v.supports(ext::LIMITS, b"2"),
        "another version may mean another layout"
    );
    assert!(!v.supports("hardlink@openssh.com", b"1"));
}

#[test]
fn version_without_extensions_is_a_plain_v3_server() {
    let v = ServerVersion {
        version: 3,
        extensions: Vec::new(),
    };
    assert_eq!(parse(&[2, 0, 0, 0, 3]), Ok(ServerPacket::Version(v)));
}

#[test]
fn an_extension_name_that_is_not_utf8_is_refused() {
    let packet = cat(&[&[2, 0, 0, 0, 3], &[0, 0, 0, 2, 0xc3, 0x28], &[0, 0, 0, 0]]);
    assert!(matches!(
        parse(&packet),
        Err(CodecError::BadUtf8 {
            field: "extension name",
            ..
        })
    ));
}

#[test]
fn status_keeps_code_message_and_language() {
    let packet = cat(&[
        &[101, 0, 0, 0, 4, 0, 0, 0, 2],
        &[0, 0, 0, 12],
        b"No such file",
        &[0, 0, 0, 2],
        b"en",
    ]);
    let r = parse_reply(&packet);
    assert_eq!(r.id, 4);
    let ReplyBody::Status(s) = r.body else {
        panic!()
    };
    assert_eq!(
        (s.code, s.message.as_str(), s.language.as_str()),
        (StatusCode::NoSuchFile, "No such file", "en")
    );
}

#[test]
fn a_status_code_v3_does_not_define_stays_a_number() {
    // ProFTPD refuses a rename onto an existing name with 11 (FILE_ALREADY_EXISTS).
    let r = parse_reply(&cat(&[
        &[101, 0, 0, 0, 1, 0, 0, 0, 11],
        &[0, 0, 0, 0],
        &[0, 0, 0, 0],
    ]));
    let ReplyBody::Status(s) = r.body else {
        panic!()
    };
    assert_eq!(s.code, StatusCode::Other(11));
    assert_eq!(s.code.to_u32(), 11);
    assert_eq!(s.code.to_string(), "file already exists (status 11)");
    for n in 0..=8 {
        assert_eq!(StatusCode::from_u32(n).to_u32(), n);
        assert!(!matches!(StatusCode::from_u32(n), StatusCode::Other(_)));
    }
    assert_eq!(StatusCode::from_u32(8), StatusCode::OpUnsupported);
}

#[test]
fn a_status_without_message_or_language_is_accepted() {
    let r = parse_reply(&[101, 0, 0, 0, 1, 0, 0, 0, 0]);
    assert_eq!(r.body, super::testing::status(StatusCode::Ok));
    let with_message_only = cat(&[&[101, 0, 0, 0, 1, 0, 0, 0, 4], &[0, 0, 0, 4], b"full"]);
    let ReplyBody::Status(s) = parse_reply(&with_message_only).body else {
        panic!()
    };
    assert_eq!((s.message.as_str(), s.language.as_str()), ("full", ""));
}

#[test]
fn a_status_message_in_another_encoding_is_kept_not_refused() {
    // "Zugriff" and a Latin-1 a-umlaut, as a server in a Latin-1 locale might send.
    let packet = cat(&[
        &[101, 0, 0, 0, 1, 0, 0, 0, 3],
        &[0, 0, 0, 8],
        b"Zugriff\xe4",
        &[0, 0, 0, 0],
    ]);
    let ReplyBody::Status(s) = parse_reply(&packet).body else {
        panic!()
    };
    assert_eq!(s.code, StatusCode::PermissionDenied);
    assert_eq!(s.message, "Zugriff\u{fffd}");
}

#[test]
fn handle_and_data_keep_their_bytes_as_they_are() {
    let r = parse_reply(&[102, 0, 0, 0, 9, 0, 0, 0, 4, 0, 0, 0, 0xff]);
    assert_eq!(
        r,
        super::testing::reply(9, ReplyBody::Handle(vec![0, 0, 0, 0xff]))
    );
    let r = parse_reply(&[103, 0, 0, 0, 9, 0, 0, 0, 0]);
    assert_eq!(r.body, ReplyBody::Data(Vec::new()));
}

#[test]
fn name_keeps_raw_filename_bytes_longname_and_attrs() {
    let packet = cat(&[
        &[104, 0, 0, 0, 6, 0, 0, 0, 2],
        &[0, 0, 0, 3],
        b"a\xffb",
        &[0, 0, 0, 1],
        b"l",
        &[0, 0, 0, 5],
        &[0, 0, 0, 0, 0, 0, 0, 10],
        &[0, 0, 0x81, 0xa4], // size 10, 0100644
        &[0, 0, 0, 1],
        b".",
        &[0, 0, 0, 0],
        &[0, 0, 0, 0],
    ]);
    let ReplyBody::Name(e) = parse_reply(&packet).body else {
        panic!()
    };
    assert_eq!(e.len(), 2);
    assert_eq!(e[0].filename, b"a\xffb");
    assert_eq!(e[0].longname, b"l");
    assert_eq!(e[0].attrs.size, Some(10));
    assert_eq!(e[0].attrs.is_regular(), Some(true));
    assert_eq!(e[1].filename, b".");
    assert_eq!(e[1].attrs, Attrs::default());
    assert_eq!(
        e[1].attrs.is_regular(),
        None,
        "no permissions, no file type"
    );
}

#[test]
fn a_name_count_beyond_the_packet_is_refused_before_allocating() {
    let packet = [104, 0, 0, 0, 6, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
    assert!(matches!(
        parse(&packet),
        Err(CodecError::Truncated { packet: "NAME", .. })
    ));
}

#[test]
fn attrs_reply_reads_every_flagged_field() {
    let packet = cat(&[
        &[105, 0, 0, 0, 3],
        &[0, 0, 0, 0x0d],             // SIZE|PERMISSIONS|ACMODTIME, no uid/gid
        &[0, 0, 0, 0, 0, 0, 0x10, 0], // 4096
        &[0, 0, 0x41, 0xed],          // 040755: a directory
        &[0x65, 0, 0, 0, 0x65, 0, 0, 1],
    ]);
    let ReplyBody::Attrs(a) = parse_reply(&packet).body else {
        panic!()
    };
    assert_eq!(a.size, Some(4096));
    assert_eq!(a.uid_gid, None);
    assert_eq!(a.is_dir(), Some(true));
    assert_eq!(a.times, Some((0x6500_0000, 0x6500_0001)));
}

#[test]
fn limits_reply_reads_four_u64s_as_openssh_sends_them() {
    let packet = cat(&[
        &[201, 0, 0, 0, 3],
        &[0, 0, 0, 0, 0, 4, 0, 0],    // 262144
        &[0, 0, 0, 0, 0, 3, 0xfc, 0], // 261120
        &[0, 0, 0, 0, 0, 3, 0xfc, 0],
        &[0, 0, 0, 0, 0, 0, 3, 0xfb], // 1019 handles
    ]);
    let ReplyBody::ExtendedReply(data) = parse_reply(&packet).body else {
        panic!()
    };
    let l = Limits::parse(&data).unwrap();
    assert_eq!(
        l,
        Limits {
            max_packet_length: 262_144,
            max_read_length: 261_120,
            max_write_length: 261_120,
            max_open_handles: 1019
        }
    );
    assert_eq!(super::testing::limits_data(&l), data);
    assert!(matches!(
        Limits::parse(&data[..31]),
        Err(CodecError::Truncated { .. })
    ));
    let mut long = data.clone();
    long.push(0);
    assert!(matches!(
        Limits::parse(&long),
        Err(CodecError::TrailingBytes { extra: 1, .. })
    ));
}

#[test]
fn a_reply_cut_short_anywhere_is_truncated() {
    let whole = [
        cat(&[&[102, 0, 0, 0, 9, 0, 0, 0, 2], b"hh"]),
        cat(&[&[103, 0, 0, 0, 9, 0, 0, 0, 3], b"abc"]),
        cat(&[
            &[104, 0, 0, 0, 6, 0, 0, 0, 1],
            &[0, 0, 0, 1],
            b"a",
            &[0, 0, 0, 0],
            &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1],
        ]),
        cat(&[&[105, 0, 0, 0, 3], &[0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2]]),
        cat(&[&[101, 0, 0, 0, 1], &[0, 0, 0, 4]]),
    ];
    for p in &whole {
        assert!(parse(p).is_ok());
        for cut in 0..p.len() {
            assert!(
                matches!(parse(&p[..cut]), Err(CodecError::Truncated { .. })),
                "{:?} cut at {cut}: {:?}",
                p[0],
                parse(&p[..cut])
            );
        }
    }
}

#[test]
fn bytes_after_the_last_field_are_refused() {
    for p in [
        cat(&[&[102, 0, 0, 0, 9, 0, 0, 0, 1], b"h", b"!"]),
        cat(&[&[105, 0, 0, 0, 3, 0, 0, 0, 0], b"!"]),
        cat(&[&[101, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], b"!"]),
    ] {
        assert!(
            matches!(parse(&p), Err(CodecError::TrailingBytes { extra: 1, .. })),
            "{p:?}"
        );
    }
}

#[test]
fn a_packet_type_that_is_no_reply_is_refused() {
    assert_eq!(parse(&[99, 0, 0, 0, 1]), Err(CodecError::UnknownType(99)));
    // A request type coming back (an echo, a confused server) is no reply either.
    assert_eq!(parse(&[3, 0, 0, 0, 1]), Err(CodecError::UnknownType(3)));
    assert_eq!(parse(&[200, 0, 0, 0, 1]), Err(CodecError::UnknownType(200)));
    assert!(matches!(
        parse(&[]),
        Err(CodecError::Truncated { field: "type", .. })
    ));
}

proptest! {
    #[test]
    fn replies_parse_back_to_what_the_server_encoded(p in arb_server_packet()) {
        prop_assert_eq!(parse(&encode_packet(&p)), Ok(p));
    }

    #[test]
    fn attrs_round_trip_through_encoding(a in arb_attrs()) {
        let mut out = Vec::new();
        a.encode(&mut out);
        let mut r = Reader::new(&out, "ATTRS");
        prop_assert_eq!(Attrs::decode(&mut r), Ok(a));
        prop_assert!(r.finish().is_ok());
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_parser(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = parse(&bytes);
        let _ = Limits::parse(&bytes);
        let mut d = FrameDecoder::new(64);
        if d.push(&bytes).is_ok() {
            while let Ok(Some(_)) = d.next_packet() {}
        }
    }
}
