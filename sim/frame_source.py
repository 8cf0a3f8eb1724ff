"""Test-side pixel die: real photos to 10-bit RGGB Bayer frames, the beats of the readout stream, and RAW10 bytes.

Plain numpy (and scikit-image for reading and resizing); only `pack_beats` imports the RTL's stream layout.
"""

import os
import warnings

import numpy as np

from stackcam.errors import StackcamError

__all__ = ["ImageError", "MAX_PHOTO_PIXELS", "load_image", "bayer_frame", "frame_beats", "pack_beats",
           "beat_field_offsets", "raw10_pack", "raw10_unpack"]


class ImageError(StackcamError, ValueError):
    """A photo that cannot be used; the one-line message names the file and the reason."""


# Photos larger than this are refused from their header, before any pixel is decoded: 100 MP (10000 x 10000) is
# 8 times the largest preset's readout (imx500, 12.3 MP) and decodes into 300 MB.
MAX_PHOTO_PIXELS = 100_000_000


def _photo_header(blob):
    """(width, height) from the image header (PIL reads no pixels), None for a format PIL does not know, "huge"
    beyond PIL's own decompression-bomb limit (twice Image.MAX_IMAGE_PIXELS, far above ours)."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)     # our own limit applies
            with Image.open(io.BytesIO(blob)) as im:
                return im.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        return None
    except Image.DecompressionBombError:
        return "huge"


def _pil_reduced(blob, fit):
    """The photo decoded by PIL at a reduced size: JPEG decodes at 1/2, 1/4 or 1/8 scale (draft), then a box filter
    (reduce) by a whole factor, keeping at least `fit` (width, height) in each axis for the final resize.
    None when the photo is not much larger than `fit` or its mode is not plain 8-bit."""
    import io

    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(blob)) as im:
            w, h = im.size
            factor = min(w // fit[0], h // fit[1])
            if factor < 2 or im.mode not in ("L", "RGB", "RGBA", "P", "LA", "CMYK", "YCbCr"):
                return None
            if im.format == "JPEG":
                im.draft("RGB" if im.mode in ("RGB", "YCbCr", "CMYK") else im.mode, (w // factor, h // factor))
            im = im.convert("RGBA" if im.mode in ("P", "LA", "RGBA") else "RGB" if im.mode != "L" else "L")
            factor = min(im.size[0] // fit[0], im.size[1] // fit[1])
            if factor >= 2:
                im = im.reduce(factor)
            return np.asarray(im)


def load_image(path=None, fit=None):
    """Read a photo as uint8 HxWx3 RGB; `None` gives `skimage.data.astronaut()`.

    Grayscale becomes three equal channels, an alpha channel is dropped, other depths are rescaled to 8 bits and
    only the first frame of an animation is used. A missing or unreadable file raises ImageError, and so does a
    photo of more than MAX_PHOTO_PIXELS (refused from its header, before decoding). `fit` (width, height), the
    frame the photo is for: a photo at least twice as large in both axes is decoded reduced (JPEG at 1/2 to 1/8
    scale, then a whole-factor box filter) to between 1 and 2 times `fit`, so a 10000 x 10000 photo for the tiny
    preset costs about two seconds instead of three minutes and 5 GB in the resize.
    """
    import imageio.v3  # scikit-image's own reader
    import skimage.data
    import skimage.util

    if path is None:
        return np.ascontiguousarray(skimage.data.astronaut(), dtype=np.uint8)
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ImageError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ImageError(f"{path}: is a directory, not an image file")
    try:
        # Read the bytes ourselves: imageio leaves the file open when every plugin rejects it.
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    size = _photo_header(blob)
    if size == "huge":
        raise ImageError(f"{path}: the photo's header declares more pixels than PIL opens, far more than the "
                         f"{MAX_PHOTO_PIXELS // 1_000_000} MP stackcam reads; scale it down first")
    if size is not None and size[0] * size[1] > MAX_PHOTO_PIXELS:
        raise ImageError(f"{path}: a {size[0]}x{size[1]} photo ({size[0] * size[1] / 1e6:,.0f} MP) is larger than "
                         f"the {MAX_PHOTO_PIXELS // 1_000_000} MP stackcam reads; scale it down first")
    img = None
    try:
        if size is not None and fit is not None:
            img = _pil_reduced(blob, fit)
        if img is None:
            # imageio probes its plugins on a non-image and some of them warn about their own deprecation.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.filterwarnings("ignore", message=".*decompression bomb")     # our own limit applies
                img = np.asarray(imageio.v3.imread(blob))
    except Exception as exc:    # imageio/PIL raise many different types for "not an image"
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if "Could not find a backend" in reason:
            reason = "not a recognised image format"
        raise ImageError(f"{path}: cannot read as an image: {reason}") from None
    if img.ndim == 4:           # animated GIF/TIFF stack: the first frame
        img = img[0]
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] not in (3, 4) or img.shape[0] < 1 or img.shape[1] < 1:
        raise ImageError(f"{path}: unsupported image shape {img.shape}")
    if img.shape[0] * img.shape[1] > MAX_PHOTO_PIXELS:      # a format whose header PIL does not read
        raise ImageError(f"{path}: a {img.shape[1]}x{img.shape[0]} photo is larger than the "
                         f"{MAX_PHOTO_PIXELS // 1_000_000} MP stackcam reads; scale it down first")
    img = img[..., :3]
    if img.dtype != np.uint8:
        try:
            img = skimage.util.img_as_ubyte(img)
        except ValueError as exc:
            raise ImageError(f"{path}: unsupported pixel type {img.dtype}: {exc}") from None
    return np.ascontiguousarray(img)


def bayer_frame(rgb, width, height):
    """A 10-bit RAW RGGB frame, uint16 [height, width], from an RGB photo.

    The photo is resized (bilinear with anti-aliasing: deterministic), scaled 8 to 10 bits as
    round(v8 * 1023 / 255), and mosaicked: even rows R G R G ..., odd rows G B G B ...
    """
    import skimage.transform

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"bayer_frame: expected an HxWx3 RGB image, got shape {rgb.shape}")
    if width % 2 or height % 2 or width <= 0 or height <= 0:
        raise ValueError(f"bayer_frame: frame size must be positive and even (whole RGGB quads), "
                         f"got {width}x{height}")
    if rgb.shape[:2] == (height, width):
        v8 = rgb.astype(np.float64)
    else:
        v8 = skimage.transform.resize(rgb.astype(np.float64), (height, width), order=1, mode="edge",
                                      anti_aliasing=True, preserve_range=True)
    # floor(x + 0.5), not np.rint: half-to-even would make the scaling depend on parity.
    v10 = np.clip(np.floor(v8 * (1023.0 / 255.0) + 0.5), 0, 1023).astype(np.uint16)
    raw = np.empty((height, width), dtype=np.uint16)
    raw[0::2, 0::2] = v10[0::2, 0::2, 0]    # R
    raw[0::2, 1::2] = v10[0::2, 1::2, 1]    # G (on R rows)
    raw[1::2, 0::2] = v10[1::2, 0::2, 1]    # G (on B rows)
    raw[1::2, 1::2] = v10[1::2, 1::2, 2]    # B
    return raw


def _check_raw(raw, pixels_per_clock):
    raw = np.asarray(raw)
    if raw.ndim != 2:
        raise ValueError(f"expected a 2-D RAW frame, got shape {raw.shape}")
    if pixels_per_clock < 1 or raw.shape[1] % pixels_per_clock:
        raise ValueError(f"frame width {raw.shape[1]} is not a multiple of pixels_per_clock {pixels_per_clock}")
    if raw.size and (raw.min() < 0 or raw.max() > 1023):
        raise ValueError("RAW10 pixel values must be in 0..1023")
    return raw


def frame_beats(raw, pixels_per_clock):
    """Yield the readout beats of a frame in raster order.

    Each beat is `(pixels, line_first, line_last, frame_first, frame_last)`: a tuple of `pixels_per_clock` ints
    (pixel 0 is the leftmost) and four bools, as in `rtl.streams.pixel_beat_layout`.
    """
    raw = _check_raw(raw, pixels_per_clock)
    height, width = raw.shape
    beats_per_line = width // pixels_per_clock
    for y in range(height):
        line = raw[y].reshape(beats_per_line, pixels_per_clock)
        for bx in range(beats_per_line):
            yield (tuple(int(v) for v in line[bx]), bx == 0, bx == beats_per_line - 1,
                   y == 0 and bx == 0, y == height - 1 and bx == beats_per_line - 1)


def beat_field_offsets(layout):
    """Bit offsets of a pixel beat layout: (list of pixel offsets, {marker name: offset}), read from the layout."""
    pixels = layout["pixels"]
    pixel_offsets = [pixels.offset + pixels.shape[i].offset for i in range(pixels.shape.length)]
    markers = {name: layout[name].offset for name in ("line_first", "line_last", "frame_first", "frame_last")}
    return pixel_offsets, markers


def pack_beats(raw, pixels_per_clock, layout=None):
    """The beats of `frame_beats` as int64 payload values [n_beats], for driving `payload.as_value()` directly.

    Bit positions come from `layout` (default `rtl.streams.pixel_beat_layout(pixels_per_clock)`), not from
    assumptions about it.
    """
    raw = _check_raw(raw, pixels_per_clock).astype(np.int64)
    if layout is None:
        # Imported here so the rest of the frame source works without Amaranth (e.g. on the cocotb side).
        from stackcam.rtl.streams import pixel_beat_layout
        layout = pixel_beat_layout(pixels_per_clock)
    if layout.size > 63:
        raise ValueError(f"beat layout is {layout.size} bits, too wide for int64 packing")
    pixel_offsets, markers = beat_field_offsets(layout)
    if len(pixel_offsets) != pixels_per_clock:
        raise ValueError(f"layout carries {len(pixel_offsets)} pixels per beat, not {pixels_per_clock}")
    height, width = raw.shape
    beats_per_line = width // pixels_per_clock
    pix = raw.reshape(height, beats_per_line, pixels_per_clock)
    words = np.zeros((height, beats_per_line), dtype=np.int64)
    for i, offset in enumerate(pixel_offsets):
        words |= pix[:, :, i] << offset
    words[:, 0] |= 1 << markers["line_first"]
    words[:, -1] |= 1 << markers["line_last"]
    words[0, 0] |= 1 << markers["frame_first"]
    words[-1, -1] |= 1 << markers["frame_last"]
    return words.reshape(-1)


def raw10_pack(raw_line):
    """CSI-2 RAW10 bytes of a line: per 4 pixels, their 4 high bytes (bits 9:2), then one byte holding the four
    low 2-bit pairs with pixel 0 in the lowest bits."""
    v = np.asarray(raw_line, dtype=np.int64).reshape(-1)
    if v.size % 4:
        raise ValueError(f"raw10_pack: line length {v.size} is not a multiple of 4")
    if v.size and (v.min() < 0 or v.max() > 1023):
        raise ValueError("raw10_pack: pixel values must be in 0..1023")
    groups = v.reshape(-1, 4)
    out = np.empty((groups.shape[0], 5), dtype=np.uint8)
    out[:, :4] = groups >> 2
    out[:, 4] = ((groups & 3) << np.array([0, 2, 4, 6])).sum(axis=1)
    return out.tobytes()


def raw10_unpack(data):
    """Inverse of `raw10_pack`: uint16 pixels from RAW10 bytes."""
    b = np.frombuffer(bytes(data), dtype=np.uint8).astype(np.uint16)
    if b.size % 5:
        raise ValueError(f"raw10_unpack: {b.size} bytes is not a multiple of 5")
    groups = b.reshape(-1, 5)
    low = (groups[:, 4:5] >> np.array([0, 2, 4, 6], dtype=np.uint16)) & 3
    return ((groups[:, :4] << 2) | low).reshape(-1).astype(np.uint16)
