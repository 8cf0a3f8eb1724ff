"""Interfaces shared by the NPU's engines: the decoded descriptor and the SRAM ports an engine drives."""

from amaranth.hdl import Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from stackcam.quant.program import FIELDS, OPCODES

__all__ = ["descriptor_layout", "OPCODES", "act_read_signature", "act_write_signature", "weight_read_signature",
           "engine_signature", "addr_bits", "banks_meet"]

def descriptor_layout():
    """The 128-byte descriptor of `quant.program` as a StructLayout: field for field, same byte offsets, so
    `desc.eq(word_bytes)` decodes a descriptor read from the weight SRAM."""
    return data.StructLayout({f.name: (signed if f.signed else unsigned)(f.bits) for f in FIELDS})


def addr_bits(words):
    return max(1, (words - 1).bit_length())


def act_read_signature(config):
    """Activation SRAM read: `data` holds word `addr` the cycle after a cycle with `en` high (and keeps it while
    `en` is low)."""
    return wiring.Signature({
        "addr": Out(addr_bits(config.act_words)), "en": Out(1), "data": In(8 * config.array_cols),
    })


def act_write_signature(config):
    """Activation SRAM write: lane c (byte c) of `data` is written to word `addr` when `en[c]` is high."""
    return wiring.Signature({
        "addr": Out(addr_bits(config.act_words)), "data": Out(8 * config.array_cols), "en": Out(config.array_cols),
    })


def weight_read_signature(config):
    """Weight SRAM read, same timing as the activation read; words of array_rows * array_cols bytes."""
    return wiring.Signature({
        "addr": Out(addr_bits(config.weight_words)), "en": Out(1), "data": In(8 * config.weight_word_bytes),
    })


def engine_signature(config, second_read=False):
    """What every engine exposes to the sequencer.

    `start` pulses with `desc` valid; `desc` stays stable until `done`. The engine owns the three SRAM ports
    from `start` to `done` (one-cycle pulse when its last write has been issued). `error` pulses with `done` when
    the descriptor asks for something the engine cannot do. `mac_active` is high in cycles the MAC array (or
    the engine's multipliers) does useful work, for the utilization counters. With `second_read` the engine also
    has the activation SRAM's second read port, `act_r2` (`config.act_read_ports` 2).
    """
    return wiring.Signature({
        "start": In(1), "desc": In(descriptor_layout()), "busy": Out(1), "done": Out(1), "error": Out(1),
        "mac_active": Out(1),
        "act_r": Out(act_read_signature(config)), "act_w": Out(act_write_signature(config)),
        "w_r": Out(weight_read_signature(config)),
        **({"act_r2": Out(act_read_signature(config))} if second_read else {}),
    })


def banks_meet(m, config, spans):
    """Whether the activation banks two tensors span meet (each bank has one read port, so two read ports may not
    read them together): `spans` are two (first word, words) of a stable descriptor's tensors; the bank ranges are
    registered, so the result is valid from the cycle after the descriptor's (engines read it at the end of their
    setup)."""
    shift = (config.act_bank_words - 1).bit_length()
    banks = []
    for base, words in spans:
        lo, hi = Signal(32), Signal(50)
        m.d.sync += [lo.eq(base >> shift), hi.eq((base + words - 1) >> shift)]
        banks.append((lo, hi))
    (lo1, hi1), (lo2, hi2) = banks
    return ~((hi1 < lo2) | (hi2 < lo1))
