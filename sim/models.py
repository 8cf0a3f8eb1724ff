"""The networks the main job and the benchmark run: resolved by name, quantized, lowered and compiled."""

import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path

from stackcam.quant.compiler import compile_graph
from stackcam.quant.romimage import build_rom

__all__ = ["PreparedModel", "prepare_model", "MODEL_HELP"]

MODEL_HELP = ("zoo:blazeface (BlazeFace short-range, int8 by our PTQ; the default: its 128x128 input needs a "
              "frame of at least 256x256, as in the demo and imx500 presets), first-light (one 3x3 s2 ReLU6 conv "
              "with seeded weights, sized for the preset's input), "
              "zoo:mobilenet_v1_<alpha>_<resolution>[_<classes>] (seeded weights, 1000 classes unless given), or a "
              ".tflite/.onnx file (float models are calibrated on the skimage photos)")


@dataclass
class PreparedModel:
    name: str
    graph: object          # the lowered int8 Graph the compiler took
    compiled: object       # quant.compiler.CompiledModel
    rom: bytes

    @property
    def io(self):
        return self.compiled.io


def _cache_dir():
    import os
    return Path(os.environ.get("STACKCAM_CACHE", Path.cwd() / "build" / "cache")) / "models"


def _graph(name, config, seed):
    from stackcam.quant import lower as lowering
    if name == "first-light":
        from stackcam.quant.firstlight import first_light_graph
        return first_light_graph(config, seed)
    if name == "zoo:blazeface":
        from stackcam.quant.zoo.blazeface import blazeface_int8
        return lowering.int8_core(lowering.lower(blazeface_int8()))
    parts = name.split("_")
    if name.startswith("zoo:mobilenet_v1_") and len(parts) == 5:
        # zoo:mobilenet_v1_<alpha>_<resolution>_<classes>, e.g. the 2-class person detector 0.25_96_2.
        from stackcam.quant.calib import calibration_set
        from stackcam.quant.graph import ModelError
        from stackcam.quant.ptq import quantize_graph
        from stackcam.quant.zoo import mobilenet_v1
        try:
            alpha, res, classes = float(parts[2]), int(parts[3]), int(parts[4])
        except ValueError:
            raise ModelError(f"{name}: write zoo:mobilenet_v1_<alpha>_<resolution>[_<classes>]") from None
        graph = mobilenet_v1(alpha, res, classes, seed=seed)
        samples = calibration_set(graph.tensor(graph.inputs[0]).shape)
        return lowering.int8_core(lowering.lower(quantize_graph(graph, samples, input_range=(-1.0, 1.0))))
    from stackcam.quant.cmd_compile import load_for_compile
    return load_for_compile(name, calib_photos=True)


def prepare_model(name, config, seed=0, log=None):
    """Compile model `name` for `config` (quantized graphs are cached on disk: PTQ takes seconds)."""
    key = hashlib.sha256(f"{name}|{seed}|{Path(name).stat().st_mtime if Path(name).is_file() else ''}".encode())
    cache = _cache_dir() / f"{key.hexdigest()[:16]}.pickle"
    graph = None
    if name != "first-light" and cache.exists():
        try:
            graph = pickle.loads(cache.read_bytes())
        except Exception:
            graph = None
    if graph is None:
        if log and name != "first-light":
            log(f"quantizing and lowering {name} (cached after the first time)...")
        graph = _graph(name, config, seed)
        if name != "first-light":
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_bytes(pickle.dumps(graph))
    compiled = compile_graph(graph, config)
    return PreparedModel(name=name, graph=graph, compiled=compiled, rom=build_rom(compiled))
