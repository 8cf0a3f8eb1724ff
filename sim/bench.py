"""Benchmark: networks through the whole die in the RTL, cycle counts from its counters, a JSON report and a
per-layer bar chart per network; the analytic cycle model's prediction next to the RTL's, and a peer (Arm's Vela
for the Ethos-U with the same MAC count, sim/peer.py) on the same exported int8 model in the same run."""

import json
import time
from pathlib import Path

import numpy as np

from stackcam.quant.isp import isp_reference

from .dierun import model_registers, run_die, speed_line
from .frame_source import bayer_frame, load_image
from .simulate import golden_die_outputs, layer_rows

__all__ = ["BENCHMARKS", "run_benchmark"]

# (report name, model, configuration preset)
BENCHMARKS = {
    "mobilenet_v1": ("zoo:mobilenet_v1_1.0_224", "imx500"),
    "mobilenet_v1_0.25_96": ("zoo:mobilenet_v1_0.25_96_2", "imx500"),
    "blazeface": ("zoo:blazeface", "imx500"),
}


def _plot(rows, title, path, peer=None):
    """Per-layer bars of the RTL's cycles (red: depthwise) and their MAC utilization; with `peer` (the peer's
    name), the peer's cycles for the same layer (`peer_cycles` of each row) as grey bars beside them."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(max(8, (0.4 if peer else 0.28) * len(rows)), 4.5))
    x = np.arange(len(rows))
    cycles = [r["cycles"] for r in rows]
    colors = ["#d62728" if r["op"].startswith("DEPTHWISE") else "#1f77b4" for r in rows]
    if peer:
        ax.bar(x - 0.2, cycles, width=0.4, color=colors, label="stackcam (RTL counters)")
        ax.bar(x + 0.2, [r.get("peer_cycles") or 0 for r in rows], width=0.4, color="#7f7f7f",
               label=f"{peer} (estimate)")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    else:
        ax.bar(x, cycles, color=colors)
    ax.set_xticks(x)
    ax.set_xticklabels([f"{r['index']}" for r in rows], fontsize=6)
    ax.set_xlabel("layer (red: depthwise)")
    ax.set_ylabel("cycles")
    ax2 = ax.twinx()
    ax2.plot(x, [100 * r["utilization"] for r in rows], "k.", markersize=4)
    ax2.set_ylabel("stackcam MAC utilization % (dots)" if peer else "MAC utilization %")
    ax2.set_ylim(0, 105)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _match_peer_layers(rows, peer_layers):
    """Set each row's `peer_cycles`: the peer's NPU cycles of the operators writing the tensor of the same name
    (Vela names an operator by its output tensor, as the toolchain names a layer); layers left over on both sides
    are paired in order when as many remain (e.g. a layer whose output the peer renames), else None. Returns the
    peer's cycles given to none of our layers, by name (operators the die leaves to the host, such as BlazeFace's
    output CONCATENATIONs; an operator the peer fuses into the next one, as Vela does a MAX_POOL_2D before a
    channel PAD, counts in that one's layer)."""
    groups = {}
    for r in peer_layers:
        groups[r["name"]] = groups.get(r["name"], 0) + r["cycles"]
    left = [r for r in rows if r["name"] not in groups]
    unused = [n for n in groups if n not in {r["name"] for r in rows}]
    for r in rows:
        r["peer_cycles"] = groups.get(r["name"])
    if len(left) == len(unused):
        for r, n in zip(left, unused):
            r["peer_cycles"] = groups[n]
        return {}
    return {n: groups[n] for n in unused}


