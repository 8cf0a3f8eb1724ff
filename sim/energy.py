"""Energy model of the die: per-action energies of a technology node (every number with its source) applied to
the activity the die counts (or the analytic model predicts): energy per layer, per inference and per frame,
power at the frame rate, effective TOPS/W, next to the IMX500's published figures and CamJ's estimate.

The activity is exact (the RTL's per-descriptor counters, equal to `quant.timing.descriptor_activity`); the
energies per action are published figures, scaled between nodes by a stated formula. What is an assumption and
not a published figure says so in its source.
"""

import math
from dataclasses import dataclass, field

import numpy as np

from stackcam.errors import StackcamError
from stackcam.quant.program import OPCODES
from stackcam.quant.timing import ACTIVITY_KEYS, program_activity, program_cycles

__all__ = ["EnergyError", "Technology", "TECHNOLOGIES", "technology", "PUBLISHED", "energy_report",
           "measured_activity", "plot_breakdown", "COMPONENTS", "engine_cycles", "bank_activity", "plot_banks"]


class EnergyError(StackcamError, ValueError):
    """Bad input to the energy model (an unknown node, counts that do not fit the program)."""


# --- sources ----------------------------------------------------------------------------------------------------

HOROWITZ = ("M. Horowitz, 'Computing's energy problem (and what we can do about it)', ISSCC 2014, "
            "doi:10.1109/ISSCC.2014.6757323, Fig. 1.1.9 (45 nm, 0.9 V)")
EYERISS = ("Y.-H. Chen, J. Emer, V. Sze, 'Eyeriss: a spatial architecture for energy-efficient dataflow for CNNs', "
           "ISCA 2016, doi:10.1109/ISCA.2016.40, Fig. 3 / V. Sze et al., Proc. IEEE 105(12) 2017, Fig. 26: a "
           "register-file access costs about 1x a MAC, a global-buffer access 6x")
CAMJ_IMX500 = ("CamJ (T. Ma, Y. Feng, X. Zhang, Y. Zhu, ISCA 2023), examples/isscc_21_back_illuminated/hw.py, "
               "https://github.com/horizon-research/CamJ: the IMX500 modelled as a 64x32 systolic array at "
               "2 x 0.15 pJ per MAC, ADC energy_per_pixel = 600 pJ")
IMX500_PAPER = ("R. Eki et al., 'A 1/2.3inch 12.3Mpixel with on-chip 4.97TOPS/W CNN processor back-illuminated "
                "stacked CMOS image sensor', ISSCC 2021, paper 9.6, doi:10.1109/ISSCC42613.2021.9365965")
DENNARD = ("dynamic energy C*V^2 with C proportional to the feature size: E(node) = E(45 nm) * (L / 45 nm) * "
           "(V / 0.9 V)^2 (classical scaling; A. Stillmaker, B. Baas, Integration 58 (2017) 74-81 show it can be off "
           "by up to several x at deep-submicron nodes: treat node-to-node results as estimates)")
GF22 = "GlobalFoundries 22FDX platform: nominal core supply 0.8 V (GlobalFoundries 22FDX product brief)"
TSMC40 = "TSMC 40 nm LP: nominal core supply 1.1 V (TSMC 40 nm LP technology brief)"
INTEL22_SRAM = ("Intel 22 nm tri-gate high-density 6T SRAM bitcell 0.092 um^2 (E. Karl et al., 'A 4.6 GHz 162 Mb "
                "SRAM design in 22 nm tri-gate CMOS technology...', ISSCC 2012)")
TSMC40_SRAM = "TSMC 40 nm high-density 6T SRAM bitcell 0.242 um^2 (TSMC's 40 nm technology announcement, 2008)"
INTEL22_PITCH = ("Intel 22 nm: contacted gate pitch 90 nm, metal-1 pitch 80 nm (C. Auth et al., 'A 22 nm high "
                 "performance and low-power CMOS technology featuring fully-depleted tri-gate transistors...', "
                 "VLSI 2012); NAND2 = 3 gate pitches x 9 metal-1 tracks (assumption)")
PITCH40 = ("40 nm: contacted gate pitch about 162 nm, metal-1 pitch about 120 nm (ITRS 2009 for the 40/45 nm "
           "half-node; assumption within ITRS ranges); NAND2 = 3 gate pitches x 9 metal-1 tracks")
