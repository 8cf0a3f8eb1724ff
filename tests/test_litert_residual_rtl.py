"""BlazeFace quantized by LiteRT's own converter (its calibrator and quantizer, not our PTQ) through the RTL of a
die with two activation read ports: every residual ADD runs in the back end of the CONV before it (RESADD), the
quantizer's standalone RELUs (each with its own output scale) run as LUTs, its requantizing QUANTIZE ops between
the head's RESHAPEs and CONCATENATIONs run on the host; the outputs equal LiteRT BUILTIN_REF element for element."""

import re
import subprocess
import sys

import numpy as np
import pytest

from stackcam.quant.program import RESADD
from stackcam.rtl.params import PRESETS


@pytest.fixture(scope="module")
def litert_blazeface():
    import stackcam.quant.zoo.blazeface as bf
    from stackcam.quant.calib import calibration_set
    from stackcam.quant.ptq import litert_calibrated_model

    try:
        float_model = bf.blazeface_float_tflite()
    except bf.FetchError as exc:
        if bf.pypi_reachable():
            raise
        pytest.skip(f"PyPI is unreachable, so the mediapipe wheel cannot be fetched: {exc}")
    calib = calibration_set((1, 128, 128, 3))
    return litert_calibrated_model(float_model, calib), calib


def test_litert_quantized_blazeface_compiles_with_resadd(litert_blazeface):
    from stackcam.quant.compiler import compile_graph
    from stackcam.quant.importer import load_tflite
    from stackcam.quant.lower import lower

    model, _ = litert_blazeface
    compiled = compile_graph(lower(load_tflite(model)), PRESETS["demo"])
    host = [op["kind"] for op in compiled.io["host"]["ops"]]
    assert host.count("QUANTIZE") == 3 and host.count("CONCATENATION") == 2 and host.count("RESHAPE") == 4
    fused = [d for d in compiled.descriptors if d.op == "CONV" and d.flags & RESADD]
    assert len(fused) == 16
    assert "ADD" not in {d.op for d in compiled.descriptors}
    assert sum(layer.op == "LUT" for layer in compiled.layers) == 17          # the quantizer's RELUs


def test_litert_quantized_blazeface_on_demo_rtl(litert_blazeface, tmp_path):
    """`stackcam run --engine rtl --config demo` on a photo and on random bytes: exit 0, both outputs equal LiteRT
    BUILTIN_REF element for element, the die's NPU counter equals the analytic model."""
    from stackcam.quant.litert import run_reference
    from stackcam.quant.ref import quantize_float
    from stackcam.quant.tflite import read_model

    model, calib = litert_blazeface
    path = tmp_path / "blazeface_litert_int8.tflite"
    path.write_bytes(model)
    sg = read_model(model).subgraphs[0]
    q = sg.tensors[sg.inputs[0]].quantization
    xs = np.stack([quantize_float(calib[0][0], float(q.scale[0]), int(q.zeroPoint[0])),
                   np.random.default_rng(5).integers(-128, 128, (128, 128, 3)).astype(np.int8)])
    np.save(tmp_path / "x.npy", xs)
    out = tmp_path / "out.npz"
    r = subprocess.run([sys.executable, "-m", "stackcam.cli", "run", str(path), "--input", str(tmp_path / "x.npy"),
                        "--engine", "rtl", "--config", "demo", "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = np.load(out)
    want = [run_reference(model, [x[None]]) for x in xs]
    for k, shape in enumerate([(2, 896, 16), (2, 896, 1)]):
        ref = np.concatenate([w[k] for w in want])
        assert got[f"output_{k}"].shape == ref.shape == shape
        assert np.array_equal(got[f"output_{k}"], ref), np.argwhere(got[f"output_{k}"] != ref)[:8]
        assert len(np.unique(ref)) > 50            # real detections and boxes, not a saturated output
    measured = re.search(r"die: NPU ([\d,]+) cycles for the last input", r.stderr)
    model_cycles = re.search(r"([\d,]+) NPU cycles per input by the analytic model", r.stdout)
    assert measured and model_cycles, (r.stdout, r.stderr[-500:])
    assert measured.group(1) == model_cycles.group(1)
