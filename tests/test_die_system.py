"""System tests: the whole die generated to Verilog, built with Verilator, driven by cocotb."""

import numpy as np
import pytest

from quant.firstlight import first_light_program, first_light_reference
from rtl.params import DieConfig, preset
from sim.csi2 import decode
from sim.dierun import run_die
from sim.frame_source import bayer_frame, load_image

pytestmark = pytest.mark.xdist_group("verilator")


def _frames(config, n, seed):
    """The astronaut as the first frame, then random RAW10 frames."""
    rng = np.random.default_rng(seed)
    frames = [bayer_frame(load_image(None), config.frame_width, config.frame_height)]
    while len(frames) < n:
        frames.append(rng.integers(0, 1024, size=(config.frame_height, config.frame_width)).astype(np.uint16))
    return frames


@pytest.mark.parametrize("config,stall", [
    (preset("tiny"), 0.0),
    (preset("tiny"), 0.4),
    (DieConfig(name="sys2", frame_width=88, frame_height=72, pixels_per_clock=4, input_width=10,
               input_height=8, array_rows=8, array_cols=4, conv_out_channels=12, csi2_lanes=2), 0.3),
])
def test_die_bit_exact_over_frames(config, stall):
    program = first_light_program(config, seed=3)
    raws = _frames(config, 3, seed=5)
    run = run_die(config, program, raws, stall=stall, progress=False)
    assert run.counters["frame_errors"] == 0 and run.counters["csi2_errors"] == 0
    dec = decode(run.csi2_bytes)
    assert (dec.ecc_errors, dec.ecc_corrected, dec.crc_errors, dec.framing_errors) == (0, 0, 0, 0), dec.errors
    frames = dec.frames_on(1)
    assert [f.number for f in frames] == [1, 2, 3]
    assert len(run.tensors) == 3
    for raw, got in zip(raws, run.tensors):
        _, expect = first_light_reference(raw, config, program)
        assert got is not None
        mismatches = int(np.count_nonzero(got != expect))
        assert mismatches == 0, f"{mismatches}/{expect.size} output elements differ from the numpy reference"
    # The bytes on the wire (default metadata mode) are exactly FS, one long packet per output row, the
    # 32-byte embedded-data line and FE, per frame.
    oh, ow, oc = expect.shape
    assert len(run.csi2_bytes) == 3 * (4 + oh * (4 + ow * oc + 2) + (4 + 32 + 2) + 4)
    # Performance counters are the engine's own: every tap of every tile is one MAC-array cycle.
    assert run.counters["mac_cycles"] == oh * ow * -(-oc // config.array_rows) * 9
    assert len(run.first_pixel) == len(run.last_pixel) == len(run.frame_last_byte) == 3