ASSUMED = "assumption (no published figure verified here): "


@dataclass(frozen=True)
class Technology:
    """Energy, leakage and area figures of one node. Energies in pJ, leakage in W, areas in um^2."""

    node: str
    vdd: float
    scale: float                     # dynamic-energy factor from the 45 nm figures (DENNARD)
    mac_int8_pj: float               # 8-bit multiply + 32-bit accumulate
    add32_pj: float
    mult32_pj: float                 # a 32 x 32 multiply (requantization, the ISP's normalize)
    rf_pj_per_byte: float            # register file / line buffer
    dphy_pj_per_bit: float           # CSI-2 D-PHY high-speed transmitter
    pixel_pj: float                  # pixel readout + ADC per pixel (pixel die)
    sram_leak_w_per_bit: float
    gate_leak_w: float               # per NAND2-equivalent gate
    sram_bit_um2: float
    nand2_um2: float
    idle_slot_fraction: float = 0.1  # energy of a MAC slot of an active array cycle that does no work, x MAC
    sources: dict = field(default_factory=dict, compare=False)

    def sram_pj_per_byte(self, macro_bytes):
        """Energy per byte read or written in an SRAM macro of `macro_bytes`: Horowitz's 64-bit accesses at 45 nm
        (8 KB 10 pJ, 32 KB 20 pJ, 1 MB 100 pJ: 1.25, 2.5, 12.5 pJ/B), interpolated on a log-log scale in the
        capacity (extrapolated with the nearest segment's slope), times the node's scale."""
        pts = [(8 * 1024, 1.25), (32 * 1024, 2.5), (1024 * 1024, 12.5)]
        x = math.log(max(1, macro_bytes))
        seg = pts[:2] if macro_bytes <= pts[1][0] else pts[1:]
        (x0, y0), (x1, y1) = [(math.log(a), math.log(b)) for a, b in seg]
        return math.exp(y0 + (y1 - y0) * (x - x0) / (x1 - x0)) * self.scale

    def table(self):
        """The figures with their units and sources, for reports."""
        rows = []
        for key, unit in (("mac_int8_pj", "pJ"), ("add32_pj", "pJ"), ("mult32_pj", "pJ"), ("rf_pj_per_byte", "pJ/B"),
                          ("dphy_pj_per_bit", "pJ/bit"), ("pixel_pj", "pJ/pixel"),
                          ("sram_leak_w_per_bit", "W/bit"), ("gate_leak_w", "W/gate"), ("sram_bit_um2", "um^2"),
                          ("nand2_um2", "um^2"), ("idle_slot_fraction", "x MAC")):
            rows.append({"item": key, "value": getattr(self, key), "unit": unit, "source": self.sources[key]})
        for kb in (8, 32, 128, 1024):
            rows.append({"item": f"sram_{kb}KiB_pj_per_byte", "value": self.sram_pj_per_byte(kb * 1024),
                         "unit": "pJ/B", "source": self.sources["sram"]})
        return rows


def _node(node, length_nm, vdd, *, pixel_pj, dphy, sram_leak, gate_leak, sram_bit_um2, nand2_um2, src):
    s = (length_nm / 45.0) * (vdd / 0.9) ** 2
    base = f"{HOROWITZ}; scaled by {s:.3f} ({DENNARD}; supply: {src['vdd']})"
    sources = {
        "mac_int8_pj": f"8-bit multiply 0.2 pJ + 32-bit add 0.1 pJ at 45 nm, {base}",
        "add32_pj": f"32-bit add 0.1 pJ at 45 nm, {base}",
        "mult32_pj": f"32-bit multiply 3.1 pJ at 45 nm, {base}",
        "rf_pj_per_byte": f"1x the MAC energy per 16-bit access ({EYERISS}), i.e. half a MAC per byte",
        "sram": f"{HOROWITZ}: 64-bit SRAM access 10 pJ (8 KB), 20 pJ (32 KB), 100 pJ (1 MB); log-log interpolation "
                f"in the macro size; scaled by {s:.3f}",
        "dphy_pj_per_bit": ASSUMED + "a D-PHY HS transmitter with serializer and clock lane at about 1-1.5 Gb/s "
                           "per lane spends several pJ per bit",
        "pixel_pj": CAMJ_IMX500 + " (ADC per pixel; pixel readout included in that figure)",
        "sram_leak_w_per_bit": ASSUMED + src["sram_leak"],
        "gate_leak_w": ASSUMED + src["gate_leak"],
        "sram_bit_um2": src["bitcell"],
        "nand2_um2": src["pitch"],
        "idle_slot_fraction": ASSUMED + "operand isolation and clock gating of lanes that do no work leave about "
                              "10% of a MAC's energy (clock and pipeline registers) per idle slot of an active cycle",
    }
    return Technology(node=node, vdd=vdd, scale=s, mac_int8_pj=0.3 * s, add32_pj=0.1 * s, mult32_pj=3.1 * s,
                      rf_pj_per_byte=0.15 * s, dphy_pj_per_bit=dphy, pixel_pj=pixel_pj,
                      sram_leak_w_per_bit=sram_leak, gate_leak_w=gate_leak, sram_bit_um2=sram_bit_um2,
                      nand2_um2=nand2_um2, sources=sources)


