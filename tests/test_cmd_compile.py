"""`stackcam compile`: the files it writes run bit-exact with LiteRT, the table and totals it prints, one-line
errors with exit status 2 and no partial output folder."""

import subprocess
import sys

import numpy as np
import pytest

from stackcam.quant import timing
from stackcam.quant.executor import run_graph
from stackcam.quant.export import export_tflite
from stackcam.quant.golden import execute
from stackcam.quant.importer import load_model
from stackcam.quant.litert import run_reference
from stackcam.quant.lower import lower
from stackcam.quant.romimage import load_rom
from stackcam.rtl.params import PRESETS
from tests.test_program import NETS, Net


def stackcam(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "stackcam.cli", *args], capture_output=True, text=True, cwd=cwd)


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
                 "weight SRAM:", "activation SRAM:", f"banks of {PRESETS['fpga'].sram_bank_bytes:,} B",
                 "host: SOFTMAX"):
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
    # A second run writes the same bytes (all three files) into the existing folder and keeps what else is there.
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / "notes.txt").write_text("mine")
    again = stackcam("compile", str(int8_model), "--config", "fpga", "-o", str(out))
    assert again.returncode == 0, again.stderr
    assert {name: (out / name).read_bytes() for name in first} == first and (out / "notes.txt").read_text() == "mine"
    assert again.stdout == r.stdout
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_layer_table_and_totals(int8_model, tmp_path):
    """One row per layer: operator, the die op with its CONV modes, input and output shapes, MACs, weight and
    activation bytes, NPU cycles; the totals against the configuration's SRAM after it."""
    from stackcam.cli.models import model_graph as load_for_compile
    from stackcam.quant.compiler import compile_graph
    from stackcam.quant.report import layer_table, totals_text

    r = stackcam("compile", str(int8_model), "--config", "imx500", "-o", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    model = compile_graph(load_for_compile(int8_model), PRESETS["imx500"])
    lines = r.stdout.splitlines()
    table = layer_table(model)
    assert table[0].split() == ["#", "layer", "operator", "die", "input", "output", "MACs", "weight", "B", "act", "B",
                                "NPU", "cycles"]
    start = lines.index(table[0])
    assert lines[start:start + len(table)] == table and len(table) == len(model.layers) + 1
    conv = next(row for row in table if " CONV_2D " in row).split()
    layer = model.layers[0]
    assert conv[-4:] == [f"{layer.macs:,}", f"{layer.weight_bytes:,}", f"{layer.act_bytes:,}", f"{layer.cycles:,}"]
    assert conv[-6:-4] == ["1x17x15x3", "1x9x8x12"]
    assert conv[3] == "CONV+PACKED"                     # the RGB input is pixel-packed: the stem runs im2col
    assert layer.cycles == sum(timing.descriptor_cycles(PRESETS["imx500"], model.descriptors[i])
                               for i in layer.descriptors) > 0
    dies = {row.split()[2]: row.split()[3] for row in table[1:]}
    assert dies["DEPTHWISE_CONV_2D"] == "DWCONV"        # 5x5: more taps than the walk holds, a tap per cycle
    assert layer.macs == 9 * 8 * 12 * 3 * 3 * 3
    totals = totals_text(model)
    assert lines[start + len(table):start + len(table) + len(totals)] == totals
    assert totals[0].startswith(f"MACs: {model.macs:,}")
    cfg = PRESETS["imx500"]
    assert f"weight SRAM: {model.weight_bytes:,} B of {cfg.weight_banks * cfg.sram_bank_bytes:,} B" in totals[1]
    assert f"activation SRAM: {model.act_bytes:,} B of {cfg.act_banks * cfg.sram_bank_bytes:,} B at the peak" \
        in totals[2]


def test_mobilenet_v1_224_fits_imx500(tmp_path):
    r = stackcam("compile", "zoo:mobilenet_v1_1.0_224", "--calib-photos", "--config", "imx500",
                 "-o", str(tmp_path / "mnet"))
    assert r.returncode == 0, r.stderr
    assert "MACs: 568,740,352 (568.7 M); weights: 4,209,088 values (4.21 M)" in r.stdout
    cfg = PRESETS["imx500"]
    assert f"of {cfg.weight_banks * cfg.sram_bank_bytes:,} B (" in r.stdout
    assert f"of {cfg.act_banks * cfg.sram_bank_bytes:,} B at the peak (" in r.stdout
    assert "AVERAGE_POOL_2D" in r.stdout and "host: RESHAPE" in r.stdout
    # The die column says how the convolutions run: the RGB stem im2col, the 32 -> 64 pointwise layer in oc-tile
    # pairs (its 32 input channels fill half of the 64 lanes), the other pointwise layers plain, the 3x3
    # depthwise layers on the line walk.
    dies = {row.split()[1]: row.split()[3] for row in r.stdout.splitlines() if "_2D " in row}
    assert dies["Conv2d_0/Relu6"] == "CONV+PACKED" and dies["Conv2d_1_pointwise/Relu6"] == "CONV+PAIR"
    assert dies["Conv2d_2_pointwise/Relu6"] == "CONV" and dies["Conv2d_1_depthwise/Relu6"] == "DWCONV+LINE"


def test_too_small_config_names_bytes_per_bank(bad_models, tmp_path):
    from tests.test_cmd_run import check_fit_error

    out = tmp_path / "out"
    msg = one_line_error(stackcam("compile", str(bad_models / "too_big.tflite"), "--config", "tiny", "-o", str(out)))
    check_fit_error(msg, PRESETS["tiny"])
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_float_model_needs_calibration(tmp_path, bad_models):
    """A float model file needs calibration images; a zoo name is a whole int8 network by itself (the registry
    quantizes it the same way for every command)."""
    out = tmp_path / "out"
    msg = one_line_error(stackcam("compile", str(bad_models / "float.tflite"), "-o", str(out)))
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


@pytest.mark.parametrize("model,expect", [
    ("float.tflite", "float.tflite is a float model: give --calib DIR or --calib-photos"),
    ("hardswish.tflite", "unsupported operator 'SIN' in layer 'swish_2' (op 0)"),
    ("mid_softmax.tflite", "unsupported operator SOFTMAX mid-network (only at the graph's tail, on the host) "
                           "at layer 'act_5'"),
    ("dynamic.tflite", "tensor 'images' has a dynamic shape [1, -1, 4, 3]"),
    ("cut.tflite", "cut.tflite: truncated"),
    ("notes.tflite", "notes.tflite: not a model"),
    ("missing.tflite", "missing.tflite: no such model file"),
])
def test_refused_models(bad_models, tmp_path, capsys, model, expect):
    """The same refusals as `stackcam run` (tests/test_cmd_run.py), one line, exit 2, no output folder."""
    from stackcam.cli import main

    out = tmp_path / "out"
    assert main(["compile", str(bad_models / model), "--config", "imx500", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expect in err[0], err
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory):
    from tests.test_cmd_run import write_bad_models
    d = tmp_path_factory.mktemp("bad")
    write_bad_models(d)
    return d


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


def test_concurrent_installs_into_one_folder(tmp_path):
    """Compiles that finish at the same moment into the same -o folder: none fails, and the folder ends holding one
    compile's whole output (its three files from the same writer), with nothing left beside it."""
    import threading

    from stackcam.cli.compile import OUTPUT_FILES, _install

    out = tmp_path / "rom"
    for round_ in range(15):
        errors, barrier = [], threading.Barrier(6)

        def writer(k, round_=round_, barrier=barrier, errors=errors):
            tmp = tmp_path / f".tmp-{round_}-{k}"
            tmp.mkdir()
            for name in OUTPUT_FILES:
                (tmp / name).write_text(f"{round_} {k}")
            barrier.wait()
            try:
                _install(tmp, out)
            except BaseException as e:      # noqa: BLE001 - any failure of a writer is what this test looks for
                errors.append(e)

        threads = [threading.Thread(target=writer, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        contents = {(out / name).read_text() for name in OUTPUT_FILES}
        assert len(contents) == 1 and contents.pop().startswith(f"{round_} ")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["rom"]
