"""`stackcam run`: compiles the model and runs the compiled program (ROM image) on the golden executor; its outputs
equal LiteRT BUILTIN_REF on the same .tflite (and quant.executor.run_graph) on MobileNet V1 0.25 96, BlazeFace int8
and per-operator edge cases; batches; float models with calibration; one-line errors, exit 2, no output file."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stackcam.cli import main
from stackcam.cli.run import run_model
from stackcam.quant.calib import calibration_set, photo
from stackcam.quant.executor import run_graph
from stackcam.quant.export import export_tflite
from stackcam.quant.importer import load_model
from stackcam.quant.litert import run_reference
from stackcam.quant.lower import int8_core, lower
from stackcam.quant.ref import quantize_float
from stackcam.quant.tflite import TFLiteBuilder, schema
from tests.test_quant_ops import EXPF_TIE_SCALE, ModelBuilder, mobilenet_like

OPS = schema.BuiltinOperator


def edge_cases_model():
    """The per-operator edge cases of issue 3 in one int8 model: an odd 13x11 input through stride-2 SAME convs
    (bottom/right-only padding), 5x5 depthwise (stride 1 and 2), ADD of two differently scaled operands, global
    average pool, fully connected, SOFTMAX on the host and a die LOGISTIC whose table hits glibc's expf rounding."""
    m = ModelBuilder(seed=31)
    x = m.input((1, 13, 11, 5), scale=1 / 64, zp=-3)
    a = m.conv(x, 8, k=3, stride=2, padding="SAME", act="RELU6", out_q=(6 / 255, -128))      # 13x11 -> 7x6
    b = m.conv(a, 0, k=5, depthwise=True, act="RELU", out_q=(0.03, -128))                    # 5x5 depthwise
    c = m.conv(b, 12, k=1, out_q=(0.05, 3))
    d = m.conv(m.conv(a, 0, k=5, stride=2, depthwise=True, out_q=(0.04, -7)), 12, k=1, stride=1,
               out_q=(0.09, -11))                                                            # 7x6 -> 4x3
    d = m.pool(d, "MAX_POOL_2D", (2, 2), 1, "SAME")
    e = m.conv(c, 12, k=3, stride=2, padding="SAME", out_q=(0.021, 5))                      # 7x6 -> 4x3
    s = m.add(e, d, out_q=(0.07, -2), act="RELU")                                            # scales 0.021 + 0.09
    n, h, w, ch = m.shapes[s]
    g = m.pool(s, "AVERAGE_POOL_2D", (h, w), 1, "VALID")                                     # global average pool
    f = m.fc(m.reshape(g, (1, ch)), 10, out_q=(0.1, -5))
    p = m.unary(f, "SOFTMAX", (1 / 256, -128), schema.SoftmaxOptionsT(beta=1.0))
    z = m.conv(c, 4, k=1, out_q=(EXPF_TIE_SCALE, 0))
    lg = m.unary(z, "LOGISTIC", (1 / 256, -128))
    return m.output(p, lg, f)