TECHNOLOGIES = {
    "22nm": _node("22nm", 22, 0.8, pixel_pj=600.0, dphy=5.0, sram_leak=10e-12 * 0.8, gate_leak=0.5e-9 * 0.8,
                  sram_bit_um2=0.092, nand2_um2=3 * 0.090 * 9 * 0.080,
                  src={"vdd": GF22, "sram_leak": "10 pA per bitcell at 0.8 V (low-leakage 22 nm bitcells are "
                       "quoted from about 1 to tens of pA)", "gate_leak": "0.5 nA per NAND2 equivalent at 0.8 V "
                       "(a low-power 22 nm library)", "bitcell": INTEL22_SRAM, "pitch": INTEL22_PITCH}),
    "40nm": _node("40nm", 40, 1.1, pixel_pj=600.0, dphy=7.0, sram_leak=5e-12 * 1.1, gate_leak=0.2e-9 * 1.1,
                  sram_bit_um2=0.242, nand2_um2=3 * 0.162 * 9 * 0.120,
                  src={"vdd": TSMC40, "sram_leak": "5 pA per bitcell at 1.1 V (a 40 nm low-power process leaks "
                       "less per cell than 22 nm)", "gate_leak": "0.2 nA per NAND2 equivalent at 1.1 V (a 40 nm LP "
                       "library)", "bitcell": TSMC40_SRAM, "pitch": PITCH40}),
}


def technology(node):
    try:
        return TECHNOLOGIES[node]
    except KeyError:
        raise EnergyError(f"unknown technology node {node!r}; known: {', '.join(TECHNOLOGIES)}") from None


# What was published about the real IMX500 running MobileNet V1 1.0 224, and CamJ's estimate of it.
PUBLISHED = {
    "imx500_isscc2021": {
        "tops_per_w": 4.97, "pj_per_mac": 2 / 4.97, "mobilenet_v1_ms": 3.1,
        "mobilenet_v1_mj": 2 * 568_740_352 / 4.97e12 * 1e3,
        "source": IMX500_PAPER + "; mJ = 2 x 568.7 M MACs / 4.97 TOPS/W",
    },
    "imx500_measured_mw": {"low": 70.0, "high": 72.0,
                           "source": "two independent in-sensor measurements while inferring (project design brief, "
                                     "DESIGN.md: Energy anchors)"},
    "camj_imx500": {"pj_per_mac": 0.30, "macs": 2048, "mj_per_frame": 2.50, "array_share": 0.925,
                    "source": CAMJ_IMX500 + "; 2.50 mJ per frame, 92.5% in the array (project design brief)"},
}

# Energy components, in the order of the breakdown chart.
COMPONENTS = ("mac", "array_idle", "weight_sram", "act_sram", "requant_vector", "sequencer", "isp", "csi2_read",
              "leakage")


def measured_activity(descriptor_counters, descriptor_activity):
    """The die's per-descriptor counters as `quant.timing.descriptor_activity` dicts."""
    return [dict(a, mac_cycles=mc) for (_, mc), a in zip(descriptor_counters, descriptor_activity)]


