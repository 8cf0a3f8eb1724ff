"""Calibration images for post-training quantization: real photos from skimage.data or a directory of files."""

from pathlib import Path

import numpy as np

from .graph import ModelError

__all__ = ["CalibrationError", "PHOTOS", "NORMALIZATIONS", "IMAGE_SUFFIXES", "photo", "prepare_image", "photo_set",
           "directory_images", "calibration_set"]

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

    if normalize not in NORMALIZATIONS:
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

    `source` None takes the skimage photos `names`; otherwise it is a directory of image files (`--calib DIR`).
    """
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
