"""`stackcam compile`: the files it writes run bit-exact with LiteRT, the table and totals it prints, one-line
errors with exit status 2 and no partial output folder."""

import subprocess
import sys

import numpy as np
import pytest

from quant.executor import run_graph
from quant.export import export_tflite
from quant.importer import load_model
from quant.litert import run_reference
from quant.lower import lower
from quant.program import execute
from quant.romimage import load_rom
from rtl.params import PRESETS
from tests.test_program import NETS, Net


def stackcam(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], capture_output=True, text=True, cwd=cwd)


def one_line_error(r):
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory):
    """An int8 .tflite with conv (packed stem on fpga), depthwise, ADD, pools, FC and a host tail."""
    n = Net((1, 17, 15, 3), seed=11, scale=1 / 128, zp=0)
    a = n.conv(n.input, 12, k=3, stride=2, act="RELU6", out_q=(6 / 255, -128))
    b = n.conv(a, 0, k=5, depthwise=True, act="RELU", out_q=(0.04, -128))
    c = n.conv(b, 20, k=1, out_q=(0.05, 3))
    d = n.add(c, n.conv(a, 20, k=1, out_q=(0.07, -9)), out_q=(0.08, -1), act="RELU")
    e = n.pool(n.pool(d, "MAX_POOL_2D", (2, 2), 2, padding="SAME"), "AVERAGE_POOL_2D", (5, 4), 1)
    f = n.fc(e, 10, out_q=(0.1, -5))
    s = n.unary(f, "SOFTMAX", (1 / 256, -128), beta=1.0)
    path = tmp_path_factory.mktemp("model") / "net.tflite"
    path.write_bytes(export_tflite(n.graph(s, f)))
    return path


def test_compile_runs_bit_exact_with_litert(int8_model, tmp_path):
    out = tmp_path / "out"
    r = stackcam("compile", str(int8_model), "--config", "fpga", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.rom", "weights.hex"]
    for word in ("operator", "MACs", "weight B", "act B", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED",
                 "weight SRAM:", "activation SRAM:", "banks of 32,768 B", "host: SOFTMAX"):
        assert word in r.stdout, word
    rom = (out / "model.rom").read_bytes()
    load_rom(rom, PRESETS["fpga"])
    model_bytes = int8_model.read_bytes()
    graph = lower(load_model(model_bytes))
    rng = np.random.default_rng(5)
    for _ in range(3):
        x = rng.integers(-128, 128, (1, 17, 15, 3)).astype(np.int8)
        got = execute(rom, PRESETS["fpga"], x[0])
        for g, w, v in zip(got, run_reference(model_bytes, [x]), run_graph(graph, [x])):
            np.testing.assert_array_equal(g, w)
            np.testing.assert_array_equal(g, v)
    # A second run writes the same bytes into the existing folder and keeps what else is there.
    (out / "notes.txt").write_text("mine")
    again = stackcam("compile", str(int8_model), "--config", "fpga", "-o", str(out))
    assert again.returncode == 0, again.stderr
    assert (out / "model.rom").read_bytes() == rom and (out / "notes.txt").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_mobilenet_v1_224_fits_imx500(tmp_path):
    r = stackcam("compile", "zoo:mobilenet_v1_1.0_224", "--calib-photos", "--config", "imx500",
                 "-o", str(tmp_path / "mnet"))
    assert r.returncode == 0, r.stderr
    assert "MACs: 568,740,352 (568.7 M); weights: 4,209,088 values (4.21 M)" in r.stdout
    assert "of 5,767,168 B" in r.stdout and "of 2,621,440 B at the peak" in r.stdout
    assert "AVERAGE_POOL_2D" in r.stdout and "host: RESHAPE" in r.stdout


def test_too_small_config_names_bytes_per_bank(tmp_path):
    out = tmp_path / "out"
    msg = one_line_error(stackcam("compile", "zoo:mobilenet_v1_0.25_96", "--calib-photos", "--config", "tiny",
                                  "-o", str(out)))
    assert "does not fit config 'tiny'" in msg and "B of weight SRAM" in msg
    assert "config has 2 weight banks of 16,384 B = 32,768 B" in msg
    assert "config has 2 activation banks of 16,384 B = 32,768 B" in msg
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_float_model_needs_calibration(tmp_path):
    out = tmp_path / "out"
    msg = one_line_error(stackcam("compile", "zoo:mobilenet_v1_0.25_96", "-o", str(out)))
    assert "is a float model: give --calib DIR or --calib-photos" in msg
    assert not out.exists()


def test_unsupported_operator_is_named(tmp_path):
    n = Net((1, 6, 6, 4), seed=2)
    y = n.conv(n.input, 4, k=1, out_q=(0.05, 0))
    z = n.unary(y, "SOFTMAX", (1 / 256, -128), beta=1.0)
    path = tmp_path / "mid_softmax.tflite"
    path.write_bytes(export_tflite(n.graph(n.conv(z, 4, k=1, out_q=(0.05, 0)))))
    msg = one_line_error(stackcam("compile", str(path), "-o", str(tmp_path / "out")))
    assert "unsupported operator SOFTMAX" in msg and f"at layer '{z}'" in msg      # named after its output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", [b"", b"this is not a model", None])
def test_bad_model_file(tmp_path, content):
    path = tmp_path / "bad.tflite"
    if content is not None:
        path.write_bytes(content)
    msg = one_line_error(stackcam("compile", str(path), "-o", str(tmp_path / "out")))
    assert "bad.tflite" in msg
    assert not (tmp_path / "out").exists()


def test_bad_config_and_zoo_name(tmp_path):
    assert "unknown configuration 'huge'" in one_line_error(
        stackcam("compile", "zoo:blazeface", "--config", "huge", "-o", str(tmp_path / "o")))
    assert "unknown zoo model" in one_line_error(stackcam("compile", "zoo:resnet", "-o", str(tmp_path / "o")))


def test_help_lists_compile():
    r = stackcam("--help")
    assert r.returncode == 0 and "compile" in r.stdout
    assert NETS  # the hand-built nets come from test_program


def test_calibration_directory(tmp_path):
    from skimage import data, io
    calib = tmp_path / "photos"
    calib.mkdir()
    io.imsave(calib / "a.png", data.astronaut()[::4, ::4], check_contrast=False)
    io.imsave(calib / "b.png", data.coffee()[::4, ::4], check_contrast=False)
    out = tmp_path / "out"
    r = stackcam("compile", "zoo:mobilenet_v1_0.25_96", "--calib", str(calib), "--config", "imx500", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert (out / "model.rom").is_file() and "input: input 1x96x96x3 int8" in r.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    msg = one_line_error(stackcam("compile", "zoo:mobilenet_v1_0.25_96", "--calib", str(empty), "-o",
                                  str(tmp_path / "out2")))
    assert "holds no image files" in msg and not (tmp_path / "out2").exists()
