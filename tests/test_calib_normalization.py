"""Calibration input normalization: --input-range, --input-mean/--input-std and preprocessed .npy tensors, the
compile report naming the one used, the cache keyed on it, and one-line errors on bad values."""

import numpy as np
import pytest

from stackcam.cli import main
from stackcam.cli.models import cache_key
from stackcam.quant.calib import CalibrationError, Normalization, calibration_set, parse_normalization
from tests.test_quant_ops import ModelBuilder


@pytest.fixture(scope="module")
def float_model(tmp_path_factory):
    m = ModelBuilder(seed=4, dtype=np.float32)
    x = m.input((1, 24, 24, 3))
    y = m.conv(m.conv(x, 4, k=3, stride=2, act="RELU"), 3, k=1)
    path = tmp_path_factory.mktemp("norm") / "f.tflite"
    path.write_bytes(m.output(y))
    return path


def test_range_and_standardization_values():
    px = np.array([[[0.0, 127.5, 255.0]]])
    np.testing.assert_allclose(parse_normalization().apply(px), [[[-1, 0, 1]]], atol=1e-6)
    np.testing.assert_allclose(parse_normalization("0,1").apply(px), [[[0, 0.5, 1]]], atol=1e-6)
    n = parse_normalization(mean="10,20,30", std="2,4,5")
    np.testing.assert_allclose(n.apply(px), [[[-5, (127.5 - 20) / 4, (255 - 30) / 5]]], rtol=1e-6)
    assert n.value_range(3) == (-6.0, 122.5)
    one = parse_normalization(mean="127.5", std="127.5")
    np.testing.assert_allclose(one.apply(px), [[[-1, 0, 1]]], atol=1e-6)
    photos = calibration_set((1, 8, 8, 3), normalize=parse_normalization("0,255"), names=("astronaut",))
    assert photos[0].min() >= 0 and photos[0].max() <= 255 and photos[0].max() > 200


@pytest.mark.parametrize("args,message", [
    (("1,-1", None, None), "LO must be below HI"),
    (("0,0", None, None), "LO must be below HI"),
    (("1", None, None), "give LO,HI"),
    (("a,b", None, None), "not a comma-separated list"),
    ((None, "0,0,0", "1,0,1"), "above 0"),
    ((None, None, "-3"), "above 0"),
    (("0,1", "1", None), "not both"),
    ((None, "1,2", "1,2,3"), "--input-mean has 2 values"),
])
def test_bad_values_are_one_line_errors(args, message):
    with pytest.raises(CalibrationError, match=message) as e:
        parse_normalization(*args)
    assert "\n" not in str(e.value)


def test_wrong_channel_count():
    with pytest.raises(CalibrationError, match="has 2 values; the model input has 3 channels"):
        Normalization(mean=[1, 2], std=[1, 1]).apply(np.zeros((2, 2, 3)))


def test_cache_key_follows_the_normalization(float_model):
    keys = {cache_key(float_model, calib_photos=True, normalization=n)
            for n in (None, parse_normalization("0,1"), parse_normalization(mean="1,2,3", std="4,5,6"))}
    assert len(keys) == 3


def test_compile_reports_normalization_and_scales_the_input(float_model, tmp_path, capsys):
    from stackcam.cli.models import model_graph
    from stackcam.rtl.params import preset
    assert main(["compile", str(float_model), "--calib-photos", "--config", "tiny", "-o", str(tmp_path / "a")]) == 0
    assert "calibration: the scikit-image photos, pixels scaled to [-1, 1]" in capsys.readouterr().out
    assert main(["compile", str(float_model), "--calib-photos", "--config", "tiny", "--input-mean",
                 "123.7,116.3,103.5", "--input-std", "58.4,57.1,57.4", "-o", str(tmp_path / "b")]) == 0
    assert ("calibration: the scikit-image photos, pixels in [0, 255] standardized as (x - mean) / std, mean "
            "123.7,116.3,103.5, std 58.4,57.1,57.4") in capsys.readouterr().out
    assert main(["compile", str(float_model), "--calib-photos", "--config", "tiny", "--input-range", "0,255",
                 "-o", str(tmp_path / "c")]) == 0
    assert "pixels scaled to [0, 255]" in capsys.readouterr().out
    # The input quantization covers what the normalization can give.
    g = model_graph(str(float_model), preset("tiny"), calib_photos=True, normalization=parse_normalization("0,255"))
    s, z = g.tensor(g.inputs[0]).quant.scalar()
    assert abs(s * (127 - z) - 255) < 2 * s and abs(s * (-128 - z)) < s


def test_npy_calibration_taken_as_is(float_model, tmp_path, capsys):
    rng = np.random.default_rng(0)
    d = tmp_path / "tensors"
    d.mkdir()
    np.save(d / "a.npy", rng.uniform(-3, 5, (24, 24, 3)).astype(np.float32))
    np.save(d / "b.npy", rng.uniform(-3, 5, (2, 24, 24, 3)).astype(np.float32))
    assert len(calibration_set((1, 24, 24, 3), source=[d / "a.npy", d / "b.npy"])) == 3
    assert len(calibration_set((1, 24, 24, 3), source=d)) == 3
    assert main(["compile", str(float_model), "--calib", str(d / "a.npy"), str(d / "b.npy"), "--config", "tiny",
                 "-o", str(tmp_path / "o")]) == 0
    assert "calibration: preprocessed .npy tensors taken as-is" in capsys.readouterr().out
    from stackcam.cli.models import model_graph
    from stackcam.rtl.params import preset
    g = model_graph(str(float_model), preset("tiny"), calib=[str(d)])
    s, z = g.tensor(g.inputs[0]).quant.scalar()
    assert s * (-128 - z) < -2.5 and s * (127 - z) > 4.5          # the tensors' own range, not [-1, 1]
    np.save(d / "bad.npy", np.zeros((5, 5, 3), np.float32))
    with pytest.raises(CalibrationError, match="bad.npy' has shape"):
        calibration_set((1, 24, 24, 3), source=d)


def test_cli_errors_are_one_line(float_model, tmp_path, capsys):
    for extra in (["--input-range", "2,1"], ["--input-std", "1,0,1"], ["--input-mean", "1,2"]):
        assert main(["compile", str(float_model), "--calib-photos", "--config", "tiny", *extra,
                     "-o", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "error" in err

