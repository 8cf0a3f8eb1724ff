"""The stackcam logic die: ISP front end, NPU and CSI-2 transmitter in one top-level component."""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .csi2.framer import CSI2Framer
from .csi2.linebuffer import LineBuffer
from .csi2.lines import RAW10LinePacker, TensorLinePacker
from .csi2.packetizer import CSI2Packetizer, ppi_beat_stream
from .isp import ISPFrontEnd
from .npu.core import NPU
from .npu.io import MAX_OUTPUTS, InputWriter, OutputReader
from .npu.loader import ModelLoader
from .npu.loader import rom_beat_layout as _loader_beat_layout
from .regs import MODE_IMAGE, MODE_METADATA, MODE_TENSORS, REGISTER_BY_NAME, RegisterBank, bus_signature
from .streams import pixel_beat_stream, tensor_pixel_stream

__all__ = ["StackcamDie", "EMBEDDED_FIELDS", "EMBEDDED_BYTES", "EMBEDDED_MAGIC", "EMBEDDED_VERSION",
           "rom_beat_layout"]



def rom_beat_layout(config):
    """One beat of the model-loader port: `config.rom_beat_bytes` image bytes, how many are valid, first/last."""
    return _loader_beat_layout(config.rom_beat_bytes)

EMBEDDED_MAGIC = b"SC"
EMBEDDED_BYTES = 36
EMBEDDED_VERSION = 4
# The embedded-data line (data type 0x12) closing every output frame: (name, byte offset, size), little endian.
EMBEDDED_FIELDS = (
    ("magic", 0, 2),               # b"SC"
    ("version", 2, 1),             # EMBEDDED_VERSION
    ("mode", 3, 1),                # the frame's CSI-2 mode (0 image, 1 metadata, 2 tensors)
    ("frame_number", 4, 2),        # as in the frame's FS/FE
    ("flags", 6, 1),               # bit 0: output tensors sent; bit 1: the input frame was malformed;
                                   # bit 2: no valid model; bit 3: the network stopped with an error;
                                   # bit 4: an SRAM parity error was detected in this frame (its network run
                                   # or the read-out of its output tensors): its output is not to be used
    ("npu_error", 7, 1),           # the network run's NPU error code (rtl.npu.core.NPU_ERRORS; 0 none)
    ("model_fingerprint", 8, 4),
    ("npu_cycles", 12, 4),         # NPU cycles of this frame's network run
    ("mac_cycles", 16, 4),         # cycles the MAC array accumulated in it
    ("frame_latency", 20, 4),      # cycles from the frame's first pixel to the network's end
    ("frame_errors", 24, 2),       # running count of malformed input frames
    ("csi2_errors", 26, 2),        # running count of transmitter payload errors
    ("frames_sent", 28, 4),        # frames completed before this one
    ("error_descriptor", 32, 2),   # with npu_error: index of the descriptor that stopped the network
    ("error_layer", 34, 2),        # with npu_error: that descriptor's `layer` (the compiled layer's index)
)


