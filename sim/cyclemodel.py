"""Analytic cycle model of the NPU: each descriptor's cycles from the engines' cycle formulas (`quant.timing`),
plus the sequencer's fetch and decode, for any configuration, in well under a second. The benchmark prints it
next to the RTL; tests/test_cyclemodel.py holds it to the die's per-descriptor counters, to the cycle."""

from stackcam.quant.timing import program_cycles, sequencer_overhead

__all__ = ["predict_cycles", "sequencer_overhead"]


def predict_cycles(compiled, config):
    """{"descriptors": [cycles of each descriptor as the die's per-descriptor counter reports it], "layers":
    {layer index: cycles}, "total": cycles of the whole run as the die's npu_cycles counter reports it}."""
    return program_cycles(config, compiled.descriptors)
