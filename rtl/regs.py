"""Register bank of the die: configuration, status, error and performance counters on a small 32-bit bus."""

from dataclasses import dataclass

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Register", "REGISTERS", "REGISTER_BY_NAME", "bus_signature", "RegisterBank", "MODE_IMAGE",
           "MODE_METADATA", "MODE_TENSORS", "MODES", "DIE_ID"]

MODE_IMAGE = 0        # full-resolution RAW10 image lines + the output tensor (metadata)
MODE_METADATA = 1     # the output tensor only: the "someone is there" ping
MODE_TENSORS = 2      # the network's input tensor (RGB888 lines) + the output tensor, for debugging a network
MODES = {"image": MODE_IMAGE, "metadata": MODE_METADATA, "tensors": MODE_TENSORS}
DIE_ID = 0x5343414D   # "SCAM"


@dataclass(frozen=True)
class Register:
    name: str
    addr: int          # byte address, a multiple of 4
    access: str        # "rw": written by software, read by the die; "ro": status driven by the die; "const"
    width: int
    reset: int = 0
    doc: str = ""


REGISTERS = (
    Register("id", 0x00, "const", 32, DIE_ID, "constant 0x5343414D ('SCAM')"),
    Register("version", 0x04, "const", 32, 4, "register map version"),
    Register("mode", 0x08, "rw", 2, MODE_METADATA,
             "CSI-2 output mode, taken at the next frame start: 0 image + metadata, 1 metadata only, 2 tensors"),
    Register("csi2_ctrl", 0x0C, "rw", 1, 0, "bit 0: send LS/LE short packets around every line"),
    Register("vc_map", 0x10, "rw", 6, 0b10_01_00,
             "virtual channels: [1:0] RAW10 image, [3:2] output tensor + embedded data, [5:4] input tensor"),
    Register("dt_output", 0x14, "rw", 6, 0x30,
             "data type of output tensor 0's lines; output k uses dt_output + k (user-defined 0x30-0x37)"),
    Register("input_select", 0x18, "rw", 1, 0,
             "network input: 0 the ISP (from the pixel stream), 1 the tensor port (int8 tensors from a host)"),
    Register("status", 0x20, "ro", 2, 0, "bit 0: a frame is in progress; bit 1: the last frame had an error"),
    Register("frames_sent", 0x24, "ro", 32, 0, "frames whose FE has been sent"),
    Register("frame_errors", 0x28, "ro", 16, 0, "malformed input frames seen by the ISP (saturating)"),
    Register("csi2_errors", 0x2C, "ro", 16, 0, "CSI-2 payload length errors in the transmitter (saturating)"),
    Register("npu_cycles", 0x30, "ro", 32, 0, "cycles of the last network run (program start to END)"),
    Register("npu_mac_cycles", 0x34, "ro", 32, 0, "cycles the MAC array accumulated in the last run"),
    Register("frame_latency", 0x38, "ro", 32, 0, "last frame: cycles from its first pixel to the network's end"),
    Register("model_fingerprint", 0x3C, "ro", 32, 0, "CRC-32 of the loaded weight ROM image (0: none)"),
    # ISP: input normalization and quantization (quant.isp.isp_quant_params), geometry (quant.isp.IspGeometry).
    Register("isp_mult0", 0x40, "rw", 24, 0, "ISP multiplier of R"),
    Register("isp_mult1", 0x44, "rw", 24, 0, "ISP multiplier of G"),
    Register("isp_mult2", 0x48, "rw", 24, 0, "ISP multiplier of B"),
    Register("isp_offset", 0x4C, "rw", 32, 0, "ISP offset (two's complement)"),
    Register("isp_crop", 0x50, "rw", 32, 0, "ISP crop origin: [15:0] x, [31:16] y"),
    Register("isp_size", 0x54, "rw", 32, 0, "ISP output size: [15:0] width, [31:16] height"),
    Register("isp_bin", 0x58, "rw", 8, 0, "ISP bin factor k (2k x 2k Bayer pixels per output pixel)"),
    # Where the network input goes and where its outputs are (the ROM's model I/O section).
    Register("in_addr", 0x60, "rw", 32, 0, "activation word address of the network input"),
    Register("in_layout", 0x64, "rw", 16, 0, "[7:0] pixels per word (0: channel-tiled), [15:8] zero point"),
    Register("out_count", 0x68, "rw", 3, 0, "number of output tensors sent on CSI-2 (0-4)"),
    *(r for k in range(4) for r in (
        Register(f"out{k}_addr", 0x70 + 16 * k, "rw", 32, 0, f"output {k}: activation word address"),
        Register(f"out{k}_hw", 0x74 + 16 * k, "rw", 32, 0, f"output {k}: [15:0] height, [31:16] width"),
        Register(f"out{k}_c", 0x78 + 16 * k, "rw", 32, 0, f"output {k}: [15:0] channels, [31:16] channel tiles"),
    )),
    # Model loader and NPU status and counters.
    Register("npu_status", 0xB0, "ro", 16, 0,
             "[0] model loaded and accepted, [3:1] last run's error (rtl.npu.core.NPU_ERRORS; 5: SRAM parity), "
             "[7:4] loader error code of the last image, [8] loader busy, [9] NPU busy, "
             "[10] an SRAM parity error was detected in the current or last frame"),
    Register("load_cycles", 0xB4, "ro", 32, 0, "cycles the last image took to load"),
    Register("npu_descriptors", 0xB8, "ro", 16, 0, "descriptors the last run executed"),
    Register("counter_sel", 0xBC, "rw", 16, 0, "selects the descriptor whose counters read below"),
    Register("counter_cycles", 0xC0, "ro", 32, 0, "cycles of descriptor counter_sel in the last run"),
    Register("counter_macs", 0xC4, "ro", 32, 0, "MAC-array cycles of descriptor counter_sel in the last run"),
    Register("counter_act_reads", 0xC8, "ro", 32, 0,
             "activation-SRAM words its engine read for descriptor counter_sel in the last run"),
    Register("counter_act_write_bytes", 0xCC, "ro", 32, 0,
             "activation-SRAM bytes (byte enables) its engine wrote for descriptor counter_sel in the last run"),
    Register("counter_weight_reads", 0xD0, "ro", 32, 0,
             "weight-SRAM words its engine read for descriptor counter_sel in the last run"),
    Register("sram_errors", 0xD4, "ro", 16, 0,
             "SRAM words read with a parity error since reset (activation and weight SRAMs; saturating)"),
    Register("bank_sel", 0xD8, "rw", 11, 0,
             "selects the per-bank counter read below: [7:0] bank (of its SRAM), [10:8] counter "
             "(rtl.npu.core.BANK_COUNTERS; the last run's: 0 activation words read, 1 activation bytes written, "
             "2 weight words read, sequencer fetches included; since reset: 3 weight words the loader wrote, "
             "4 activation bytes the input writer wrote, 5 activation words the output reader read)"),
    Register("bank_counter", 0xDC, "ro", 32, 0, "the per-bank activity counter bank_sel selects"),
)
REGISTER_BY_NAME = {r.name: r for r in REGISTERS}


