"""Analytic cycle model of the NPU: each descriptor's cycles from the engines' cycle formulas (`quant.timing`),
plus the sequencer's fetch and decode, for any configuration, in well under a second. The benchmark prints it
next to the RTL; tests/test_cyclemodel.py holds it to the die's per-descriptor counters, to the cycle.

`predict_bank_activity` is the per-bank side of the activity model: the SRAM words each descriptor's engine
reads and the bytes it writes, placed at their word addresses (the address walks of the engines, as multiplicities
per word), summed per bank. It equals the die's per-bank counters (`rtl.npu.core.BANK_COUNTERS`)."""

import numpy as np

from stackcam.quant.program import (
    DESCRIPTOR_BYTES,
    FILL,
    OPCODES,
    PACKED,
    PAIR,
    POOL2,
    RESADD,
    RESIZE_ENTRY_BYTES,
    ZPAD2,
)
from stackcam.quant.romimage import NOT_LOADED, load_rom
from stackcam.quant.timing import (
    dw_line_mode,
    dw_line_passes,
    dw_line_rows,
    dw_walk_passes,
    im2col_read_words,
    issue_tiles,
    lut_row_bytes,
    program_cycles,
    resadd_read_tiles,
    sequencer_overhead,
    tap_issues,
)

__all__ = ["predict_cycles", "sequencer_overhead", "predict_bank_activity", "predict_load_banks", "predict_io_banks",
           "BANK_MODEL_OPS"]

# Descriptor kinds whose SRAM addresses the per-bank model places (the others: `predict_bank_activity` says so).
BANK_MODEL_OPS = ("CONV", "DWCONV", "ADD", "MUL", "MAXPOOL", "AVGPOOL", "MEAN", "COPY", "GATHER", "LUT", "PRELU",
                  "RESIZE")


def predict_cycles(compiled, config):
    """{"descriptors": [cycles of each descriptor as the die's per-descriptor counter reports it], "layers":
    {layer index: cycles}, "total": cycles of the whole run as the die's npu_cycles counter reports it}."""
    return program_cycles(config, compiled.descriptors)


def _axis_mult(size, k, stride, pad, n):
    """How often each of `size` input positions is a window tap of the `n` outputs (taps in the padding not)."""
    m = np.zeros(size, dtype=np.int64)
    for o in range(n):
        lo, hi = o * stride - pad, o * stride - pad + k
        m[max(0, lo):min(size, hi)] += 1
    return m


def _walk_col_mult(desc, passes):
    """`ConvDepthwiseWalk`: how often each input column is read per (output row, tap row): once per pass whose
    padded columns include it (`passes`: `quant.timing.dw_walk_passes` or, in line mode, `dw_line_passes`)."""
    d = desc
    m = np.zeros(d.in_w, dtype=np.int64)
    for c0, c1 in passes:
        m[max(0, c0 - d.pad_left):max(0, min(d.in_w, c1 - d.pad_left + 1))] += 1
    return m


class _Counts:
    def __init__(self, config):
        self.act_reads = np.zeros(config.act_words, dtype=np.int64)
        self.act_wbytes = np.zeros(config.act_words, dtype=np.int64)
        self.w_reads = np.zeros(config.weight_words, dtype=np.int64)

    @staticmethod
    def add(arr, base, values):
        values = np.asarray(values, dtype=np.int64).ravel()
        if base < 0 or base + len(values) > len(arr):
            raise ValueError(f"words {base}..{base + len(values) - 1} outside the SRAM's {len(arr)}")
        arr[base:base + len(values)] += values

    def tensor(self, arr, base, my, mx, ct, per_tile=None):
        """Words of an H x W x CT channel-tiled tensor at `base`, word (y, x, t) counted my[y] * mx[x] * per_tile[t]."""
        pt = np.ones(ct, dtype=np.int64) if per_tile is None else np.asarray(per_tile, dtype=np.int64)
        self.add(arr, base, my[:, None, None] * mx[None, :, None] * pt[None, None, :])


