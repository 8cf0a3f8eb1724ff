"""Store-and-forward line FIFO in front of the CSI-2 packetizer: a line leaves only once it is complete, so a
long packet, once started, never underruns."""

from math import lcm

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .packetizer import ppi_beat_stream

__all__ = ["line_write_layout", "line_write_stream", "LineBuffer"]


def line_write_layout(in_bytes):
    """One write beat of a line: `in_bytes` bytes, all valid; `last` on the line's final beat."""
    return data.StructLayout({"data": data.ArrayLayout(8, in_bytes), "last": 1})


def line_write_stream(in_bytes):
    return stream.Signature(line_write_layout(in_bytes))


def _select(m, index, items):
    """items[index] as a signal. Not an `Array`: for a count that is not a power of two Yosys writes that as a
    case statement without a default, which Verilator flags; this gives item 0 as the default."""
    result = Signal(len(items[0]))
    m.d.comb += result.eq(items[0])
    for k in range(1, len(items)):
        with m.If(index == k):
            m.d.comb += result.eq(items[k])
    return result


class LineBuffer(wiring.Component):
    """Line FIFO of `lines` slots of up to `max_line_bytes` bytes: `in_bytes` bytes per beat in on `w`, `lanes` bytes
    per beat out on `r` (a `ppi_beat_stream(lanes)`, the packetizer's wide payload).

    A line is offered on `r` only once its last beat has been written. Its bytes then leave at `lanes` per beat,
    byte k of the line on lane k % lanes, with `first` on its first beat, `last` on its last, `strobe` all ones
    except on a partial last beat (ones from lane 0); bytes outside the strobe read as zero. Every line starts on
    lane 0. `lines_ready` counts complete lines whose first beat has not been taken on `r` (a line preloaded into
    the `r` register still counts); `next_len` is the byte length of the oldest of them (valid while
    `lines_ready` > 0), which is what a sequencer puts in the packet header.

    Storage: one `Memory` of `lines * ceil(max_line_bytes / word)` words of `word = lcm(in_bytes, lanes)` bytes
    (byte write enables), a fixed slot per line, so a write beat never straddles a word and a read beat never
    straddles a word either; each line starts a word.

    Latency: the last beat of a line written in cycle t makes `lines_ready` count it in t + 1 and, if `r` is
    idle, its first beat valid in t + 2 (`latency` = 2). Then one beat per clock with no bubble inside a line,
    nor between lines that are already complete, while `r.ready` is high.

    Back-pressure: `r` is a register stage; while `r.valid` and not `r.ready` it holds its beat. `w.ready` is low
    exactly while all `lines` slots hold a line (complete, or being read); a slot frees in the cycle after the
    last beat of its line enters the `r` register. `w.ready` never depends on `w.valid` nor on `r.ready` in the
    same cycle; `r.valid` never depends on `r.ready`.

    Bad input: a line longer than `max_line_bytes` is truncated to the whole beats that fit (the rest of its
    beats, up to its `last`, are accepted and dropped) and delivered with that shorter length; `errors` counts
    one per such line (saturating at 0xFFFF). Other lines are never touched.
    """

    def __init__(self, in_bytes, lanes, max_line_bytes, lines=2):
        for name, value in (("in_bytes", in_bytes), ("max_line_bytes", max_line_bytes), ("lines", lines)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"LineBuffer: {name} must be a positive integer, got {value!r}")
        if lanes not in (1, 2, 4):
            raise ValueError(f"LineBuffer: lanes must be 1, 2 or 4, got {lanes!r}")
        if not in_bytes <= max_line_bytes <= 0xFFFF:
            raise ValueError(f"LineBuffer: max_line_bytes must be in {in_bytes}..65535 (one beat to a 16-bit "
                             f"word count), got {max_line_bytes}")
        self.in_bytes = in_bytes
        self.lanes = lanes
        self.max_line_bytes = max_line_bytes
        self.lines = lines
        super().__init__({
            "w": In(line_write_stream(in_bytes)),
            "r": Out(ppi_beat_stream(lanes)),
            "lines_ready": Out(range(lines + 1)),
            "next_len": Out(16),
            "errors": Out(16),
        })

    @property
    def latency(self):
        """Cycles from the transfer of a line's last write beat to its first beat being valid on an idle `r`."""
        return 2

    @property
    def word_bytes(self):
        return lcm(self.in_bytes, self.lanes)

    @property
    def words_per_line(self):
        return -(-self.max_line_bytes // self.word_bytes)

    def elaborate(self, platform):
        m = Module()
        ib, L, N = self.in_bytes, self.lanes, self.lines
        W = self.word_bytes
        wpl = self.words_per_line
        depth = N * wpl
        subs_w = W // ib                     # write beats per word
        subs_r = W // L                      # read beats per word
        full = (1 << L) - 1

        m.submodules.mem = mem = Memory(shape=unsigned(8 * W), depth=depth, init=[])
        wp = mem.write_port(granularity=8)
        # Never transparent: the reader only reads complete lines, which the writer never touches.
        rp = mem.read_port(domain="sync")

        lens = [Signal(16, name=f"len{i}") for i in range(N)]
        lens_last = [Signal(init=1, name=f"len_last{i}") for i in range(N)]    # lens[i] <= L: a one-beat line
        used = Signal(range(N + 1))          # slots holding a complete line or the line being read
        line_done = Signal()                 # a line's last write beat is taken this cycle
        line_start = Signal()                # a line's first beat enters the `r` register this cycle
        line_freed = Signal()                # a line's last beat enters the `r` register this cycle
        error = Signal()

        def ring_next(slot, base):
            # Advance a slot index and its base word address together, so no multiplier is needed.
            return [slot.eq(Mux(slot == N - 1, 0, slot + 1)), base.eq(Mux(slot == N - 1, 0, base + wpl))]

        # ---- Write side ----
        wslot = Signal(range(N))
        wbase = Signal(range(depth))
        wword = Signal(range(max(wpl, 2)))
        wsub = Signal(range(max(subs_w, 2)))
        wlen = Signal(16)
        overflow = Signal()                  # this line has already lost beats
        take = Signal()
        fits = Signal()
        # wlen + ib <= max_line_bytes, kept as a register with wlen (a new line's first beat always fits).
        fits_r = Signal(init=1)
        beat = self.w.payload
        m.d.comb += [
            self.w.ready.eq(used < N),
            take.eq(self.w.valid & self.w.ready),
            fits.eq(fits_r),
            wp.addr.eq(wbase + wword),
            # Every write position in the word sees the beat; the byte enables pick the one that is written.
            wp.data.eq(Cat(*([beat.data.as_value()] * subs_w))),
        ]
        beat_en = (1 << ib) - 1
        with m.If(take & fits):
            if subs_w == 1:
                m.d.comb += wp.en.eq(beat_en)
            else:
                for k in range(subs_w):
                    with m.If(wsub == k):
                        m.d.comb += wp.en.eq(beat_en << (k * ib))
        with m.If(take):
            with m.If(fits):
                m.d.sync += [wlen.eq(wlen + ib), fits_r.eq(wlen + 2 * ib <= self.max_line_bytes)]
                if subs_w > 1:
                    with m.If(wsub == subs_w - 1):
                        m.d.sync += [wsub.eq(0), wword.eq(wword + 1)]
                    with m.Else():
                        m.d.sync += wsub.eq(wsub + 1)
                else:
                    m.d.sync += wword.eq(wword + 1)
            with m.Else():
                m.d.sync += overflow.eq(1)
            with m.If(beat.last):
                m.d.comb += [line_done.eq(1), error.eq(overflow | ~fits)]
                # One comparison per slot rather than an indexed write: Yosys writes the latter as a case
                # statement without a default, which Verilator flags.
                for i in range(N):
                    with m.If(wslot == i):
                        m.d.sync += [lens[i].eq(Mux(fits, wlen + ib, wlen)),
                                     lens_last[i].eq(Mux(fits, wlen + ib, wlen) <= L)]
                m.d.sync += [
                    wlen.eq(0), fits_r.eq(1), wword.eq(0), wsub.eq(0), overflow.eq(0),
                    *ring_next(wslot, wbase),
                ]

        with m.If(error & (self.errors != 0xFFFF)):
            m.d.sync += self.errors.eq(self.errors + 1)

        # ---- Read side ----
        # The cursor names the next beat to load into the `r` register: a line in progress (`active`), else the
        # first beat of the oldest complete line.
        rslot = Signal(range(N))             # slot of the oldest complete line not yet started
        rbase = Signal(range(depth))
        active = Signal()
        raddr = Signal(range(depth))
        rsub = Signal(range(max(subs_r, 2)))
        rrem = Signal(16)                    # bytes of the line from the cursor on
        rrem_last = Signal(init=1)           # rrem <= L: the cursor's beat is its line's last
        # Internal view: complete lines whose first beat has not yet been loaded into the `r` register. The
        # ports count a line as started only once its first beat is *taken* on `r`, so a sequencer that
        # waits for `lines_ready` before asking for the line sees a line preloaded in `r` too.
        n_ready = Signal(range(self.lines + 1))
        n_len = Signal(16)
        r_len = Signal(16)                   # length of the line whose first beat is in the `r` register
        m.d.comb += n_len.eq(_select(m, rslot, lens))

        ld_valid = Signal()
        ld_addr = Signal(range(depth))
        ld_sub = Signal(range(max(subs_r, 2)))
        ld_rem = Signal(16)
        ld_first = Signal()
        ld_last = Signal()
        load = Signal()
        with m.If(active):
            m.d.comb += [ld_valid.eq(1), ld_addr.eq(raddr), ld_sub.eq(rsub), ld_rem.eq(rrem)]
        with m.Elif(n_ready != 0):
            m.d.comb += [ld_valid.eq(1), ld_addr.eq(rbase), ld_sub.eq(0), ld_rem.eq(n_len),
                         ld_first.eq(1)]
        m.d.comb += [
            # ld_rem <= L, from the registers kept with rrem and the lengths (0 when nothing is to load).
            ld_last.eq(Mux(active, rrem_last, Mux(n_ready != 0, _select(m, rslot, lens_last), 1))),
            load.eq(ld_valid & (~self.r.valid | self.r.ready)),
            rp.addr.eq(ld_addr),
            # The read port keeps its word while the beats of that word leave; it reads on a word's first beat.
            rp.en.eq(load & (ld_sub == 0)),
            line_start.eq(load & ld_first),
            line_freed.eq(load & ld_last),
        ]

        # Which byte of the held word each lane shows, one-hot, zero outside the strobe (lane j byte s at bit
        # j * subs_r + s): registered with the beat, so the read data passes one AND-OR level to `r`.
        lane_sel = Signal(L * subs_r)
        out = self.r.payload
        strobe = Signal(L)
        m.d.comb += strobe.eq(Mux(ld_last, Cat(ld_rem[:3] > j for j in range(L)), full))   # last: ld_rem <= L
        with m.If(load):
            m.d.sync += [
                self.r.valid.eq(1),
                lane_sel.eq(Cat(strobe[j] & (ld_sub == s) for j in range(L) for s in range(subs_r))),
                out.first.eq(ld_first),
                out.last.eq(ld_last),
                out.strobe.eq(strobe),
                active.eq(~ld_last),
                rrem.eq(ld_rem - L),
                rrem_last.eq((ld_rem - L)[:16] <= L),
            ]
            if subs_r > 1:
                with m.If(ld_sub == subs_r - 1):
                    m.d.sync += [rsub.eq(0), raddr.eq(ld_addr + 1)]
                with m.Else():
                    m.d.sync += [rsub.eq(ld_sub + 1), raddr.eq(ld_addr)]
            else:
                m.d.sync += raddr.eq(ld_addr + 1)
            with m.If(ld_first):
                m.d.sync += [*ring_next(rslot, rbase), r_len.eq(ld_rem)]
        with m.Elif(self.r.ready):
            m.d.sync += self.r.valid.eq(0)

        # The beat on offer: lanes of the held word, selected by its position in the word.
        for j in range(L):
            byte = 0
            for s in range(subs_r):
                byte = byte | (rp.data.word_select(s * L + j, 8) & lane_sel[j * subs_r + s].replicate(8))
            m.d.comb += out.data[j].eq(byte)

        m.d.sync += [
            used.eq(used + line_done - line_freed),
            n_ready.eq(n_ready + line_done - line_start),
        ]
        pending_first = self.r.valid & out.first
        m.d.comb += [
            self.lines_ready.eq(n_ready + pending_first),
            self.next_len.eq(Mux(pending_first, r_len, n_len)),
        ]
        return m
