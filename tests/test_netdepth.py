"""boards.netdepth: logic levels of a synthesized ECP5 netlist, on hand-built Yosys JSON netlists whose depths are
counted by hand."""

from stackcam.boards.netdepth import BRAM_LEVELS, MULT_LEVELS, deepest, logic_depth


def _netlist(cells, nets):
    """A top module from (name, type, {port: (direction, bits)}, parameters) tuples and {net name: bits}."""
    return {"modules": {"top": {
        "attributes": {"top": "00000000000000000000000000000001"},
        "cells": {name: {"type": ty, "parameters": params,
                         "port_directions": {p: d for p, (d, _) in ports.items()},
                         "connections": {p: bits for p, (_, bits) in ports.items()}}
                  for name, ty, ports, params in cells},
        "netnames": {n: {"hide_name": 0, "bits": bits} for n, bits in nets.items()}}}}


def _ff(name, d, q):
    return (name, "TRELLIS_FF", {"CLK": ("input", [1]), "DI": ("input", [d]), "Q": ("output", [q])}, {})


def _lut(name, ins, z):
    return (name, "LUT4", {"A": ("input", [ins[0]]), "B": ("input", [ins[1] if len(ins) > 1 else "0"]),
                           "C": ("input", ["0"]), "D": ("input", ["0"]), "Z": ("output", [z])}, {})


def test_levels_of_luts_muxes_and_carry_chains():
    # r0 -> LUT -> LUT -> PFUMX (from its LUT input: same slice, 0) -> L6MUX21 (select: routed, 1) -> r1: 3 levels.
    # r0 -> CCU2C (A0: 1) -> CIN of a second CCU2C -> S1 (along the chain: 0) -> LUT -> r2: 2 levels.
    cells = [
        _ff("r0", 2, 10), _lut("l1", [10], 11), _lut("l2", [11], 12),
        ("m1", "PFUMX", {"ALUT": ("input", [12]), "BLUT": ("input", [10]), "C0": ("input", [10]),
                         "Z": ("output", [13])}, {}),
        ("m2", "L6MUX21", {"D0": ("input", [10]), "D1": ("input", [10]), "SD": ("input", [13]),
                           "Z": ("output", [14])}, {}),
        _ff("r1", 14, 15),
        ("c1", "CCU2C", {"A0": ("input", [10]), "CIN": ("input", ["0"]), "COUT": ("output", [20]),
                         "S0": ("output", [21])}, {}),
        ("c2", "CCU2C", {"A0": ("input", ["0"]), "CIN": ("input", [20]), "S1": ("output", [22])}, {}),
        _lut("l3", [22], 23), _ff("r2", 23, 24),
    ]
    nets = {"clk": [1], "d0": [2], "q0": [10], "a": [11], "b": [12], "c": [13], "d": [14], "qa": [15],
            "carry": [20], "s0": [21], "sum": [22], "e": [23], "qb": [24]}
    depth, _, ends, _, _ = logic_depth(_netlist(cells, nets))
    assert (depth[11], depth[12], depth[13], depth[14]) == (1, 2, 2, 3)
    assert (depth[20], depth[22], depth[23]) == (1, 1, 2)
    assert sorted((d, n) for d, n, port, _ in ends if port == "DI") == [(0, "r0"), (2, "r2"), (3, "r1")]
    paths = deepest(_netlist(cells, nets), count=2)
    assert [(p["levels"], p["start"], p["end"], p["start_cell"]) for p in paths] == [
        (3, "q0", "qa", "TRELLIS_FF"), (2, "q0", "qb", "TRELLIS_FF")]
    assert paths[0]["path"] == ["q0", "a", "b", "c", "d"]


def test_block_ram_and_multipliers():
    # A block RAM's output starts at BRAM_LEVELS; a combinational multiplier adds MULT_LEVELS; a registered one ends
    # the path at its input and starts a new one at its output.
    cells = [
        ("ram", "DP16KD", {"CLKB": ("input", [1]), "ADB0": ("input", [30]), "DOB0": ("output", [31])}, {}),
        ("mul", "MULT18X18D", {"A0": ("input", [31]), "P0": ("output", [32])}, {"REG_INPUTA_CLK": "NONE"}),
        _lut("l", [32], 33), _ff("r", 33, 30),
        ("regmul", "MULT18X18D", {"A0": ("input", [33]), "CLK0": ("input", [1]), "P0": ("output", [34])},
         {"REG_INPUTA_CLK": "CLK0", "REG_OUTPUT_CLK": "CLK0"}),
        _ff("r2", 34, 35),
    ]
    nets = {"clk": [1], "q": [30], "dout": [31], "p": [32], "x": [33], "p2": [34], "q2": [35]}
    depth, _, ends, _, _ = logic_depth(_netlist(cells, nets))
    assert depth[31] == BRAM_LEVELS and depth[32] == BRAM_LEVELS + MULT_LEVELS and depth[33] == depth[32] + 1
    assert depth[34] == 0
    ends = {(n, port): d for d, n, port, _ in ends}
    assert ends[("r", "DI")] == BRAM_LEVELS + MULT_LEVELS + 1 and ends[("regmul", "A0")] == depth[33]
    assert ends[("r2", "DI")] == 0 and ends[("ram", "ADB0")] == 0
