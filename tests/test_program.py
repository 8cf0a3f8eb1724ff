"""quant.program: the descriptor table, the SRAM layouts byte by byte, and the golden program executor against
quant.executor.run_graph on hand-built graphs with every die operator."""

import re

import numpy as np
import pytest

import stackcam.quant.golden as golden
import stackcam.quant.program as fmt
from stackcam.quant.compiler import compile_graph
from stackcam.quant.executor import run_graph
from stackcam.quant.graph import Graph, Op, QuantParams, Tensor
from stackcam.quant.ref import window_padding
from stackcam.quant.romimage import build_rom
from stackcam.rtl.params import PRESETS, DieConfig

# Layouts where the word geometry differs: square 4x4 (16-byte words: one parameter record per word; fpga is 4x4
# too, with its 16 KiB banks and deep pipelines), 8x8 (the fpga preset's array before), and 8-byte weight words (a
# parameter record spans two words, descriptors span 16). A tall array (rows > cols) is not a die: DieConfig refuses
# it (an output-channel tile must fill whole lanes of an activation word).
CONFIGS = {
    "tiny": PRESETS["tiny"],
    "fpga": PRESETS["fpga"],
    "8x8": DieConfig(name="8x8", array_rows=8, array_cols=8, sram_banks=12, sram_bank_bytes=32 * 1024, weight_banks=9,
                     max_channels=256, im2col_pixels=1),
    "narrow": DieConfig(name="narrow", array_rows=2, array_cols=4, sram_banks=4, sram_bank_bytes=32 * 1024,
                        weight_banks=2),
}


