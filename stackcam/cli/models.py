"""The one model registry: what a model name means, in every command.

A MODEL argument is a .tflite/.onnx file or a zoo name; `prepare_model` turns it into the lowered int8 graph the
die runs, compiled for a configuration, with its ROM image. `compile`, `run`, `simulate`, `build`, `host` and
`bench` all resolve names here, so a name means the same network (same shapes, same weights) everywhere.

Quantized graphs are cached as data: the int8 graph as a .tflite file (the toolchain's own export, read back
with its importer), in ``$STACKCAM_CACHE/models`` (else build/cache/models in the source tree), keyed by a
SHA-256 of everything that produced it: the name, the seed, the calibration choice, the model file's bytes and
the toolchain's sources. The graph is always read back from those bytes, cold or warm, so a cached run and a
fresh one are identical.
"""

import hashlib
import os
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from stackcam.quant.graph import ModelError

__all__ = ["MODEL_HELP", "ZOO_PREFIX", "PreparedModel", "model_graph", "prepare_model", "cache_key"]

ZOO_PREFIX = "zoo:"
MODEL_HELP = ("a .tflite/.onnx file (a float model needs --calib DIR or --calib-photos) or a zoo name: "
              "zoo:blazeface (BlazeFace short-range, int8 by our PTQ; needs a 256x256 frame as in the demo and "
              "imx500 presets), zoo:mobilenet_v1_<alpha>_<resolution>[_<classes>] (seeded weights, int8 by our "
              "PTQ, 1000 classes unless given, e.g. zoo:mobilenet_v1_0.25_96_2), first-light (zoo:first-light: one "
              "3x3 stride-2 ReLU6 conv to 8 channels with seeded weights, sized for the preset's input)")
_REGISTRY_VERSION = 1      # bump when what a name means changes


@dataclass
class PreparedModel:
    """A model compiled for one configuration: the graph the compiler took, its output and the ROM image."""

    name: str
    graph: object          # the lowered int8 Graph
    compiled: object       # quant.compiler.CompiledModel
    rom: bytes
    calibration: str = ""  # how the float input was normalized for calibration ("" for an int8 model)

    @property
    def io(self):
        return self.compiled.io

    @property
    def fingerprint(self):
        """The die's model fingerprint: the CRC-32 of the image without its trailing CRC."""
        return zlib.crc32(self.rom[:-4])


def _cache_dir():
    from stackcam.quant.zoo.blazeface import cache_dir
    return cache_dir() / "models"


