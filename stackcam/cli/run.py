"""`stackcam run`: compile a model for a configuration and run the compiled program (golden executor or RTL)."""

import os
import sys
import tempfile
import time
import tokenize
import zipfile
from pathlib import Path

import numpy as np

from stackcam.quant.timing import program_cycles

from . import UserError, config_arg, presets_help
from .models import add_model_arguments, prepare_from_args, prepare_model

__all__ = ["register", "cmd_run", "run_program", "run_rtl", "run_model", "ENGINES", "DEFAULT_CONFIG"]

ENGINES = ("ref", "rtl")
DEFAULT_CONFIG = "imx500"


def register(subparsers):
    p = subparsers.add_parser(
        "run", help="run a model's compiled program on an input tensor (golden executor or the RTL)",
        description="Compile MODEL for a configuration (as stackcam compile does) and run the compiled layer "
        "program, read back from its ROM image, on one int8 input tensor in the model's NHWC input shape (with "
        "or without the leading 1) or on a batch [B, H, W, C]; write one int8 array per model output (output_0, "
        "output_1, ...; a leading batch axis when a batch was given). Float QUANTIZE/DEQUANTIZE ops at the "
        "model's edges run on the host: the input is the int8 tensor after them, the outputs the int8 tensors "
        "before them. A float model is first quantized on calibration images (--calib or --calib-photos). The "
        "ref engine is bit-exact with LiteRT's reference kernels; the rtl engine runs the die in Verilator and "
        "exits with status 3 (writing nothing) when the die refuses a frame.")
    add_model_arguments(p)
    p.add_argument("--input", required=True, metavar="IN.npy", help="int8 input tensor (or batch) as .npy")
    p.add_argument("--engine", default="ref", choices=ENGINES,
                   help="ref: the numpy golden executor running the compiled program (default); rtl: the die's "
                   "NPU in simulation")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=presets_help(DEFAULT_CONFIG))
    p.add_argument("-o", "--output", required=True, metavar="OUT.npz", help="where to write the outputs")
    p.add_argument("--inject-fault", metavar="SRAM:WORD:BIT[@DELAY]", default=None,
                   help="rtl engine only, a simulation feature: flip bit BIT of word WORD of the activation ('act') "
                   "or weight ('weight') SRAM, DELAY cycles (default 0) after the die has taken the first "
                   "input's last beat (bits of the stored word: act 9 per byte lane, the 9th its parity bit; weight "
                   "the bytes, then one parity bit per byte); the die's "
                   "parity check must refuse the frame (exit 3) unless the word is not read after the flip")
    p.set_defaults(func=cmd_run)


def parse_fault(text, config):
    """--inject-fault SRAM:WORD:BIT[@DELAY] -> the fault dict of sim.dierun.run_die (frame 0); UserError if bad."""
    spec, _, delay = text.partition("@")
    parts = spec.split(":")
    usage = f"--inject-fault {text}: write SRAM:WORD:BIT[@DELAY] with SRAM act or weight"
    if len(parts) != 3 or parts[0] not in ("act", "weight") or not all(
            v.isdigit() for v in (parts[1], parts[2], delay or "0")):
        raise UserError(usage)
    sram, word, bit = parts[0], int(parts[1]), int(parts[2])
    depth, width = ((config.act_words, 9 * config.array_cols) if sram == "act" else
                    (config.weight_words, 9 * config.weight_word_bytes))
    if word >= depth or bit >= width:
        raise UserError(f"--inject-fault {text}: the {sram} SRAM of config '{config.name}' has {depth:,} words of "
                        f"{width} bits")
    return {"frame": 0, "sram": sram, "addr": word, "bit": bit, "delay": int(delay or 0)}


def _batch(x, shape, path):
    """(list of per-item input arrays in the model's shape, batched?); UserError on a wrong dtype or shape."""
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


def _collect(results, count, batched):
    """{output_k: array} from per-item output lists, stacked along a leading batch axis when batched."""
    out = {}
    for k in range(count):
        arrays = [r[k] for r in results]
        if not batched:
            out[f"output_{k}"] = arrays[0]
        elif arrays[0].ndim and arrays[0].shape[0] == 1:
            out[f"output_{k}"] = np.concatenate(arrays, axis=0)     # the model's batch axis becomes B
        else:
            out[f"output_{k}"] = np.stack(arrays)
    return out


def run_program(rom, config, items, batched=False):
    """Run the compiled program (ROM image bytes) on each item (int8, in the model's input shape) with the
    golden program executor; {output_k: array}, batched along a leading axis when asked."""
    from stackcam.quant.golden import execute
    from stackcam.quant.romimage import load_rom

    io = load_rom(rom, config).io
    hwc = tuple(io["input"]["hwc"])
    results = [execute(rom, config, np.asarray(x).reshape(hwc)) for x in items]
    return _collect(results, len(io["outputs"]), batched)


def run_rtl(rom, config, items, batched=False, log=None, faults=()):
    """The same contract as `run_program`, computed by the die's RTL in Verilator (sim.dierun.run_tensors);
    DieError when the die refuses a frame. `faults`: SRAM bit flips to inject (sim.dierun.run_die)."""
    from stackcam.quant.romimage import load_rom
    from stackcam.sim.dierun import run_tensors
    results = run_tensors(config, rom, items, log=log, faults=faults)
    return _collect(results, len(load_rom(rom, config).io["outputs"]), batched)