def write_bad_models(d):
    """Models `run` and `compile` must refuse (or, float.tflite, quantize first) into folder `d`: a float model,
    an unsupported operator, SOFTMAX mid-network, a dynamic shape, one too big for tiny/fpga, a truncated file
    and a text file."""
    fl = ModelBuilder(seed=4, dtype=np.float32)
    x = fl.input((1, 96, 96, 3))
    (d / "float.tflite").write_bytes(fl.output(fl.conv(fl.conv(x, 4, k=3, stride=2, act="RELU"), 3, k=1)))

    hs = ModelBuilder(seed=5)
    x = hs.input((1, 4, 4, 3))
    h = hs.act((1, 4, 4, 3), 0.05, 0, base="swish")
    hs.b.add_operator(OPS.SIN, [x], [h])    # an operator the toolchain does not take
    (d / "hardswish.tflite").write_bytes(hs.output(h))

    mid = ModelBuilder(seed=6)
    x = mid.input((1, 6, 6, 4))
    sm = mid.unary(mid.conv(x, 4, k=1, out_q=(0.05, 0)), "SOFTMAX", (1 / 256, -128), schema.SoftmaxOptionsT(beta=1))
    (d / "mid_softmax.tflite").write_bytes(mid.output(mid.conv(sm, 4, k=1, out_q=(0.05, 0))))

    b = TFLiteBuilder()
    x = b.add_input("images", (1, 4, 4, 3), np.int8, scale=0.1, zero_point=0)
    b.tensors[x].shapeSignature = [1, -1, 4, 3]
    y = b.add_tensor("out", (1, 4, 4, 3), np.int8, scale=0.1, zero_point=0)
    b.add_operator(OPS.RELU, [x], [y])
    b.mark_output(y)
    (d / "dynamic.tflite").write_bytes(b.build())

    big = ModelBuilder(seed=8)                  # 2 MiB of FC weights: more than tiny or fpga hold, not imx500
    (d / "too_big.tflite").write_bytes(big.output(big.fc(big.input((1, 2048)), 1024, out_q=(0.1, 0))))

    good = ModelBuilder(seed=7)
    (d / "cut.tflite").write_bytes(good.output(good.conv(good.input((1, 8, 8, 3)), 4, k=3))[:900])
    (d / "notes.tflite").write_text("these are my notes, not a model\n")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    m = mobilenet_like(seed=1)
    (d / "net.tflite").write_bytes(m.output(len(m.b.tensors) - 1))
    (d / "edge.tflite").write_bytes(edge_cases_model())

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

    write_bad_models(d)
    return d


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory):
    """MobileNet V1 0.25 at 96x96 (2 classes + SOFTMAX, and its last feature map as a second output), quantized by
    our PTQ on the skimage photos, exported to .tflite; and int8 inputs: three photos quantized with the input's
    scale and zero point, and random bytes."""
    from stackcam.quant.ptq import quantize_graph
    from stackcam.quant.zoo import mobilenet_v1

    g = mobilenet_v1(0.25, 96, 2, seed=3, softmax=True)
    g.outputs.append("Conv2d_13_pointwise/Relu6")         # the backbone's last 3x3x256 features, checked too
    q = quantize_graph(g, calibration_set((1, 96, 96, 3)))
    path = tmp_path_factory.mktemp("mnet") / "mobilenet_v1_0.25_96_int8.tflite"
    path.write_bytes(export_tflite(q))
    s, z = q.tensor(q.inputs[0]).quant.scalar()
    photos = [quantize_float(x, s, z)[0] for x in calibration_set((1, 96, 96, 3), names=("astronaut", "coffee",
                                                                                        "chelsea"))]
    batch = np.stack([*photos, np.random.default_rng(7).integers(-128, 128, (96, 96, 3)).astype(np.int8)])
    return path, batch


def stackcam(*args):
    return subprocess.run([sys.executable, "-m", "stackcam.cli", *map(str, args)], capture_output=True, text=True)


def rand(shape, seed=0, dtype=np.int8):
    return np.random.default_rng(seed).integers(-128, 128, shape).astype(dtype)


def mismatches(got, model_bytes, x):
    """Number of outputs of `got` ({output_k}) that differ from LiteRT BUILTIN_REF and from run_graph, per item."""
    graph = lower(int8_core(load_model(model_bytes)))
    bad = 0
    for i in range(x.shape[0]):
        item = x[i:i + 1]
        for k, (want, ref) in enumerate(zip(run_reference(model_bytes, [item]), run_graph(graph, [item]))):
            g = got[f"output_{k}"][i:i + 1]
            assert g.dtype == want.dtype == np.int8 and g.shape == want.shape
            bad += int(np.count_nonzero(g != want)) + int(np.count_nonzero(g != ref))
    return bad


def test_cli_mobilenet_0_25_96_equals_litert(mobilenet, tmp_path):
    path, batch = mobilenet
    np.save(tmp_path / "in.npy", batch)
    r = stackcam("run", path, "--input", tmp_path / "in.npy", "--engine", "ref", "-o", tmp_path / "out.npz")
    assert r.returncode == 0, r.stderr
    assert "compiled program for config 'imx500'" in r.stdout
    out = dict(np.load(tmp_path / "out.npz"))
    assert list(out) == ["output_0", "output_1"]
    assert out["output_0"].shape == (4, 2) and out["output_1"].shape == (4, 3, 3, 256)
    assert mismatches(out, path.read_bytes(), batch) == 0
    # The photos give different, non-degenerate class probabilities (the network is not dead).
    assert len({tuple(v) for v in out["output_0"][:3]}) > 1


