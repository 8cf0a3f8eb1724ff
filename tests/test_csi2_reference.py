"""Tests of the reference CSI-2 encoder/decoder in sim/csi2.py against the standard's vectors and rules."""

import random

import pytest

from stackcam.sim import csi2
from stackcam.sim.csi2 import (
    FE,
    FS,
    LE,
    LS,
    RAW10,
    USER0,
    USER3,
    CSI2DecodeError,
    CSI2Decoder,
    crc16,
    decode,
    ecc,
    ecc_correct,
    long_packet,
    merge_lanes,
    merge_lanes_packets,
    short_packet,
    unpack_beat,
)

GOLDEN_PAYLOAD = bytes.fromhex("FF 00 00 02 B9 DC F3 72 BB D4 B8 5A C8 75 C2 7C 81 F8 05 DF FF 00 00 01")


def test_golden_crc():
    assert crc16(GOLDEN_PAYLOAD) == 0x00F0
    packet = long_packet(0, RAW10, GOLDEN_PAYLOAD)
    assert packet[-2:] == bytes([0xF0, 0x00])
    assert packet[1:3] == bytes([24, 0])
    assert crc16(b"") == 0xFFFF
    # Running checksum over chunks equals the one-shot checksum.
    assert crc16(GOLDEN_PAYLOAD[10:], crc16(GOLDEN_PAYLOAD[:10])) == 0x00F0


def test_golden_headers():
    assert short_packet(0, FS, 1) == bytes([0x00, 0x01, 0x00, 0x1A])
    # The same Hamming code protects MIPI DSI headers: "exit sleep mode" (05 11 00) has ECC 0x36.
    assert ecc(0x05 | 0x11 << 8) == 0x36
    assert ecc(0) == 0
    assert short_packet(2, FE, 0x1234)[0] == 2 << 6 | FE
    assert short_packet(2, FE, 0x1234)[1:3] == bytes([0x34, 0x12])


def test_ecc_is_a_linear_code_with_bits_7_6_zero():
    rng = random.Random(1)
    for _ in range(500):
        a, b = rng.getrandbits(24), rng.getrandbits(24)
        assert ecc(a) ^ ecc(b) == ecc(a ^ b)
        assert ecc(a) >> 6 == 0


