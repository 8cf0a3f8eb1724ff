"""Calibration images for post-training quantization: real photos from skimage.data or a directory of files."""

from pathlib import Path

import numpy as np

from .graph import ModelError

__all__ = ["CalibrationError", "PHOTOS", "NORMALIZATIONS", "IMAGE_SUFFIXES", "photo", "prepare_image", "photo_set",
           "directory_images", "calibration_set", "Normalization", "parse_normalization", "npy_tensors",
           "is_npy_source"]

# Real photographs that ship inside scikit-image's wheel (no download): street, portrait, pet, food, launch pad,
# coins, a stained-tissue micrograph and a Hubble field. skimage.data's other entries are textures (brick, grass,
# gravel), text and pages, drawings, moon/clock/retina close-ups, or need the optional pooch download (eagle,
# lily, skin); cat() is the same picture as chelsea().
PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "rocket", "coins", "immunohistochemistry",
          "hubble_deep_field")

# How a model wants its float input, as (offset, scale) applied to pixel values in [0, 255]:
# x = pixel * scale + offset. MobileNet V1 and BlazeFace were trained on [-1, 1].
NORMALIZATIONS = {
    "[-1,1]": (-1.0, 2.0 / 255.0),
    "[0,1]": (0.0, 1.0 / 255.0),
    "[0,255]": (0.0, 1.0),
}

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".ppm", ".pgm")


class CalibrationError(ModelError):
    """Calibration data the toolchain cannot use; the message is one line naming the file or directory."""


class Normalization:
    """How pixels in [0, 255] become the model's float input: a linear map into [lo, hi] (`--input-range`), or
    per channel (pixel - mean) / std (`--input-mean`, `--input-std`)."""

    def __init__(self, lo=-1.0, hi=1.0, mean=None, std=None):
        self.lo, self.hi = float(lo), float(hi)
        self.mean = None if mean is None else np.asarray(mean, np.float64).reshape(-1)
        self.std = None if std is None else np.asarray(std, np.float64).reshape(-1)

    @property
    def standardized(self):
        return self.mean is not None or self.std is not None

    def _mean_std(self, channels):
        mean = np.zeros(1) if self.mean is None else self.mean
        std = np.ones(1) if self.std is None else self.std
        for what, v in (("--input-mean", mean), ("--input-std", std)):
            if v.size not in (1, channels):
                raise CalibrationError(f"{what} has {v.size} values; the model input has {channels} channels "
                                       f"(give 1 or {channels})")
        return np.broadcast_to(mean, (channels,)), np.broadcast_to(std, (channels,))

    def apply(self, pixels):
        """float32 model input from float pixels in [0, 255] (H, W, C)."""
        if self.standardized:
            mean, std = self._mean_std(pixels.shape[-1])
            return ((pixels - mean) / std).astype(np.float32)
        return (pixels * ((self.hi - self.lo) / 255.0) + self.lo).astype(np.float32)

    def value_range(self, channels):
        """(min, max) of the real values any pixel can give."""
        if self.standardized:
            mean, std = self._mean_std(channels)
            ends = np.concatenate([(0.0 - mean) / std, (255.0 - mean) / std])
            return float(ends.min()), float(ends.max())
        return self.lo, self.hi

    def describe(self):
        if self.standardized:
            def fmt(v, default):
                return ",".join(f"{x:g}" for x in (v if v is not None else [default]))
            return f"pixels in [0, 255] standardized as (x - mean) / std, mean {fmt(self.mean, 0)}, " \
                   f"std {fmt(self.std, 1)}"
        return f"pixels scaled to [{self.lo:g}, {self.hi:g}]"

    def key(self):
        return self.describe()


