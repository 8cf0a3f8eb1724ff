"""Graph lowering for the die: fold PAD into window padding, fuse standalone activations, turn RESHAPE and
CONCATENATION into memory layout. Every rewrite is taken only when the result is bit-identical."""

import copy

import numpy as np

from .arith import activation_range
from .executor import op_pads, tensor_lower_bound
from .graph import Graph, Op
from .ref import window_output_size

__all__ = ["lower", "int8_core", "fold_pads", "fuse_activations", "simplify_reshapes", "mark_concat_layout",
           "FUSABLE_PRODUCERS"]

# Ops whose kernel ends in a fused-activation clamp on its own output scale.
FUSABLE_PRODUCERS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "AVERAGE_POOL_2D", "MAX_POOL_2D")

# activation of producer, standalone activation -> the one fused clamp that equals both in sequence.
_COMBINE = {("NONE", "RELU"): "RELU", ("NONE", "RELU6"): "RELU6", ("RELU", "RELU"): "RELU",
            ("RELU", "RELU6"): "RELU6", ("RELU6", "RELU"): "RELU6", ("RELU6", "RELU6"): "RELU6"}


def _copy(graph):
    """A copy whose ops, opts and tensor records can be rewritten; constant arrays are shared, not copied."""
    tensors = {k: copy.copy(t) for k, t in graph.tensors.items()}
    ops = [Op(op.kind, list(op.inputs), list(op.outputs), copy.deepcopy(op.opts), op.name) for op in graph.ops]
    return Graph(tensors, ops, list(graph.inputs), list(graph.outputs), graph.name, list(graph.notes))


def _same_quant(a, b):
    """Same dtype and, for quantized tensors, bit-identical scale and zero point."""
    if a.dtype != b.dtype:
        return False
    if a.quant is None or b.quant is None:
        return a.quant is None and b.quant is None
    return (a.quant.scale.shape == b.quant.scale.shape and np.array_equal(a.quant.scale, b.quant.scale)
            and np.array_equal(a.quant.zero_point, b.quant.zero_point))


def _sole_consumer(graph, name):
    """The one op reading tensor `name`, or None if it has several readers or is a graph output."""
    if name in graph.outputs:
        return None
    users = graph.consumers().get(name, [])
    return users[0] if len(users) == 1 else None


def _remove_tensor(graph, name):
    graph.tensors.pop(name, None)


def _pool_windows_all_touch_input(size, pads, f, stride, out):
    """True when every window of a pool along one axis covers at least one in-bounds element."""
    before = pads[0]
    for i in range(out):
        start = i * stride - before
        if start + f <= 0 or start >= size:
            return False
    return True


def _pad_value(graph, pad_op):
    """What a PAD fills with: its "value" (PADV2), else the output zero point (int8) or 0.0 (float)."""
    if "value" in pad_op.opts:
        return pad_op.opts["value"]
    y = graph.tensor(pad_op.outputs[0])
    return y.quant.scalar()[1] if y.dtype == "int8" else 0.0


def _max_pool_fold_is_exact(graph, pad_op, pool, new_pads):
    """Folding PAD (value v) into MAX_POOL_2D (padding never wins) is exact when v cannot change any max:
    the pool's own clamp floor is >= v, or every input value is >= v and no window lies wholly in padding."""
    x = graph.tensor(pad_op.inputs[0])
    y = graph.tensor(pool.outputs[0])
    act = pool.opts.get("activation", "NONE")
    v = _pad_value(graph, pad_op)
    if x.dtype == "int8":
        floor = activation_range(act, *y.quant.scalar())[0]
    else:
        floor = {"NONE": -np.inf, "RELU": 0.0, "RELU6": 0.0, "RELU_N1_TO_1": -1.0}[act]
    if floor >= v:
        return True
    bound = tensor_lower_bound(graph, x.name)
    if bound is None or bound < v:
        return False
    f, s = pool.opts["filter"], pool.opts.get("stride", (1, 1))
    _, h, w, _ = x.shape
    return (_pool_windows_all_touch_input(h, new_pads[0:2], f[0], s[0], y.shape[1]) and
            _pool_windows_all_touch_input(w, new_pads[2:4], f[1], s[1], y.shape[2]))