class Net:
    """Builds small full-int8 Graphs directly in the IR, with seeded random weights and TFLite-style quantization."""

    def __init__(self, shape, seed=0, scale=1 / 64, zp=-3, name="net"):
        self.rng = np.random.default_rng(seed)
        self.tensors = {}
        self.ops = []
        self.n = 0
        self.name = name
        self.input = self.act(shape, scale, zp, "input")

    def _name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def shape(self, x):
        return self.tensors[x].shape

    def q(self, x):
        return self.tensors[x].quant.scalar()

    def act(self, shape, scale, zp, base="act"):
        name = self._name(base)
        self.tensors[name] = Tensor(name, tuple(int(d) for d in shape), "int8",
                                    quant=QuantParams.per_tensor(scale, zp))
        return name

    def const(self, data, dtype, base, quant=None):
        name = self._name(base)
        data = np.asarray(data, dtype)
        self.tensors[name] = Tensor(name, data.shape, dtype, data=data, quant=quant)
        return name

    def op(self, kind, inputs, outputs, **opts):
        self.ops.append(Op(kind, list(inputs), list(outputs), opts, name=f"{kind.lower()}_{len(self.ops)}"))
        return outputs[0]

    def _weights(self, shape, cout, axis, per_channel=True):
        w = self.rng.integers(-127, 128, shape).astype(np.int8)
        ws = (self.rng.uniform(0.002, 0.02, cout) if per_channel else np.full(1, 0.01)).astype(np.float32)
        return w, ws, QuantParams(ws, np.zeros(ws.size, np.int64), axis)

    def conv(self, x, cout, k=3, stride=1, padding="SAME", act="NONE", out_q=(0.05, 2), depthwise=False,
             pads=None, per_channel=True):
        n, h, w, cin = self.shape(x)
        kh, kw = (k, k) if isinstance(k, int) else k
        cout = cin if depthwise else cout
        if pads is None:
            (oh, t, b), (ow, lft, r) = window_padding(h, kh, stride, 1, padding), window_padding(w, kw, stride, 1,
                                                                                              padding)
            geo = dict(padding=padding)
        else:
            t, b, lft, r = pads
            oh, ow = (h + t + b - kh) // stride + 1, (w + lft + r - kw) // stride + 1
            geo = dict(pads=tuple(pads))
        wshape = (1, kh, kw, cout) if depthwise else (cout, kh, kw, cin)
        wq, ws, wquant = self._weights(wshape, cout, 3 if depthwise else 0, per_channel)
        f = self.const(wq, "int8", "filter", wquant)
        bias = self.const(self.rng.integers(-3000, 3000, cout), "int32", "bias")
        y = self.act((n, oh, ow, cout), *out_q)
        if depthwise:
            return self.op("DEPTHWISE_CONV_2D", [x, f, bias], [y], stride=(stride, stride), activation=act,
                           dilation=(1, 1), depth_multiplier=1, **geo)
        return self.op("CONV_2D", [x, f, bias], [y], stride=(stride, stride), activation=act, dilation=(1, 1),
                       **geo)

    def tconv(self, x, cout, k=3, stride=2, pads=(1, 1), out_hw=None, out_q=(0.06, -1), act="NONE"):
        """TRANSPOSE_CONV (OHWI filter, per-channel, int32 bias); the output is in * stride by default."""
        n, h, w, cin = self.shape(x)
        kh, kw = (k, k) if isinstance(k, int) else k
        oh, ow = out_hw or (h * stride, w * stride)
        wq, ws, wquant = self._weights((cout, kh, kw, cin), cout, 0)
        f = self.const(wq, "int8", "filter", wquant)
        bias = self.const(self.rng.integers(-3000, 3000, cout), "int32", "bias")
        y = self.act((n, oh, ow, cout), *out_q)
        return self.op("TRANSPOSE_CONV", [x, f, bias], [y], stride=(stride, stride), pads=tuple(pads), activation=act)

    def fc(self, x, units, out_q=(0.1, -5), act="NONE", per_channel=False):
        depth = int(np.prod(self.shape(x)[1:]))
        wq, ws, wquant = self._weights((units, depth), units, 0, per_channel)
        f = self.const(wq, "int8", "weights", wquant)
        bias = self.const(self.rng.integers(-2000, 2000, units), "int32", "bias")
        y = self.act((1, units), *out_q)
        return self.op("FULLY_CONNECTED", [x, f, bias], [y], activation=act, keep_num_dims=False)

    def add(self, a, b, out_q=(0.07, 4), act="NONE"):
        return self.op("ADD", [a, b], [self.act(self.shape(a), *out_q)], activation=act)

    def pool(self, x, kind, f, stride, padding="VALID", act="NONE"):
        n, h, w, c = self.shape(x)
        oh = window_padding(h, f[0], stride, 1, padding)[0]
        ow = window_padding(w, f[1], stride, 1, padding)[0]
        y = self.act((n, oh, ow, c), *self.q(x))
        return self.op(kind, [x], [y], filter=tuple(f), stride=(stride, stride), padding=padding, activation=act)

    def pad(self, x, paddings):
        p = self.const(np.array(paddings), "int32", "paddings")
        shape = tuple(d + a + b for d, (a, b) in zip(self.shape(x), paddings))
        return self.op("PAD", [x, p], [self.act(shape, *self.q(x))])

    def concat(self, xs, axis=3):
        shape = list(self.shape(xs[0]))
        shape[axis] = sum(self.shape(x)[axis] for x in xs)
        return self.op("CONCATENATION", xs, [self.act(shape, *self.q(xs[0]))], axis=axis, activation="NONE")

    def reshape(self, x, shape):
        s = self.const(np.array(shape), "int32", "shape")
        return self.op("RESHAPE", [x, s], [self.act(shape, *self.q(x))], new_shape=tuple(shape))

    def unary(self, x, kind, out_q, **opts):
        return self.op(kind, [x], [self.act(self.shape(x), *out_q)], **opts)

    def resize(self, x, kind, out_hw, align_corners=False, half_pixel_centers=False):
        """RESIZE_BILINEAR / RESIZE_NEAREST_NEIGHBOR to `out_hw`, the output quantized like the input."""
        n, _, _, c = self.shape(x)
        return self.op(kind, [x], [self.act((n, *out_hw, c), *self.q(x))], align_corners=align_corners,
                       half_pixel_centers=half_pixel_centers)

    def graph(self, *outputs):
        return Graph(tensors=dict(self.tensors), ops=list(self.ops), inputs=[self.input], outputs=list(outputs),
                     name=self.name)

    def inputs(self, count=2):
        return [self.rng.integers(-128, 128, self.shape(self.input)).astype(np.int8) for _ in range(count)]


def check_equal(graph, config, count=2, seed=0):
    """Compile for `config`, run the ROM image in the program executor and the graph in run_graph: equal."""
    model = compile_graph(graph, config)
    rom = build_rom(model)
    rng = np.random.default_rng(seed)
    shape = graph.tensors[graph.inputs[0]].shape
    for _ in range(count):
        x = rng.integers(-128, 128, shape).astype(np.int8)
        want = run_graph(graph, [x])
        got = golden.execute(rom, config, x[0])
        assert len(got) == len(want)
        for g, w, name in zip(got, want, graph.outputs):
            assert g.dtype == w.dtype and g.shape == w.shape, name
            bad = int(np.count_nonzero(g != w))
            assert bad == 0, f"{name}: {bad} of {w.size} outputs differ from run_graph"
    return model


# --- the descriptor table ---------------------------------------------------------------------------------------

def test_descriptor_table_is_the_docstring():
    rows = fmt.field_table()
    assert [name for _, _, name in rows] == [f for f in fmt.Descriptor.__dataclass_fields__]
    sizes = {"B": 1, "b": 1, "H": 2, "h": 2, "I": 4, "i": 4}
    offset = 0
    for off, code, _ in rows:
        assert off == offset
        offset += sizes[code]
    assert offset == fmt.DESCRIPTOR_BYTES == 128
    # Every opcode the table lists in the opcode field is in OPCODES, with the same number.
    line = fmt.FIELDS[0].meaning
    assert dict((n, int(v)) for v, n in re.findall(r"(\d+) ([A-Z]+)", line)) == fmt.OPCODES


