"""Errors end to end: a network that stops on the die is flagged in that frame's embedded line, no stale tensor
is presented as its output, and every host path refuses the frame with one line naming the descriptor, the layer
and the error."""

import copy
import dataclasses

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
    """The compiled model with descriptor `k` (a CONV) asking for more output-channel tiles than the conv engine's
    parameter buffer holds, which the engine refuses."""
    config = compiled.config
    descs = copy.deepcopy(compiled.descriptors)
    descs[k].oc_tiles = config.max_channels // config.array_rows + 1
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


def test_stackcam_run_rtl_refused_descriptor_with_no_output(tmp_path, monkeypatch, capsys):
    """A descriptor the die refuses reaching it (a FULLY_CONNECTED of more units than the conv engine's parameter
    buffer holds, tiny's max_channels; the compiler splits such a layer, so here its limit is lifted for this
    compile): `stackcam run --engine rtl` exits 3 with one line naming the descriptor, the layer and the error, and
    writes no output file."""
    from stackcam.cli import main
    from stackcam.quant import compiler
    from tests.test_quant_ops import ModelBuilder
    m = ModelBuilder(seed=1)
    units = preset("tiny").max_channels + 8
    path = tmp_path / "net.tflite"
    path.write_bytes(m.output(m.fc(m.conv(m.input((1, 2, 2, 3)), 4, k=1), units, out_q=(0.1, 0))))
    np.save(tmp_path / "in.npy", np.zeros((1, 2, 2, 3), np.int8))
    out = tmp_path / "out.npz"
    monkeypatch.setattr(compiler, "param_buffer_channels", lambda config: 1 << 16)
    rc = main(["run", str(path), "--input", str(tmp_path / "in.npy"), "--engine", "rtl", "--config", "tiny",
               "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == EXIT_DIE, err
    assert err.count("\n") == 0 and err.startswith("stackcam run: error: input 0: the die refused the frame: "
                                                   "the network stopped at descriptor "), err
    assert "descriptor 1, layer 1 (FULLY_CONNECTED" in err and NPU_ERRORS[2] in err
    assert not out.exists()