def bank_activity(config, counters):
    """Per-bank SRAM bytes from per-bank counts (the die's `DieRun.bank_counters`, or
    `sim.cyclemodel.predict_bank_activity` with `predict_io_banks`): {"act_sram_banks": [{bank, read_bytes,
    write_bytes, input_write_bytes, output_read_bytes}], "weight_sram_banks": [{bank, read_bytes, load_bytes}]}.
    read/write bytes are the run's; `input_write_bytes` / `output_read_bytes` the input writer's and output
    reader's between runs (the frame's input and outputs), `load_bytes` the loader's writes (once per model
    load, not per run); each None when `counters` lacks it ("input_write_bytes", "output_reads",
    "weight_writes")."""
    A, W = config.act_banks, config.weight_banks
    need = {"act_reads": A, "act_write_bytes": A, "weight_reads": W}
    need |= {k: n for k, n in (("weight_writes", W), ("input_write_bytes", A), ("output_reads", A))
             if k in counters}
    for k, n in need.items():
        v = counters.get(k)
        if not (isinstance(v, (list, tuple)) and len(v) == n and all(isinstance(x, int) and x >= 0 for x in v)):
            raise EnergyError(f"per-bank counts {k!r} must be {n} non-negative integers (one per bank)")
    C, WB = config.array_cols, config.weight_word_bytes

    def opt(k, b, scale):
        return None if k not in counters else counters[k][b] * scale

    return {
        "act_sram_banks": [{"bank": b, "read_bytes": counters["act_reads"][b] * C,
                            "write_bytes": counters["act_write_bytes"][b],
                            "input_write_bytes": opt("input_write_bytes", b, 1),
                            "output_read_bytes": opt("output_reads", b, C)} for b in range(A)],
        "weight_sram_banks": [{"bank": b, "read_bytes": counters["weight_reads"][b] * WB,
                               "load_bytes": opt("weight_writes", b, WB)} for b in range(W)],
    }


def _bank_energy(config, tech, banks, source):
    """The per-bank part of the report: bytes and energy (uJ) per bank of each SRAM, every bank a macro of
    sram_bank_bytes at its per-byte energy: `uj` the run's, `io_uj` the frame's input and output traffic,
    `load_uj` the loader's."""
    e = tech.sram_pj_per_byte(config.sram_bank_bytes)

    def uj(*v):
        return None if any(x is None for x in v) else sum(v) * e * 1e-6

    act = [dict(b, uj=uj(b["read_bytes"], b["write_bytes"]), io_uj=uj(b["input_write_bytes"], b["output_read_bytes"]))
           for b in banks["act_sram_banks"]]
    wgt = [dict(b, uj=uj(b["read_bytes"]), load_uj=uj(b["load_bytes"])) for b in banks["weight_sram_banks"]]
    return {"source": source, "sram_pj_per_byte": e, "macro_bytes": config.sram_bank_bytes,
            "act_sram_banks": act, "weight_sram_banks": wgt,
            "act_sram_uj": sum(b["uj"] for b in act), "weight_sram_uj": sum(b["uj"] for b in wgt),
            "note": "uj: per run (sequencer descriptor fetches in weight reads); io_uj: the frame's input writes and "
                    "output reads between runs; load_uj: the loader's writes, once per model load"}


def _layer_useful_macs(compiled):
    return {layer.index: int(layer.macs) for layer in compiled.layers}


def engine_cycles(config, compiled, descriptor_cycles, activity, total):
    """Busy and idle cycles per engine of one run: the conv engine (CONV, DWCONV; its MAC array's active
    cycles), the vector engine, the sequencer (fetch and decode), and the NPU's idle cycles in a frame period."""
    conv = vec = macs = 0
    for d, c, a in zip((d for d in compiled.descriptors if d.opcode != OPCODES["END"]), descriptor_cycles, activity):
        if d.opcode in (OPCODES["CONV"], OPCODES["DWCONV"]):
            conv += c
            macs += a["mac_cycles"]
        else:
            vec += c
    frame = int(config.clock_mhz * 1e6 / config.frame_rate)
    return {"npu": int(total), "conv_busy": conv, "conv_idle": int(total) - conv, "mac_array_busy": macs,
            "mac_array_idle": int(total) - macs, "vector_busy": vec, "vector_idle": int(total) - vec,
            "sequencer": int(total) - conv - vec, "frame_period": frame, "npu_idle_in_frame": frame - int(total)}