def fold_pads(graph: Graph) -> Graph:
    """PAD (spatial only) feeding one CONV_2D / DEPTHWISE_CONV_2D / MAX_POOL_2D becomes that op's explicit pads.

    Legal for convolutions because an int8 PAD fills with its output zero point, which is the conv's input zero
    point, and a conv's own padding also contributes (zp - zp) * w = 0 (float: 0.0 either way); the PAD must not
    requantize (its input and output quantization equal). AVERAGE_POOL_2D is never folded: it divides by the
    number of in-bounds taps, which padding changes. MAX_POOL_2D only when _max_pool_fold_is_exact says so.
    """
    g = _copy(graph)
    for pad_op in list(g.ops):
        if pad_op.kind != "PAD":
            continue
        x, p = g.tensor(pad_op.inputs[0]), g.tensor(pad_op.inputs[1])
        y = g.tensor(pad_op.outputs[0])
        paddings = np.asarray(p.data).reshape(-1, 2)
        if len(x.shape) != 4 or paddings.shape[0] != 4 or np.any(paddings < 0):
            continue
        if np.any(paddings[0] != 0) or np.any(paddings[3] != 0) or not _same_quant(x, y):
            continue
        user = _sole_consumer(g, y.name)
        if user is None or user.kind not in ("CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D") \
                or user.inputs[0] != y.name:
            continue
        if user.kind != "MAX_POOL_2D" and _pad_value(g, pad_op) != (
                y.quant.scalar()[1] if y.dtype == "int8" else 0.0):
            continue                        # a conv's own padding is the zero point: other values do not fold
        own = op_pads(g, user)
        new_pads = (own[0] + int(paddings[1, 0]), own[1] + int(paddings[1, 1]),
                    own[2] + int(paddings[2, 0]), own[3] + int(paddings[2, 1]))
        if user.kind == "MAX_POOL_2D":
            if not _max_pool_fold_is_exact(g, pad_op, user, new_pads):
                continue
            kh, kw = user.opts["filter"]
            dil = (1, 1)
        else:
            w = g.tensor(user.inputs[1])
            kh, kw = w.shape[1], w.shape[2]
            dil = user.opts.get("dilation", (1, 1))
        stride = user.opts.get("stride", (1, 1))
        out = g.tensor(user.outputs[0]).shape
        if (window_output_size(x.shape[1], kh, stride[0], dil[0], *new_pads[0:2]) != out[1] or
                window_output_size(x.shape[2], kw, stride[1], dil[1], *new_pads[2:4]) != out[2]):
            continue
        user.inputs[0] = x.name
        user.opts["pads"] = new_pads
        user.opts.pop("padding", None)
        g.ops.remove(pad_op)
        _remove_tensor(g, y.name)
        if not any(p.name in op.inputs for op in g.ops):
            _remove_tensor(g, p.name)
        g.notes.append(f"folded PAD '{pad_op.name}' into {user.label()} as pads {new_pads}")
    return g


def fuse_activations(graph: Graph) -> Graph:
    """A standalone RELU / RELU6 whose input comes from a conv, FC, ADD or pool (and only goes to it) becomes
    that producer's fused activation, when the RELU does not requantize (same scale and zero point in and out):
    then its rescale is the identity and the two clamps compose into one."""
    g = _copy(graph)
    producers = g.producers()
    for act_op in list(g.ops):
        if act_op.kind not in ("RELU", "RELU6"):
            continue
        t = g.tensor(act_op.inputs[0])
        prod = producers.get(t.name)
        if prod is None or prod.kind not in FUSABLE_PRODUCERS or _sole_consumer(g, t.name) is not act_op:
            continue
        if not _same_quant(t, g.tensor(act_op.outputs[0])):
            continue
        fused = _COMBINE.get((prod.opts.get("activation", "NONE"), act_op.kind))
        if fused is None:
            continue
        prod.opts["activation"] = fused
        prod.outputs[0] = act_op.outputs[0]
        producers[act_op.outputs[0]] = prod
        g.ops.remove(act_op)
        _remove_tensor(g, t.name)
        g.notes.append(f"fused {act_op.kind} '{act_op.name}' into {prod.label()} (activation {fused})")
    return g