def test_pack_unpack_round_trip_and_byte_positions():
    rng = np.random.default_rng(1)
    ranges = {"B": (0, 255), "b": (-128, 127), "H": (0, 65535), "I": (0, 2**32 - 1), "i": (-2**31, 2**31 - 1)}
    for _ in range(20):
        d = fmt.Descriptor()
        for _, code, name in fmt.field_table():
            if not name.startswith("reserved"):
                lo, hi = ranges[code]
                setattr(d, name, int(rng.integers(lo, hi, endpoint=True)))
        d.opcode, d.flags = fmt.OPCODES["CONV"], fmt.PACKED
        data = fmt.pack(d)
        assert len(data) == 128 and fmt.unpack(data) == d
        assert data[0] == d.opcode and int.from_bytes(data[36:40], "little") == d.in_addr
        assert int.from_bytes(data[72:76], "little", signed=True) == d.in_mult
        assert int.from_bytes(data[100:102], "little") == d.in_ppw


@pytest.mark.parametrize("patch,message", [
    (dict(opcode=0), "invalid opcode 0"), (dict(opcode=14), "invalid opcode 14"),
    (dict(opcode=3, flags=1), "invalid flags"), (dict(opcode=6, flags=2), "invalid flags"),
    (dict(opcode=1, reserved7=5), "reserved7"), (dict(opcode=8, flags=fmt.ZPAD2), "invalid flags"),
    (dict(opcode=3, flags=32), "invalid flags"),
])
def test_unpack_refuses(patch, message):
    with pytest.raises(fmt.ProgramError, match=message):
        fmt.unpack(fmt.pack(fmt.Descriptor(**patch)))


def test_zpad2_is_an_add_flag():
    """ADD (and SUB) take ZPAD2; the golden step refuses a ZPAD2 second input of another size or more channels than
    the output."""
    for flags in (fmt.ZPAD2, fmt.ZPAD2 | fmt.NEG2):
        assert fmt.unpack(fmt.pack(fmt.Descriptor(opcode=3, flags=flags))).flags == flags
    base = dict(opcode=3, flags=fmt.ZPAD2, in_h=2, in_w=2, in_c=9, in_ct=3, out_h=2, out_w=2, out_c=9, out_ct=3,
                in2_h=2, in2_w=2, in2_c=3, in2_ct=1, out_addr=100, in2_addr=50, left_shift=20)
    sram = np.zeros((200, 4), np.int8)
    golden.step(0, fmt.Descriptor(**base), sram, np.zeros((4, 16), np.uint8), 4, 4)
    for patch in (dict(in2_w=1), dict(in2_c=10, in2_ct=3), dict(in2_ct=2)):
        with pytest.raises(fmt.ProgramError, match="ZPAD2|channel tiles"):
            golden.step(0, fmt.Descriptor(**{**base, **patch}), sram, np.zeros((4, 16), np.uint8), 4, 4)


def test_pack_refuses_out_of_range():
    with pytest.raises(fmt.ProgramError, match="in_zp = 200"):
        fmt.pack(fmt.Descriptor(opcode=1, in_zp=200))
    with pytest.raises(fmt.ProgramError, match="in_h = 70000"):
        fmt.pack(fmt.Descriptor(opcode=1, in_h=70000))


# --- weight-space layouts, byte by byte against the docstring's formulas -------------------------------------------