def _toolchain_digest():
    import stackcam.quant as quant
    h = hashlib.sha256()
    root = Path(quant.__file__).parent
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def cache_key(model, seed=0, calib=None, calib_photos=False, normalization=None):
    """SHA-256 of everything the quantized graph of `model` comes from (calibration files and the input
    normalization included)."""
    h = hashlib.sha256(f"{_REGISTRY_VERSION}|{model}|{seed}|{calib_photos}|{_toolchain_digest()}".encode())
    path = Path(str(model))
    if not str(model).startswith(ZOO_PREFIX) and path.is_file():
        h.update(hashlib.sha256(path.read_bytes()).digest())
    if normalization is not None:
        h.update(b"normalization " + normalization.key().encode())
    for c in _calib_list(calib):
        h.update(b"calibration source")
        c = Path(c)
        if c.is_file():
            h.update(c.name.encode() + hashlib.sha256(c.read_bytes()).digest())
        for f in sorted(c.rglob("*")) if c.is_dir() else []:
            if f.is_file():
                h.update(str(f.relative_to(c)).encode() + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def _calib_list(calib):
    if calib is None:
        return []
    return [str(c) for c in calib] if isinstance(calib, (list, tuple)) else [str(calib)]


def calibration_text(model, calib=None, normalization=None):
    """What the compile report says about the calibration input of a float model."""
    from stackcam.quant.calib import Normalization, is_npy_source

    src = _calib_list(calib)
    if src and is_npy_source(src):
        return f"preprocessed .npy tensors taken as-is ({', '.join(src)})"
    where = f"images in {src[0]}" if src else "the scikit-image photos"
    return f"{where}, {(normalization or Normalization()).describe()}"


def _zoo_float(name, seed):
    """(float Graph, calibration input range) of a zoo name."""
    spec = name[len(ZOO_PREFIX):]
    if spec == "blazeface":
        from stackcam.quant.zoo.blazeface import blazeface_float_graph
        return blazeface_float_graph()
    if spec.startswith("mobilenet_v1"):
        from stackcam.quant.zoo import mobilenet_v1
        parts = spec.split("_")[2:]
        try:
            if len(parts) > 3:
                raise ValueError
            alpha = float(parts[0]) if parts else 1.0
            resolution = int(parts[1]) if len(parts) > 1 else 224
            classes = int(parts[2]) if len(parts) > 2 else 1000
        except ValueError:
            raise ModelError(f"{name}: write zoo:mobilenet_v1_<alpha>_<resolution>[_<classes>], e.g. "
                             f"zoo:mobilenet_v1_1.0_224 or zoo:mobilenet_v1_0.25_96_2") from None
        if not (0 < alpha <= 4 and 32 <= resolution <= 1024 and 1 <= classes <= 100_000):
            raise ModelError(f"{name}: alpha in (0, 4], resolution 32..1024 and 1..100000 classes")
        return mobilenet_v1(alpha, resolution, classes, seed=seed)
    raise ModelError(f"{name}: unknown zoo model; choose zoo:blazeface or "
                     f"zoo:mobilenet_v1_<alpha>_<resolution>[_<classes>]")


def _quantize(name, calib=None, calib_photos=False, seed=0, config=None, normalization=None):
    """The float-or-int8 source graph of MODEL, quantized to int8 when it is float."""
    from stackcam.quant.calib import calibration_set
    from stackcam.quant.importer import load_model
    from stackcam.quant.ptq import quantize_graph

    zoo = str(name).startswith(ZOO_PREFIX)
    if zoo:
        graph = _zoo_float(str(name), seed)
    else:
        path = Path(name)
        if not path.is_file():
            raise ModelError(f"{name}: no such model file")
        graph = load_model(path)
    if graph.is_quantized():
        return graph
    if not zoo and calib is None and not calib_photos:
        raise ModelError(f"{name} is a float model: give --calib DIR or --calib-photos to quantize it")
    if len(graph.inputs) != 1:
        raise ModelError(f"{name}: calibration takes models with one image input, this one has "
                         f"{len(graph.inputs)}")
    if config is not None:
        # The cheap check first: int8 weights take a byte each; calibrating a model that cannot fit is wasted.
        from stackcam.quant.zoo import count_weights
        need, have = count_weights(graph), config.weight_banks * config.sram_bank_bytes
        if need > have:
            raise ModelError(f"model '{name}' does not fit config '{config.name}': its {need:,} int8 weights "
                             f"alone need more than the {have:,} B of weight SRAM")
    shape = graph.tensor(graph.inputs[0]).shape
    if normalization is None:
        samples = calibration_set(shape, source=calib)
        input_range = (-1.0, 1.0) if zoo else None
    else:
        # An input normalization stated by the user: the input quantization covers every value it can give.
        samples = calibration_set(shape, source=calib, normalize=normalization)
        input_range = normalization.value_range(int(shape[-1]))
    if not samples:
        raise ModelError(f"{calib}: no calibration images found")
    # Zoo networks take images in [-1, 1]; their input quantization covers that whole range.
    return quantize_graph(graph, samples, **({"input_range": input_range} if input_range else {}))


def _int8_core(graph):
    from stackcam.quant import lower as lowering
    return lowering.int8_core(lowering.lower(graph))


def model_graph(model, config=None, seed=0, calib=None, calib_photos=False, log=None, normalization=None):
    """The lowered full-int8 Graph of MODEL (a path or a zoo name), as the die runs it.

    `config` is needed only for first-light (sized for the preset's input). Raises ModelError (one line).
    """
    from stackcam.quant.export import export_tflite
    from stackcam.quant.importer import load_model

    model = str(model)
    if model in ("first-light", "zoo:first-light"):
        from stackcam.quant.zoo.firstlight import first_light_graph
        if config is None:
            raise ModelError("first-light is sized for a configuration: give --config")
        return first_light_graph(config.input_height, config.input_width, seed)
    if not model.startswith(ZOO_PREFIX):
        path = Path(model)
        if not path.is_file():
            raise ModelError(f"{model}: no such model file")
        graph = load_model(path)
        if graph.is_quantized():
            return _int8_core(graph)            # nothing to cache: reading an int8 file is quick
    key = cache_key(model, seed, calib, calib_photos, normalization)
    cache = _cache_dir() / f"{key[:32]}.tflite"
    name = (model if model.startswith(ZOO_PREFIX) else Path(model).stem) + ".tflite"    # the importer takes the stem
    if cache.is_file():
        try:
            return _int8_core(load_model(cache.read_bytes(), name=name))
        except ModelError:
            cache.unlink(missing_ok=True)       # a damaged cache file: made again below
    if log:
        log(f"quantizing and lowering {model} (cached after the first time)...")
    data = export_tflite(_int8_core(_quantize(model, calib, calib_photos, seed, config, normalization)))
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=".", suffix=".tflite")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, cache)
    except OSError:
        pass                                    # a read-only cache only costs time
    # Read back from the bytes, as a warm run does: cold and warm runs give the same graph.
    return _int8_core(load_model(data, name=name))


