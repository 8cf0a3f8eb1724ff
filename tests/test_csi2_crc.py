"""The combinational multi-byte CRC-16 of rtl/csi2/crc.py against the bitwise reference in sim/csi2.py."""

import random

import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from stackcam.rtl.csi2.crc import CRC_INIT, crc16_matrix, crc16_reference, crc16_update
from stackcam.sim.csi2 import crc16

GOLDEN_PAYLOAD = bytes.fromhex("FF 00 00 02 B9 DC F3 72 BB D4 B8 5A C8 75 C2 7C 81 F8 05 DF FF 00 00 01")


def test_reference_from_catalog_matches_bitwise_crc():
    assert crc16_reference(CRC_INIT, GOLDEN_PAYLOAD) == 0x00F0
    rng = random.Random(2)
    for _ in range(200):
        state = rng.getrandbits(16)
        data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 6)))
        assert crc16_reference(state, data) == crc16(data, state)


@pytest.mark.parametrize("nbytes", [1, 2, 3, 4])
def test_update_logic(nbytes):
    state = Signal(16)
    data = [Signal(8, name=f"d{i}") for i in range(nbytes)]
    result = Signal(16)
    m = Module()
    m.d.comb += result.eq(crc16_update(state, data))
    assert len(crc16_matrix(nbytes)[1]) == 8 * nbytes
    rng = random.Random(nbytes)
    cases = [(CRC_INIT, GOLDEN_PAYLOAD[:nbytes])]
    cases += [(rng.getrandbits(16), bytes(rng.getrandbits(8) for _ in range(nbytes))) for _ in range(200)]

    async def tb(ctx):
        for s, d in cases:
            ctx.set(state, s)
            for sig, byte in zip(data, d):
                ctx.set(sig, byte)
            assert ctx.get(result) == crc16(d, s), f"state {s:#06x} data {d.hex()}"

    sim = Simulator(m)
    sim.add_testbench(tb)
    sim.run()

    # Folding a whole payload `nbytes` at a time gives the golden CRC when the length allows.
    if len(GOLDEN_PAYLOAD) % nbytes == 0:
        crc = CRC_INIT
        for i in range(0, len(GOLDEN_PAYLOAD), nbytes):
            crc = crc16_reference(crc, GOLDEN_PAYLOAD[i:i + nbytes])
        assert crc == 0x00F0
