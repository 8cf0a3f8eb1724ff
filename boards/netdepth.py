"""Logic depth of a synthesized ECP5 netlist: the deepest register-to-register paths, found in seconds from Yosys's
JSON (after `synth_ecp5` / `synth_lattice -family ecp5`), before the hour that placement and routing take.

Depth is counted in logic levels, each a LUT's worth of logic and one routed hop, the unit a path's delay grows
by on an ECP5 (roughly 0.8 ns a level at speed grade 6 on a well-filled LFE5U-85F, measured against nextpnr's
placer estimate on this design; treat it as a ranking, not a delay):

- LUT4: one level. PFUMX / L6MUX21 (the wide-LUT muxes inside a slice): none from their LUT inputs, one from the
  select (a routed signal).
- CCU2C (carry chain): one level from A/B/C/D into the chain; none along it (CIN -> COUT / S).
- TRELLIS_DPR16X4 (distributed RAM): one level from the read address to the data.
- MULT18X18D without input or output registers: MULT_LEVELS levels (a combinational 18x18 multiplier); with them
  it starts or ends paths.
- Paths start at flip-flop outputs, block RAM and registered multiplier outputs (DP16KD counts BRAM_LEVELS: its
  clock-to-output is several LUTs' worth) and top-level inputs; they end at flip-flop, block RAM, registered
  multiplier and distributed-RAM write inputs.

`deepest(netlist_json)` returns the deepest paths, one per endpoint group (a register bus: the endpoint's net name
without its bit), each with its depth, the start and end net names and the cells along the path.
"""

import json
import re
from collections import defaultdict

__all__ = ["deepest", "logic_depth", "MULT_LEVELS", "BRAM_LEVELS"]

MULT_LEVELS = 4
BRAM_LEVELS = 3
_IN_SLICE = {"PFUMX": ("ALUT", "BLUT"), "L6MUX21": ("D0", "D1")}


def _registered(params, *keys):
    return any(str(params.get(k, "NONE")) not in ("NONE", "") for k in keys)


def _arc(cell_type, params, in_port, out_port):
    """Levels from `in_port` to `out_port` through a cell, or None when the cell does not connect them
    combinationally."""
    if cell_type == "LUT4":
        return 1
    if cell_type in _IN_SLICE:
        return 0 if in_port in _IN_SLICE[cell_type] else 1
    if cell_type == "CCU2C":
        return 0 if in_port == "CIN" else 1
    if cell_type == "TRELLIS_DPR16X4":
        return 1 if in_port.startswith("RAD") and out_port.startswith("DO") else None
    if cell_type == "MULT18X18D":
        if _registered(params, "REG_INPUTA_CLK", "REG_INPUTB_CLK", "REG_PIPELINE_CLK", "REG_OUTPUT_CLK"):
            return None
        return MULT_LEVELS
    return None


def _start(cell_type, params):
    """Levels at a path's start: a sequential or I/O cell's output."""
    if cell_type == "DP16KD":
        return BRAM_LEVELS
    if cell_type == "MULT18X18D" and not _registered(params, "REG_OUTPUT_CLK"):
        return MULT_LEVELS      # registered inputs only: the multiplier's logic follows them
    return 0


def _is_endpoint(cell_type, params, port):
    if cell_type == "TRELLIS_FF":
        return port != "CLK"
    if cell_type == "DP16KD":
        return not port.startswith("CLK")
    if cell_type == "MULT18X18D":
        return _registered(params, "REG_INPUTA_CLK", "REG_INPUTB_CLK") and not port.startswith("CLK")
    if cell_type == "TRELLIS_DPR16X4":
        return not port.startswith("RAD") and port != "WCK"
    return False


def _top_module(netlist):
    modules = netlist["modules"]
    tops = [name for name, mod in modules.items() if str(mod.get("attributes", {}).get("top", "0")).strip("0")]
    return modules[tops[0] if tops else next(iter(modules))]


