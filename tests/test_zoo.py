"""quant.zoo: MobileNet V1 against the published MAC and weight counts, determinism by seed, and the BlazeFace fetch
from the mediapipe wheel."""

import hashlib
from collections import Counter

import numpy as np
import pytest

from stackcam.quant.zoo import blazeface as bf
from stackcam.quant.zoo import count_macs, count_weights, mobilenet_v1


def _macs_by_kind(graph):
    """MACs split as the literature splits them: the stem conv, depthwise, pointwise, and the classifier."""
    split = Counter()
    for op in graph.ops:
        part = "conv1" if op.name == "Conv2d_0" else "depthwise" if op.kind == "DEPTHWISE_CONV_2D" else \
            "classifier" if op.name in ("Conv2d_1c_1x1", "Logits") else "pointwise" if op.kind == "CONV_2D" else None
        if part:
            split[part] += count_macs(type(graph)(graph.tensors, [op], graph.inputs, graph.outputs))
    return split


def test_mobilenet_v1_1_0_224_counts():
    g = mobilenet_v1(alpha=1.0, resolution=224, classes=1000)
    # 568,740,352 MACs is the 1000-class network (the 1001-class TF-slim head adds 1,024 MACs).
    assert count_macs(g) == 568_740_352
    assert count_macs(mobilenet_v1(classes=1001)) == 568_740_352 + 1024
    assert count_weights(g) == 4_209_088                   # "4.2 million parameters" (without biases)
    assert count_weights(g, biases=True) == 4_221_032
    split = _macs_by_kind(g)
    assert split == {"conv1": 10_838_016, "depthwise": 17_385_984, "pointwise": 539_492_352, "classifier": 1_024_000}
    # The paper's split: conv1 1.9%, depthwise 3.1%, pointwise 94.9%, FC 0.2%.
    pct = {k: round(100 * v / count_macs(g), 1) for k, v in split.items()}
    assert pct == {"conv1": 1.9, "depthwise": 3.1, "pointwise": 94.9, "classifier": 0.2}
    assert [t for t in (g.tensor(n).shape for n in g.outputs)] == [(1, 1000)]
    assert g.tensor("Conv2d_13_pointwise/Relu6").shape == (1, 7, 7, 1024)


def test_mobilenet_v1_0_25_96_person_detection_counts():
    rgb = mobilenet_v1(alpha=0.25, resolution=96, classes=2)
    gray = mobilenet_v1(alpha=0.25, resolution=96, classes=2, channels=1)
    assert count_macs(rgb) == 7_489_664                    # "about 7.5 M"
    assert count_macs(gray) == 7_157_888                   # "about 7.2 M"
    assert count_weights(rgb) == 208_112                   # "about 208 k"
    assert count_weights(gray) == 207_968
    assert rgb.tensor("Conv2d_13_pointwise/Relu6").shape == (1, 3, 3, 256)


def test_mobilenet_heads_and_softmax():
    conv = mobilenet_v1(alpha=0.25, resolution=96, classes=5, seed=1)
    fc = mobilenet_v1(alpha=0.25, resolution=96, classes=5, seed=1, head="fc", softmax=True)
    assert count_macs(conv) == count_macs(fc)
    assert [op.kind for op in conv.ops[-2:]] == ["CONV_2D", "RESHAPE"]
    assert [op.kind for op in fc.ops[-3:]] == ["RESHAPE", "FULLY_CONNECTED", "SOFTMAX"]
    # Same random draws whatever the head: the classifier weights are the same numbers.
    np.testing.assert_array_equal(conv.tensor("Conv2d_1c_1x1/weights").data.reshape(5, -1),
                                  fc.tensor("Logits/weights").data)


