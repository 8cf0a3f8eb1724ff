"""Tests of the frame source (photo, Bayer mosaic, beats, RAW10) and of the ISP model's quantization constants."""

import numpy as np
import pytest

from quant.isp import IspQuant, isp_float, isp_quant_params, isp_reference, isp_sums
from rtl.params import DieConfig, preset
from rtl.streams import pixel_beat_layout
from sim.frame_source import ImageError, bayer_frame, frame_beats, load_image, pack_beats, raw10_pack, raw10_unpack


def test_load_default_photo():
    img = load_image()
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3


def test_load_grayscale_and_rgba(tmp_path):
    import skimage.io
    gray = (np.arange(12 * 10) % 256).astype(np.uint8).reshape(12, 10)
    skimage.io.imsave(tmp_path / "g.png", gray, check_contrast=False)
    img = load_image(tmp_path / "g.png")
    assert img.shape == (12, 10, 3) and np.array_equal(img[..., 0], gray) and np.array_equal(img[..., 2], gray)
    rgba = np.random.default_rng(1).integers(0, 256, (8, 6, 4), dtype=np.uint8)
    skimage.io.imsave(tmp_path / "a.png", rgba, check_contrast=False)
    assert np.array_equal(load_image(str(tmp_path / "a.png")), rgba[..., :3])


def test_load_missing_file(tmp_path):
    path = tmp_path / "nope.png"
    with pytest.raises(ImageError, match="nope.png") as info:
        load_image(path)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_load_non_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not a PNG\n")
    with pytest.raises(ImageError, match="notes.png") as info:
        load_image(path)
    assert "\n" not in str(info.value)
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)


