"""The golden program executor: runs a ROM image's layer program by the rules of the program format alone.

It never sees the graph: `execute` loads the ROM image (quant.romimage), writes the input tensor into a model of
the activation SRAM, runs each descriptor (quant.program's format) with TFLite's integer arithmetic, reads the
die's output tensors and runs the host tail (`host_outputs`, which the RTL's host side uses too). The RTL is
checked against it word for word, and it against LiteRT's BUILTIN_REF kernels.
"""

import numpy as np

from . import ref, timing
from .executor import run_graph
from .graph import Graph, Op, QuantParams, Tensor
from .program import (
    DESCRIPTOR_BYTES,
    DUAL2,
    FCSCALE,
    FILL,
    NEG2,
    PACKED,
    PAIR,
    POOL2,
    RESADD,
    ZPAD2,
    ProgramError,
    add_input_banks,
    banks_disjoint,
    conv_block_words,
    dw_block_words,
    im2col_block_words,
    packed_words,
    pair_block_words,
    pair_fits,
    param_words,
    read_packed,
    read_stream,
    read_tensor,
    resadd_input_banks,
    resize_table_words,
    tensor_words,
    unpack,
    unpack_conv_weights,
    unpack_dw_weights,
    unpack_fc_params,
    unpack_im2col_weights,
    unpack_pair_weights,
    unpack_params,
    unpack_resize_table,
    write_packed,
    write_tensor,
)
from .romimage import load_rom

__all__ = ["execute", "execute_trace", "host_outputs", "step"]


def _region(wsram, addr, words, what):
    if addr + words > wsram.shape[0]:
        raise ProgramError(f"{what}: words {addr}..{addr + words - 1} run past the loaded weight SRAM "
                           f"({wsram.shape[0]} words)")
    return wsram[addr:addr + words]


def _tensors(d):
    """(name, base, h, w, c) of the activation tensors a descriptor reads and writes."""
    ins = [("in", d.in_addr, d.in_h, d.in_w, d.in_c)]
    if d.op in ("ADD", "MUL") or (d.op == "CONV" and d.flags & RESADD):
        ins.append(("in2", d.in2_addr, d.in2_h, d.in2_w, d.in2_c))
    return ins, ("out", d.out_addr, d.out_h, d.out_w, d.out_c)


