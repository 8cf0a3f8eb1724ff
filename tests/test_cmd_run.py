"""`stackcam run`: outputs equal LiteRT BUILTIN_REF; batches; one-line errors with exit 2 and no output file."""

import subprocess
import sys

import numpy as np
import pytest

from quant.litert import run_reference
from quant.tflite import schema
from sim.cli import main
from tests.test_quant_ops import ModelBuilder, mobilenet_like

OPS = schema.BuiltinOperator


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    m = mobilenet_like(seed=1)
    (d / "net.tflite").write_bytes(m.output(len(m.b.tensors) - 1))

    two = ModelBuilder(seed=2)
    x = two.input((1, 6, 6, 3), scale=1 / 128, zp=0)
    y = two.conv(x, 4, k=3, stride=2, act="RELU6", out_q=(6 / 255, -128))
    z = two.pool(y, "MAX_POOL_2D", (3, 3), 1, "VALID")
    (d / "two.tflite").write_bytes(two.output(y, z))

    edges = ModelBuilder(seed=3)
    xf = edges.b.add_input("image", (1, 5, 5, 2), np.float32)
    edges.shapes[xf] = (1, 5, 5, 2)
    xq = edges.act((1, 5, 5, 2), 1 / 128, 0)
    edges.b.add_operator(OPS.QUANTIZE, [xf], [xq])
    y = edges.conv(xq, 3, k=3, act="RELU", out_q=(0.05, -128))
    yf = edges.b.add_tensor("scores", edges.shapes[y], np.float32)
    edges.b.add_operator(OPS.DEQUANTIZE, [y], [yf])
    (d / "edges.tflite").write_bytes(edges.output(yf))

    fl = ModelBuilder(seed=4, dtype=np.float32)
    x = fl.input((1, 5, 5, 2))
    (d / "float.tflite").write_bytes(fl.output(fl.conv(x, 3, k=3)))

    hs = ModelBuilder(seed=5)
    x = hs.input((1, 4, 4, 3))
    h = hs.act((1, 4, 4, 3), 0.05, 0, base="swish")
    hs.b.add_operator(OPS.HARD_SWISH, [x], [h])
    (d / "hardswish.tflite").write_bytes(hs.output(h))
    (d / "cut.tflite").write_bytes((d / "net.tflite").read_bytes()[:900])
    return d


def stackcam(*args):
    return subprocess.run([sys.executable, "-m", "sim.cli", *map(str, args)], capture_output=True, text=True)


def rand(shape, seed=0, dtype=np.int8):
    return np.random.default_rng(seed).integers(-128, 128, shape).astype(dtype)


def test_run_end_to_end_equals_litert(models, tmp_path):
    x = rand((17, 17, 3))
    np.save(tmp_path / "in.npy", x)
    r = stackcam("run", models / "net.tflite", "--input", tmp_path / "in.npy", "-o", tmp_path / "out.npz")
    assert r.returncode == 0, r.stderr
    out = np.load(tmp_path / "out.npz")
    want = run_reference((models / "net.tflite").read_bytes(), [x[None]])[0]
    assert list(out) == ["output_0"] and out["output_0"].dtype == np.int8
    np.testing.assert_array_equal(out["output_0"], want)


def test_run_batch_and_multiple_outputs(models, tmp_path, capsys):
    xb = rand((3, 6, 6, 3), seed=1)
    np.save(tmp_path / "batch.npy", xb)
    assert main(["run", str(models / "two.tflite"), "--input", str(tmp_path / "batch.npy"),
                 "-o", str(tmp_path / "o.npz"), "--config", "tiny"]) == 0
    out = np.load(tmp_path / "o.npz")
    assert list(out) == ["output_0", "output_1"]
    model = (models / "two.tflite").read_bytes()
    for b in range(3):
        want = run_reference(model, [xb[b:b + 1]])
        np.testing.assert_array_equal(out["output_0"][b:b + 1], want[0])
        np.testing.assert_array_equal(out["output_1"][b:b + 1], want[1])
    assert out["output_0"].shape == (3, 3, 3, 4) and out["output_1"].shape == (3, 1, 1, 4)


def test_run_float_edges_run_on_the_host(models, tmp_path):
    # The die takes the int8 tensor after the input QUANTIZE and sends the int8 tensor before the DEQUANTIZE.
    x = rand((1, 5, 5, 2), seed=2)
    np.save(tmp_path / "in.npy", x)
    assert main(["run", str(models / "edges.tflite"), "--input", str(tmp_path / "in.npy"),
                 "-o", str(tmp_path / "o.npz")]) == 0
    got = np.load(tmp_path / "o.npz")["output_0"]
    from quant.export import export_tflite
    from quant.importer import load_model
    from quant.lower import int8_core
    want = run_reference(export_tflite(int8_core(load_model(models / "edges.tflite"))), [x])[0]
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("model,array,expect", [
    ("net.tflite", rand((17, 17, 3)).astype(np.float32), "input is float32[17, 17, 3], the model takes int8"),
    ("net.tflite", rand((16, 17, 3)), "input has shape [16, 17, 3], the model takes int8 [1, 17, 17, 3]"),
    ("net.tflite", rand((2, 1, 17, 17, 3)), "input has shape [2, 1, 17, 17, 3]"),
    ("float.tflite", rand((5, 5, 2)), "float model: quantize it first with calibration images "
                                      "(stackcam compile --calib DIR"),
    ("hardswish.tflite", rand((4, 4, 3)), "unsupported operator 'HARD_SWISH' in layer 'swish_2' (op 0)"),
    ("cut.tflite", rand((4, 4, 3)), "truncated"),
    ("missing.tflite", rand((4, 4, 3)), "missing.tflite"),
])
def test_run_bad_input_one_line_exit_2_no_output(models, tmp_path, capsys, model, array, expect):
    np.save(tmp_path / "in.npy", array)
    out = tmp_path / "sub" / "out.npz"
    status = main(["run", str(models / model), "--input", str(tmp_path / "in.npy"), "-o", str(out)])
    err = capsys.readouterr().err
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and expect in err and "Traceback" not in err
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))


def test_run_engine_rtl_and_bad_config(models, tmp_path):
    np.save(tmp_path / "in.npy", rand((17, 17, 3)))
    r = stackcam("run", models / "net.tflite", "--input", tmp_path / "in.npy", "-o", tmp_path / "o.npz",
                 "--engine", "rtl")
    assert r.returncode == 2 and "NPU issue" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.npz").exists()
    r = stackcam("run", models / "net.tflite", "--input", tmp_path / "in.npy", "-o", tmp_path / "o.npz",
                 "--config", "huge")
    assert r.returncode == 2 and "unknown configuration 'huge'" in r.stderr


def test_run_help():
    r = stackcam("run", "--help")
    assert r.returncode == 0 and "usage: stackcam run" in r.stdout