def test_bayer_pattern():
    # Constant colour planes: every site must carry its own channel's 10-bit value.
    rgb = np.empty((8, 10, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 255, 128, 1
    raw = bayer_frame(rgb, 10, 8)
    assert raw.dtype == np.uint16 and raw.shape == (8, 10)
    g = round(128 * 1023 / 255)
    assert (raw[0::2, 0::2] == 1023).all()
    assert (raw[0::2, 1::2] == g).all() and (raw[1::2, 0::2] == g).all()
    assert (raw[1::2, 1::2] == round(1023 / 255)).all()
    # No resize when the size already matches: each site samples its own pixel exactly.
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    raw = bayer_frame(rgb, 8, 6)
    v10 = np.floor(rgb.astype(np.int64) * 1023 / 255 + 0.5).astype(np.int64)
    assert np.array_equal(raw[0::2, 0::2], v10[0::2, 0::2, 0])
    assert np.array_equal(raw[1::2, 1::2], v10[1::2, 1::2, 2])
    assert np.array_equal(raw[1::2, 0::2], v10[1::2, 0::2, 1])
    # Resizing a real photo is deterministic and stays in range.
    photo = load_image()
    a, b = bayer_frame(photo, 64, 48), bayer_frame(photo, 64, 48)
    assert np.array_equal(a, b) and a.max() <= 1023 and a.shape == (48, 64)


def test_bayer_rejects_odd_size():
    with pytest.raises(ValueError, match="even"):
        bayer_frame(np.zeros((4, 4, 3), np.uint8), 5, 4)


@pytest.mark.parametrize("ppc", [1, 2, 4])
def test_beats_and_packing(ppc):
    rng = np.random.default_rng(ppc)
    raw = rng.integers(0, 1024, (4, 8), dtype=np.uint16)
    beats = list(frame_beats(raw, ppc))
    assert len(beats) == raw.size // ppc
    assert [v for b in beats for v in b[0]] == raw.reshape(-1).tolist()
    per_line = 8 // ppc
    for i, (_, lf, ll, ff, fl) in enumerate(beats):
        assert lf == (i % per_line == 0) and ll == (i % per_line == per_line - 1)
        assert ff == (i == 0) and fl == (i == len(beats) - 1)
    # The packed form must equal what Amaranth itself builds from the layout.
    layout = pixel_beat_layout(ppc)
    packed = pack_beats(raw, ppc)
    for word, (pixels, lf, ll, ff, fl) in zip(packed, beats):
        const = layout.const({"pixels": list(pixels), "line_first": lf, "line_last": ll,
                              "frame_first": ff, "frame_last": fl})
        assert int(word) == const.as_value().value


def test_raw10_golden():
    # Pixels 0x3FF, 0x000, 0x2AA, 0x155: high bytes FF 00 AA 55; low pairs 3, 0, 2, 1 -> 0b01_10_00_11.
    # Pixels 1, 2, 3, 4: high bytes 00 00 00 01, low pairs 1, 2, 3, 0 -> 0b00_11_10_01 = 0x39.
    assert raw10_pack([0x3FF, 0x000, 0x2AA, 0x155]) == bytes([0xFF, 0x00, 0xAA, 0x55, 0x63])
    assert raw10_pack([1, 2, 3, 4, 1023, 512, 256, 5]) == bytes([0, 0, 0, 1, 0x39, 0xFF, 0x80, 0x40, 0x01, 0x43])
    rng = np.random.default_rng(3)
    line = rng.integers(0, 1024, 64)
    packed = raw10_pack(line)
    assert len(packed) == 80 and np.array_equal(raw10_unpack(packed), line)
    with pytest.raises(ValueError, match="multiple of 4"):
        raw10_pack([1, 2, 3])


def test_isp_sums_small():
    cfg = DieConfig(frame_width=4, frame_height=4, input_width=1, input_height=1, pixels_per_clock=2)
    raw = np.arange(16, dtype=np.uint16).reshape(4, 4)
    # k = 2: R at (0,0),(0,2),(2,0),(2,2); B at the odd/odd sites; G the rest.
    assert isp_sums(raw, cfg).tolist() == [[[0 + 2 + 8 + 10, 1 + 3 + 9 + 11 + 4 + 6 + 12 + 14, 5 + 7 + 13 + 15]]]


@pytest.mark.parametrize("name", ["tiny", "fpga", "imx500"])
@pytest.mark.parametrize("scale,zp,lo,hi", [(2 / 255, -1, -1.0, 1.0), (1 / 255, -128, 0.0, 1.0),
                                            (1 / 128, 0, -1.0, 1.0), (0.0213, 5, -1.2, 1.5)])
def test_quant_params_match_float(name, scale, zp, lo, hi):
    cfg = preset(name)
    quant = isp_quant_params(cfg, scale, zp, lo, hi)
    rng = np.random.default_rng(4)
    raw = rng.integers(0, 1024, (cfg.frame_height, cfg.frame_width), dtype=np.uint16)
    # Saturated corners, so clamping is exercised as well.
    raw[:cfg.frame_height // 2, :cfg.frame_width // 2] = 1023
    raw[cfg.frame_height // 2:, cfg.frame_width // 2:] = 0
    q = isp_reference(raw, cfg, quant).astype(np.int64)
    x = isp_float(raw, cfg, lo, hi).astype(np.float64)
    q_float = np.clip(np.floor(x / scale + zp + 0.5), -128, 127)
    assert np.abs(q - q_float).max() <= 1


def test_quant_params_photo():
    cfg = preset("tiny")
    raw = bayer_frame(load_image(), cfg.frame_width, cfg.frame_height)
    quant = isp_quant_params(cfg, 2 / 255, -1)
    q = isp_reference(raw, cfg, quant).astype(np.int64)
    x = isp_float(raw, cfg).astype(np.float64)
    assert np.abs(q - np.clip(np.round(x * 255 / 2 - 1), -128, 127)).max() <= 1
    assert q.min() < -100 and q.max() > 100    # the photo spans the range


def test_quant_params_bounds():
    cfg = DieConfig(frame_width=32, frame_height=32, input_width=16, input_height=16, isp_shift=24)
    with pytest.raises(ValueError, match="offset"):
        isp_quant_params(cfg, 2 / 255, -5)    # (-127.5 - 5) * 2**24 overflows int32
    with pytest.raises(ValueError, match="multiplier"):
        isp_quant_params(cfg, 1e-4, 0)
    with pytest.raises(ValueError, match="scale"):
        isp_quant_params(cfg, 0.0, 0)
    with pytest.raises(ValueError, match="hi > lo"):
        isp_quant_params(cfg, 0.01, 0, 1.0, -1.0)
    with pytest.raises(ValueError, match="24 bits"):
        IspQuant(mult=(1 << 24, 0, 0), offset=0, shift=20)