class StackcamDie(wiring.Component):
    """The die: RAW10 Bayer beats in, CSI-2 PPI beats out; a register bus, a model-loader port and a tensor port.

    Data path: the pixel stream forks to the ISP front end (crop, binning and input quantization while the
    frame streams in, geometry and constants from registers) and to the RAW10 line packer (full-resolution
    image lines, in image mode). The network input (the ISP's output, or int8 tensors on the `tensor` port when
    `input_select` is 1) goes into the activation SRAM through the input writer, in the layout the model's
    program expects, and the NPU runs the loaded layer program when the last input pixel is written. The output
    reader then streams the output tensors (addresses and shapes from registers) as CSI-2 lines. The frame
    sequencer (`CSI2Framer`) turns each frame into packets: image or input-tensor lines on their own virtual
    channel, then the output tensors and an embedded-data line (`EMBEDDED_FIELDS`) on the output channel.

    Model: a weight ROM image streamed into `rom` (16 bytes per beat) is checked by the loader (header,
    configuration fingerprint, section and image CRC-32); a refused image leaves no valid model, the NPU does
    not run and frames carry no output tensor (the embedded line and `npu_status` say why). Load between frames.

    One frame is in flight at a time: a beat with `frame_first` (or a tensor with `first`) is held until the
    previous frame's packets are all queued. A malformed frame is counted (`frame_errors`), padded or cut to
    the frame size so every packet stays well formed, sends no output tensor if the ISP had to abort it, and is
    flagged in its embedded line; the die recovers at the next frame start.
    """

    def __init__(self, config):
        self.config = config            # a DieConfig is checked when it is made (rtl.params)
        self.image_line_bytes = config.frame_width * 5 // 4
        self.input_line_bytes = config.input_width * 3
        super().__init__({
            "pixels": In(pixel_beat_stream(config.pixels_per_clock)),
            "tensor": In(tensor_pixel_stream(3)),
            "rom": In(stream.Signature(rom_beat_layout(config))),
            "csi2": Out(ppi_beat_stream(config.csi2_lanes)),
            "bus": In(bus_signature()),
            "frames_sent": Out(32),
            "frame_errors": Out(16),
            "csi2_errors": Out(16),
            "npu_cycles": Out(32),
            "mac_cycles": Out(32),
            "model_ok": Out(1),
            "loading": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        lanes = cfg.csi2_lanes

        # Out of reset the ISP runs the configuration's default geometry with a [-1, 1] input at scale 1/128;
        # a driver sets all of it for its model.
        from stackcam.quant.isp import IspGeometry, isp_quant_params
        g = IspGeometry.default(cfg)
        q = isp_quant_params(cfg, 1 / 128, 0, geometry=g)
        m.submodules.regs = regs = RegisterBank(resets={
            "isp_crop": g.crop_x | g.crop_y << 16, "isp_size": g.out_width | g.out_height << 16,
            "isp_bin": g.bin_factor, "isp_mult0": q.mult[0], "isp_mult1": q.mult[1], "isp_mult2": q.mult[2],
            "isp_offset": q.offset & 0xFFFFFFFF})
        m.submodules.isp = isp = ISPFrontEnd(cfg)
        m.submodules.npu = npu = NPU(cfg)
        m.submodules.loader = loader = ModelLoader(cfg, beat_bytes=cfg.rom_beat_bytes)
        m.submodules.inw = inw = InputWriter(cfg)
        m.submodules.outr = outr = OutputReader(cfg)
        m.submodules.raw10 = raw10 = RAW10LinePacker(cfg)
        m.submodules.tlines = tlines = TensorLinePacker(cfg.input_width, cfg.input_height, 3)
        m.submodules.lb_image = lb_image = LineBuffer(5, lanes, self.image_line_bytes)
        m.submodules.lb_input = lb_input = LineBuffer(1, lanes, self.input_line_bytes)
        m.submodules.lb_output = lb_output = LineBuffer(1, lanes, cfg.max_output_line_bytes)
        m.submodules.framer = framer = CSI2Framer(lanes, cfg.frame_height, cfg.input_height, MAX_OUTPUTS,
                                                  EMBEDDED_BYTES)
        m.submodules.tx = tx = CSI2Packetizer(lanes, payload_width=lanes, blanking=cfg.csi2_blanking)

        wiring.connect(m, wiring.flipped(self.bus), regs.bus)

        # ---- ISP constants and geometry from registers ----
        m.d.comb += [isp.offset.eq(regs.isp_offset), isp.mult[0].eq(regs.isp_mult0),
                     isp.mult[1].eq(regs.isp_mult1), isp.mult[2].eq(regs.isp_mult2)]
        m.d.comb += [isp.geometry.crop_x.eq(regs.isp_crop[:16]), isp.geometry.crop_y.eq(regs.isp_crop[16:]),
                     isp.geometry.out_width.eq(regs.isp_size[:16]), isp.geometry.out_height.eq(regs.isp_size[16:]),
                     isp.geometry.bin_factor.eq(regs.isp_bin)]

        # ---- model loader -> weight SRAM ----
        wiring.connect(m, wiring.flipped(self.rom), loader.rom)
        m.d.comb += [npu.load_w.addr.eq(loader.w.addr), npu.load_w.data.eq(loader.w.data),
                     npu.load_w.en.eq(loader.w.en), npu.model_ok.eq(loader.ok)]

        # ---- pixel input: one frame in flight; fork to the ISP and the RAW10 packer ----
        from_tensor_port = regs.input_select[0]
        px = self.pixels
        new_frame = px.valid & px.payload.frame_first
        may_start = framer.idle & ~raw10.in_frame & ~npu.busy & ~outr.busy
        gate = ~px.payload.frame_first | may_start
        m.d.comb += [
            isp.pixels.payload.eq(px.payload),
            raw10.pixels.payload.eq(px.payload),
            isp.pixels.valid.eq(px.valid & gate & raw10.pixels.ready),
            raw10.pixels.valid.eq(px.valid & gate & isp.pixels.ready),
            px.ready.eq(gate & isp.pixels.ready & raw10.pixels.ready),
        ]
        raw_frame_start = Signal()
        m.d.comb += raw_frame_start.eq(px.valid & px.ready & px.payload.frame_first)
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
            raw10.enable.eq((regs.mode == MODE_IMAGE) & ~from_tensor_port),
            tlines.abort.eq(framer.abort_input_tensor),
            tlines.tensor_width.eq(regs.isp_size[:16]),
            tlines.tensor_height.eq(regs.isp_size[16:]),
            framer.input_lines.eq(regs.isp_size[16:]),
        ]

        # ---- network input: the ISP output or the tensor port, to the input writer and the RGB888 packer ----
        tp = self.tensor
        tensor_gate = ~tp.payload.first | may_start
        # The frame's CSI-2 mode. Image mode needs RAW10 lines, so a tensor-port frame sends metadata instead;
        # tensors mode needs the input rows to fit the input line buffer (the tensor port takes any model's
        # input, up to the activation SRAM), so a larger input sends metadata instead (the embedded line's
        # mode field says which mode a frame went out in). While no frame is in flight, the mode the next frame
        # starts with (its first tensor pixel is the frame start); then the mode latched for the frame.
        # Kept as a register next to `isp_size`, loaded by the same bus write (so never a cycle behind it): the
        # comparison then stays out of the frame-start logic.
        input_fits = Signal(init=g.out_width <= cfg.input_width and g.out_height <= cfg.input_height)
        with m.If(self.bus.we & (self.bus.addr == REGISTER_BY_NAME["isp_size"].addr)):
            size = self.bus.wdata
            m.d.sync += input_fits.eq((size[:16] <= cfg.input_width) & (size[16:] <= cfg.input_height))
        next_mode = Signal(2)
        with m.If(((regs.mode == MODE_IMAGE) & from_tensor_port) | ((regs.mode == MODE_TENSORS) & ~input_fits)):
            m.d.comb += next_mode.eq(MODE_METADATA)
        with m.Else():
            m.d.comb += next_mode.eq(regs.mode)
        frame_mode = Mux(framer.idle, next_mode, framer.mode_latched)
        # Only a tensors-mode frame goes through the RGB888 line packer; otherwise it is bypassed.
        send_lines = Signal()
        lines_ready = Signal()
        m.d.comb += [send_lines.eq(frame_mode == MODE_TENSORS), lines_ready.eq(tlines.pixels.ready | ~send_lines)]
        src_valid = Mux(from_tensor_port, tp.valid & tensor_gate, isp.out.valid)
        src = Mux(from_tensor_port, tp.payload.as_value(), isp.out.payload.as_value())
        src_payload = Signal.like(isp.out.payload)
        m.d.comb += src_payload.eq(src)
        m.d.comb += [
            inw.pixels.payload.eq(src_payload),
            inw.pixels.valid.eq(src_valid & lines_ready),
            tlines.pixels.valid.eq(src_valid & inw.pixels.ready & send_lines),
            isp.out.ready.eq(~from_tensor_port & inw.pixels.ready & lines_ready),
            tp.ready.eq(from_tensor_port & tensor_gate & inw.pixels.ready & lines_ready),
            tlines.pixels.payload.first.eq(src_payload.first),
            tlines.pixels.payload.last.eq(src_payload.last),
            inw.base.eq(regs.in_addr),
            inw.ppw.eq(regs.in_layout[:8]),
            inw.zero_point.eq(regs.in_layout[8:16]),
        ]
        # RGB888 on the wire is B, G, R; int8 q is sent as q + 128 (flip the sign bit) so it reads as an image.
        for c in range(3):
            m.d.comb += tlines.pixels.payload.data[c].eq(src_payload.data[2 - c] ^ 0x80)
        tensor_frame_start = Signal()
        tensor_last = Signal()
        m.d.comb += [
            tensor_frame_start.eq(from_tensor_port & tp.valid & tp.ready & tp.payload.first),
            tensor_last.eq(from_tensor_port & tp.valid & tp.ready & tp.payload.last),
        ]
        frame_start = Signal()
        m.d.comb += frame_start.eq(Mux(from_tensor_port, tensor_frame_start, raw_frame_start))

        # ---- NPU run and output reader ----
        m.d.comb += [
            npu.ext_act_w.addr.eq(inw.w.addr), npu.ext_act_w.data.eq(inw.w.data), npu.ext_act_w.en.eq(inw.w.en),
            npu.ext_act_r.addr.eq(outr.r.addr), npu.ext_act_r.en.eq(outr.r.en), outr.r.data.eq(npu.ext_act_r.data),
            npu.start.eq(inw.done),
            npu.counter_sel.eq(regs.counter_sel),
            npu.bank_sel.eq(regs.bank_sel),
        ]
        npu_ok = Signal()
        m.d.comb += npu_ok.eq(npu.done & (npu.error == 0))
        m.d.comb += [outr.start.eq(npu_ok), outr.count.eq(regs.out_count)]
        for k in range(MAX_OUTPUTS):
            o = outr.outputs[k]
            hw = getattr(regs, f"out{k}_hw")
            c = getattr(regs, f"out{k}_c")
            m.d.comb += [o.addr.eq(getattr(regs, f"out{k}_addr")), o.h.eq(hw[:16]), o.w.eq(hw[16:]),
                         o.c.eq(c[:16]), o.ct.eq(c[16:]), framer.out_heights[k].eq(hw[:16])]
        m.d.comb += [
            lb_output.w.valid.eq(outr.out.valid),
            lb_output.w.payload.eq(outr.out.payload),
            outr.out.ready.eq(lb_output.w.ready),
        ]

        # ---- lines into the line buffers, frame sequencer and packetizer ----
        wiring.connect(m, raw10.out, lb_image.w)
        wiring.connect(m, tlines.out, lb_input.w)
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

        m.d.comb += [
            framer.frame_start.eq(frame_start),
            framer.raw_done.eq(Mux(from_tensor_port, tensor_last, raw10.frame_done)),
            framer.tensor_started.eq(npu.start),
            framer.tensor_done.eq(npu_ok),
            framer.tensor_failed.eq(npu.done & (npu.error != 0)),
            framer.out_count.eq(regs.out_count),
            framer.mode.eq(next_mode),
            framer.ls_le.eq(regs.csi2_ctrl[0]),
            framer.vc_image.eq(regs.vc_map[0:2]),
            framer.vc_output.eq(regs.vc_map[2:4]),
            framer.vc_input.eq(regs.vc_map[4:6]),
            framer.dt_output.eq(regs.dt_output),
        ]

        # ---- status, counters, embedded data ----
        self._status(m, regs=regs, isp=isp, npu=npu, loader=loader, raw10=raw10, framer=framer, tx=tx,
                     frame_start=frame_start, missing_end=missing_end)
        return m

    def _status(self, m, *, regs, isp, npu, loader, raw10, framer, tx, frame_start, missing_end):
        """Frame latency, the frame's verdict (malformed input, no model, the network's error and where), the
        status and counter registers, and the embedded-data line closing every output frame."""
        latency = Signal(32)
        frame_latency = Signal(32)
        counting = Signal()
        with m.If(frame_start):
            m.d.sync += [latency.eq(1), counting.eq(1), frame_latency.eq(0)]
        with m.Elif(counting):
            m.d.sync += latency.eq(latency + 1)
        with m.If(npu.done & counting):
            m.d.sync += [frame_latency.eq(latency + 1), counting.eq(0)]
        frame_bad = Signal()
        sram_fault = Signal()           # an SRAM parity error in this frame (run or output read-out)
        npu_failed = Signal()
        npu_error = Signal(8)           # this frame's network verdict, for the embedded line
        error_desc = Signal(16)
        error_layer = Signal(16)
        raw_errors_d = Signal.like(raw10.errors)
        m.d.sync += raw_errors_d.eq(raw10.errors)
        with m.If(frame_start):
            m.d.sync += [frame_bad.eq(0), npu_failed.eq(0), npu_error.eq(0), error_desc.eq(0), error_layer.eq(0),
                         sram_fault.eq(0)]
        with m.Else():
            with m.If(npu.sram_fault):
                m.d.sync += sram_fault.eq(1)
            with m.If(missing_end | (raw10.errors != raw_errors_d)):
                m.d.sync += frame_bad.eq(1)
            with m.If(npu.done & (npu.error != 0)):
                m.d.sync += [npu_failed.eq(1), npu_error.eq(npu.error)]
            with m.If(npu_failed):
                # The NPU registers the failing descriptor the cycle after `done`.
                m.d.sync += [error_desc.eq(npu.error_desc), error_layer.eq(npu.error_layer)]
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
            self.npu_cycles.eq(npu.cycles),
            self.mac_cycles.eq(npu.mac_cycles),
            self.model_ok.eq(loader.ok),
            self.loading.eq(loader.busy),
            regs.status.eq(Cat(~framer.idle, last_bad)),
            regs.frames_sent.eq(framer.frames_sent),
            regs.frame_errors.eq(isp.frame_errors),
            regs.csi2_errors.eq(csi2_errors),
            regs.npu_cycles.eq(npu.cycles),
            regs.npu_mac_cycles.eq(npu.mac_cycles),
            regs.frame_latency.eq(frame_latency),
            regs.model_fingerprint.eq(Mux(loader.ok, loader.image_crc, 0)),
            regs.npu_status.eq(Cat(loader.ok, npu.error, loader.error.as_value(), Const(0, 1), loader.busy,
                                   npu.busy, sram_fault)),
            regs.sram_errors.eq(npu.sram_errors),
            regs.load_cycles.eq(loader.cycles),
            regs.npu_descriptors.eq(npu.descriptors),
            regs.counter_cycles.eq(npu.counter_cycles),
            regs.counter_macs.eq(npu.counter_macs),
            regs.counter_act_reads.eq(npu.counter_act_reads),
            regs.counter_act_write_bytes.eq(npu.counter_act_write_bytes),
            regs.counter_weight_reads.eq(npu.counter_weight_reads),
            regs.bank_counter.eq(npu.bank_counter),
        ]
        fields = {
            "magic": Const(int.from_bytes(EMBEDDED_MAGIC, "little"), 16), "version": Const(EMBEDDED_VERSION, 8),
            "mode": framer.mode_latched, "frame_number": framer.frame_number,
            "flags": Cat(framer.has_tensor, frame_bad, ~loader.ok, npu_failed, sram_fault), "npu_error": npu_error,
            "model_fingerprint": Mux(loader.ok, loader.image_crc, 0), "npu_cycles": npu.cycles,
            "mac_cycles": npu.mac_cycles, "frame_latency": frame_latency, "frame_errors": isp.frame_errors,
            "csi2_errors": csi2_errors, "frames_sent": framer.frames_sent,
            "error_descriptor": error_desc, "error_layer": error_layer,
        }
        emb = Signal(8 * EMBEDDED_BYTES)
        for name, offset, size in EMBEDDED_FIELDS:
            m.d.comb += emb[8 * offset: 8 * (offset + size)].eq(fields[name])
        m.d.comb += framer.embedded.eq(emb)