def energy_report(config, compiled, *, node="22nm", activity=None, cycles=None, gates=None, output_bytes=None,
                  csi2_bytes=None, raw10_frame_bytes=None, descriptor_cycles=None, rom_bytes=None, banks=None,
                  weights=None):
    """Energy of one inference and one frame of `compiled` (a `quant.compiler` result) on `config`.

    `activity`: per-descriptor counts (`ACTIVITY_KEYS`, the die's counters through `measured_activity`), default
    the analytic model's; `cycles`: NPU cycles of the run (default the analytic model's); `gates`: NAND2-equivalent
    gates of the logic for leakage (default: none counted); `output_bytes`: bytes of the die's output tensors;
    `csi2_bytes` / `raw10_frame_bytes`: CSI-2 bytes of a metadata-mode frame and of an image-mode frame (the
    link comparison); `rom_bytes`: the weight ROM image the loader writes into the SRAM once per model (reported
    apart: not per frame); `banks`: the die's per-bank counters (`DieRun.bank_counters`), default the analytic
    model's (`sim.cyclemodel.predict_bank_activity`), reported per bank under "banks" (bytes and energy; their
    sum is the act_sram + weight_sram + sequencer energy when they equal the model); each layer's bytes per bank
    are the analytic model's (`weights`: the loaded weight SRAM, for RESIZE's tables). Energies in the report are
    in uJ unless named otherwise.
    """
    tech = technology(node)
    descs = [d for d in compiled.descriptors if d.opcode != OPCODES["END"]]
    model = program_activity(config, compiled.descriptors)
    if activity is None:
        activity = model["descriptors"]
        source = "analytic model (quant.timing.descriptor_activity)"
    else:
        activity = list(activity)
        source = "RTL per-descriptor counters"
        if len(activity) != len(descs):
            raise EnergyError(f"{len(activity)} descriptor counts for a program of {len(descs)} descriptors")
        for i, a in enumerate(activity):
            bad = [k for k in ACTIVITY_KEYS if not (isinstance(a.get(k), int) and a[k] >= 0)]
            if bad:
                raise EnergyError(f"descriptor {i}'s counts lack a non-negative integer {bad[0]!r}")
    predicted = program_cycles(config, compiled.descriptors)
    if cycles is None:
        cycles = predicted["total"]
    if descriptor_cycles is None:
        descriptor_cycles = predicted["descriptors"]
    R, C, WB = config.array_rows, config.array_cols, config.weight_word_bytes
    e_sram = tech.sram_pj_per_byte(config.sram_bank_bytes)
    useful = _layer_useful_macs(compiled)
    op_names = {v: k for k, v in OPCODES.items()}

    from .cyclemodel import predict_bank_activity, predict_io_banks
    bank_model = predict_bank_activity(config, compiled.descriptors, weights=weights, per_descriptor=True)
    layer_banks = {}
    for d, b in zip(descs, bank_model["descriptors"]):
        lb = layer_banks.setdefault(d.layer, {"act_reads": np.zeros(config.act_banks, np.int64),
                                              "act_write_bytes": np.zeros(config.act_banks, np.int64),
                                              "weight_reads": np.zeros(config.weight_banks, np.int64),
                                              "complete": True})
        if b is None:
            lb["complete"] = False
            continue
        for k in ("act_reads", "act_write_bytes", "weight_reads"):
            lb[k] += b[k]
    layers = {}
    for d, a in zip(descs, activity):
        lay = layers.setdefault(d.layer, {k: 0 for k in ACTIVITY_KEYS} | {"requant_bytes": 0, "vector_bytes": 0,
                                                                           "ops": set()})
        for k in ACTIVITY_KEYS:
            lay[k] += a[k]
        op = op_names.get(d.opcode)
        lay["ops"].add(op)
        if op in ("CONV", "DWCONV"):
            lay["requant_bytes"] += a["act_write_bytes"]
        else:
            lay["vector_bytes"] += a["act_write_bytes"]
    rows = []
    totals = dict.fromkeys(COMPONENTS, 0.0)
    for layer in compiled.layers:
        if layer.index not in layers:
            continue
        a = layers[layer.index]
        macs = useful.get(layer.index, 0)
        slots = a["mac_cycles"] * R * C
        e = {
            "mac": macs * tech.mac_int8_pj,
            "array_idle": max(0, slots - macs) * tech.mac_int8_pj * tech.idle_slot_fraction,
            "weight_sram": a["weight_reads"] * WB * e_sram,
            "act_sram": (a["act_reads"] * C + a["act_write_bytes"]) * e_sram,
            # Requantization: one 32x32 multiply per output byte; vector ops (ADD: two 9x32 rescales and one
            # 32x32; pools, COPY, LUT: far less): charged one 32x32 multiply per output byte as an upper bound.
            "requant_vector": (a["requant_bytes"] + a["vector_bytes"]) * tech.mult32_pj,
        }
        for k, v in e.items():
            totals[k] += v
        lb = layer_banks[layer.index]
        rows.append({"index": layer.index, "name": layer.name, "op": layer.kind, "macs": macs,
                     "activity": {k: int(a[k]) for k in ACTIVITY_KEYS},
                     # The layer's SRAM bytes per bank it touches (the analytic model's placement by address).
                     "sram_banks": {
                         "act": [{"bank": i, "read_bytes": int(r) * C, "write_bytes": int(w)}
                                 for i, (r, w) in enumerate(zip(lb["act_reads"], lb["act_write_bytes"])) if r or w],
                         "weight": [{"bank": i, "read_bytes": int(r) * WB}
                                    for i, r in enumerate(lb["weight_reads"]) if r],
                         "complete": lb["complete"]},
                     "energy_uj": {k: v * 1e-6 for k, v in e.items()}, "total_uj": sum(e.values()) * 1e-6})
    # Whole-inference terms: the sequencer's descriptor fetches, the ISP (per Bayer pixel of the crop: one
    # accumulate and a 2-byte line-buffer read and write; per input element one 32x32 normalize multiply and
    # a byte into the activation SRAM), the output tensors read out of the SRAM for CSI-2.
    geom = config.isp_geometry
    in_elems = config.input_width * config.input_height * 3
    crop_px = geom.crop_width * geom.crop_height
    totals["sequencer"] = model["total"]["fetch_weight_reads"] * WB * e_sram
    totals["isp"] = (crop_px * (tech.add32_pj + 4 * tech.rf_pj_per_byte)
                     + in_elems * (tech.mult32_pj + e_sram))
    out_b = output_bytes if output_bytes is not None else 0
    totals["csi2_read"] = out_b * e_sram
    seconds = cycles / (config.clock_mhz * 1e6)
    sram_bits = config.sram_bytes * 8
    leak_w = sram_bits * tech.sram_leak_w_per_bit + (gates or 0) * tech.gate_leak_w
    totals["leakage"] = leak_w * seconds * 1e12
    inference_pj = sum(totals.values())
    total_macs = sum(useful.get(i, 0) for i in layers)
    frame_period = 1.0 / config.frame_rate
    # Per frame: the inference, leakage for the rest of the frame period (no power gating), the pixel die's
    # readout of the whole frame, the CSI-2 link in metadata mode.
    link_bytes = csi2_bytes if csi2_bytes is not None else 0
    link_pj = link_bytes * 8 * tech.dphy_pj_per_bit
    pixel_pj = config.frame_width * config.frame_height * tech.pixel_pj
    idle_leak_pj = leak_w * max(0.0, frame_period - seconds) * 1e12
    die_frame_pj = inference_pj + idle_leak_pj + link_pj
    if banks is None:
        banks = dict(bank_model, **predict_io_banks(config, compiled.io))
        bank_source = "analytic model (sim.cyclemodel)"
    else:
        bank_source = "RTL per-bank counters"
    report = {
        "node": node, "vdd": tech.vdd, "activity_source": source, "cycles": int(cycles),
        "inference_ms": seconds * 1e3, "macs": int(total_macs),
        "activity_total": {k: int(sum(a[k] for a in activity)) for k in ACTIVITY_KEYS}
        | {"fetch_weight_reads": int(model["total"]["fetch_weight_reads"])},
        "bytes": {"act_sram_read": int(sum(a["act_reads"] for a in activity)) * C,
                  "act_sram_write": int(sum(a["act_write_bytes"] for a in activity)),
                  "weight_sram_read": int(sum(a["weight_reads"] for a in activity)
                                          + model["total"]["fetch_weight_reads"]) * WB,
                  "isp_input_write": in_elems, "csi2_output_read": out_b},
        "sram_pj_per_byte": e_sram, "sram_macro_bytes": config.sram_bank_bytes,
        "inference_uj": {k: v * 1e-6 for k, v in totals.items()},
        "inference_mj": inference_pj * 1e-9,
        "pj_per_mac": inference_pj / total_macs if total_macs else 0.0,
        "tops_per_w": 2 * total_macs / inference_pj if inference_pj else 0.0,     # ops/pJ == TOPS/W
        "leakage_mw": leak_w * 1e3, "gates": gates, "sram_bits": sram_bits,
        "frame": {
            "frame_rate": config.frame_rate, "die_mj": die_frame_pj * 1e-9,
            "die_mw": die_frame_pj * 1e-12 * config.frame_rate * 1e3,
            "inference_mw": inference_pj * 1e-12 * config.frame_rate * 1e3,
            "link_mj": link_pj * 1e-9, "idle_leakage_mj": idle_leak_pj * 1e-9,
            "pixel_die_mj": pixel_pj * 1e-9, "pixel_die_mw": pixel_pj * 1e-12 * config.frame_rate * 1e3,
            "sensor_mw": (die_frame_pj + pixel_pj) * 1e-12 * config.frame_rate * 1e3,
        },
        "link": _link(config, tech, link_bytes, raw10_frame_bytes),
        "loader": {"rom_bytes": rom_bytes, "uj_once": (rom_bytes or 0) * e_sram * 1e-6,
                   "note": "the ROM image written into the SRAM once per model load, not per frame"},
        "engine_cycles": engine_cycles(config, compiled, descriptor_cycles, activity, cycles),
        "banks": _bank_energy(config, tech, bank_activity(config, banks), bank_source),
        "layers": rows,
        "camj_style": _camj_style(config, cycles),
        "published": PUBLISHED,
        "technology": tech.table(),
        "assumptions": ASSUMPTIONS,
    }
    return report


