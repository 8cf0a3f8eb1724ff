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
    Register("version", 0x04, "const", 32, 1, "register map version"),
    Register("mode", 0x08, "rw", 2, MODE_METADATA,
             "CSI-2 output mode, taken at the next frame start: 0 image + metadata, 1 metadata only, 2 tensors"),
    Register("csi2_ctrl", 0x0C, "rw", 1, 0, "bit 0: send LS/LE short packets around every line"),
    Register("vc_map", 0x10, "rw", 6, 0b10_01_00,
             "virtual channels: [1:0] RAW10 image, [3:2] output tensor + embedded data, [5:4] input tensor"),
    Register("dt_output", 0x14, "rw", 6, 0x30, "data type of the output tensor lines (user-defined 0x30-0x37)"),
    Register("status", 0x20, "ro", 2, 0, "bit 0: a frame is in progress; bit 1: the last frame had an error"),
    Register("frames_sent", 0x24, "ro", 32, 0, "frames whose FE has been sent"),
    Register("frame_errors", 0x28, "ro", 16, 0, "malformed input frames seen by the ISP (saturating)"),
    Register("csi2_errors", 0x2C, "ro", 16, 0, "CSI-2 payload length errors in the transmitter (saturating)"),
    Register("conv_cycles", 0x30, "ro", 32, 0, "cycles of the last NPU layer run"),
    Register("mac_cycles", 0x34, "ro", 32, 0, "cycles the MAC array was busy in the last layer run"),
    Register("frame_latency", 0x38, "ro", 32, 0, "last frame: cycles from its first pixel to its output tensor"),
    Register("model_fingerprint", 0x3C, "ro", 32, 0, "fingerprint of the loaded model"),
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

    def __init__(self, registers=REGISTERS):
        self.registers = registers
        members = {"bus": In(bus_signature())}
        for r in registers:
            if r.access == "rw":
                members[r.name] = Out(r.width, init=r.reset)
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
