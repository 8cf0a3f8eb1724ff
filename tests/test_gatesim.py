"""Gate-level check (slow; deselected in `nox -s tests`, run with `pytest -m slow`): the die's ECP5 netlist, from
the board build's Yosys recipe, simulated in Verilator with the ECP5 cell models, sends the same CSI-2 bytes at the
same cycles as the RTL, whose outputs equal the golden executor's; and a die that differs is caught.

The person-detector case needs the fpga preset's netlist (about 6 minutes of synthesis) and its Verilator model
(about 18 minutes) the first time, both cached in build/, then about 7 minutes. Only the fpga preset: the small
test dies are larger at the gate level (TWO_LANES: 62,924 LUT4 against the fpga preset's 39,385: no deep
pipelines, 4 pixels per clock), so they would not be quicker."""

import re

import numpy as np
import pytest

from stackcam.boards.gatesim import DIE, compare_runs, run_gatesim
from stackcam.rtl.params import preset
from stackcam.sim.dierun import run_die
from stackcam.sim.harness import TOP, harness_verilog
from stackcam.sim.verilator import CocotbBuild
from tests.dieutil import TWO_LANES, Model, photo_frames

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("verilator")]


def _assert_golden(model, run, xs=None, raws=None):
    for n, fr in enumerate(run.frames):
        expect = model.expected(raw=raws[n]) if raws is not None else model.expected(x=xs[n])
        assert len(fr.outputs) == len(expect)
        for got, want in zip(fr.outputs, expect):
            assert got is not None and int(np.count_nonzero(got != want)) == 0


def _inverting_wrapper(text):
    """Verilog `text` of module stackcam_die renamed stackcam_die_inner, behind a stackcam_die with the same ports
    that inverts bit 0 of the CSI-2 beat (a die that differs from the RTL in one wire)."""
    head = text[text.index(f"module {DIE}("):]
    body = head[:head.index("endmodule")]
    ports = re.findall(r"^\s*((?:input|output)\s[^;]*);", body, re.M)
    names = [p.split()[-1] for p in ports]
    assert "csi2__payload" in names and "clk" in names
    inner = text.replace(f"module {DIE}(", f"module {DIE}_inner(", 1)
    conns = ", ".join(f".{n}({'payload_raw' if n == 'csi2__payload' else n})" for n in names)
    width = next(p for p in ports if p.endswith("csi2__payload")).split()[1]
    return (inner + f"\nmodule {DIE}({', '.join(names)});\n" + "".join(f"  {p};\n" for p in ports)
            + f"  wire {width} payload_raw;\n  {DIE}_inner inner ({conns});\n"
            + "  assign csi2__payload = payload_raw ^ 1;\nendmodule\n")


def test_a_different_die_is_caught():
    """The comparison the check makes, against a die that differs in one wire (the RTL with bit 0 of the CSI-2
    beat inverted behind a wrapper: a quick build): it names the CSI-2 bytes, so the check can fail."""
    from stackcam.rtl.die import StackcamDie
    from stackcam.rtl.verilog import convert
    model = Model("first-light", TWO_LANES, seed=3)
    raws = photo_frames(TWO_LANES, 1, seed=5)
    text = _inverting_wrapper(convert(StackcamDie(TWO_LANES), name=DIE))
    build = CocotbBuild(harness_verilog(TWO_LANES, die_text=text), TOP, name="die-wrong").build()
    rtl = run_die(TWO_LANES, model.rom, raws, progress=False)
    wrong = run_die(TWO_LANES, model.rom, raws, progress=False, build=build)
    assert len(rtl.csi2_bytes) == len(wrong.csi2_bytes) > 200
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
    assert report["mode"] == "tensors" and len(gates.csi2_bytes) > x.size     # the input tensor's lines too
    assert np.array_equal(gates.frames[0].input_tensor, x)
    _assert_golden(model, gates, xs=[x])
