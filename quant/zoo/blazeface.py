"""BlazeFace short-range face detector, read from the mediapipe==0.10.14 wheel fetched with pip into a cache.

The model (`face_detection_short_range.tflite`, MediaPipe, Apache-2.0 like the rest of the mediapipe wheel) takes a
128x128 RGB image in [-1, 1] and gives 896 SSD anchors' boxes ("regressors", [1, 896, 16]) and face logits
("classificators", [1, 896, 1]); quant.detect turns those into faces.
"""

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from stackcam.errors import StackcamError

from ..graph import ModelError

__all__ = ["MEDIAPIPE_VERSION", "MODEL_MEMBER", "MODEL_SHA256", "MODEL_LICENSE", "INPUT_SIZE", "FetchError",
           "pypi_reachable", "cache_dir", "fetch_wheel", "blazeface_tflite", "blazeface_float_graph",
           "blazeface_float_tflite", "blazeface_input", "blazeface_int8", "find_faces", "face_report"]

MEDIAPIPE_VERSION = "0.10.14"
MODEL_MEMBER = "mediapipe/modules/face_detection/face_detection_short_range.tflite"
# The file inside the 0.10.14 wheels: a changed hash means a different model, so every number we report moves.
MODEL_SHA256 = "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"
MODEL_LICENSE = "Apache-2.0"
INPUT_SIZE = 128

# One fixed wheel (CPython 3.11, manylinux x86_64) whatever machine asks: the model inside is the same in every
# wheel, and a pinned platform means pip never falls back to building mediapipe from source.
_PIP_PLATFORM = ("--only-binary=:all:", "--platform", "manylinux2014_x86_64", "--python-version", "3.11",
                 "--implementation", "cp")


class FetchError(StackcamError, RuntimeError):
    """The mediapipe wheel could not be fetched or does not hold the expected model; the message is one line."""


