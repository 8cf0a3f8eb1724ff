"""Gate-level check (slow: a synthesis and a netlist simulation each; run by `nox -s gatesim`, deselected in
`nox -s tests`): the die's ECP5 netlist, from the board build's Yosys recipe, simulated in Verilator with the ECP5
cell models, sends the same CSI-2 bytes at the same cycles as the RTL, whose outputs equal the golden executor's;
and a netlist that differs is caught."""

import re

import numpy as np
import pytest

from stackcam.boards.gatesim import (
    DIE,
    GATE_BUILD_ARGS,
    compare_runs,
    gate_harness_verilog,
    run_gatesim,
    synthesize_die,
)
from stackcam.rtl.params import preset
from stackcam.sim.dierun import run_die
from stackcam.sim.harness import TOP
from stackcam.sim.verilator import CocotbBuild
from tests.dieutil import TWO_LANES, Model, photo_frames

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("verilator")]


def _assert_golden(model, run, xs=None, raws=None):
    for n, fr in enumerate(run.frames):
        expect = model.expected(raw=raws[n]) if raws is not None else model.expected(x=xs[n])
        assert len(fr.outputs) == len(expect)
        for got, want in zip(fr.outputs, expect):
            assert got is not None and int(np.count_nonzero(got != want)) == 0


def test_small_die_netlist_sends_the_rtls_bytes():
    """Two RAW frames through the ISP of a small die (P = 4, 2 CSI-2 lanes): byte- and cycle-identical."""
    model = Model("first-light", TWO_LANES, seed=3)
    raws = photo_frames(TWO_LANES, 2, seed=5)
    report, rtl, gates = run_gatesim(TWO_LANES, model.rom, raws=raws, log=lambda s: None)
    assert report["equal"], report["differences"]
    assert rtl.csi2_bytes == gates.csi2_bytes and len(rtl.csi2_bytes) > 1000
    assert rtl.cycles == gates.cycles and rtl.frame_last_byte == gates.frame_last_byte
    assert len(gates.frames) == 2
    _assert_golden(model, gates, raws=raws)
    assert report["synthesis_cells"].get("DP16KD", 0) > 0 and report["synthesis_cells"].get("LUT4", 0) > 1000


def test_a_different_netlist_is_caught():
    """The same netlist with bit 0 of the CSI-2 beat's data inverted behind a wrapper: the comparison names the
    CSI-2 bytes (the check can fail)."""
    model = Model("first-light", TWO_LANES, seed=3)
    raws = photo_frames(TWO_LANES, 1, seed=5)
    netlist, _ = synthesize_die(TWO_LANES, log=lambda s: None)
    text = netlist.read_text()
    header = text[text.index(f"module {DIE}("):]
    ports = re.findall(r"^  ((?:input|output)[^;]*);", header[:header.index("\n  wire")], re.M)
    names = [p.split()[-1] for p in ports]
    inner = text.replace(f"module {DIE}(", f"module {DIE}_inner(", 1)
    conns = ", ".join(f".{n}({'payload_raw' if n == 'csi2__payload' else n})" for n in names)
    width = next(p for p in ports if p.endswith("csi2__payload")).split()[1]
    wrapper = (f"module {DIE}({', '.join(names)});\n" + "".join(f"  {p};\n" for p in ports)
               + f"  wire {width} payload_raw;\n  {DIE}_inner inner ({conns});\n"
               + "  assign csi2__payload = payload_raw ^ 1;\nendmodule\n")
    build = CocotbBuild(gate_harness_verilog(TWO_LANES, inner + "\n" + wrapper), TOP, name="gates-wrong",
                        build_args=GATE_BUILD_ARGS).build()
    rtl = run_die(TWO_LANES, model.rom, raws, progress=False)
    wrong = run_die(TWO_LANES, model.rom, raws, progress=False, build=build)
    diffs = compare_runs(rtl, wrong)
    assert diffs and diffs[0].startswith("CSI-2 bytes differ"), diffs


def test_person_detector_netlist_on_the_fpga_preset():
    """The issue's case: the person detector (MobileNet V1 0.25 96, 2 classes) on the fpga preset, its input
    tensor on the tensor port (the astronaut through the ISP's reference), netlist against RTL."""
    config = preset("fpga")
    model = Model("zoo:mobilenet_v1_0.25_96_2", config)
    raw = photo_frames(config, 1, seed=0)[0]
    from stackcam.sim.dierun import model_registers
    _, geometry, quant = model_registers(config, model.io)
    from stackcam.quant.isp import isp_reference
    x = isp_reference(raw, config, quant, geometry)
    report, rtl, gates = run_gatesim(config, model.rom, tensors=[x], log=lambda s: None)
    assert report["equal"], report["differences"]
    assert rtl.counters["npu_cycles"] == gates.counters["npu_cycles"] > 100_000
    _assert_golden(model, gates, xs=[x])
