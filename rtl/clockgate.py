"""Clock gating as an ASIC does it, for the die's `config.clock_gating`."""

from amaranth import ClockDomain, ClockSignal, ResetSignal, Signal
from amaranth.build import Platform

__all__ = ["clock_gates", "gating"]


def gating(config, platform):
    """Whether an elaboration gates clocks: `config.clock_gating`, in the Verilog of an ASIC flow only (a platform
    that is not an FPGA's). amaranth.sim (no platform) updates a clock derived from another a delta cycle after
    that clock's flip-flops, so flip-flops on the gated clock would see their neighbours' next values; an FPGA
    build (an amaranth.build platform) keeps its clocks on the clock network, not in logic. There the gated logic
    keeps the die clock: the same cycles and results (gating only stops flip-flops that would not change)."""
    return config.clock_gating and platform is not None and not isinstance(platform, Platform)


def clock_gates(m, enables, latch="icg_latch"):
    """Integrated clock gates: for each (domain name, enable) a local clock domain whose clock is the die clock
    while `enable` is high, stopped while it is low, as an ASIC's ICG cell does it: the enable goes through a
    flip-flop on the falling edge (the ICG's latch, transparent while the clock is low) and the gated clock is
    the clock ANDed with it, so it never glitches. `enable` in a cycle clocks the domain's flip-flops at the
    rising edge that ends the cycle (a clock enable's timing); during reset every domain is clocked. `latch` names
    the latches' domain (local domains reach submodules: a module under one with gates names its own)."""
    m.domains += ClockDomain(latch, clk_edge="neg", local=True)
    m.d.comb += [ClockSignal(latch).eq(ClockSignal()), ResetSignal(latch).eq(ResetSignal())]
    for name, enable in enables:
        m.domains += ClockDomain(name, local=True)
        en_q = Signal(init=1, name=f"{name}_icg_en")
        m.d[latch] += en_q.eq(enable | ResetSignal())
        m.d.comb += [ClockSignal(name).eq(ClockSignal() & en_q), ResetSignal(name).eq(ResetSignal())]
