"""Shared pieces of the die system tests: a compiled model and its golden outputs for a RAW frame."""

import numpy as np

from stackcam.cli.models import prepare_model
from stackcam.quant.isp import isp_reference
from stackcam.rtl.params import DieConfig
from stackcam.sim.dierun import model_registers
from stackcam.sim.frame_source import bayer_frame, load_image
from stackcam.sim.simulate import golden_die_outputs

__all__ = ["Model", "photo_frames", "TWO_LANES", "FOUR_LANES"]

# Small dies for the system tests (one Verilator build each): P = 4 pixels per clock with 2 CSI-2 lanes and line
# blanking, and P = 1 with 4 lanes; both with a little SRAM, enough for the first-light layer.
_SMALL_SRAM = dict(sram_banks=4, sram_bank_bytes=16 * 1024, weight_banks=2)
TWO_LANES = DieConfig(name="csi2x2", frame_width=88, frame_height=72, pixels_per_clock=4, input_width=10,
                      input_height=8, array_rows=4, array_cols=8, csi2_lanes=2,
                      csi2_blanking=3, **_SMALL_SRAM)
FOUR_LANES = DieConfig(name="csi2x4", frame_width=64, frame_height=40, pixels_per_clock=1, input_width=12,
                       input_height=8, array_rows=4, array_cols=4, csi2_lanes=4, **_SMALL_SRAM)


class Model:
    """A network compiled for a configuration, with the golden die outputs for any RAW10 frame."""

    def __init__(self, name, config, seed=0):
        self.config = config
        self.prepared = prepare_model(name, config, seed=seed)
        self.rom = self.prepared.rom
        self.io = self.prepared.io
        try:
            self.regs, self.geometry, self.quant = model_registers(config, self.io)
        except ValueError:          # the frame is too small for this input: only the tensor port can feed it
            self.regs, self.geometry, self.quant = model_registers(config, self.io, isp=False)

    def input_tensor(self, raw):
        return isp_reference(raw, self.config, self.quant, self.geometry)

    def expected(self, raw=None, x=None):
        """The die's output tensors (golden program executor) for a RAW frame or an input tensor."""
        x = self.input_tensor(raw) if x is None else x
        return golden_die_outputs(self.prepared, self.config, x)[0]


def photo_frames(config, n, seed):
    """The astronaut as the first frame, then random RAW10 frames."""
    rng = np.random.default_rng(seed)
    frames = [bayer_frame(load_image(None), config.frame_width, config.frame_height)]
    while len(frames) < n:
        frames.append(rng.integers(0, 1024, size=(config.frame_height, config.frame_width)).astype(np.uint16))
    return frames
