"""Analytic cycle model of the NPU: each descriptor's cycles from the engines' schedules, plus the sequencer's
fetch and decode, for any configuration, in well under a second. The benchmark prints it next to the RTL."""

from stackcam.quant.program import DESCRIPTOR_BYTES, OPCODES
from stackcam.rtl.npu.conv import engine_cycles
from stackcam.rtl.npu.vector import NPUVectorEngine

__all__ = ["predict_cycles", "sequencer_overhead"]


def sequencer_overhead(config):
    """Cycles the NPU sequencer spends per descriptor outside its engine's count: fetch (read and latch, once
    per weight word the descriptor spans) and decode. The engine's count starts with the cycle that starts it."""
    words = max(1, DESCRIPTOR_BYTES // config.weight_word_bytes)
    return 2 * words + 1


def predict_cycles(compiled, config):
    """{"descriptors": [cycles of each descriptor as the die's per-descriptor counter reports it], "layers":
    {layer index: cycles}, "total": cycles of the whole run as the die's npu_cycles counter reports it}."""
    per = []
    layers = {}
    for d in compiled.descriptors:
        if d.opcode == OPCODES["END"]:
            continue
        if d.opcode in (OPCODES["CONV"], OPCODES["DWCONV"]):
            c = engine_cycles(config, d)
        else:
            c = NPUVectorEngine.cycles(config, d)
        per.append(c)
        layers[d.layer] = layers.get(d.layer, 0) + c
    # Every descriptor (END included) is fetched and decoded; END's decode ends the run.
    total = sum(per) + len(compiled.descriptors) * sequencer_overhead(config)
    return {"descriptors": per, "layers": layers, "total": total}
