"""`stackcam compile --export-tflite FILE`: the int8 model the toolchain made, run by LiteRT BUILTIN_REF, equals the
golden executor element for element; the file is checked before the work and written atomically."""

import numpy as np
import pytest

from stackcam.cli import main
from stackcam.cli.models import model_graph
from stackcam.quant.executor import run_graph
from stackcam.quant.importer import load_model
from stackcam.quant.litert import run_reference
from stackcam.rtl.params import preset


@pytest.mark.parametrize("model,config", [("zoo:mobilenet_v1_0.25_96_2", "fpga"), ("first-light", "tiny")])
def test_exported_tflite_equals_golden_executor(tmp_path, capsys, model, config):
    out = tmp_path / "m.tflite"
    assert main(["compile", model, "--config", config, "-o", str(tmp_path / "out"), "--export-tflite",
                 str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    data = out.read_bytes()
    graph = model_graph(model, preset(config))
    assert load_model(data).is_quantized()
    rng = np.random.default_rng(0)
    shape = graph.tensor(graph.inputs[0]).shape
    for _ in range(2):
        x = rng.integers(-128, 128, shape).astype(np.int8)
        want = run_graph(graph, [x])
        got = run_reference(data, [x])
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.dtype == w.dtype and g.shape == w.shape
            np.testing.assert_array_equal(g, w)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []     # no temp file left


def test_export_target_checked_first(tmp_path, capsys):
    (tmp_path / "dir.tflite").mkdir()
    assert main(["compile", "first-light", "--config", "tiny", "-o", str(tmp_path / "out"), "--export-tflite",
                 str(tmp_path / "dir.tflite")]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert main(["compile", "first-light", "--config", "tiny", "-o", str(tmp_path / "out"), "--export-tflite",
                 str(tmp_path / "nowhere" / "m.tflite")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()          # refused before anything was compiled or written


def test_compile_help_lists_every_preset_and_defaults_match(capsys):
    from stackcam.cli.compile import DEFAULT_CONFIG as COMPILE_DEFAULT
    from stackcam.cli.run import DEFAULT_CONFIG as RUN_DEFAULT
    from stackcam.rtl.params import PRESETS
    assert COMPILE_DEFAULT == RUN_DEFAULT == "imx500"
    for cmd in ("compile", "run"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for name in PRESETS:
            assert name in text
        assert "default imx500" in text
    assert "demo" in PRESETS