def test_python_path_mobilenet_equals_litert(mobilenet):
    path, batch = mobilenet
    out = run_model(path, batch[1:3])
    assert mismatches(out, path.read_bytes(), batch[1:3]) == 0


def test_edge_cases_equal_litert(models, tmp_path):
    model = (models / "edge.tflite").read_bytes()
    x = rand((3, 13, 11, 5), seed=8)
    for config in ("imx500", "tiny"):
        out = run_model(models / "edge.tflite", x, config=config)
        assert list(out) == ["output_0", "output_1", "output_2"]
        assert mismatches(out, model, x) == 0
    # The die's LOGISTIC table carries glibc's expf: a correctly rounded exp would give 1, not 0, for q = 1.
    graph = lower(load_model(model))
    zq = graph.tensor(graph.ops[-1].inputs[0]).quant.scalar()
    assert zq == (np.float32(EXPF_TIE_SCALE), 0)
    np.save(tmp_path / "in.npy", x[0])
    r = stackcam("run", models / "edge.tflite", "--input", tmp_path / "in.npy", "--config", "fpga",
                 "-o", tmp_path / "out.npz")
    assert r.returncode == 0, r.stderr
    out = dict(np.load(tmp_path / "out.npz"))
    assert [v.shape for v in out.values()] == [(1, 10), (1, 7, 6, 4), (1, 10)]
    assert mismatches({k: v for k, v in out.items()}, model, x[:1]) == 0


@pytest.mark.parametrize("scale,zp,out_zp", [(EXPF_TIE_SCALE, 0, -127), (0.05, -20, -128), (0.3, 100, 0)])
def test_logistic_table_on_the_die_equals_litert(tmp_path, scale, zp, out_zp):
    """A LOGISTIC on the die (a LUT descriptor) over all 256 int8 inputs, output zero points other than -128
    included (LiteRT only insists on scale 1/256)."""
    m = ModelBuilder(seed=9)
    y = m.unary(m.input((1, 256), scale=scale, zp=zp), "LOGISTIC", (1 / 256, out_zp))
    (tmp_path / "lg.tflite").write_bytes(m.output(y))
    x = np.arange(-128, 128, dtype=np.int8).reshape(1, 256)
    for config in ("tiny", "imx500"):
        out = run_model(tmp_path / "lg.tflite", x, config=config)
        assert mismatches(out, (tmp_path / "lg.tflite").read_bytes(), x) == 0


def test_run_end_to_end_equals_litert(models, tmp_path):
    x = rand((17, 17, 3))
    np.save(tmp_path / "in.npy", x)
    assert main(["run", str(models / "net.tflite"), "--input", str(tmp_path / "in.npy"), "-o",
                 str(tmp_path / "out.npz")]) == 0
    out = np.load(tmp_path / "out.npz")
    want = run_reference((models / "net.tflite").read_bytes(), [x[None]])[0]
    assert list(out) == ["output_0"] and out["output_0"].dtype == np.int8
    np.testing.assert_array_equal(out["output_0"], want)


def test_run_batch_and_multiple_outputs(models, tmp_path):
    xb = rand((3, 6, 6, 3), seed=1)
    np.save(tmp_path / "batch.npy", xb)
    assert main(["run", str(models / "two.tflite"), "--input", str(tmp_path / "batch.npy"),
                 "-o", str(tmp_path / "o.npz"), "--config", "tiny"]) == 0
    out = np.load(tmp_path / "o.npz")
    assert list(out) == ["output_0", "output_1"]
    assert out["output_0"].shape == (3, 3, 3, 4) and out["output_1"].shape == (3, 1, 1, 4)
    assert mismatches(dict(out), (models / "two.tflite").read_bytes(), xb) == 0


def test_run_float_edges_run_on_the_host(models, tmp_path):
    # The die takes the int8 tensor after the input QUANTIZE and sends the int8 tensor before the DEQUANTIZE.
    x = rand((1, 5, 5, 2), seed=2)
    np.save(tmp_path / "in.npy", x)
    assert main(["run", str(models / "edges.tflite"), "--input", str(tmp_path / "in.npy"),
                 "-o", str(tmp_path / "o.npz")]) == 0
    got = np.load(tmp_path / "o.npz")["output_0"]
    want = run_reference(export_tflite(int8_core(load_model(models / "edges.tflite"))), [x])[0]
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, want)


