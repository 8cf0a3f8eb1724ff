"""Frame-to-line packers for the CSI-2 line buffer: RAW10 image lines and int8 tensor rows, always exactly the
configured number of lines of the configured length per frame, whatever the input does."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from stackcam.rtl.streams import pixel_beat_stream, tensor_pixel_stream

from .linebuffer import line_write_stream

__all__ = ["RAW10LinePacker", "TensorLinePacker"]

# Packer states: between frames, receiving a frame, making up the rest of a line or frame with zeros.
_IDLE, _RUN, _PAD = 0, 1, 2


def _count_error(m, errors, event):
    with m.If(event & (errors != 0xFFFF)):
        m.d.sync += errors.eq(errors + 1)


def _frame_done_pulse(m, frame_done, *events):
    """Register `frame_done` as one pulse per event; events that coincide come out on consecutive cycles
    (a disabled frame can end in the cycle an enabled frame's last line leaves)."""
    owed = Signal(2)
    total = Signal(3)
    m.d.comb += total.eq(owed + sum(events))
    m.d.sync += [frame_done.eq(total != 0), owed.eq(total - (total != 0))]


class RAW10LinePacker(wiring.Component):
    """Pack the RAW10 readout (`config.pixels_per_clock` pixels per beat) into 5-byte CSI-2 RAW10 groups: per
    4 pixels their 4 high bytes (pixel >> 2), then one byte of the four low 2-bit pairs, pixel 0 in the lowest
    bits. `out` matches `LineBuffer(in_bytes=5).w`; `last` is on the group ending each line.

    Contract: every frame gives exactly `frame_height` lines of `frame_width // 4` groups (`frame_width * 5 // 4`
    bytes). Geometry comes from counters; the markers only delimit. A frame starts at a beat with
    `frame_first`; `enable` is sampled there (0: the frame is consumed and tracked, nothing is sent).

    Latency: the beat completing a group, accepted in cycle t, shows that group on `out` in t + 1 (`latency`).
    One group per clock at most, so P = 1, 2 and 4 keep up at full rate (P = 4: one group per beat).

    Back-pressure: `out` is a register stage; `pixels.ready` follows `~out.valid | out.ready` combinationally
    and is also low while padding, while `abort` is high, and for a beat that must wait until the frame or line
    before it has been padded (below). `out.valid` never depends on `out.ready`.

    Bad input (each counts one in `errors`, saturating, at most one per cycle):
    - a short line (`line_last` before `frame_width` pixels): zero pixels pad it;
    - pixels beyond `frame_width` before `line_last`: consumed and dropped (one error per line);
    - a `line_first` beat in the middle of a line (a missing `line_last`): the line is padded, then the beat
      starts the next line;
    - `frame_last` early: the rest of its line and the remaining lines are padded (one error);
    - `frame_first` inside a frame (a missing end of frame): the old frame is padded to completion, then the
      beat starts the new frame;
    - `abort` during a frame (a one-cycle pulse; ignored between frames, while the rest of a frame is already
      being padded, and while padding a short last line): the frame's remaining lines are padded and the rest
      of its beats dropped quietly up to the next `frame_first`;
    - beats outside a frame (before a `frame_first`): consumed and dropped, one error per run of such beats.
    A frame whose last line ends without `frame_last` is complete and not an error; what follows it before the
    next `frame_first` is a run of stray beats. Padding makes one group per clock (while `out` accepts).

    Status: `in_frame` is high from the beat with `frame_first` until the frame's last line is made (sent or
    padded; a longer input last line keeps it high until its `line_last`). `frame_done` is a one-cycle pulse in
    the cycle after the frame's last group is taken from `out`, or after the frame's last line is counted when
    the frame is not enabled.
    """

    def __init__(self, config):
        self.config = config
        super().__init__({
            "pixels": In(pixel_beat_stream(config.pixels_per_clock)),
            "out": Out(line_write_stream(5)),
            "enable": In(1, init=1),
            "abort": In(1),
            "in_frame": Out(1),
            "frame_done": Out(1),
            "errors": Out(16),
        })

    @property
    def latency(self):
        """Cycles from accepting the beat that completes a group to that group being valid on `out`."""
        return 1

    @property
    def line_bytes(self):
        return self.config.frame_width * 5 // 4

    def elaborate(self, platform):
        m = Module()
        W, H, P = self.config.frame_width, self.config.frame_height, self.config.pixels_per_clock
        slots = 4 // P                       # beats per group

        state = Signal(range(3))
        x = Signal(range(W + 1))             # pixels of the current line so far (stops at W)
        y = Signal(range(max(H, 2)))         # current line
        acc = Signal(data.ArrayLayout(10, 4))  # the group being filled; zero beyond x % 4
        en = Signal()                        # `enable` sampled at this frame's start
        long_line = Signal()                 # this line's extra pixels are already counted
        stray = Signal()                     # a run of stray beats is already counted
        quiet = Signal()                     # dropping the rest of an aborted frame
        pad_frame = Signal()                 # PAD runs to the end of the frame (else to the end of the line)
        quiet_after = Signal()               # after PAD, drop beats quietly up to the next frame_first
        out_frame_end = Signal()             # the group in the `out` register ends its frame
        error = Signal()
        m.d.comb += self.in_frame.eq(state != _IDLE)

        advance = Signal()
        m.d.comb += advance.eq(~self.out.valid | self.out.ready)

        # The group made this cycle, if any.
        gen = Signal()
        gen_pix = Signal(data.ArrayLayout(10, 4))
        gen_last = Signal()
        gen_frame_end = Signal()
        m.d.comb += gen_frame_end.eq(gen_last & (y == H - 1))

        # A beat that starts a frame from IDLE is processed in that same cycle: the counters are already zero
        # between frames, and its `enable` comes straight from the port.
        start = Signal()
        c_en = Signal()
        m.d.comb += c_en.eq(Mux(start, self.enable, en))

        def finish_line(pad_more, quiet_next):
            """The current line is complete: move to the next, or end the frame after the last."""
            m.d.sync += [x.eq(0), long_line.eq(0)]
            with m.If(y == H - 1):
                m.d.sync += [y.eq(0), state.eq(_IDLE), quiet.eq(quiet_next), stray.eq(0)]
            with m.Else():
                m.d.sync += [y.eq(y + 1), state.eq(Mux(pad_more, _PAD, _RUN))]

        beat = self.pixels.payload
        is_run = state == _RUN
        # A beat that must wait: it starts a frame or a line while the current one is incomplete.
        resync = Signal()
        m.d.comb += resync.eq(is_run & (beat.frame_first | (beat.line_first & (x != 0))))
        m.d.comb += self.pixels.ready.eq(advance & (state != _PAD) & ~(is_run & self.abort) & ~resync)
        take = Signal()
        m.d.comb += take.eq(self.pixels.valid & self.pixels.ready)

        with m.If(state == _IDLE):
            with m.If(take):
                with m.If(beat.frame_first):
                    m.d.comb += start.eq(1)
                    m.d.sync += [en.eq(self.enable), quiet.eq(0), stray.eq(0), state.eq(_RUN)]
                with m.Else():
                    m.d.comb += error.eq(~quiet & ~stray)
                    m.d.sync += stray.eq(1)

        with m.If(is_run):
            with m.If(self.abort):
                m.d.comb += error.eq(1)
                m.d.sync += [pad_frame.eq(1), quiet_after.eq(1), state.eq(_PAD)]
            with m.Elif(self.pixels.valid & advance & resync):
                m.d.comb += error.eq(1)
                m.d.sync += [pad_frame.eq(beat.frame_first), quiet_after.eq(0), state.eq(_PAD)]

        # A beat of the frame (its first one included).
        with m.If(take & (is_run | start)):
            x_next = Signal(range(W + P + 1))
            m.d.comb += x_next.eq(x + P)
            with m.If(x < W):
                new_acc = Signal(data.ArrayLayout(10, 4))
                m.d.comb += new_acc.eq(acc)
                m.d.sync += x.eq(x_next)
                if slots == 1:
                    # P = 4: every beat is a whole group. (No constant conditions: Yosys would write them as
                    # overlapping case items, which Verilator flags.)
                    m.d.comb += [new_acc[i].eq(beat.pixels[i]) for i in range(4)]
                    m.d.comb += [gen.eq(1), gen_pix.eq(new_acc), gen_last.eq(x_next == W)]
                else:
                    slot = x[0:2] // P
                    for k in range(slots):
                        with m.If(slot == k):
                            m.d.comb += [new_acc[k * P + i].eq(beat.pixels[i]) for i in range(P)]
                    with m.If(slot == slots - 1):
                        m.d.comb += [gen.eq(1), gen_pix.eq(new_acc), gen_last.eq(x_next == W)]
                        m.d.sync += acc.eq(0)
                    with m.Else():
                        m.d.sync += acc.eq(new_acc)
            with m.Else():
                m.d.comb += error.eq(~long_line)
                m.d.sync += long_line.eq(1)
            with m.If(beat.line_last | beat.frame_last):
                # x_next counts pixels of this line whether or not they were kept.
                with m.If(x_next < W):
                    m.d.comb += error.eq(1)
                    m.d.sync += [pad_frame.eq(beat.frame_last), quiet_after.eq(0), state.eq(_PAD)]
                with m.Else():
                    with m.If(beat.frame_last & (y != H - 1)):
                        m.d.comb += error.eq(1)
                        m.d.sync += [pad_frame.eq(1), quiet_after.eq(0)]
                    finish_line(beat.frame_last, 0)

        with m.If(state == _PAD):
            # An abort while padding only a line widens the padding to the whole frame, unless that line is the
            # frame's last (then the frame is already complete at the input, as if the padding had finished).
            pf, qa = Signal(), Signal()
            late_abort = self.abort & ~pad_frame & (y != H - 1)
            m.d.comb += [pf.eq(pad_frame | late_abort), qa.eq(quiet_after | late_abort), error.eq(late_abort)]
            m.d.sync += [pad_frame.eq(pf), quiet_after.eq(qa)]
            with m.If(advance):
                with m.If(x < W):
                    x_group = Signal(range(W + 1))
                    m.d.comb += x_group.eq(Cat(Const(0, 2), x[2:] + 1))
                    m.d.comb += [gen.eq(1), gen_pix.eq(acc), gen_last.eq(x_group == W)]
                    m.d.sync += [acc.eq(0), x.eq(x_group)]
                    with m.If(x_group == W):
                        finish_line(pf, qa)
                with m.Else():
                    finish_line(pf, qa)

        out = self.out.payload
        with m.If(gen & c_en):
            m.d.sync += [
                *[out.data[i].eq(gen_pix[i][2:10]) for i in range(4)],
                out.data[4].eq(Cat(gen_pix[i][0:2] for i in range(4))),
                out.last.eq(gen_last),
                out_frame_end.eq(gen_frame_end),
                self.out.valid.eq(1),
            ]
        with m.Elif(self.out.ready):
            m.d.sync += self.out.valid.eq(0)

        _count_error(m, self.errors, error)
        _frame_done_pulse(m, self.frame_done, self.out.valid & self.out.ready & out_frame_end,
                          gen & ~c_en & gen_frame_end)
        return m


class TensorLinePacker(wiring.Component):
    """Serialize an int8 HWC tensor (`width` x `height` pixels of `channels`, raster order, `first`/`last` on
    its first and last pixel) into 1-byte beats for `LineBuffer(in_bytes=1).w`: each pixel's channels in order
    (the int8 bits as bytes), `last` on the final byte of each tensor row (`width * channels` bytes).

    Contract: every tensor gives exactly `height` rows of `width * channels` bytes. A tensor starts at a pixel
    with `first`; `enable` is sampled there (0: the tensor is consumed and tracked, nothing is sent).

    Latency: a pixel accepted in cycle t shows its channel k on `out` in t + 1 + k (`latency` = 1). One byte per
    clock with no bubble between pixels, so a pixel every `channels` clocks.

    Back-pressure: `out` is a register stage. `pixels.ready` follows `~out.valid | out.ready` combinationally
    and is low while a pixel's channels 1.. are being sent, while padding, while `abort` is high during a
    tensor, and for a `first` pixel that must wait until the tensor before it has been padded. `out.valid` never
    depends on `out.ready`.

    Bad input (each counts one in `errors`, saturating, at most one per cycle):
    - `last` early: the pixel is sent, then zero bytes pad the rest of the tensor;
    - `first` inside a tensor (one cut short: the source restarted): the rows already sent stay sent and the
      cut tensor is padded with zero bytes to `height` rows, then the pixel starts the new tensor;
    - `abort` during a tensor (a one-cycle pulse; ignored between tensors, while padding and once the final
      pixel is in): the tensor is padded and the rest of its pixels dropped quietly up to the next `first`;
    - pixels outside a tensor (before a `first`): consumed and dropped, one error per run of such pixels.
    A tensor whose final pixel lacks `last` is complete and not an error; pixels after it before the next
    `first` are a stray run. Padding makes one byte per clock (while `out` accepts).

    Status: `in_frame` is high from the `first` pixel until the tensor's last byte is made. `frame_done` is a
    one-cycle pulse in the cycle after the tensor's last byte is taken from `out`, or after its last byte is
    counted when the tensor is not enabled.
    """

    def __new__(cls, width, height, channels=3, **kwargs):
        # The arguments are checked before the component exists, so a refused one leaves no unused elaboratable.
        for name, value in (("width", width), ("height", height), ("channels", channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TensorLinePacker: {name} must be a positive integer, got {value!r}")
        if width * channels > 0xFFFF:
            raise ValueError(f"TensorLinePacker: a row of {width * channels} bytes exceeds a 16-bit word count")
        return super().__new__(cls)

    def __init__(self, width, height, channels=3):
        self.width, self.height, self.channels = width, height, channels
        super().__init__({
            "pixels": In(tensor_pixel_stream(channels)),
            "out": Out(line_write_stream(1)),
            "enable": In(1, init=1),
            "tensor_width": In(16, init=width),    # the tensor's size, sampled with its first pixel (at most
            "tensor_height": In(16, init=height),  # the constructor's width and height, which size the counters)
            "abort": In(1),
            "in_frame": Out(1),
            "frame_done": Out(1),
            "errors": Out(16),
        })

    @property
    def latency(self):
        """Cycles from accepting a pixel to its first channel byte being valid on `out`."""
        return 1

    @property
    def line_bytes(self):
        return self.width * self.channels

    def elaborate(self, platform):
        m = Module()
        W, H, C = self.width, self.height, self.channels
        row_max = W * C

        state = Signal(range(3))
        bpos = Signal(range(max(row_max, 2)))  # byte position in the current row
        y = Signal(range(max(H, 2)))
        hold = Signal(data.ArrayLayout(8, C))  # the pixel whose channels 1.. are being sent
        ch = Signal(range(max(C, 2)))        # next channel of `hold` to send; 0 when none is held
        en = Signal()
        stray = Signal()
        quiet = Signal()
        quiet_after = Signal()
        out_frame_end = Signal()
        error = Signal()
        m.d.comb += self.in_frame.eq(state != _IDLE)

        advance = Signal()
        m.d.comb += advance.eq(~self.out.valid | self.out.ready)
        busy = ch != 0 if C > 1 else Const(0)

        start = Signal()
        # The tensor's size: from the ports at its first pixel, held for the rest of it as the positions the
        # counters are compared with (row - 1, row - C: a row's last byte and its last pixel's first; H - 1).
        # In the first pixel's cycle the counters are zero (between tensors bpos = y = 0), so the ports are only
        # compared with constants there: the comparisons of the port values stay out of the counters' logic.
        row_in = Signal(16)
        m.d.comb += row_in.eq(self.tensor_width * C)
        row_last = Signal(signed(17), init=row_max - 1)
        row_final = Signal(signed(17), init=row_max - C)
        h_last = Signal(signed(17), init=H - 1)
        with m.If(start):
            m.d.sync += [row_last.eq(row_in - 1), row_final.eq(row_in - C), h_last.eq(self.tensor_height - 1)]
        at_row_last = Mux(start, self.tensor_width * C == 1, bpos == row_last)
        at_row_final = Mux(start, self.tensor_width == 1, bpos == row_final)
        at_h_last = Mux(start, self.tensor_height == 1, y == h_last)

        gen = Signal()
        gen_byte = Signal(8)
        gen_last = Signal()
        gen_frame_end = Signal()
        m.d.comb += [gen_last.eq(at_row_last), gen_frame_end.eq(gen_last & at_h_last)]
        c_en = Signal()
        m.d.comb += c_en.eq(Mux(start, self.enable, en))

        pix = self.pixels.payload
        is_run = state == _RUN
        resync = Signal()
        m.d.comb += resync.eq(is_run & pix.first)
        m.d.comb += self.pixels.ready.eq(advance & ~busy & (state != _PAD) & ~(is_run & self.abort) & ~resync)
        take = Signal()
        m.d.comb += take.eq(self.pixels.valid & self.pixels.ready)

        with m.If(state == _IDLE):
            with m.If(take):
                with m.If(pix.first):
                    m.d.comb += start.eq(1)
                    m.d.sync += [en.eq(self.enable), quiet.eq(0), stray.eq(0), state.eq(_RUN)]
                with m.Else():
                    m.d.comb += error.eq(~quiet & ~stray)
                    m.d.sync += stray.eq(1)

        with m.If(is_run):
            # Once the tensor's final pixel is in, an abort has nothing left to cut (and whether its bytes are
            # still leaving must not change the outcome).
            final_held = busy & (y == h_last) & (bpos > row_final) if C > 1 else Const(0)
            with m.If(self.abort & ~final_held):
                m.d.comb += error.eq(1)
                m.d.sync += [quiet_after.eq(1), state.eq(_PAD)]
            with m.Elif(self.pixels.valid & advance & ~busy & resync):
                m.d.comb += error.eq(1)
                m.d.sync += [quiet_after.eq(0), state.eq(_PAD)]

        # The byte made this cycle: the rest of a held pixel first, then padding, then a new pixel's channel 0.
        def send_held():
            m.d.comb += [gen.eq(1), gen_byte.eq(hold.as_value().word_select(ch, 8))]
            m.d.sync += ch.eq(Mux(ch == C - 1, 0, ch + 1))

        def send_pad():
            m.d.comb += [gen.eq(1), gen_byte.eq(0)]

        def send_new():
            m.d.comb += [gen.eq(1), gen_byte.eq(pix.data[0])]
            if C > 1:
                m.d.sync += [hold.eq(pix.data), ch.eq(1)]
            # `last` anywhere but on the tensor's final pixel ends the input early.
            with m.If(pix.last & ~(at_row_final & at_h_last)):
                m.d.comb += error.eq(1)
                m.d.sync += [quiet_after.eq(0), state.eq(_PAD)]

        # With one channel nothing is ever held: leave that branch out rather than test a constant (Yosys
        # writes constant conditions as overlapping case items, which Verilator flags).
        branches = [(busy, send_held)] if C > 1 else []
        branches += [(state == _PAD, send_pad), (take & (is_run | start), send_new)]
        with m.If(advance):
            for i, (cond, body) in enumerate(branches):
                with (m.If if i == 0 else m.Elif)(cond):
                    body()

        with m.If(gen):
            with m.If(gen_last):
                m.d.sync += bpos.eq(0)
                with m.If(at_h_last):
                    # Whatever the state: the tensor is complete once its last byte is made.
                    m.d.sync += [y.eq(0), state.eq(_IDLE), stray.eq(0),
                                 quiet.eq((state == _PAD) & quiet_after)]
                with m.Else():
                    m.d.sync += y.eq(y + 1)
            with m.Else():
                m.d.sync += bpos.eq(bpos + 1)

        out = self.out.payload
        with m.If(gen & c_en):
            m.d.sync += [
                out.data[0].eq(gen_byte),
                out.last.eq(gen_last),
                out_frame_end.eq(gen_frame_end),
                self.out.valid.eq(1),
            ]
        with m.Elif(self.out.ready):
            m.d.sync += self.out.valid.eq(0)

        _count_error(m, self.errors, error)
        _frame_done_pulse(m, self.frame_done, self.out.valid & self.out.ready & out_frame_end,
                          gen & ~c_en & gen_frame_end)
        return m
