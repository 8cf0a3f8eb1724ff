"""Tests of the frame source (photo, Bayer mosaic, beats, RAW10) and of the ISP model's quantization constants."""

import numpy as np
import pytest

from stackcam.quant.isp import (
    IspGeometry,
    IspQuant,
    isp_channel_counts,
    isp_float,
    isp_quant_params,
    isp_reference,
    isp_sums,
)
from stackcam.rtl.params import DieConfig, preset
from stackcam.rtl.streams import pixel_beat_layout
from stackcam.sim.frame_source import (
    ImageError,
    bayer_frame,
    frame_beats,
    load_image,
    pack_beats,
    raw10_pack,
    raw10_unpack,
)


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



def _png_header_only(path, width, height):
    """A PNG whose header declares width x height RGB and whose data is a few zero rows (a decompression bomb's
    shape: a small file, a huge declared image)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) +
                     chunk(b"IDAT", zlib.compress(bytes(1000))) + chunk(b"IEND", b""))


def test_huge_photo_is_refused_from_its_header(tmp_path):
    """A photo beyond MAX_PHOTO_PIXELS is refused before a pixel is decoded (a 10000x10000 photo once cost 153 s and
    5 GB before anything was said): one line, fast, both just above our limit and above PIL's own."""
    import time

    for (w, h), expect in {(12000, 10000): "a 12000x10000 photo \\(120 MP\\) is larger than the 100 MP",
                           (40000, 40000): "declares more pixels than PIL opens"}.items():
        path = tmp_path / f"{w}x{h}.png"
        _png_header_only(path, w, h)
        t = time.time()
        with pytest.raises(ImageError, match=expect) as info:
            load_image(path, fit=(64, 48))
        assert time.time() - t < 2 and "\n" not in str(info.value)