def test_float_model_with_calibration(models, tmp_path):
    """A float model runs after our PTQ, on the skimage photos or a folder of images, as compile does: the same
    outputs as LiteRT and run_graph on that quantized model; the same output bytes twice."""
    from skimage import data, io

    from stackcam.cli.models import model_graph as load_for_compile

    x = rand((96, 96, 3), seed=4)
    np.save(tmp_path / "in.npy", x)
    assert main(["run", str(models / "float.tflite"), "--calib-photos", "--input", str(tmp_path / "in.npy"),
                 "-o", str(tmp_path / "p.npz")]) == 0
    q = load_for_compile(models / "float.tflite", calib_photos=True)
    assert mismatches(dict(np.load(tmp_path / "p.npz")), export_tflite(q), x[None]) == 0

    calib = tmp_path / "photos"
    calib.mkdir()
    io.imsave(calib / "a.png", data.astronaut()[::4, ::4], check_contrast=False)
    io.imsave(calib / "b.png", data.coffee()[::4, ::4], check_contrast=False)
    for name in ("a.npz", "b.npz"):
        assert main(["run", str(models / "float.tflite"), "--calib", str(calib), "--input",
                     str(tmp_path / "in.npy"), "-o", str(tmp_path / name)]) == 0
    q = load_for_compile(models / "float.tflite", calib=calib)
    assert mismatches(dict(np.load(tmp_path / "a.npz")), export_tflite(q), x[None]) == 0
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


def one_line(err, expect):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert expect in lines[0], lines[0]


@pytest.mark.parametrize("model,array,expect", [
    ("net.tflite", rand((17, 17, 3)).astype(np.float32), "input is float32[17, 17, 3], the model takes int8"),
    ("net.tflite", rand((17, 17, 3)).astype(np.uint8), "input is uint8[17, 17, 3], the model takes int8"),
    ("net.tflite", rand((16, 17, 3)), "input has shape [16, 17, 3], the model takes int8 [1, 17, 17, 3]"),
    ("net.tflite", rand((2, 1, 17, 17, 3)), "input has shape [2, 1, 17, 17, 3]"),
    ("float.tflite", rand((96, 96, 3)), "float.tflite is a float model: give --calib DIR or --calib-photos"),
    ("hardswish.tflite", rand((4, 4, 3)), "unsupported operator 'SIN' in layer 'swish_2' (op 0)"),
    ("mid_softmax.tflite", rand((6, 6, 4)), "unsupported operator SOFTMAX mid-network (only at the graph's tail, "
                                            "on the host) at layer 'act_5'"),
    ("dynamic.tflite", rand((4, 4, 3)), "tensor 'images' has a dynamic shape [1, -1, 4, 3]"),
    ("cut.tflite", rand((4, 4, 3)), "truncated"),
    ("notes.tflite", rand((4, 4, 3)), "notes.tflite: not a model"),
    ("missing.tflite", rand((4, 4, 3)), "missing.tflite: no such model file"),
])
def test_run_bad_input_one_line_exit_2_no_output(models, tmp_path, capsys, model, array, expect):
    np.save(tmp_path / "in.npy", array)
    out = tmp_path / "sub" / "out.npz"
    status = main(["run", str(models / model), "--input", str(tmp_path / "in.npy"), "-o", str(out)])
    assert status == 2
    one_line(capsys.readouterr().err, expect)
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))


