"""What keeps the die's Verilator model fast: the harness's top-level inputs do not fan out into the die.

Verilator evaluates the logic that reads a top-level input (its input-combinational region, `ico`) at every
eval() call, i.e. at both clock edges, and again after the edge. The harness registers the die's reset
(`sim.harness`): straight from the port, every register's next-state logic reads it, and the whole die was
evaluated three times per cycle (a quarter of the model's code sat in that region; the harness change made the
imx500 model use about 15% less CPU per cycle, with every cycle count, counter and CSI-2 byte unchanged).
"""

import re
from pathlib import Path

import pytest

from stackcam.rtl.params import preset
from stackcam.sim.dierun import build_die

pytestmark = pytest.mark.xdist_group("verilator")

# Verilator puts a clock's logic in `nba_sequent` functions, and, when several clocks trigger it (the gated clocks of
# `DieConfig.clock_gating`), the combinational logic between them in `nba_comb` functions, run when one of their
# triggers fired: both are the clock edge's code.
_FUNC = re.compile(r"^void Vtop___024root___(ico|nba)_(?:sequent|comb)__TOP__\d+\(Vtop___024root\* vlSelf\) \{$")


def region_lines(build_dir):
    """Lines of C++ Verilator generated for the input-combinational (`ico`) and clock-edge (`nba`) regions (its
    sequential and combinational functions)."""
    lines = {"ico": 0, "nba": 0}
    for path in Path(build_dir).glob("Vtop___024root__*.cpp"):
        region = None
        for line in path.read_text().splitlines():
            found = _FUNC.match(line)
            if found:
                region = found.group(1)
            elif region and line == "}":
                region = None
            elif region:
                lines[region] += 1
    return lines


def test_harness_inputs_stay_out_of_the_die():
    build, _ = build_die(preset("tiny"))
    lines = region_lines(build.dir)
    assert lines["nba"] > 10_000, lines            # the model's per-cycle code was found
    # Registered reset: the input region is what the players' limits, the register bus and the PHY's stall reach
    # (6.6% of the edge's code here, 2.3% on imx500); with the reset straight from its port it was about 25%
    # (demo and imx500 alike), and this fails.
    assert lines["ico"] * 10 < lines["nba"], lines

