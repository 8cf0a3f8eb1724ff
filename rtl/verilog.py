"""Verilog generation for the die: large uninitialised memories become SRAM-macro instances, as in an ASIC flow."""

from amaranth import ClockSignal, Const, Elaboratable, Module, Shape
from amaranth.back import verilog
from amaranth.hdl import Instance
from amaranth.lib import memory

__all__ = ["SRAM_MACRO_VERILOG", "SRAMMacroPlatform", "convert", "sram_macro_verilog"]

# A behavioural 1-write, 1-read synchronous SRAM (read data registered, not write-through), the shape of a
# foundry SRAM macro; the read port has a clock of its own (`rclk`: the write port's clock, or a gated copy of it,
# rtl.clockgate). Verilator builds it in seconds where Amaranth's initialised arrays take minutes. The 2-read
# variant (`stackcam_sram_2r1w`, the activation SRAM with `act_read_ports` 2) has a second read port on the
# same clock: a banked SRAM's second bank-select crossbar (the die keeps two reads of one bank apart).
_SRAM_MACRO_TEMPLATE = """\
module stackcam_sram_{n}r1w #(parameter WIDTH = 8, parameter DEPTH = 16, parameter ABITS = 4,
                            parameter LANES = 1, parameter ID = 0) (
    input  wire             clk,
    input  wire             rclk,
    input  wire [LANES-1:0] we,
    input  wire [ABITS-1:0] waddr,
    input  wire [WIDTH-1:0] wdata,
    input  wire             re,
    input  wire [ABITS-1:0] raddr,
{ports}    output reg  [WIDTH-1:0] rdata
);
    localparam LW = WIDTH / LANES;
    reg [WIDTH-1:0] mem [0:DEPTH-1];
{decls}    integer i;
    always @(posedge clk) begin
        for (i = 0; i < LANES; i = i + 1)
            if (we[i]) mem[waddr][i * LW +: LW] <= wdata[i * LW +: LW];
{body}    end
    always @(posedge rclk) begin
        if (re) rdata <= mem[raddr];
{reads}    end
endmodule
"""
_SECOND_PORT = ("""\
    input  wire             re2,
    input  wire [ABITS-1:0] raddr2,
    output reg  [WIDTH-1:0] rdata2,
""", """\
        if (re2) rdata2 <= mem[raddr2];
""")

# A simulation build's extra: bit `fault_bit` of word `fault_addr` inverted in a cycle where `fault_en` is high and
# `fault_id` names this SRAM (after that cycle's write, so a flip of a word being written flips the new value);
# the ports are hierarchical references into the module `{top}` (sim.harness fills it in).
_SRAM_FAULT_DECLS = """\
    reg [WIDTH-1:0] word;
    wire hit = {top}.fault_en && ({top}.fault_id == ID) && ({top}.fault_addr < DEPTH) && ({top}.fault_bit < WIDTH);
    wire [ABITS-1:0] faddr = {top}.fault_addr[ABITS-1:0];
"""
_SRAM_FAULT_BODY = """\
        if (hit) begin
            word = mem[faddr];
            for (i = 0; i < LANES; i = i + 1)
                if (we[i] && waddr == faddr) word[i * LW +: LW] = wdata[i * LW +: LW];
            word[{top}.fault_bit] = ~word[{top}.fault_bit];
            mem[faddr] <= word;
        end
"""


def sram_macro_verilog(fault_top=None):
    """The SRAM macros' Verilog (the 1-read and the 2-read module); with `fault_top` (a module name) their
    fault-injection port, reached by hierarchical reference to that module's `fault_en`, `fault_id`,
    `fault_addr` and `fault_bit`."""
    if fault_top is None:
        decls = body = ""
    else:
        decls, body = _SRAM_FAULT_DECLS.replace("{top}", fault_top), _SRAM_FAULT_BODY.replace("{top}", fault_top)
    return "".join(_SRAM_MACRO_TEMPLATE.format(n=n, ports=ports, reads=reads, decls=decls, body=body)
                   for n, (ports, reads) in ((1, ("", "")), (2, _SECOND_PORT)))


SRAM_MACRO_VERILOG = sram_macro_verilog()


class _SRAMMacro(Elaboratable):
    def __init__(self, mem):
        self.mem = mem

    def elaborate(self, platform):
        m = Module()
        mem = self.mem
        width = Shape.cast(mem.shape).width
        wp, = mem.write_ports
        rp, *more = mem.read_ports
        abits = max(1, len(rp.addr))
        second = {"i_re2": more[0].en, "i_raddr2": more[0].addr, "o_rdata2": more[0].data} if more else {}
        m.submodules.macro = Instance(
            f"stackcam_sram_{len(mem.read_ports)}r1w",
            p_WIDTH=width, p_DEPTH=mem.depth, p_ABITS=abits, p_LANES=len(wp.en), p_ID=_sram_id(mem),
            i_clk=ClockSignal(wp.domain), i_rclk=ClockSignal(rp.domain),
            i_we=wp.en, i_waddr=wp.addr, i_wdata=wp.data,
            i_re=rp.en, i_raddr=rp.addr, o_rdata=rp.data, **second,
        )
        return m


class SRAMMacroPlatform:
    """Amaranth platform hook: memories of at least `min_bits` with no initial contents, one write port (whole
    word or byte lanes) and one or two synchronous, non-transparent read ports (a second one in the first's clock
    domain) become SRAM macros."""

    def __init__(self, min_bits=64 * 1024):
        self.min_bits = min_bits
        self.macros = 0

    def _eligible(self, mem):
        width = Shape.cast(mem.shape).width
        if width * mem.depth < self.min_bits:
            return False
        if not _init_is_zero(mem):
            return False
        if len(mem.write_ports) != 1 or len(mem.read_ports) not in (1, 2):
            return False
        wp, rp = mem.write_ports[0], mem.read_ports[0]
        return (width % len(wp.en) == 0 and all(p.domain == rp.domain != "comb" and not p.transparent_for
                                                for p in mem.read_ports))

    def get_memory(self, mem):
        if self._eligible(mem):
            self.macros += 1
            return _SRAMMacro(mem)
        # Default lowering, exactly what Memory.elaborate does without a platform.
        return memory.Memory.elaborate(mem, None)


def _sram_id(mem):
    """The memory's identity (its `stackcam_sram` attribute: rtl.npu.core.SRAM_IDS; 0 for others), which a
    simulation build's macro uses to pick out the SRAM a fault is injected into (sim.harness)."""
    from .npu.core import SRAM_IDS
    return SRAM_IDS.get(str((mem.attrs or {}).get("stackcam_sram", "")), 0)


def _init_is_zero(mem):
    """Is every initial element of memory `mem` zero (its Memory.Init, through the public API)?"""
    return all((v if isinstance(v, int) else Const.cast(v).value) == 0 for v in mem.init)


def convert(component, name="top", sram_macros=True, min_macro_bits=64 * 1024):
    """Convert a component to Verilog text (with the SRAM macro module appended when it is used)."""
    platform = SRAMMacroPlatform(min_macro_bits) if sram_macros else None
    text = verilog.convert(component, name=name, platform=platform, emit_src=False)
    if platform is not None and platform.macros:
        text += "\n" + SRAM_MACRO_VERILOG
    return text
