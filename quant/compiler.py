"""The compiler: a lowered int8 Graph and a DieConfig in, the layer program, SRAM plan and weight blocks out.

Formats are specified in `quant/program.py`; the ROM image that carries the result is `quant/romimage.py`.
"""

from dataclasses import dataclass, field
from math import gcd

import numpy as np

from . import elementwise, ref, timing
from . import program as fmt
from .arith import activation_range
from .executor import (
    add_params,
    conv_params,
    fully_connected_params,
    mean_axes,
    mean_params,
    mul_params,
    op_pads,
    prelu_params,
    run_graph,
)
from .graph import Graph, ModelError, Op, Tensor

__all__ = ["compile_graph", "CompiledModel", "Layer", "HOST_OPS", "LUT_OPS", "bank_use"]

# Operators the host runs after the die when they sit at the tail of the graph (their inputs become the die's
# outputs): layout the host does for free while unpacking CSI-2, and SOFTMAX, whose fixed-point reference kernel
# (exp, a Newton-Raphson reciprocal, a row-wide sum) would cost die area for a few hundred values per frame.
# LOGISTIC and QUANTIZE (int8 -> int8) are elementwise, so they run on the die (LUT) unless their input already
# comes from the host (LiteRT's quantizer puts a QUANTIZE between a tail RESHAPE and a requantizing CONCATENATION).
HOST_OPS = ("RESHAPE", "CONCATENATION", "SOFTMAX", "LOGISTIC", "QUANTIZE", "DEQUANTIZE")
_HOST_IF_FED_BY_HOST = ("LOGISTIC", "QUANTIZE")

# Elementwise int8 -> int8 operators: any function of one int8 value is a 256-entry table (LUT opcode).
LUT_OPS = ("LOGISTIC", "QUANTIZE", *elementwise.LUT_KINDS)

_DIE_KINDS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "SUB", "MUL", "MEAN", "AVERAGE_POOL_2D",
              "MAX_POOL_2D", "PAD", "CONCATENATION", "RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR",
              "DEPTH_TO_SPACE", "SPACE_TO_DEPTH", "STRIDED_SLICE", "SLICE", "ZERO_INSERT", *LUT_OPS)
_LIMITS = {"u8": 0xFF, "u16": 0xFFFF}


@dataclass
class Layer:
    """One compiled layer: a graph operator and the descriptors it became, with its cost."""

    index: int
    name: str
    kind: str                    # graph operator (CONV_2D, ...)
    op: str                      # die opcode name (CONV, DWCONV, ADD, MAXPOOL, AVGPOOL, COPY)
    inputs: list                 # shapes of the activation inputs
    output: tuple                # shape of the output
    macs: int = 0
    weights: int = 0             # weight values (filter elements; bias and requantization not counted)
    weight_words: int = 0        # weight-SRAM words of its weight block
    param_words: int = 0         # weight-SRAM words of its parameter records
    weight_bytes: int = 0        # weight-SRAM bytes of both blocks
    act_bytes: int = 0           # activation-SRAM bytes of its inputs and output
    cycles: int = 0              # NPU cycles of its descriptors (quant.timing), as the die's counters count them
    descriptors: list = field(default_factory=list)
    fused: int = -1              # an ADD run by layer `fused`'s CONV in its back end (RESADD), a MAX_POOL by its
                                 # DWCONV (POOL2): no descriptor


@dataclass
class CompiledModel:
    """What the compiler produced for one configuration; `romimage.build_rom` serializes it."""

    name: str
    config: object
    layers: list
    descriptors: list            # program.Descriptor, END last
    program: np.ndarray          # uint8 [words, WB] per region, in weight-space order
    params: np.ndarray
    dw_weights: np.ndarray
    weights: np.ndarray
    io: dict                     # model I/O description (romimage section MIO)
    tensors: dict                # activation tensor -> {"addr", "words", "hwc", "start", "end"}
    act_words: int               # activation-SRAM words in use at the peak (highest address + 1)
    notes: list = field(default_factory=list)    # one line per choice of the planner, for reports

    @property
    def weight_words(self):
        return sum(r.shape[0] for r in (self.program, self.params, self.dw_weights, self.weights))

    @property
    def weight_bytes(self):
        return self.weight_words * self.config.weight_word_bytes

    @property
    def act_bytes(self):
        return self.act_words * self.config.act_word_bytes

    @property
    def macs(self):
        return sum(layer.macs for layer in self.layers)

    @property
    def weight_count(self):
        return sum(layer.weights for layer in self.layers)

    def weight_sram(self):
        """uint8 [words, WB]: the weight SRAM image from word 0 (program, params, dw weights, weights)."""
        return np.concatenate([self.program, self.params, self.dw_weights, self.weights])


class _NoFit(ModelError):
    """Only the activation SRAM is short: `excess` words at the peak, `live` the tensors (each a list of the
    names sharing one buffer, largest first) live at the busiest step."""

    def __init__(self, excess, live, message):
        super().__init__(message)
        self.excess, self.live, self.message = excess, live, message


def bank_use(used_bytes, bank_bytes, banks):
    """Bytes used in each of `banks` banks when `used_bytes` fill them from the lowest address."""
    return [max(0, min(bank_bytes, used_bytes - b * bank_bytes)) for b in range(banks)]