def _peer(name, prepared, config, out_dir, cycles, macs, log):
    """The peer column: Vela on the toolchain's export of the very graph the die runs (written beside the report
    as <name>.tflite with the vela.ini, so the figures can be reproduced), or {"absent": reason}."""
    from stackcam.quant.export import export_tflite

    from .peer import MEMORY_MODE, SYSTEM_CONFIG, PeerError, run_vela, vela_ini, vela_version
    if vela_version() is None:
        reason = "Arm Vela is not installed (pip install ethos-u-vela, or the extra stackcam[peer])"
        log(f"  peer: absent: {reason}")
        return {"absent": reason}
    tflite = export_tflite(prepared.graph)
    (out_dir / f"{name}.tflite").write_bytes(tflite)
    (out_dir / "vela.ini").write_text(vela_ini(config.clock_mhz))
    t0 = time.time()
    try:
        v = run_vela(tflite, config.macs_per_cycle, config.clock_mhz)
    except PeerError as e:
        log(f"  peer: absent: {e}")
        return {"absent": str(e)}
    accel = v["accelerator"]
    peer = {"name": v["name"], "accelerator": accel, "macs_per_cycle": v["macs_per_cycle"],
            "same_mac_count": v["macs_per_cycle"] == config.macs_per_cycle,
            "system_config": v["system_config"], "clock_mhz": v["clock_mhz"],
            "cycles": v["cycles"], "cycles_total": v["cycles_total"], "ms": config.cycles_to_ms(v["cycles"]),
            # The die's utilization counts the network's MACs; the peer's figure on the same count compares
            # like with like. Vela's own count also takes pooling and element-wise ops as MACs.
            "utilization": macs / (v["macs_per_cycle"] * v["cycles"]) if v["cycles"] else 0.0,
            "vela_macs": v["macs"], "vela_utilization": v["utilization"], "depthwise": v["depthwise"],
            "cpu_operators": v["cpu_operators"], "ratio": cycles / v["cycles"] if v["cycles"] else None,
            "model_file": f"{name}.tflite",
            "command": f"vela {name}.tflite --accelerator-config {accel} --config vela.ini --system-config "
                       f"{SYSTEM_CONFIG} --memory-mode {MEMORY_MODE} --verbose-performance",
            "wall_s": time.time() - t0, "layers": v["layers"]}
    log(f"  peer: {peer['name']} for {accel} ({peer['macs_per_cycle']} MACs"
        f"{'' if peer['same_mac_count'] else ', the closest Ethos-U to ' + str(config.macs_per_cycle)}) at "
        f"{v['clock_mhz']:g} MHz, all in SRAM: {v['cycles']:,} NPU cycles ({v['cycles_total']:,} with memory), "
        f"utilization {100 * peer['utilization']:.1f}% (depthwise {100 * v['depthwise']['utilization']:.1f}%); "
        f"ours / peer = {peer['ratio']:.3f}")
    return peer


def energy_section(name, config, prepared, run, out_dir, node="22nm", log=print):
    """The report's "energy", "area" and "activity" keys: the energy model (`sim.energy`) on the die's own activity
    counters, the area model (`sim.area`, its gates' leakage in the energy), the analytic model's counts beside the
    RTL's, and the breakdown chart <name>_energy.png."""
    from stackcam.quant.romimage import load_rom
    from stackcam.quant.timing import program_activity
    from stackcam.rtl.npu.core import BANK_COUNTERS

    from .area import AreaError, area_estimate
    from .cyclemodel import predict_bank_activity, predict_io_banks, predict_load_banks
    from .energy import bank_activity, energy_report, measured_activity, plot_banks, plot_breakdown
    from .metadata import frame_bytes
    compiled = prepared.compiled
    weights = load_rom(prepared.rom, config).weight_sram()
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
                      raw10_frame_bytes=frame_bytes(config, "image", shapes), rom_bytes=len(prepared.rom),
                      banks=run.bank_counters, weights=weights)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    png = Path(out_dir) / f"{name}_energy.png"
    plot_breakdown(e, png, f"{name} on {config.name}: energy per inference ({e['node']})")
    log(f"  energy ({e['node']}): {e['inference_mj']:.3f} mJ per inference, {e['pj_per_mac']:.3f} pJ/MAC, "
        f"{e['tops_per_w']:.2f} TOPS/W; die {e['frame']['die_mw']:.1f} mW at {config.frame_rate:g} fps "
        f"(IMX500 published 4.97 TOPS/W, {e['published']['imx500_isscc2021']['mobilenet_v1_mj']:.3f} mJ; "
        f"CamJ 2.50 mJ); wrote {png}")
    banks_png = Path(out_dir) / f"{name}_banks.png"
    plot_banks(e, banks_png, f"{name} on {config.name}")
    # The model of one ROM load and one frame (the benchmark's run): the run's, the loader's and the frame's I/O.
    bank_model = dict(predict_bank_activity(config, compiled.descriptors, weights=weights),
                      weight_writes=predict_load_banks(config, prepared.rom), **predict_io_banks(config, prepared.io))
    banks_equal = all(run.bank_counters.get(k) == bank_model[k] for k in BANK_COUNTERS)
    log(f"  SRAM banks: per-bank counts of the die {'equal' if banks_equal else 'DIFFER FROM'} the analytic "
        f"model's; wrote {banks_png}")
    if "mm2" in area:
        log(f"  area ({node}): {area['mm2']:.2f} mm^2 (logic {area['logic_mm2']:.2f}, SRAM {area['sram_mm2']:.2f}; "
            f"{area['basis']})")
    per_bank = bank_activity(config, run.bank_counters)
    return {"energy": e, "area": area, "activity": {"rtl_equals_model": measured == predicted,
                                                    "rtl_total": e["activity_total"], **per_bank,
                                                    "banks_rtl_equals_model": banks_equal,
                                                    "banks_unmodelled_descriptors": bank_model["unmodelled"]}}


