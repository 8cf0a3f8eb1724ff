"""Shared pieces of the die system tests: a compiled model and its golden outputs for a RAW frame."""

import numpy as np

from stackcam.cli.models import prepare_model
from stackcam.quant.isp import isp_reference
from stackcam.rtl.params import DieConfig
from stackcam.sim.dierun import model_registers
from stackcam.sim.frame_source import bayer_frame, load_image
from stackcam.sim.simulate import golden_die_outputs

__all__ = ["Model", "photo_frames", "TWO_LANES", "FOUR_LANES", "golden_equals_litert", "die_equals_golden"]

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


def golden_equals_litert(graph, config, rom, count=3, seed=0):
    """The golden executor on `rom` equals LiteRT's BUILTIN_REF kernels on the exported `graph`, element for
    element, on `count` random inputs."""
    import stackcam.quant.golden as golden
    from stackcam.quant.export import export_tflite
    from stackcam.quant.litert import run_reference

    exported = export_tflite(graph)
    rng = np.random.default_rng(seed)
    for _ in range(count):
        x = rng.integers(-128, 128, graph.tensors[graph.inputs[0]].shape).astype(np.int8)
        want = run_reference(exported, [x])
        got = golden.execute(rom, config, x[0])
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape
            np.testing.assert_array_equal(g, w)


def die_equals_golden(config, compiled, rom, graph, count=2, seed=0, stall=0.0):
    """`count` random inputs on the die's tensor port (Verilator, a CSI-2 PHY stalling with probability `stall`):
    every graph output equals the golden executor's, no frame or CSI-2 error, and each descriptor's cycles and the
    total (the die's counters) equal the analytic model. Returns the run."""
    import stackcam.quant.golden as golden
    from stackcam.quant.program import OPCODES
    from stackcam.sim.cyclemodel import predict_cycles
    from stackcam.sim.dierun import run_die

    rng = np.random.default_rng(seed)
    xs = [rng.integers(-128, 128, graph.tensors[graph.inputs[0]].shape[1:]).astype(np.int8) for _ in range(count)]
    run = run_die(config, rom, tensors=xs, stall=stall, progress=False)
    assert run.loads[0]["model_ok"] == 1 and len(run.frames) == count
    assert run.counters["frame_errors"] == 0 and run.counters["csi2_errors"] == 0
    for x, frame in zip(xs, run.frames):
        assert frame.error is None
        want = golden.execute(rom, config, x)
        got = frame.graph_outputs if frame.graph_outputs is not None else frame.outputs
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(np.asarray(g).reshape(w.shape), w)
    predicted = predict_cycles(compiled, config)
    descs = [d for d in compiled.descriptors if d.opcode != OPCODES["END"]]
    assert [cyc for cyc, _ in run.descriptor_counters][:len(descs)] == predicted["descriptors"]
    assert run.counters["npu_cycles"] == predicted["total"]
    return run
