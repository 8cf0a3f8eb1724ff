"""The benchmark's peer: Arm's Vela compiler (PyPI `ethos-u-vela`, optional extra `peer`) on the very int8 model
the toolchain exported (quant.export), for the Ethos-U with the die's MAC count, read from Vela's own CSV files.

Vela runs as a separate process (`python -m ethosu.vela`) with a system configuration written here: the die's
nominal clock and every tensor in SRAM (one AXI port on SRAM; constants keep SRAM's characteristics), so the
comparison is of compute schedules, not of an external memory. Its summary CSV gives `cycles_npu` (the NPU's
compute estimate, the figure compared with the die's network cycles) and `cycles_total` (with the SRAM
transfers Vela does not overlap); the per-layer CSV (`--verbose-performance`) gives each operator's NPU cycles
and MACs.
"""

import csv
import importlib.metadata
import importlib.util
import math
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["ETHOS_U", "SYSTEM_CONFIG", "MEMORY_MODE", "ethos_config", "vela_version", "vela_ini", "run_vela",
           "read_vela_csv", "PeerError"]

# Every accelerator configuration Vela 5.2 knows, with its MACs per cycle (the number in its name).
ETHOS_U = {f"ethos-u{gen}-{m}": m for gen, macs in (("85", (128, 256, 512, 1024, 2048)),
                                                    ("65", (256, 512)), ("55", (32, 64, 128, 256)))
           for m in macs}
SYSTEM_CONFIG = "stackcam_sram"
MEMORY_MODE = "stackcam_sram_only"


class PeerError(Exception):
    """Vela could not give an estimate for this model (its message, one line); the bench writes the peer as
    absent with this reason."""


def ethos_config(macs):
    """The Ethos-U configuration whose MACs per cycle are closest to `macs` (in ratio), the newest generation on a
    tie: 2048 -> ethos-u85-2048, 128 -> ethos-u85-128, 64 -> ethos-u55-64, 16 -> ethos-u55-32."""
    return min(ETHOS_U, key=lambda name: (abs(math.log2(ETHOS_U[name] / macs)), -int(name[7:9])))


def vela_version():
    """The installed Vela's version, or None when it is not installed."""
    if importlib.util.find_spec("ethosu") is None or importlib.util.find_spec("ethosu.vela") is None:
        return None
    try:
        return importlib.metadata.version("ethos-u-vela")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def vela_ini(clock_mhz):
    """Vela's configuration file: a system at `clock_mhz` with SRAM on both AXI ports and a memory mode that puts
    constants, the arena and the cache in SRAM."""
    return f"""; written by stackcam (sim/peer.py): the die's clock, every tensor in on-chip SRAM
[System_Config.{SYSTEM_CONFIG}]
core_clock={clock_mhz * 1e6:.0f}
axi0_port=Sram
axi1_port=Sram
Sram_clock_scale=1.0
Sram_ports_used=2
Sram_burst_length=64
Sram_read_latency=8
Sram_write_latency=8
Sram_max_reads=8
Sram_max_writes=8

[Memory_Mode.{MEMORY_MODE}]
const_mem_area=Axi0
arena_mem_area=Axi0
cache_mem_area=Axi0
"""


def run_vela(tflite, macs_per_cycle, clock_mhz, keep=None, timeout=900):
    """Compile the .tflite bytes `tflite` with Vela for the Ethos-U closest to `macs_per_cycle` at `clock_mhz`;
    returns read_vela_csv's dict plus the command's settings. Raises PeerError when Vela is absent or fails.
    `keep`, a folder, receives Vela's output files (its CSVs and compiled model); by default they are deleted."""
    version = vela_version()
    if version is None:
        raise PeerError("Arm Vela is not installed (pip install ethos-u-vela, or the extra stackcam[peer])")
    accel = ethos_config(macs_per_cycle)
    with tempfile.TemporaryDirectory(prefix="stackcam-vela-") as tmp:
        tmp = Path(tmp)
        model = tmp / "network.tflite"
        model.write_bytes(tflite)
        (tmp / "vela.ini").write_text(vela_ini(clock_mhz))
        out = Path(keep) if keep is not None else tmp / "out"
        cmd = [sys.executable, "-m", "ethosu.vela", str(model), "--accelerator-config", accel,
               "--config", str(tmp / "vela.ini"), "--system-config", SYSTEM_CONFIG, "--memory-mode", MEMORY_MODE,
               "--output-dir", str(out), "--verbose-performance"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tmp)
        except subprocess.TimeoutExpired:
            raise PeerError(f"Vela did not finish within {timeout} s") from None
        if proc.returncode != 0:
            lines = [s for s in (proc.stderr + proc.stdout).splitlines() if s.strip()]
            raise PeerError(f"Vela failed (exit status {proc.returncode}): {lines[-1] if lines else 'no output'}")
        summary = sorted(out.glob("*_summary_*.csv"))
        per_layer = sorted(out.glob("*_per-layer.csv"))
        if not summary or not per_layer:
            raise PeerError(f"Vela wrote no summary or per-layer CSV in {out}")
        result = read_vela_csv(summary[0], per_layer[0], ETHOS_U[accel])
    result.update({"name": f"Arm Vela {version}", "version": version, "accelerator": accel,
                   "system_config": f"{clock_mhz:g} MHz, weights and activations in SRAM (vela.ini: "
                                    f"{SYSTEM_CONFIG}, {MEMORY_MODE})",
                   "clock_mhz": clock_mhz, "cpu_operators": sum(r["target"] != "NPU" for r in result["layers"])})
    return result


def _number(s):
    v = float(s)
    return int(v) if v.is_integer() else v


def read_vela_csv(summary_csv, per_layer_csv, macs_per_cycle):
    """The figures of Vela's summary and per-layer CSV files: NPU and total cycles, Vela's MAC count, MAC
    utilization (Vela's MACs over the MACs the NPU could do in its NPU cycles), the depthwise layers' share, and
    one row per operator (its output tensor's name, operator, target, NPU cycles, cycles with memory, MACs)."""
    with open(summary_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if len(rows) != 1:
        raise PeerError(f"{summary_csv}: {len(rows)} rows, expected 1")
    s = rows[0]
    try:
        cycles, total, macs = (_number(s[k]) for k in ("cycles_npu", "cycles_total", "nn_macs"))
    except (KeyError, ValueError) as e:
        raise PeerError(f"{summary_csv}: no usable {e}") from None
    with open(per_layer_csv, newline="") as f:
        layers = [{"name": r["Name"].strip(), "op": r["Original Operator"].strip(),
                   "vela_op": r["NNG Operator"].strip(), "target": r["Target"].strip(),
                   "cycles": _number(r["NPU"]), "op_cycles": _number(r["Op Cycles"]),
                   "macs": _number(r["MAC Count"])} for r in csv.DictReader(f)]
    dw = [r for r in layers if r["vela_op"] == "DepthwiseConv2D"]
    dw_macs, dw_cycles = sum(r["macs"] for r in dw), sum(r["cycles"] for r in dw)
    return {"macs_per_cycle": macs_per_cycle, "cycles": cycles, "cycles_total": total, "macs": macs,
            "utilization": macs / (macs_per_cycle * cycles) if cycles else 0.0,
            "depthwise": {"macs": dw_macs, "cycles": dw_cycles,
                          "utilization": dw_macs / (macs_per_cycle * dw_cycles) if dw_cycles else 0.0},
            "layers": layers}
