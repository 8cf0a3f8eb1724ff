"""CSI-2 payload CRC-16 as a combinational update by 1 to n bytes per clock, derived from amaranth's catalog."""

import functools

from amaranth.hdl import Cat, Const
from amaranth.lib.crc import Algorithm
from amaranth.lib.crc.catalog import CRC16_MCRF4XX

__all__ = ["CRC_INIT", "crc16_reference", "crc16_matrix", "crc16_update"]

CRC_INIT = 0xFFFF


def _reverse16(value):
    return int(f"{value:016b}"[::-1], 2)


def crc16_reference(state, data):
    """CRC16_MCRF4XX continued from `state` (the CRC value as sent, i.e. reflected) over the bytes `data`.

    The catalog's `compute()` always starts from the algorithm's initial value; a running state is started by an
    algorithm identical but for `initial_crc`, which amaranth holds in the unreflected register domain.
    """
    algorithm = Algorithm(
        crc_width=CRC16_MCRF4XX.crc_width, polynomial=CRC16_MCRF4XX.polynomial,
        initial_crc=_reverse16(state) if CRC16_MCRF4XX.reflect_output else state,
        reflect_input=CRC16_MCRF4XX.reflect_input, reflect_output=CRC16_MCRF4XX.reflect_output,
        xor_output=CRC16_MCRF4XX.xor_output)
    return algorithm(8).compute(list(data))


@functools.cache
def crc16_matrix(nbytes):
    """The update over `nbytes` bytes as GF(2) columns: (16 state columns, 8*nbytes data columns), each the
    16-bit effect of one input bit. The CRC has no output XOR, so the update is linear and these span it."""
    assert CRC16_MCRF4XX.xor_output == 0
    state_cols = [crc16_reference(1 << i, bytes(nbytes)) for i in range(16)]
    data_cols = []
    for i in range(8 * nbytes):
        data = (1 << i).to_bytes(nbytes, "little")
        data_cols.append(crc16_reference(0, data))
    return state_cols, data_cols


def crc16_update(state, data_bytes):
    """Amaranth expression: the CRC (as sent) after the bytes `data_bytes` (first byte first) from `state`.

    One XOR tree per CRC bit over the state and data bits that affect it; no state of its own, so the caller
    chooses how many bytes to fold in per clock (1 to n) and keeps the running value in its own register.
    """
    data = Cat(*data_bytes)
    state_cols, data_cols = crc16_matrix(len(data_bytes))
    bits = []
    for i in range(16):
        bit = Const(0, 1)
        for j, col in enumerate(state_cols):
            if col >> i & 1:
                bit = bit ^ state[j]
        for j, col in enumerate(data_cols):
            if col >> i & 1:
                bit = bit ^ data[j]
        bits.append(bit)
    return Cat(*bits)
