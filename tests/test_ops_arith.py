"""MEAN, MUL, SUB and PRELU (int8): the golden graph executor against LiteRT's BUILTIN_REF kernels on odd shapes,
scales and zero points (broadcasts, keep_dims, negative alphas), and the exported model again in LiteRT."""

import numpy as np
import pytest

from stackcam.quant.tflite import activation_type, schema
from tests.test_quant_ops import ModelBuilder, compare

OPS = schema.BuiltinOperator


def mean_model(shape, axes, keep_dims, in_q, out_q, seed=0):
    m = ModelBuilder(seed=seed)
    x = m.input(shape, *in_q)
    a = m.b.add_tensor("axes", (len(axes),), np.int32, data=np.array(axes, np.int32))
    rank = len(shape)
    red = {ax % rank for ax in axes}
    out = tuple(1 if i in red else d for i, d in enumerate(shape)) if keep_dims else \
        tuple(d for i, d in enumerate(shape) if i not in red)
    y = m.act(out, *out_q)
    m.b.add_operator(OPS.MEAN, [x, a], [y], schema.ReducerOptionsT(keepDims=keep_dims))
    return m.output(y), m.random_inputs()


@pytest.mark.parametrize("shape,axes,keep,in_q,out_q", [
    ((1, 7, 5, 9), [1, 2], True, (0.05, 3), (0.05, 3)),            # same quantization
    ((1, 7, 5, 9), [1, 2], False, (0.05, 3), (0.011, -20)),        # rescale down, keep_dims false
    ((1, 16, 16, 96), [2, 1], True, (0.031, -128), (0.0123, 5)),   # 256 elements, axes reversed
    ((1, 9, 16, 5), [1, 2], True, (0.004, 100), (0.3, -128)),      # rescale up
    ((1, 3, 1, 4), [-3, -2], False, (0.2, 0), (0.07, 7)),          # negative axes, 3 elements
    ((1, 13, 11, 3), [1, 2], True, (1 / 64, -3), (1 / 64, -3)),    # 143 elements: not a power of two
    ((1, 36, 64, 16), [1, 2], True, (0.02, -7), (0.0031, 11)),     # 2304 elements
    ((1, 6, 5, 4), [2], True, (0.05, 1), (0.06, -2)),              # one axis (executor only)
])
def test_mean_equals_litert(shape, axes, keep, in_q, out_q):
    model, inputs = mean_model(shape, axes, keep, in_q, out_q, seed=len(shape) + shape[1])
    compare(model, inputs)


def binary_model(kind, sa, sb, qa, qb, qo, act="NONE", seed=0):
    m = ModelBuilder(seed=seed)
    a = m.input(sa, *qa)
    b = m.input(sb, *qb)
    y = m.act(np.broadcast_shapes(sa, sb), *qo)
    opts = {"MUL": schema.MulOptionsT, "SUB": schema.SubOptionsT, "ADD": schema.AddOptionsT}[kind](
        fusedActivationFunction=activation_type(act))
    m.b.add_operator(getattr(OPS, kind), [a, b], [y], opts)
    return m.output(y), m.random_inputs()


SHAPES = [((1, 5, 7, 9), (1, 5, 7, 9)), ((1, 6, 5, 11), (1, 1, 1, 11)), ((1, 3, 4, 5), (1, 1, 1, 1)),
          ((1, 1, 1, 6), (1, 4, 3, 6)), ((1, 4, 3, 7), (1,))]
QS = [((0.05, 3), (0.02, -7), (0.07, 4)), ((0.0039, -128), (0.11, 0), (0.0021, 10)),
      ((0.3, 100), (0.25, -100), (0.9, -3))]


@pytest.mark.parametrize("kind", ["MUL", "SUB", "ADD"])
@pytest.mark.parametrize("q", range(len(QS)))
@pytest.mark.parametrize("shapes", range(len(SHAPES)))
def test_binary_equals_litert(kind, shapes, q):
    sa, sb = SHAPES[shapes]
    qa, qb, qo = QS[q]
    model, inputs = binary_model(kind, sa, sb, qa, qb, qo, act="RELU" if (shapes + q) % 3 == 1 else "NONE",
                                 seed=shapes * 10 + q)
    compare(model, inputs)


def prelu_model(shape, alpha_shape, alpha, qx, qa, qo, seed=0):
    m = ModelBuilder(seed=seed)
    x = m.input(shape, *qx)
    a = m.b.add_tensor("alpha", alpha_shape, np.int8, data=np.asarray(alpha, np.int8).reshape(alpha_shape),
                       scale=qa[0], zero_point=qa[1])
    y = m.act(shape, *qo)
    m.b.add_operator(OPS.PRELU, [x, a], [y], None)
    return m.output(y), m.random_inputs()


@pytest.mark.parametrize("shape,qx,qa,qo", [
    ((1, 5, 7, 9), (0.05, 3), (0.01, 0), (0.04, -5)),
    ((1, 4, 3, 37), (0.0039, -128), (0.02, 17), (0.003, 20)),
    ((1, 6, 6, 16), (0.3, 100), (0.004, -3), (0.2, -100)),
    ((1, 3, 3, 128), (0.021, 0), (0.0078, -128), (0.013, 9)),
])
def test_prelu_per_channel_equals_litert(shape, qx, qa, qo):
    c = shape[-1]
    rng = np.random.default_rng(c)
    alpha = rng.integers(-128, 128, c)                # negative alphas included
    model, inputs = prelu_model(shape, (1, 1, c), alpha, qx, qa, qo, seed=c)
    compare(model, inputs)
