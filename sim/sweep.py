"""Design-space sweep: a grid of die configurations x networks, each point's analytic cycles, energy and area,
the RTL run on a sample of points to confirm the analytic counts exactly, CSV/JSON/Pareto outputs.

The points are independent tasks; `run_points` runs them on Ray (a local instance, or a cluster by address) or
in this process, shows progress, retries a failed point and reports it when it keeps failing: no point is ever
dropped. A point whose network does not fit the configuration ("does-not-fit") or whose parameters make no valid
configuration ("invalid-config") is a result, not a failure.
"""

import csv
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from stackcam.errors import StackcamError

__all__ = ["SweepError", "GRIDS", "grid_points", "point_config", "evaluate_point", "rtl_check", "run_points",
           "write_outputs", "CSV_FIELDS", "default_rtl_sample"]


class SweepError(StackcamError, ValueError):
    """A bad sweep request (unknown grid, bad grid file, bad Ray address)."""


# Configuration fields a grid may vary, and the networks it may run.
AXES = ("array", "sram", "clock_mhz", "im2col_pixels")

# Each grid: a base preset, lists of values per axis (array: (rows, cols); sram: (banks, bank KiB, weight banks)),
# the networks, and which points the RTL confirms (`rtl`: a list of {axis: value, "network": name} filters; the
# first point matching each filter is run).
GRIDS = {
    # The default: the imx500 class swept over its MAC array, SRAM, clock and im2col pixels for the three benchmark
    # networks, and a tiny-based family small enough to confirm in the RTL within the time budget.
    "default": [
        {"base": "imx500",
         "array": [(16, 32), (32, 64), (32, 128), (64, 64)],
         "sram": [(64, 128, 44), (56, 128, 38), (32, 128, 20)],
         "clock_mhz": [200.0, 400.0],
         "im2col_pixels": [1, 4],
         "networks": ["zoo:mobilenet_v1_1.0_224", "zoo:mobilenet_v1_0.25_96_2", "zoo:blazeface"]},
        {"base": "tiny",
         "array": [(4, 4), (4, 8)],
         "sram": [(16, 64, 8)],
         "clock_mhz": [100.0],
         "im2col_pixels": [1, 4],
         "networks": ["zoo:mobilenet_v1_0.25_96_2", "zoo:first-light"],
         "rtl": [{"array": (4, 8), "im2col_pixels": 1, "network": "zoo:mobilenet_v1_0.25_96_2"},
                 {"array": (4, 4), "im2col_pixels": 4, "network": "zoo:first-light"}]},
    ],
    # A few seconds: for tests and a first look.
    "tiny": [
        {"base": "tiny",
         "array": [(4, 4), (4, 8)],
         "sram": [(16, 64, 8)],
         "clock_mhz": [100.0, 200.0],
         "im2col_pixels": [1],
         "networks": ["zoo:first-light"]},
    ],
}

CSV_FIELDS = ("id", "network", "base", "array_rows", "array_cols", "sram_banks", "sram_bank_kib", "weight_banks",
              "clock_mhz", "im2col_pixels", "status", "attempts", "cycles", "ms", "macs", "utilization",
              "energy_mj", "pj_per_mac", "tops_per_w", "die_mw_30fps", "area_mm2", "logic_mm2", "sram_mm2",
              "node", "rtl_checked", "rtl_equal", "error")


@dataclass(frozen=True)
class Point:
    id: int
    base: str
    network: str
    array: tuple
    sram: tuple
    clock_mhz: float
    im2col_pixels: int
    rtl: bool = False
    extra: dict = field(default_factory=dict, compare=False)

    def as_dict(self):
        return {"id": self.id, "base": self.base, "network": self.network, "array": list(self.array),
                "sram": list(self.sram), "clock_mhz": self.clock_mhz, "im2col_pixels": self.im2col_pixels,
                "rtl": self.rtl}


def _load_grid(grid):
    if isinstance(grid, list):
        return grid
    if grid in GRIDS:
        return GRIDS[grid]
    path = Path(grid)
    if not path.is_file():
        raise SweepError(f"unknown grid {grid!r}: give one of {', '.join(GRIDS)} or a JSON file of grid families")
    try:
        families = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SweepError(f"grid file {grid}: not readable JSON ({e})") from None
    if not isinstance(families, list) or not all(isinstance(f, dict) for f in families):
        raise SweepError(f"grid file {grid}: expected a list of grid families (objects)")
    return families


