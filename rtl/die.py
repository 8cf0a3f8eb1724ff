"""The stackcam logic die: ISP front end, NPU and CSI-2 transmitter in one top-level component."""

import zlib

import numpy as np
from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .conv import ConvEngine
from .csi2.framer import CSI2Framer
from .csi2.linebuffer import LineBuffer
from .csi2.lines import RAW10LinePacker, TensorLinePacker
from .csi2.packetizer import CSI2Packetizer, ppi_beat_stream
from .isp import ISPFrontEnd
from .regs import MODE_IMAGE, MODE_TENSORS, RegisterBank, bus_signature
from .streams import pixel_beat_stream

__all__ = ["StackcamDie", "EMBEDDED_FIELDS", "EMBEDDED_BYTES", "EMBEDDED_MAGIC", "model_fingerprint"]

EMBEDDED_MAGIC = b"SC"
EMBEDDED_BYTES = 32
# The embedded-data line (data type 0x12) closing every output frame: (name, byte offset, size), little endian.
EMBEDDED_FIELDS = (
    ("magic", 0, 2),               # b"SC"
    ("version", 2, 1),             # 1
    ("mode", 3, 1),                # the frame's CSI-2 mode (0 image, 1 metadata, 2 tensors)
    ("frame_number", 4, 2),        # as in the frame's FS/FE
    ("flags", 6, 1),               # bit 0: output tensor sent; bit 1: the input frame was malformed
    ("reserved", 7, 1),
    ("model_fingerprint", 8, 4),
    ("conv_cycles", 12, 4),        # NPU cycles of this frame's layer run
    ("mac_cycles", 16, 4),         # cycles the MAC array was busy in it
    ("frame_latency", 20, 4),      # cycles from the frame's first pixel to its output tensor being complete
    ("frame_errors", 24, 2),       # running count of malformed input frames
    ("csi2_errors", 26, 2),        # running count of transmitter payload errors
    ("frames_sent", 28, 4),        # frames completed before this one
)


def model_fingerprint(program):
    """CRC-32 of everything the die's result depends on: weights, bias, requantization and ISP constants."""
    layer = program.layer
    parts = [layer.weights.astype(np.int8).tobytes(), layer.bias.astype("<i4").tobytes(),
             layer.multiplier.astype("<i4").tobytes(), layer.shift.astype("<i1").tobytes(),
             np.array([layer.input_zero_point, layer.output_zero_point, layer.act_min, layer.act_max,
                       *program.isp.mult, program.isp.offset], "<i8").tobytes()]
    return zlib.crc32(b"".join(parts))