ASSUMPTIONS = [
    "Activity: exact counts of the die (MAC-array cycles, activation-SRAM words read and bytes written, weight-SRAM "
    "words read per descriptor, the sequencer's descriptor fetches); useful MACs from the network's layers.",
    "MACs: every useful MAC costs one int8 multiply + 32-bit accumulate; an active array cycle's other slots cost "
    "idle_slot_fraction of that (gated lanes).",
    "SRAM: every access costs the per-byte energy of one macro of sram_bank_bytes (reads = writes), whatever the "
    "word width: a word wider than a macro is read from several macros in parallel.",
    "SRAM banks: the per-bank bytes are the die's per-bank counters at the SRAM ports (or the analytic model's, "
    "placed by address); each bank is charged as one macro of sram_bank_bytes.",
    "Weights are read from the weight SRAM on every issue (the RTL keeps no weight reuse in registers): the "
    "weight word of rows x cols bytes is charged every MAC-array cycle.",
    "Requantization and the vector engine: one 32x32 multiply per output byte.",
    "ISP: per Bayer pixel of the crop one 32-bit accumulate and a 2-byte line-buffer read and write; per input "
    "element one 32x32 multiply and one SRAM byte.",
    "Leakage: every SRAM bit and every logic gate leaks all frame long (no power gating).",
    "Pixel die: every pixel of the frame is read out and converted once per frame.",
    "Nodes: 45 nm figures scaled by feature size x supply^2.",
]