def grid_points(grid, networks=None):
    """The points of `grid` (a GRIDS name, a JSON file, or a list of families) in a fixed order; `networks`, if
    given, replaces every family's network list."""
    from stackcam.rtl.params import PRESETS
    points = []
    for fam in _load_grid(grid):
        base = fam.get("base", "imx500")
        if base not in PRESETS:
            raise SweepError(f"grid family base {base!r} is not a preset ({', '.join(PRESETS)})")
        missing = [a for a in AXES if not fam.get(a)]
        if missing:
            raise SweepError(f"grid family on {base!r} has no values for {missing[0]!r}")
        nets = list(networks or fam.get("networks") or [])
        if not nets:
            raise SweepError(f"grid family on {base!r} names no networks")
        checks = list(fam.get("rtl", []))
        for net, arr, sram, clk, g in itertools.product(nets, fam["array"], fam["sram"], fam["clock_mhz"],
                                                        fam["im2col_pixels"]):
            p = Point(id=len(points), base=base, network=net, array=tuple(arr), sram=tuple(sram),
                      clock_mhz=float(clk), im2col_pixels=int(g))
            for f in list(checks):
                if all((tuple(v) if isinstance(v, list) else v) == (p.network if k == "network" else getattr(p, k))
                       for k, v in f.items()):
                    p = Point(**{**p.__dict__, "rtl": True})
                    checks.remove(f)
            points.append(p)
    return points


def point_config(point):
    """The DieConfig of a point (ConfigError if the combination is invalid); the preset itself, name and all, when
    the point changes nothing (so its Verilator build is the preset's, cached)."""
    from stackcam.rtl.params import preset
    rows, cols = point.array
    banks, kib, wbanks = point.sram
    base = preset(point.base)
    if (rows, cols, banks, kib * 1024, wbanks, point.clock_mhz, point.im2col_pixels) == (
            base.array_rows, base.array_cols, base.sram_banks, base.sram_bank_bytes, base.weight_banks,
            base.clock_mhz, base.im2col_pixels):
        return base
    name = (f"{point.base}-a{rows}x{cols}-s{banks}x{kib}k{wbanks}-c{point.clock_mhz:g}-g{point.im2col_pixels}")
    return preset(point.base).with_(name=name, array_rows=rows, array_cols=cols, sram_banks=banks,
                                    sram_bank_bytes=kib * 1024, weight_banks=wbanks, clock_mhz=point.clock_mhz,
                                    im2col_pixels=point.im2col_pixels)


def _row(point, config=None):
    rows, cols = point.array
    banks, kib, wbanks = point.sram
    return {"id": point.id, "network": point.network, "base": point.base, "array_rows": rows, "array_cols": cols,
            "sram_banks": banks, "sram_bank_kib": kib, "weight_banks": wbanks, "clock_mhz": point.clock_mhz,
            "im2col_pixels": point.im2col_pixels, "status": "", "attempts": 0, "rtl_checked": point.rtl,
            "rtl_equal": None, "error": ""}


def evaluate_point(point, prepare, node="22nm", log=None):
    """One point's analytic figures: a dict with every CSV field (status "ok" or "does-not-fit"). `prepare` is the
    command line's model registry, `prepare(network, config)`. Raises on anything unexpected (the runner retries)."""
    from stackcam.quant.timing import program_activity, program_cycles
    from stackcam.rtl.params import ConfigError

    from .area import area_estimate
    from .energy import energy_report
    from .metadata import frame_bytes
    row = _row(point)
    try:
        config = point_config(point)
    except ConfigError as e:
        row.update(status="invalid-config", error=str(e).splitlines()[0][:300])
        return row
    try:
        prepared = prepare(point.network, config)
    except StackcamError as e:
        row.update(status="does-not-fit", error=str(e).splitlines()[0][:300])
        return row
    compiled = prepared.compiled
    cycles = program_cycles(config, compiled.descriptors)["total"]
    area = area_estimate(config, node)
    shapes = [t["hwc"] for t in prepared.io["die_outputs"]]
    e = energy_report(config, compiled, node=node, cycles=cycles, gates=area["gates"],
                      output_bytes=sum(h * w * c for h, w, c in shapes),
                      csi2_bytes=frame_bytes(config, "metadata", shapes))
    macs = e["macs"]
    row.update(status="ok", cycles=cycles, ms=config.cycles_to_ms(cycles), macs=macs,
               utilization=macs / (config.macs_per_cycle * cycles) if cycles else 0.0,
               energy_mj=e["inference_mj"], pj_per_mac=e["pj_per_mac"], tops_per_w=e["tops_per_w"],
               die_mw_30fps=e["frame"]["die_mw"], area_mm2=area["mm2"], logic_mm2=area["logic_mm2"],
               sram_mm2=area["sram_mm2"], node=node)
    if point.rtl:
        row["rtl_equal"], row["rtl_detail"] = rtl_check(config, prepared, program_activity, log=log)
    return row