def _floats(text, what):
    try:
        values = [float(v) for v in str(text).replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise CalibrationError(f"{what} {text!r}: not a comma-separated list of numbers") from None
    if not values or not all(np.isfinite(values)):
        raise CalibrationError(f"{what} {text!r}: give finite numbers")
    return values


def parse_normalization(input_range=None, mean=None, std=None):
    """A Normalization from the command-line strings ("LO,HI"; per-channel "M1,M2,M3"), checked: LO < HI, no
    standard deviation 0 (or negative), not a range together with a mean/std."""
    if input_range is not None and (mean is not None or std is not None):
        raise CalibrationError("give either --input-range or --input-mean/--input-std, not both")
    if mean is not None or std is not None:
        m = _floats(mean, "--input-mean") if mean is not None else None
        sd = _floats(std, "--input-std") if std is not None else None
        if sd is not None and any(v <= 0 for v in sd):
            raise CalibrationError(f"--input-std {std!r}: every standard deviation must be above 0")
        if m is not None and sd is not None and len(m) != len(sd) and 1 not in (len(m), len(sd)):
            raise CalibrationError(f"--input-mean has {len(m)} values and --input-std {len(sd)}")
        return Normalization(mean=m, std=sd)
    if input_range is None:
        return Normalization()
    v = _floats(input_range, "--input-range")
    if len(v) != 2:
        raise CalibrationError(f"--input-range {input_range!r}: give LO,HI")
    if not v[0] < v[1]:
        raise CalibrationError(f"--input-range {input_range!r}: LO must be below HI")
    return Normalization(v[0], v[1])


def npy_tensors(paths, shape):
    """Preprocessed calibration tensors (.npy files, or folders of them) taken as-is: float32 [1, H, W, C] each.
    A file may hold one tensor ([H, W, C] or [1, H, W, C]) or a batch [N, H, W, C]."""
    files = []
    for p in (paths if isinstance(paths, (list, tuple)) else [paths]):
        p = Path(p)
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() == ".npy")
        elif p.is_file():
            files.append(p)
        else:
            raise CalibrationError(f"calibration file '{p}' does not exist")
    want = tuple(int(d) for d in shape[1:])
    out = []
    for f in files:
        try:
            a = np.load(f, allow_pickle=False)
        except Exception as exc:  # numpy raises ValueError/OSError/UnpicklingError on a bad file
            raise CalibrationError(f"cannot read calibration tensor '{f}': {str(exc).splitlines()[0]}") from None
        if a.shape == want:
            a = a[None]
        if a.ndim != 4 or tuple(a.shape[1:]) != want:
            raise CalibrationError(f"calibration tensor '{f}' has shape {list(a.shape)}; the model input is "
                                   f"{[1, *want]}")
        if not np.issubdtype(a.dtype, np.number) or not np.all(np.isfinite(a)):
            raise CalibrationError(f"calibration tensor '{f}' holds non-finite or non-numeric values")
        out += [a[i:i + 1].astype(np.float32) for i in range(a.shape[0])]
    if not out:
        raise CalibrationError(f"no .npy calibration tensors in {', '.join(str(p) for p in files) or str(paths)}")
    return out


def photo(name):
    """A photo from skimage.data by name, as uint8 HxW or HxWxC."""
    import skimage.data

    if name not in PHOTOS:
        raise CalibrationError(f"unknown calibration photo {name!r}; choose from {', '.join(PHOTOS)}")
    return np.asarray(getattr(skimage.data, name)())


