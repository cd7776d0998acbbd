//! The frame decoder: packets whole whatever the reads' boundaries, lengths out of
//! bounds refused before anything is buffered for them.

use proptest::prelude::*;

use super::testing::{arb_server_packet, encode_packet, framed};
use super::*;

#[test]
fn the_decoder_waits_until_a_packet_is_whole() {
    let mut d = FrameDecoder::new(DEFAULT_MAX_PACKET);
    let bytes = framed(&[101, 0, 0, 0, 1, 0, 0, 0, 0]);
    d.push(&bytes[..2]).unwrap();
    assert!(d.next_packet().unwrap().is_none());
    d.push(&bytes[2..7]).unwrap();
    assert!(d.next_packet().unwrap().is_none());
    assert_eq!(d.buffered(), 7);
    d.push(&bytes[7..]).unwrap();
    assert!(d.next_packet().unwrap().is_some());
    assert!(d.next_packet().unwrap().is_none());
    assert_eq!(d.buffered(), 0);
}

#[test]
fn the_decoder_returns_every_packet_of_one_read() {
    let mut d = FrameDecoder::new(DEFAULT_MAX_PACKET);
    let mut bytes = Vec::new();
    for id in 0..5u8 {
        bytes.extend(framed(&[101, 0, 0, 0, id, 0, 0, 0, 0]));
    }
    bytes.extend(&framed(&[102, 0, 0, 0, 9])[..6]); // and the start of a sixth
    d.push(&bytes).unwrap();
    let mut ids = Vec::new();
    while let Some(ServerPacket::Reply(r)) = d.next_packet().unwrap() {
        ids.push(r.id);
    }
    assert_eq!(ids, [0, 1, 2, 3, 4]);
    assert_eq!(d.buffered(), 6);
}

#[test]
fn a_length_beyond_the_bound_is_refused_as_soon_as_its_prefix_arrives() {
    let mut d = FrameDecoder::new(1024);
    // 4 GiB announced: refused on the prefix, nothing reserved for it.
    assert_eq!(d.push(&[0xff, 0xff, 0xff]), Ok(()));
    let e = d.push(&[0xff]).unwrap_err();
    assert_eq!(
        e,
        CodecError::BadLength {
            len: u32::MAX,
            max: 1024
        }
    );
    assert!(d.buffered() <= 4);
    // The stream is lost: every later call says so.
    assert_eq!(d.push(&[0]), Err(e.clone()));
    assert_eq!(d.next_packet(), Err(e));
}

#[test]
fn a_length_at_the_bound_is_accepted() {
    let mut d = FrameDecoder::new(16);
    let mut packet = vec![103, 0, 0, 0, 1, 0, 0, 0, 7];
    packet.extend_from_slice(b"1234567");
    assert_eq!(packet.len(), 16);
    d.push(&framed(&packet)).unwrap();
    let Some(ServerPacket::Reply(r)) = d.next_packet().unwrap() else {
        panic!("no packet")
    };
    assert_eq!(r.body, ReplyBody::Data(b"1234567".to_vec()));
}

#[test]
fn a_zero_length_packet_is_refused() {
    let mut d = FrameDecoder::new(DEFAULT_MAX_PACKET);
    assert_eq!(
        d.push(&[0, 0, 0, 0]),
        Err(CodecError::BadLength {
            len: 0,
            max: DEFAULT_MAX_PACKET
        })
    );
}

proptest! {
    #[test]
    fn any_split_of_a_valid_stream_yields_the_same_packets(
        packets in proptest::collection::vec(arb_server_packet(), 1..8),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let stream: Vec<u8> = packets.iter().flat_map(|p| framed(&encode_packet(p))).collect();
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        at.push(0);
        at.push(stream.len());
        at.sort_unstable();
        let mut d = FrameDecoder::new(DEFAULT_MAX_PACKET);
        let mut got = Vec::new();
        for w in at.windows(2) {
            d.push(&stream[w[0]..w[1]]).unwrap();
            while let Some(p) = d.next_packet().unwrap() {
                got.push(p);
            }
        }
        prop_assert_eq!(got, packets);
        prop_assert_eq!(d.buffered(), 0);
    }
}
