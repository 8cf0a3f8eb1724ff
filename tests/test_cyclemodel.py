"""The analytic cycle model (`quant.timing`, through `sim.cyclemodel.predict_cycles`) against the RTL: every
descriptor's cycles equal the die's per-descriptor counter, to the cycle, and the run's total its npu_cycles
counter, for every zoo network at the `tiny` and `demo` presets and the person detector at `fpga` (its deep
arithmetic pipelines) (the whole die in Verilator, input on the tensor port); the compiler's per-layer cycles in
the manifest are the same figures. The die's per-descriptor activity counters (MAC-array cycles, activation-SRAM
words read and bytes written, weight-SRAM words read) equal `quant.timing.descriptor_activity`, count for count,
and its per-bank counters equal `sim.cyclemodel.predict_bank_activity` bank for bank (the loader's writes: the
ROM's sections; the input writer's and output reader's: the model I/O's tensors)."""

import numpy as np
import pytest

from stackcam.quant import timing
from stackcam.quant.program import OPCODES, PACKED
from stackcam.quant.romimage import load_rom
from stackcam.rtl.params import preset
from stackcam.sim.cyclemodel import predict_bank_activity, predict_cycles, predict_io_banks, predict_load_banks
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
    # Per bank: the die's per-bank counters (at the SRAM ports, the sequencer's fetches included) equal the
    # analytic model's accesses placed by address, and add up to the whole-SRAM counts; the loader wrote each
    # weight section's words where the ROM image says.
    banks = predict_bank_activity(config, compiled.descriptors, weights=load_rom(model.rom, config).weight_sram())
    assert banks["unmodelled"] == []
    for k in ("act_reads", "act_write_bytes", "weight_reads"):
        assert run.bank_counters[k] == banks[k], k
    total = activity["total"]
    assert sum(banks["act_reads"]) == total["act_reads"]
    assert sum(banks["act_write_bytes"]) == total["act_write_bytes"]
    assert sum(banks["weight_reads"]) == total["weight_reads"] + total["fetch_weight_reads"]
    assert run.bank_counters["weight_writes"] == predict_load_banks(config, model.rom)
    # Between runs: the input writer's words and the output reader's, per bank, for the one frame.
    io = predict_io_banks(config, model.io)
    for k in ("input_write_bytes", "output_reads"):
        assert run.bank_counters[k] == io[k], k
    # The manifest's per-layer figures are the same formula.
    assert {layer.index: layer.cycles for layer in compiled.layers if layer.descriptors} == predicted["layers"]
    assert sum(predicted["descriptors"]) + len(compiled.descriptors) * timing.sequencer_overhead(config) \
        == predicted["total"]
