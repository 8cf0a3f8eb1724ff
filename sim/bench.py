"""Benchmark: networks through the whole die in the RTL, cycle counts from its counters, a JSON report and a
per-layer bar chart per network; the analytic cycle model's prediction next to the RTL's."""

import json
import time
from pathlib import Path

import numpy as np

from stackcam.quant.isp import isp_reference

from .dierun import model_registers, run_die
from .frame_source import bayer_frame, load_image
from .simulate import golden_die_outputs, layer_rows

__all__ = ["BENCHMARKS", "run_benchmark"]

# (report name, model, configuration preset)
BENCHMARKS = {
    "mobilenet_v1": ("zoo:mobilenet_v1_1.0_224", "imx500"),
    "mobilenet_v1_0.25_96": ("zoo:mobilenet_v1_0.25_96_2", "imx500"),
    "blazeface": ("zoo:blazeface", "imx500"),
}


def _plot(rows, title, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(max(8, 0.28 * len(rows)), 4.5))
    x = np.arange(len(rows))
    cycles = [r["cycles"] for r in rows]
    colors = ["#d62728" if r["op"].startswith("DEPTHWISE") else "#1f77b4" for r in rows]
    ax.bar(x, cycles, color=colors)
    ax.set_xticks(x)
    ax.set_xticklabels([f"{r['index']}" for r in rows], fontsize=6)
    ax.set_xlabel("layer (red: depthwise)")
    ax.set_ylabel("cycles (RTL counters)")
    ax2 = ax.twinx()
    ax2.plot(x, [100 * r["utilization"] for r in rows], "k.", markersize=4)
    ax2.set_ylabel("MAC utilization %")
    ax2.set_ylim(0, 105)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def energy_section(name, config, prepared, run, out_dir, node="22nm", log=print):
    """The report's "energy", "area" and "activity" keys: the energy model (`sim.energy`) on the die's own activity
    counters, the area model (`sim.area`, its gates' leakage in the energy), the analytic model's counts beside the
    RTL's, and the breakdown chart <name>_energy.png."""
    from stackcam.quant.timing import program_activity

    from .area import AreaError, area_estimate
    from .energy import energy_report, measured_activity, plot_breakdown
    from .metadata import frame_bytes
    compiled = prepared.compiled
    measured = measured_activity(run.descriptor_counters, run.descriptor_activity)
    predicted = program_activity(config, compiled.descriptors)["descriptors"]
    outs = prepared.io["die_outputs"]
    shapes = [t["hwc"] for t in outs]
    fr = run.frames[0] if run.frames else None
    meta = fr.csi2_bytes if fr and fr.csi2_bytes else frame_bytes(config, "metadata", shapes)
    try:
        area = area_estimate(config, node)
    except AreaError as err:
        area = {"error": str(err), "gates": None}
    e = energy_report(config, compiled, node=node, activity=measured, cycles=run.counters["npu_cycles"],
                      descriptor_cycles=[c for c, _ in run.descriptor_counters][:len(measured)],
                      gates=area["gates"], output_bytes=sum(h * w * c for h, w, c in shapes), csi2_bytes=meta,
                      raw10_frame_bytes=frame_bytes(config, "image", shapes), rom_bytes=len(prepared.rom))
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    png = Path(out_dir) / f"{name}_energy.png"
    plot_breakdown(e, png, f"{name} on {config.name}: energy per inference ({e['node']})")
    log(f"  energy ({e['node']}): {e['inference_mj']:.3f} mJ per inference, {e['pj_per_mac']:.3f} pJ/MAC, "
        f"{e['tops_per_w']:.2f} TOPS/W; die {e['frame']['die_mw']:.1f} mW at {config.frame_rate:g} fps "
        f"(IMX500 published 4.97 TOPS/W, {e['published']['imx500_isscc2021']['mobilenet_v1_mj']:.3f} mJ; "
        f"CamJ 2.50 mJ); wrote {png}")
    if "mm2" in area:
        log(f"  area ({node}): {area['mm2']:.2f} mm^2 (logic {area['logic_mm2']:.2f}, SRAM {area['sram_mm2']:.2f}; "
            f"{area['basis']})")
    return {"energy": e, "area": area, "activity": {"rtl_equals_model": measured == predicted,
                                      "rtl_total": e["activity_total"]}}