def _box_copy(c, d, cols, src, box, dst_step):
    """COPY / GATHER (`rtl.npu.vector` `_copy_step`): per box pixel, the source words its channels span (read
    once each) and its bytes written into the output words of channels copy_c .. copy_c + box channels."""
    (sy0, sx0, sc0), (sy, sx) = src
    gh, gw, gc = box
    dy, dx = dst_step
    nin = (sc0 % cols + gc - 1) // cols + 1
    ys, xs = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    first = ((sy0 + ys * sy) * d.in_w + sx0 + xs * sx).ravel() * d.in_ct + sc0 // cols
    np.add.at(c.act_reads, d.in_addr + (first[:, None] + np.arange(nin)[None, :]).ravel(), 1)
    tile_bytes = np.bincount(np.arange(d.copy_c, d.copy_c + gc) // cols, minlength=d.out_ct)[:d.out_ct]
    pix = ((d.copy_y + ys * dy) * d.out_w + d.copy_x + xs * dx).ravel() * d.out_ct
    idx = d.out_addr + pix[:, None] + np.arange(d.out_ct)[None, :]
    np.add.at(c.act_wbytes, idx.ravel(), np.tile(tile_bytes, len(pix)))


def _resize_entries(weights, word, n, wb):
    """(lo, hi) of the first `n` entries of the RESIZE table at weight word `word` (a byte stream)."""
    raw = weights[word:word + -(-n * RESIZE_ENTRY_BYTES // wb)].reshape(-1)[:n * RESIZE_ENTRY_BYTES]
    e = raw.reshape(n, RESIZE_ENTRY_BYTES).astype(np.int64)
    return e[:, 0] | e[:, 1] << 8, e[:, 2] | e[:, 3] << 8


def _descriptor_banks(config, d, c, weights=None):
    """Adds descriptor `d`'s engine accesses to the per-word counts `c`; False for a kind not modelled (RESIZE
    without the weight SRAM's tables, unless its whole input is in one bank)."""
    op = {v: k for k, v in OPCODES.items()}.get(d.opcode)
    cols, rows, wb = config.array_cols, config.array_rows, config.weight_word_bytes
    words = d.out_h * d.out_w * d.out_ct
    if op not in BANK_MODEL_OPS:
        return False
    pixels = d.out_h * d.out_w
    if op == "RESIZE":
        in_words = d.in_h * d.in_w * d.in_ct
        wpb = config.sram_bank_bytes // cols
        if weights is None and d.in_addr // wpb != (d.in_addr + in_words - 1) // wpb:
            return False
    # Every output word written whole (COPY, GATHER: their fill, then the copied bytes).
    if op not in ("COPY", "GATHER") or d.flags & FILL:
        c.add(c.act_wbytes, d.out_addr, np.full(words, cols))
    my = _axis_mult(d.in_h, d.kernel_h, d.stride_h, d.pad_top, d.out_h)
    mx = _axis_mult(d.in_w, d.kernel_w, d.stride_w, d.pad_left, d.out_w)
    if op in ("CONV", "DWCONV"):
        c.add(c.w_reads, d.param_addr, np.ones(d.param_words))           # the parameter records, once
        taps = d.kernel_h * d.kernel_w
        if op == "DWCONV" and taps > config.dw_taps:
            # One tap per issue; the tile's weight word k holds taps k*rows .. k*rows + rows - 1.
            c.tensor(c.act_reads, d.in_addr, my, mx, d.out_ct)
            per_word = [min(rows, taps - k * rows) for k in range(d.tile_words)]
            c.add(c.w_reads, d.weight_addr, pixels * np.tile(per_word, d.out_ct))
        elif op == "DWCONV":
            passes = dw_walk_passes(d, min(config.dw_sets, rows))
            if dw_line_mode(config, d):                                    # each new kernel row read per pass
                passes = dw_line_passes(config, d)
                my = np.zeros(d.in_h, dtype=np.int64)
                for iy, n in dw_line_rows(d):
                    my[iy] = n
            c.tensor(c.act_reads, d.in_addr, my, _walk_col_mult(d, passes), d.out_ct)
            c.add(c.w_reads, d.weight_addr, np.ones(d.out_ct * d.tile_words))
            if d.flags & POOL2:                                            # the max pool's words, whole
                c.add(c.act_wbytes, d.in2_addr, np.full(words, cols))
        elif d.flags & PACKED:
            offs = list(im2col_read_words(d, config.im2col_pixels))
            # Gathered once per pixel group, fed from the buffers to every oc tile.
            np.add.at(c.act_reads, d.in_addr + np.asarray(offs, dtype=np.int64), 1)
            c.add(c.w_reads, d.weight_addr, np.full(d.oc_tiles * d.in_ct, pixels))
        else:
            tiles = issue_tiles(d)
            # Reads of each input tile per pixel and tap: the full tiles once per oc tile, the last once per
            # issued tile (PAIR: once per pair, an odd last tile's included).
            per_tile = np.full(d.in_ct, d.oc_tiles)
            per_tile[-1] = tiles
            c.tensor(c.act_reads, d.in_addr, my, mx, d.in_ct, per_tile)
            # The weight block, once per pixel.
            block = d.kernel_h * d.kernel_w * tap_issues(d.oc_tiles, d.in_ct, d.flags & PAIR)
            c.add(c.w_reads, d.weight_addr, np.full(block, pixels))
            if d.flags & RESADD:        # the residual's word of each tile written that reads one
                word = resadd_read_tiles(config, d)
                c.add(c.act_reads, d.in2_addr, np.tile(np.bincount(word, minlength=d.in2_ct), pixels))
        return True
    if op in ("ADD", "MUL"):
        c.add(c.act_reads, d.in_addr, np.ones(words))
        if op == "ADD" and d.flags & ZPAD2:                               # the second input's own tiles, once
            c.add(c.act_reads, d.in2_addr, np.ones(pixels * d.in2_ct))
        elif (d.in2_h, d.in2_w, d.in2_c) == (d.out_h, d.out_w, d.out_c):
            c.add(c.act_reads, d.in2_addr, np.ones(words))
        elif d.in2_c == d.out_c:                                           # 1 x 1 x C: a word per channel tile
            c.add(c.act_reads, d.in2_addr, np.full(d.out_ct, pixels))
        else:                                                              # 1 x 1 x 1
            c.add(c.act_reads, d.in2_addr, [words])
        return True
    if op in ("MAXPOOL", "AVGPOOL"):
        c.tensor(c.act_reads, d.in_addr, my, mx, d.in_ct)
        return True
    if op == "MEAN":
        c.add(c.act_reads, d.in_addr, np.ones(d.in_h * d.in_w * d.in_ct))
        return True
    if op == "LUT":
        c.add(c.act_reads, d.in_addr, np.ones(words))
        rb = lut_row_bytes(config)
        np.add.at(c.w_reads, d.param_addr + np.arange(256 // rb) // (wb // rb), 1)
        return True
    if op == "PRELU":                                                      # a channel tile's alphas per read
        c.add(c.act_reads, d.in_addr, np.ones(words))
        np.add.at(c.w_reads, d.param_addr + np.arange(d.out_ct) // max(1, wb // cols), 1)
        return True
    if op == "RESIZE":
        # Per output pixel its row entry and its column entry; per output word the taps (y0|y1, x0|x1).
        np.add.at(c.w_reads, d.param_addr + np.repeat(np.arange(d.out_h) * RESIZE_ENTRY_BYTES // wb, d.out_w), 1)
        np.add.at(c.w_reads, d.weight_addr + np.tile(np.arange(d.out_w) * RESIZE_ENTRY_BYTES // wb, d.out_h), 1)
        if weights is None:                                                # the whole input in one bank
            c.add(c.act_reads, d.in_addr, [4 * words] + [0] * (d.in_h * d.in_w * d.in_ct - 1))
            return True
        y0, y1 = _resize_entries(weights, d.param_addr, d.out_h, wb)
        x0, x1 = _resize_entries(weights, d.weight_addr, d.out_w, wb)
        hy = np.bincount(np.concatenate([y0, y1]), minlength=d.in_h)[:d.in_h]
        hx = np.bincount(np.concatenate([x0, x1]), minlength=d.in_w)[:d.in_w]
        c.tensor(c.act_reads, d.in_addr, hy, hx, d.in_ct)
        return True
    if op == "GATHER":
        _box_copy(c, d, cols, ((d.src_y, d.src_x, d.src_c), (d.src_sy, d.src_sx)), (d.g_h, d.g_w, d.g_c),
                  (d.dst_sy, d.dst_sx))
        return True
    _box_copy(c, d, cols, ((0, 0, 0), (1, 1)), (d.in_h, d.in_w, d.in_c), (1, 1))     # COPY
    return True


def _per_bank(arr, words_per_bank, banks):
    return np.pad(arr, (0, banks * words_per_bank - len(arr))).reshape(banks, words_per_bank).sum(axis=1)


def predict_bank_activity(config, descriptors, weights=None, per_descriptor=False):
    """Per-bank SRAM activity of one run of `descriptors` (the program, END included) as the die's per-bank
    counters report it: {"act_reads": [activation words read per bank], "act_write_bytes": [bytes written per
    bank], "weight_reads": [weight words read per bank, the sequencer's descriptor fetches included],
    "unmodelled": [indices of descriptors whose accesses the model cannot place: a kind not in `BANK_MODEL_OPS`,
    or a RESIZE whose input spans banks when `weights` (uint8 [weight_words, WB], the loaded weight SRAM, e.g.
    `quant.romimage.RomImage.weight_sram()`: its tables give RESIZE's source rows and columns) is not given; the
    counts then lack their accesses]}. Sums over banks equal `quant.timing.program_activity`'s totals.
    `per_descriptor`: also "descriptors", each descriptor's (but END's) own per-bank counts (the engine's
    accesses, no fetches; None for an unmodelled one)."""
    act_wpb = config.sram_bank_bytes // config.array_cols
    wb = config.weight_word_bytes
    w_wpb = config.sram_bank_bytes // wb

    def banks(c):
        return {"act_reads": [int(v) for v in _per_bank(c.act_reads, act_wpb, config.act_banks)],
                "act_write_bytes": [int(v) for v in _per_bank(c.act_wbytes, act_wpb, config.act_banks)],
                "weight_reads": [int(v) for v in _per_bank(c.w_reads, w_wpb, config.weight_banks)]}

    c = _Counts(config)
    unmodelled, per = [], []
    for i, d in enumerate(descriptors):
        if d.opcode == OPCODES["END"]:
            continue
        if per_descriptor:
            one = _Counts(config)
            ok = _descriptor_banks(config, d, one, weights)
            per.append(banks(one) if ok else None)
            if ok:
                c.act_reads += one.act_reads
                c.act_wbytes += one.act_wbytes
                c.w_reads += one.w_reads
        else:
            ok = _descriptor_banks(config, d, c, weights)
        if not ok:
            unmodelled.append(i)
    # The sequencer reads each descriptor's words (several descriptors per word when the word holds them).
    if wb >= DESCRIPTOR_BYTES:
        np.add.at(c.w_reads, np.arange(len(descriptors)) // (wb // DESCRIPTOR_BYTES), 1)
    else:
        c.add(c.w_reads, 0, np.ones(len(descriptors) * (DESCRIPTOR_BYTES // wb)))
    out = dict(banks(c), unmodelled=unmodelled)
    if per_descriptor:
        out["descriptors"] = per
    return out


def predict_load_banks(config, rom):
    """Weight words the model loader writes per weight bank for the ROM image `rom` (bytes): each loaded
    section's words from its load word (`quant.romimage`)."""
    img = load_rom(rom, config)
    w = np.zeros(config.weight_words, dtype=np.int64)
    for sec in img.sections.values():
        if sec["load_word"] != NOT_LOADED and sec["words"]:
            w[sec["load_word"]:sec["load_word"] + sec["words"]] += 1
    return [int(v) for v in _per_bank(w, config.sram_bank_bytes // config.weight_word_bytes, config.weight_banks)]


def predict_io_banks(config, io, frames=1):
    """Activation-SRAM traffic of the outside per bank for `frames` frames of a model with I/O description `io`
    (`quant.romimage` model I/O): {"input_write_bytes": the input writer's whole words (``io["input"]["words"]``
    from its address, `array_cols` bytes each), "output_reads": the output reader's words of every output tensor
    (``words`` from its address, each read once)}: the die's "since reset" per-bank counters after `frames`
    frames."""
    wpb = config.sram_bank_bytes // config.array_cols
    w = np.zeros(config.act_words, dtype=np.int64)
    r = np.zeros(config.act_words, dtype=np.int64)
    w[io["input"]["addr"]:io["input"]["addr"] + io["input"]["words"]] += config.array_cols * frames
    for t in io["die_outputs"]:
        r[t["addr"]:t["addr"] + t["words"]] += frames
    return {"input_write_bytes": [int(v) for v in _per_bank(w, wpb, config.act_banks)],
            "output_reads": [int(v) for v in _per_bank(r, wpb, config.act_banks)]}