def prepare_model(model, config, seed=0, calib=None, calib_photos=False, log=None, normalization=None):
    """MODEL compiled for `config` (a DieConfig): a PreparedModel. Raises ModelError (one line) for a model that
    cannot be read, is float without calibration, uses an operator the die lacks or does not fit."""
    from stackcam.quant.compiler import compile_graph
    from stackcam.quant.romimage import build_rom

    graph = model_graph(model, config, seed, calib, calib_photos, log, normalization)
    compiled = compile_graph(graph, config)
    return PreparedModel(name=str(model), graph=graph, compiled=compiled, rom=build_rom(compiled),
                         calibration=_calibration_used(model, calib, normalization))


def _calibration_used(model, calib, normalization):
    """The calibration text for a model quantized by our PTQ ("" for an int8 file and first-light)."""
    from stackcam.quant.importer import load_model

    model = str(model)
    if model in ("first-light", "zoo:first-light"):
        return ""
    if not model.startswith(ZOO_PREFIX):
        try:
            if load_model(Path(model)).is_quantized():
                return ""
        except ModelError:
            return ""
    return calibration_text(model, calib, normalization)


def add_model_arguments(p, default=None):
    """MODEL (an option with `default`, else positional) and the options that say how it is made int8."""
    if default is None:
        p.add_argument("model", metavar="MODEL", help=f"the network: {MODEL_HELP}")
    else:
        p.add_argument("--model", default=default, help=f"the network (default {default}): {MODEL_HELP}")
    cal = p.add_mutually_exclusive_group()
    cal.add_argument("--calib", metavar="DIR_or_FILES", default=None, nargs="+",
                     help="a directory of calibration images (for a float model), or preprocessed .npy tensors "
                     "(files, or a directory of them) taken as-is")
    cal.add_argument("--calib-photos", action="store_true",
                     help="calibrate a float model on the photos that ship with scikit-image")
    p.add_argument("--input-range", metavar="LO,HI", default=None,
                   help="calibration photos' pixels [0, 255] map linearly to [LO, HI] (default -1,1)")
    p.add_argument("--input-mean", metavar="M[,M,M]", default=None,
                   help="per-channel mean subtracted from pixels in [0, 255] (with --input-std: (x - mean) / std)")
    p.add_argument("--input-std", metavar="S[,S,S]", default=None,
                   help="per-channel standard deviation pixels in [0, 255] are divided by")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the zoo networks' and first-light's random weights (default 0)")


def prepare_from_args(args, config, log=None):
    """The PreparedModel the parsed arguments name, for `config`."""
    return prepare_model(args.model, config, seed=args.seed, calib=args.calib, calib_photos=args.calib_photos,
                         log=log, normalization=normalization_from_args(args))


def normalization_from_args(args):
    """The Normalization the options state, or None when none was given (the model's default: [-1, 1])."""
    from stackcam.quant.calib import parse_normalization

    r, m, s = (getattr(args, k, None) for k in ("input_range", "input_mean", "input_std"))
    if r is None and m is None and s is None:
        return None
    return parse_normalization(r, m, s)
