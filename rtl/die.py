"""The stackcam logic die: ISP front end, NPU and CSI-2 transmitter in one top-level component."""

from amaranth import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .conv import ConvEngine
from .csi2.packetizer import CSI2Packetizer, ppi_beat_stream
from .isp import ISPFrontEnd
from .streams import pixel_beat_stream

__all__ = ["StackcamDie", "DT_FS", "DT_FE", "DT_OUTPUT_TENSOR", "VC_OUTPUT_TENSOR"]

DT_FS = 0x00
DT_FE = 0x01
DT_OUTPUT_TENSOR = 0x30      # first user-defined data type
VC_OUTPUT_TENSOR = 1


class StackcamDie(wiring.Component):
    """The die in its first-light form: RAW10 Bayer beats in, CSI-2 PPI beats out.

    Per frame: the first accepted beat (`frame_first`) queues a frame start (FS, virtual channel 1, frame
    number 1, 2, 3, ...); the ISP bins and quantizes the frame into the input tensor while it streams in; the
    conv engine runs when the tensor is complete and streams the output tensor, one long packet (data type
    0x30, VC 1) per output row; FE closes the frame. While the engine runs, `pixels.ready` is low (one frame
    in flight); a sensor that cannot stall must leave that much vertical blanking.

    Status: `frames_sent` (FE packets sent), `frame_errors` (malformed input frames seen by the ISP),
    `csi2_errors` (payload length errors in the packetizer), `conv_cycles` / `mac_cycles` of the last layer
    run (performance counters).
    """

    def __init__(self, config, program):
        self.config = config
        self.program = program
        self.conv_shape = program.layer.output_shape(config.input_height, config.input_width)
        oh, ow, oc = self.conv_shape
        if ow * oc >= 1 << 16:
            raise ValueError(f"output row of {ow * oc} bytes exceeds a CSI-2 word count (65535)")
        super().__init__({
            "pixels": In(pixel_beat_stream(config.pixels_per_clock)),
            "csi2": Out(ppi_beat_stream(config.csi2_lanes)),
            "frames_sent": Out(16),
            "frame_errors": Out(16),
            "csi2_errors": Out(16),
            "conv_cycles": Out(32),
            "mac_cycles": Out(32),
        })

    @property
    def output_row_bytes(self):
        return self.conv_shape[1] * self.conv_shape[2]

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        prog = self.program
        oh, ow, oc = self.conv_shape

        m.submodules.isp = isp = ISPFrontEnd(cfg)
        m.submodules.conv = conv = ConvEngine(prog.layer, cfg.input_height, cfg.input_width,
                                              cfg.array_rows, cfg.array_cols)
        m.submodules.csi2 = tx = CSI2Packetizer(cfg.csi2_lanes)

        wiring.connect(m, wiring.flipped(self.pixels), isp.pixels)
        wiring.connect(m, isp.out, conv.pixels)
        wiring.connect(m, conv.out, tx.payload)
        wiring.connect(m, tx.out, wiring.flipped(self.csi2))
        m.d.comb += [isp.offset.eq(prog.isp.offset)]
        for c in range(3):
            m.d.comb += isp.mult[c].eq(prog.isp.mult[c])

        # Frame sequencer: FS, one long packet per output row, FE. Commands queue in the packetizer, which
        # sends each long packet's header when it gets to it and then waits for the row's payload bytes.
        frame_start = Signal()
        m.d.comb += frame_start.eq(self.pixels.valid & self.pixels.ready & self.pixels.payload.frame_first)
        start_pending = Signal()
        frame_number = Signal(16, init=1)
        row = Signal(range(oh + 1))
        with m.If(frame_start):
            m.d.sync += start_pending.eq(1)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(start_pending | frame_start):
                    m.d.sync += start_pending.eq(0)
                    m.next = "FS"
            with m.State("FS"):
                m.d.comb += [tx.cmd.valid.eq(1), tx.cmd.payload.long.eq(0), tx.cmd.payload.dt.eq(DT_FS),
                             tx.cmd.payload.vc.eq(VC_OUTPUT_TENSOR), tx.cmd.payload.wc.eq(frame_number)]
                with m.If(tx.cmd.ready):
                    m.d.sync += row.eq(0)
                    m.next = "LINE"
            with m.State("LINE"):
                m.d.comb += [tx.cmd.valid.eq(1), tx.cmd.payload.long.eq(1), tx.cmd.payload.dt.eq(DT_OUTPUT_TENSOR),
                             tx.cmd.payload.vc.eq(VC_OUTPUT_TENSOR), tx.cmd.payload.wc.eq(self.output_row_bytes)]
                with m.If(tx.cmd.ready):
                    m.d.sync += row.eq(row + 1)
                    with m.If(row == oh - 1):
                        m.next = "FE"
            with m.State("FE"):
                m.d.comb += [tx.cmd.valid.eq(1), tx.cmd.payload.long.eq(0), tx.cmd.payload.dt.eq(DT_FE),
                             tx.cmd.payload.vc.eq(VC_OUTPUT_TENSOR), tx.cmd.payload.wc.eq(frame_number)]
                with m.If(tx.cmd.ready):
                    # Frame numbers count 1, 2, ... 0xFFFF, then start again at 1 (0 means "not counted").
                    m.d.sync += [frame_number.eq(Mux(frame_number == 0xFFFF, 1, frame_number + 1)),
                                 self.frames_sent.eq(self.frames_sent + 1)]
                    m.next = "IDLE"

        m.d.comb += [
            self.frame_errors.eq(isp.frame_errors),
            self.csi2_errors.eq(tx.errors),
            self.conv_cycles.eq(conv.cycles),
            self.mac_cycles.eq(conv.mac_cycles),
        ]
        return m
