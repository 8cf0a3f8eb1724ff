"""Reference MIPI CSI-2 packet encoder and checking decoder, written from the standard in plain Python.

It shares no code with the RTL in `rtl/csi2/`: the tests and the die testbench use it as the independent truth.
"""

from dataclasses import dataclass, field

__all__ = [
    "FS", "FE", "LS", "LE", "EMBEDDED", "YUV422_8", "RGB888", "RAW8", "RAW10", "USER",
    "USER0", "USER1", "USER2", "USER3", "USER4", "USER5", "USER6", "USER7",
    "ECC_PARITY_BITS", "is_short_dt", "ecc", "ecc_syndrome", "ecc_correct", "crc16",
    "header", "short_packet", "long_packet", "Packet", "Frame", "CSI2Decoder", "CSI2DecodeError",
    "merge_lanes", "merge_lanes_packets", "unpack_beat", "decode",
]

# Data types (CSI-2 v1.x). 0x00-0x07 are synchronization short packets, 0x08-0x0F generic short packets,
# everything from 0x10 up is a long packet.
FS, FE, LS, LE = 0x00, 0x01, 0x02, 0x03
EMBEDDED = 0x12
YUV422_8 = 0x1E
RGB888 = 0x24
RAW8 = 0x2A
RAW10 = 0x2B
USER = tuple(range(0x30, 0x38))
USER0, USER1, USER2, USER3, USER4, USER5, USER6, USER7 = USER

# The header ECC as the standard writes it: parity bit Pn is the XOR of these bits of the 24-bit header
# (D[7:0] = DI, D[15:8] = data/WC low byte, D[23:16] = data/WC high byte). P7 and P6 are zero in CSI-2 v1.x.
ECC_PARITY_BITS = (
    (0, 1, 2, 4, 5, 7, 10, 11, 13, 16, 20, 21, 22, 23),     # P0
    (0, 1, 3, 4, 6, 8, 10, 12, 14, 17, 20, 21, 22, 23),     # P1
    (0, 2, 3, 5, 6, 9, 11, 12, 15, 18, 20, 21, 22),         # P2
    (1, 2, 3, 7, 8, 9, 13, 14, 15, 19, 20, 21, 23),         # P3
    (4, 5, 6, 7, 8, 9, 16, 17, 18, 19, 20, 22, 23),         # P4
    (10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 21, 22, 23),   # P5
)

# Syndrome of a single flipped header bit: the column of the parity-check matrix for that data bit. Every column
# has weight 3 or more and all differ, so a syndrome of weight 1 is a flipped parity bit and anything else
# that is not in this table is an uncorrectable (multi-bit) error.
_DATA_BIT_SYNDROME = {}
for _bit in range(24):
    _DATA_BIT_SYNDROME[sum(1 << p for p, bits in enumerate(ECC_PARITY_BITS) if _bit in bits)] = _bit
assert len(_DATA_BIT_SYNDROME) == 24
del _bit


def is_short_dt(dt):
    """True for data types sent as short packets (synchronization 0x00-0x07 and generic 0x08-0x0F)."""
    return dt < 0x10


def ecc(header24):
    """The 8-bit ECC byte of a 24-bit packet header (bits 7:6 zero, CSI-2 v1.x)."""
    if not 0 <= header24 < 1 << 24:
        raise ValueError(f"header must be a 24-bit value, got {header24:#x}")
    result = 0
    for p, bits in enumerate(ECC_PARITY_BITS):
        parity = 0
        for b in bits:
            parity ^= (header24 >> b) & 1
        result |= parity << p
    return result


def ecc_syndrome(header24, ecc_byte):
    """The 8-bit syndrome: the received ECC byte XOR the ECC computed from the received header."""
    return ecc_byte ^ ecc(header24)