@pytest.mark.parametrize("bit", range(32))
def test_ecc_corrects_every_single_bit(bit):
    rng = random.Random(bit)
    for _ in range(20):
        vc, dt = rng.randrange(4), rng.choice([RAW10, USER3, 0x12])
        payload = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 9)))
        good = long_packet(vc, dt, payload)
        bad = bytearray(good)
        bad[bit // 8] ^= 1 << bit % 8
        h = bad[0] | bad[1] << 8 | bad[2] << 16
        fixed, status = ecc_correct(h, bad[3])
        assert status == "corrected"
        assert fixed == good[0] | good[1] << 8 | good[2] << 16
        # And the decoder repairs and counts it, then decodes the rest normally.
        dec = CSI2Decoder()
        frame = short_packet(vc, FS, 1) + bytes(bad) + short_packet(vc, FE, 1)
        packets = dec.feed(frame)
        dec.finish()
        assert [p.ecc_corrected for p in packets] == [False, True, False]
        assert packets[1].payload == payload and packets[1].crc_ok
        assert (dec.ecc_corrected, dec.ecc_errors, dec.crc_errors, dec.framing_errors) == (1, 0, 0, 0)
        # Fed a byte at a time, the repaired header is still counted once.
        dec = CSI2Decoder()
        for byte in frame:
            dec.feed(bytes([byte]))
        assert dec.finish().ecc_corrected == 1 and dec.error_count == 0


def test_ecc_double_errors_are_not_miscorrected_silently():
    # Two flipped header bits (among the 24 data and 6 parity bits) never decode as "ok", so they are never
    # taken silently. (A 6-bit Hamming code cannot tell every double error from a single one.)
    rng = random.Random(7)
    positions = list(range(30))
    uncorrectable = 0
    for _ in range(400):
        h = rng.getrandbits(24)
        word = h | ecc(h) << 24
        i, j = rng.sample(positions, 2)
        word ^= 1 << i | 1 << j
        _, status = ecc_correct(word & 0xFFFFFF, word >> 24)
        assert status != "ok"
        uncorrectable += status == "error"
    assert uncorrectable > 100


def test_decoder_uncorrectable_header():
    good = short_packet(0, FS, 1) + long_packet(0, RAW10, b"\x01\x02")
    bad = bytearray(good)
    bad[4] ^= 0x03              # two bits of the long packet's DI: its length can no longer be trusted
    dec = CSI2Decoder()
    dec.feed(bad)
    assert dec.ecc_errors == 1
    with pytest.raises(CSI2DecodeError):
        dec.feed(b"")
    # Packet-at-a-time decoding (bursts) resynchronizes after it.
    dec = CSI2Decoder()
    dec.feed_packet(short_packet(0, FS, 1))
    assert dec.feed_packet(bad[4:]).ecc_error
    dec.feed_packet(long_packet(0, RAW10, b"\x05"))
    dec.feed_packet(short_packet(0, FE, 1))
    dec.finish()
    assert (dec.ecc_errors, dec.crc_errors, dec.framing_errors) == (1, 0, 0)
    assert dec.tensor_lines(0, RAW10) == [[b"\x05"]]
    with pytest.raises(CSI2DecodeError):
        decode(bytes(bad), strict=True)


def test_decoder_crc_error():
    packet = bytearray(long_packet(1, USER0, bytes(range(50))))
    packet[10] ^= 0x40
    dec = decode(short_packet(1, FS, 1) + packet + short_packet(1, FE, 1))
    assert (dec.ecc_corrected, dec.ecc_errors, dec.crc_errors, dec.framing_errors) == (0, 0, 1, 0)
    assert dec.packets[1].crc_ok is False


@pytest.mark.parametrize("stream, errors", [
    ([("FS", 1), ("L", b"ab"), ("FE", 1)], 0),
    ([("L", b"ab")], 1),                                     # line outside a frame
    ([("FE", 1)], 1),                                        # FE without FS
    ([("FS", 1), ("FS", 2), ("FE", 2)], 1),                  # FS inside an open frame
    ([("FS", 1), ("FE", 2)], 1),                             # FE number differs from FS
    ([("FS", 1), ("FE", 1), ("FS", 3), ("FE", 3)], 1),       # frame number skips
    ([("FS", 5), ("FE", 5), ("FS", 1), ("FE", 1)], 0),       # reset to 1 is allowed
    ([("FS", 0), ("FE", 0), ("FS", 0), ("FE", 0)], 0),       # frame numbers unused
    ([("FS", 1)], 1),                                        # never closed
    ([("FS", 1), ("LS", 1), ("L", b"x"), ("LE", 1), ("FE", 1)], 0),
    ([("FS", 1), ("LS", 1), ("L", b"x"), ("LE", 2), ("FE", 1)], 1),  # LE number differs
    ([("FS", 1), ("LS", 1), ("L", b"x"), ("FE", 1)], 1),     # LS without LE
    ([("FS", 1), ("G", 7), ("FE", 1), ("G", 8)], 0),         # generic short packets anywhere
])
def test_decoder_framing(stream, errors):
    vc = 3
    data = b""
    for kind, arg in stream:
        if kind == "L":
            data += long_packet(vc, RAW10, arg)
        elif kind == "G":
            data += short_packet(vc, 0x08, arg)
        else:
            data += short_packet(vc, {"FS": FS, "FE": FE, "LS": LS, "LE": LE}[kind], arg)
    dec = decode(data)
    assert dec.framing_errors == errors, dec.errors
    assert dec.ecc_errors == dec.crc_errors == 0


def test_virtual_channels_are_framed_independently_and_large_word_counts():
    rng = random.Random(3)
    big = bytes(rng.getrandbits(8) for _ in range(0x2345))
    lines = [bytes(rng.getrandbits(8) for _ in range(17)) for _ in range(3)]
    data = (short_packet(0, FS, 1) + short_packet(2, FS, 9)
            + long_packet(0, RAW10, big)
            + b"".join(long_packet(2, USER3, line) for line in lines)
            + short_packet(0, FE, 1) + long_packet(2, USER0, b"meta") + short_packet(2, FE, 9)
            + short_packet(2, FS, 10) + long_packet(2, USER3, b"z") + short_packet(2, FE, 10))
    packet = long_packet(0, RAW10, big)
    assert packet[1] | packet[2] << 8 == 0x2345
    # Feed in odd-sized chunks: the decoder keeps partial packets.
    dec = CSI2Decoder()
    for start in range(0, len(data), 1000):
        dec.feed(data[start:start + 1000])
    dec.finish()
    assert dec.error_count == 0, dec.errors
    assert dec.tensor_lines(0, RAW10) == [[big]]
    assert dec.tensor_lines(2, USER3) == [lines, [b"z"]]
    assert dec.tensor_lines(2, USER0) == [[b"meta"], []]
    assert dec.frame_bytes(2, USER3) == [b"".join(lines), b"z"]
    assert [f.number for f in dec.frames_on(2)] == [9, 10]
    assert all(p.encode() == data[p.offset:p.offset + len(p.encode())] for p in dec.packets)


def test_encoder_rejects_bad_arguments():
    with pytest.raises(ValueError):
        short_packet(4, FS, 0)
    with pytest.raises(ValueError):
        short_packet(0, RAW10, 0)
    with pytest.raises(ValueError):
        long_packet(0, FS, b"")
    with pytest.raises(ValueError):
        long_packet(0, RAW10, bytes(0x10000))
    with pytest.raises(ValueError):
        ecc(1 << 24)


@pytest.mark.parametrize("lanes", [1, 2, 4])
def test_merge_lanes(lanes):
    packets = [short_packet(1, FS, 1), long_packet(1, USER0, bytes(range(7))), long_packet(1, USER0, b""),
               short_packet(1, FE, 1)]
    beats = []
    for p in packets:
        chunks = [p[i:i + lanes] for i in range(0, len(p), lanes)]
        for n, chunk in enumerate(chunks):
            value = int.from_bytes(chunk.ljust(lanes, b"\0"), "little")
            strobe = (1 << len(chunk)) - 1
            value |= (strobe | (n == 0) << lanes | (n == len(chunks) - 1) << (lanes + 1)) << (8 * lanes)
            beats.append(value)
    assert merge_lanes_packets(beats, lanes) == packets
    assert merge_lanes(beats, lanes) == b"".join(packets)
    data, strobe, first, last = unpack_beat(beats[0], lanes)
    assert (bytes(data), strobe, first, last) == (packets[0][:lanes], (1 << lanes) - 1, 1, lanes == 4)
    # Tuples work too, and the beat rules are enforced.
    tuple_beats = [unpack_beat(b, lanes) for b in beats]
    assert merge_lanes(tuple_beats, lanes) == b"".join(packets)
    n0 = -(-4 // lanes)                             # beats of the first (short) packet
    with pytest.raises(ValueError):
        merge_lanes(tuple_beats[:n0] + tuple_beats[n0 + 1:], lanes)     # a packet without its `first` beat
    with pytest.raises(ValueError):
        merge_lanes(tuple_beats[:n0 + 1], lanes)    # ends without `last`
    if lanes > 1:
        d, s, f, la = tuple_beats[0]
        with pytest.raises(ValueError):
            merge_lanes([(d, 0b10, f, la)] + tuple_beats[1:], lanes)


def test_data_type_constants():
    assert (csi2.FS, csi2.FE, csi2.LS, csi2.LE) == (0, 1, 2, 3)
    assert (csi2.EMBEDDED, csi2.YUV422_8, csi2.RGB888, csi2.RAW8, csi2.RAW10) == (0x12, 0x1E, 0x24, 0x2A, 0x2B)
    assert csi2.USER == tuple(range(0x30, 0x38)) and csi2.USER7 == 0x37


def test_feed_packet_checks_burst_length():
    dec = CSI2Decoder()
    dec.feed_packet(short_packet(1, FS, 1))
    truncated = dec.feed_packet(long_packet(1, RAW10, bytes(10))[:-3])
    assert truncated.crc_ok is False
    padded = dec.feed_packet(long_packet(1, RAW10, bytes(2)) + b"\0")
    assert padded.crc_ok
    dec.feed_packet(short_packet(1, FE, 1))
    dec.finish()
    assert (dec.ecc_errors, dec.crc_errors, dec.framing_errors) == (0, 0, 2)
    with pytest.raises(CSI2DecodeError):
        dec.feed_packet(b"\x00\x01")