def run_benchmark(name, out_dir, prepare, log=print, model=None, config=None):
    """Benchmark `name` (of BENCHMARKS, or any name with `model` and `config` given); `prepare(model, config)` is
    the command line's model registry."""
    from stackcam.rtl.params import preset

    from .cyclemodel import predict_cycles
    model_name, config_name = (model, config) if model is not None else BENCHMARKS[name]
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
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    peer = _peer(name, prepared, config, out_dir, cycles, macs, log)
    unmatched = _match_peer_layers(rows, peer.get("layers", ()))
    if "cycles" in peer:
        peer["cycles_outside_our_layers"] = unmatched
    speed = run.speed()
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
                                      "predicted_cycles", "peer_cycles")} for r in rows],
        "peer": peer,
        "model": {"predicted_cycles": int(predicted["total"]), "wall_s": model_s,
                  "largest_layer_error": max(errors) if errors else 0.0,
                  "total_error": abs(predicted["total"] - cycles) / cycles if cycles else 0.0},
        # Simulation speed (DieRun.speed): the whole Verilator run (ROM load and frame, from the simulator's start;
        # no build) and the frame alone (after the ROM load, from the testbench's clock marks), each by the wall
        # clock and by the simulator's CPU time, with the machine's load average while it ran.
        **speed,
        "build_wall_s": run.build_wall_s, "total_wall_s": wall,
    }
    report.update(energy_section(name, config, prepared, run, out_dir, log=log))
    (out_dir / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    title = (f"{model_name} on {config_name}: {cycles:,} cycles, {100 * report['utilization']:.1f}% MAC "
             f"utilization, {report['ms']:.3f} ms at {config.clock_mhz:g} MHz")
    if "cycles" in peer:
        title += (f"\n{peer['name']} {peer['accelerator']}: {peer['cycles']:,} NPU cycles, "
                  f"{100 * peer['utilization']:.1f}%; ours / peer = {peer['ratio']:.3f}")
    _plot(rows, title, out_dir / f"{name}.png", peer=peer.get("accelerator"))
    log(f"  network {cycles:,} cycles = {report['ms']:.3f} ms at {config.clock_mhz:g} MHz, utilization "
        f"{100 * report['utilization']:.1f}% (depthwise {100 * report['depthwise']['utilization']:.1f}%), "
        f"first pixel -> last CSI-2 byte {e2e:,} cycles, bit-exact {exact}/{n}")
    log(f"  analytic model {predicted['total']:,} cycles in {model_s * 1e3:.0f} ms: total error "
        f"{100 * report['model']['total_error']:.2f}%, largest layer error "
        f"{100 * report['model']['largest_layer_error']:.2f}%")
    log(f"  simulation: {speed_line(report)}; Verilog and Verilator build {run.build_wall_s:.1f} s, {wall:.1f} s "
        f"in all; wrote {out_dir / (name + '.json')} and {out_dir / (name + '.png')}")
    return report, exact == n