def rtl_check(config, prepared, program_activity, log=None):
    """Run the point's network through the die in Verilator (tensor port, one seeded random input) and compare
    every descriptor's cycles and activity counters with the analytic model. Returns (equal, detail)."""
    import numpy as np

    from stackcam.quant.program import OPCODES
    from stackcam.quant.romimage import load_rom
    from stackcam.quant.timing import program_cycles

    from .cyclemodel import predict_bank_activity
    from .dierun import run_die
    from .energy import measured_activity
    compiled = prepared.compiled
    h, w, c = prepared.io["input"]["hwc"]
    x = np.random.default_rng(5).integers(-128, 128, (h, w, c)).astype(np.int8)
    t0 = time.time()
    run = run_die(config, prepared.rom, tensors=[x], progress=False, log=log)
    n = sum(1 for d in compiled.descriptors if d.opcode != OPCODES["END"])
    cyc = program_cycles(config, compiled.descriptors)
    measured = measured_activity(run.descriptor_counters, run.descriptor_activity)[:n]
    predicted = program_activity(config, compiled.descriptors)["descriptors"]
    got_cycles = [cy for cy, _ in run.descriptor_counters][:n]
    banks = predict_bank_activity(config, compiled.descriptors, weights=load_rom(prepared.rom, config).weight_sram())
    banks_equal = all(run.bank_counters.get(k) == banks[k] for k in ("act_reads", "act_write_bytes", "weight_reads"))
    equal = (got_cycles == cyc["descriptors"] and run.counters["npu_cycles"] == cyc["total"]
             and measured == predicted and banks_equal)
    detail = {"descriptors": n, "npu_cycles": run.counters["npu_cycles"], "model_cycles": cyc["total"],
              "cycles_equal": got_cycles == cyc["descriptors"], "activity_equal": measured == predicted,
              "banks_equal": banks_equal, "wall_s": time.time() - t0}
    return equal, detail


def default_rtl_sample(points):
    return [p for p in points if p.rtl]


def _progress(done, total, t0, failures, log):
    el = time.time() - t0
    eta = el / done * (total - done) if done else 0
    log(f"sweep: {done}/{total} points ({100 * done / total:.0f}%), {el:.0f} s, about {eta:.0f} s left"
        + (f", {failures} retried" if failures else ""))


def run_points(points, task, *, backend="ray", address=None, workers=2, retries=2, log=print):
    """Run `task(point)` (a picklable function returning a row dict) for every point: on Ray (`address` None: a
    local instance of `workers` CPUs on the loopback address; else the cluster there) or in this process
    (`backend="serial"`). A point that raises is reported and retried up to `retries` more times; if it still
    fails its row says "failed" with the error. Rows come back in point order, one per point."""
    t0 = time.time()
    rows = {}
    attempts = dict.fromkeys((p.id for p in points), 0)
    failures = 0
    total = len(points)

    def failed(p, err):
        nonlocal failures
        err = getattr(err, "cause", None) or err           # a RayTaskError carries the task's own exception
        attempts[p.id] += 1
        msg = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"[:300]
        if attempts[p.id] <= retries:
            failures += 1
            log(f"sweep: point {p.id} ({p.network}) failed (attempt {attempts[p.id]}): {msg}; retrying")
            return True
        log(f"sweep: point {p.id} ({p.network}) FAILED after {attempts[p.id]} attempts: {msg}")
        rows[p.id] = dict(_row(p), status="failed", attempts=attempts[p.id], error=msg)
        return False

    def finished(p, row):
        attempts[p.id] += 1
        rows[p.id] = dict(row, attempts=attempts[p.id])
        _progress(len(rows), total, t0, failures, log)

    if backend == "serial":
        for p in points:
            while True:
                try:
                    row = task(p)
                except Exception as e:       # reported and retried; the final failure is a row
                    if failed(p, e):
                        continue
                    break
                finished(p, row)
                break
    elif backend == "ray":
        # Keep Ray on the loopback address (on Linux it otherwise advertises the machine's outward address).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        import ray
        started_here = _ray_init(ray, address, workers)
        try:
            remote = ray.remote(num_cpus=1, max_retries=0)(_call)
            pending = {remote.remote(task, p): p for p in points}
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=30)
                if not ready:
                    _progress(len(rows), total, t0, failures, log)
                    continue
                for ref in ready:
                    p = pending.pop(ref)
                    try:
                        row = ray.get(ref)
                    except Exception as e:   # a task's exception or a lost worker: reported and retried
                        if failed(p, e):
                            pending[remote.remote(task, p)] = p
                        continue
                    finished(p, row)
        finally:
            if started_here:
                ray.shutdown()
    else:
        raise SweepError(f"unknown backend {backend!r} (ray, serial)")
    return [rows[p.id] for p in points]