def test_mobilenet_is_deterministic_by_seed():
    a, b = mobilenet_v1(0.25, 96, 2, seed=5), mobilenet_v1(0.25, 96, 2, seed=5)
    c = mobilenet_v1(0.25, 96, 2, seed=6)
    consts = [n for n, t in a.tensors.items() if t.is_const]
    assert consts and all(np.array_equal(a.tensor(n).data, b.tensor(n).data) for n in consts)
    assert not np.array_equal(a.tensor("Conv2d_0/weights").data, c.tensor("Conv2d_0/weights").data)


def test_mobilenet_activations_stay_in_range():
    """Random weights still give a network whose layers neither die nor saturate (so calibration means
    something): every ReLU6 output has live and unsaturated values on a real photo."""
    from stackcam.quant.calib import calibration_set
    from stackcam.quant.executor import run_graph

    g = mobilenet_v1(alpha=0.25, resolution=96, classes=10)
    x = calibration_set((1, 96, 96, 3), names=("chelsea",))[0]
    trace = {}
    logits = run_graph(g, [x], trace=trace)[0]
    for op in g.ops:
        if op.opts.get("activation") == "RELU6":
            y = trace[op.outputs[0]]
            assert (y > 0).mean() > 0.05 and (y < 6).mean() > 0.5, op.name
    assert np.isfinite(logits).all() and logits.std() > 0


def test_mobilenet_rejects_bad_arguments():
    from stackcam.quant.graph import ModelError

    with pytest.raises(ModelError, match="alpha > 0"):
        mobilenet_v1(alpha=0)
    with pytest.raises(ModelError, match="head must be"):
        mobilenet_v1(head="mlp")


# --- BlazeFace from the mediapipe wheel --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def blazeface_bytes():
    try:
        return bf.blazeface_tflite()
    except bf.FetchError as exc:
        if not bf.pypi_reachable():
            pytest.skip(f"PyPI is unreachable, so the mediapipe wheel cannot be fetched: {exc}")
        raise


def test_blazeface_fetch_is_cached(blazeface_bytes):
    assert hashlib.sha256(blazeface_bytes).hexdigest() == bf.MODEL_SHA256
    cache = bf.cache_dir()
    assert (cache / "models" / "face_detection_short_range.tflite").read_bytes() == blazeface_bytes
    assert list((cache / "wheels").glob(f"mediapipe-{bf.MEDIAPIPE_VERSION}-*.whl"))
    assert bf.blazeface_tflite() == blazeface_bytes        # second call: from the cache


def test_blazeface_float_graph(blazeface_bytes):
    g = bf.blazeface_float_graph()
    kinds = Counter(op.kind for op in g.ops)
    assert kinds == {"CONV_2D": 21, "RELU": 17, "DEPTHWISE_CONV_2D": 16, "ADD": 16, "PAD": 11, "RESHAPE": 4,
                     "MAX_POOL_2D": 3, "CONCATENATION": 2}      # the 74 DEQUANTIZE ops folded away
    assert not any(t.dtype == "float16" for t in g.tensors.values())
    assert g.tensor(g.inputs[0]).shape == (1, 128, 128, 3)
    assert sorted(g.tensor(n).shape for n in g.outputs) == [(1, 896, 1), (1, 896, 16)]
    assert count_macs(g) == 30_760_960
    assert count_weights(g) == 99_202                         # "about 100 k"


def test_blazeface_fetch_failure_is_one_line(tmp_path, monkeypatch):
    # No index and no local wheels: pip fails at once, without touching the network.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    with pytest.raises(bf.FetchError, match=r"could not download mediapipe==0\.10\.14 from PyPI") as info:
        bf.blazeface_tflite(cache=tmp_path)
    assert "\n" not in str(info.value)
    assert not list((tmp_path / "wheels").glob("*.whl"))


def test_blazeface_corrupt_cached_wheel_is_reported(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / f"mediapipe-{bf.MEDIAPIPE_VERSION}-cp311-none-any.whl").write_bytes(b"not a zip")
    with pytest.raises(bf.FetchError, match="not a mediapipe wheel"):
        bf.blazeface_tflite(cache=tmp_path)
