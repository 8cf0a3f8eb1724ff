"""CSI-2 packetizer: packet commands and payload bytes in, PPI byte-lane beats (header, payload, CRC-16) out."""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.crc.catalog import CRC16_MCRF4XX
from amaranth.lib.wiring import In, Out

from rtl.streams import byte_stream

from .ecc import header_ecc

__all__ = ["packet_command_layout", "packet_command_stream", "ppi_beat_layout", "ppi_beat_stream",
           "CSI2Packetizer"]

# One packet to send. For a short packet (long=0) `wc` carries the 16-bit data field (frame or line number).
packet_command_layout = data.StructLayout({"long": 1, "vc": 2, "dt": 6, "wc": 16})


def packet_command_stream():
    return stream.Signature(packet_command_layout)


def ppi_beat_layout(lanes):
    """One beat on the PPI: byte k of a packet on lane k % lanes; `strobe` marks the lanes carrying a byte
    (all ones except possibly on a packet's last beat); `first`/`last` mark the packet's first and last beat."""
    return data.StructLayout({
        "data": data.ArrayLayout(8, lanes),
        "strobe": lanes,
        "first": 1,
        "last": 1,
    })


def ppi_beat_stream(lanes):
    return stream.Signature(ppi_beat_layout(lanes))


class CSI2Packetizer(wiring.Component):
    """Build CSI-2 short and long packets and distribute them over `lanes` (1, 2 or 4) PPI byte lanes.

    Each `cmd` transfer is one packet: a short packet (`long` = 0, `wc` = 16-bit data field) is DI, data low,
    data high, ECC; a long packet is DI, WC low, WC high, ECC, then exactly `wc` bytes taken from `payload`,
    then the CRC-16 of those bytes, low byte first. `wc` = 0 sends an empty payload with CRC 0xFFFF.

    Timing: an internal byte engine produces one packet byte per clock with no bubble inside a packet or between
    packets as long as `cmd`/`payload` keep up; the lane packer registers the bytes into beats. With 1 lane, a
    command accepted in cycle t shows its first beat (DI) on `out` in cycle t + 1 and a payload byte accepted in
    cycle t shows on `out` in t + 1. With 2 or 4 lanes a beat is shown once its last lane is filled (or the
    packet ends), so the first beat of a packet appears in cycle t + lanes (t + 4 for a 4-byte short packet),
    and throughput is one byte per clock (a beat every `lanes` clocks): the byte-per-clock `payload` port is
    the limit.

    Back-pressure: `out` is a register stage. While `out.valid` and not `out.ready`, nothing moves; `cmd.ready`
    and `payload.ready` depend combinationally on `out.ready` (never the other way round), so a stall costs no
    bubble when it ends. Nothing is lost or reordered.

    Bad input: the payload's `last` flag must be on the `wc`-th byte of each long packet (`first` is ignored).
    If `last` comes early, `errors` counts one and the packet is padded with zero bytes up to `wc` (the CRC
    covers the zeros, so a receiver sees a well-formed packet); if the `wc`-th byte has no `last`, `errors`
    counts one and the extra payload bytes up to and including the next `last` are consumed and dropped before
    the CRC is sent. So the output always carries exactly `wc` payload bytes and the payload stream
    resynchronizes at the next `last`. `errors` saturates at 0xFFFF.
    """

    def __init__(self, lanes=1):
        if lanes not in (1, 2, 4):
            raise ValueError(f"lanes must be 1, 2 or 4, got {lanes!r}")
        self.lanes = lanes
        super().__init__({
            "cmd": In(packet_command_stream()),
            "payload": In(byte_stream()),
            "out": Out(ppi_beat_stream(lanes)),
            "errors": Out(16),
        })

    @property
    def latency(self):
        """Cycles from a command's acceptance to its first beat on `out` with no stall (any packet type)."""
        return self.lanes

    def elaborate(self, platform):
        m = Module()
        lanes = self.lanes

        m.submodules.crc = crc = CRC16_MCRF4XX(data_width=8).create()

        hdr = Signal(packet_command_layout)
        remaining = Signal(16)                  # payload bytes still to send, including the current one

        # The byte engine's output for this cycle, and whether the lane packer can take it.
        byte = Signal(8)
        byte_valid = Signal()
        byte_first = Signal()
        byte_last = Signal()
        advance = Signal()
        emit = Signal()
        m.d.comb += [
            advance.eq(~self.out.valid | self.out.ready),
            emit.eq(byte_valid & advance),
            crc.data.eq(byte),
        ]

        error = Signal()
        with m.If(error & (self.errors != 0xFFFF)):
            m.d.sync += self.errors.eq(self.errors + 1)

        with m.FSM(name="packet"):
            with m.State("HDR0"):
                # DI straight from the command, so that the next packet follows the previous CRC with no bubble.
                m.d.comb += [
                    byte_valid.eq(self.cmd.valid),
                    byte.eq(Cat(self.cmd.payload.dt, self.cmd.payload.vc)),
                    byte_first.eq(1),
                    self.cmd.ready.eq(advance),
                    crc.start.eq(emit),
                ]
                with m.If(emit):
                    m.d.sync += hdr.eq(self.cmd.payload)
                    m.next = "HDR1"
            with m.State("HDR1"):
                m.d.comb += [byte_valid.eq(1), byte.eq(hdr.wc[0:8])]
                with m.If(emit):
                    m.next = "HDR2"
            with m.State("HDR2"):
                m.d.comb += [byte_valid.eq(1), byte.eq(hdr.wc[8:16])]
                with m.If(emit):
                    m.next = "HDR3"
            with m.State("HDR3"):
                m.d.comb += [
                    byte_valid.eq(1),
                    byte.eq(header_ecc(Cat(hdr.dt, hdr.vc, hdr.wc))),
                    byte_last.eq(~hdr.long),
                ]
                with m.If(emit):
                    m.d.sync += remaining.eq(hdr.wc)
                    with m.If(~hdr.long):
                        m.next = "HDR0"
                    with m.Elif(hdr.wc == 0):
                        m.next = "CRC0"
                    with m.Else():
                        m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                m.d.comb += [
                    byte_valid.eq(self.payload.valid),
                    byte.eq(self.payload.payload.data),
                    self.payload.ready.eq(advance),
                    crc.valid.eq(emit),
                ]
                with m.If(emit):
                    m.d.sync += remaining.eq(remaining - 1)
                    with m.If(remaining == 1):
                        with m.If(self.payload.payload.last):
                            m.next = "CRC0"
                        with m.Else():
                            m.d.comb += error.eq(1)
                            m.next = "DRAIN"
                    with m.Elif(self.payload.payload.last):
                        m.d.comb += error.eq(1)
                        m.next = "PAD"
            with m.State("PAD"):
                # The payload ended early: fill up to wc with zeros (the CRC covers them).
                m.d.comb += [byte_valid.eq(1), byte.eq(0), crc.valid.eq(emit)]
                with m.If(emit):
                    m.d.sync += remaining.eq(remaining - 1)
                    with m.If(remaining == 1):
                        m.next = "CRC0"
            with m.State("DRAIN"):
                # The payload is longer than wc: drop the excess up to its `last`, then close the packet.
                m.d.comb += self.payload.ready.eq(1)
                with m.If(self.payload.valid & self.payload.payload.last):
                    m.next = "CRC0"
            with m.State("CRC0"):
                m.d.comb += [byte_valid.eq(1), byte.eq(crc.crc[0:8])]
                with m.If(emit):
                    m.next = "CRC1"
            with m.State("CRC1"):
                m.d.comb += [byte_valid.eq(1), byte.eq(crc.crc[8:16]), byte_last.eq(1)]
                with m.If(emit):
                    m.next = "HDR0"

        # Lane packer: the output register, filled one lane per emitted byte. A beat is offered once its last
        # lane is filled or the packet ends; `lane` is 0 whenever a beat is on offer, so the byte emitted in the
        # cycle that beat leaves starts the next one.
        out = self.out.payload
        if lanes == 1:
            with m.If(emit):
                m.d.sync += [
                    out.data[0].eq(byte),
                    out.strobe.eq(1),
                    out.first.eq(byte_first),
                    out.last.eq(byte_last),
                    self.out.valid.eq(1),
                ]
            with m.Elif(self.out.ready):
                m.d.sync += self.out.valid.eq(0)
        else:
            lane = Signal(range(lanes))
            with m.If(emit):
                with m.If(lane == 0):
                    m.d.sync += [out.data[0].eq(byte), out.strobe.eq(1), out.first.eq(byte_first)]
                    # Unused lanes read as zero, which keeps captures and waveforms deterministic.
                    m.d.sync += [out.data[k].eq(0) for k in range(1, lanes)]
                for k in range(1, lanes):
                    with m.If(lane == k):
                        m.d.sync += [out.data[k].eq(byte), out.strobe[k].eq(1)]
                done = byte_last | (lane == lanes - 1)
                m.d.sync += [
                    out.last.eq(byte_last),
                    self.out.valid.eq(done),
                    lane.eq(0),
                ]
                with m.If(~done):
                    m.d.sync += lane.eq(lane + 1)
            with m.Elif(self.out.ready):
                m.d.sync += self.out.valid.eq(0)

        return m