def ecc_correct(header24, ecc_byte):
    """Check a received header and its ECC byte.

    Returns `(header24, status)` with status "ok", "corrected" (a single flipped bit: in the header, which is
    then repaired, or in the ECC byte itself) or "error" (uncorrectable; the header is returned unchanged).
    """
    syndrome = ecc_syndrome(header24, ecc_byte)
    if syndrome == 0:
        return header24, "ok"
    if syndrome & (syndrome - 1) == 0:
        # One bit of the ECC byte flipped (P0-P5, or a reserved bit 7:6 that must be zero); the header is good.
        return header24, "corrected"
    if syndrome in _DATA_BIT_SYNDROME:
        return header24 ^ (1 << _DATA_BIT_SYNDROME[syndrome]), "corrected"
    return header24, "error"


def crc16(data, crc=0xFFFF):
    """CRC-16 of a long packet payload: x^16+x^12+x^5+1, LSB first (reflected 0x8408), init 0xFFFF, no final XOR.

    `crc` lets a caller continue a running checksum over several chunks.
    """
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


def _check_vc_dt(vc, dt):
    if not 0 <= vc < 4:
        raise ValueError(f"virtual channel must be 0-3, got {vc!r}")
    if not 0 <= dt < 64:
        raise ValueError(f"data type must be 0x00-0x3F, got {dt!r}")


def header(vc, dt, data16):
    """The four header bytes: DI, data/WC low, data/WC high, ECC."""
    _check_vc_dt(vc, dt)
    if not 0 <= data16 < 1 << 16:
        raise ValueError(f"data/word count must be 16-bit, got {data16!r}")
    di = vc << 6 | dt
    h = di | data16 << 8
    return bytes([di, data16 & 0xFF, data16 >> 8, ecc(h)])


def short_packet(vc, dt, data16=0):
    """A short packet (4 bytes), e.g. FS/FE with the frame number or LS/LE with the line number."""
    if not is_short_dt(dt):
        raise ValueError(f"data type {dt:#04x} is a long-packet type")
    return header(vc, dt, data16)


def long_packet(vc, dt, payload):
    """A long packet: header with WC = len(payload), the payload, then its CRC-16 low byte first."""
    if is_short_dt(dt):
        raise ValueError(f"data type {dt:#04x} is a short-packet type")
    payload = bytes(payload)
    crc = crc16(payload)
    return header(vc, dt, len(payload)) + payload + bytes([crc & 0xFF, crc >> 8])


@dataclass
class Packet:
    """One decoded packet. `data_or_wc` is the short packet's data field or the long packet's word count."""

    vc: int
    dt: int
    data_or_wc: int
    payload: bytes | None = None        # None for a short packet
    ecc_corrected: bool = False         # a single-bit header error was found and repaired
    ecc_error: bool = False             # uncorrectable header: vc/dt/data_or_wc are not to be trusted
    crc: int | None = None              # the CRC received with a long packet
    crc_ok: bool | None = None          # None for a short packet
    offset: int = 0                     # byte offset of the packet's header in everything fed to the decoder
    frame: int | None = None            # frame number of the enclosing frame on this VC, if inside one

    @property
    def long(self):
        return self.payload is not None

    @property
    def wc(self):
        return self.data_or_wc

    @property
    def data(self):
        return self.data_or_wc

    def encode(self):
        """The packet as a transmitter should have sent it."""
        if self.long:
            return long_packet(self.vc, self.dt, self.payload)
        return short_packet(self.vc, self.dt, self.data_or_wc)


@dataclass
class Frame:
    """The packets of one frame on one virtual channel, from FS to FE (both included)."""

    vc: int
    number: int
    packets: list = field(default_factory=list)
    complete: bool = False              # closed by a matching FE

    def payloads(self, dt=None):
        return [p.payload for p in self.packets if p.long and (dt is None or p.dt == dt)]


class CSI2DecodeError(Exception):
    """The byte stream cannot be parsed further (an uncorrectable header hides the packet's length)."""


