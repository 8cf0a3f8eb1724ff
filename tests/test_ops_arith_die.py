"""MUL, SUB, broadcast ADD, MEAN and per-channel PRELU on the die: the compiled program (golden executor) equals
LiteRT's BUILTIN_REF on the exported graph; the descriptors hold what the vector engine must get right."""

import numpy as np
import pytest

import stackcam.quant.golden as golden
import stackcam.quant.program as fmt
from stackcam.quant.compiler import compile_graph
from stackcam.quant.export import export_tflite
from stackcam.quant.litert import run_reference
from stackcam.quant.romimage import build_rom
from tests.dieutil import golden_equals_litert
from tests.test_program import CONFIGS, net_arith


@pytest.mark.parametrize("config", ["tiny", "fpga", "narrow"])
def test_arith_net_golden_equals_litert(config):
    graph = net_arith()
    golden_equals_litert(graph, CONFIGS[config], build_rom(compile_graph(graph, CONFIGS[config])), count=3, seed=3)


def test_arith_net_descriptors():
    descs = compile_graph(net_arith(), CONFIGS["tiny"]).descriptors
    ops = {d.op for d in descs}
    assert {"MUL", "MEAN", "PRELU", "ADD", "LUT"} <= ops
    muls = [d for d in descs if d.op == "MUL"]
    assert {(d.in2_h, d.in2_w, d.in2_c) == (d.out_h, d.out_w, d.out_c) for d in muls} == {True, False}
    assert any((d.in2_h, d.in2_w, d.in2_c) == (1, 1, 1) for d in muls)
    assert any((d.in2_h, d.in2_w, d.in2_c) == (1, 1, d.out_c) and d.out_c > 1 for d in muls)
    subs = [d for d in descs if d.op == "ADD" and d.flags & fmt.NEG2]
    assert len(subs) == 2 and any(d.in2_h == 1 for d in subs)
    assert any(d.op == "ADD" and not d.flags & fmt.NEG2 and d.in2_c == 1 for d in descs)
    assert len([d for d in descs if d.op == "MEAN"]) == 2
    assert len([d for d in descs if d.op == "PRELU"]) == 1 and len([d for d in descs if d.op == "LUT"]) == 2


def _mediapipe_model(member, tmp_path):
    import zipfile

    from tests.mediapipe_wheel import mediapipe_wheel
    with zipfile.ZipFile(mediapipe_wheel()) as z:
        path = tmp_path / member.rsplit("/", 1)[1]
        path.write_bytes(z.read(f"mediapipe/modules/{member}"))
    return path


def test_mediapipe_iris_landmark_compiles_and_golden_equals_litert(tmp_path):
    """iris_landmark (PRELU with float16 alphas behind DEQUANTIZE, refused before): quantized on photos by our
    PTQ, compiled for imx500; the golden program executor equals BUILTIN_REF on the exported int8 model."""
    from skimage import data, transform

    from stackcam.cli.models import prepare_model
    from stackcam.quant.litert import reference_interpreter
    from stackcam.rtl.params import PRESETS
    path = _mediapipe_model("iris_landmark/iris_landmark.tflite", tmp_path)
    config = PRESETS["imx500"]
    prepared = prepare_model(path, config, calib_photos=True)
    assert [d.op for d in prepared.compiled.descriptors].count("PRELU") > 20
    exported = export_tflite(prepared.graph)
    d = reference_interpreter(exported).get_input_details()[0]
    s, z = d["quantization"]
    for img in (data.astronaut(), data.chelsea()):
        x = transform.resize(img, tuple(d["shape"][1:3]), anti_aliasing=True).astype(np.float32) * 2 - 1
        q = np.clip(np.round(x / s) + z, -128, 127).astype(np.int8)[None]
        want = run_reference(exported, [q])
        got = golden.execute(prepared.rom, config, q[0])
        for g, w in zip(got, want):
            np.testing.assert_array_equal(np.asarray(g).reshape(w.shape), w)
