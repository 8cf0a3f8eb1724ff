"""CRC-32 (IEEE 802.3, zlib.crc32) as a combinational update by 1 to n bytes per clock, derived from amaranth's
catalog; used by the model loader for the ROM image's section and trailer checks."""

import functools

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib.crc import Algorithm
from amaranth.lib.crc.catalog import CRC32_ISO_HDLC

__all__ = ["CRC32_INIT", "CRC32_XOR", "CRC32_RESIDUE", "crc32_reference", "crc32_matrix", "crc32_update",
           "crc32_update_upto"]

# The running value is the CRC register before the output XOR (the reflected view: bit 0 is the highest-order
# term), so the update is linear in (state, data). zlib.crc32(m) == crc32_reference(CRC32_INIT, m) ^ CRC32_XOR.
CRC32_INIT = 0xFFFFFFFF
CRC32_XOR = CRC32_ISO_HDLC.xor_output
# The register after a message followed by its own CRC-32 (little-endian): any message, so a checker folds the
# trailer in with the rest and compares with this constant instead of finding where the trailer starts.
CRC32_RESIDUE = 0xDEBB20E3


def _reverse32(value):
    return int(f"{value:032b}"[::-1], 2)


def crc32_reference(state, data):
    """CRC32_ISO_HDLC's register (reflected, without the output XOR) continued from `state` over bytes `data`.

    The catalog's `compute()` starts from the algorithm's initial value and applies its output XOR; a running
    state is an algorithm identical but for `initial_crc` (held by amaranth in the unreflected domain) and
    `xor_output=0`.
    """
    assert CRC32_ISO_HDLC.reflect_input and CRC32_ISO_HDLC.reflect_output
    algorithm = Algorithm(
        crc_width=32, polynomial=CRC32_ISO_HDLC.polynomial, initial_crc=_reverse32(state),
        reflect_input=True, reflect_output=True, xor_output=0)
    return algorithm(8).compute(list(data))


@functools.cache
def crc32_matrix(nbytes):
    """The update over `nbytes` bytes as GF(2) columns: (32 state columns, 8*nbytes data columns), each the
    32-bit effect of one input bit (the update without output XOR is linear, so these span it)."""
    state_cols = tuple(crc32_reference(1 << i, bytes(nbytes)) for i in range(32))
    data_cols = tuple(crc32_reference(0, (1 << i).to_bytes(nbytes, "little")) for i in range(8 * nbytes))
    return state_cols, data_cols


def crc32_update(state, data_bytes):
    """Amaranth expression: the register after the bytes `data_bytes` (first byte first) from `state`.

    One XOR tree per CRC bit over the state and data bits that affect it; no state of its own.
    """
    if not data_bytes:
        return state
    return _crc32_tree(Cat(state[:32], *data_bytes), len(data_bytes))


def _crc32_tree(inputs, nbytes):
    """The update over `inputs` = state (32 bits) then `nbytes` data bytes. Each CRC bit is the parity of the inputs
    under a constant mask: after constant folding the same XOR tree as term-by-term, and one big-integer AND per
    bit in the Python simulator instead of one operation per term (pass a Signal: the simulator then builds the
    concatenation once, not once per bit)."""
    state_cols, data_cols = crc32_matrix(nbytes)
    bits = []
    for i in range(32):
        mask = sum(1 << j for j, col in enumerate(state_cols + data_cols) if col >> i & 1)
        bits.append((inputs & mask).xor() if mask else Const(0, 1))
    return Cat(*bits)


def crc32_update_upto(m, state, data_bytes, count, name="crc"):
    """The register after the first `count` (a Value, 0..n) of the n bytes `data_bytes`, as a Signal driven by a
    combinational submodule `name` of `m`.

    A full n-byte tree when `count >= n`; otherwise a chain of power-of-two stages (n/2, n/4, ..., 1 bytes), each
    taken when its bit of `count` is set and fed the bytes that follow the larger stages: about twice the logic
    of one n-byte tree instead of the n trees of a per-count multiplexer. Each stage is its own Signal, so neither
    the netlist nor the simulator sees the chain as one expression tree.
    """
    n = len(data_bytes)
    result = Signal(32, name=name)
    outer, m = m, Module()
    outer.submodules[name] = m
    full_in = Signal(32 + 8 * n, name=f"{name}_in")
    m.d.comb += full_in.eq(Cat(state[:32], *data_bytes))
    full = _crc32_tree(full_in, n)
    if n == 1:
        m.d.comb += result.eq(Mux(count >= 1, full, state))
        return result
    # The chain sees zeros unless the count is partial (operand isolation: it toggles only on a partial chunk, and
    # the simulator, which runs it as a submodule of its own, only evaluates it then).
    partial = Signal(name=f"{name}_partial")
    chain_in = Signal(32 + 8 * n, name=f"{name}_chain_in")
    m.d.comb += [partial.eq(count < n), chain_in.eq(Mux(partial, full_in, 0))]
    chain = Module()
    m.submodules.chain = chain
    lanes = [chain_in[32 + 8 * j:40 + 8 * j] for j in range(n)]
    width = (n - 1).bit_length()             # bits of a count below n
    s = chain_in[:32]
    for k in reversed(range(width)):
        size = 1 << k
        # The stage's bytes follow those of the stages above it: group g starts at byte g << (k+1), selected by the
        # bits of count above k (padded to a power of two so that every select value has a group).
        groups = [Cat(*(lanes[(g << (k + 1)) + j] if (g << (k + 1)) + j < n else Const(0, 8)
                        for j in range(size))) for g in range(1 << (width - k - 1))]
        stage_in = Signal(32 + 8 * size, name=f"{name}_s{size}_in")
        chain.d.comb += stage_in.eq(Cat(s, Array(groups)[count[k + 1:width]] if len(groups) > 1 else groups[0]))
        nxt = Signal(32, name=f"{name}_s{size}")
        chain.d.comb += nxt.eq(Mux(count[k], _crc32_tree(stage_in, size), s))
        s = nxt
    m.d.comb += result.eq(Mux(partial, s, full))
    return result