def _ceil(a, b):
    return -(-a // b)


def _scalar_quant(graph, name, what):
    t = graph.tensor(name)
    if t.quant is None:
        raise ModelError(f"{what}: tensor '{name}' has no quantization (the compiler needs a full-int8 model)")
    if t.quant.per_channel:
        raise ModelError(f"{what}: tensor '{name}' is quantized per channel; activations must be per tensor")
    return t.quant.scalar()


def _hwc(shape, what):
    """(H, W, C) of an activation shape with batch 1: NHWC, [1, W, C], [1, C] or [C]."""
    shape = tuple(int(d) for d in shape)
    if any(d <= 0 for d in shape):
        raise ModelError(f"{what}: shape {shape} is not fully defined (dynamic or empty dimensions)")
    if len(shape) == 4:
        if shape[0] != 1:
            raise ModelError(f"{what}: batch {shape[0]} (the die runs one frame at a time, batch 1)")
        return shape[1], shape[2], shape[3]
    if len(shape) == 3 and shape[0] == 1:
        return 1, shape[1], shape[2]
    if len(shape) == 2 and shape[0] == 1:
        return 1, 1, shape[1]
    if len(shape) == 1:
        return 1, 1, shape[0]
    raise ModelError(f"{what}: shape {shape} has no single-frame HWC layout")


def _partition(graph):
    """Indices of the host-tail operators: HOST_OPS whose outputs only feed host operators or graph outputs."""
    consumers = graph.consumers()
    index = {id(op): i for i, op in enumerate(graph.ops)}
    host = set()
    for i in range(len(graph.ops) - 1, -1, -1):
        op = graph.ops[i]
        if op.kind not in HOST_OPS:
            continue
        users = [u for o in op.outputs for u in consumers.get(o, [])]
        if all(index[id(u)] in host for u in users):
            host.add(i)
    producers = graph.producers()
    for i in sorted(host):
        op = graph.ops[i]
        if op.kind in _HOST_IF_FED_BY_HOST and index.get(id(producers.get(op.inputs[0])), -1) not in host:
            host.discard(i)                   # fed by the die: a LUT there, its output a die output
    return host


class _Compiler:
    def __init__(self, graph, config, pack=()):
        self.g = graph
        self.cfg = config
        self.rows, self.cols = config.array_rows, config.array_cols
        self.wb = config.weight_word_bytes
        self.layers = []
        self.descs = []              # (Descriptor, {field: tensor name}) filled with addresses later
        self.phys = {}               # activation tensor -> (H, W, C) as stored
        self.root = {}               # tensor -> tensor owning its storage (RESHAPE aliases share it)
        self.blocks = {"params": [], "dw": [], "conv": []}    # (layer, Descriptor, uint8 words)
        self.packed = {}             # pixel-packed tensor (the network input, when it can be) -> pixels per word
        self.layer_ops = []          # the graph operator of each layer
        self.want = set(pack)        # tensors the planner stores pixel-packed (`_plan`): the superpixel layout
        self.sp = {}                 # superpixel tensor -> pixels per word (its phys is (H, W / ppw, ppw * C))
        self.logical = {}            # activation tensor -> (H, W, C) of the operator (phys is how it is stored)
        self.temps = {}              # layout-conversion temporary -> the layer whose descriptors make and read it
        self.converted = set()       # layers that read a converted temporary (never in place)
        self.zpad = set()            # channel PAD outputs left to their ADDs (ZPAD2): stored as the PAD's input

    # --- helpers ---------------------------------------------------------------------------------------------
    def act(self, name, what):
        """(H, W, C) of an activation as its operators see it (`phys` is how it is stored)."""
        if name not in self.phys:
            t = self.g.tensor(name)
            if t.is_const:
                raise ModelError(f"{what}: input '{name}' is a constant; the die takes activations here")
            raise ModelError(f"{what}: tensor '{name}' is used before it is produced")
        return self.logical.get(name, self.phys[name])

    def define(self, name, hwc, what, packable=False):
        """Declare an operator's output; returns its pixels per word: > 1 when the planner packs it and the
        operator can write the superpixel layout (`packable`), else 1 (channel-tiled)."""
        t = self.g.tensor(name)
        if t.dtype != "int8":
            raise ModelError(f"{what}: output '{name}' is {t.dtype}; the die computes int8 tensors only")
        if int(np.prod(hwc)) != int(np.prod(t.shape)):
            raise ModelError(f"{what}: output '{name}' has shape {tuple(t.shape)}, the operator makes {hwc}")
        self.phys[name] = hwc
        self.logical[name] = hwc
        self.root[name] = name
        ppw = _superpixels(hwc, self.cols)
        if packable and name in self.want and ppw > 1:
            self.phys[name] = (hwc[0], hwc[1] // ppw, ppw * hwc[2])
            self.sp[name] = ppw
            return ppw
        return 1

    def temporary(self, layer, name, phys, logical, ppw):
        """A layout-conversion temporary of `layer` (live only at its step)."""
        tmp = f"{name}@{layer.index}:{'tiled' if ppw == 1 else f'ppw{ppw}'}"
        while tmp in self.phys:
            tmp += "'"
        self.phys[tmp], self.logical[tmp], self.root[tmp] = phys, logical, tmp
        if ppw > 1:
            self.sp[tmp] = ppw
        self.temps[tmp] = layer.index
        self.converted.add(layer.index)
        return tmp

    def relayout(self, layer, name, ppw):
        """`name` stored with `ppw` pixels per word (1: channel-tiled): itself, or a temporary that GATHERs of
        `layer` fill from it (one per pixel slot of a word: exact copies)."""
        have = self.sp.get(name, 1)
        if have == ppw or name in self.packed:
            return name
        h, w, c = self.act(name, layer.name)
        if have > 1 and ppw > 1:
            name = self.relayout(layer, name, 1)
        zp = _scalar_quant(self.g, name.split("@")[0], layer.name)[1]
        p = max(have, ppw)
        phys = (h, w // ppw, ppw * c) if ppw > 1 else (h, w, c)
        tmp = self.temporary(layer, name, phys, (h, w, c), ppw)
        if ppw > 1:     # slot r of superpixel X is pixel p*X + r
            boxes = [((0, r, 0), (1, p), (h, w // p, c), (0, 0, r * c), (1, 1)) for r in range(p)]
        else:
            boxes = [((0, 0, r * c), (1, 1), (h, w // p, c), (0, r, 0), (1, p)) for r in range(p)]
        self.gathers(layer, layer.name, name, tmp, boxes, zp)
        return tmp

    def operand2(self, layer, name, ppw, first):
        """The second input of an ADD/SUB/MUL for an output with `ppw` pixels per word: the first input's shape
        relaid out, a 1x1x1 as it is, a 1x1xC broadcast repeated ppw times along C (a superpixel's channels)."""
        if self.act(name, layer.name) == self.act(first, layer.name):
            return self.relayout(layer, name, ppw)
        h, w, c = self.act(name, layer.name)
        if ppw == 1 or c == 1:
            return name
        zp = _scalar_quant(self.g, name, layer.name)[1]
        tmp = self.temporary(layer, name, (1, 1, ppw * c), (1, 1, ppw * c), 1)
        self.gathers(layer, layer.name, name, tmp, [((0, 0, 0), (1, 1), (1, 1, c), (0, 0, r * c), (1, 1))
                                                    for r in range(ppw)], zp)
        return tmp

    def gathers(self, layer, what, x, out, boxes, zo, fill=True):
        """GATHER descriptors of `layer` copying the boxes (src (y, x, c), src steps (y, x), size (h, w, c),
        dst (y, x, c), dst steps) of `x` into `out`, the first filling `out` with its zero point (if `fill`)."""
        for i, (src, sstep, size, dst, dstep) in enumerate(boxes):
            i = i if fill else 1
            self.check(what, src_y=(src[0], "u16"), src_x=(src[1], "u16"), src_c=(src[2], "u16"),
                       g_h=(size[0], "u16"), g_w=(size[1], "u16"), g_c=(size[2], "u16"), src_sy=(sstep[0], "u8"),
                       src_sx=(sstep[1], "u8"), dst_sy=(dstep[0], "u8"), dst_sx=(dstep[1], "u8"),
                       copy_y=(dst[0], "u16"), copy_x=(dst[1], "u16"), copy_c=(dst[2], "u16"))
            desc = fmt.Descriptor(opcode=fmt.OPCODES["GATHER"], flags=fmt.FILL if i == 0 else 0, out_zp=zo,
                                  fill=zo if i == 0 else 0, src_y=src[0], src_x=src[1], src_c=src[2], g_h=size[0],
                                  g_w=size[1], g_c=size[2], src_sy=sstep[0], src_sx=sstep[1], dst_sy=dstep[0],
                                  dst_sx=dstep[1], copy_y=dst[0], copy_x=dst[1], copy_c=dst[2])
            self.emit(layer, desc, {"in_addr": x, "out_addr": out})

    def check(self, what, **values):
        for key, (value, kind) in values.items():
            if not 0 <= value <= _LIMITS[kind]:
                raise ModelError(f"{what}: {key} {value} exceeds the descriptor's {kind} field "
                                 f"(at most {_LIMITS[kind]})")

    def words(self, name):
        """Activation words of a tensor in its layout (a superpixel tensor is an ordinary tiled one)."""
        if name in self.packed:
            return fmt.packed_words(*self.phys[name], self.cols)
        return fmt.tensor_words(*self.phys[name], self.cols)

    def layer(self, op, die_op, inputs, out, **kw):
        layer = Layer(index=len(self.layers), name=op.name or op.outputs[0], kind=op.kind, op=die_op,
                      inputs=[tuple(self.g.tensor(n).shape) for n in inputs],
                      output=tuple(self.g.tensor(out).shape), **kw)
        layer.act_bytes = sum(self.words(n) for n in (*inputs, out)) * self.cols
        self.layers.append(layer)
        self.layer_ops.append(op)
        return layer

    def emit(self, layer, desc, names):
        """Queue a descriptor; `names` maps address fields to the tensors whose addresses go there."""
        desc.layer = layer.index
        for prefix, name in (("in", names.get("in_addr")), ("in2", names.get("in2_addr")),
                             ("out", names.get("out_addr"))):
            if name is not None:
                h, w, c = self.phys[name]
                self.check(layer.name, **{f"{prefix}_h": (h, "u16"), f"{prefix}_w": (w, "u16"),
                                          f"{prefix}_c": (c, "u16")})
                setattr(desc, f"{prefix}_h", h)
                setattr(desc, f"{prefix}_w", w)
                setattr(desc, f"{prefix}_c", c)
                setattr(desc, f"{prefix}_ct", _ceil(c, self.cols))
        layer.descriptors.append(len(self.descs))
        self.descs.append((desc, names))

    def window(self, op, in_hw, kernel, what):
        """(stride, (top, bottom, left, right), (out_h, out_w)) of a convolution or pooling window."""
        opts = op.opts
        sh, sw = (int(v) for v in opts.get("stride", (1, 1)))
        if tuple(int(v) for v in opts.get("dilation", (1, 1))) != (1, 1):
            raise ModelError(f"{what}: dilation {tuple(opts['dilation'])} is not supported by the die")
        kh, kw = kernel
        h, w = in_hw
        pads = tuple(int(v) for v in op_pads(self.g, op))
        oh = ref.window_output_size(h, kh, sh, 1, pads[0], pads[1])
        ow = ref.window_output_size(w, kw, sw, 1, pads[2], pads[3])
        self.check(what, kernel_h=(kh, "u8"), kernel_w=(kw, "u8"), stride_h=(sh, "u8"), stride_w=(sw, "u8"),
                   pad_top=(pads[0], "u8"), pad_bottom=(pads[1], "u8"), pad_left=(pads[2], "u8"),
                   pad_right=(pads[3], "u8"))
        if min(sh, sw) < 1 or oh < 1 or ow < 1:
            raise ModelError(f"{what}: window {kh}x{kw} stride {sh}x{sw} on {h}x{w} has no output")
        return (sh, sw), pads, (oh, ow)

    def conv(self, op, depthwise=False, fc=False):
        what = op.label()
        x_name, w_name = op.inputs[0], op.inputs[1]
        b_name = op.inputs[2] if len(op.inputs) > 2 else ""
        h, w, c = self.act(x_name, what)
        wt = self.g.tensor(w_name)
        if not wt.is_const or wt.dtype != "int8":
            raise ModelError(f"{what}: filter '{w_name}' must be a constant int8 tensor")
        if wt.quant is None:
            raise ModelError(f"{what}: filter '{w_name}' has no quantization")
        weights = wt.data.astype(np.int8)
        if fc:
            oc = weights.shape[0]
            ic = int(np.prod(weights.shape[1:]))
            weights = weights.reshape(oc, ic)
            if c == ic:                            # one 1x1 conv per pixel (usually the single 1x1 "pixel")
                weights = weights.reshape(oc, 1, 1, ic)
            elif h * w * c == ic:                  # FC on a flattened H x W x C tensor: an H x W VALID conv
                weights = weights.reshape(oc, h, w, c)
            else:
                raise ModelError(f"{what}: {ic} input features do not match input '{x_name}' ({h}x{w}x{c})")
            kernel = weights.shape[1:3]
            stride, pads = (1, 1), (0, 0, 0, 0)
            oh, ow = h - kernel[0] + 1, w - kernel[1] + 1
            p = fully_connected_params(self.g, op)
            if p["weights_offset"] != 0:
                raise ModelError(f"{what}: weights '{w_name}' have a non-zero zero point (the die's MAC array "
                                 f"takes symmetric int8 weights)")
        elif depthwise:
            if weights.ndim != 4 or weights.shape[0] != 1:
                raise ModelError(f"{what}: depthwise filter shape {weights.shape} is not 1HWO")
            if weights.shape[3] != c or int(op.opts.get("depth_multiplier", 1) or 1) != 1:
                raise ModelError(f"{what}: depth multiplier {weights.shape[3] / max(c, 1):g} "
                                 f"({c} -> {weights.shape[3]} channels); the die runs multiplier 1")
            kernel = weights.shape[1:3]
            stride, pads, (oh, ow) = self.window(op, (h, w), kernel, what)
            oc = c
            p = conv_params(self.g, op)
        else:
            if weights.ndim != 4 or weights.shape[3] != c:
                raise ModelError(f"{what}: filter shape {weights.shape} does not take {c} input channels")
            kernel = weights.shape[1:3]
            stride, pads, (oh, ow) = self.window(op, (h, w), kernel, what)
            oc = weights.shape[0]
            p = conv_params(self.g, op)
        if np.any(np.asarray(wt.quant.zero_point) != 0):
            raise ModelError(f"{what}: filter '{w_name}' has non-zero zero points (TFLite int8 filters are "
                             f"symmetric)")
        if b_name:
            bt = self.g.tensor(b_name)
            if not bt.is_const or bt.dtype != "int32" or bt.data.size != oc:
                raise ModelError(f"{what}: bias '{b_name}' must be a constant int32 tensor of {oc} values")
            bias = bt.data.astype(np.int64).reshape(-1)
        else:
            bias = np.zeros(oc, np.int64)
        if fc:
            # LiteRT's reference FULLY_CONNECTED rescales in float64, not by the Q31 multiplier (FCSCALE).
            scale = np.broadcast_to(np.asarray(p["effective_scale"], np.float64), (oc,))
        else:
            mult = np.broadcast_to(np.asarray(p["multiplier"], np.int64), (oc,))
            shift = np.broadcast_to(np.asarray(p["shift"], np.int64), (oc,))
        out_name = op.outputs[0]
        kh, kw = kernel
        packed = x_name in self.packed
        po = self.define(out_name, (oh, ow, oc), what, packable=not fc and not packed)
        layer = self.layer(op, "CONV" if packed or not depthwise else "DWCONV", [x_name], out_name)
        pi = self.sp.get(x_name, 1)
        if pi > 1 and (po == 1 or (po * stride[1]) % pi):
            x_name, pi = self.relayout(layer, x_name, 1), 1          # no superpixel stride: read it tiled
        logical_macs = oh * ow * oc * kh * kw * (1 if depthwise else weights.shape[3])
        if pi > 1 or po > 1:
            # The superpixel CONV (see `superpixel_conv`); a depthwise one becomes a CONV (lanes mix).
            weights, bias, mult, shift, kw, sw, pl, pr = superpixel_conv(
                weights, bias, mult, shift, depthwise, pi, po, kw, stride[1], pads[2], w, ow)
            stride, pads, depthwise = (stride[0], sw), (pads[0], pads[1], pl, pr), False
            self.check(what, kernel_w=(kw, "u8"), stride_w=(sw, "u8"), pad_left=(pl, "u8"), pad_right=(pr, "u8"))
            layer.op = "CONV"
        if packed:
            die_op = "CONV"
            tile_words = _ceil(kh * kw * c, self.cols)
        elif depthwise:
            die_op = "DWCONV"
            tile_words = _ceil(kh * kw, self.rows)
        else:
            die_op = "CONV"
            tile_words = kh * kw * _ceil(weights.shape[3], self.cols)
        oc_phys = weights.shape[0] if not depthwise else oc
        layer.macs, layer.weights = logical_macs, int(np.asarray(self.g.tensor(w_name).data).size)
        layer.weight_words, layer.param_words = 0, 0
        # The conv engine's parameter buffer holds `max_channels` output channels: a wider CONV (a 1404-landmark
        # head) runs as several descriptors over slices of its output channels, each into a channel-tiled
        # temporary GATHERed into place; a wider DWCONV also reads its slice of the input from a GATHERed
        # temporary (a slice of a channel-tiled tensor is not one in place).
        limit = param_buffer_channels(self.cfg)
        chunks = [(0, oc_phys, out_name, x_name)]
        if oc_phys > limit:
            chunks = []
            for k0 in range(0, oc_phys, limit):
                n = min(limit, oc_phys - k0)
                source = x_name
                if depthwise:
                    source = self.temporary(layer, x_name, (h, w, n), (h, w, n), 1)
                    self.gathers(layer, what, x_name, source, [((0, 0, k0), (1, 1), (h, w, n), (0, 0, 0), (1, 1))],
                                 -p["input_offset"], fill=False)
                chunks.append((k0, k0 + n, self.temporary(layer, out_name, (oh, ow, n), (oh, ow, n), 1), source))
        for k0, k1, target, source in chunks:
            # PAIR: an input whose last channel tile is at most half full leaves half of the lanes idle in its
            # words; oc tiles in pairs share one such word, one tile per half (`quant.program`): 2*F + 1 issues
            # per pair and tap instead of 2*F + 2 (F full input tiles), an odd last tile F + 1 as without.
            # Taken when it issues less (at least one pair).
            ic_phys, tiles = weights.shape[3], _ceil(k1 - k0, self.rows)
            it = _ceil(ic_phys, self.cols)
            pair = (not (depthwise or packed or fc) and timing.pair_capable(self.cfg)
                    and fmt.pair_fits(ic_phys, self.cols)
                    and timing.tap_issues(tiles, it, True) < timing.tap_issues(tiles, it, False))
            if depthwise:
                block = fmt.pack_dw_weights(weights[0][..., k0:k1], self.rows, self.cols)
            elif packed:
                block = fmt.pack_im2col_weights(weights[k0:k1], self.rows, self.cols)
            elif pair:
                block = fmt.pack_pair_weights(weights[k0:k1], self.rows, self.cols)
            else:
                block = fmt.pack_conv_weights(weights[k0:k1], self.rows, self.cols)
            params = fmt.pack_fc_params(bias[k0:k1], scale[k0:k1], self.rows, self.cols) if fc else \
                fmt.pack_params(bias[k0:k1], mult[k0:k1], shift[k0:k1], self.rows, self.cols)
            layer.weight_words += block.shape[0]
            layer.param_words += params.shape[0]
            part_macs = logical_macs * (k1 - k0) // oc_phys if len(chunks) > 1 else logical_macs
            desc = fmt.Descriptor(opcode=fmt.OPCODES[die_op], kernel_h=kh, kernel_w=kw, stride_h=stride[0],
                                  stride_w=stride[1], pad_top=pads[0], pad_bottom=pads[1], pad_left=pads[2],
                                  pad_right=pads[3], weight_words=block.shape[0], param_words=params.shape[0],
                                  in_zp=-p["input_offset"], out_zp=p["output_zero_point"], act_min=p["act_min"],
                                  act_max=p["act_max"], oc_tiles=0 if depthwise else _ceil(k1 - k0, self.rows),
                                  tile_words=kh * kw * (2 * it - 1) if pair else tile_words, macs=part_macs)
            self.check(what, oc_tiles=(desc.oc_tiles, "u16"), tile_words=(desc.tile_words, "u16"))
            self.blocks["params"].append((layer, desc, params))
            self.blocks["dw" if depthwise else "conv"].append((layer, desc, block))
            self.emit(layer, desc, {"in_addr": source, "out_addr": target})
            if fc:
                desc.flags |= fmt.FCSCALE
            if pair:
                desc.flags |= fmt.PAIR
            if packed:
                desc.flags |= fmt.PACKED
                desc.in_ct, desc.in_ppw = tile_words, self.packed[x_name]
        layer.weight_bytes = (layer.weight_words + layer.param_words) * self.wb
        for k0, k1, target, _ in (chunks if len(chunks) > 1 else []):
            self.gathers(layer, what, target, out_name, [((0, 0, 0), (1, 1), (oh, ow, k1 - k0), (0, 0, k0), (1, 1))],
                         p["output_zero_point"], fill=False)

    def scalar_operand(self, op):
        """An ADD/SUB/MUL of an activation and one constant value (a table, LUT)."""
        ts = [self.g.tensor(n) for n in op.inputs[:2]]
        return sum(t.is_const for t in ts) == 1 and all(t.data.size == 1 for t in ts if t.is_const)

    def binary_operands(self, op, commutative):
        """(first, second, swapped) of an ADD/SUB/MUL: the first input has the output's shape, the second is that
        shape too or broadcasts as 1x1xC or 1x1x1 (a commutative operator's inputs may be swapped for it)."""
        what = op.label()
        a, b = op.inputs[0], op.inputs[1]
        ha, hb = self.act(a, what), self.act(b, what)

        def fits(big, small):
            return small in (big, (1, 1, big[2]), (1, 1, 1))

        if fits(ha, hb):
            return a, b, False
        if commutative and fits(hb, ha):
            return b, a, True
        raise ModelError(f"{what}: inputs {ha} and {hb}; the die broadcasts the second input only as 1x1xC or "
                         f"1x1x1" + ("" if commutative else " (and not the first input of a SUB)"))

    def add(self, op):
        what = op.label()
        a, b, swapped = self.binary_operands(op, commutative=op.kind == "ADD")
        if a in self.zpad:                        # a fused channel PAD is the second input (`fusable_pad`)
            a, b, swapped = b, a, not swapped
        out = op.outputs[0]
        p = add_params(self.g, op)
        if swapped:
            p = {k.replace("input1", "#").replace("input2", "input1").replace("#", "input2"): v for k, v in p.items()}
        ppw = self.define(out, self.act(a, what), what, packable=True)
        layer = self.layer(op, "ADD", [a, b], out)
        a, b = self.relayout(layer, a, ppw), self.operand2(layer, b, ppw, a)
        desc = fmt.Descriptor(opcode=fmt.OPCODES["ADD"], in_zp=-p["input1_offset"], in2_zp=-p["input2_offset"],
                              out_zp=p["output_offset"], act_min=p["act_min"], act_max=p["act_max"],
                              left_shift=p["left_shift"], in_mult=p["input1_multiplier"],
                              in_shift=p["input1_shift"], in2_mult=p["input2_multiplier"],
                              in2_shift=p["input2_shift"], out_mult=p["output_multiplier"],
                              out_shift=p["output_shift"], flags=fmt.NEG2 if op.kind == "SUB" else 0)
        if b in self.zpad:
            desc.flags |= fmt.ZPAD2
        self.emit(layer, desc, {"in_addr": a, "in2_addr": b, "out_addr": out})

    def mul(self, op):
        what = op.label()
        a, b, swapped = self.binary_operands(op, commutative=True)
        out = op.outputs[0]
        p = mul_params(self.g, op)
        za, zb = -p["input1_offset"], -p["input2_offset"]
        if swapped:
            za, zb = zb, za
        ppw = self.define(out, self.act(a, what), what, packable=True)
        layer = self.layer(op, "MUL", [a, b], out)
        a, b = self.relayout(layer, a, ppw), self.operand2(layer, b, ppw, a)
        desc = fmt.Descriptor(opcode=fmt.OPCODES["MUL"], in_zp=za, in2_zp=zb, out_zp=p["output_offset"],
                              act_min=p["act_min"], act_max=p["act_max"], out_mult=p["output_multiplier"],
                              out_shift=p["output_shift"])
        self.emit(layer, desc, {"in_addr": a, "in2_addr": b, "out_addr": out})

    def mean(self, op):
        what = op.label()
        x, out = op.inputs[0], op.outputs[0]
        h, w, c = self.act(x, what)
        shape = tuple(self.g.tensor(x).shape)
        if len(shape) != 4 or mean_axes(self.g, op) != [1, 2]:
            raise ModelError(f"{what}: MEAN over axes {mean_axes(self.g, op)} of {shape}; the die averages over "
                             f"H and W (axes 1 and 2) of a single frame")
        if max(h, w) > 255:
            raise ModelError(f"{what}: MEAN over {h}x{w}; the die averages at most 255x255")
        p = mean_params(self.g, op)
        self.define(out, (1, 1, c), what)
        layer = self.layer(op, "MEAN", [x], out)
        x = self.relayout(layer, x, 1)
        desc = fmt.Descriptor(opcode=fmt.OPCODES["MEAN"], in_zp=p["input_zero_point"], out_zp=p["output_zero_point"],
                              act_min=-128, act_max=127, out_mult=p["multiplier"], out_shift=p["shift"])
        self.emit(layer, desc, {"in_addr": x, "out_addr": out})

    def prelu(self, op):
        """PRELU with one alpha is a LUT; with one alpha per channel the PRELU unit (alphas in weight space)."""
        what = op.label()
        alpha = self.g.tensor(op.inputs[1])
        if alpha.is_const and alpha.data.size == 1:
            return self.lut(op)
        x, out = op.inputs[0], op.outputs[0]
        h, w, c = self.act(x, what)
        if not alpha.is_const or alpha.dtype != "int8":
            raise ModelError(f"{what}: alpha '{alpha.name}' must be a constant int8 tensor")
        if alpha.data.size != c or any(d != 1 for d in alpha.data.shape[:-1]):
            raise ModelError(f"{what}: alpha of shape {tuple(alpha.data.shape)}; the die takes one alpha per "
                             f"channel ({c}) or one for all")
        if c > 256:
            raise ModelError(f"{what}: {c} channels; the die's PRELU holds at most 256 alphas")
        p = prelu_params(self.g, op)
        ppw = self.define(out, (h, w, c), what, packable=True)
        # A superpixel's channels are ppw pixels of C: the alphas repeat ppw times.
        block = fmt.stream_words(np.tile(alpha.data.astype(np.int8).reshape(-1), ppw).tobytes(), self.wb)
        layer = self.layer(op, "PRELU", [x], out, param_words=block.shape[0], weights=c,
                           weight_bytes=block.shape[0] * self.wb)
        x = self.relayout(layer, x, ppw)
        desc = fmt.Descriptor(opcode=fmt.OPCODES["PRELU"], param_words=block.shape[0], in_zp=-p["input_offset"],
                              in2_zp=-p["alpha_offset"], out_zp=p["output_offset"], act_min=-128, act_max=127,
                              in_mult=p["multiplier_1"], in_shift=p["shift_1"], in2_mult=p["multiplier_2"],
                              in2_shift=p["shift_2"])
        self.blocks["params"].append((layer, desc, block))
        self.emit(layer, desc, {"in_addr": x, "out_addr": out})

    def pool(self, op):
        what = op.label()
        x = op.inputs[0]
        h, w, c = self.act(x, what)
        kernel = tuple(int(v) for v in op.opts["filter"])
        stride, pads, (oh, ow) = self.window(op, (h, w), kernel, what)
        si, zi = _scalar_quant(self.g, x, what)
        out = op.outputs[0]
        so, zo = _scalar_quant(self.g, out, what)
        if zi != zo or np.float32(si) != np.float32(so):
            # TFLite's int8 pooling kernels do not rescale (they assume equal quantization), and neither does
            # the die: refusing is the only way not to compute something else than the model says.
            raise ModelError(f"{what}: input ({si:g}, {zi}) and output ({so:g}, {zo}) quantization differ")
        act_min, act_max = activation_range(op.opts.get("activation", "NONE"), so, zo)
        self.define(out, (oh, ow, c), what)
        die_op = "MAXPOOL" if op.kind == "MAX_POOL_2D" else "AVGPOOL"
        layer = self.layer(op, die_op, [x], out)
        x = self.relayout(layer, x, 1)
        desc = fmt.Descriptor(opcode=fmt.OPCODES[die_op], kernel_h=kernel[0], kernel_w=kernel[1],
                              stride_h=stride[0], stride_w=stride[1], pad_top=pads[0], pad_bottom=pads[1],
                              pad_left=pads[2], pad_right=pads[3], in_zp=zi, out_zp=zo, act_min=act_min,
                              act_max=act_max)
        self.emit(layer, desc, {"in_addr": x, "out_addr": out})

    def lut(self, op):
        """An elementwise int8 operator as a 256-entry table, computed by the graph executor itself."""
        what = op.label()
        k = next((i for i, n in enumerate(op.inputs) if n and not self.g.tensor(n).is_const), 0)
        x, out = op.inputs[k], op.outputs[0]                           # the activation (a MUL's may be second)
        hwc = self.act(x, what)
        tx, ty = self.g.tensor(x), self.g.tensor(out)
        if tx.dtype != "int8" or ty.dtype != "int8":
            raise ModelError(f"{what}: {tx.dtype} -> {ty.dtype}; the die's LUT maps int8 to int8")
        _, zo = _scalar_quant(self.g, out, what)
        consts = {n: self.g.tensor(n) for i, n in enumerate(op.inputs) if n and i != k}   # a PRELU's alpha, ...
        if any(not t.is_const or t.data.size != 1 for t in consts.values()):
            raise ModelError(f"{what}: a second input that is not one constant; the die's LUT maps one int8 value")
        inputs = ["x" if i == k else n for i, n in enumerate(op.inputs)]
        probe = Graph(tensors={"x": Tensor("x", (1, 256), "int8", quant=tx.quant),
                               "y": Tensor("y", (1, 256), "int8", quant=ty.quant), **consts},
                      ops=[Op(op.kind, inputs, ["y"], dict(op.opts), name=op.name)], inputs=["x"], outputs=["y"])
        table = run_graph(probe, [np.arange(-128, 128, dtype=np.int8).reshape(1, 256)])[0].reshape(256)
        block = fmt.stream_words(table.astype(np.int8).tobytes(), self.wb)
        ppw = self.define(out, hwc, what, packable=True)
        layer = self.layer(op, "LUT", [x], out, param_words=block.shape[0], weight_bytes=block.shape[0] * self.wb)
        x = self.relayout(layer, x, ppw)
        desc = fmt.Descriptor(opcode=fmt.OPCODES["LUT"], param_words=block.shape[0], out_zp=zo)
        self.blocks["params"].append((layer, desc, block))
        self.emit(layer, desc, {"in_addr": x, "out_addr": out})

    def resize(self, op):
        """RESIZE_BILINEAR / RESIZE_NEAREST_NEIGHBOR: the per-axis tables of quant.ref in weight space (the row
        table with the parameter records, the column table with the depthwise blocks)."""
        what = op.label()
        x, out = op.inputs[0], op.outputs[0]
        h, w, c = self.act(x, what)
        oh, ow = (int(v) for v in self.g.tensor(out).shape[1:3])
        if self.wb < fmt.RESIZE_ENTRY_BYTES:
            raise ModelError(f"{what}: weight words of {self.wb} bytes hold no {fmt.RESIZE_ENTRY_BYTES}-byte "
                             f"RESIZE table entry")
        si, zi = _scalar_quant(self.g, x, what)
        so, zo = _scalar_quant(self.g, out, what)
        if zi != zo or np.float32(si) != np.float32(so):
            # LiteRT's int8 resize kernels copy and interpolate raw values: equal quantization is what they mean.
            raise ModelError(f"{what}: input ({si:g}, {zi}) and output ({so:g}, {zo}) quantization differ")
        try:
            rows, cols = ref.resize_tables(op.kind, (h, w), (oh, ow), bool(op.opts.get("align_corners", False)),
                                           bool(op.opts.get("half_pixel_centers", False)))
        except ValueError as e:
            raise ModelError(f"{what}: {e}") from None
        ppw = self.define(out, (oh, ow, c), what, packable=True)
        if ppw == 1:
            row_block, col_block = fmt.pack_resize_table(*rows, self.wb), fmt.pack_resize_table(*cols, self.wb)
            layer = self.layer(op, "RESIZE", [x], out, param_words=row_block.shape[0],
                               weight_words=col_block.shape[0],
                               weight_bytes=(row_block.shape[0] + col_block.shape[0]) * self.wb)
            x = self.relayout(layer, x, 1)
            desc = fmt.Descriptor(opcode=fmt.OPCODES["RESIZE"], param_words=row_block.shape[0],
                                  weight_words=col_block.shape[0], out_zp=zo)
            self.blocks["params"].append((layer, desc, row_block))
            self.blocks["dw"].append((layer, desc, col_block))
            self.emit(layer, desc, {"in_addr": x, "out_addr": out})
            return
        self.resize_packed(op, x, out, (h, w, c), (oh, ow), ppw, rows, cols, zo)

    def resize_packed(self, op, x, out, hwc, out_hw, ppw, rows, cols, zo):
        """A RESIZE into a superpixel output, in bands of output rows: for each band and pixel slot j, the RESIZE
        of output columns j, j + ppw, ... (every ppw-th column table entry) of the band's rows into a small
        channel-tiled temporary, GATHERed to lanes j*C of those superpixels. A packed input is GATHERed into a
        channel-tiled temporary one band's input rows at a time (the row table shifted to them)."""
        what = op.label()
        (_, w, c), (oh, ow) = hwc, out_hw
        pi = self.sp.get(x, 1)
        ocols = ow // ppw
        target = max(1, _RESIZE_BAND_WORDS // (ocols * _ceil(c, self.cols)))
        band = max(d for d in range(1, oh + 1) if oh % d == 0 and d <= target)
        layer = self.layer(op, "RESIZE", [x], out)
        spans = []
        for y0 in range(0, oh, band):
            lo, hi = rows[0][y0:y0 + band], rows[1][y0:y0 + band]
            r0 = int(min(lo.min(), hi.min())) if pi > 1 else 0
            spans.append((y0, r0, int(max(lo.max(), hi.max())) + 1 - r0))
        tmp_out = self.temporary(layer, out, (band, ocols, c), (band, ocols, c), 1)
        tmp_in = x
        if pi > 1:
            n_in = max(n for _, _, n in spans)
            tmp_in = self.temporary(layer, x, (n_in, w, c), (n_in, w, c), 1)
        zx = _scalar_quant(self.g, x, what)[1]
        weight_words = 0
        for y0, r0, n in spans:
            if pi > 1:
                self.gathers(layer, what, x, tmp_in, [((r0, 0, r * c), (1, 1), (n, w // pi, c), (0, r, 0), (1, pi))
                                                      for r in range(pi)], zx)
            row_block = fmt.pack_resize_table(rows[0][y0:y0 + band] - r0, rows[1][y0:y0 + band] - r0,
                                              rows[2][y0:y0 + band], self.wb)
            for j in range(ppw):
                col_block = fmt.pack_resize_table(*(t[j::ppw] for t in cols), self.wb)
                desc = fmt.Descriptor(opcode=fmt.OPCODES["RESIZE"], param_words=row_block.shape[0],
                                      weight_words=col_block.shape[0], out_zp=zo)
                self.blocks["params"].append((layer, desc, row_block))
                self.blocks["dw"].append((layer, desc, col_block))
                weight_words += row_block.shape[0] + col_block.shape[0]
                self.emit(layer, desc, {"in_addr": tmp_in, "out_addr": tmp_out})
                self.gathers(layer, what, tmp_out, out, [((0, 0, 0), (1, 1), (band, ocols, c), (y0, 0, j * c),
                                                          (1, 1))], zo, fill=y0 == 0 and j == 0)
        layer.weight_words, layer.weight_bytes = weight_words, weight_words * self.wb

    def gather(self, op):
        """DEPTH_TO_SPACE / SPACE_TO_DEPTH (b*b GATHERs, a channel block each) and STRIDED_SLICE / SLICE (one)."""
        what = op.label()
        x, out = op.inputs[0], op.outputs[0]
        h, w, c = self.act(x, what)
        shape = tuple(self.g.tensor(x).shape)
        if len(shape) != 4 or (h, w, c) != tuple(shape[1:]):
            raise ModelError(f"{what}: input {shape} is not a single-frame NHWC tensor")
        si, zi = _scalar_quant(self.g, x, what)
        so, zo = _scalar_quant(self.g, out, what)
        if zi != zo or np.float32(si) != np.float32(so):
            raise ModelError(f"{what}: input ({si:g}, {zi}) and output ({so:g}, {zo}) quantization differ")
        o = op.opts
        boxes = []                 # (src (y, x, c), src steps (y, x), size (h, w, c), dst (y, x, c), dst steps)
        if op.kind == "ZERO_INSERT":
            (sh, sw), (zh, zw) = o["stride"], o["size"]
            boxes.append(((0, 0, 0), (1, 1), (min(h, (zh - 1) // sh + 1), min(w, (zw - 1) // sw + 1), c), (0, 0, 0),
                          (sh, sw)))
            out_hwc = (zh, zw, c)
        elif op.kind in ("DEPTH_TO_SPACE", "SPACE_TO_DEPTH"):
            b = int(o["block_size"])
            for dy in range(b):
                for dx in range(b):
                    k = dy * b + dx
                    if op.kind == "DEPTH_TO_SPACE":
                        oc = c // (b * b)
                        boxes.append(((0, 0, k * oc), (1, 1), (h, w, oc), (dy, dx, 0), (b, b)))
                    else:
                        boxes.append(((dy, dx, 0), (b, b), (h // b, w // b, c), (0, 0, k * c), (1, 1)))
            out_hwc = (h * b, w * b, c // (b * b)) if op.kind == "DEPTH_TO_SPACE" else (h // b, w // b, c * b * b)
        else:
            begin, end, strides = o["begin"], o["end"], o["strides"]
            if begin[0] != 0 or end[0] != 1 or strides[3] != 1:
                raise ModelError(f"{what}: begin {list(begin)} end {list(end)} strides {list(strides)}; the die "
                                 f"slices H, W (any step) and C (step 1) of a single frame")
            size = tuple(len(range(bb, e, st)) for bb, e, st in zip(begin[1:], end[1:], strides[1:]))
            boxes.append((tuple(begin[1:]), tuple(strides[1:3]), size, (0, 0, 0), (1, 1)))
            out_hwc = size
        if min(out_hwc) < 1:
            raise ModelError(f"{what}: empty output {out_hwc}")
        ppw = self.define(out, out_hwc, what, packable=True)
        layer = self.layer(op, "GATHER", [x], out)
        x = self.relayout(layer, x, 1)
        if ppw > 1:
            boxes = _superpixel_boxes(boxes, ppw, out_hwc[2])
        self.gathers(layer, what, x, out, boxes, zo)

    def copies(self, op, parts, out, out_hwc, fill):
        """COPY descriptors placing each (tensor, (y, x, c) offset) of `parts` into `out`."""
        what = op.label()
        self.define(out, out_hwc, what)
        layer = self.layer(op, "COPY", [n for n, _ in parts], out)
        parts = [(self.relayout(layer, name, 1), offset) for name, offset in parts]
        for i, (name, (y, x, c)) in enumerate(parts):
            self.check(what, copy_y=(y, "u16"), copy_x=(x, "u16"), copy_c=(c, "u16"))
            zp = _scalar_quant(self.g, out, what)[1]
            desc = fmt.Descriptor(opcode=fmt.OPCODES["COPY"], flags=fmt.FILL if i == 0 else 0, out_zp=zp,
                                  fill=fill if i == 0 else 0, copy_y=y, copy_x=x, copy_c=c)
            self.emit(layer, desc, {"in_addr": name, "out_addr": out})

    def fusable_pad(self, out, consumers):
        """Whether PAD output `out` can stay unmaterialized (ZPAD2): every reader is an ADD (or a SUB, as its second
        input) of two activations of its shape that reads it once, the other input not a PAD's output (an ADD
        takes one ZPAD2 input), and it is no graph output."""
        users = consumers.get(out, [])
        if not users or out in self.g.outputs:
            return False
        producers = self.g.producers()
        shape = tuple(self.g.tensor(out).shape)
        for u in users:
            if u.kind not in ("ADD", "SUB") or len(u.inputs) != 2 or list(u.inputs).count(out) != 1 \
                    or (u.kind == "SUB" and u.inputs[1] != out):
                return False
            other = self.g.tensor(u.inputs[1] if u.inputs[0] == out else u.inputs[0])
            if other.is_const or tuple(other.shape) != shape or getattr(producers.get(other.name), "kind", "") == "PAD":
                return False
        return True

    def pad(self, op, consumers):
        what = op.label()
        x = op.inputs[0]
        h, w, c = self.act(x, what)
        pt = self.g.tensor(op.inputs[1])
        if not pt.is_const:
            raise ModelError(f"{what}: paddings '{op.inputs[1]}' must be constant")
        pads = np.asarray(pt.data, np.int64).reshape(-1, 2)
        shape = tuple(self.g.tensor(x).shape)
        if len(shape) != 4 or pads.shape[0] != 4 or np.any(pads[0] != 0) or np.any(pads < 0):
            raise ModelError(f"{what}: paddings {pads.tolist()} on {shape}; the die pads H, W and C of a "
                             f"single frame")
        if len(op.inputs) > 2 and op.inputs[2]:
            raise ModelError(f"{what}: a PADV2 value input (the importer turns constant ones into opts['value'])")
        si, zi = _scalar_quant(self.g, x, what)
        so, zo = _scalar_quant(self.g, op.outputs[0], what)
        if zi != zo or np.float32(si) != np.float32(so):
            raise ModelError(f"{what}: input and output quantization differ")
        value = op.opts.get("value", zo)
        if not isinstance(value, (int, np.integer)) or not -128 <= value <= 127:
            raise ModelError(f"{what}: pad value {value!r} is not an int8")
        (t, b), (lft, r), (c0, c1) = pads[1], pads[2], pads[3]
        out = op.outputs[0]
        by_layout = (t, b, lft, r, c0) == (0, 0, 0, 0, 0) and value == zi and x not in self.sp \
            and x not in self.packed and out not in self.want and x != self.g.inputs[0]
        if by_layout and _ceil(c + int(c1), self.cols) == _ceil(c, self.cols):
            # Channel PAD by layout: the new channels are padding lanes of the input's words, which every
            # operator writes with its output zero point (= the pad value here): the output is the input's words.
            self.phys[out] = (h, w, c + int(c1))
            self.root[out] = self.root[x]
            return
        if by_layout and self.fusable_pad(out, consumers):
            # New channel tiles read only by ADDs: no descriptor; each ADD reads the input's tiles as its second
            # input and takes the zero point (the pad value) for the others (ZPAD2). The output is the input's
            # words as stored, (H, W, C + c1) as the ADD sees it.
            self.phys[out] = self.phys[x]
            self.logical[out] = (h, w, c + int(c1))
            self.root[out] = self.root[x]
            self.zpad.add(out)
            return
        self.copies(op, [(x, (int(t), int(lft), int(c0)))], op.outputs[0],
                    (h + int(t + b), w + int(lft + r), c + int(c0 + c1)), int(value))

    def concat(self, op):
        what = op.label()
        out = op.outputs[0]
        shape = tuple(self.g.tensor(out).shape)
        axis = int(op.opts.get("axis", -1))
        if len(shape) != 4 or axis % 4 == 0:
            raise ModelError(f"{what}: concatenation along axis {axis} of {shape} mid-network; the die "
                             f"concatenates single-frame tensors along H, W or C")
        if op.opts.get("activation", "NONE") != "NONE":
            raise ModelError(f"{what}: fused activation on CONCATENATION is not supported")
        so, zo = _scalar_quant(self.g, out, what)
        offset = [0, 0, 0]
        parts = []
        for name in op.inputs:
            hwc = self.act(name, what)
            si, zi = _scalar_quant(self.g, name, what)
            if zi != zo or np.float32(si) != np.float32(so):
                raise ModelError(f"{what}: input '{name}' quantization differs from the output's (TFLite int8 "
                                 f"concatenation requires them equal)")
            parts.append((name, tuple(offset)))
            offset[axis % 4 - 1] += hwc[axis % 4 - 1]
        self.copies(op, parts, out, _hwc(shape, what), zo)

    def reshape(self, op, consumers):
        """A RESHAPE inside the die graph is free when the channel-tiled words do not change."""
        what = op.label()
        x, out = op.inputs[0], op.outputs[0]
        h, w, c = self.act(x, what)
        users = consumers.get(out, [])
        new = _hwc(self.g.tensor(out).shape, what)
        if new[2] == c and new[0] * new[1] == h * w:
            hwc = new                              # same pixels in the same order, same channel tiles
        elif users and all(u.kind == "FULLY_CONNECTED" for u in users):
            hwc = (h, w, c)                        # flattening for an FC: the FC reads the original layout
        else:
            raise ModelError(f"{what}: {(h, w, c)} -> {new} changes the channel tiling mid-network; the die "
                             f"only reshapes when the words stay put (or feeds a FULLY_CONNECTED)")
        if x in self.sp:
            raise ModelError(f"{what}: reshapes a pixel-packed tensor")      # the planner never packs these
        self.phys[out] = hwc
        self.root[out] = self.root[x]

    # --- the whole graph -------------------------------------------------------------------------------------
    def run(self):
        g = self.g
        if len(g.inputs) != 1:
            raise ModelError(f"model has {len(g.inputs)} inputs; the die takes one input tensor from the ISP")
        inp = g.tensor(g.inputs[0])
        if inp.dtype != "int8":
            raise ModelError(f"model input '{inp.name}' is {inp.dtype}; the compiler needs a full-int8 model "
                             f"(quantize it first)")
        _scalar_quant(g, inp.name, "model input")
        self.phys[inp.name] = _hwc(inp.shape, f"model input '{inp.name}'")
        self.root[inp.name] = inp.name
        host = _partition(g)
        consumers = g.consumers()
        # Pixel-pack the input when only CONVs read it: a 3-channel image in 64-lane words would waste 61 lanes
        # of every word (3.2 MB for 224x224 on imx500), and the stem conv runs better in im2col mode anyway.
        ppw = self.cols // self.phys[inp.name][2]
        users = consumers.get(inp.name, [])
        if ppw >= 2 and inp.name not in g.outputs and users and \
                all(u.kind == "CONV_2D" and u.inputs[0] == inp.name and u.inputs.count(inp.name) == 1
                    for u in users):
            self.packed[inp.name] = ppw
        die_index = {}
        for i, op in enumerate(g.ops):
            if i in host:
                continue
            if op.kind not in _DIE_KINDS:
                where = "mid-network (only at the graph's tail, on the host)" if op.kind in HOST_OPS else \
                    "on the die"
                raise ModelError(f"unsupported operator {op.kind} {where} at layer "
                                 f"'{op.name or op.outputs[0]}'")
            die_index[i] = len(self.layers)
            if op.kind == "CONV_2D":
                self.conv(op)
            elif op.kind == "DEPTHWISE_CONV_2D":
                self.conv(op, depthwise=True)
            elif op.kind == "FULLY_CONNECTED":
                self.conv(op, fc=True)
            elif op.kind in ("ADD", "SUB", "MUL") and self.scalar_operand(op):
                self.lut(op)                       # x op constant: a function of one int8 value
            elif op.kind in ("ADD", "SUB"):
                self.add(op)
            elif op.kind == "MUL":
                self.mul(op)
            elif op.kind == "MEAN":
                self.mean(op)
            elif op.kind == "PRELU":
                self.prelu(op)
            elif op.kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
                self.pool(op)
            elif op.kind == "PAD":
                self.pad(op, consumers)
            elif op.kind == "CONCATENATION":
                self.concat(op)
            elif op.kind == "RESHAPE":
                self.reshape(op, consumers)
            elif op.kind in ("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"):
                self.resize(op)
            elif op.kind in ("DEPTH_TO_SPACE", "SPACE_TO_DEPTH", "STRIDED_SLICE", "SLICE", "ZERO_INSERT"):
                self.gather(op)
            elif op.kind in LUT_OPS:
                self.lut(op)
        if not self.layers:
            raise ModelError("model has no operator the die runs")
        return self.finish(host, die_index)

    def finish(self, host, die_index):
        g, cfg = self.g, self.cfg
        n = len(self.layers)
        # Die outputs: activations read by the host tail or returned as graph outputs.
        host_inputs = [name for i in sorted(host) for name in g.ops[i].inputs if name]
        die_outputs = []
        for name in [*host_inputs, *g.outputs]:
            if name in self.phys and name not in die_outputs:
                die_outputs.append(name)
        # Liveness over layer steps; aliases extend their root's lifetime.
        start, end = {}, {}
        start[self.root[g.inputs[0]]] = -1
        for i, op in enumerate(g.ops):
            if i in host:
                continue
            step = die_index[i]
            for name in op.outputs:
                r = self.root.get(name)
                if r is not None:
                    start.setdefault(r, step)
            for name in op.inputs:
                if name in self.root:
                    r = self.root[name]
                    end[r] = max(end.get(r, -1), step)
        for name in die_outputs:
            end[self.root[name]] = n
        for name, step in self.temps.items():
            start[name] = end[name] = step
        for r in start:
            end.setdefault(r, start[r])
        self.in_place(start, end)
        for r in start:
            end.setdefault(r, start[r])
        # A 2x2 stride-2 MAX_POOL of a stride-2 DWCONV's input runs in that DWCONV (POOL2): its output is written
        # there, so it lives from the DWCONV's step.
        pools = self.pool_fusions(die_index, host)
        for dw_i, _, p in pools:
            start[self.root[p]] = min(start[self.root[p]], self.descs[dw_i][0].layer)
        # Two read ports: each ADD whose one input is a CONV's output read by nothing else runs in that CONV's back
        # end (RESADD) where the CONV's input and the residual can be placed in disjoint banks.
        fusions = self.residual_fusions(start, end, g, host, die_index) if cfg.act_read_ports == 2 else []
        while True:
            live_start, live_end = dict(start), dict(end)
            for conv_i, add_i, x, y, out, late in fusions:
                conv_step = self.descs[conv_i][0].layer
                if self.root[out] != self.root[x]:           # x is never written: its buffer is not needed
                    del live_start[self.root[x]], live_end[self.root[x]]
                if late:                                     # the CONV runs at the ADD: its input lives till then
                    rc = self.root[self.descs[conv_i][1]["in_addr"]]
                    live_end[rc] = max(live_end[rc], self.descs[add_i][0].layer)
                elif self.root[out] not in (self.root[x], self.root[y]):
                    live_start[self.root[out]] = min(live_start[self.root[out]], conv_step)
            roots = sorted(live_start, key=lambda r: (live_start[r], r))
            sizes = {r: self.words(r) for r in roots}
            addr = _allocate(roots, sizes, live_start, live_end)
            act_words = max((addr[r] + sizes[r] for r in roots), default=0)
            if cfg.act_read_ports == 2:
                # Keep each ADD's inputs in different banks where the SRAM has room for it, so that it reads both
                # in one cycle (DUAL2), and each fused CONV's input apart from its residual; otherwise the plain
                # allocation.
                fused_adds = {add_i for _, add_i, *_ in fusions}
                apart = [(self.root[names["in_addr"]], self.root[names["in2_addr"]])
                         for i, (desc, names) in enumerate(self.descs)
                         if desc.op in ("ADD", "MUL") and i not in fused_adds]
                apart += [(self.root[self.descs[conv_i][1]["in_addr"]], self.root[y])
                          for conv_i, _, _, y, _, _ in fusions]
                banked = _allocate(roots, sizes, live_start, live_end, apart, cfg.act_bank_words,
                                   cfg.act_banks * cfg.sram_bank_bytes // self.cols)
                banked_words = max((banked[r] + sizes[r] for r in roots), default=0)
                if banked_words * self.cols <= cfg.act_banks * cfg.sram_bank_bytes or banked_words <= act_words:
                    addr, act_words = banked, banked_words
            apart_ok = [f for f in fusions if self.resadd_banks_disjoint(addr, f)]
            if len(apart_ok) == len(fusions):
                break
            fusions = apart_ok                              # the others stay a CONV and an ADD
        start, end = live_start, live_end

        descs, renumber = self.fused_descriptors(fusions, pools)
        for layer in self.layers:
            layer.descriptors = [renumber[i] for i in layer.descriptors if i in renumber]
        # Weight space: program, then each region in layer order, every block starting on a word.
        n_desc = len(descs) + 1
        program_words = _ceil(n_desc * fmt.DESCRIPTOR_BYTES, self.wb)
        cursor = program_words
        regions = {}
        for key, addr_field in (("params", "param_addr"), ("dw", "weight_addr"), ("conv", "weight_addr")):
            chunks = []
            for _, desc, words in self.blocks[key]:
                setattr(desc, addr_field, cursor)
                cursor += words.shape[0]
                chunks.append(words)
            regions[key] = np.concatenate(chunks) if chunks else np.zeros((0, self.wb), np.uint8)
        weight_words = cursor
        self.fit(weight_words, act_words, start, end, sizes)

        descriptors = []
        for desc, names in descs:
            for fld, name in names.items():
                setattr(desc, fld, addr[self.root[name]])
            # Two read ports: an ADD whose inputs lie in disjoint banks reads both in one cycle.
            if (desc.op in ("ADD", "MUL") and cfg.act_read_ports == 2
                    and fmt.banks_disjoint(fmt.add_input_banks(desc, cfg.act_bank_words))):
                desc.flags |= fmt.DUAL2
            descriptors.append(desc)
        descriptors.append(fmt.Descriptor(opcode=fmt.OPCODES["END"], layer=n))
        stream = b"".join(fmt.pack(d) for d in descriptors)
        program = fmt.stream_words(stream, self.wb)
        assert program.shape[0] == program_words
        # Each layer's cost: the exact cycles of its descriptors on the NPU's engines.
        for layer in self.layers:
            layer.cycles = sum(timing.descriptor_cycles(cfg, descriptors[i]) for i in layer.descriptors)

        tensors = {}
        for name in self.phys:
            r = self.root[name]
            if r not in addr:                               # a fused CONV's output, never stored
                continue
            tensors[name] = {"addr": addr[r], "words": sizes[r], "hwc": list(self.phys[name]),
                             "start": start[r], "end": end[r]}
            if name in self.sp:
                tensors[name]["ppw"] = self.sp[name]
        io = self.io(host, die_outputs, tensors)
        return CompiledModel(name=g.name, config=cfg, layers=self.layers, descriptors=descriptors,
                             program=program, params=regions["params"], dw_weights=regions["dw"],
                             weights=regions["conv"], io=io, tensors=tensors, act_words=act_words)

    def residual_fusions(self, start, end, g, host, die_index):
        """[(CONV descriptor, ADD descriptor, x, residual y, ADD output, late)] of the residual ADDs a CONV can run
        in its back end (RESADD, `quant.program`): an ADD (not SUB, no broadcast) of x and y, x the output of a
        one-descriptor CONV (not PACKED or FCSCALE) that nothing else reads, y not the CONV's input (with ZPAD2,
        a channel PAD's unmaterialized output, y is the ADD's second input and keeps the flag).
        The fused CONV runs where the CONV was when y is in memory by then (when the ADD works in place over y,
        nothing may read y between the two), otherwise (`late`) where the ADD was, its input kept until then
        (when nothing between overwrites that input: the CONV is its last reader, or it lives past the ADD)."""
        producer, readers = {}, self.readers(host, die_index)
        for i, (_, names) in enumerate(self.descs):
            producer.setdefault(names.get("out_addr"), []).append(i)
        consumers = g.consumers()
        host_reads = {name for i in host for name in g.ops[i].inputs}
        fusions = []
        for add_i, (desc, names) in enumerate(self.descs):
            if desc.op != "ADD" or desc.flags & fmt.NEG2:
                continue
            layer, op = self.layers[desc.layer], self.layer_ops[desc.layer]
            a, b, out = names["in_addr"], names["in2_addr"], names["out_addr"]
            zpad = bool(desc.flags & fmt.ZPAD2)
            if layer.descriptors != [add_i] or {a, b} != set(op.inputs[:2]) or self.phys[a] != self.phys[out] or \
                    (self.phys[b] != self.phys[out] and not zpad):
                continue
            for x, y in ((a, b),) if zpad else ((a, b), (b, a)):
                writers = producer.get(x, [])
                if len(writers) != 1:
                    continue
                conv_i = writers[0]
                conv, conv_names = self.descs[conv_i]
                conv_step = conv.layer
                if conv.op != "CONV" or conv.flags & (fmt.PACKED | fmt.FCSCALE) or \
                        self.layers[conv_step].descriptors != [conv_i] or self.root[x] != x or \
                        len(consumers.get(x, [])) != 1 or x in g.outputs or x in host_reads:
                    continue
                ry, rc = self.root[y], self.root[conv_names["in_addr"]]
                if ry == rc or x in self.packed:
                    continue
                late = start[ry] >= conv_step
                if late and conv_step < end[rc] < desc.layer:
                    continue
                if not late and self.root[out] == ry and \
                        any(conv_step < s < desc.layer for s in readers.get(ry, ())):
                    continue
                fusions.append((conv_i, add_i, x, y, out, late))
                break
        return fusions

    def readers(self, host, die_index):
        """{storage root: the die steps of the operators that read it}."""
        readers = {}
        for i, op in enumerate(self.g.ops):
            if i in host:
                continue
            for name in op.inputs:
                if name in self.root:
                    readers.setdefault(self.root[name], set()).add(die_index[i])
        return readers

    def pool_fusions(self, die_index, host):
        """[(DWCONV descriptor, MAXPOOL descriptor, pool output)] of the max pools a DWCONV writes beside its output
        (POOL2, `quant.program`): a one-descriptor MAX_POOL_2D of 2x2 stride 2 without padding over the input of a
        one-descriptor DWCONV of that output size which the line walk runs in one pass per row
        (`quant.timing.dw_pool2_fits`), neither tensor pixel-packed, the pool's output its own storage and read
        by nothing at or before the DWCONV's step (it is written there). Each DWCONV takes one pool."""
        if not timing.dw_line_capable(self.cfg):
            return []
        readers = self.readers(host, die_index)
        dws = {}
        for i, (desc, names) in enumerate(self.descs):
            x = names.get("in_addr")
            if desc.op == "DWCONV" and desc.flags == 0 and self.layers[desc.layer].descriptors == [i] and \
                    x not in self.temps and x not in self.sp and x not in self.packed:
                dws.setdefault(self.root[x], []).append(i)
        pools, taken = [], set()
        for mp_i, (mp, names) in enumerate(self.descs):
            x, p = names.get("in_addr"), names.get("out_addr")
            if mp.op != "MAXPOOL" or self.layers[mp.layer].descriptors != [mp_i] or \
                    (mp.kernel_h, mp.kernel_w, mp.stride_h, mp.stride_w) != (2, 2, 2, 2) or \
                    any((mp.pad_top, mp.pad_bottom, mp.pad_left, mp.pad_right)) or mp.in_zp != mp.out_zp or \
                    x in self.temps or x in self.sp or p in self.sp or self.root[p] != p:
                continue
            for dw_i in dws.get(self.root[x], []):
                dw = self.descs[dw_i][0]
                trial = fmt.Descriptor(**{**vars(dw), "add_min": mp.act_min, "add_max": mp.act_max})
                if dw_i in taken or (dw.out_h, dw.out_w, dw.in_c, dw.in_zp) != (mp.out_h, mp.out_w, mp.in_c, mp.in_zp) \
                        or not timing.dw_pool2_fits(self.cfg, trial) \
                        or any(s <= dw.layer for s in readers.get(p, ())):
                    continue
                pools.append((dw_i, mp_i, p))
                taken.add(dw_i)
                break
        return pools

    def resadd_banks_disjoint(self, addr, fusion):
        """Whether a fusion's CONV input and residual lie in disjoint banks at the addresses `addr`."""
        conv_i, _, _, y, _, _ = fusion
        x_in = self.descs[conv_i][1]["in_addr"]
        spans = []
        for name in (x_in, y):
            base = addr[self.root[name]]
            spans.append((base // self.cfg.act_bank_words, (base + self.words(name) - 1) // self.cfg.act_bank_words))
        return fmt.banks_disjoint(spans)

    def fused_descriptors(self, fusions, pools=()):
        """The descriptor list with each fusion's ADD folded into its CONV (RESADD, the CONV's descriptor updated),
        the fused CONV where the CONV was or, `late`, where the ADD was, and each pool's MAXPOOL into its DWCONV
        (POOL2): ([(desc, names)], {old index: new index}; the ADD's and MAXPOOL's indices have none, a late
        CONV's maps to the ADD's place)."""
        for dw_i, mp_i, p in pools:
            dw, names = self.descs[dw_i]
            mp = self.descs[mp_i][0]
            dw.flags |= fmt.POOL2
            dw.add_min, dw.add_max = mp.act_min, mp.act_max
            names["in2_addr"] = p
            self.layers[mp.layer].fused = dw.layer
        at = {(f[1] if f[5] else f[0]): f for f in fusions}     # the descriptor slot each fused CONV takes
        skip = {f[0] if f[5] else f[1] for f in fusions} | {mp_i for _, mp_i, _ in pools}
        descs, renumber = [], {}
        for i in range(len(self.descs)):
            if i in skip:
                continue
            desc, names = self.descs[i]
            if i in at:
                conv_i, add_i, x, y, out, _ = at[i]
                desc, names = self.descs[conv_i]
                add, add_names = self.descs[add_i]
                first = add_names["in_addr"] == x              # the CONV's output is the ADD's input 1
                one, two = ("in", "in2") if first else ("in2", "in")
                h, w, c = self.phys[y]
                fields = dict(
                    flags=desc.flags | fmt.RESADD | (add.flags & fmt.ZPAD2), in2_h=h, in2_w=w, in2_c=c,
                    in2_ct=_ceil(c, self.cols),
                    in2_zp=getattr(add, f"{two}_zp"), left_shift=add.left_shift,
                    in_mult=getattr(add, f"{one}_mult"), in_shift=getattr(add, f"{one}_shift"),
                    in2_mult=getattr(add, f"{two}_mult"), in2_shift=getattr(add, f"{two}_shift"),
                    out_mult=add.out_mult, out_shift=add.out_shift, add_zp=add.out_zp, add_min=add.act_min,
                    add_max=add.act_max)
                for key, value in fields.items():
                    setattr(desc, key, value)
                assert getattr(add, f"{one}_zp") == desc.out_zp
                names = dict(names, in2_addr=y, out_addr=out)
                self.layers[add.layer].fused = desc.layer
                i = conv_i
            renumber[i] = len(descs)
            descs.append((desc, names))
        return descs, renumber

    def in_place(self, start, end):
        """An ADD, MUL, PRELU or LUT whose input dies there writes its output over that input (word by word, each
        word read before it is written): a residual block then keeps two tensors live at its ADD instead of
        three. A broadcast second input is never overwritten (its size differs from the output's)."""
        for layer, op in zip(self.layers, self.layer_ops):
            if layer.op not in ("ADD", "LUT", "MUL", "PRELU") or layer.index in self.converted:
                continue
            out = self.root[op.outputs[0]]
            for name in [n for n in op.inputs if n in self.root][:2 if layer.op in ("ADD", "MUL") else 1]:
                r = self.root[name]
                if r != out and end[r] == layer.index and r not in self.packed and start[out] == layer.index \
                        and self.words(r) == self.words(out):
                    for t, owner in self.root.items():
                        if owner == out:
                            self.root[t] = r
                    end[r] = end.pop(out)
                    del start[out]
                    break

    def fit(self, weight_words, act_words, start, end, sizes):
        cfg = self.cfg
        bank = cfg.sram_bank_bytes
        w_need, w_have = weight_words * self.wb, cfg.weight_banks * bank
        a_need, a_have = act_words * self.cols, cfg.act_banks * bank
        if w_need <= w_have and a_need <= a_have:
            return
        packed = f" with {len(self.sp)} narrow tensors pixel-packed" if self.sp else ""
        message = (f"model '{self.g.name}' does not fit config '{cfg.name}'{packed}: needs {w_need:,} B of weight "
                   f"SRAM ({_ceil(w_need, bank)} banks of {bank:,} B), config has {cfg.weight_banks} weight banks of "
                   f"{bank:,} B = {w_have:,} B; activations need {a_need:,} B at the peak ({_ceil(a_need, bank)} "
                   f"banks of {bank:,} B), config has {cfg.act_banks} activation banks of {bank:,} B = {a_have:,} B")
        if w_need > w_have:
            raise ModelError(message)
        steps = range(-1, len(self.layers) + 1)
        busiest = max(steps, key=lambda s: sum(sizes[r] for r in start if start[r] <= s <= end[r]))
        live = sorted((r for r in start if start[r] <= busiest <= end[r] and r not in self.temps),
                      key=lambda r: -sizes[r])
        raise _NoFit(act_words - a_have // self.cols,
                     [[t for t, owner in self.root.items() if owner == r and t not in self.temps] for r in live],
                     message)

    def io(self, host, die_outputs, tensors):
        """The model I/O description: what the ISP writes, what the die leaves for CSI-2, what the host does.

        The host tail is a small Graph (tensors with quantization, operators with options) that the host runs
        with quant.executor.run_graph on the die outputs, so its arithmetic is the golden executor's.
        """
        g = self.g

        def tensor(name):
            t = g.tensor(name)
            d = {"name": name, "shape": [int(v) for v in t.shape], "dtype": t.dtype}
            if t.quant is not None:
                d.update(scale=[float(v) for v in np.asarray(t.quant.scale, np.float32)],
                         zero_point=[int(v) for v in t.quant.zero_point], axis=int(t.quant.axis))
            if t.is_const:
                d["data"] = _jsonable(t.data)
            if name in tensors:
                d.update(addr=tensors[name]["addr"], hwc=tensors[name]["hwc"], words=tensors[name]["words"])
                if name in self.sp:     # stored as the channel-tiled H x W/ppw x ppw*C: `shape` in row-major order
                    d["ppw"] = self.sp[name]
            return d

        host_ops = [g.ops[i] for i in sorted(host)]
        names = []
        for op in host_ops:
            for n in [*op.inputs, *op.outputs]:
                if n and n not in names:
                    names.append(n)
        host_inputs = [n for n in names if n in die_outputs]
        inp = tensor(g.inputs[0])
        inp.update(layout="packed" if g.inputs[0] in self.packed else "tiled", ppw=self.packed.get(g.inputs[0], 0))
        return {"model": g.name, "input": inp,
                "die_outputs": [tensor(n) for n in die_outputs],
                "host": {"inputs": host_inputs, "tensors": [tensor(n) for n in names],
                         "ops": [{"kind": op.kind, "name": op.name or op.outputs[0],
                                  "inputs": list(op.inputs), "outputs": list(op.outputs),
                                  "opts": _jsonable(op.opts)} for op in host_ops]},
                "outputs": [tensor(n) for n in g.outputs],
                "layers": [{"index": layer.index, "name": layer.name, "kind": layer.kind, "op": layer.op}
                           for layer in self.layers]}


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return value


def _superpixels(hwc, cols):
    """Pixels per word of the superpixel layout of an H x W x C tensor: cols // C when that is >= 2 and
    divides W (each image row then starts a word, so the tensor *is* an H x W/ppw x ppw*C channel-tiled one,
    pixel slot r of a word holding channels r*C .. r*C + C - 1), else 1 (no superpixel layout)."""
    h, w, c = hwc
    ppw = cols // c if c else 0
    return ppw if ppw >= 2 and w % ppw == 0 else 1


def _superpixel_boxes(boxes, ppw, c):
    """GATHER boxes writing a superpixel output (`ppw` pixels of C channels per word) from boxes in pixel
    coordinates: the box's columns split by their residue modulo m = ppw / gcd(ppw, dst step), each residue
    class landing at one pixel slot of a fixed lane offset, a superpixel step of m * dst step / ppw."""
    out = []
    for src, sstep, size, dst, dstep in boxes:
        m = ppw // gcd(ppw, dstep[1])
        for r in range(min(m, size[1])):
            col = dst[1] + r * dstep[1]
            out.append(((src[0], src[1] + r * sstep[1], src[2]), (sstep[0], sstep[1] * m),
                        (size[0], len(range(r, size[1], m)), size[2]),
                        (dst[0], col // ppw, (col % ppw) * c + dst[2]), (dstep[0], m * dstep[1] // ppw)))
    return out


def superpixel_conv(weights, bias, mult, shift, depthwise, pi, po, kernel_w, stride_w, pad_left, in_w, out_w):
    """A CONV / DEPTHWISE_CONV_2D whose input has `pi` and output `po` pixels per word (1: channel-tiled) as an
    ordinary CONV on the superpixel tensors: output lane (j, o) of superpixel X is output pixel po*X + j, its
    tap kx reads input pixel po*stride*X + j*stride - pad_left + kx, which is lane (l, c) of input superpixel
    X*S - PL + KX with S = po*stride/pi (the caller makes it an integer). The weights are block-structured
    (zero where a (j, KX, l) is no tap), bias and requantization repeated for each slot j. Integer sums are
    exact and superpixels outside the input are all padding (W is a multiple of pi), so the result is the
    original operator's, value for value.

    weights: OHWI [Co, KH, KW, Ci] (depthwise: [1, KH, KW, C]); in_w, out_w: widths in pixels.
    Returns (weights OHWI, bias, mult, shift, kernel_w, stride_w, pad_left, pad_right) in superpixel terms."""
    w = np.asarray(weights, np.int8)
    if depthwise:
        c = w.shape[3]
        full = np.zeros((c, w.shape[1], w.shape[2], c), np.int8)
        for ch in range(c):
            full[ch, :, :, ch] = w[0, :, :, ch]
        w = full
    co, kh, kw, ci = w.shape
    assert kw == kernel_w and (po * stride_w) % pi == 0 and in_w % pi == 0 and out_w % po == 0
    s = po * stride_w // pi
    in_sp, out_sp = in_w // pi, out_w // po
    pl = -(-pad_left // pi)
    kws = ((po - 1) * stride_w + kw - 1 - pad_left) // pi + pl + 1
    kws = max(kws, in_sp + pl - (out_sp - 1) * s)
    pr = (out_sp - 1) * s + kws - in_sp - pl
    out = np.zeros((po * co, kh, kws, pi * ci), np.int8)
    for j in range(po):
        for kx_sp in range(kws):
            for lane in range(pi):
                kx = (kx_sp - pl) * pi + lane - j * stride_w + pad_left
                if 0 <= kx < kw:
                    out[j * co:(j + 1) * co, :, kx_sp, lane * ci:(lane + 1) * ci] = w[:, :, kx, :]
    return (out, np.tile(bias, po), np.tile(mult, po), np.tile(shift, po), kws, s, pl, pr)


def param_buffer_channels(config):
    """Output channels one CONV/DWCONV descriptor may have: the conv engine's parameter buffer, `max_channels`
    rounded up to whole words (the RTL's limit; the golden executor checks the same)."""
    return _ceil(config.max_channels, config.array_cols) * config.array_cols


def _allocate(roots, sizes, start, end, apart=(), bank_words=None, limit=None):
    """Word address of each buffer: largest first, each at the lowest address free during its lifetime.

    Greedy-by-size beats first-fit in arrival order on CNNs, whose few large early activations would otherwise
    fragment the space that later, smaller ones reuse.

    `apart`: pairs of buffers to keep in disjoint banks of `bank_words` words (an ADD's two inputs, read in one
    cycle on two read ports): a buffer placed after its partner takes the lowest free address whose banks its
    partner's do not meet, unless that ends past `limit` words (then the lowest free address; pairs of one
    buffer with itself are ignored).
    """
    partners = {}
    for a, b in apart:
        if a != b:
            partners.setdefault(a, set()).add(b)
            partners.setdefault(b, set()).add(a)
    placed = []
    addr = {}
    for r in sorted(roots, key=lambda r: (-sizes[r], start[r], r)):
        busy = sorted((addr[p], addr[p] + sizes[p]) for p in placed
                      if start[p] <= end[r] and start[r] <= end[p])
        avoid = sorted(fmt.span_banks(addr[q], sizes[q], bank_words) for q in partners.get(r, ()) if q in addr)
        a = _lowest_free(busy, sizes[r], avoid, bank_words)
        if avoid and limit is not None and a + sizes[r] > limit:
            a = _lowest_free(busy, sizes[r])
        addr[r] = a
        placed.append(r)
    return addr


def _lowest_free(busy, size, avoid=(), bank_words=None):
    """The lowest address where `size` words meet none of the `busy` (lo, hi) ranges and none of the `avoid`
    (first, last) bank ranges of `bank_words` words each."""
    a = 0
    while True:
        moved = False
        for lo, hi in busy:                     # the first gap from `a` on
            if a < hi and lo < a + size:
                a, moved = hi, True
        for b_lo, b_hi in avoid:                # past a partner's banks
            if not fmt.banks_disjoint((fmt.span_banks(a, size, bank_words), (b_lo, b_hi))):
                a, moved = (b_hi + 1) * bank_words, True
        if not moved:
            return a


def expand_transpose_convs(graph):
    """A Graph where each TRANSPOSE_CONV is a ZERO_INSERT (the die's GATHER with destination steps = the
    strides, filled with the input's zero point) and a stride-1 CONV_2D with the kernel flipped in H and W and
    ``kernel - 1 - pad`` rows/columns of top/left padding. Exact: the zero point contributes (zp - zp) = 0 to
    the accumulators, so they, the bias and the per-channel requantization are TRANSPOSE_CONV's own."""
    if not any(op.kind == "TRANSPOSE_CONV" for op in graph.ops):
        return graph
    tensors, ops = dict(graph.tensors), []
    for op in graph.ops:
        if op.kind != "TRANSPOSE_CONV":
            ops.append(op)
            continue
        x, w, y = (graph.tensor(n) for n in (op.inputs[0], op.inputs[1], op.outputs[0]))
        if w.data is None or w.quant is None:
            raise ModelError(f"{op.label()}: the filter must be a quantized constant")
        (sh, sw), (pt, pl) = op.opts["stride"], op.opts["pads"]
        _, kh, kw, _ = w.shape
        _, oh, ow, _ = y.shape
        if pt > kh - 1 or pl > kw - 1:
            raise ModelError(f"{op.label()}: output padding {(pt, pl)} beyond the kernel {(kh, kw)}")
        top, left = kh - 1 - pt, kw - 1 - pl
        zh, zw = oh + kh - 1 - top, ow + kw - 1 - left
        base = op.name or op.outputs[0]
        z = Tensor(f"{base}/zero_inserted", (1, zh, zw, x.shape[3]), x.dtype, quant=x.quant)
        wf = Tensor(f"{base}/flipped_filter", w.shape, w.dtype, data=np.ascontiguousarray(w.data[:, ::-1, ::-1, :]),
                    quant=w.quant)
        tensors[z.name], tensors[wf.name] = z, wf
        ops.append(Op("ZERO_INSERT", [x.name], [z.name], {"stride": (sh, sw), "size": (zh, zw)},
                      name=f"{base}/zero_insert"))
        ops.append(Op("CONV_2D", [z.name, wf.name, *op.inputs[2:]], list(op.outputs),
                      {"stride": (1, 1), "dilation": (1, 1), "pads": (top, 0, left, 0),
                       "activation": op.opts.get("activation", "NONE")}, name=op.name))
    return Graph(tensors=tensors, ops=ops, inputs=list(graph.inputs), outputs=list(graph.outputs), name=graph.name,
                 notes=list(graph.notes))


# Operators that write the superpixel layout (ADD/SUB/MUL with a constant and the LUT kinds become LUTs).
_PACK_WRITERS = ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "SUB", "MUL", "PRELU", "ZERO_INSERT", "DEPTH_TO_SPACE",
                 "SPACE_TO_DEPTH", "STRIDED_SLICE", "SLICE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", *LUT_OPS)
_PACK_READERS = ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "SUB", "MUL", "PRELU", *LUT_OPS)
_PLAN_ROUNDS = 40
_RESIZE_BAND_WORDS = 1024       # activation words of a packed RESIZE's band temporary (about)


def _pack_candidates(graph, cols):
    """Tensors the planner may store pixel-packed: narrow (C <= cols/2, cols // C dividing W), written by an
    operator that writes the superpixel layout, not the network input (the ISP's packing is its own) and
    not reshaped on the die. Every reader takes them: CONVs read them directly, the elementwise operators in
    the layout of their output, the others through a GATHERed channel-tiled temporary."""
    producers, consumers = graph.producers(), graph.consumers()
    out = set()
    for name, op in producers.items():
        t = graph.tensor(name)
        if op.kind not in _PACK_WRITERS or name in graph.inputs or t.dtype != "int8" or len(t.shape) != 4 \
                or t.shape[0] != 1 or any(u.kind == "RESHAPE" for u in consumers.get(name, [])):
            continue
        if op.kind == "CONV_2D" and op.inputs[0] in graph.inputs:
            continue                                    # the stem conv reads the ISP's packed input (im2col)
        if _superpixels(tuple(int(d) for d in t.shape[1:]), cols) > 1:
            out.add(name)
    return out


def _noted(model):
    """The model, its notes saying which tensors (if any) are stored pixel-packed (one line)."""
    packed = sorted(n for n, t in model.tensors.items() if t.get("ppw", 1) > 1 and "@" not in n)
    if packed:
        model.notes.append(f"activation SRAM: {len(packed)} narrow tensors stored pixel-packed to fit "
                           f"({', '.join(packed[:3])}{', ...' if len(packed) > 3 else ''})")
    return model


def compile_graph(graph, config, pack=None):
    """Compile a lowered full-int8 Graph for `config` (a DieConfig); raises ModelError (one line) when the model
    uses an operator the die does not run or does not fit the configuration's SRAM.

    The SRAM planner: when the activations do not fit, narrow tensors live at the busiest step are stored
    pixel-packed (the superpixel layout, `_superpixels`), the largest first, until the model fits or no
    candidate is left. A model that fits without packing compiles exactly as if packing did not exist.
    `pack` (tests, experiments): the tensors to pack instead of the planner's choice (those without a
    superpixel layout or whose writer has none stay channel-tiled)."""
    g = expand_transpose_convs(graph)
    try:
        if pack is not None:
            try:
                model = _Compiler(g, config, set(pack)).run()
            except _NoFit as e:
                raise ModelError(e.message) from None
            return _noted(model)
        pack, candidates = set(), None
        for _ in range(_PLAN_ROUNDS):
            try:
                model = _Compiler(g, config, pack).run()
            except _NoFit as e:
                if candidates is None:
                    candidates = _pack_candidates(g, config.array_cols)
                    consumers = g.consumers()
                    native = {n for n in candidates if all(u.kind in _PACK_READERS for u in consumers.get(n, []))}
                saved, added = 0, False
                # Tensors whose readers all take the packed layout first (no GATHERed copies), largest first.
                for names in sorted(e.live, key=lambda names: not any(n in native for n in names)):
                    new = [n for n in names if n in candidates and n not in pack]
                    if not new:
                        continue
                    pack.update(new)
                    added = True
                    h, w, c = (int(d) for d in g.tensor(new[0]).shape[1:])
                    saved += h * w * (-(-c // config.array_cols)) * (1 - 1 / _superpixels((h, w, c),
                                                                                          config.array_cols))
                    if saved >= e.excess:
                        break
                if not added:
                    raise ModelError(e.message) from None
                continue
            return _noted(model)
        raise ModelError(f"model '{graph.name}': the SRAM planner gave up after {_PLAN_ROUNDS} rounds")
    except fmt.ProgramError as e:
        raise ModelError(f"model '{graph.name}': {e}") from None