def bus_signature():
    """A minimal synchronous bus: a write takes one cycle; `rdata` shows register `addr` one cycle after `re`."""
    return wiring.Signature({
        "addr": Out(8), "wdata": Out(32), "we": Out(1), "re": Out(1), "rdata": In(32),
    })


class RegisterBank(wiring.Component):
    """The die's registers (`REGISTERS`): each "rw" register is an output port of the bank, each "ro" register
    an input port, named after the register; "const" registers read their reset value. Writes to "ro" or
    unknown addresses are ignored; reads of unknown addresses return 0. Read latency is one cycle; no
    back-pressure."""

    def __init__(self, registers=REGISTERS, resets=None):
        """`resets` overrides reset values of "rw" registers by name (e.g. configuration-dependent defaults)."""
        self.registers = registers
        resets = dict(resets or {})
        unknown = set(resets) - {r.name for r in registers if r.access == "rw"}
        if unknown:
            raise ValueError(f"reset values for unknown or read-only registers: {sorted(unknown)}")
        members = {"bus": In(bus_signature())}
        for r in registers:
            if r.access == "rw":
                members[r.name] = Out(r.width, init=resets.get(r.name, r.reset))
            elif r.access == "ro":
                members[r.name] = In(r.width)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        rdata = Signal(32)
        with m.Switch(self.bus.addr):
            for r in self.registers:
                with m.Case(r.addr):
                    port = getattr(self, r.name, None)
                    if r.access == "rw":
                        with m.If(self.bus.we):
                            m.d.sync += port.eq(self.bus.wdata[:r.width])
                        m.d.comb += rdata.eq(port)
                    elif r.access == "const":
                        m.d.comb += rdata.eq(r.reset)
                    else:
                        m.d.comb += rdata.eq(port)
        with m.If(self.bus.re):
            m.d.sync += self.bus.rdata.eq(rdata)
        return m