def pypi_reachable(timeout=5.0):
    """True when a TCP connection to pypi.org:443 opens: tells a missing network from a broken download."""
    import socket

    try:
        socket.create_connection(("pypi.org", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def cache_dir():
    """Where fetched wheels and models live: $STACKCAM_CACHE, else build/cache in the source tree (ignored by git),
    else ~/.cache/stackcam for an installed (non-editable) package."""
    env = os.environ.get("STACKCAM_CACHE")
    if env:
        return Path(env)
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file():
        return root / "build" / "cache"
    return Path.home() / ".cache" / "stackcam"


def fetch_wheel(cache=None):
    """Path of the mediapipe wheel in the cache, downloaded with `pip download` the first time."""
    wheels = Path(cache or cache_dir()) / "wheels"
    pattern = f"mediapipe-{MEDIAPIPE_VERSION}-*.whl"
    found = sorted(wheels.glob(pattern))
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    # Download into a private folder and move the finished wheel in, so concurrent test workers never see a
    # half-written file.
    with tempfile.TemporaryDirectory(dir=wheels, prefix=".download-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", f"mediapipe=={MEDIAPIPE_VERSION}", "--no-deps",
               *_PIP_PLATFORM, "-d", tmp, "--quiet", "--disable-pip-version-check"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise FetchError(f"could not run pip to download mediapipe=={MEDIAPIPE_VERSION} (BlazeFace): "
                             f"{exc}") from None
        got = sorted(Path(tmp).glob(pattern))
        if proc.returncode != 0 or not got:
            lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
            why = lines[-1] if lines else f"pip exited with status {proc.returncode}"
            raise FetchError(f"could not download mediapipe=={MEDIAPIPE_VERSION} from PyPI (BlazeFace comes from "
                             f"its wheel): {why}")
        dest = wheels / got[0].name
        os.replace(got[0], dest)
    return dest


def blazeface_tflite(cache=None):
    """The original face_detection_short_range.tflite bytes (float16 weights behind DEQUANTIZE ops)."""
    cache = Path(cache or cache_dir())
    model = cache / "models" / Path(MODEL_MEMBER).name
    if model.is_file():
        data = model.read_bytes()
        if hashlib.sha256(data).hexdigest() == MODEL_SHA256:
            return data
    wheel = fetch_wheel(cache)
    try:
        with zipfile.ZipFile(wheel) as z:
            data = z.read(MODEL_MEMBER)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise FetchError(f"{wheel}: not a mediapipe wheel holding {MODEL_MEMBER} ({exc}); delete it to "
                         f"download again") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != MODEL_SHA256:
        raise FetchError(f"{wheel}: {MODEL_MEMBER} has sha256 {digest}, expected {MODEL_SHA256}")
    model.parent.mkdir(parents=True, exist_ok=True)
    tmp = model.with_name(f".{model.name}.{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, model)
    return data


def blazeface_float_graph(cache=None):
    """BlazeFace as a float32 Graph: the importer folds the float16 weights (DEQUANTIZE of constants)."""
    from ..importer import load_tflite

    return load_tflite(blazeface_tflite(cache), name="face_detection_short_range")


def blazeface_float_tflite(cache=None):
    """BlazeFace as a float32 .tflite without DEQUANTIZE ops, which LiteRT's calibrator accepts."""
    from ..export import export_tflite

    return export_tflite(blazeface_float_graph(cache))


def blazeface_input(image):
    """A photo (uint8 HxWx3 or gray) as BlazeFace's input: the whole image resized to 128x128, [-1, 1], float32
    [1, 128, 128, 3]. (MediaPipe letterboxes to keep the aspect ratio; the square photos here need no letterbox.)"""
    from ..calib import prepare_image

    return prepare_image(image, INPUT_SIZE, INPUT_SIZE, 3, "[-1,1]")[None]


def blazeface_int8(calib=None, cache=None, **ptq_options):
    """BlazeFace quantized to int8 by our post-training quantization.

    `calib`: calibration inputs ([1, 128, 128, 3] float32 arrays), by default the skimage photos of quant.calib.
    The input quantization covers the whole [-1, 1] range the model is fed.
    """
    from ..calib import calibration_set
    from ..ptq import quantize_graph

    graph = blazeface_float_graph(cache)
    if calib is None:
        calib = calibration_set((1, INPUT_SIZE, INPUT_SIZE, 3))
    if not calib:
        raise ModelError("BlazeFace quantization needs calibration images; got none")
    ptq_options.setdefault("input_range", (-1.0, 1.0))
    return quantize_graph(graph, calib, **ptq_options)


def _output_pair(graph, outputs):
    """(regressors, classificators) and their (scale, zero point) pairs (None for float), told apart by shape."""
    by_last = {graph.tensor(n).shape[-1]: (o, graph.tensor(n).quant) for n, o in zip(graph.outputs, outputs)}
    if set(by_last) != {16, 1}:
        raise ModelError(f"not a BlazeFace graph: outputs {[graph.tensor(n).shape for n in graph.outputs]}")
    (r, rq), (c, cq) = by_last[16], by_last[1]
    quant = None if rq is None else (rq.scalar(), cq.scalar())
    return r, c, quant


def find_faces(graph, image, engine="litert", min_score=0.5, config=None):
    """Faces BlazeFace (float or int8 Graph) finds in a photo, best first, boxes in the photo's pixels.

    engine "litert" runs the exported .tflite on LiteRT's BUILTIN_REF kernels, "executor" quant.executor's
    run_graph, "program" (int8 only) what `stackcam run --engine ref` runs: the graph lowered and compiled for
    `config` (a DieConfig), its ROM image run by quant.golden.execute. An int8 graph gets the photo quantized
    with its input's scale and zero point, and its int8 outputs are dequantized on the host (quant.detect), as
    the die's outputs would be.
    """
    from ..detect import detect_faces
    from ..executor import run_graph
    from ..export import export_tflite
    from ..litert import run_reference
    from ..ref import quantize_float

    x = blazeface_input(image)
    t = graph.tensor(graph.inputs[0])
    if t.dtype == "int8":
        x = quantize_float(x, *t.quant.scalar())
    if engine == "litert":
        outputs = run_reference(export_tflite(graph), [x])
    elif engine == "executor":
        outputs = run_graph(graph, [x])
    elif engine == "program" and t.dtype == "int8" and config is not None:
        outputs = _run_program(graph, x, config)
    else:
        raise ValueError(f"find_faces: engine must be 'litert', 'executor' or (int8, with a config) 'program', "
                         f"got {engine!r}")
    r, c, quant = _output_pair(graph, outputs)
    return detect_faces(r, c, image.shape[:2], min_score=min_score, quant=quant)


def _run_program(graph, x, config):
    """The outputs the compiled program gives on the golden executor (what `stackcam run --engine ref` computes)
    for the int8 `graph` compiled for `config` (a DieConfig) on int8 input `x`, in the graph's output order."""
    from .. import lower as lowering
    from ..compiler import compile_graph
    from ..golden import execute
    from ..romimage import build_rom

    core = lowering.int8_core(lowering.lower(graph))
    compiled = compile_graph(core, config)
    return execute(build_rom(compiled), config, np.asarray(x).reshape(tuple(compiled.io["input"]["hwc"])))


def face_report(names=("astronaut", "coffee", "chelsea", "camera"), calib=None, cache=None, engine="litert"):
    """Best face per skimage photo from the float model and from our int8 model (run by `engine`, see
    find_faces): [(photo, float Detection, int8 Detection)]. Scores are taken over all 896 anchors (no
    threshold), so a photo without a face shows how far below 0.5 it stays."""
    from ..calib import photo

    float_graph = blazeface_float_graph(cache)
    int8_graph = blazeface_int8(calib, cache)
    rows = []
    for name in names:
        img = photo(name)
        rows.append((name, find_faces(float_graph, img, min_score=None)[0],
                     find_faces(int8_graph, img, min_score=None, engine=engine)[0]))
    return rows