def check_fit_error(line, config):
    """The one-line fit error names, for weights and for activations, the bytes needed (and the banks they would
    take) and the banks the configuration has, with their size and total."""
    import re

    bank = config.sram_bank_bytes
    m = re.search(r"does not fit config '(\w+)': needs ([\d,]+) B of weight SRAM \((\d+) banks of ([\d,]+) B\), "
                  r"config has (\d+) weight banks of ([\d,]+) B = ([\d,]+) B; activations need ([\d,]+) B at the "
                  r"peak \((\d+) banks of ([\d,]+) B\), config has (\d+) activation banks of ([\d,]+) B = "
                  r"([\d,]+) B$", line)
    assert m, line
    name, *v = m.groups()
    v = [int(x.replace(",", "")) for x in v]
    assert name == config.name
    w_need, w_banks, bank1, w_have_banks, bank2, w_have, a_need, a_banks, bank3, a_have_banks, bank4, a_have = v
    assert bank1 == bank2 == bank3 == bank4 == bank
    assert w_banks == -(-w_need // bank) and w_have_banks == config.weight_banks and w_have == w_have_banks * bank
    assert a_banks == -(-a_need // bank) and a_have_banks == config.act_banks and a_have == a_have_banks * bank
    assert w_need > w_have or a_need > a_have              # something really does not fit


@pytest.mark.parametrize("config", ["tiny", "fpga"])
def test_model_that_does_not_fit_names_bytes_per_bank(models, tmp_path, capsys, config):
    from stackcam.rtl.params import PRESETS

    np.save(tmp_path / "in.npy", rand((1, 2048)))
    assert main(["run", str(models / "too_big.tflite"), "--input", str(tmp_path / "in.npy"), "--config", config,
                 "-o", str(tmp_path / "o.npz")]) == 2
    err = capsys.readouterr().err
    one_line(err, "stackcam run: error: model ")
    check_fit_error(err.strip(), PRESETS[config])
    assert not (tmp_path / "o.npz").exists()
    # imx500 holds it: the same model runs there, bit-exact.
    out = run_model(models / "too_big.tflite", rand((1, 2048)))
    assert mismatches(out, (models / "too_big.tflite").read_bytes(), rand((1, 2048))) == 0


def test_errors_exit_2_under_python_m(models, tmp_path):
    """UserError raised inside `run` is sim.cli's own class under `python -m sim.cli` (exit 2, not a crash)."""
    np.save(tmp_path / "in.npy", rand((16, 17, 3)))
    np.save(tmp_path / "ok.npy", rand((17, 17, 3)))
    cases = [
        ("net.tflite", ("--input", tmp_path / "in.npy"), "input has shape [16, 17, 3]"),
        # The RTL engine checks its input before it builds anything.
        ("net.tflite", ("--input", tmp_path / "in.npy", "--engine", "rtl"), "input has shape [16, 17, 3]"),
        ("float.tflite", ("--input", tmp_path / "ok.npy"), "float.tflite is a float model"),
    ]
    for model, args, expect in cases:
        r = stackcam("run", models / model, *args, "-o", tmp_path / "o.npz")
        assert r.returncode == 2, r.stderr
        one_line(r.stderr, expect)
        assert not (tmp_path / "o.npz").exists()


@pytest.mark.parametrize("args,expect", [
    (("--config", "huge"), "unknown configuration 'huge'"),
    (("--input", "nothing.npy"), "nothing.npy: no such file"),
    (("-o", "out.npy"), "out.npy: the output file must end in .npz"),
])
def test_bad_arguments(models, tmp_path, capsys, monkeypatch, args, expect):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "ok.npy", rand((17, 17, 3)))
    argv = {"--input": "ok.npy", "-o": "o.npz"}
    argv.update(dict(zip(args[::2], args[1::2])))
    assert main(["run", str(models / "net.tflite"), *[v for kv in argv.items() for v in kv]]) == 2
    one_line(capsys.readouterr().err, expect)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.npy"]


def test_run_help():
    r = stackcam("run", "--help")
    assert r.returncode == 0 and "usage: stackcam run" in r.stdout
    for word in ("--calib", "--calib-photos", "--config", "--engine", "compiled"):
        assert word in r.stdout, word


# --- BlazeFace int8 ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def blazeface(tmp_path_factory):
    from stackcam.quant.zoo import blazeface as bf
    try:
        q = bf.blazeface_int8()
    except bf.FetchError as exc:
        if not bf.pypi_reachable():
            pytest.skip(f"PyPI is unreachable, so the mediapipe wheel cannot be fetched: {exc}")
        raise
    path = tmp_path_factory.mktemp("bf") / "blazeface_int8.tflite"
    path.write_bytes(export_tflite(q))
    s, z = q.tensor(q.inputs[0]).quant.scalar()
    x = np.concatenate([quantize_float(bf.blazeface_input(photo(n)), s, z) for n in ("astronaut", "coffee")])
    return path, x


def test_cli_blazeface_int8_equals_litert(blazeface, tmp_path):
    path, x = blazeface
    np.save(tmp_path / "in.npy", x)
    r = stackcam("run", path, "--input", tmp_path / "in.npy", "-o", tmp_path / "out.npz")
    assert r.returncode == 0, r.stderr
    out = dict(np.load(tmp_path / "out.npz"))
    assert sorted(v.shape for v in out.values()) == [(2, 896, 1), (2, 896, 16)]
    assert mismatches(out, path.read_bytes(), x) == 0


def test_hostile_inputs_are_one_line_exit_2(tmp_path, models):
    """Inputs a hostile user sends: an .npy header declaring 30 GB on a 100-byte file, /dev/null, a folder, an
    ADD left with one input by a one-byte change to the file, an ONNX weight whose declared shape its data does
    not fill. Each is one line, exit 2, and no output file."""
    from onnx import TensorProto, helper

    huge = tmp_path / "huge.npy"
    with open(huge, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|i1", "fortran_order": False,
                                                 "shape": (100000, 100000, 3)})
        f.write(bytes(100))
    good = tmp_path / "x.npy"
    np.save(good, rand((17, 17, 3)))
    b = ModelBuilder(seed=9)
    x = b.input((1, 4, 4, 3))
    y = b.act((1, 4, 4, 3), 0.1, 0)
    b.b.add_operator(OPS.ADD, [x], [y], schema.AddOptionsT())
    one_input = tmp_path / "add1.tflite"
    one_input.write_bytes(b.output(y))
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 3, 1, 1], raw_data=bytes(20))  # 5 of 12
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[1, 1])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])], [w])
    short = tmp_path / "short.onnx"
    short.write_bytes(helper.make_model(graph).SerializeToString())
    net = models / "net.tflite"
    cases = [(net, huge, "the .npy header declares int8[100000, 100000, 3] (30,000,000,000 bytes) but the file "
                         "holds 100 bytes"),
             (net, "/dev/null", "/dev/null: not a readable .npy array"),
             (net, tmp_path, "is a folder; give an .npy file"),
             (one_input, good, "operator 0 (ADD) has 1 inputs and 1 outputs, which ADD does not take"),
             (short, good, "short.onnx: corrupt ONNX model")]
    for model, inp, expect in cases:
        out = tmp_path / "out.npz"
        r = stackcam("run", model, "--input", inp, "--calib-photos", "-o", out)
        assert r.returncode == 2, r.stderr
        one_line(r.stderr, expect)
        assert not out.exists()