class CSI2Decoder:
    """A checking CSI-2 receiver after lane merging.

    Feed it the bytes of packets sent back to back (no sync bytes) with `feed()`, or one packet burst at a time
    with `feed_packet()` (as a D-PHY receiver sees them between SoT and EoT, which lets it resynchronize after
    an uncorrectable header). It checks every header ECC (repairs and counts single-bit errors, counts
    uncorrectable ones), every long packet's CRC, and the framing per virtual channel:

    * FS opens a frame; a second FS before FE, FE without FS, or FE whose number differs from the FS's is an
      error; a long packet or LS/LE outside a frame is an error (generic short packets may go anywhere);
    * frame numbers are either always 0, or non-zero and each one the previous one plus 1 (or back to 1);
    * LS/LE, when used, pair up with equal line numbers.

    A framing problem counts one `framing_errors` and is described in `errors` (a list of strings); decoding
    goes on. With `strict=True` any error raises `CSI2DecodeError` at once instead.
    """

    def __init__(self, *, strict=False):
        self.strict = strict
        self.packets = []                   # every packet, in order
        self.frames = []                    # every Frame, in the order its FS arrived
        self.errors = []                    # human-readable description of every error counted
        self.ecc_corrected = 0
        self.ecc_errors = 0
        self.crc_errors = 0
        self.framing_errors = 0
        self.bytes_seen = 0
        self._buffer = bytearray()
        self._open = {}                     # vc -> open Frame
        self._last_frame_number = {}        # vc -> number of the last FS
        self._open_line = {}                # vc -> line number of an LS without its LE yet
        self._desynced = False

    # ---- error bookkeeping -------------------------------------------------------------------------------
    def _error(self, counter, message):
        setattr(self, counter, getattr(self, counter) + 1)
        self.errors.append(message)
        if self.strict:
            raise CSI2DecodeError(message)

    @property
    def error_count(self):
        return self.ecc_errors + self.crc_errors + self.framing_errors

    # ---- parsing -----------------------------------------------------------------------------------------
    def feed(self, data):
        """Add bytes of back-to-back packets; returns the packets completed by them."""
        if self._desynced:
            raise CSI2DecodeError("stream lost after an uncorrectable header; use feed_packet() to resync")
        self._buffer += bytes(data)
        done = []
        while True:
            packet, used = self._parse(self._buffer, self.bytes_seen)
            if packet is None:
                if used:    # uncorrectable header: nothing after it can be framed
                    self._desynced = True
                    self.bytes_seen += len(self._buffer)
                    self._buffer.clear()
                break
            del self._buffer[:used]
            self.bytes_seen += used
            self._accept(packet)
            done.append(packet)
        return done

    def feed_packet(self, data):
        """Add the bytes of exactly one packet (one burst); returns the Packet (possibly flagged)."""
        if self._buffer:
            raise CSI2DecodeError(f"{len(self._buffer)} bytes of an incomplete packet are pending")
        data = bytes(data)
        packet, used = self._parse(data, self.bytes_seen, whole=True)
        self.bytes_seen += len(data)
        if packet.ecc_error:
            return packet
        if used != len(data):
            self._error("framing_errors", f"packet at byte {packet.offset}: burst of {len(data)} bytes holds "
                                          f"{used} bytes of packet")
        self._accept(packet)
        return packet

    def _parse(self, buf, offset, whole=False):
        """Parse one packet from the start of `buf`; returns (Packet or None, bytes used)."""
        if len(buf) < 4:
            if whole:
                raise CSI2DecodeError(f"burst at byte {offset} is shorter than a packet header: {bytes(buf).hex()}")
            return None, 0
        h = buf[0] | buf[1] << 8 | buf[2] << 16
        h, status = ecc_correct(h, buf[3])
        if status == "error":
            self._error("ecc_errors", f"packet at byte {offset}: uncorrectable header {bytes(buf[:4]).hex(' ')}")
            packet = Packet(vc=h >> 6 & 3, dt=h & 0x3F, data_or_wc=h >> 8, ecc_error=True, offset=offset)
            if whole:
                self.packets.append(packet)
                return packet, len(buf)
            return None, len(buf)
        vc, dt, word = h >> 6 & 3, h & 0x3F, h >> 8
        packet = Packet(vc=vc, dt=dt, data_or_wc=word, ecc_corrected=status == "corrected", offset=offset)
        end = 4 if is_short_dt(dt) else 4 + word + 2
        if len(buf) < end and not whole:
            return None, 0      # parsed again, and counted once, when the rest of the packet arrives
        if status == "corrected":
            self.ecc_corrected += 1
        if is_short_dt(dt):
            return packet, 4
        if len(buf) < end:      # only a whole burst gets here: it ends inside the packet
            self._error("framing_errors", f"packet at byte {offset}: word count {word} but the burst ends "
                                          f"after {len(buf) - 4} bytes")
            packet.payload = bytes(buf[4:])
            packet.crc_ok = False
            return packet, len(buf)
        packet.payload = bytes(buf[4:4 + word])
        packet.crc = buf[4 + word] | buf[5 + word] << 8
        packet.crc_ok = packet.crc == crc16(packet.payload)
        if not packet.crc_ok:
            self._error("crc_errors", f"packet at byte {offset} (vc {vc} dt {dt:#04x} wc {word}): CRC "
                                      f"{packet.crc:#06x}, expected {crc16(packet.payload):#06x}")
        return packet, end

    # ---- framing -----------------------------------------------------------------------------------------
    def _accept(self, p):
        self.packets.append(p)
        vc = p.vc
        where = f"packet at byte {p.offset} (vc {vc} dt {p.dt:#04x})"
        frame = self._open.get(vc)
        if p.dt == FS:
            if frame is not None:
                self._error("framing_errors", f"{where}: FS {p.data} while frame {frame.number} is open (no FE)")
            last = self._last_frame_number.get(vc)
            if last is not None and not (p.data == last == 0 or (last != 0 and p.data in (last + 1, 1))
                                         or (last == 0xFFFF and p.data == 1)):
                self._error("framing_errors", f"{where}: frame number {p.data} follows {last}")
            self._last_frame_number[vc] = p.data
            frame = Frame(vc=vc, number=p.data)
            self._open[vc] = frame
            self._open_line.pop(vc, None)
            self.frames.append(frame)
        elif frame is None:
            # Generic short packets (0x08-0x0F) may come between frames; everything else belongs in one.
            if p.long or p.dt in (FE, LS, LE):
                what = {FE: "FE", LS: "LS", LE: "LE"}.get(p.dt, "long packet")
                self._error("framing_errors", f"{where}: {what} outside a frame")
            return
        if frame is not None:
            p.frame = frame.number
            frame.packets.append(p)
        if p.dt == FE:
            if p.data != frame.number:
                self._error("framing_errors", f"{where}: FE {p.data} closes frame {frame.number}")
            if vc in self._open_line:
                self._error("framing_errors", f"{where}: FE inside line {self._open_line.pop(vc)} (no LE)")
            frame.complete = True
            del self._open[vc]
        elif p.dt == LS:
            if vc in self._open_line:
                self._error("framing_errors", f"{where}: LS {p.data} inside line {self._open_line[vc]} (no LE)")
            self._open_line[vc] = p.data
        elif p.dt == LE:
            line = self._open_line.pop(vc, None)
            if line is None:
                self._error("framing_errors", f"{where}: LE {p.data} without LS")
            elif line != p.data:
                self._error("framing_errors", f"{where}: LE {p.data} closes line {line}")

    def finish(self):
        """Check that nothing is pending: no partial packet, no frame or line left open. Returns self."""
        if self._buffer:
            self._error("framing_errors", f"{len(self._buffer)} bytes of an incomplete packet at the end")
            self._buffer.clear()
        for vc, frame in sorted(self._open.items()):
            self._error("framing_errors", f"vc {vc}: frame {frame.number} never closed by FE")
        self._open.clear()
        self._open_line.clear()
        return self

    # ---- extraction --------------------------------------------------------------------------------------
    def frames_on(self, vc, complete_only=True):
        """The frames seen on virtual channel `vc`."""
        return [f for f in self.frames if f.vc == vc and (f.complete or not complete_only)]

    def tensor_lines(self, vc, dt, complete_only=True):
        """Per frame on `vc`, the list of payloads of its long packets of type `dt` (e.g. one per tensor line)."""
        return [f.payloads(dt) for f in self.frames_on(vc, complete_only)]

    def frame_bytes(self, vc, dt, complete_only=True):
        """Per frame on `vc`, all payload bytes of type `dt` joined together."""
        return [b"".join(lines) for lines in self.tensor_lines(vc, dt, complete_only)]