def run_model(model, x, config=DEFAULT_CONFIG, calib=None, calib_photos=False, seed=0):
    """What `stackcam run --engine ref` computes, from Python: MODEL (a file path or a zoo: name) compiled for
    `config` (a preset name or DieConfig), run on `x` (one input or a batch); {output_k: int8 array}."""
    config = config_arg(config) if isinstance(config, str) else config
    prepared = prepare_model(model, config, seed=seed, calib=calib, calib_photos=calib_photos)
    items, batched = _batch(np.asarray(x), prepared.graph.tensor(prepared.graph.inputs[0]).shape, "input")
    return run_program(prepared.rom, config, items, batched)


def _write_npz(path, arrays):
    """Write an .npz np.load reads, atomically (`sim.files.write_atomic`: a failure leaves nothing) and
    reproducibly: np.savez stamps each member with the clock, so the same outputs would give different bytes; here
    every member carries the zip epoch."""
    from stackcam.sim.files import write_atomic

    def fill(f):
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
            for name, value in arrays.items():
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                with z.open(info, "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asarray(value), allow_pickle=False)

    write_atomic(path, fill, binary=True)


def _check_output(path):
    """Refuse, before any work, an output path that cannot be written: a folder, a path through a file, a folder
    where no file can be created (read-only, /proc). The folders that do not exist yet are made at the end; the
    nearest one that exists is where a test file is created and removed."""
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give the .npz file to write")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{path}: cannot write the outputs: {parent} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=parent)
    except OSError as e:
        raise UserError(f"{path}: cannot write the outputs in {parent}: {e.strerror or e}") from None
    os.close(fd)
    os.unlink(probe)


def _check_npy_header(path):
    """Refuse, before reading any data, an .npy whose header declares more data than the file holds (an
    100000x100000x3 header on a small file would otherwise ask for 30 GB)."""
    fmt = np.lib.format
    with open(path, "rb") as f:
        if f.read(6) != fmt.MAGIC_PREFIX:
            return                          # not an .npy (an .npz, or junk): np.load says what it is
        f.seek(0)
        major, _ = fmt.read_magic(f)
        read = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
        shape, _, dtype = read(f)
        need = int(np.prod(shape, dtype=object)) * dtype.itemsize
        have = os.fstat(f.fileno()).st_size - f.tell()
    if need > have:
        raise UserError(f"{path}: the .npy header declares {dtype}{list(shape)} ({need:,} bytes) but the file "
                        f"holds {have:,} bytes of data")


def _load_input(path):
    try:
        if os.path.isdir(path):
            raise UserError(f"{path}: is a folder; give an .npy file")
        _check_npy_header(path)
        # Mapped, not read: a file that holds all its header declares (a sparse 30 GB file is a few bytes on disk)
        # is checked against the model's input shape before any of it is in memory.
        x = np.load(path, allow_pickle=False, mmap_mode="r")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, ValueError, EOFError, SyntaxError, tokenize.TokenError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        if isinstance(e, (SyntaxError, tokenize.TokenError)):
            why = "its header is damaged"        # numpy parses the header as a Python literal
        raise UserError(f"{path}: not a readable .npy array ({why})") from None
    if not isinstance(x, np.ndarray):
        raise UserError(f"{path}: holds several arrays (an .npz?); give one .npy tensor")
    return x


def cmd_run(args):
    t0 = time.time()
    config = config_arg(args.config)        # an unknown preset is an error before anything else is read
    out_path = Path(args.output)
    if out_path.suffix != ".npz":
        raise UserError(f"{out_path}: the output file must end in .npz")
    faults = []
    if args.inject_fault is not None:
        if args.engine != "rtl":
            raise UserError("--inject-fault needs --engine rtl (it flips a bit of the die's SRAM in simulation)")
        faults.append(parse_fault(args.inject_fault, config))
    _check_output(out_path)                 # an output that cannot be written fails before any work
    x = _load_input(args.input)             # a missing input file fails fast, before a long compile
    prepared = prepare_from_args(args, config)
    graph = prepared.graph
    if len(graph.inputs) != 1:
        raise UserError(f"{Path(args.model).name} has {len(graph.inputs)} inputs; --input gives one tensor")
    items, batched = _batch(x, graph.tensor(graph.inputs[0]).shape, args.input)
    if args.engine == "rtl":
        arrays = run_rtl(prepared.rom, config, items, batched, log=lambda m: print(m, file=sys.stderr),
                         faults=faults)
    else:
        arrays = run_program(prepared.rom, config, items, batched)
    try:
        _write_npz(out_path, arrays)
    except OSError as e:
        raise UserError(f"{out_path}: cannot write the outputs: {e.strerror or e}") from None
    shapes = ", ".join(f"{k} {v.dtype}{list(v.shape)}" for k, v in arrays.items())
    print(f"{out_path}: {shapes} from {len(items)} input{'s' if len(items) > 1 else ''} "
          f"(engine {args.engine}: compiled program for config '{config.name}', "
          f"{len(prepared.compiled.descriptors)} descriptors, "
          f"{program_cycles(config, prepared.compiled.descriptors)['total']:,} NPU cycles per input by the analytic "
          f"model, "
          f"{time.time() - t0:.2f} s)")
    sys.stdout.flush()
    return 0