def test_run_unwritable_output_is_refused_before_any_work(tmp_path, capsys):
    """`run -o` into a folder, through a file, into a folder where nothing can be created: one line, exit 2,
    before the input or the model is read (the model here does not exist, so a late check would name it)."""
    good = tmp_path / "x.npy"
    np.save(good, rand((16, 16, 3)))
    readonly = tmp_path / "ro"
    readonly.mkdir()
    (tmp_path / "folder.npz").mkdir()
    cases = [(tmp_path / "folder.npz", "folder.npz: is a folder; give the .npz file to write"),
             (good / "out.npz", f"cannot write the outputs: {good} is not a folder"),
             (good / "a" / "b" / "out.npz", f"cannot write the outputs: {good} is not a folder")]
    if Path("/proc/self").is_dir():
        cases.append((Path("/proc/out.npz"), "out.npz: cannot write the outputs in /proc"))
    readonly.chmod(0o555)
    try:
        if os.geteuid() != 0:           # root writes into a 0555 folder anyway
            cases.append((readonly / "out.npz", f"cannot write the outputs in {readonly}: Permission denied"))
        for out, expect in cases:
            status = main(["run", str(tmp_path / "missing.tflite"), "--config", "tiny", "--input", str(good),
                           "-o", str(out)])
            assert status == 2, out
            one_line(capsys.readouterr().err, expect)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.npz", "ro", "x.npy"]   # no probe left
        assert not any(readonly.iterdir())
    finally:
        readonly.chmod(0o755)