def _call(task, point):
    """The Ray task: `task` travels pickled (by reference to its module-level function)."""
    return task(point)


def _ray_init(ray, address, workers):
    """Connect to the cluster at `address`, or start a local instance on the loopback address. Returns whether
    this call started Ray (so the caller shuts it down)."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if ray.is_initialized():
        return False
    try:
        if address:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        else:
            ray.init(address="local", num_cpus=workers, include_dashboard=False, _node_ip_address="127.0.0.1",
                     logging_level="ERROR", log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise SweepError(f"cannot start or reach Ray{f' at {address}' if address else ''}: "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return True


def write_outputs(rows, out_dir, meta, log=print):
    """sweep.csv, sweep.json (rows and `meta`) and pareto.png (latency against energy, marker size by area, the
    Pareto front of each network drawn) in `out_dir`; written atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "sweep.csv.tmp"
    with open(tmp, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        wr.writeheader()
        for r in rows:
            wr.writerow({k: ("" if r.get(k) is None else r.get(k, "")) for k in CSV_FIELDS})
    tmp.replace(out_dir / "sweep.csv")
    tmp = out_dir / "sweep.json.tmp"
    tmp.write_text(json.dumps({"meta": meta, "points": rows}, indent=1, default=str) + "\n")
    tmp.replace(out_dir / "sweep.json")
    _pareto_plot(rows, out_dir / "pareto.png")
    log(f"sweep: wrote {out_dir / 'sweep.csv'}, {out_dir / 'sweep.json'} and {out_dir / 'pareto.png'}")


def pareto_front(rows):
    """Rows of status ok not dominated in (ms, energy_mj) by another row of the same network."""
    ok = [r for r in rows if r.get("status") == "ok"]
    front = []
    for r in ok:
        if not any(o is not r and o["network"] == r["network"] and o["ms"] <= r["ms"]
                   and o["energy_mj"] <= r["energy_mj"] and (o["ms"] < r["ms"] or o["energy_mj"] < r["energy_mj"])
                   for o in ok):
            front.append(r)
    return front


def _pareto_plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ok = [r for r in rows if r.get("status") == "ok"]
    fig, ax = plt.subplots(figsize=(9, 6))
    nets = sorted({r["network"] for r in ok})
    colors = dict(zip(nets, plt.cm.tab10.colors))
    amax = max((r["area_mm2"] for r in ok), default=1.0)
    front = {id(r) for r in pareto_front(rows)}
    for net in nets:
        pts = [r for r in ok if r["network"] == net]
        ax.scatter([r["ms"] for r in pts], [r["energy_mj"] for r in pts],
                   s=[20 + 400 * r["area_mm2"] / amax for r in pts], color=colors[net], alpha=0.45, label=net,
                   edgecolors="none")
        fr = sorted((r for r in pts if id(r) in front), key=lambda r: r["ms"])
        ax.plot([r["ms"] for r in fr], [r["energy_mj"] for r in fr], "-", color=colors[net], linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("latency per inference (ms, analytic = RTL)")
    ax.set_ylabel("energy per inference (mJ)")
    ax.set_title(f"{len(ok)} points ({len(rows) - len(ok)} not fitting or failed); marker area ~ die area "
                 f"(largest {amax:.1f} mm^2); lines: Pareto fronts", fontsize=9)
    if nets:
        ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