def logic_depth(netlist):
    """Arrival depth of every net bit of the top module: (depth by bit, the predecessor bit on the deepest path,
    endpoints as (depth, cell name, port, bit), bit -> readable net name, bit -> driving cell type)."""
    top = _top_module(netlist)
    cells = {n: c for n, c in top["cells"].items() if not c["type"].startswith("$scopeinfo")}
    names = {}
    for name, net in top["netnames"].items():
        hidden = net.get("hide_name", 0)
        for bit, b in enumerate(net["bits"]):
            if isinstance(b, int):
                label = name if len(net["bits"]) == 1 else f"{name}[{bit}]"
                old = names.get(b)
                if old is None or (not hidden and (old[0] or len(label) < len(old[1]))):
                    names[b] = (bool(hidden), label)
    names = {b: label for b, (_, label) in names.items()}
    driver, inputs = {}, {}
    for n, c in cells.items():
        dirs = c.get("port_directions", {})
        ins = []
        for port, bits in c["connections"].items():
            for b in bits:
                if not isinstance(b, int):
                    continue
                if dirs.get(port) == "output":
                    driver[b] = (n, port)
                else:
                    ins.append((port, b))
        inputs[n] = ins
    depth, prev = {}, {}
    for b in list(driver):
        if b in depth:
            continue
        stack = [(b, False)]
        while stack:
            x, expanded = stack.pop()
            if x in depth:
                continue
            if x not in driver:
                depth[x], prev[x] = 0, None
                continue
            n, out_port = driver[x]
            c = cells[n]
            arcs = [(b2, a) for port, b2 in inputs[n]
                    if (a := _arc(c["type"], c.get("parameters", {}), port, out_port)) is not None]
            if not expanded:
                stack.append((x, True))
                stack.extend((b2, False) for b2, _ in arcs if b2 not in depth)
                continue
            best, via = _start(c["type"], c.get("parameters", {})), None
            for b2, a in arcs:
                if depth.get(b2, 0) + a > best:     # a combinational loop leaves a bit unset: counted as 0
                    best, via = depth.get(b2, 0) + a, b2
            depth[x], prev[x] = best, via
    ends = []
    for n, c in cells.items():
        for port, b in inputs[n]:
            if _is_endpoint(c["type"], c.get("parameters", {}), port):
                ends.append((depth.get(b, 0), n, port, b))
    kinds = {b: cells[n]["type"] for b, (n, _) in driver.items()}
    return depth, prev, ends, names, kinds


def _group(label):
    """An endpoint's group: its net's name without the bit index, numbers (bank, bit, instance) as '#'."""
    return re.sub(r"\d+", "#", label.split("[")[0])


def deepest(netlist, count=20, min_levels=0):
    """The `count` deepest endpoint groups of the netlist (a dict from Yosys's write_json, or its path), deepest
    first: dicts with `levels`, `end`, `end_port`, `start`, `start_cell` (its type), `path` (the net names from
    start to end) and `endpoints` (how many endpoints of the group are at least `min_levels` deep)."""
    if not isinstance(netlist, dict):
        with open(netlist) as f:
            netlist = json.load(f)
    depth, prev, ends, names, kinds = logic_depth(netlist)
    top = _top_module(netlist)
    cell_out = {}
    for n, c in top["cells"].items():
        for port in ("Q", "Z", "S0", "DO0", "DOA0", "P0"):
            bits = c["connections"].get(port, ())
            if bits and isinstance(bits[0], int):
                cell_out[n] = names.get(bits[0], n)
                break
    members = defaultdict(int)
    for d, n, _, _ in ends:
        if d >= min_levels:
            members[_group(cell_out.get(n, n))] += 1
    groups = {}
    for d, n, port, b in sorted(ends, key=lambda e: -e[0]):
        key = _group(cell_out.get(n, n))
        if key in groups:
            continue
        path, x = [], b
        while x is not None:
            path.append(x)
            x = prev.get(x)
        path.reverse()
        groups[key] = {"levels": d, "end": cell_out.get(n, n), "end_port": port,
                       "start": names.get(path[0], str(path[0])), "start_cell": kinds.get(path[0], "input"),
                       "path": [names.get(x, str(x)) for x in path]}
        if len(groups) >= count:
            break
    for key, g in groups.items():
        g["endpoints"] = members[key]
    return list(groups.values())
