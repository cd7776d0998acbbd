//! Test support: the server's side of the codec (replies encoded as a server would
//! send them) and proptest strategies for replies. We never send replies, so this
//! lives only in tests; it is written from the draft, not from `reply.rs`, so a round
//! trip checks one reading of the draft against another.

use proptest::collection::vec;
use proptest::prelude::*;

use super::attrs::Attrs;
use super::reply::{
    Limits, NameEntry, Reply, ReplyBody, ServerPacket, ServerVersion, Status, StatusCode,
};
use super::wire::{fxp, put_bytes, put_u32, put_u64};

/// Concatenates byte pieces, so an expected packet reads field by field.
pub fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// `packet` framed as a server sends it: its length first.
pub fn framed(packet: &[u8]) -> Vec<u8> {
    let mut out = (packet.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(packet);
    out
}

/// One packet's bytes (type first, no length prefix).
pub fn encode_packet(p: &ServerPacket) -> Vec<u8> {
    let mut out = Vec::new();
    match p {
        ServerPacket::Version(v) => {
            out.push(fxp::VERSION);
            put_u32(&mut out, v.version);
            for (name, data) in &v.extensions {
                put_bytes(&mut out, name.as_bytes());
                put_bytes(&mut out, data);
            }
        }
        ServerPacket::Reply(Reply { id, body }) => {
            let kind = match body {
                ReplyBody::Status(_) => fxp::STATUS,
                ReplyBody::Handle(_) => fxp::HANDLE,
                ReplyBody::Data(_) => fxp::DATA,
                ReplyBody::Name(_) => fxp::NAME,
                ReplyBody::Attrs(_) => fxp::ATTRS,
                ReplyBody::ExtendedReply(_) => fxp::EXTENDED_REPLY,
            };
            out.push(kind);
            put_u32(&mut out, *id);
            match body {
                ReplyBody::Status(s) => {
                    put_u32(&mut out, s.code.to_u32());
                    put_bytes(&mut out, s.message.as_bytes());
                    put_bytes(&mut out, s.language.as_bytes());
                }
                ReplyBody::Handle(b) | ReplyBody::Data(b) => put_bytes(&mut out, b),
                ReplyBody::Name(entries) => {
                    put_u32(&mut out, entries.len() as u32);
                    for e in entries {
                        put_bytes(&mut out, &e.filename);
                        put_bytes(&mut out, &e.longname);
                        e.attrs.encode(&mut out);
                    }
                }
                ReplyBody::Attrs(a) => a.encode(&mut out),
                ReplyBody::ExtendedReply(data) => out.extend_from_slice(data),
            }
        }
    }
    out
}

pub fn reply(id: u32, body: ReplyBody) -> Reply {
    Reply { id, body }
}

pub fn status(code: StatusCode) -> ReplyBody {
    ReplyBody::Status(Status {
        code,
        message: String::new(),
        language: String::new(),
    })
}

pub fn limits_data(l: &Limits) -> Vec<u8> {
    let mut out = Vec::new();
    for v in [
        l.max_packet_length,
        l.max_read_length,
        l.max_write_length,
        l.max_open_handles,
    ] {
        put_u64(&mut out, v);
    }
    out
}

pub fn arb_attrs() -> impl Strategy<Value = Attrs> {
    (
        any::<Option<u64>>(),
        any::<Option<(u32, u32)>>(),
        any::<Option<u32>>(),
        any::<Option<(u32, u32)>>(),
        vec(("[a-z]{1,8}@[a-z]{1,8}", vec(any::<u8>(), 0..8)), 0..3),
    )
        .prop_map(|(size, uid_gid, permissions, times, extended)| Attrs {
            size,
            uid_gid,
            permissions,
            times,
            extended,
        })
}

fn arb_status() -> impl Strategy<Value = Status> {
    (any::<u32>(), "\\PC{0,12}", "[a-z]{0,5}").prop_map(|(code, message, language)| Status {
        code: StatusCode::from_u32(code),
        message,
        language,
    })
}

pub fn arb_reply_body() -> impl Strategy<Value = ReplyBody> {
    let bytes = || vec(any::<u8>(), 0..40);
    let entry = (bytes(), bytes(), arb_attrs()).prop_map(|(filename, longname, attrs)| NameEntry {
        filename,
        longname,
        attrs,
    });
    prop_oneof![
        arb_status().prop_map(ReplyBody::Status),
        bytes().prop_map(ReplyBody::Handle),
        bytes().prop_map(ReplyBody::Data),
        vec(entry, 0..4).prop_map(ReplyBody::Name),
        arb_attrs().prop_map(ReplyBody::Attrs),
        bytes().prop_map(ReplyBody::ExtendedReply),
    ]
}

pub fn arb_server_packet() -> impl Strategy<Value = ServerPacket> {
    let version = (
        any::<u32>(),
        vec(("[a-z.@-]{1,20}", vec(any::<u8>(), 0..4)), 0..5),
    )
        .prop_map(|(version, extensions)| {
            ServerPacket::Version(ServerVersion {
                version,
                extensions,
            })
        });
    prop_oneof![
        1 => version,
        6 => (any::<u32>(), arb_reply_body()).prop_map(|(id, body)| ServerPacket::Reply(Reply { id, body })),
    ]
}
