"""`stackcam compile`: a model (int8, or float with calibration images) to a weight ROM image, manifest and hex."""

import os
import shutil
import tempfile
from pathlib import Path

from . import UserError, config_arg, presets_help
from .models import add_model_arguments, prepare_from_args

__all__ = ["register", "cmd_compile", "layer_table", "totals_text", "OUTPUT_FILES", "DEFAULT_CONFIG"]

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
    p.set_defaults(func=cmd_compile)


def _shape(shape):
    return "x".join(str(int(d)) for d in shape)


def layer_table(model):
    """The per-layer table as text lines."""
    rows = [("#", "layer", "operator", "die", "input", "output", "MACs", "weight B", "act B")]
    for layer in model.layers:
        rows.append((str(layer.index), layer.name[-32:], layer.kind, layer.op,
                     " + ".join(_shape(s) for s in layer.inputs), _shape(layer.output), f"{layer.macs:,}",
                     f"{layer.weight_bytes:,}", f"{layer.act_bytes:,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    right = {0, 6, 7, 8}
    lines = []
    for r in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    return lines


def _bank_text(use, bank_bytes):
    """'0-33 full, 34: 95,232 B, 35-43 empty' from per-bank bytes."""
    def label(v):
        return "full" if v == bank_bytes else "empty" if v == 0 else f"{v:,} B"
    parts, i = [], 0
    while i < len(use):
        j = i
        while j + 1 < len(use) and label(use[j + 1]) == label(use[i]) and label(use[i]) in ("full", "empty"):
            j += 1
        parts.append(f"{i}-{j} {label(use[i])}" if j > i else f"{i}: {label(use[i])}")
        i = j + 1
    return ", ".join(parts)


def totals_text(model):
    """Totals against the configuration's SRAM, with per-bank use, as text lines."""
    from stackcam.quant.compiler import bank_use
    cfg = model.config
    bank = cfg.sram_bank_bytes
    w_have, a_have = cfg.weight_banks * bank, cfg.act_banks * bank
    w_use = bank_use(model.weight_bytes, bank, cfg.weight_banks)
    a_use = bank_use(model.act_bytes, bank, cfg.act_banks)
    lines = [
        f"MACs: {model.macs:,} ({model.macs / 1e6:.1f} M); weights: {model.weight_count:,} values "
        f"({model.weight_count / 1e6:.2f} M); {len(model.descriptors)} descriptors",
        f"weight SRAM: {model.weight_bytes:,} B of {w_have:,} B ({100 * model.weight_bytes / w_have:.1f}%), "
        f"{sum(1 for u in w_use if u)} of {cfg.weight_banks} banks of {bank:,} B: {_bank_text(w_use, bank)}",
        f"activation SRAM: {model.act_bytes:,} B of {a_have:,} B at the peak ({100 * model.act_bytes / a_have:.1f}%), "
        f"{sum(1 for u in a_use if u)} of {cfg.act_banks} banks of {bank:,} B: {_bank_text(a_use, bank)}",
        f"NPU cycles (the analytic model, equal to the die's counters; {cfg.macs_per_cycle} MACs/cycle): "
        f"{sum(layer.cycles for layer in model.layers):,} in the layers' descriptors",
    ]
    io = model.io
    inp = io["input"]
    lines.append(f"input: {inp['name']} {_shape(inp['shape'])} int8 (scale {inp['scale'][0]:g}, zero point "
                 f"{inp['zero_point'][0]}), {inp['layout']} at activation word {inp['addr']}")
    for t in io["die_outputs"]:
        lines.append(f"die output: {t['name']} {_shape(t['shape'])} at activation word {t['addr']}")
    for op in io["host"]["ops"]:
        lines.append(f"host: {op['kind']} '{op['name']}' {', '.join(op['inputs'][:1])} -> {op['outputs'][0]}")
    return lines


def _install(tmp, out):
    """Move the complete files of folder `tmp` into `out`: the whole folder at once when `out` does not exist or
    holds nothing but an earlier compile's files, so a reader never sees a mix of two compiles."""
    if not out.exists():
        os.replace(tmp, out)
        return
    if {p.name for p in out.iterdir()} <= set(OUTPUT_FILES):
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
        os.replace(out, old / "x")
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
        return
    for name in OUTPUT_FILES:               # a folder with other files in it: ours are replaced one by one
        os.replace(tmp / name, out / name)


def cmd_compile(args):
    from stackcam.quant.romimage import manifest_json, readmemh

    config = config_arg(args.config)
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
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
    for line in layer_table(model):
        print(line)
    for line in totals_text(model):
        print(line)
    print(f"wrote {out / 'model.rom'} ({len(rom):,} B), {out / 'model.json'}, {out / 'weights.hex'}")
    return 0
