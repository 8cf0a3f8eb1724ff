"""Published models that use the data-movement operators: mediapipe 0.10.14's face_detection_full_range_sparse
(RESIZE_BILINEAR x3, DEPTH_TO_SPACE x2) quantized on the photos and compiled for imx500; the golden program
executor equals LiteRT BUILTIN_REF on the exported int8 model, element for element. The wheel comes from
PyPI once (tests/mediapipe_wheel.py, as `nox -s models` gets it)."""

import zipfile

import numpy as np

import stackcam.quant.golden as golden
from stackcam.quant.export import export_tflite
from stackcam.quant.litert import run_reference
from stackcam.rtl.params import PRESETS
from tests.mediapipe_wheel import mediapipe_wheel as _wheel


def test_face_detection_full_range_on_imx500_equals_builtin_ref(tmp_path):
    from stackcam.cli.models import prepare_model

    path = tmp_path / "face_detection_full_range_sparse.tflite"
    with zipfile.ZipFile(_wheel()) as z:
        path.write_bytes(z.read("mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite"))
    config = PRESETS["imx500"]
    prepared = prepare_model(str(path), config, calib_photos=True)
    ops = {d.op for d in prepared.compiled.descriptors}
    assert {"RESIZE", "GATHER"} <= ops
    exported = export_tflite(prepared.graph)
    rng = np.random.default_rng(9)
    shape = prepared.graph.tensors[prepared.graph.inputs[0]].shape
    for _ in range(2):
        x = rng.integers(-128, 128, shape).astype(np.int8)
        want = run_reference(exported, [x])
        got = golden.execute(prepared.rom, config, x[0])
        assert len(got) == len(want) == 2
        for g, w in zip(got, want):
            assert int(np.count_nonzero(np.asarray(g).reshape(w.shape) != w)) == 0
