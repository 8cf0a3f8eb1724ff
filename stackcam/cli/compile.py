"""`stackcam compile`: a model (int8, or float with calibration images) to a weight ROM image, manifest and hex."""

import errno
import os
import shutil
import tempfile
from pathlib import Path

from stackcam.quant.report import layer_table, totals_text

from . import UserError, config_arg, presets_help
from .models import add_model_arguments, prepare_from_args

__all__ = ["register", "cmd_compile", "OUTPUT_FILES", "DEFAULT_CONFIG"]

OUTPUT_FILES = ("model.rom", "model.json", "weights.hex")
DEFAULT_CONFIG = "imx500"


def register(sub):
    p = sub.add_parser(
        "compile", help="compile a network into a weight ROM image for a configuration",
        description="Compile an int8 .tflite/.onnx (or a float one with calibration images, or a zoo network) "
        "for a die configuration: writes model.rom (the weight ROM image), model.json (manifest) and weights.hex "
        "($readmemh of the weight SRAM), and prints each layer and the SRAM it needs.")
    add_model_arguments(p)
    p.add_argument("--config", default=DEFAULT_CONFIG, help=presets_help(DEFAULT_CONFIG))
    p.add_argument("-o", "--output", metavar="OUTDIR", required=True, help="output folder")
    p.add_argument("--export-tflite", metavar="FILE", default=None,
                   help="also write the int8 model the toolchain made (the graph the die runs) as a .tflite that "
                   "LiteRT runs with the same results")
    p.set_defaults(func=cmd_compile)


def _install(tmp, out):
    """Move the complete files of folder `tmp` into `out`: the whole folder at once when `out` does not exist or
    holds nothing but an earlier compile's files, so a reader never sees a mix of two compiles.

    Several compiles may install into the same `out` at once: a rename that loses a race with another one (the
    folder appeared, or was moved away, between the check and the rename) is tried again, so each of them ends
    with a whole output in place (the last one's) and none fails."""
    for _ in range(100):
        try:
            if not out.exists():
                os.replace(tmp, out)         # fails (ENOTEMPTY/EEXIST) if another compile installed it meanwhile
                return
            if {p.name for p in out.iterdir()} <= set(OUTPUT_FILES):
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
                try:
                    os.replace(out, old / "x")
                    os.replace(tmp, out)
                finally:
                    shutil.rmtree(old, ignore_errors=True)
                return
            for name in OUTPUT_FILES:        # a folder with other files in it: ours are replaced one by one
                os.replace(tmp / name, out / name)
            return
        except FileNotFoundError:
            if not tmp.exists():
                raise
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    raise OSError(errno.EBUSY, "other processes keep replacing it")


def cmd_compile(args):
    from stackcam.quant.export import export_tflite
    from stackcam.quant.report import manifest_json
    from stackcam.quant.romimage import readmemh

    config = config_arg(args.config)
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    export = Path(args.export_tflite) if args.export_tflite else None
    if export is not None:                  # checked before the expensive work
        if export.is_dir():
            raise UserError(f"{export}: is a folder (--export-tflite wants a file name)")
        if not export.resolve().parent.is_dir():
            raise UserError(f"{export}: its folder {export.resolve().parent} does not exist")
    prepared = prepare_from_args(args, config)
    model, rom = prepared.compiled, prepared.rom
    files = {"model.rom": rom, "model.json": manifest_json(model, rom).encode(),
             "weights.hex": readmemh(model).encode()}

    # Everything is written to a temporary folder beside OUTDIR and moved in only when complete, so a failure
    # (or an interrupt) never leaves a partial output.
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
        mask = os.umask(0)
        os.umask(mask)
        tmp.chmod(0o777 & ~mask)             # mkdtemp makes it private; the result is an ordinary folder
    except OSError as e:
        raise UserError(f"{out}: cannot create the output folder: {e.strerror or e}") from None
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        _install(tmp, out)
    except OSError as e:
        raise UserError(f"{out}: cannot write the output: {e.strerror or e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"{model.name} for config '{config.name}' ({config.summary()})")
    for note in prepared.graph.notes:
        if note.startswith("dynamic batch"):
            print(f"import: {note}")
    if prepared.calibration:
        print(f"calibration: {prepared.calibration}")
    for line in layer_table(model):
        print(line)
    for line in totals_text(model):
        print(line)
    print(f"wrote {out / 'model.rom'} ({len(rom):,} B), {out / 'model.json'}, {out / 'weights.hex'}")
    if export is not None:
        data = export_tflite(prepared.graph)
        _write_atomic(export, data)
        print(f"wrote {export} ({len(data):,} B): the int8 model as a .tflite")
    return 0


def _write_atomic(path, data):
    """Write `data` to `path` through a temporary file beside it, renamed at the end (a failure leaves nothing)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.resolve().parent)
    except OSError as e:
        raise UserError(f"{path}: cannot write: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise UserError(f"{path}: cannot write: {e.strerror or e}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