@pytest.mark.parametrize("rows,cols", [(4, 4), (8, 16), (8, 4), (2, 4), (3, 5)])
def test_conv_block_layout(rows, cols):
    rng = np.random.default_rng(rows * cols)
    oc, kh, kw, ic = 11, 3, 2, 9
    w = rng.integers(-127, 128, (oc, kh, kw, ic)).astype(np.int8)
    block = fmt.pack_conv_weights(w, rows, cols).view(np.int8)
    ot, it = -(-oc // rows), -(-ic // cols)
    assert block.shape == (fmt.conv_block_words(oc, kh, kw, ic, rows, cols), rows * cols) == (ot * kh * kw * it,
                                                                                               rows * cols)
    word = 0
    for o in range(ot):
        for ky in range(kh):
            for kx in range(kw):
                for i in range(it):
                    for r in range(rows):
                        for c in range(cols):
                            oo, ii = o * rows + r, i * cols + c
                            want = w[oo, ky, kx, ii] if oo < oc and ii < ic else 0
                            assert block[word, r * cols + c] == want
                    word += 1
    np.testing.assert_array_equal(fmt.unpack_conv_weights(block.view(np.uint8), oc, kh, kw, ic, rows, cols), w)


@pytest.mark.parametrize("rows,cols,oc,ic", [(4, 8, 11, 4), (8, 16, 17, 5), (2, 4, 4, 2), (32, 64, 70, 32),
                                         (4, 8, 11, 12), (2, 4, 9, 9), (8, 16, 16, 40), (8, 16, 24, 24)])
def test_pair_block_layout(rows, cols, oc, ic):
    """PAIR: per (pair, ky, kx) the F full input tiles' words of tile 2*pair, of tile 2*pair + 1 (byte (r, c)
    W[tile*rows + r, ky, kx, i*cols + c]), then the merged word, byte (r, c) W[(2*pair + c // (cols/2))*rows + r,
    ky, kx, F*cols + c % (cols/2)]; an odd last tile (a pair of one): per (ky, kx) the merged word (its upper
    half 0), then the tile's F full words."""
    rng = np.random.default_rng(oc * ic)
    kh, kw, half = 3, 2, cols // 2
    f = -(-ic // cols) - 1
    assert fmt.pair_fits(ic, cols) and not fmt.pair_fits(f * cols + half + 1, cols)
    w = rng.integers(-127, 128, (oc, kh, kw, ic)).astype(np.int8)
    block = fmt.pack_pair_weights(w, rows, cols).view(np.int8)
    tiles = -(-oc // rows)
    pairs = -(-tiles // 2)
    assert block.shape == (fmt.pair_block_words(oc, kh, kw, ic, rows, cols), rows * cols) == \
        (kh * kw * (tiles // 2 * (2 * f + 1) + tiles % 2 * (f + 1)), rows * cols)

    def weight(oo, ky, kx, ii):
        return w[oo, ky, kx, ii] if oo < oc and ii < ic else 0

    word = 0
    for p in range(pairs):
        single = 2 * p + 1 == tiles                 # an odd last tile
        for ky in range(kh):
            for kx in range(kw):
                phases = [("merged", 0, f)] + [("full", 0, i) for i in range(f)] if single else \
                    [("full", h, i) for h in range(2) for i in range(f)] + [("merged", 0, f)]
                for kind, h, i in phases:
                    for r in range(rows):
                        for c in range(cols):
                            if kind == "full":
                                want = weight((2 * p + h) * rows + r, ky, kx, i * cols + c)
                            else:
                                want = weight((2 * p + c // half) * rows + r, ky, kx, f * cols + c % half)
                            assert block[word, r * cols + c] == want
                    word += 1
    assert word == block.shape[0]
    np.testing.assert_array_equal(fmt.unpack_pair_weights(block.view(np.uint8), oc, kh, kw, ic, rows, cols), w)


@pytest.mark.parametrize("rows,cols", [(4, 4), (8, 16), (8, 4), (2, 4)])
def test_im2col_block_layout(rows, cols):
    rng = np.random.default_rng(7)
    oc, kh, kw, ic = 6, 3, 3, 3
    w = rng.integers(-127, 128, (oc, kh, kw, ic)).astype(np.int8)
    block = fmt.pack_im2col_weights(w, rows, cols).view(np.int8)
    k_total, kt = kh * kw * ic, -(-(kh * kw * ic) // cols)
    assert block.shape[0] == fmt.im2col_block_words(oc, kh, kw, ic, rows, cols) == -(-oc // rows) * kt
    for word in range(block.shape[0]):
        o, t = divmod(word, kt)
        for r in range(rows):
            for c in range(cols):
                oo, k = o * rows + r, t * cols + c
                ky, rest = divmod(k, kw * ic)
                kx, ii = divmod(rest, ic)
                want = w[oo, ky, kx, ii] if oo < oc and k < k_total else 0
                assert block[word, r * cols + c] == want
    np.testing.assert_array_equal(fmt.unpack_im2col_weights(block.view(np.uint8), oc, kh, kw, ic, rows, cols), w)


@pytest.mark.parametrize("rows,cols,k", [(4, 4, 3), (8, 16, 5), (8, 4, 3), (2, 4, 5)])
def test_dw_block_layout(rows, cols, k):
    rng = np.random.default_rng(k)
    ch = 13
    w = rng.integers(-127, 128, (k, k, ch)).astype(np.int8)
    block = fmt.pack_dw_weights(w, rows, cols).view(np.int8)
    taps, kwd = k * k, -(-(k * k) // rows)
    assert block.shape[0] == fmt.dw_block_words(k, k, ch, rows, cols) == -(-ch // cols) * kwd
    for word in range(block.shape[0]):
        ct, kk = divmod(word, kwd)
        for t in range(rows):
            for c in range(cols):
                tap, chan = kk * rows + t, ct * cols + c
                want = w[tap // k, tap % k, chan] if tap < taps and chan < ch else 0
                assert block[word, t * cols + c] == want
    np.testing.assert_array_equal(fmt.unpack_dw_weights(block.view(np.uint8), k, k, ch, rows, cols), w)


@pytest.mark.parametrize("rows,cols", [(4, 4), (8, 16), (8, 4), (2, 4), (32, 64)])
def test_param_records(rows, cols):
    ch = 11
    bias = np.arange(ch) * 100003 - 500000
    mult = (1 << 30) + np.arange(ch) * 7919
    shift = np.array([-31, -7, -1, 0, 1, 5, -3, -2, 0, 3, -12])
    words = fmt.pack_params(bias, mult, shift, rows, cols)
    wb = rows * cols
    n = fmt.param_record_count(ch, rows, cols)
    assert n == max(-(-ch // rows) * rows, -(-ch // cols) * cols)
    assert words.shape == (fmt.param_words(ch, rows, cols), wb)
    if wb >= 16:
        rpw = wb // 16
        assert words.shape[0] == -(-n // rpw)
        where = [(k // rpw, 16 * (k % rpw)) for k in range(n)]
        stream = None
    else:
        span = -(-16 // wb)
        assert words.shape[0] == n * span
        stream = words.reshape(-1)
        where = [(k * span, 0) for k in range(n)]
    for k, (word, byte) in enumerate(where):
        rec = words[word, byte:byte + 16].tobytes() if stream is None else stream[word * wb:word * wb + 16].tobytes()
        if k < ch:
            assert int.from_bytes(rec[0:4], "little", signed=True) == bias[k]
            assert int.from_bytes(rec[4:8], "little", signed=True) == mult[k]
            assert int.from_bytes(rec[8:9], "little", signed=True) == shift[k]
            assert rec[9:] == bytes(7)
        else:
            assert rec == bytes(16)
    got = fmt.unpack_params(words, ch, rows, cols)
    for a, b in zip(got, (bias, mult, shift)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("rows,cols", [(4, 4), (8, 16), (2, 4)])
def test_fc_param_records(rows, cols):
    bias = np.array([5, -70000, 123456789])
    scale = np.array([1.5e-3, 0.0123456789012345, 2.0 ** -20])
    words = fmt.pack_fc_params(bias, scale, rows, cols)
    assert words.shape[0] == fmt.param_words(3, rows, cols)
    wb = rows * cols
    stream = words.reshape(-1)
    for k in range(3):
        start = (k // (wb // 16)) * wb + 16 * (k % (wb // 16)) if wb >= 16 else k * 16
        rec = stream[start:start + 16].tobytes()
        assert int.from_bytes(rec[0:4], "little", signed=True) == bias[k] and rec[4:8] == bytes(4)
        assert np.frombuffer(rec[8:16], "<f8")[0] == scale[k]
    got_bias, got_scale = fmt.unpack_fc_params(words, 3, rows, cols)
    np.testing.assert_array_equal(got_bias, bias)
    np.testing.assert_array_equal(got_scale, scale)


def test_activation_layouts():
    cols = 4
    sram = np.zeros((200, cols), np.int8)
    x = np.arange(3 * 5 * 6, dtype=np.int64).reshape(3, 5, 6).astype(np.int8)
    fmt.write_tensor(sram, 10, x, -7)
    ct = 2
    for y in range(3):
        for xx in range(5):
            for c in range(8):
                word = 10 + (y * 5 + xx) * ct + c // cols
                assert sram[word, c % cols] == (x[y, xx, c] if c < 6 else -7)
    np.testing.assert_array_equal(fmt.read_tensor(sram, 10, 3, 5, 6), x)
    # Pixel-packed: cols // C pixels per word, unused lanes and slots the zero point.
    sram = np.zeros((200, 16), np.int8)
    x3 = np.arange(3 * 5 * 3, dtype=np.int64).reshape(3, 5, 3).astype(np.int8)
    fmt.write_packed(sram, 4, x3, 9)
    assert fmt.packed_words(3, 5, 3, 16) == 3
    for p in range(15):
        for c in range(3):
            assert sram[4 + p // 5, (p % 5) * 3 + c] == x3[p // 5, p % 5, c]
    assert np.all(sram[4:7, 15] == 9)
    np.testing.assert_array_equal(fmt.read_packed(sram, 4, 3, 5, 3), x3)


# --- the program executor against the graph executor ----------------------------------------------------------------

def net_conv_strided():
    n = Net((1, 11, 13, 5), seed=1)
    y = n.conv(n.input, 7, k=3, stride=2, act="RELU6", out_q=(6 / 255, -128))
    return n.graph(n.conv(y, 9, k=1, out_q=(0.04, 3)))


def net_channel_tiles():
    n = Net((1, 6, 5, 20), seed=2)
    y = n.conv(n.input, 37, k=3, stride=1, act="RELU", out_q=(0.03, -100))
    y = n.conv(y, 0, k=3, stride=2, depthwise=True, out_q=(0.05, 1))
    return n.graph(n.conv(y, 18, k=(1, 3), stride=1, padding="VALID", out_q=(0.06, -2)))


def net_depthwise():
    n = Net((1, 13, 11, 9), seed=3)
    a = n.conv(n.input, 0, k=5, stride=2, depthwise=True, act="RELU6", out_q=(6 / 255, -128))
    b = n.conv(n.input, 0, k=5, stride=1, depthwise=True, out_q=(0.05, 7), per_channel=False)
    c = n.conv(n.input, 0, k=3, stride=2, depthwise=True, pads=(0, 1, 1, 0), out_q=(0.04, -9))
    return n.graph(a, b, c)


def net_add_pools():
    n = Net((1, 9, 7, 6), seed=4)
    a = n.conv(n.input, 10, k=3, out_q=(0.05, 3))
    b = n.conv(n.input, 10, k=1, out_q=(0.11, -20))
    s = n.add(a, b, out_q=(0.09, -4), act="RELU")
    m = n.pool(s, "MAX_POOL_2D", (3, 3), 2, padding="SAME")
    v = n.pool(s, "AVERAGE_POOL_2D", (3, 3), 2, padding="SAME", act="RELU6")
    t = n.add(m, v, out_q=(0.05, 10))
    return n.graph(t, n.pool(t, "AVERAGE_POOL_2D", n.shape(t)[1:3], 1))


def net_pad_concat():
    n = Net((1, 5, 6, 3), seed=5)
    a = n.conv(n.input, 5, k=3, out_q=(0.05, 2))
    p = n.pad(a, [(0, 0), (1, 2), (0, 1), (2, 3)])                  # spatial and channel, not foldable here
    b = n.conv(p, 6, k=1, out_q=(0.05, 2))
    c = n.concat([p, b, p], axis=3)                                    # 10 + 6 + 10 channels
    d = n.concat([b, b], axis=2)                                       # along W
    e = n.concat([b, n.conv(b, 6, k=1, out_q=n.q(b))], axis=1)        # along H
    f = n.pad(b, [(0, 0), (1, 0), (2, 1), (0, 0)])
    n.ops[-1].opts["value"] = -128                                     # PADV2 for a max pool: not the zero point
    return n.graph(c, d, e, n.pool(f, "MAX_POOL_2D", (3, 3), 2))


def net_fc():
    n = Net((1, 3, 3, 5), seed=6)
    a = n.conv(n.input, 6, k=3, out_q=(0.05, 2))
    flat = n.reshape(a, (1, 54))                                       # FC on a flattened 3x3x6: a 3x3 conv
    f1 = n.fc(flat, 10, out_q=(0.1, -5))
    f2 = n.fc(n.pool(a, "AVERAGE_POOL_2D", (3, 3), 1), 7, per_channel=True, act="RELU", out_q=(0.05, -128))
    return n.graph(f1, n.fc(f2, 4, out_q=(0.2, 1)))


def net_lut_and_host_tail():
    n = Net((1, 6, 6, 7), seed=7)
    a = n.conv(n.input, 6, k=3, out_q=(0.05, 2))
    a = n.conv(a, 0, k=3, depthwise=True, out_q=(0.06, 1))
    r = n.unary(a, "RELU", (0.03, -128))                               # requantizing RELU: a LUT, not fusable
    q = n.unary(r, "QUANTIZE", (0.07, 5))
    lg = n.unary(n.conv(q, 4, k=1, out_q=(0.1, 0)), "LOGISTIC", (1 / 256, -128))   # fed by the die: a LUT
    h1 = n.reshape(n.conv(q, 2, k=1, out_q=(0.2, 3)), (1, 72, 1))
    h2 = n.reshape(n.conv(q, 2, k=3, stride=2, out_q=(0.2, 3)), (1, 18, 1))
    cat = n.concat([h1, h2], axis=1)                                   # heads: host tail
    sm = n.unary(n.reshape(cat, (1, 90)), "SOFTMAX", (1 / 256, -128), beta=1.0)
    lh = n.unary(cat, "LOGISTIC", (1 / 256, -128))                     # after a host op: on the host
    return n.graph(lg, cat, sm, lh)


def net_stem(channels=3):
    n = Net((1, 15, 17, channels), seed=8, scale=1 / 128, zp=0)
    a = n.conv(n.input, 8, k=3, stride=2, act="RELU6", out_q=(6 / 255, -128))
    b = n.conv(n.input, 5, k=5, stride=1, out_q=(0.05, 1))
    return n.graph(a, b)


def net_arith(c=11, hw=(5, 6)):
    """MUL, SUB, ADD with each broadcast of the second input (and a first input that is broadcast, swapped),
    MEAN over H and W (keep_dims and not), PRELU with one alpha per channel (negative alphas) and with one."""
    n = Net((1, *hw, 3), seed=9)
    a = n.conv(n.input, c, k=3, out_q=(0.05, 2))
    b = n.conv(n.input, c, k=1, out_q=(0.03, -9))
    g = n.op("MEAN", [a, n.const(np.array([1, 2]), "int32", "axes")], [n.act((1, 1, 1, c), 0.011, -5)],
             keep_dims=True)
    s = n.op("MEAN", [b, n.const(np.array([2, 1]), "int32", "axes")], [n.act((1, c), 0.02, 7)], keep_dims=False)
    sig = n.unary(g, "LOGISTIC", (1 / 256, -128))
    m1 = n.op("MUL", [a, sig], [n.act(n.shape(a), 0.02, 3)], activation="NONE")          # squeeze-excite
    m2 = n.op("MUL", [sig, b], [n.act(n.shape(b), 0.04, -1)], activation="RELU")         # broadcast first
    m3 = n.op("MUL", [m1, m2], [n.act(n.shape(a), 0.01, 0)], activation="NONE")          # same shapes
    d1 = n.op("SUB", [m3, b], [n.act(n.shape(a), 0.06, 4)], activation="NONE")
    d2 = n.op("SUB", [d1, n.reshape(s, (1, 1, 1, c))], [n.act(n.shape(a), 0.07, -3)], activation="RELU")
    one = n.conv(n.conv(n.input, 1, k=1, out_q=(0.1, 5)), 0, k=hw, padding="VALID", depthwise=True,
                 out_q=(0.1, 5))                                                          # a 1x1x1 tensor
    m4 = n.op("MUL", [d2, one], [n.act(n.shape(a), 0.05, 0)], activation="NONE")         # by a scalar
    e = n.op("ADD", [one, m4], [n.act(n.shape(a), 0.05, 1)], activation="NONE")          # ADD broadcast
    alpha = n.rng.integers(-128, 128, (1, 1, c)).astype(np.int8)
    p = n.op("PRELU", [e, n.const(alpha, "int8", "alpha", QuantParams.per_tensor(0.013, 3))],
             [n.act(n.shape(a), 0.04, -7)])
    p1 = n.op("PRELU", [p, n.const(np.array([[[-77]]], np.int8), "int8", "alpha1",
                                   QuantParams.per_tensor(0.01, 0))], [n.act(n.shape(a), 0.04, -7)])
    return n.graph(p1, s)


def net_resize():
    n = Net((1, 5, 6, 3), seed=31)
    a = n.conv(n.input, 5, k=3, out_q=(0.05, 2))
    up = n.resize(a, "RESIZE_BILINEAR", (9, 13), half_pixel_centers=True)
    down = n.resize(a, "RESIZE_NEAREST_NEIGHBOR", (3, 4), align_corners=True)
    return n.graph(n.conv(up, 3, k=1, out_q=(0.1, 0)), n.conv(down, 3, k=1, out_q=(0.1, 0)))


def net_gather():
    n = Net((1, 4, 6, 3), seed=32)
    a = n.conv(n.input, 12, k=3, out_q=(0.05, 2))
    d = n.op("DEPTH_TO_SPACE", [a], [n.act((1, 8, 12, 3), *n.q(a))], block_size=2)
    s = n.op("STRIDED_SLICE", [a], [n.act((1, 2, 3, 7), *n.q(a))], begin=(0, 1, 0, 5), end=(1, 4, 6, 12),
             strides=(1, 2, 2, 1))
    return n.graph(n.conv(d, 3, k=1, out_q=(0.1, 0)), n.conv(s, 3, k=1, out_q=(0.1, 0)))


NETS = {"conv_strided": net_conv_strided, "channel_tiles": net_channel_tiles, "depthwise": net_depthwise,
        "add_pools": net_add_pools, "pad_concat": net_pad_concat, "fc": net_fc,
        "lut_and_host_tail": net_lut_and_host_tail, "stem_rgb": net_stem, "stem_gray": lambda: net_stem(1),
        "arith": net_arith, "resize": net_resize, "gather": net_gather}


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("net", list(NETS))
def test_executor_equals_run_graph(net, config):
    check_equal(NETS[net](), CONFIGS[config])


@pytest.mark.parametrize("per_channel", [False, True])
def test_fully_connected_rescales_like_litert_reference(per_channel):
    """FCSCALE: the die's FC must round double(acc) * scale like LiteRT's reference kernel; the Q31 rule the
    convolutions use gets some of these outputs wrong, the program executor none."""
    from stackcam.quant.executor import fully_connected_params
    from stackcam.quant.ref import fully_connected_acc, requantize_acc
    q31_wrong = 0
    for seed in range(4):
        n = Net((1, 1, 1, 48), seed=200 + seed)
        y = n.fc(n.input, 600, per_channel=per_channel, out_q=(0.02, 3))
        graph = n.graph(y)
        model = check_equal(graph, CONFIGS["fpga"], count=3, seed=seed)
        assert model.descriptors[0].flags & fmt.FCSCALE
        op = graph.ops[0]
        p = fully_connected_params(graph, op)
        for x in n.inputs(3):
            acc = fully_connected_acc(x, graph.tensors[op.inputs[1]].data, p["input_offset"], p["weights_offset"])
            q31 = requantize_acc(acc, graph.tensors[op.inputs[2]].data, p["multiplier"], p["shift"],
                                 p["output_zero_point"], p["act_min"], p["act_max"])
            q31_wrong += int(np.count_nonzero(q31 != run_graph(graph, [x])[0]))
    assert q31_wrong > 0


def test_every_opcode_is_exercised():
    seen = set()
    for make in NETS.values():
        model = compile_graph(make(), CONFIGS["fpga"])
        seen |= {d.op for d in model.descriptors}
        seen |= {"CONV+PACKED" for d in model.descriptors if d.flags & fmt.PACKED}
    assert seen == set(fmt.OPCODES) | {"CONV+PACKED"}


def test_stem_input_is_packed_where_it_pays():
    # 8x8: 8-byte words hold 2 RGB pixels; tiny's and fpga's 4-byte words hold one, where packing does not pay.
    for config, ppw in (("8x8", 2), ("tiny", 0), ("fpga", 0)):
        model = compile_graph(net_stem(), CONFIGS[config])
        assert model.io["input"]["ppw"] == ppw
        assert model.io["input"]["layout"] == ("packed" if ppw else "tiled")


def test_trace_and_unwritten_words_show():
    graph = net_add_pools()
    config = CONFIGS["tiny"]
    model = compile_graph(graph, config)
    rom = build_rom(model)
    x = np.random.default_rng(0).integers(-128, 128, graph.tensors[graph.inputs[0]].shape).astype(np.int8)
    steps = []
    outs, sram = golden.execute_trace(rom, config, x[0], on_descriptor=lambda i, d, s: steps.append((i, d.op)))
    assert [op for _, op in steps] == [d.op for d in model.descriptors[:-1]]
    # Padding lanes of every live tensor hold its zero point (6 and 10 channels in 4-lane words).
    t = model.tensors[graph.outputs[0]]
    h, w, c = t["hwc"]
    lanes = fmt.read_tensor(sram, t["addr"], h, w, c, lanes=True)
    assert np.all(lanes[..., c:] == graph.tensors[graph.outputs[0]].quant.scalar()[1])
    # A descriptor that reads one word off its input gives different outputs: addressing bugs cannot hide.
    d = next(e for e in reversed(model.descriptors) if e.op == "CONV")
    d.in_addr += 1
    model.program[:] = fmt.stream_words(b"".join(fmt.pack(e) for e in model.descriptors), config.weight_word_bytes)
    bad = golden.execute(build_rom(model), config, x[0])
    assert any(np.any(a != b) for a, b in zip(bad, outs))


def test_residual_add_runs_in_place():
    n = Net((1, 8, 8, 6), seed=9)
    a = n.conv(n.input, 6, k=3, out_q=(0.05, 2))
    b = n.conv(a, 6, k=1, out_q=(0.06, -3))
    s = n.add(a, b, out_q=(0.08, 1), act="RELU")
    graph = n.graph(n.conv(s, 4, k=1, out_q=(0.1, 0)))
    model = check_equal(graph, CONFIGS["tiny"])
    add = next(d for d in model.descriptors if d.op == "ADD")
    assert add.out_addr in (add.in_addr, add.in2_addr)
    # Two 8x8x6 tensors (2 words a pixel) live at the ADD, plus the input while the first conv runs.
    assert model.act_words == 2 * 8 * 8 * 2


def test_overlapping_output_is_refused():
    graph = net_conv_strided()
    config = CONFIGS["tiny"]
    model = compile_graph(graph, config)
    model.descriptors[0].out_addr = model.descriptors[0].in_addr + 1
    model.program[:] = fmt.stream_words(b"".join(fmt.pack(e) for e in model.descriptors), config.weight_word_bytes)
    x = np.zeros(graph.tensors[graph.inputs[0]].shape[1:], np.int8)
    with pytest.raises(fmt.ProgramError, match="descriptor 0 .*overlap"):
        golden.execute(build_rom(model), config, x)


def test_wrong_input_is_refused():
    graph = net_conv_strided()
    rom = build_rom(compile_graph(graph, CONFIGS["tiny"]))
    with pytest.raises(ValueError, match="input must be int8 11x13x5"):
        golden.execute(rom, CONFIGS["tiny"], np.zeros((11, 13, 4), np.int8))
    with pytest.raises(ValueError, match="input must be int8"):
        golden.execute(rom, CONFIGS["tiny"], np.zeros((11, 13, 5), np.float32))