class StackcamDie(wiring.Component):
    """The die: RAW10 Bayer beats in, CSI-2 PPI beats out, a register bus for control and status.

    Data path: the pixel stream forks to the ISP front end (which bins and quantizes the input tensor while the
    frame streams in) and to the RAW10 line packer (full-resolution image lines, in image mode). The ISP output
    forks to the conv engine and to the input-tensor line packer (tensors mode; RGB888 lines carry B, G, R of
    each pixel as the int8 value + 128). The conv engine's output rows and the packers' lines collect in
    store-and-forward line buffers, and the frame sequencer (`CSI2Framer`) turns each frame into packets:
    image or input-tensor lines on their own virtual channel, then the output tensor and an embedded-data line
    (`EMBEDDED_FIELDS`) on the output channel. Mode, channels, output data type and LS/LE come from the
    register bank (`rtl.regs.REGISTERS`) and take effect at the next frame start.

    One frame is in flight at a time: a beat with `frame_first` is held (`pixels.ready` low) until the previous
    frame's packets are all queued. A frame that is malformed is counted (`frame_errors`), its image lines are
    padded or cut to the frame size so every packet stays well formed, it sends no output tensor if the ISP had
    to abort it, and its embedded line flags it; the die recovers at the next frame start.
    """

    def __init__(self, config, program):
        self.config = config
        self.program = program
        self.conv_shape = program.layer.output_shape(config.input_height, config.input_width)
        oh, ow, oc = self.conv_shape
        self.output_row_bytes = ow * oc
        self.image_line_bytes = config.frame_width * 5 // 4
        self.input_line_bytes = config.input_width * 3
        for what, n in (("output tensor row", self.output_row_bytes), ("RAW10 line", self.image_line_bytes),
                        ("input tensor row", self.input_line_bytes)):
            if n >= 1 << 16:
                raise ValueError(f"{what} of {n} bytes exceeds a CSI-2 word count (65535)")
        if config.frame_width % 4:
            raise ValueError(f"config {config.name!r}: frame_width {config.frame_width} must be a multiple of 4 "
                             f"(CSI-2 RAW10 image lines pack 4 pixels in 5 bytes)")
        self.fingerprint = model_fingerprint(program)
        super().__init__({
            "pixels": In(pixel_beat_stream(config.pixels_per_clock)),
            "csi2": Out(ppi_beat_stream(config.csi2_lanes)),
            "bus": In(bus_signature()),
            "frames_sent": Out(32),
            "frame_errors": Out(16),
            "csi2_errors": Out(16),
            "conv_cycles": Out(32),
            "mac_cycles": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        prog = self.program
        lanes = cfg.csi2_lanes
        oh, ow, oc = self.conv_shape

        m.submodules.regs = regs = RegisterBank()
        m.submodules.isp = isp = ISPFrontEnd(cfg)
        m.submodules.conv = conv = ConvEngine(prog.layer, cfg.input_height, cfg.input_width,
                                              cfg.array_rows, cfg.array_cols)
        m.submodules.raw10 = raw10 = RAW10LinePacker(cfg)
        m.submodules.tlines = tlines = TensorLinePacker(cfg.input_width, cfg.input_height, 3)
        m.submodules.lb_image = lb_image = LineBuffer(5, lanes, self.image_line_bytes)
        m.submodules.lb_input = lb_input = LineBuffer(1, lanes, self.input_line_bytes)
        m.submodules.lb_output = lb_output = LineBuffer(1, lanes, self.output_row_bytes)
        m.submodules.framer = framer = CSI2Framer(lanes, cfg.frame_height, cfg.input_height, oh, EMBEDDED_BYTES)
        m.submodules.tx = tx = CSI2Packetizer(lanes, payload_width=lanes, blanking=cfg.csi2_blanking)

        wiring.connect(m, wiring.flipped(self.bus), regs.bus)
        m.d.comb += [isp.offset.eq(prog.isp.offset)]
        for c in range(3):
            m.d.comb += isp.mult[c].eq(prog.isp.mult[c])

        # ---- pixel input: one frame in flight; fork to the ISP and the RAW10 packer ----
        px = self.pixels
        new_frame = px.valid & px.payload.frame_first
        may_start = framer.idle & ~raw10.in_frame
        gate = ~px.payload.frame_first | may_start
        m.d.comb += [
            isp.pixels.payload.eq(px.payload),
            raw10.pixels.payload.eq(px.payload),
            isp.pixels.valid.eq(px.valid & gate & raw10.pixels.ready),
            raw10.pixels.valid.eq(px.valid & gate & isp.pixels.ready),
            px.ready.eq(gate & isp.pixels.ready & raw10.pixels.ready),
        ]
        frame_start = Signal()
        m.d.comb += frame_start.eq(px.valid & px.ready & px.payload.frame_first)
        # A frame_first while the packer is still inside a frame: the previous frame lost its end. Abort it
        # (its remaining lines are padded) so the new frame can start.
        abort_sent = Signal()
        missing_end = Signal()
        m.d.comb += missing_end.eq(new_frame & raw10.in_frame & ~abort_sent)
        with m.If(missing_end):
            m.d.sync += abort_sent.eq(1)
        with m.Elif(~raw10.in_frame):
            m.d.sync += abort_sent.eq(0)
        m.d.comb += [
            raw10.abort.eq(missing_end),
            raw10.enable.eq(regs.mode == MODE_IMAGE),
            tlines.enable.eq(regs.mode == MODE_TENSORS),
            tlines.abort.eq(framer.abort_input_tensor),
        ]

        # ---- ISP output: fork to the conv engine and the input-tensor line packer ----
        m.d.comb += [
            conv.pixels.payload.eq(isp.out.payload),
            conv.pixels.valid.eq(isp.out.valid & tlines.pixels.ready),
            tlines.pixels.valid.eq(isp.out.valid & conv.pixels.ready),
            isp.out.ready.eq(conv.pixels.ready & tlines.pixels.ready),
            tlines.pixels.payload.first.eq(isp.out.payload.first),
            tlines.pixels.payload.last.eq(isp.out.payload.last),
        ]
        # RGB888 on the wire is B, G, R; int8 q is sent as q + 128 (flip the sign bit) so it reads as an image.
        for c in range(3):
            m.d.comb += tlines.pixels.payload.data[c].eq(isp.out.payload.data[2 - c] ^ 0x80)

        # ---- lines into the line buffers ----
        wiring.connect(m, raw10.out, lb_image.w)
        wiring.connect(m, tlines.out, lb_input.w)
        m.d.comb += [
            lb_output.w.valid.eq(conv.out.valid),
            lb_output.w.payload.data[0].eq(conv.out.payload.data),
            lb_output.w.payload.last.eq(conv.out.payload.last),
            conv.out.ready.eq(lb_output.w.ready),
        ]

        # ---- frame sequencer and packetizer ----
        tensors_mode = framer.mode_latched == MODE_TENSORS
        m.d.comb += [
            framer.lines_a.valid.eq(Mux(tensors_mode, lb_input.r.valid, lb_image.r.valid)),
            framer.lines_a.payload.eq(Mux(tensors_mode, lb_input.r.payload.as_value(),
                                           lb_image.r.payload.as_value())),
            lb_input.r.ready.eq(tensors_mode & framer.lines_a.ready),
            lb_image.r.ready.eq(~tensors_mode & framer.lines_a.ready),
            framer.lines_a_count.eq(Mux(tensors_mode, lb_input.lines_ready, lb_image.lines_ready)),
            framer.lines_a_len.eq(Mux(tensors_mode, lb_input.next_len, lb_image.next_len)),
            framer.lines_b_count.eq(lb_output.lines_ready),
            framer.lines_b_len.eq(lb_output.next_len),
        ]
        wiring.connect(m, lb_output.r, framer.lines_b)
        wiring.connect(m, framer.cmd, tx.cmd)
        if lanes == 1:
            # One lane: the packetizer's payload is a plain byte stream.
            m.d.comb += [
                tx.payload.valid.eq(framer.payload.valid),
                tx.payload.payload.data.eq(framer.payload.payload.data[0]),
                tx.payload.payload.first.eq(framer.payload.payload.first),
                tx.payload.payload.last.eq(framer.payload.payload.last),
                framer.payload.ready.eq(tx.payload.ready),
            ]
        else:
            wiring.connect(m, framer.payload, tx.payload)
        wiring.connect(m, tx.out, wiring.flipped(self.csi2))

        conv_busy_d = Signal()
        m.d.sync += conv_busy_d.eq(conv.busy)
        m.d.comb += [
            framer.frame_start.eq(frame_start),
            framer.raw_done.eq(raw10.frame_done),
            framer.tensor_started.eq(conv.busy & ~conv_busy_d),
            framer.mode.eq(regs.mode),
            framer.ls_le.eq(regs.csi2_ctrl[0]),
            framer.vc_image.eq(regs.vc_map[0:2]),
            framer.vc_output.eq(regs.vc_map[2:4]),
            framer.vc_input.eq(regs.vc_map[4:6]),
            framer.dt_output.eq(regs.dt_output),
        ]

        # ---- status, counters, embedded data ----
        latency = Signal(32)
        frame_latency = Signal(32)
        counting = Signal()
        with m.If(frame_start):
            m.d.sync += [latency.eq(1), counting.eq(1), frame_latency.eq(0)]
        with m.Elif(counting):
            m.d.sync += latency.eq(latency + 1)
        with m.If(conv.done & counting):
            m.d.sync += [frame_latency.eq(latency + 1), counting.eq(0)]
        frame_bad = Signal()
        raw_errors_d = Signal.like(raw10.errors)
        m.d.sync += raw_errors_d.eq(raw10.errors)
        with m.If(frame_start):
            m.d.sync += frame_bad.eq(0)
        with m.Elif(missing_end | (raw10.errors != raw_errors_d)):
            m.d.sync += frame_bad.eq(1)
        last_bad = Signal()             # status bit 1: the last completed frame was malformed
        sent_d = Signal(32)
        m.d.sync += sent_d.eq(framer.frames_sent)
        with m.If(framer.frames_sent != sent_d):
            m.d.sync += last_bad.eq(frame_bad)
        csi2_errors = Signal(16)
        m.d.comb += csi2_errors.eq(tx.errors)
        m.d.comb += [
            self.frames_sent.eq(framer.frames_sent),
            self.frame_errors.eq(isp.frame_errors),
            self.csi2_errors.eq(csi2_errors),
            self.conv_cycles.eq(conv.cycles),
            self.mac_cycles.eq(conv.mac_cycles),
            regs.status.eq(Cat(~framer.idle, last_bad)),
            regs.frames_sent.eq(framer.frames_sent),
            regs.frame_errors.eq(isp.frame_errors),
            regs.csi2_errors.eq(csi2_errors),
            regs.conv_cycles.eq(conv.cycles),
            regs.mac_cycles.eq(conv.mac_cycles),
            regs.frame_latency.eq(frame_latency),
            regs.model_fingerprint.eq(self.fingerprint),
        ]
        fields = {
            "magic": Const(int.from_bytes(EMBEDDED_MAGIC, "little"), 16), "version": Const(1, 8),
            "mode": framer.mode_latched, "frame_number": framer.frame_number,
            "flags": Cat(framer.has_tensor, frame_bad), "reserved": Const(0, 8),
            "model_fingerprint": Const(self.fingerprint, 32), "conv_cycles": conv.cycles,
            "mac_cycles": conv.mac_cycles, "frame_latency": frame_latency, "frame_errors": isp.frame_errors,
            "csi2_errors": csi2_errors, "frames_sent": framer.frames_sent,
        }
        emb = Signal(8 * EMBEDDED_BYTES)
        for name, offset, size in EMBEDDED_FIELDS:
            m.d.comb += emb[8 * offset: 8 * (offset + size)].eq(fields[name])
        m.d.comb += framer.embedded.eq(emb)
        return m