def run_benchmark(name, out_dir, prepare, log=print):
    """Benchmark `name` (of BENCHMARKS); `prepare(model, config)` is the command line's model registry."""
    from stackcam.rtl.params import preset

    from .cyclemodel import predict_cycles
    model_name, config_name = BENCHMARKS[name]
    config = preset(config_name)
    prepared = prepare(model_name, config)
    rgb = load_image(None)
    raw = bayer_frame(rgb, config.frame_width, config.frame_height)
    regs, geometry, quant = model_registers(config, prepared.io)
    x = isp_reference(raw, config, quant, geometry)
    die_ref, _ = golden_die_outputs(prepared, config, x)
    log(f"{name}: {model_name} on {config.summary()}")
    t0 = time.time()
    run = run_die(config, prepared.rom, [raw], modes=["metadata"], log=log)
    wall = time.time() - t0
    fr = run.frames[0] if run.frames else None
    exact = sum(int(np.count_nonzero(a == b)) for a, b in zip(fr.outputs, die_ref)) if fr and fr.outputs else 0
    n = sum(t.size for t in die_ref)
    rows = layer_rows(prepared, config, run.descriptor_counters)
    t1 = time.time()
    predicted = predict_cycles(prepared.compiled, config)
    model_s = time.time() - t1
    for r in rows:
        r["predicted_cycles"] = predicted["layers"].get(r["index"], 0)
    errors = [abs(r["predicted_cycles"] - r["cycles"]) / r["cycles"] for r in rows if r["cycles"]]
    cycles = run.counters["npu_cycles"]
    macs = prepared.compiled.macs
    peak = config.macs_per_cycle
    e2e = run.frame_last_byte[0] - run.first_pixel[0] + 1 if run.frame_last_byte and run.first_pixel else 0
    dw = [r for r in rows if r["op"] == "DEPTHWISE_CONV_2D"]
    dw_macs, dw_cycles = sum(r["macs"] for r in dw), sum(r["cycles"] for r in dw)
    report = {
        "network": model_name, "config": config_name, "macs": int(macs), "peak_macs_per_cycle": peak,
        "cycles": int(cycles), "e2e_cycles": int(e2e), "utilization": macs / (peak * cycles) if cycles else 0.0,
        "clock_mhz": config.clock_mhz, "ms": config.cycles_to_ms(cycles), "e2e_ms": config.cycles_to_ms(e2e),
        "load_cycles": run.loads[0]["load_cycles"] if run.loads else None,
        "bit_exact": f"{exact}/{n}",
        "depthwise": {"macs": dw_macs, "cycles": dw_cycles,
                      "utilization": dw_macs / (peak * dw_cycles) if dw_cycles else 0.0},
        "physical_limit_cycles": int(-(-macs // peak)),
        "layers": [{k: r[k] for k in ("index", "name", "op", "macs", "cycles", "mac_cycles", "utilization",
                                      "predicted_cycles")} for r in rows],
        "model": {"predicted_cycles": int(predicted["total"]), "wall_s": model_s,
                  "largest_layer_error": max(errors) if errors else 0.0,
                  "total_error": abs(predicted["total"] - cycles) / cycles if cycles else 0.0},
        "sim_cycles": run.cycles, "sim_wall_s": run.sim_wall_s,
        "sim_cycles_per_s": run.cycles / run.sim_wall_s if run.sim_wall_s else 0.0,
        "build_wall_s": run.build_wall_s, "total_wall_s": wall,
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report.update(energy_section(name, config, prepared, run, out_dir, log=log))
    (out_dir / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    _plot(rows, f"{model_name} on {config_name}: {cycles:,} cycles, {100 * report['utilization']:.1f}% MAC "
          f"utilization, {report['ms']:.3f} ms at {config.clock_mhz:g} MHz", out_dir / f"{name}.png")
    log(f"  network {cycles:,} cycles = {report['ms']:.3f} ms at {config.clock_mhz:g} MHz, utilization "
        f"{100 * report['utilization']:.1f}% (depthwise {100 * report['depthwise']['utilization']:.1f}%), "
        f"first pixel -> last CSI-2 byte {e2e:,} cycles, bit-exact {exact}/{n}")
    log(f"  analytic model {predicted['total']:,} cycles in {model_s * 1e3:.0f} ms: total error "
        f"{100 * report['model']['total_error']:.2f}%, largest layer error "
        f"{100 * report['model']['largest_layer_error']:.2f}%")
    log(f"  simulation {run.cycles:,} cycles in {run.sim_wall_s:.1f} s ({report['sim_cycles_per_s'] / 1e3:.0f} k "
        f"cycles/s; Verilog and Verilator build {run.build_wall_s:.1f} s, {wall:.1f} s in all); wrote "
        f"{out_dir / (name + '.json')} and {out_dir / (name + '.png')}")
    return report, exact == n
