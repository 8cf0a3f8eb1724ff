"""CSI-2 packet header ECC (6-bit Hamming code over the 24 header bits, CSI-2 v1.x) as Amaranth logic."""

from amaranth.hdl import Cat, Const, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ECC_MATRIX", "header_ecc", "HeaderECC"]

# Parity-check matrix of the CSI-2 header code, one row per header bit D0..D23: bit n of the entry says that
# Dn takes part in parity bit Pn. D0-D9 use three of P0-P4, D10-D19 use P5 and two of P0-P4, D20-D23 use five
# parity bits, so every single-bit error has its own syndrome.
ECC_MATRIX = (
    0x07, 0x0B, 0x0D, 0x0E, 0x13, 0x15, 0x16, 0x19, 0x1A, 0x1C,     # D0-D9
    0x23, 0x25, 0x26, 0x29, 0x2A, 0x2C, 0x31, 0x32, 0x34, 0x38,     # D10-D19
    0x1F, 0x2F, 0x37, 0x3B,                                         # D20-D23
)


def header_ecc(header):
    """The 8-bit ECC byte (P7/P6 zero) of a 24-bit header value: combinational XOR trees, no state."""
    bits = []
    for p in range(6):
        parity = Const(0, 1)
        for d in range(24):
            if ECC_MATRIX[d] >> p & 1:
                parity = parity ^ header[d]
        bits.append(parity)
    return Cat(*bits, Const(0, 2))


class HeaderECC(wiring.Component):
    """Combinational header ECC: `ecc` is the ECC byte of `header` (DI | data/WC << 8) in the same cycle."""

    header: In(24)
    ecc: Out(8)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.ecc.eq(header_ecc(self.header))
        return m


def _check():
    # Catch a typo in the table at import time: all 24 syndromes distinct and none of weight below 3.
    assert len(set(ECC_MATRIX)) == 24
    assert all(bin(col).count("1") >= 3 for col in ECC_MATRIX)


_check()
