"""The analytic cycle model (`quant.timing`, through `sim.cyclemodel.predict_cycles`) against the RTL: every
descriptor's cycles equal the die's per-descriptor counter, to the cycle, and the run's total its npu_cycles
counter, for every zoo network at the `tiny` and `demo` presets and the person detector at `fpga` (its deep
arithmetic pipelines) (the whole die in Verilator, input on the tensor port); the compiler's per-layer cycles in
the manifest are the same figures. The die's per-descriptor activity counters (MAC-array cycles, activation-SRAM
words read and bytes written, weight-SRAM words read) equal `quant.timing.descriptor_activity`, count for
count."""

import numpy as np
import pytest

from stackcam.quant import timing
from stackcam.quant.program import OPCODES, PACKED
from stackcam.rtl.params import preset
from stackcam.sim.cyclemodel import predict_cycles
from stackcam.sim.dierun import run_die
from tests.dieutil import Model

pytestmark = pytest.mark.xdist_group("verilator")

ZOO = ["zoo:blazeface", "zoo:mobilenet_v1_0.25_96_2", "zoo:first-light"]


def _kind(d):
    name = {v: k for k, v in OPCODES.items()}[d.opcode]
    return name + (" PACKED" if d.opcode == OPCODES["CONV"] and d.flags & PACKED else "")


# Every zoo network at tiny and demo; at fpga (the deep arithmetic pipelines: other latencies) the person detector
# (the board's network; first-light's 128x128 activations do not fit its 80 KiB).
CASES = [(name, config) for config in ("tiny", "demo") for name in ZOO] + [("zoo:mobilenet_v1_0.25_96_2", "fpga")]


@pytest.mark.parametrize("name,config", CASES)
def test_model_equals_die_counters(name, config):
    config = preset(config)
    model = Model(name, config)
    compiled = model.prepared.compiled
    predicted = predict_cycles(compiled, config)
    h, w, c = model.io["input"]["hwc"]
    x = np.random.default_rng(5).integers(-128, 128, (h, w, c)).astype(np.int8)
    run = run_die(config, model.rom, tensors=[x], progress=False)
    assert run.loads[0]["model_ok"] == 1
    descs = [d for d in compiled.descriptors if d.opcode != OPCODES["END"]]
    counters = [cyc for cyc, _ in run.descriptor_counters][:len(descs)]
    assert len(counters) == len(descs)
    wrong = [f"#{i} {_kind(d)} {d.kernel_h}x{d.kernel_w}/s{d.stride_h} {d.in_h}x{d.in_w}x{d.in_c}->"
             f"{d.out_h}x{d.out_w}x{d.out_c}: die {got}, model {want}"
             for i, (d, got, want) in enumerate(zip(descs, counters, predicted["descriptors"])) if got != want]
    assert not wrong, "\n".join(wrong)
    assert run.counters["npu_cycles"] == predicted["total"]
    activity = timing.program_activity(config, compiled.descriptors)
    measured = [dict(a, mac_cycles=mc) for a, (_, mc) in zip(run.descriptor_activity, run.descriptor_counters)]
    assert len(measured) == len(descs)
    wrong = [f"#{i} {_kind(d)} {d.kernel_h}x{d.kernel_w}/s{d.stride_h} {d.in_h}x{d.in_w}x{d.in_c}->"
             f"{d.out_h}x{d.out_w}x{d.out_c}: die {got}, model {want}"
             for i, (d, got, want) in enumerate(zip(descs, measured, activity["descriptors"])) if got != want]
    assert not wrong, "\n".join(wrong)
    assert sum(a["act_reads"] for a in measured) > 0 and sum(a["weight_reads"] for a in measured) > 0
    # The manifest's per-layer figures are the same formula.
    assert {layer.index: layer.cycles for layer in compiled.layers if layer.descriptors} == predicted["layers"]
    assert sum(predicted["descriptors"]) + len(compiled.descriptors) * timing.sequencer_overhead(config) \
        == predicted["total"]