def _link(config, tech, meta_bytes, raw_bytes):
    """CSI-2 bytes, bandwidth and link energy per frame: metadata mode against sending RAW10."""
    raw = raw_bytes if raw_bytes is not None else config.raw_frame_bytes
    fps = config.frame_rate
    pj_bit = tech.dphy_pj_per_bit
    return {
        "lanes": config.csi2_lanes, "metadata_bytes_per_frame": meta_bytes, "raw10_bytes_per_frame": raw,
        "metadata_bytes_per_lane": -(-meta_bytes // config.csi2_lanes),
        "raw10_bytes_per_lane": -(-raw // config.csi2_lanes),
        "metadata_mbit_s": meta_bytes * 8 * fps / 1e6, "raw10_mbit_s": raw * 8 * fps / 1e6,
        "metadata_uj_per_frame": meta_bytes * 8 * pj_bit * 1e-6, "raw10_uj_per_frame": raw * 8 * pj_bit * 1e-6,
        "metadata_mw": meta_bytes * 8 * pj_bit * fps * 1e-9, "raw10_mw": raw * 8 * pj_bit * fps * 1e-9,
        "saved_mw": (raw - meta_bytes) * 8 * pj_bit * fps * 1e-9,
        "bandwidth_ratio": raw / meta_bytes if meta_bytes else None,
    }


def _camj_style(config, cycles):
    """CamJ's way of charging the array (every PE on every busy cycle at 0.30 pJ/MAC) applied to this run's
    cycles on this array."""
    mj = cycles * config.macs_per_cycle * PUBLISHED["camj_imx500"]["pj_per_mac"] * 1e-9
    return {"mj": mj, "pj_per_mac": PUBLISHED["camj_imx500"]["pj_per_mac"],
            "note": "cycles x macs_per_cycle x 0.30 pJ"}


def plot_banks(report, path, title=""):
    """Bar chart of the SRAM bytes per bank: activation banks (the run's reads and writes, and the frame's input
    writes and output reads when known) and weight banks (the run's reads, the loader's writes when known)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    b = report["banks"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    for ax, key, series, label in (
            (axes[0], "act_sram_banks", (("read_bytes", "read"), ("write_bytes", "written"),
                                         ("input_write_bytes", "input written (frame)"),
                                         ("output_read_bytes", "outputs read (frame)")), "activation SRAM"),
            (axes[1], "weight_sram_banks", (("read_bytes", "read"), ("load_bytes", "loaded (once per model)")),
             "weight SRAM")):
        rows = b[key]
        x = np.arange(len(rows))
        series = [(k, n) for k, n in series if all(r[k] is not None for r in rows)]
        width = 0.8 / max(1, len(series))
        for i, (k, name) in enumerate(series):
            ax.bar(x + (i - (len(series) - 1) / 2) * width, [r[k] / 1024 for r in rows], width, label=name)
        ax.set_xticks(x)
        ax.set_xticklabels([str(r["bank"]) for r in rows], fontsize=7 if len(rows) <= 32 else 5)
        ax.set_xlabel("bank")
        ax.set_ylabel("KiB")
        uj = b["act_sram_uj" if key == "act_sram_banks" else "weight_sram_uj"]
        ax.set_title(f"{label}: {len(rows)} banks of {b['macro_bytes'] // 1024} KiB, {uj:.2f} uJ per run "
                     f"({b['sram_pj_per_byte']:.2f} pJ/B)", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle((title + "\n" if title else "") + f"per-bank SRAM traffic ({b['source']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_breakdown(report, path, title=""):
    """Bar chart of the inference's energy by component and a per-layer stacked bar chart, with the IMX500's
    published energy and CamJ's estimate as reference lines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    colors = dict(zip(COMPONENTS, plt.cm.tab10.colors))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1, 2.4]})
    inf = report["inference_uj"]
    names = [k for k in COMPONENTS if inf[k] > 0]
    ax1.barh(names, [inf[k] for k in names], color=[colors[k] for k in names])
    ax1.invert_yaxis()
    ax1.set_xlabel("uJ per inference")
    ax1.set_title(f"{report['inference_mj']:.3f} mJ, {report['tops_per_w']:.2f} TOPS/W ({report['node']})",
                  fontsize=9)
    rows = report["layers"]
    x = np.arange(len(rows))
    bottom = np.zeros(len(rows))
    for k in COMPONENTS:
        vals = np.array([r["energy_uj"].get(k, 0.0) for r in rows])
        if vals.any():
            ax2.bar(x, vals, bottom=bottom, color=colors[k], label=k)
            bottom += vals
    ax2.set_xticks(x)
    ax2.set_xticklabels([str(r["index"]) for r in rows], fontsize=6)
    ax2.set_xlabel("layer")
    ax2.set_ylabel("uJ")
    pub = report["published"]
    ax2.set_title(f"per layer; IMX500 published {pub['imx500_isscc2021']['mobilenet_v1_mj']:.3f} mJ "
                  f"(MobileNet V1), CamJ {pub['camj_imx500']['mj_per_frame']:.2f} mJ/frame, CamJ-style on these "
                  f"cycles {report['camj_style']['mj']:.3f} mJ", fontsize=8)
    ax2.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