def prepare_image(image, height, width, channels=3, normalize="[-1,1]"):
    """Resize a uint8 (or float in [0, 1]) image to HxW (the whole image, no crop) and normalize it.

    Returns float32 [height, width, channels]. Gray images are replicated to RGB and RGB(A) images reduced to
    gray as `channels` asks; alpha is dropped.
    """
    from skimage.color import gray2rgb, rgb2gray
    from skimage.transform import resize

    if not isinstance(normalize, Normalization) and normalize not in NORMALIZATIONS:
        raise CalibrationError(f"unknown normalization {normalize!r}; choose from {', '.join(NORMALIZATIONS)}")
    img = np.asarray(image)
    if img.dtype == np.bool_:
        img = img.astype(np.uint8) * 255
    if np.issubdtype(img.dtype, np.floating):
        img = img * 255.0               # skimage's float convention is [0, 1]
    elif img.dtype == np.uint16:
        img = img / 257.0               # 16-bit files: 65535 -> 255
    img = img.astype(np.float64)
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    if img.ndim == 3 and img.shape[2] in (1, 2):     # gray, or gray + alpha
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise CalibrationError(f"image of shape {img.shape} is neither gray, RGB nor RGBA")
    if channels == 3 and img.ndim == 2:
        img = gray2rgb(img)
    elif channels == 1 and img.ndim == 3:
        img = rgb2gray(img / 255.0) * 255.0
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] != channels:
        raise CalibrationError(f"cannot make a {channels}-channel input from an image of shape {img.shape}")
    # anti_aliasing: the photos are 3-8x larger than the network input; plain sampling would alias.
    img = resize(img, (height, width, channels), order=1, mode="edge", anti_aliasing=True, preserve_range=True)
    if isinstance(normalize, Normalization):
        return normalize.apply(np.clip(img, 0.0, 255.0))
    offset, scale = NORMALIZATIONS[normalize]
    return (np.clip(img, 0.0, 255.0) * scale + offset).astype(np.float32)


def photo_set(height, width, channels=3, normalize="[-1,1]", names=PHOTOS):
    """The named skimage photos prepared as network inputs: a list of float32 [1, H, W, C] arrays."""
    return [prepare_image(photo(n), height, width, channels, normalize)[None] for n in names]


def directory_images(directory):
    """Every image file in `directory` (sorted by name, not recursive) as [(path, array)]."""
    from skimage.io import imread

    path = Path(directory)
    if not path.is_dir():
        raise CalibrationError(f"calibration directory '{path}' does not exist or is not a directory")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CalibrationError(f"calibration directory '{path}' holds no image files ({' '.join(IMAGE_SUFFIXES)})")
    images = []
    for f in files:
        try:
            img = np.asarray(imread(f))
        except Exception as exc:  # imageio/PIL raise many types; all mean "not a readable image"
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CalibrationError(f"cannot read calibration image '{f}': {first}") from None
        if img.ndim == 4:               # animated GIF / multi-page TIFF: the first frame
            img = img[0]
        images.append((f, img))
    return images


def calibration_set(shape, source=None, normalize="[-1,1]", names=PHOTOS):
    """Calibration inputs for a model input of NHWC `shape`: a list of float32 [1, H, W, C] arrays.

    `source` None takes the skimage photos `names`; otherwise it is a directory of image files (`--calib DIR`);
    .npy files (or a directory holding only .npy files) are preprocessed tensors taken as-is (npy_tensors).
    `normalize`: a NORMALIZATIONS name or a Normalization.
    """
    if source is not None and is_npy_source(source):
        return npy_tensors(source, shape)
    if isinstance(source, (list, tuple)):
        if len(source) != 1:
            raise CalibrationError("several --calib paths must all be .npy tensors")
        source = source[0]
    if len(shape) != 4 or shape[0] != 1:
        raise CalibrationError(f"calibration needs an image input of shape [1, H, W, C], got {list(shape)}")
    _, h, w, c = (int(d) for d in shape)
    if c not in (1, 3):
        raise CalibrationError(f"calibration images give 1 or 3 channels; the model input has {c}")
    if source is None:
        return photo_set(h, w, c, normalize, names)
    out = []
    for f, img in directory_images(source):
        try:
            out.append(prepare_image(img, h, w, c, normalize)[None])
        except CalibrationError as exc:
            raise CalibrationError(f"calibration image '{f}': {exc}") from None
    return out


def is_npy_source(source):
    paths = [Path(p) for p in (source if isinstance(source, (list, tuple)) else [source])]
    if all(p.suffix.lower() == ".npy" for p in paths):
        return True
    if len(paths) == 1 and paths[0].is_dir():
        files = [f for f in paths[0].iterdir() if f.is_file()]
        return bool(files) and all(f.suffix.lower() == ".npy" for f in files)
    return False