def decode(data, *, strict=False):
    """Decode a whole capture of back-to-back packets; returns the finished CSI2Decoder."""
    dec = CSI2Decoder(strict=strict)
    dec.feed(data)
    return dec.finish()


# ---- PPI lane merging ------------------------------------------------------------------------------------
def unpack_beat(value, lanes):
    """Split the flat integer of one packetizer output beat (as a Verilog testbench reads it) into
    `(data bytes per lane, strobe, first, last)`. The layout is data (8*lanes bits, lane 0 lowest), strobe
    (lanes bits), first, last, from bit 0 up, as `amaranth.lib.data.StructLayout` packs it."""
    value = int(value)
    data = [(value >> (8 * k)) & 0xFF for k in range(lanes)]
    rest = value >> (8 * lanes)
    strobe = rest & ((1 << lanes) - 1)
    rest >>= lanes
    return data, strobe, rest & 1, (rest >> 1) & 1


def _beat_fields(beat, lanes):
    """Accept a beat as an int, a (data, strobe, first, last) tuple, a mapping, or an object with attributes."""
    if isinstance(beat, int):
        return unpack_beat(beat, lanes)
    if isinstance(beat, tuple):
        data, strobe, first, last = beat
    elif isinstance(beat, dict):
        data, strobe, first, last = beat["data"], beat["strobe"], beat["first"], beat["last"]
    else:
        data, strobe, first, last = beat.data, beat.strobe, beat.first, beat.last
    if isinstance(data, int):
        data = [(data >> (8 * k)) & 0xFF for k in range(lanes)]
    else:
        data = [int(d) for d in data]
    if len(data) != lanes:
        raise ValueError(f"beat has {len(data)} lanes, expected {lanes}")
    return data, int(strobe), int(first), int(last)