def test_large_photo_is_decoded_reduced_for_its_frame(tmp_path):
    """A 10000x10000 photo for a small frame is decoded reduced (a whole-factor box filter; JPEG at 1/8 scale in the
    decoder) to 1-2 times the frame, so reading it and making the Bayer frame take seconds, not minutes; a photo
    that is not twice the frame is read as it is; the reduced frame is the full-size one within rounding."""
    import time

    from PIL import Image

    yy, xx = np.mgrid[0:10000, 0:10000]
    gray = ((xx // 40 + yy // 40) % 256).astype(np.uint8)
    Image.fromarray(gray).save(tmp_path / "big.png", compress_level=1)
    del yy, xx
    t = time.time()
    img = load_image(tmp_path / "big.png", fit=(96, 64))
    raw = bayer_frame(img, 96, 64)
    assert time.time() - t < 10
    assert 96 <= img.shape[1] < 192 and img.shape[0] == img.shape[1] and img.shape[2] == 3
    assert raw.shape == (64, 96)
    Image.fromarray(gray[:2000:8, :3000:8]).convert("RGB").save(tmp_path / "small.jpg", quality=95)
    assert load_image(tmp_path / "small.jpg", fit=(200, 200)).shape == (250, 375, 3)       # < 2x: as it is
    full = bayer_frame(load_image(tmp_path / "small.jpg"), 96, 64).astype(int)
    reduced = bayer_frame(load_image(tmp_path / "small.jpg", fit=(96, 64)), 96, 64).astype(int)
    assert np.abs(full - reduced).mean() < 4

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


# ---- IspGeometry: the runtime geometry and the model's use of it ----

@pytest.mark.parametrize("name", ["tiny", "fpga", "imx500"])
def test_geometry_default_is_config_geometry(name):
    cfg = preset(name)
    g = IspGeometry.default(cfg)
    assert (g.crop_x, g.crop_y, g.bin_factor, g.out_width, g.out_height) == \
        (cfg.crop_x, cfg.crop_y, cfg.bin_factor, cfg.input_width, cfg.input_height)
    assert (g.crop_width, g.crop_height) == (cfg.crop_width, cfg.crop_height)
    assert g.check(cfg) is g
    # The config's derivation is the same rule as for_input at the maximum size.
    assert IspGeometry.for_input(cfg, cfg.input_width, cfg.input_height) == g
    # Every existing call is the default geometry.
    raw = np.random.default_rng(6).integers(0, 1024, (cfg.frame_height, cfg.frame_width), dtype=np.uint16)
    quant = isp_quant_params(cfg, 2 / 255, -1)
    assert quant == isp_quant_params(cfg, 2 / 255, -1, geometry=g)
    np.testing.assert_array_equal(isp_reference(raw, cfg, quant), isp_reference(raw, cfg, quant, g))
    assert isp_channel_counts(cfg) == isp_channel_counts(cfg, g)


def test_geometry_for_input():
    tiny = preset("tiny")                          # 96x72, P = 2, at most 16x16
    assert IspGeometry.for_input(tiny, 8, 8) == IspGeometry(crop_x=16, crop_y=4, bin_factor=4, out_width=8,
                                                            out_height=8)
    assert IspGeometry.for_input(tiny, 5, 3) == IspGeometry(crop_x=2, crop_y=8, bin_factor=9,
                                                            out_width=5, out_height=3)
    imx = preset("imx500")                         # 4056x3040, P = 4, at most 224x224
    # BlazeFace: k = min(15, 11) = 11 would make 22-pixel bins, not whole 4-pixel beats, so k = 10.
    blaze = IspGeometry.for_input(imx, 128, 128)
    assert blaze == IspGeometry(crop_x=748, crop_y=240, bin_factor=10, out_width=128, out_height=128)
    assert IspGeometry.for_input(imx, 224, 224) == IspGeometry.default(imx)
    assert IspGeometry.for_input(imx, 96, 96).bin_factor == 14
    with pytest.raises(ValueError, match="exceeds the maximum 16x16"):
        IspGeometry.for_input(tiny, 17, 8)
    with pytest.raises(ValueError, match="out_height must be a positive integer"):
        IspGeometry.for_input(tiny, 8, 0)


def test_geometry_check_errors():
    cfg = DieConfig(frame_width=40, frame_height=24, pixels_per_clock=4, input_width=6, input_height=5)
    good = IspGeometry(crop_x=8, crop_y=2, bin_factor=2, out_width=4, out_height=4)
    assert good.check(cfg) is good
    cases = [
        (dict(bin_factor=0), "bin_factor must be at least 1, got 0"),
        (dict(out_width=0), "output size 0x4 is empty"),
        (dict(out_height=6), "output size 4x6 exceeds the maximum 6x5"),
        (dict(bin_factor=3), "bin width 6 \\(bin_factor 3\\) is not a multiple of pixels_per_clock 4"),
        (dict(crop_x=6), "crop origin \\(6, 2\\) must be on an RGGB quad, with crop_x a multiple of 4"),
        (dict(crop_y=3), "crop origin \\(8, 3\\)"),
        (dict(crop_x=28), "crop 16x16 at \\(28, 2\\) leaves the 40x24 frame"),
        (dict(crop_y=10), "crop 16x16 at \\(8, 10\\) leaves the 40x24 frame"),
        (dict(crop_x=400, crop_y=900), "leaves the 40x24 frame"),
    ]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            IspGeometry(**{**good.__dict__, **change}).check(cfg)
    raw = np.zeros((24, 40), np.uint16)
    bad = IspGeometry(**{**good.__dict__, "bin_factor": 3})
    quant = isp_quant_params(cfg, 2 / 255, -1)
    for call in (lambda: isp_sums(raw, cfg, bad), lambda: isp_reference(raw, cfg, quant, bad),
                 lambda: isp_float(raw, cfg, geometry=bad), lambda: isp_channel_counts(cfg, bad),
                 lambda: isp_quant_params(cfg, 2 / 255, -1, geometry=bad)):
        with pytest.raises(ValueError, match="pixels_per_clock"):
            call()
    # Construction only refuses what the RTL port cannot carry.
    with pytest.raises(ValueError, match="bin_factor must be an integer in 0..255"):
        IspGeometry(crop_x=0, crop_y=0, bin_factor=256, out_width=1, out_height=1)
    with pytest.raises(ValueError, match="crop_x must be an integer in 0..65535"):
        IspGeometry(crop_x=-2, crop_y=0, bin_factor=1, out_width=1, out_height=1)
    with pytest.raises(ValueError, match="out_width"):
        IspGeometry(crop_x=0, crop_y=0, bin_factor=1, out_width=1.5, out_height=1)
    with pytest.raises(TypeError):
        isp_sums(raw, cfg, (8, 2, 2, 4, 4))


def test_isp_sums_geometry():
    # Direct sums over each bin of an off-centre k = 3 crop, against the vectorised model.
    cfg = DieConfig(frame_width=40, frame_height=30, pixels_per_clock=2, input_width=6, input_height=4)
    g = IspGeometry(crop_x=10, crop_y=4, bin_factor=3, out_width=4, out_height=3)
    raw = np.random.default_rng(8).integers(0, 1024, (30, 40), dtype=np.uint16)
    sums = isp_sums(raw, cfg, g)
    assert sums.shape == (3, 4, 3)
    for oy in range(3):
        for ox in range(4):
            want = [0, 0, 0]
            for y in range(4 + 6 * oy, 4 + 6 * oy + 6):
                for x in range(10 + 6 * ox, 10 + 6 * ox + 6):
                    want[(y % 2) + (x % 2)] += int(raw[y, x])
            assert sums[oy, ox].tolist() == want
    assert isp_channel_counts(cfg, g) == (9, 18, 9)
    assert isp_float(raw, cfg, geometry=g).shape == (3, 4, 3)


@pytest.mark.parametrize("out", [(8, 8), (12, 10), (3, 2)])
def test_quant_params_match_float_geometry(out):
    # The constants follow the geometry's k, and still round like the float path.
    cfg = preset("tiny")
    g = IspGeometry.for_input(cfg, *out)
    quant = isp_quant_params(cfg, 2 / 255, -1, geometry=g)
    n_r = isp_channel_counts(cfg, g)[0]
    assert quant.mult[0] == round(2 / (1023 * (2 / 255) * n_r) * (1 << cfg.isp_shift))
    rng = np.random.default_rng(9)
    raw = rng.integers(0, 1024, (cfg.frame_height, cfg.frame_width), dtype=np.uint16)
    raw[:cfg.frame_height // 2, :cfg.frame_width // 2] = 1023
    q = isp_reference(raw, cfg, quant, g).astype(np.int64)
    assert q.shape == (out[1], out[0], 3)
    x = isp_float(raw, cfg, geometry=g).astype(np.float64)
    assert np.abs(q - np.clip(np.floor(x * 255 / 2 - 1 + 0.5), -128, 127)).max() <= 1
