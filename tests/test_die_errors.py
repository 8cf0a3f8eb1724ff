"""Errors end to end: a network that stops on the die is flagged in that frame's embedded line, no stale tensor
is presented as its output, and every host path refuses the frame with one line naming the descriptor, the layer
and the error."""

import copy
import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from stackcam.errors import EXIT_DIE, DieError
from stackcam.quant import program as fmt
from stackcam.quant.romimage import build_rom
from stackcam.rtl.npu.core import NPU_ERRORS
from stackcam.rtl.params import preset
from stackcam.sim.csi2 import decode
from stackcam.sim.dierun import run_die
from tests.dieutil import Model

pytestmark = pytest.mark.xdist_group("verilator")


def _refusing_rom(compiled, k):
    """The compiled model with descriptor `k` (a CONV) flagged FCSCALE, which the conv engine refuses."""
    descs = copy.deepcopy(compiled.descriptors)
    descs[k].flags |= fmt.FCSCALE
    program = fmt.stream_words(b"".join(fmt.pack(d) for d in descs), compiled.config.weight_word_bytes)
    assert program.shape == compiled.program.shape
    return build_rom(dataclasses.replace(compiled, descriptors=descs, program=program))


def test_refused_descriptor_is_flagged_and_the_host_refuses_the_frame():
    config = preset("tiny")
    model = Model("zoo:mobilenet_v1_0.25_96_2", config)
    compiled = model.prepared.compiled
    convs = [i for i, d in enumerate(compiled.descriptors) if d.opcode == fmt.OPCODES["CONV"]]
    k = convs[len(convs) // 2]
    layer = compiled.descriptors[k].layer
    rom = _refusing_rom(compiled, k)
    h, w, c = model.io["input"]["hwc"]
    rng = np.random.default_rng(1)
    xs = [rng.integers(-128, 128, (h, w, c)).astype(np.int8) for _ in range(2)]
    # A good model first, then the refusing one: the refusing frame must not carry the previous frame's output.
    schedule = [("rom", model.rom), ("frame", 0), ("rom", rom), ("frame", 1)]
    run = run_die(config, None, tensors=xs, schedule=schedule, progress=False)
    assert [load["model_ok"] for load in run.loads] == [1, 1]
    dec = decode(run.csi2_bytes)
    assert (dec.ecc_errors, dec.crc_errors, dec.framing_errors) == (0, 0, 0), dec.errors
    good, bad = run.frames
    emb = bad.embedded
    assert emb["npu_failed"] and not emb["has_tensor"]
    assert (emb["npu_error"], emb["error_descriptor"], emb["error_layer"]) == (2, k, layer)
    assert bad.outputs == [] and bad.graph_outputs is None
    info = model.io["layers"][layer]
    assert bad.error == (f"the network stopped at descriptor {k}, layer {layer} ({info['kind']} '{info['name']}' "
                         f"as CONV): {NPU_ERRORS[2]} (NPU error 2)")
    assert good.error is None and good.embedded["npu_error"] == 0 and good.embedded["error_descriptor"] == 0
    for got, want in zip(good.outputs, model.expected(x=xs[0])):
        assert np.array_equal(got, want)


def test_run_rtl_refuses_the_frame():
    from stackcam.cli.run import run_rtl
    config = preset("tiny")
    model = Model("zoo:mobilenet_v1_0.25_96_2", config)
    compiled = model.prepared.compiled
    k = next(i for i, d in enumerate(compiled.descriptors) if d.opcode == fmt.OPCODES["CONV"])
    h, w, c = model.io["input"]["hwc"]
    with pytest.raises(DieError, match=rf"^input 0: the die refused the frame: the network stopped at "
                                       rf"descriptor {k}, layer \d+ .*engine refused the descriptor"):
        run_rtl(_refusing_rom(compiled, k), config, [np.zeros((h, w, c), np.int8)])


def test_stackcam_run_rtl_fully_connected_is_refused_with_no_output(tmp_path):
    """A classifier whose last layer is a FULLY_CONNECTED (which the RTL does not run yet): `stackcam run
    --engine rtl` exits non-zero with one line naming the layer, and writes no output file."""
    from tests.test_quant_ops import mobilenet_like
    m = mobilenet_like(seed=1)
    path = tmp_path / "net.tflite"
    path.write_bytes(m.output(len(m.b.tensors) - 1))
    np.save(tmp_path / "in.npy", np.zeros((1, 17, 17, 3), np.int8))
    out = tmp_path / "out.npz"
    r = subprocess.run([sys.executable, "-m", "stackcam.cli", "run", str(path), "--input", str(tmp_path / "in.npy"),
                        "--engine", "rtl", "--config", "tiny", "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == EXIT_DIE, r.stderr
    err = r.stderr.strip()
    assert err.count("\n") == 0 and err.startswith("stackcam run: error: input 0: the die refused the frame: "
                                                    "the network stopped at descriptor "), err
    assert "FULLY_CONNECTED" in err and NPU_ERRORS[2] in err
    assert not out.exists()
