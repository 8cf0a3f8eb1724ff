"""CSI-2 frame sequencer: which packets a frame is made of, in which order, on which virtual channel."""

from amaranth import Array, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..regs import MODE_METADATA, MODE_TENSORS
from .packetizer import packet_command_stream, ppi_beat_stream

__all__ = ["CSI2Framer", "DT_FS", "DT_FE", "DT_LS", "DT_LE", "DT_EMBEDDED", "DT_RGB888", "DT_RAW10",
           "OUTCOME_WAIT"]

DT_FS, DT_FE, DT_LS, DT_LE = 0x00, 0x01, 0x02, 0x03
DT_EMBEDDED = 0x12
DT_RGB888 = 0x24
DT_RAW10 = 0x2B
# Cycles to wait after the readout ends before deciding that no output tensor is coming for this frame: the
# ISP's pipeline (3 cycles) plus the conv engine's start.
OUTCOME_WAIT = 8


class CSI2Framer(wiring.Component):
    """Issues the packet commands of each frame to the packetizer and routes its payload.

    A frame is two CSI-2 frames on two virtual channels, one after the other:

    * phase A (modes image and tensors): FS, then `a_lines` long packets (RAW10 image lines, data type 0x2B,
      or input-tensor lines, RGB888 0x24) taken from the `lines_a` line buffer, each between LS/LE when `ls_le`
      is set (line numbers from 1), then FE; on `vc_image` or `vc_input`;
    * phase B (every mode): FS, the rows of each of the `out_count` output tensors (`out_heights[k]` lines
      of data type `dt_output + k`) from `lines_b` if the frame produced them, then one embedded-data line
      (0x12) carrying `embedded`, then FE; on `vc_output`.

    FS/FE carry the frame number of their virtual channel: CSI-2 counts frames per channel (1, 2, ... 0xFFFF,
    then 1 again), so an image channel used every other frame counts its own frames. `frame_number` is the
    output channel's number of the current frame (0 before the first), which the embedded line carries. Mode, channels,
    data type and `ls_le` are sampled on `frame_start`, so software may change them between frames. Whether a
    frame has output tensors is known when the network finishes (`tensor_done`) or fails (`tensor_failed`), or
    `OUTCOME_WAIT` cycles after `raw_done` (the readout's end) if the network never started (`tensor_started`):
    then phase B has no tensor lines and, in tensors mode, `abort_input_tensor` pulses so the input-tensor
    lines of a broken frame are padded and phase A can end. In metadata mode phase B starts as soon as the
    outcome is known, without waiting for the readout to end.

    A long packet's command is issued only once its line is complete in its line buffer, so a packet never
    underruns. `idle` is high between frames; the die accepts a new frame only then.
    """

    def __init__(self, lanes, a_lines_image, a_lines_input, max_outputs=4, embedded_bytes=32):
        if embedded_bytes % lanes:
            raise ValueError(f"embedded_bytes {embedded_bytes} must be a multiple of lanes {lanes}")
        self.lanes = lanes
        self.a_lines_image = a_lines_image
        self.a_lines_input = a_lines_input
        self.max_outputs = max_outputs
        self.embedded_bytes = embedded_bytes
        super().__init__({
            "cmd": Out(packet_command_stream()),
            "payload": Out(ppi_beat_stream(lanes)),
            "lines_a": In(ppi_beat_stream(lanes)),
            "lines_a_count": In(8),
            "lines_a_len": In(16),
            "lines_b": In(ppi_beat_stream(lanes)),
            "lines_b_count": In(8),
            "lines_b_len": In(16),
            "frame_start": In(1),
            "raw_done": In(1),
            "input_lines": In(16, init=a_lines_input),
            "tensor_started": In(1),
            "tensor_done": In(1),
            "tensor_failed": In(1),
            "out_count": In(range(max_outputs + 1)),
            "out_heights": In(data.ArrayLayout(16, max_outputs)),
            "abort_input_tensor": Out(1),
            "mode": In(2),
            "ls_le": In(1),
            "vc_image": In(2),
            "vc_output": In(2),
            "vc_input": In(2),
            "dt_output": In(6),
            "embedded": In(data.ArrayLayout(8, embedded_bytes)),
            "idle": Out(1),
            "frame_number": Out(16),
            "frames_sent": Out(32),
            "mode_latched": Out(2),
            "has_tensor": Out(1),
            "outcome_known": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        lanes = self.lanes
        mode = self.mode_latched
        ls_le = Signal()
        vc_a = Signal(2)
        vc_b = Signal(2)
        dt_out = Signal(6)
        line = Signal(16)
        n_lines_a = Signal(16)

        # ---- frame outcome: does this frame have an output tensor? ----
        tensor_f = Signal()          # the network started on this frame
        done_f = Signal()            # ... and finished: its output lines will come
        failed_f = Signal()
        raw_done_f = Signal()
        wait = Signal(range(OUTCOME_WAIT + 1))
        wait_zero = Signal(init=1)   # wait == 0, kept as a register with it (the outcome gates the input tensor)
        abort_sent = Signal()
        with m.If(self.tensor_started):
            m.d.sync += tensor_f.eq(1)
        with m.If(self.tensor_done):
            m.d.sync += done_f.eq(1)
        with m.If(self.tensor_failed):
            m.d.sync += failed_f.eq(1)
        with m.If(self.raw_done):
            m.d.sync += [raw_done_f.eq(1), wait.eq(OUTCOME_WAIT), wait_zero.eq(OUTCOME_WAIT == 0)]
        with m.Elif(raw_done_f & ~wait_zero):
            m.d.sync += [wait.eq(wait - 1), wait_zero.eq(wait == 1)]
        m.d.comb += [
            self.outcome_known.eq(done_f | failed_f | (raw_done_f & wait_zero & ~tensor_f)),
            self.has_tensor.eq(done_f),
        ]
        with m.If(self.outcome_known & ~done_f & (mode == MODE_TENSORS) & ~abort_sent & ~self.idle):
            m.d.comb += self.abort_input_tensor.eq(1)
            m.d.sync += abort_sent.eq(1)

        def cmd(long, vc, dt, wc):
            m.d.comb += [
                self.cmd.valid.eq(1), self.cmd.payload.long.eq(long), self.cmd.payload.vc.eq(vc),
                self.cmd.payload.dt.eq(dt), self.cmd.payload.wc.eq(wc),
            ]

        def route(src):
            m.d.comb += [
                self.payload.valid.eq(src.valid),
                self.payload.payload.eq(src.payload),
                src.ready.eq(self.payload.ready),
            ]

        # Per-channel frame counters: the number of the channel's next frame.
        counters = Array(Signal(16, init=1, name=f"fn_vc{v}") for v in range(4))
        fn_a = counters[vc_a]
        fn_b = counters[vc_b]

        def bump(fn):
            m.d.sync += fn.eq(Mux(fn == 0xFFFF, 1, fn + 1))

        out_k = Signal(range(self.max_outputs + 1))      # output tensor being sent in phase B
        out_line = Signal(16)                            # its line
        heights = Array(self.out_heights[i] for i in range(self.max_outputs))

        emb = Signal(data.ArrayLayout(8, self.embedded_bytes))
        emb_beat = Signal(range(self.embedded_bytes // lanes + 1))
        beats = self.embedded_bytes // lanes

        # `idle` (the FSM is in IDLE) is a register of its own: the die's frame-start logic uses it directly.
        idle = Signal(init=1)
        m.d.comb += self.idle.eq(idle)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.frame_start):
                    m.d.sync += [
                        idle.eq(0),
                        mode.eq(self.mode), ls_le.eq(self.ls_le), dt_out.eq(self.dt_output),
                        vc_a.eq(Mux(self.mode == MODE_TENSORS, self.vc_input, self.vc_image)),
                        vc_b.eq(self.vc_output),
                        n_lines_a.eq(Mux(self.mode == MODE_TENSORS, self.input_lines, self.a_lines_image)),
                        tensor_f.eq(0), done_f.eq(0), failed_f.eq(0), raw_done_f.eq(0), abort_sent.eq(0),
                        line.eq(0),
                    ]
                    with m.If(self.mode == MODE_METADATA):
                        m.next = "WAIT_OUTCOME"
                    with m.Else():
                        m.next = "A_FS"

            with m.State("A_FS"):
                cmd(0, vc_a, DT_FS, fn_a)
                with m.If(self.cmd.ready):
                    m.next = "A_LS"
            with m.State("A_LS"):
                with m.If(ls_le):
                    cmd(0, vc_a, DT_LS, line + 1)
                    with m.If(self.cmd.ready):
                        m.next = "A_HDR"
                with m.Else():
                    m.next = "A_HDR"
            with m.State("A_HDR"):
                with m.If(self.lines_a_count != 0):
                    cmd(1, vc_a, Mux(mode == MODE_TENSORS, DT_RGB888, DT_RAW10), self.lines_a_len)
                    with m.If(self.cmd.ready):
                        m.next = "A_PAY"
            with m.State("A_PAY"):
                route(self.lines_a)
                with m.If(self.lines_a.valid & self.lines_a.ready & self.lines_a.payload.last):
                    m.next = "A_LE"
            with m.State("A_LE"):
                with m.If(ls_le):
                    cmd(0, vc_a, DT_LE, line + 1)
                with m.If(~ls_le | self.cmd.ready):
                    m.d.sync += line.eq(line + 1)
                    m.next = "A_NEXT"
            with m.State("A_NEXT"):
                with m.If(line == n_lines_a):
                    m.next = "A_FE"
                with m.Else():
                    m.next = "A_LS"
            with m.State("A_FE"):
                cmd(0, vc_a, DT_FE, fn_a)
                with m.If(self.cmd.ready):
                    bump(fn_a)
                    m.next = "WAIT_OUTCOME"

            with m.State("WAIT_OUTCOME"):
                with m.If(self.outcome_known):
                    m.next = "B_FS"
            with m.State("B_FS"):
                cmd(0, vc_b, DT_FS, fn_b)
                with m.If(self.cmd.ready):
                    m.d.sync += [self.frame_number.eq(fn_b), line.eq(0), out_k.eq(0), out_line.eq(0)]
                    with m.If(done_f & (self.out_count != 0)):
                        m.next = "B_LS"
                    with m.Else():
                        m.next = "B_EMB"
            with m.State("B_LS"):
                with m.If(ls_le):
                    cmd(0, vc_b, DT_LS, line + 1)
                    with m.If(self.cmd.ready):
                        m.next = "B_HDR"
                with m.Else():
                    m.next = "B_HDR"
            with m.State("B_HDR"):
                with m.If(self.lines_b_count != 0):
                    cmd(1, vc_b, dt_out + out_k, self.lines_b_len)
                    with m.If(self.cmd.ready):
                        m.next = "B_PAY"
            with m.State("B_PAY"):
                route(self.lines_b)
                with m.If(self.lines_b.valid & self.lines_b.ready & self.lines_b.payload.last):
                    m.next = "B_LE"
            with m.State("B_LE"):
                with m.If(ls_le):
                    cmd(0, vc_b, DT_LE, line + 1)
                with m.If(~ls_le | self.cmd.ready):
                    m.d.sync += line.eq(line + 1)
                    # out_line + 1 == height rather than out_line == height - 1: the adder is off the mux path.
                    with m.If(out_line + 1 == heights[out_k]):
                        m.d.sync += [out_k.eq(out_k + 1), out_line.eq(0)]
                    with m.Else():
                        m.d.sync += out_line.eq(out_line + 1)
                    m.next = "B_NEXT"
            with m.State("B_NEXT"):
                with m.If(out_k == self.out_count):
                    m.next = "B_EMB"
                with m.Else():
                    m.next = "B_LS"
            with m.State("B_EMB"):
                cmd(1, vc_b, DT_EMBEDDED, self.embedded_bytes)
                with m.If(self.cmd.ready):
                    m.d.sync += [emb.eq(self.embedded), emb_beat.eq(0)]
                    m.next = "B_EPAY"
            with m.State("B_EPAY"):
                words = [emb.as_value()[8 * lanes * k: 8 * lanes * (k + 1)] for k in range(beats)]
                m.d.comb += [
                    self.payload.valid.eq(1),
                    self.payload.payload.data.eq(Array(words)[emb_beat]),
                    self.payload.payload.strobe.eq((1 << lanes) - 1),
                    self.payload.payload.first.eq(emb_beat == 0),
                    self.payload.payload.last.eq(emb_beat == beats - 1),
                ]
                with m.If(self.payload.ready):
                    m.d.sync += emb_beat.eq(emb_beat + 1)
                    with m.If(emb_beat == beats - 1):
                        m.next = "B_FE"
            with m.State("B_FE"):
                cmd(0, vc_b, DT_FE, fn_b)
                with m.If(self.cmd.ready):
                    bump(fn_b)
                    m.d.sync += [self.frames_sent.eq(self.frames_sent + 1), idle.eq(1)]
                    m.next = "IDLE"
        return m