def _check(i, d, cols, rows, max_channels=None, dual_banks=None, config=None):
    """Refuse a descriptor whose redundant fields disagree: the RTL relies on them, so the golden model does;
    (given the config's `max_channels`) one wider than the conv engine's parameter buffer, as the RTL does; and
    a DUAL2 ADD or MUL unless the activation SRAM has two read ports (`dual_banks`: its words per bank) and the two
    inputs lie in disjoint banks."""
    where = f"descriptor {i} ({d.op})"
    if d.op == "DWCONV" and d.flags & ~POOL2:
        raise ProgramError(f"{where}: flags {d.flags:#x} (a DWCONV takes only POOL2)")
    if d.op == "DWCONV" and d.flags & POOL2 and (config is None or not timing.dw_pool2_fits(config, d)):
        raise ProgramError(f"{where}: POOL2 needs the line walk in one pass per row (a die that has it), stride 2x2, "
                           f"no padding above or left, a kernel of at least 2x2, a pool inside the input and "
                           f"clamps {d.add_min}..{d.add_max} that hold in_zp {d.in_zp}")
    if d.op == "CONV" and d.flags & ZPAD2 and not d.flags & RESADD:
        raise ProgramError(f"{where}: ZPAD2 on a CONV without RESADD")
    if d.flags & DUAL2 and d.op in ("ADD", "MUL"):
        if dual_banks is None:
            raise ProgramError(f"{where}: DUAL2 needs an activation SRAM with two read ports")
        banks = add_input_banks(d, dual_banks)
        if not banks_disjoint(banks):
            raise ProgramError(f"{where}: DUAL2 inputs share a bank (input 1 banks {banks[0][0]}..{banks[0][1]}, "
                               f"input 2 banks {banks[1][0]}..{banks[1][1]})")
    if d.op == "CONV" and d.flags & RESADD:
        if dual_banks is None:
            raise ProgramError(f"{where}: RESADD needs an activation SRAM with two read ports")
        if d.flags & (PACKED | FCSCALE):
            raise ProgramError(f"{where}: RESADD with PACKED or FCSCALE")
        if (d.in2_h, d.in2_w) != (d.out_h, d.out_w) or d.in2_c > d.out_c or \
                (d.in2_ct > d.out_ct if d.flags & ZPAD2 else d.in2_ct != d.out_ct):
            raise ProgramError(f"{where}: RESADD residual {d.in2_h}x{d.in2_w}x{d.in2_c} ({d.in2_ct} tiles) is not "
                               f"{d.out_h}x{d.out_w} with at most {d.out_c} channels in "
                               f"{'at most ' if d.flags & ZPAD2 else ''}{d.out_ct} tiles")
        if not all(-31 <= s <= 31 for s in (d.in_shift, d.in2_shift, d.out_shift)):
            raise ProgramError(f"{where}: shifts {d.in_shift}/{d.in2_shift}/{d.out_shift} outside -31..31")
        banks = resadd_input_banks(d, dual_banks)
        if not banks_disjoint(banks):
            raise ProgramError(f"{where}: RESADD input and residual share a bank (input banks {banks[0][0]}.."
                               f"{banks[0][1]}, residual banks {banks[1][0]}..{banks[1][1]})")
    if max_channels is not None and d.op in ("CONV", "DWCONV"):
        limit = -(-max_channels // cols) * cols
        if d.out_c > limit:
            raise ProgramError(f"{where}: {d.out_c} output channels; the conv engine's parameter buffer holds "
                               f"{limit}")
    ins, out = _tensors(d)
    packed = bool(d.flags & PACKED)
    k_words = -(-(d.kernel_h * d.kernel_w * d.in_c) // cols)
    for prefix, _, h, w, c in (*ins, out):
        ct = getattr(d, f"{prefix}_ct")
        want = k_words if packed and prefix == "in" else -(-c // cols)
        if min(h, w, c) < 1 or ct != want:
            raise ProgramError(f"{where}: {prefix} {h}x{w}x{c} with {ct} channel tiles (expected {want})")
    if d.in_ppw != (cols // d.in_c if packed else 0):
        raise ProgramError(f"{where}: in_ppw {d.in_ppw} (PACKED {packed}, in_c {d.in_c}, cols {cols})")
    out_lo, out_hi = d.out_addr, d.out_addr + tensor_words(d.out_h, d.out_w, d.out_c, cols)
    if d.op == "DWCONV" and d.flags & POOL2:        # the pool's words meet neither the input nor the output
        p_lo, p_hi = d.in2_addr, d.in2_addr + tensor_words(d.out_h, d.out_w, d.in_c, cols)
        for what, lo, hi in (("input", d.in_addr, d.in_addr + tensor_words(d.in_h, d.in_w, d.in_c, cols)),
                             ("output", out_lo, out_hi)):
            if p_lo < hi and lo < p_hi:
                raise ProgramError(f"{where}: POOL2 words {p_lo}..{p_hi - 1} overlap the {what} at {lo}")
    for prefix, base, h, w, c in ins:
        size = packed_words(h, w, c, cols) if packed else tensor_words(h, w, c, cols)
        if (d.op in ("ADD", "LUT", "MUL", "PRELU") or prefix == "in2") and base == out_lo and size == out_hi - out_lo:
            continue                                # elementwise, in place (a RESADD CONV over its residual)
        if base < out_hi and out_lo < base + size:
            raise ProgramError(f"{where}: output words {out_lo}..{out_hi - 1} overlap {prefix} at {base}")
    if d.op in ("CONV", "DWCONV", "MAXPOOL", "AVGPOOL"):
        if min(d.kernel_h, d.kernel_w, d.stride_h, d.stride_w) < 1:
            raise ProgramError(f"{where}: kernel {d.kernel_h}x{d.kernel_w} stride {d.stride_h}x{d.stride_w}")
        for size, k, s, lo, hi, o, axis in ((d.in_h, d.kernel_h, d.stride_h, d.pad_top, d.pad_bottom, d.out_h, "h"),
                                            (d.in_w, d.kernel_w, d.stride_w, d.pad_left, d.pad_right, d.out_w, "w")):
            if (size + lo + hi - k) // s + 1 != o:
                raise ProgramError(f"{where}: out_{axis} {o} does not follow from in_{axis} {size}, kernel {k}, "
                                   f"stride {s}, pads {lo}+{hi}")
    pair = bool(d.flags & PAIR)
    if pair and (packed or d.flags & FCSCALE or cols != 2 * rows or not pair_fits(d.in_c, cols)):
        raise ProgramError(f"{where}: PAIR needs an array of cols = 2*rows ({rows}x{cols}), an input whose last "
                           f"channel tile holds at most cols/2 channels (in_c {d.in_c}) and neither PACKED nor "
                           f"FCSCALE")
    if d.op == "CONV" and pair:
        want = (pair_block_words(d.out_c, d.kernel_h, d.kernel_w, d.in_c, rows, cols),
                param_words(d.out_c, rows, cols), -(-d.out_c // rows), d.kernel_h * d.kernel_w * (2 * d.in_ct - 1))
    elif d.op == "CONV" and packed:
        want = (im2col_block_words(d.out_c, d.kernel_h, d.kernel_w, d.in_c, rows, cols),
                param_words(d.out_c, rows, cols), -(-d.out_c // rows), k_words)
    elif d.op == "CONV":
        want = (conv_block_words(d.out_c, d.kernel_h, d.kernel_w, d.in_c, rows, cols),
                param_words(d.out_c, rows, cols), -(-d.out_c // rows), d.kernel_h * d.kernel_w * d.in_ct)
    elif d.op == "DWCONV":
        if d.in_c != d.out_c:
            raise ProgramError(f"{where}: in_c {d.in_c} != out_c {d.out_c}")
        want = (dw_block_words(d.kernel_h, d.kernel_w, d.out_c, rows, cols), param_words(d.out_c, rows, cols), 0,
                -(-(d.kernel_h * d.kernel_w) // rows))
    else:
        want = None
    if want is not None and want != (d.weight_words, d.param_words, d.oc_tiles, d.tile_words):
        raise ProgramError(f"{where}: weight_words/param_words/oc_tiles/tile_words "
                           f"{(d.weight_words, d.param_words, d.oc_tiles, d.tile_words)}, the format gives {want}")
    if d.op in ("ADD", "LUT", "MUL", "PRELU") and (d.in_h, d.in_w, d.in_c) != (d.out_h, d.out_w, d.out_c):
        raise ProgramError(f"{where}: output {d.out_h}x{d.out_w}x{d.out_c} differs from the input")
    if d.op == "ADD" and d.flags & ZPAD2:
        if (d.in2_h, d.in2_w) != (d.out_h, d.out_w) or d.in2_c > d.out_c:
            raise ProgramError(f"{where}: ZPAD2 second input {d.in2_h}x{d.in2_w}x{d.in2_c} is not "
                               f"{d.out_h}x{d.out_w} with at most {d.out_c} channels")
    elif d.op in ("ADD", "MUL") and (d.in2_h, d.in2_w, d.in2_c) not in ((d.out_h, d.out_w, d.out_c),
                                                                       (1, 1, d.out_c), (1, 1, 1)):
        raise ProgramError(f"{where}: second input {d.in2_h}x{d.in2_w}x{d.in2_c} neither is the output's "
                           f"{d.out_h}x{d.out_w}x{d.out_c} nor broadcasts as 1x1x{d.out_c} or 1x1x1")
    if d.op == "ADD" and not all(-31 <= s <= 31 for s in (d.in_shift, d.in2_shift, d.out_shift)):
        raise ProgramError(f"{where}: shifts {d.in_shift}/{d.in2_shift}/{d.out_shift} outside -31..31")
    if d.op in ("MUL", "MEAN") and not -31 <= d.out_shift <= 31:
        raise ProgramError(f"{where}: out_shift {d.out_shift} outside -31..31")
    if d.op == "MEAN" and ((d.out_h, d.out_w, d.out_c) != (1, 1, d.in_c) or max(d.in_h, d.in_w) > 255):
        raise ProgramError(f"{where}: {d.in_h}x{d.in_w}x{d.in_c} -> {d.out_h}x{d.out_w}x{d.out_c} (MEAN reduces "
                           f"at most 255x255 to 1x1xC)")
    if d.op == "PRELU" and not all(-31 <= s <= 31 for s in (d.in_shift, d.in2_shift)):
        raise ProgramError(f"{where}: shifts {d.in_shift}/{d.in2_shift} outside -31..31")
    if d.op == "PRELU" and (d.in_c > 256 or d.param_words * rows * cols < d.in_c):
        raise ProgramError(f"{where}: {d.in_c} channels with {d.param_words} words of alphas (at most 256)")
    if d.op in ("MAXPOOL", "AVGPOOL") and d.in_c != d.out_c:
        raise ProgramError(f"{where}: in_c {d.in_c} != out_c {d.out_c}")
    if d.op == "COPY" and (d.copy_y + d.in_h > d.out_h or d.copy_x + d.in_w > d.out_w or
                           d.copy_c + d.in_c > d.out_c):
        raise ProgramError(f"{where}: {d.in_h}x{d.in_w}x{d.in_c} at ({d.copy_y}, {d.copy_x}, {d.copy_c}) does not "
                           f"fit the {d.out_h}x{d.out_w}x{d.out_c} output")
    if d.op == "GATHER":
        for axis, src, step, n, size, dst, dstep, osize in (
                ("y", d.src_y, d.src_sy, d.g_h, d.in_h, d.copy_y, d.dst_sy, d.out_h),
                ("x", d.src_x, d.src_sx, d.g_w, d.in_w, d.copy_x, d.dst_sx, d.out_w),
                ("c", d.src_c, 1, d.g_c, d.in_c, d.copy_c, 1, d.out_c)):
            if n < 1 or step < 1 or dstep < 1 or src + (n - 1) * step >= size or dst + (n - 1) * dstep >= osize:
                raise ProgramError(f"{where}: {axis}: {n} from {src} step {step} of {size} to {dst} step {dstep} "
                                   f"of {osize} does not fit")
    if d.op == "RESIZE" and (d.in_c != d.out_c or d.param_words != resize_table_words(d.out_h, rows * cols)
                             or d.weight_words != resize_table_words(d.out_w, rows * cols)):
        raise ProgramError(f"{where}: in_c {d.in_c}, out_c {d.out_c}, table words {d.param_words}/{d.weight_words} "
                           f"(the format gives {resize_table_words(d.out_h, rows * cols)}/"
                           f"{resize_table_words(d.out_w, rows * cols)})")
    if d.op == "LUT" and d.param_words * rows * cols < 256:
        raise ProgramError(f"{where}: a {d.param_words}-word table holds fewer than 256 bytes")


def _add_params(d, in1_zp, out_zp, act_min, act_max):
    """`quant.ref.add_int8`'s parameters from an ADD's fields (an ADD descriptor's, or a RESADD CONV's, whose input 1
    is the conv's output at zero point out_zp and whose output takes add_zp and the add clamps)."""
    return dict(input1_offset=-in1_zp, input2_offset=-d.in2_zp, left_shift=d.left_shift,
                input1_multiplier=d.in_mult, input1_shift=d.in_shift, input2_multiplier=d.in2_mult,
                input2_shift=d.in2_shift, output_multiplier=d.out_mult, output_shift=d.out_shift,
                output_offset=out_zp, act_min=act_min, act_max=act_max)


def _second_input_tiles(sram, d, cols):
    """The second input of an ADD with ZPAD2 or a RESADD CONV as the die reads it: the words of its in2_ct tiles
    (all their lanes, the padding lanes too), the zero point in2_zp for the output's tiles past them; out_c
    channels."""
    x2 = np.full((d.out_h, d.out_w, d.out_ct * cols), d.in2_zp, np.int8)
    x2[:, :, :d.in2_ct * cols] = read_tensor(sram, d.in2_addr, d.in2_h, d.in2_w, d.in2_c, lanes=True)
    return x2[:, :, :d.out_c]


def step(i, d, sram, wsram, rows, cols, max_channels=None, dual_banks=None, config=None):
    """Run one descriptor on the activation SRAM: read by address, compute with quant.ref, write by address.
    `dual_banks`: words per bank of an activation SRAM with two read ports (None: one read port); `config`: the
    die's configuration, which a DWCONV with POOL2 needs (whether its line walk can run it)."""
    _check(i, d, cols, rows, max_channels, dual_banks, config)
    where = f"descriptor {i} ({d.op})"
    if d.flags & PACKED:
        x = read_packed(sram, d.in_addr, d.in_h, d.in_w, d.in_c)
    else:
        x = read_tensor(sram, d.in_addr, d.in_h, d.in_w, d.in_c)
    geo = dict(stride=(d.stride_h, d.stride_w), dilation=(1, 1),
               pads=(d.pad_top, d.pad_bottom, d.pad_left, d.pad_right))
    if d.op in ("CONV", "DWCONV"):
        records = _region(wsram, d.param_addr, d.param_words, where)
        block = _region(wsram, d.weight_addr, d.weight_words, where)
        if d.op == "CONV" and d.flags & PACKED:
            w = unpack_im2col_weights(block, d.out_c, d.kernel_h, d.kernel_w, d.in_c, rows, cols)
            acc = ref.conv2d_acc(x[None], w, input_offset=-d.in_zp, **geo)
        elif d.op == "CONV" and d.flags & PAIR:
            w = unpack_pair_weights(block, d.out_c, d.kernel_h, d.kernel_w, d.in_c, rows, cols)
            acc = ref.conv2d_acc(x[None], w, input_offset=-d.in_zp, **geo)
        elif d.op == "CONV":
            w = unpack_conv_weights(block, d.out_c, d.kernel_h, d.kernel_w, d.in_c, rows, cols)
            acc = ref.conv2d_acc(x[None], w, input_offset=-d.in_zp, **geo)
        else:
            w = unpack_dw_weights(block, d.kernel_h, d.kernel_w, d.out_c, rows, cols)[None]
            acc = ref.depthwise_conv2d_acc(x[None], w, 1, input_offset=-d.in_zp, **geo)
        if d.flags & FCSCALE:
            bias, scale = unpack_fc_params(records, d.out_c, rows, cols)
            out = ref.requantize_acc_double(acc, bias, scale, d.out_zp, d.act_min, d.act_max)[0]
        else:
            bias, mult, shift = unpack_params(records, d.out_c, rows, cols)
            if np.any((shift < -31) | (shift > 31)):      # the RTL's shift is 5 bits of magnitude
                raise ProgramError(f"{where}: a parameter record's shift {int(shift[(shift < -31) | (shift > 31)][0])}"
                                   f" is outside -31..31")
            out = ref.requantize_acc(acc, bias, mult, shift, d.out_zp, d.act_min, d.act_max)[0]
        if d.op == "DWCONV" and d.flags & POOL2:     # the input's 2x2 stride-2 max pool, written beside
            pool = ref.max_pool(x[None, :2 * d.out_h, :2 * d.out_w], (2, 2), (2, 2), (0, 0, 0, 0), d.add_min,
                                d.add_max)[0]
            write_tensor(sram, d.in2_addr, pool, d.in_zp)
        if d.op == "CONV" and d.flags & RESADD:    # the fused ADD: the conv's output (zero point out_zp) + residual
            x2 = _second_input_tiles(sram, d, cols)
            out = ref.add_int8(out, x2, _add_params(d, d.out_zp, d.add_zp, d.add_min, d.add_max))
    elif d.op == "ADD":
        if d.flags & ZPAD2:
            x2 = _second_input_tiles(sram, d, cols)
        else:
            x2 = read_tensor(sram, d.in2_addr, d.in2_h, d.in2_w, d.in2_c)
        p = _add_params(d, d.in_zp, d.out_zp, d.act_min, d.act_max)
        out = (ref.sub_int8 if d.flags & NEG2 else ref.add_int8)(x, x2, p)
    elif d.op == "MUL":
        x2 = read_tensor(sram, d.in2_addr, d.in2_h, d.in2_w, d.in2_c)
        p = dict(input1_offset=-d.in_zp, input2_offset=-d.in2_zp, output_offset=d.out_zp,
                 output_multiplier=d.out_mult, output_shift=d.out_shift)
        out = ref.mul_int8(x, x2, p, d.act_min, d.act_max)
    elif d.op == "MEAN":
        p = dict(input_zero_point=d.in_zp, output_zero_point=d.out_zp, count=d.in_h * d.in_w,
                 multiplier=d.out_mult, shift=d.out_shift)
        out = np.clip(ref.mean_int8(x, (0, 1), True, p), d.act_min, d.act_max).astype(np.int8)
    elif d.op == "PRELU":
        alpha = np.frombuffer(read_stream(_region(wsram, d.param_addr, d.param_words, where), 0, d.in_c), np.int8)
        p = dict(input_offset=-d.in_zp, alpha_offset=-d.in2_zp, output_offset=d.out_zp, multiplier_1=d.in_mult,
                 shift_1=d.in_shift, multiplier_2=d.in2_mult, shift_2=d.in2_shift)
        out = np.clip(ref.prelu_int8(x, alpha, p), d.act_min, d.act_max).astype(np.int8)
    elif d.op == "MAXPOOL":
        out = ref.max_pool(x[None], (d.kernel_h, d.kernel_w), geo["stride"], geo["pads"], d.act_min, d.act_max)[0]
    elif d.op == "AVGPOOL":
        out = ref.average_pool_int8(x[None], (d.kernel_h, d.kernel_w), geo["stride"], geo["pads"], d.act_min,
                                    d.act_max)[0]
    elif d.op == "LUT":
        table = np.frombuffer(read_stream(_region(wsram, d.param_addr, d.param_words, where), 0, 256), np.int8)
        out = table[x.astype(np.int64) + 128]
    elif d.op in ("GATHER", "COPY"):
        # COPY is the GATHER of the whole input from (0, 0, 0) with unit steps.
        gather = d.op == "GATHER"
        sy, sx, c0, gh, gw, gc, ty, tx = ((d.src_y, d.src_x, d.src_c, d.g_h, d.g_w, d.g_c, d.dst_sy, d.dst_sx)
                                          if gather else (0, 0, 0, d.in_h, d.in_w, d.in_c, 1, 1))
        ssy, ssx = (d.src_sy, d.src_sx) if gather else (1, 1)
        n = tensor_words(d.out_h, d.out_w, d.out_c, cols)
        if d.out_addr + n > sram.shape[0]:
            raise ProgramError(f"{where}: output runs past the activation SRAM")
        if d.flags & FILL:
            write_tensor(sram, d.out_addr, np.full((d.out_h, d.out_w, d.out_c), d.fill, np.int8), d.out_zp)
        out = read_tensor(sram, d.out_addr, d.out_h, d.out_w, d.out_c)
        box = x[sy:sy + (gh - 1) * ssy + 1:ssy, sx:sx + (gw - 1) * ssx + 1:ssx, c0:c0 + gc]
        out[d.copy_y:d.copy_y + (gh - 1) * ty + 1:ty, d.copy_x:d.copy_x + (gw - 1) * tx + 1:tx,
            d.copy_c:d.copy_c + gc] = box
    elif d.op == "RESIZE":
        tables = []
        for addr, words, n, size, axis in ((d.param_addr, d.param_words, d.out_h, d.in_h, "row"),
                                           (d.weight_addr, d.weight_words, d.out_w, d.in_w, "column")):
            lo, hi, frac = unpack_resize_table(_region(wsram, addr, words, where), n)
            bad = (lo >= size) | (hi >= size) | (frac < -1024) | (frac > 1024)
            if bad.any():
                k = int(np.argmax(bad))
                raise ProgramError(f"{where}: {axis} table entry {k} ({lo[k]}, {hi[k]}, {frac[k]}) is outside the "
                                   f"input ({size}) or the fraction range -1024..1024")
            tables.append((lo, hi, frac))
        out = ref.resize_apply_int8(x, *tables)
    else:
        raise ProgramError(f"{where}: no operation")
    if out.shape != (d.out_h, d.out_w, d.out_c) or out.dtype != np.int8:
        raise ProgramError(f"{where}: computed {out.dtype}{out.shape}, descriptor says {d.out_h}x{d.out_w}x{d.out_c}")
    write_tensor(sram, d.out_addr, out, d.add_zp if d.op == "CONV" and d.flags & RESADD else d.out_zp)


def execute(rom_bytes, config, input_int8_hwc):
    """Run a ROM image on the simulated die: int8 HWC input -> the graph's outputs (host tail applied)."""
    return execute_trace(rom_bytes, config, input_int8_hwc)[0]


def execute_trace(rom_bytes, config, input_int8_hwc, on_descriptor=None):
    """`execute`, also returning the activation SRAM at the end (int8 [words, cols]).

    `on_descriptor(index, descriptor, sram)` is called after each descriptor, for comparing the RTL's SRAM
    layer by layer. Words nobody wrote hold seeded random bytes, so reading one shows up as wrong outputs.
    """
    rom = load_rom(rom_bytes, config)
    rows, cols = config.array_rows, config.array_cols
    wsram = rom.weight_sram()
    sram = np.random.default_rng(0x5CA).integers(-128, 128, (config.act_banks * config.sram_bank_bytes // cols,
                                                             cols)).astype(np.int8)
    spec = rom.io["input"]
    x = np.asarray(input_int8_hwc)
    if x.dtype != np.int8 or list(x.shape) != spec["hwc"]:
        raise ValueError(f"input must be int8 {'x'.join(map(str, spec['hwc']))} (HWC), got {x.dtype} "
                         f"{'x'.join(map(str, x.shape))}")
    if spec.get("ppw"):
        write_packed(sram, spec["addr"], x, spec["zero_point"][0])
    else:
        write_tensor(sram, spec["addr"], x, spec["zero_point"][0])

    stream = wsram.reshape(-1)           # the program is a byte stream from word 0
    i = 0
    while True:
        start = i * DESCRIPTOR_BYTES
        if start + DESCRIPTOR_BYTES > stream.size:
            raise ProgramError(f"program runs past the weight SRAM at descriptor {i} without END")
        d = unpack(stream[start:start + DESCRIPTOR_BYTES].tobytes(), i)
        if d.op == "END":
            break
        step(i, d, sram, wsram, rows, cols, config.max_channels,
             config.act_bank_words if config.act_read_ports == 2 else None, config)
        if on_descriptor is not None:
            on_descriptor(i, d, sram)
        i += 1
    if i + 1 != rom.descriptors:
        raise ProgramError(f"program ended after {i + 1} descriptors, the ROM header says {rom.descriptors}")

    die_outputs = {}
    for t in rom.io["die_outputs"]:
        h, w, c = t["hwc"]
        die_outputs[t["name"]] = read_tensor(sram, t["addr"], h, w, c)
    return host_outputs(rom.io, die_outputs), sram


def host_outputs(io, die_outputs):
    """The graph's outputs from the die's output tensors ({name: int8 HWC}) and the ROM's model I/O section:
    the host tail (RESHAPE, CONCATENATION, SOFTMAX, ...) run by the graph executor. The RTL's host side uses
    this too, so the die and the golden executor share everything after the die."""

    env = {}
    for t in io["die_outputs"]:
        env[t["name"]] = np.asarray(die_outputs[t["name"]]).reshape(t["shape"])
    host = io["host"]
    if host["ops"]:
        tensors = {}
        for t in host["tensors"]:
            q = None
            if "scale" in t:
                q = QuantParams(np.array(t["scale"], np.float32), np.array(t["zero_point"], np.int64), t["axis"])
            data = np.array(t["data"], t["dtype"]).reshape(t["shape"]) if "data" in t else None
            tensors[t["name"]] = Tensor(t["name"], tuple(t["shape"]), t["dtype"], data=data, quant=q)
        ops = [Op(o["kind"], o["inputs"], o["outputs"], o["opts"], name=o["name"]) for o in host["ops"]]
        produced = {n for o in ops for n in o.outputs}
        tail = Graph(tensors=tensors, ops=ops, inputs=host["inputs"],
                     outputs=[t["name"] for t in io["outputs"] if t["name"] in produced])
        trace = {}
        run_graph(tail, [env[n] for n in host["inputs"]], trace=trace)
        env.update({k: v for k, v in trace.items() if k in produced})
    return [env[t["name"]] for t in io["outputs"]]
