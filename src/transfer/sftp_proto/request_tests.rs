//! Requests byte for byte as the draft lays them out: each field hand-written, in
//! order, big-endian, strings with their length first.

use super::testing::cat;
use super::*;

fn encoded(req: &Request<'_>, id: u32) -> Vec<u8> {
    let mut out = Vec::new();
    req.encode(id, &mut out).unwrap();
    out
}

#[test]
fn init_asks_for_version_3_and_carries_no_id() {
    let mut out = Vec::new();
    encode_init(&mut out);
    assert_eq!(out, [0, 0, 0, 5, 1, 0, 0, 0, 3]);
}

#[test]
fn open_for_exclusive_create_encodes_path_pflags_and_attrs_in_order() {
    let req = Request::Open {
        path: b"/in/a.part",
        flags: OpenFlags::WRITE | OpenFlags::CREAT | OpenFlags::EXCL,
        attrs: Attrs {
            permissions: Some(0o644),
            ..Attrs::default()
        },
    };
    let want = cat(&[
        &[0, 0, 0, 31], // length
        &[3],           // SSH_FXP_OPEN
        &[0, 0, 0, 1],  // id
        &[0, 0, 0, 10], // string filename
        b"/in/a.part",
        &[0, 0, 0, 0x2a], // pflags: WRITE 0x02 | CREAT 0x08 | EXCL 0x20
        &[0, 0, 0, 4],    // ATTRS flags: PERMISSIONS only
        &[0, 0, 1, 0xa4], // 0644
    ]);
    assert_eq!(encoded(&req, 1), want);
}

#[test]
fn open_flags_have_the_draft_values() {
    let all = OpenFlags::READ
        | OpenFlags::WRITE
        | OpenFlags::APPEND
        | OpenFlags::CREAT
        | OpenFlags::TRUNC
        | OpenFlags::EXCL;
    assert_eq!(all.0, 0x3f);
    assert!(all.contains(OpenFlags::CREAT | OpenFlags::TRUNC));
    assert!(!OpenFlags::READ.contains(OpenFlags::WRITE));
}

#[test]
fn open_with_every_attribute_writes_them_in_flag_order() {
    let req = Request::Open {
        path: b"f",
        flags: OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREAT | OpenFlags::TRUNC,
        attrs: Attrs {
            size: Some(0x0102_0304_0506_0708),
            uid_gid: Some((1000, 1001)),
            permissions: Some(0o100_600),
            times: Some((1, 2)),
            extended: vec![("x@y".into(), b"z".to_vec())],
        },
    };
    let want = cat(&[
        &[0, 0, 0, 62, 3, 0, 0, 0, 9],
        &[0, 0, 0, 1, b'f'],
        &[0, 0, 0, 0x1b],                // READ|WRITE|CREAT|TRUNC
        &[0x80, 0, 0, 0x0f],             // EXTENDED|ACMODTIME|PERMISSIONS|UIDGID|SIZE
        &[1, 2, 3, 4, 5, 6, 7, 8],       // uint64 size
        &[0, 0, 3, 0xe8, 0, 0, 3, 0xe9], // uid 1000, gid 1001
        &[0, 0, 0x81, 0x80],             // 0100600
        &[0, 0, 0, 1, 0, 0, 0, 2],       // atime, mtime
        &[0, 0, 0, 1],                   // one extended pair
        &[0, 0, 0, 3],
        b"x@y",
        &[0, 0, 0, 1],
        b"z",
    ]);
    assert_eq!(encoded(&req, 9), want);
}

#[test]
fn write_read_and_close_carry_handle_offset_and_length_big_endian() {
    let h: &[u8] = b"h1";
    let write = Request::Write {
        handle: h,
        offset: 0x1_0000_0000,
        data: b"abc",
    };
    assert_eq!(
        encoded(&write, 7),
        cat(&[
            &[0, 0, 0, 26, 6, 0, 0, 0, 7],
            &[0, 0, 0, 2],
            b"h1",
            &[0, 0, 0, 1, 0, 0, 0, 0], // offset 2^32
            &[0, 0, 0, 3],
            b"abc",
        ])
    );
    let read = Request::Read {
        handle: h,
        offset: 32768,
        len: 32768,
    };
    assert_eq!(
        encoded(&read, 8),
        cat(&[
            &[0, 0, 0, 23, 5, 0, 0, 0, 8],
            &[0, 0, 0, 2],
            b"h1",
            &[0, 0, 0, 0, 0, 0, 0x80, 0],
            &[0, 0, 0x80, 0],
        ])
    );
    let close = Request::Close { handle: h };
    assert_eq!(
        encoded(&close, 0xdead_beef),
        cat(&[
            &[0, 0, 0, 11, 4, 0xde, 0xad, 0xbe, 0xef],
            &[0, 0, 0, 2],
            b"h1"
        ])
    );
}

#[test]
fn requests_of_one_string_carry_their_type_byte_id_and_that_string() {
    let s: &[u8] = b"/C:/ERP/in\xff"; // file names are bytes, not text
    let cases = [
        (Request::Lstat { path: s }, 7),
        (Request::Fstat { handle: s }, 8),
        (Request::Opendir { path: s }, 11),
        (Request::Readdir { handle: s }, 12),
        (Request::Remove { path: s }, 13),
        (Request::Stat { path: s }, 17),
    ];
    for (req, kind) in cases {
        let want = cat(&[&[0, 0, 0, 20, kind, 0, 0, 0, 42], &[0, 0, 0, 11], s]);
        assert_eq!(encoded(&req, 42), want, "{:?}", req.kind());
    }
}

#[test]
fn rename_is_the_plain_v3_rename_never_posix_rename() {
    let req = Request::Rename {
        from: b"a.part",
        to: b"a",
    };
    let want = cat(&[
        &[0, 0, 0, 20, 18, 0, 0, 0, 5],
        &[0, 0, 0, 6],
        b"a.part",
        &[0, 0, 0, 1],
        b"a",
    ]);
    let got = encoded(&req, 5);
    assert_eq!(got, want);
    assert!(!got.windows(5).any(|w| w == b"posix"));
}

#[test]
fn fsync_and_limits_are_extended_requests_named_as_openssh_announces_them() {
    let fsync = Request::Fsync {
        handle: &[0, 0, 0, 1],
    };
    assert_eq!(
        encoded(&fsync, 2),
        cat(&[
            &[0, 0, 0, 34, 200, 0, 0, 0, 2],
            &[0, 0, 0, 17],
            b"fsync@openssh.com",
            &[0, 0, 0, 4, 0, 0, 0, 1]
        ])
    );
    assert_eq!(
        encoded(&Request::Limits, 3),
        cat(&[
            &[0, 0, 0, 27, 200, 0, 0, 0, 3],
            &[0, 0, 0, 18],
            b"limits@openssh.com"
        ])
    );
}
