"""`stackcam run`: run an int8 model on one input tensor (or a batch) with the golden executor, write an .npz."""

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["register", "cmd_run", "run_model", "ENGINES"]

ENGINES = ("ref", "rtl")


def register(subparsers):
    p = subparsers.add_parser(
        "run", help="run an int8 model on an input tensor (golden reference engine)",
        description="Run a full-integer int8 model (.tflite) on one int8 input tensor in the model's NHWC input "
        "shape (with or without the leading 1), or on a batch [B, H, W, C], and write one int8 array per model "
        "output (output_0, output_1, ...; a leading batch axis when a batch was given). Float QUANTIZE/DEQUANTIZE "
        "ops at the model's edges run on the host: the input is the int8 tensor after them, the outputs the int8 "
        "tensors before them. The ref engine is bit-exact with LiteRT's reference kernels.")
    p.add_argument("model", help="the model: an int8 .tflite")
    p.add_argument("--input", required=True, metavar="IN.npy", help="int8 input tensor (or batch) as .npy")
    p.add_argument("--engine", default="ref", choices=ENGINES,
                   help="ref: the numpy golden executor (default); rtl: the die's NPU in simulation")
    p.add_argument("--config", default="fpga", help="configuration preset (tiny, fpga, imx500; default fpga)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.npz", help="where to write the outputs")
    p.set_defaults(func=cmd_run)


def _user_error():
    """sim.cli.UserError as the running CLI catches it. Under `python -m sim.cli` the CLI module runs as
    __main__, a second copy whose UserError is another class than `import sim.cli` would give."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name == "sim.cli" and hasattr(main, "UserError"):
        return main.UserError
    from sim.cli import UserError
    return UserError


def _prepare(model_path):
    """Load, strip the host-side float edges, check the rest is int8, lower. Raises UserError."""
    UserError = _user_error()
    from .graph import ModelError
    from .importer import load_model
    from .lower import int8_core, lower
    try:
        graph = int8_core(load_model(model_path))
    except ModelError as e:
        raise UserError(str(e)) from None
    floats = [n for n in graph.inputs + graph.outputs if graph.tensor(n).dtype != "int8"]
    if floats or not graph.is_quantized():
        raise UserError(f"{Path(model_path).name} is a float model: quantize it first with calibration images "
                        f"(stackcam compile --calib DIR, i.e. post-training quantization); run takes int8 models")
    if len(graph.inputs) != 1:
        raise UserError(f"{Path(model_path).name} has {len(graph.inputs)} inputs; --input gives one tensor")
    try:
        return lower(graph)
    except ModelError as e:
        raise UserError(str(e)) from None


def _batch(x, shape, path):
    """(list of per-item input arrays, batched?) from the loaded array; UserError on a wrong dtype or shape."""
    UserError = _user_error()
    shape = tuple(shape)
    want = f"int8 {list(shape)}" + (f" (or {list(shape[1:])}, or a batch [B, {', '.join(map(str, shape[1:]))}])"
                                     if shape and shape[0] == 1 else "")
    if x.dtype != np.int8:
        raise UserError(f"{path}: input is {x.dtype}{list(x.shape)}, the model takes {want}")
    if x.shape == shape:
        return [x], False
    if shape and shape[0] == 1 and x.shape == shape[1:]:
        return [x.reshape(shape)], False
    if shape and shape[0] == 1 and x.ndim == len(shape) and x.shape[1:] == shape[1:] and x.shape[0] > 0:
        return [x[i:i + 1] for i in range(x.shape[0])], True
    raise UserError(f"{path}: input has shape {list(x.shape)}, the model takes {want}")


def run_model(graph, items, batched):
    """Run the golden executor on each item; {output_k: array}, batched along a leading axis when asked."""
    from .executor import run_graph
    results = [run_graph(graph, [x]) for x in items]
    out = {}
    for k in range(len(graph.outputs)):
        arrays = [r[k] for r in results]
        if not batched:
            out[f"output_{k}"] = arrays[0]
        elif arrays[0].ndim and arrays[0].shape[0] == 1:
            out[f"output_{k}"] = np.concatenate(arrays, axis=0)     # the model's batch axis becomes B
        else:
            out[f"output_{k}"] = np.stack(arrays)
    return out


def _write_npz(path, arrays):
    """Write atomically: a temp file beside the target, renamed at the end, so a failure leaves nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cmd_run(args):
    from rtl.params import ConfigError, preset

    from .graph import ModelError
    UserError = _user_error()
    t0 = time.time()
    try:
        preset(args.config)                   # an unknown preset is an error even where the engine ignores it
    except ConfigError as e:
        raise UserError(str(e)) from None
    if args.engine == "rtl":
        raise UserError("--engine rtl arrives with the NPU issue (the die's MAC array running compiled programs); "
                        "use --engine ref, which is bit-exact with LiteRT's reference kernels")
    out_path = Path(args.output)
    if out_path.suffix != ".npz":
        raise UserError(f"{out_path}: the output file must end in .npz")
    graph = _prepare(args.model)
    try:
        x = np.load(args.input, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"{args.input}: no such file") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{args.input}: not a readable .npy array ({str(e).splitlines()[0]})") from None
    if not isinstance(x, np.ndarray):
        raise UserError(f"{args.input}: holds several arrays (an .npz?); give one .npy tensor")
    items, batched = _batch(x, graph.tensor(graph.inputs[0]).shape, args.input)
    try:
        arrays = run_model(graph, items, batched)
    except ModelError as e:
        raise UserError(str(e)) from None
    _write_npz(out_path, arrays)
    shapes = ", ".join(f"{k} int8{list(v.shape)}" for k, v in arrays.items())
    print(f"{out_path}: {shapes} from {len(items)} input{'s' if len(items) > 1 else ''} "
          f"(engine ref, {len(graph.ops)} ops, {time.time() - t0:.2f} s)")
    sys.stdout.flush()
    return 0
