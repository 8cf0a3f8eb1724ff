"""`nox -s fuzz` (tools/fuzz.py) at a small count, and the quantizer case its first full run found."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "fuzz.py"


def test_fuzz_campaign_smoke(tmp_path):
    """Random networks quantized by LiteRT's converter and by our PTQ: golden == LiteRT BUILTIN_REF on two presets,
    the first compiled case of each also on the RTL; the report is written whole and nothing else is left."""
    r = subprocess.run([sys.executable, str(SCRIPT), "--cases", "6", "--seed", "2", "--config", "tiny", "demo",
                        "--rtl", "1", "-o", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
    s = report["summary"]
    assert s["cases"] == 6 and s["presets"] == ["tiny", "demo"] and s["rtl_runs"] == 2
    assert set(s["outcomes"]) <= {"exact", "refused", "no-quant"} and s["outcomes"]["exact"] >= 12
    assert {r["quantizer"] for r in report["rows"]} == {"litert", "ours"}
    assert "random networks x 2 presets x 2 quantizers" in r.stdout


def test_ptq_concatenation_of_a_fixed_quantization_requantizes():
    """CONCATENATION of a LOGISTIC's output (quantization fixed at 1/256, -128) and a CONV's: our PTQ gives the
    CONV the output's range and leaves the LOGISTIC input to requantize (it used to refuse the model); the exported
    int8 model (a QUANTIZE before the concatenation) runs in LiteRT BUILTIN_REF equal to run_graph and to the
    golden executor on the compiled program."""
    from stackcam.quant.compiler import compile_graph
    from stackcam.quant.executor import run_graph
    from stackcam.quant.export import export_tflite
    from stackcam.quant.golden import execute
    from stackcam.quant.graph import Graph, Op, Tensor
    from stackcam.quant.litert import run_reference
    from stackcam.quant.lower import lower
    from stackcam.quant.ptq import quantize_graph
    from stackcam.quant.romimage import build_rom
    from stackcam.rtl.params import PRESETS

    rng = np.random.default_rng(4)
    t = {"x": Tensor("x", (1, 6, 5, 3), "float32")}
    for name, shape in (("wa", (4, 3, 3, 3)), ("ba", (4,)), ("wb", (5, 1, 1, 3)), ("bb", (5,))):
        t[name] = Tensor(name, shape, "float32", rng.normal(0, 0.5, shape).astype(np.float32))
    for name, c in (("a", 4), ("s", 4), ("b", 5), ("y", 9)):
        t[name] = Tensor(name, (1, 6, 5, c), "float32")
    ops = [Op("CONV_2D", ["x", "wa", "ba"], ["a"], dict(stride=(1, 1), padding="SAME"), "conv_a"),
           Op("LOGISTIC", ["a"], ["s"], {}, "sigmoid"),
           Op("CONV_2D", ["x", "wb", "bb"], ["b"], dict(stride=(1, 1), padding="SAME", activation="RELU"), "conv_b"),
           Op("CONCATENATION", ["s", "b"], ["y"], dict(axis=3), "concat")]
    graph = Graph(tensors=t, ops=ops, inputs=["x"], outputs=["y"], name="fixed_concat")
    calib = [rng.uniform(-1, 1, (1, 6, 5, 3)).astype(np.float32) for _ in range(4)]
    q = quantize_graph(graph, calib)
    assert any("requantizes input 's'" in n for n in q.notes)
    qs, qb, qy = (q.tensor(n).quant for n in ("s", "b", "y"))
    assert (float(qs.scale[0]), int(qs.zero_point[0])) == (1 / 256, -128)
    assert float(qb.scale[0]) == float(qy.scale[0]) and int(qb.zero_point[0]) == int(qy.zero_point[0])
    model = export_tflite(q)
    xq = rng.integers(-128, 128, (1, 6, 5, 3)).astype(np.int8)
    want = run_reference(model, [xq])[0]
    np.testing.assert_array_equal(run_graph(q, [xq])[0], want)
    compiled = compile_graph(lower(q), PRESETS["demo"])
    got = execute(build_rom(compiled), PRESETS["demo"], xq[0])[0]
    np.testing.assert_array_equal(np.asarray(got).reshape(want.shape), want)
    assert len(np.unique(want)) > 20
