"""Sparse TFLite constants (DENSIFY): made dense on import exactly as LiteRT's DENSIFY makes them."""

import zipfile

import numpy as np
import pytest

from stackcam.quant.executor import run_graph
from stackcam.quant.graph import ModelError
from stackcam.quant.importer import load_model
from stackcam.quant.litert import run_reference
from stackcam.quant.sparse import densify
from stackcam.quant.tflite import TFLiteBuilder, conv2d_options, schema

OPS = schema.BuiltinOperator
DENSE, CSR = schema.DimensionType.DENSE, schema.DimensionType.SPARSE_CSR


def encode(dense, order, block_map=(), block_size=(), formats=None, index_type=np.uint8):
    """(values, SparsityParametersT) of `dense` in the TFLite sparse format (a plain recursive encoder: the
    mirror of the format's definition, independent of quant.sparse's breadth-first decoder)."""
    dense = np.asarray(dense)
    rank = dense.ndim
    levels = rank + len(block_map)
    formats = formats or [DENSE] * (levels - 1) + [CSR]
    # The blocked view: every blocked dimension d split into (d / b, b); the block part goes to axis rank + i.
    split_shape, axes = [], {}
    for d in range(rank):
        if d in block_map:
            b = block_size[list(block_map).index(d)]
            axes[d] = len(split_shape)
            axes[rank + list(block_map).index(d)] = len(split_shape) + 1
            split_shape += [dense.shape[d] // b, b]
        else:
            axes[d] = len(split_shape)
            split_shape.append(dense.shape[d])
    walked = dense.reshape(split_shape).transpose([axes[o] for o in order])
    values, meta = [], [dict(segments=[0], indices=[]) for _ in range(levels)]

    def walk(sub, level):
        if level == levels:
            values.append(sub)
            return
        for i in range(sub.shape[0]):
            if formats[level] == CSR:
                if not np.any(sub[i]):
                    continue
                meta[level]["indices"].append(i)
            walk(sub[i], level + 1)
        if formats[level] == CSR:
            meta[level]["segments"].append(len(meta[level]["indices"]))

    walk(walked, 0)
    vector = {np.uint8: (schema.SparseIndexVector.Uint8Vector, schema.Uint8VectorT),
              np.uint16: (schema.SparseIndexVector.Uint16Vector, schema.Uint16VectorT),
              np.int32: (schema.SparseIndexVector.Int32Vector, schema.Int32VectorT)}[index_type]
    dims = []
    for level in range(levels):
        if formats[level] == DENSE:
            dims.append(schema.DimensionMetadataT(format=DENSE, denseSize=walked.shape[level]))
        else:
            seg, ind = vector[1](), vector[1]()
            seg.values = np.array(meta[level]["segments"], index_type)
            ind.values = np.array(meta[level]["indices"], index_type)
            dims.append(schema.DimensionMetadataT(format=CSR, arraySegmentsType=vector[0], arraySegments=seg,
                                                  arrayIndicesType=vector[0], arrayIndices=ind))
    sparsity = schema.SparsityParametersT(traversalOrder=list(order), blockMap=list(block_map) or None,
                                          dimMetadata=dims)
    return np.array(values, dense.dtype).reshape(-1), sparsity


def add_sparse(b, name, dense, sparsity_args, scale=None, zero_point=None, quantized_dimension=0):
    """A sparse constant tensor in builder `b` (its buffer holds only the values present)."""
    values, sparsity = encode(dense, **sparsity_args)
    t = b.add_tensor(name, values.shape, dense.dtype, data=values)
    if scale is not None:       # quantization checked against the dense shape
        q = b.tensors[b.add_tensor(name, dense.shape, dense.dtype, scale=scale, zero_point=zero_point,
                                   quantized_dimension=quantized_dimension)].quantization
        b.tensors.pop()
        b.tensors[t].quantization = q
    b.tensors[t].shape = [int(d) for d in dense.shape]
    b.tensors[t].sparsity = sparsity
    return t


def sparse_weights(rng, shape, density=0.3, dtype=np.float32, block=None):
    w = rng.normal(0, 1, shape).astype(np.float32)
    if block is None:
        mask = rng.random(shape) < density
    else:                                   # whole blocks of `block` along the last axis
        mask = np.repeat(rng.random((*shape[:-1], shape[-1] // block)) < density, block, axis=-1)
    w = np.where(mask, w, 0)
    if dtype == np.int8:
        return np.clip(np.round(w * 40), -127, 127).astype(np.int8)
    return w.astype(dtype)


CASES = {
    # mediapipe's layout: OHWI, every level dense but the last (input channels) CSR
    "ohwi_csr": dict(shape=(8, 1, 1, 12), args=dict(order=[0, 1, 2, 3])),
    # 1x4 blocks along the input channels, block level dense, channel blocks CSR
    "blocked": dict(shape=(6, 2, 3, 8), block=4,
                    args=dict(order=[0, 1, 2, 3, 4], block_map=[3], block_size=[4],
                              formats=[DENSE, DENSE, DENSE, CSR, DENSE])),
    # traversal not in the dimension order, two CSR levels, 16-bit indices
    "permuted": dict(shape=(5, 3, 3, 7),
                     args=dict(order=[3, 0, 1, 2], formats=[DENSE, CSR, DENSE, CSR], index_type=np.uint16)),
    # blocks of 2 output channels, two CSR levels, 32-bit indices
    "block_out": dict(shape=(4, 3, 1, 6),
                      args=dict(order=[0, 1, 2, 3, 4], block_map=[0], block_size=[2],
                                formats=[CSR, DENSE, DENSE, CSR, DENSE], index_type=np.int32)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_densify_float32_equals_litert(case):
    """A float conv whose filter is sparse behind DENSIFY: the importer drops DENSIFY, the dense filter equals
    the encoded one, and the golden executor's output equals LiteRT BUILTIN_REF's."""
    c = CASES[case]
    rng = np.random.default_rng(sorted(CASES).index(case))
    w = sparse_weights(rng, c["shape"], block=c.get("block"))
    cout, kh, kw, cin = c["shape"]
    b = TFLiteBuilder()
    x = b.add_input("x", (1, 6, 5, cin), np.float32)
    ws = add_sparse(b, "w_sparse", w, c["args"])
    wd = b.add_tensor("w", w.shape, np.float32)
    b.add_operator(OPS.DENSIFY, [ws], [wd], schema.DensifyOptionsT())
    bias = b.add_tensor("bias", (cout,), np.float32, data=rng.normal(0, 0.1, cout).astype(np.float32))
    y = b.add_tensor("y", (1, 6, 5, cout), np.float32)
    b.add_operator(OPS.CONV_2D, [x, wd, bias], [y], conv2d_options((1, 1), "SAME"))
    b.mark_output(y)
    model = b.build()
    values, _ = encode(w, **c["args"])
    assert values.size < w.size                         # really sparse in the file

    g = load_model(model)
    assert [op.kind for op in g.ops] == ["CONV_2D"]
    np.testing.assert_array_equal(g.tensor("w").data, w)
    np.testing.assert_array_equal(densify(values, w.shape, encode(w, **c["args"])[1]), w)
    inp = rng.normal(0, 1, (1, 6, 5, cin)).astype(np.float32)
    ref = run_reference(model, [inp])[0]
    np.testing.assert_allclose(run_graph(g, [inp])[0], ref, rtol=1e-5, atol=1e-5)


def test_densify_int8_conv_bit_exact_with_litert():
    """An int8 conv with per-channel int8 weights stored sparse (blocks of 4): bit-exact with BUILTIN_REF."""
    rng = np.random.default_rng(7)
    cout, cin = 10, 16
    w = sparse_weights(rng, (cout, 3, 3, cin), density=0.4, dtype=np.int8, block=4)
    args = dict(order=[0, 1, 2, 3, 4], block_map=[3], block_size=[4], formats=[DENSE, DENSE, DENSE, CSR, DENSE])
    ws_scale = rng.uniform(0.002, 0.02, cout).astype(np.float32)
    b = TFLiteBuilder()
    x = b.add_input("x", (1, 7, 9, cin), np.int8, scale=0.037, zero_point=-11)
    wsp = add_sparse(b, "w_sparse", w, args, scale=ws_scale, zero_point=np.zeros(cout, np.int64))
    wd = b.add_tensor("w", w.shape, np.int8, scale=ws_scale, zero_point=np.zeros(cout, np.int64))
    b.add_operator(OPS.DENSIFY, [wsp], [wd], schema.DensifyOptionsT())
    bias = b.add_tensor("bias", (cout,), np.int32, data=rng.integers(-3000, 3000, cout).astype(np.int32),
                        scale=np.float32(0.037) * ws_scale, zero_point=np.zeros(cout, np.int64))
    y = b.add_tensor("y", (1, 4, 5, cout), np.int8, scale=0.11, zero_point=3)
    b.add_operator(OPS.CONV_2D, [x, wd, bias], [y], conv2d_options((2, 2), "SAME", "RELU"))
    b.mark_output(y)
    model = b.build()
    g = load_model(model)
    assert [op.kind for op in g.ops] == ["CONV_2D"] and g.is_quantized()
    np.testing.assert_array_equal(g.tensor("w").data, w)
    for seed in range(3):
        inp = np.random.default_rng(seed).integers(-128, 128, (1, 7, 9, cin)).astype(np.int8)
        np.testing.assert_array_equal(run_graph(g, [inp])[0], run_reference(model, [inp])[0])


def test_bad_sparsity_is_one_line():
    rng = np.random.default_rng(1)
    w = sparse_weights(rng, (4, 1, 1, 8))
    b = TFLiteBuilder()
    x = b.add_input("x", (1, 2, 2, 8), np.float32)
    ws = add_sparse(b, "w_sparse", w, dict(order=[0, 1, 2, 3]))
    b.tensors[ws].sparsity.dimMetadata[3].arraySegments.values[-1] += 5     # past the indices
    wd = b.add_tensor("w", w.shape, np.float32)
    b.add_operator(OPS.DENSIFY, [ws], [wd], schema.DensifyOptionsT())
    y = b.add_tensor("y", (1, 2, 2, 4), np.float32)
    b.add_operator(OPS.CONV_2D, [x, wd, -1], [y], conv2d_options((1, 1), "SAME"))
    b.mark_output(y)
    with pytest.raises(ModelError, match="sparse constant tensor 'w_sparse'") as e:
        load_model(b.build())
    assert "\n" not in str(e.value)


def _mediapipe_wheel():
    from tests.mediapipe_wheel import mediapipe_wheel
    return mediapipe_wheel()


def test_mediapipe_full_range_sparse_densifies_like_litert():
    """face_detection_full_range_sparse (46 DENSIFY of float16 weights): every dense tensor equals LiteRT's."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    with zipfile.ZipFile(_mediapipe_wheel()) as z:
        data = z.read("mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite")
    interp = Interpreter(model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                         experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    d = interp.get_input_details()[0]
    interp.set_tensor(d["index"], np.zeros(d["shape"], np.float32))
    interp.invoke()
    from stackcam.quant.importer import BUILTIN_NAMES
    from stackcam.quant.tflite import read_model
    model = read_model(data)
    sg = model.subgraphs[0]
    checked = 0
    for op in sg.operators:
        code = model.operatorCodes[op.opcodeIndex]
        if BUILTIN_NAMES[max(code.builtinCode, code.deprecatedBuiltinCode)] != "DENSIFY":
            continue
        t = sg.tensors[op.inputs[0]]
        values = np.frombuffer(bytes(model.buffers[t.buffer].data), np.float16)
        ours = densify(values, t.shape, t.sparsity)
        np.testing.assert_array_equal(ours.view(np.uint16), interp.get_tensor(op.outputs[0]).view(np.uint16))
        checked += 1
    assert checked == 46
    # The importer no longer calls the file corrupt: what is left are operators the toolchain lacks (or none).
    try:
        load_model(data, "face_detection_full_range_sparse.tflite")
    except ModelError as e:
        assert "corrupt" not in str(e) and "DENSIFY" not in str(e)
