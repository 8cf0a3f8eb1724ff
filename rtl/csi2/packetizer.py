"""CSI-2 packetizer: packet commands and payload bytes in, PPI byte-lane beats (header, payload, CRC-16) out."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.crc.catalog import CRC16_MCRF4XX
from amaranth.lib.wiring import In, Out

from stackcam.rtl.streams import byte_stream

from .crc import CRC_INIT, crc16_update
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
    then the CRC-16 of those bytes, low byte first. `wc` = 0 sends an empty payload with CRC 0xFFFF. Every
    packet starts on lane 0 with `first`; its last beat has `last` and a strobe of ones from lane 0.

    Parameters: `payload_width` is the number of payload bytes per `payload` beat: 1 (a `byte_stream()`, the
    default) or `lanes` (a `ppi_beat_stream(lanes)`: `data`, `strobe`, `first`, `last`; every beat of a packet
    full except the last, which carries the remaining `wc % lanes` bytes, or `lanes`, from lane 0). `blanking` is
    the minimum number of cycles `out` stays idle between the last beat of a packet and the first beat of the
    next (time the PHY needs for EoT/LP/SoT); 0 lets packets follow back to back. Without back-pressure the gap
    is exactly `blanking`, except in the byte-per-clock mode on 2 or 4 lanes, where filling the next packet's
    first beat makes it at least lanes - 1.

    Timing with `payload_width` = 1: a byte engine makes one packet byte per clock with no bubble inside a packet
    or between packets while `cmd`/`payload` keep up; the lane packer registers the bytes into beats. With 1 lane
    a command accepted in cycle t shows its DI in cycle t + 1, and a payload byte accepted in t shows in t + 1.
    With 2 or 4 lanes a beat is shown once its last lane is filled (or the packet ends): the first beat of a
    packet shows in t + lanes, and the rate is one byte per clock, a beat every `lanes` clocks.

    Timing with `payload_width` = `lanes` (2 or 4): full rate, one beat of `lanes` bytes per clock with no bubble
    while the inputs keep up, so a packet takes exactly ceil((wc + 6) / lanes) beats (the CRC shares the last
    payload beat when it fits). A command accepted in cycle t shows its first beat in t + 1; a payload beat
    accepted in t shows in t + 1 (the CRC of a partial last beat is folded in combinationally, not a cycle
    later). `latency` gives the command-to-first-beat delay.

    Back-pressure: `out` is a register stage. While `out.valid` and not `out.ready` nothing moves; `cmd.ready`
    and `payload.ready` depend combinationally on `out.ready` (never the other way round), so a stall costs no
    bubble when it ends. Nothing is lost or reordered. A real D-PHY cannot pause inside an HS burst: `underruns`
    counts the cycles in which a packet has started on `out` but no beat is offered (the payload starved), which
    a PHY would have seen as a broken burst (in the byte-per-clock mode on 2 or 4 lanes that is lanes - 1 of
    every lanes cycles by construction: use `payload_width` = `lanes` to feed a multi-lane PHY at full rate).

    Bad input: the payload's `last` flag must be on the beat holding the `wc`-th byte (`first` is ignored), and in
    wide mode `strobe` must be all ones, or ones for the remaining bytes on that last beat. If `last` comes early,
    `errors` counts one and the packet is padded with zero bytes up to `wc` (the CRC covers the zeros, so the
    receiver sees a well-formed packet); if the `wc`-th byte has no `last`, `errors` counts one and the extra
    payload up to and including the next `last` is consumed and dropped before the next packet starts; a wrong
    strobe counts one and the bytes it leaves out are sent as zeros. So the output always carries exactly `wc`
    payload bytes, and the payload stream resynchronizes at the next `last`. Both counters saturate at 0xFFFF.
    """

    def __init__(self, lanes=1, *, payload_width=1, blanking=0):
        if lanes not in (1, 2, 4):
            raise ValueError(f"lanes must be 1, 2 or 4, got {lanes!r}")
        if payload_width not in (1, lanes):
            raise ValueError(f"payload_width must be 1 or lanes ({lanes}), got {payload_width!r}")
        if not isinstance(blanking, int) or blanking < 0:
            raise ValueError(f"blanking must be a non-negative number of cycles, got {blanking!r}")
        self.lanes = lanes
        self.payload_width = payload_width
        self.blanking = blanking
        super().__init__({
            "cmd": In(packet_command_stream()),
            "payload": In(byte_stream() if payload_width == 1 else ppi_beat_stream(lanes)),
            "out": Out(ppi_beat_stream(lanes)),
            "errors": Out(16),
            "underruns": Out(16),
        })

    @property
    def latency(self):
        """Cycles from a command's acceptance to its first beat on `out` with no stall (any packet type)."""
        return self.lanes if self.payload_width == 1 else 1

    def elaborate(self, platform):
        m = Module()

        # Shared by both engines: `advance` says the output register can take a beat (or byte) this cycle;
        # the engine raises `error` for one cycle per bad-input event and `packet_end` when a packet's final
        # beat (or byte) enters the output register; `gap_ok` allows a new packet to start.
        advance = Signal()
        error = Signal()
        packet_end = Signal()
        gap_ok = Signal()
        m.d.comb += advance.eq(~self.out.valid | self.out.ready)

        with m.If(error & (self.errors != 0xFFFF)):
            m.d.sync += self.errors.eq(self.errors + 1)

        # In the byte-per-clock mode the lane packer already keeps `out` idle for lanes - 1 cycles while it
        # fills the next packet's first beat; those count toward the blanking.
        hold = self.blanking - (self.lanes - 1 if self.payload_width == 1 else 0)
        if hold > 0:
            # Counts only while the output register is empty or emptying, so a stalled last beat does not eat
            # into the blanking the PHY gets after it.
            gap = Signal(range(hold + 1))
            with m.If(packet_end):
                m.d.sync += gap.eq(hold)
            with m.Elif((gap != 0) & advance):
                m.d.sync += gap.eq(gap - 1)
            m.d.comb += gap_ok.eq(gap == 0)
        else:
            m.d.comb += gap_ok.eq(1)

        in_burst = Signal()
        with m.If(self.out.valid & self.out.ready):
            m.d.sync += in_burst.eq(~self.out.payload.last)
        with m.If(in_burst & ~self.out.valid & (self.underruns != 0xFFFF)):
            m.d.sync += self.underruns.eq(self.underruns + 1)

        if self.payload_width == 1:
            self._elaborate_bytes(m, advance, error, packet_end, gap_ok)
        else:
            self._elaborate_wide(m, advance, error, packet_end, gap_ok)
        return m

    def _elaborate_bytes(self, m, advance, error, packet_end, gap_ok):
        """One byte per clock through a byte-serial engine, packed into `lanes`-byte beats."""
        lanes = self.lanes
        m.submodules.crc = crc = CRC16_MCRF4XX(data_width=8).create()

        hdr = Signal(packet_command_layout)
        remaining = Signal(16)                  # payload bytes still to send, including the current one

        # The byte engine's output for this cycle, and whether the lane packer takes it.
        byte = Signal(8)
        byte_valid = Signal()
        byte_first = Signal()
        byte_last = Signal()
        emit = Signal()
        m.d.comb += [
            emit.eq(byte_valid & advance),
            crc.data.eq(byte),
            packet_end.eq(emit & byte_last),
        ]

        with m.FSM(name="packet"):
            with m.State("HDR0"):
                # DI straight from the command, so that the next packet follows the previous CRC with no bubble.
                m.d.comb += [
                    byte_valid.eq(self.cmd.valid & gap_ok),
                    byte.eq(Cat(self.cmd.payload.dt, self.cmd.payload.vc)),
                    byte_first.eq(1),
                    self.cmd.ready.eq(advance & gap_ok),
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

    def _elaborate_wide(self, m, advance, error, packet_end, gap_ok):
        """One `lanes`-byte beat per clock: header beats, payload beats (the last one carrying as much of the
        CRC as fits), then at most one spill beat with the rest of the CRC."""
        W = self.lanes
        full = (1 << W) - 1
        hdr = Signal(packet_command_layout)
        remaining = Signal(16)                  # payload bytes still to send
        crc_state = Signal(16, init=CRC_INIT)  # CRC of the payload bytes sent so far (as sent, reflected)
        crc_hold = Signal(16)                   # the final CRC, for the spill beat
        spill_two = Signal()                    # the spill beat carries both CRC bytes (else only the high one)
        drain_after = Signal()                  # the payload overran wc: drop the excess after this packet

        beat = Signal(ppi_beat_layout(W))
        beat_valid = Signal()
        emit = Signal()
        m.d.comb += [emit.eq(beat_valid & advance), packet_end.eq(emit & beat.last)]

        # Header bytes, from the command itself on the first header beat (no bubble after the previous packet)
        # and from the latched copy after it.
        hsrc = Signal(packet_command_layout)
        m.d.comb += hsrc.eq(hdr)
        header = [Cat(hsrc.dt, hsrc.vc), hsrc.wc[0:8], hsrc.wc[8:16], header_ecc(Cat(hsrc.dt, hsrc.vc, hsrc.wc))]

        # Payload beat (or zero padding): `count` bytes of it belong to the packet, the rest of a last beat is
        # where the CRC goes. Bytes outside the strobe or beyond wc are zeroed before the CRC sees them.
        pad = Signal()
        is_last = Signal()
        count = Signal(range(W + 1))
        m.d.comb += [
            is_last.eq(remaining <= W),
            count.eq(Mux(is_last, remaining, W)),
        ]
        in_count = Signal(W)
        m.d.comb += in_count.eq(Cat(count > j for j in range(W)))
        pbytes = [Signal(8, name=f"pbyte{j}") for j in range(W)]
        for j in range(W):
            m.d.comb += pbytes[j].eq(Mux(~pad & in_count[j] & self.payload.payload.strobe[j],
                                         self.payload.payload.data[j], 0))
        # Not amaranth's crc.Processor here: it folds a fixed word width and registers its result, but the last
        # beat folds 1 to `lanes` bytes and its CRC must ride in that same beat. crc16_update is the same catalog
        # algorithm as combinational logic; the running value lives in `crc_state`.
        crc_next = Signal(16)
        m.d.comb += crc_next.eq(crc16_update(crc_state, pbytes))
        for k in range(1, W):
            with m.If(count == k):
                m.d.comb += crc_next.eq(crc16_update(crc_state, pbytes[:k]))
        payload_beat = Signal(ppi_beat_layout(W))
        for j in range(W):
            with m.If(~is_last | in_count[j]):
                m.d.comb += payload_beat.data[j].eq(pbytes[j])
            with m.Elif(count == j):
                m.d.comb += payload_beat.data[j].eq(crc_next[0:8])
            if j > 0:
                with m.Elif(count == j - 1):
                    m.d.comb += payload_beat.data[j].eq(crc_next[8:16])
        spill = Signal()                        # the CRC does not fit in the last payload beat
        m.d.comb += [
            spill.eq(count > W - 2),
            payload_beat.strobe.eq(Mux(is_last, Cat(count + 2 > j for j in range(W)), full)),
            payload_beat.last.eq(is_last & ~spill),
        ]

        with m.FSM(name="packet"):
            for h in range(4 // W):
                with m.State(f"HDR{h}"):
                    m.d.comb += [
                        beat.data[j].eq(header[h * W + j]) for j in range(W)
                    ]
                    m.d.comb += [beat.strobe.eq(full), beat.first.eq(h == 0)]
                    if h == 0:
                        m.d.comb += [
                            hsrc.eq(self.cmd.payload),
                            beat_valid.eq(self.cmd.valid & gap_ok),
                            self.cmd.ready.eq(advance & gap_ok),
                        ]
                        with m.If(emit):
                            m.d.sync += hdr.eq(self.cmd.payload)
                    else:
                        m.d.comb += beat_valid.eq(1)
                    if h < 4 // W - 1:
                        with m.If(emit):
                            m.next = f"HDR{h + 1}"
                    else:
                        m.d.comb += beat.last.eq(~hsrc.long)
                        with m.If(emit):
                            m.d.sync += [remaining.eq(hsrc.wc), crc_state.eq(CRC_INIT)]
                            with m.If(~hsrc.long):
                                m.next = "HDR0"
                            with m.Elif(hsrc.wc == 0):
                                m.d.sync += [crc_hold.eq(CRC_INIT), spill_two.eq(1), drain_after.eq(0)]
                                m.next = "SPILL"
                            with m.Else():
                                m.next = "PAYLOAD"
            for state in ("PAYLOAD", "PAD"):
                with m.State(state):
                    m.d.comb += beat.eq(payload_beat)
                    if state == "PAYLOAD":
                        p = self.payload.payload
                        m.d.comb += [
                            beat_valid.eq(self.payload.valid),
                            self.payload.ready.eq(advance),
                            error.eq(emit & ((p.last != is_last) | (p.strobe != Mux(is_last, in_count, full)))),
                        ]
                        overrun = ~p.last
                        underrun = p.last & ~is_last
                    else:
                        m.d.comb += [pad.eq(1), beat_valid.eq(1)]
                        overrun = underrun = Const(0)
                    with m.If(emit):
                        m.d.sync += [crc_state.eq(crc_next), remaining.eq(remaining - count)]
                        with m.If(is_last):
                            m.d.sync += [crc_hold.eq(crc_next), spill_two.eq(count == W), drain_after.eq(overrun)]
                            with m.If(spill):
                                m.next = "SPILL"
                            with m.Elif(overrun):
                                m.next = "DRAIN"
                            with m.Else():
                                m.next = "HDR0"
                        with m.Elif(underrun):
                            m.next = "PAD"
            with m.State("SPILL"):
                m.d.comb += [
                    beat_valid.eq(1),
                    beat.data[0].eq(Mux(spill_two, crc_hold[0:8], crc_hold[8:16])),
                    beat.data[1].eq(Mux(spill_two, crc_hold[8:16], 0)),
                    beat.strobe.eq(Cat(Const(1), spill_two)),
                    beat.last.eq(1),
                ]
                with m.If(emit):
                    with m.If(drain_after):
                        m.next = "DRAIN"
                    with m.Else():
                        m.next = "HDR0"
            with m.State("DRAIN"):
                # The payload overran wc: drop it up to its `last` so the next packet starts in step.
                m.d.comb += self.payload.ready.eq(1)
                with m.If(self.payload.valid & self.payload.payload.last):
                    m.next = "HDR0"

        with m.If(emit):
            m.d.sync += [self.out.payload.eq(beat), self.out.valid.eq(1)]
        with m.Elif(self.out.ready):
            m.d.sync += self.out.valid.eq(0)
