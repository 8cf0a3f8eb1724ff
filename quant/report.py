"""Reports of a compiled model: the manifest (model.json) and the per-layer and SRAM tables `stackcam compile`
prints. Presentation only: nothing here changes what the die runs."""

import json
import struct

from . import timing
from .compiler import bank_use
from .program import DUAL2, PACKED, PAIR, POOL2, PROGRAM_FORMAT_VERSION, RESADD
from .romimage import LAYOUT_FIELDS, ROM_FORMAT_VERSION, load_rom

__all__ = ["manifest", "manifest_json", "layer_table", "totals_text"]


def manifest(model, rom):
    """The JSON-able manifest of a compiled model and its ROM image bytes (deterministic: no time, no paths)."""
    cfg = model.config
    img = load_rom(rom, cfg)
    bank = cfg.sram_bank_bytes
    return {
        "format": {"rom": ROM_FORMAT_VERSION, "program": PROGRAM_FORMAT_VERSION},
        "model": model.name,
        "config": {"name": cfg.name, **{f: getattr(cfg, f) for f in LAYOUT_FIELDS},
                   "weight_word_bytes": cfg.weight_word_bytes, "act_word_bytes": cfg.act_word_bytes},
        "fingerprint": img.fingerprint.hex(),
        "rom": {"bytes": len(rom), "crc32": f"{struct.unpack_from('<I', rom, len(rom) - 4)[0]:08x}",
                "sections": [{"id": k, **{f: v for f, v in s.items() if f != "data"}}
                             for k, s in img.sections.items()]},
        "totals": {"macs": model.macs, "weights": model.weight_count, "descriptors": len(model.descriptors),
                   "weight_sram": {"bytes": model.weight_bytes, "words": model.weight_words,
                                   "capacity": cfg.weight_banks * bank,
                                   "banks": bank_use(model.weight_bytes, bank, cfg.weight_banks)},
                   "act_sram": {"bytes": model.act_bytes, "words": model.act_words,
                                "capacity": cfg.act_banks * bank,
                                "banks": bank_use(model.act_bytes, bank, cfg.act_banks)},
                   "npu_cycles": sum(layer.cycles for layer in model.layers)},
        "layers": [{"index": layer.index, "name": layer.name, "kind": layer.kind, "op": layer.op,
                    "inputs": [list(s) for s in layer.inputs], "output": list(layer.output), "macs": layer.macs,
                    "weights": layer.weights, "weight_words": layer.weight_words,
                    "param_words": layer.param_words, "weight_bytes": layer.weight_bytes,
                    "act_bytes": layer.act_bytes, "npu_cycles": layer.cycles,
                    "descriptors": layer.descriptors} for layer in model.layers],
        "program": [{"index": i, "op": d.op, **d.nonzero()} for i, d in enumerate(model.descriptors)],
        "tensors": model.tensors,
        "io": model.io,
    }


def manifest_json(model, rom):
    """The manifest as text: sorted keys, two-space indent, trailing newline."""
    return json.dumps(manifest(model, rom), sort_keys=True, indent=2, allow_nan=False) + "\n"


def _shape(shape):
    return "x".join(str(int(d)) for d in shape)


def _die_op(model, layer):
    """The layer's die operator and how its descriptors run: +PACKED (a CONV's im2col over a pixel-packed input),
    +PAIR (a CONV's oc tiles in pairs), +LINE (the depthwise line walk), +DUAL2 (an ADD or MUL reading both
    inputs in one cycle on the activation SRAM's two read ports), +RESADD (a CONV running the residual ADD that
    follows it in its back end), +POOL2 (a DWCONV writing the max pool of its input too); that ADD's (MAX_POOL's)
    layer is ``ADD@k`` (``MAXPOOL@k``), k the CONV's (DWCONV's) layer, with no descriptor."""
    if layer.fused >= 0:
        return f"{layer.op}@{layer.fused}"
    modes = set()
    for i in layer.descriptors:
        d = model.descriptors[i]
        if d.op == "CONV":
            modes.update(m for m, flag in (("PACKED", PACKED), ("PAIR", PAIR), ("RESADD", RESADD)) if d.flags & flag)
        elif d.op == "DWCONV" and timing.dw_line_mode(model.config, d):
            modes.add("LINE")
            if d.flags & POOL2:
                modes.add("POOL2")
            if timing.dw_line_split(model.config, d):
                modes.add("SPLIT")
        elif d.op in ("ADD", "MUL") and d.flags & DUAL2:
            modes.add("DUAL2")
    return layer.op + "".join(f"+{m}" for m in sorted(modes))


def layer_table(model):
    """The per-layer table as text lines: the die operator with its CONV modes (`_die_op`) and the analytic
    model's NPU cycles of the layer's descriptors."""
    rows = [("#", "layer", "operator", "die", "input", "output", "MACs", "weight B", "act B", "NPU cycles")]
    for layer in model.layers:
        rows.append((str(layer.index), layer.name[-32:], layer.kind, _die_op(model, layer),
                     " + ".join(_shape(s) for s in layer.inputs), _shape(layer.output), f"{layer.macs:,}",
                     f"{layer.weight_bytes:,}", f"{layer.act_bytes:,}", f"{layer.cycles:,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    right = {0, 6, 7, 8, 9}
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
    lines += list(getattr(model, "notes", []))
    io = model.io
    inp = io["input"]
    lines.append(f"input: {inp['name']} {_shape(inp['shape'])} int8 (scale {inp['scale'][0]:g}, zero point "
                 f"{inp['zero_point'][0]}), {inp['layout']} at activation word {inp['addr']}")
    for t in io["die_outputs"]:
        packed = f", pixel-packed ({t['ppw']} pixels per word)" if t.get("ppw") else ""
        lines.append(f"die output: {t['name']} {_shape(t['shape'])} at activation word {t['addr']}{packed}")
    for op in io["host"]["ops"]:
        lines.append(f"host: {op['kind']} '{op['name']}' {', '.join(op['inputs'][:1])} -> {op['outputs'][0]}")
    return lines