def merge_lanes_packets(beats, lanes):
    """Merge PPI beats (byte k of a packet on lane k % lanes) back into one bytes object per packet.

    Checks the beat rules and raises ValueError when broken: `first` on a packet's first beat only, `last` on
    its last, strobe all ones except on a last beat, where it is a run of ones from lane 0.
    """
    packets = []
    current = None
    for n, beat in enumerate(beats):
        data, strobe, first, last = _beat_fields(beat, lanes)
        full = (1 << lanes) - 1
        if first:
            if current is not None:
                raise ValueError(f"beat {n}: first beat of a packet before the previous packet's last beat")
            current = bytearray()
        elif current is None:
            raise ValueError(f"beat {n}: beat outside a packet (no first)")
        if strobe == 0 or strobe & (strobe + 1):
            raise ValueError(f"beat {n}: strobe {strobe:#x} is not a run of ones from lane 0")
        if strobe != full and not last:
            raise ValueError(f"beat {n}: partial strobe {strobe:#x} on a beat that is not a packet's last")
        current += bytes(data[k] for k in range(lanes) if strobe >> k & 1)
        if last:
            packets.append(bytes(current))
            current = None
    if current is not None:
        raise ValueError(f"packet of {len(current)} bytes has no last beat")
    return packets


def merge_lanes(beats, lanes):
    """Merge PPI beats into the byte stream a receiver sees after lane merging (packets back to back)."""
    return b"".join(merge_lanes_packets(beats, lanes))