def simplify_reshapes(graph: Graph) -> Graph:
    """RESHAPE moves no data in the die's dense row-major NHWC buffers: mark each one `alias`, and remove those
    nothing needs: identity reshapes, and reshapes read only by FULLY_CONNECTED (which flattens its input anyway)
    or by another RESHAPE, when the quantization is unchanged."""
    g = _copy(graph)
    for op in list(g.ops):
        if op.kind != "RESHAPE":
            continue
        op.opts["alias"] = True
        x, y = g.tensor(op.inputs[0]), g.tensor(op.outputs[0])
        if y.name in g.outputs or not _same_quant(x, y):
            continue
        users = g.consumers().get(y.name, [])
        identity = tuple(x.shape) == tuple(y.shape)
        flattening = users and all(
            (u.kind == "FULLY_CONNECTED" and u.inputs[0] == y.name and not u.opts.get("keep_num_dims", False))
            or u.kind == "RESHAPE" for u in users)
        if not (identity or flattening):
            continue
        for u in users:
            u.inputs = [x.name if n == y.name else n for n in u.inputs]
        g.ops.remove(op)
        _remove_tensor(g, y.name)
        g.notes.append(f"removed {op.label()} ({'identity' if identity else 'read only by FC/RESHAPE'})")
    return g


def mark_concat_layout(graph: Graph) -> Graph:
    """CONCATENATION whose inputs all carry the output's quantization is memory layout only (`layout_only`);
    otherwise it stays a requantizing concat (an int8->int8 rescale of the inputs that differ)."""
    g = _copy(graph)
    for op in g.ops:
        if op.kind != "CONCATENATION":
            continue
        y = g.tensor(op.outputs[0])
        same = all(_same_quant(g.tensor(n), y) for n in op.inputs)
        op.opts["layout_only"] = bool(same and op.opts.get("activation", "NONE") == "NONE")
        if op.opts["layout_only"]:
            g.notes.append(f"{op.label()} is memory layout only (axis {op.opts.get('axis', 0)})")
    return g


def int8_core(graph: Graph) -> Graph:
    """The part the die runs: a float graph input read only by a QUANTIZE is replaced by that QUANTIZE's int8
    output, and a graph output made by a DEQUANTIZE of an int8 tensor by that int8 tensor (the host does the
    float conversions at the edges)."""
    g = _copy(graph)
    users = g.consumers()
    for i, name in enumerate(g.inputs):
        readers = users.get(name, [])
        if g.tensor(name).dtype == "float32" and len(readers) == 1 and readers[0].kind == "QUANTIZE" \
                and name not in g.outputs:
            q = readers[0]
            g.inputs[i] = q.outputs[0]
            g.ops.remove(q)
            _remove_tensor(g, name)
            g.notes.append(f"input '{name}' quantized on the host: the die takes '{q.outputs[0]}'")
    producers = g.producers()
    for i, name in enumerate(g.outputs):
        d = producers.get(name)
        if d is not None and d.kind == "DEQUANTIZE" and g.tensor(d.inputs[0]).dtype == "int8" \
                and not users.get(name):
            g.outputs[i] = d.inputs[0]
            g.ops.remove(d)
            _remove_tensor(g, name)
            g.notes.append(f"output '{name}' dequantized on the host: the die sends '{d.inputs[0]}'")
    return g


def lower(graph: Graph) -> Graph:
    """All lowering passes, in an order where each can enable the next; returns a new Graph (the input is kept)."""
    g = fold_pads(graph)
    g = fuse_activations(g)
    g = simplify_reshapes(g)
    return mark_concat_layout(g)
