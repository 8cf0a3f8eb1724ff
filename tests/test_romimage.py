"""quant.romimage: byte-identical output, every single-byte corruption refused, fingerprint checks, the manifest
and the $readmemh file."""

import json
import struct
import zlib

import numpy as np
import pytest

from stackcam.quant.compiler import compile_graph
from stackcam.quant.golden import execute
from stackcam.quant.report import manifest_json
from stackcam.quant.romimage import (
    ENTRY,
    HEADER,
    LAYOUT_FIELDS,
    MAGIC,
    NOT_LOADED,
    SECTION_IDS,
    RomError,
    build_rom,
    config_fingerprint,
    load_rom,
    readmemh,
)
from stackcam.rtl.params import PRESETS
from tests.test_program import CONFIGS, NETS


@pytest.fixture(scope="module")
def compiled():
    graph = NETS["lut_and_host_tail"]()
    model = compile_graph(graph, CONFIGS["tiny"])
    return graph, model, build_rom(model)


def test_deterministic(compiled):
    graph, model, rom = compiled
    again = compile_graph(graph, CONFIGS["tiny"])
    assert build_rom(again) == rom
    assert manifest_json(again, rom) == manifest_json(model, rom)
    assert readmemh(again) == readmemh(model)


def test_layout(compiled):
    _, model, rom = compiled
    img = load_rom(rom, CONFIGS["tiny"])
    assert rom[:8] == MAGIC
    assert struct.unpack_from("<I", rom, len(rom) - 4)[0] == zlib.crc32(rom[:-4])
    assert list(img.sections) == [s.decode().strip() for s in SECTION_IDS]
    loaded = [img.sections[k] for k in ("PROG", "PARM", "DWWT", "MACW")]
    assert [s["load_word"] for s in loaded] == list(np.cumsum([0] + [s["words"] for s in loaded[:-1]]))
    assert img.sections["MIO"]["load_word"] == NOT_LOADED
    np.testing.assert_array_equal(img.weight_sram(), model.weight_sram())
    assert img.descriptors == len(model.descriptors) and img.act_words == model.act_words
    for s in img.sections.values():
        assert s["offset"] % 16 == 0 and zlib.crc32(s["data"]) == s["crc32"]


def test_every_flipped_byte_is_refused(compiled):
    _, _, rom = compiled
    assert len(rom) > 4000
    config = CONFIGS["tiny"]
    for i in range(len(rom)):
        for mask in (0x01, 0x80):
            bad = bytearray(rom)
            bad[i] ^= mask
            with pytest.raises(RomError):
                load_rom(bytes(bad), config)


def test_flipped_byte_with_fixed_crc_is_still_refused(compiled):
    """A corruption that also rewrites the trailer CRC is caught by the section CRCs or the header checks."""
    _, _, rom = compiled
    img = load_rom(rom, CONFIGS["tiny"])
    assert all(sec["size"] for sec in img.sections.values())
    for name, sec in img.sections.items():
        for off in (sec["offset"], sec["offset"] + sec["size"] - 1):
            bad = bytearray(rom)
            bad[off] ^= 0x10
            bad[-4:] = struct.pack("<I", zlib.crc32(bytes(bad[:-4])))
            with pytest.raises(RomError, match=f"section {name} CRC"):
                load_rom(bytes(bad), CONFIGS["tiny"])


def test_truncated_padded_and_foreign(compiled):
    _, _, rom = compiled
    config = CONFIGS["tiny"]
    with pytest.raises(RomError, match="truncated or padded"):
        load_rom(rom[:-1], config)
    with pytest.raises(RomError, match="truncated or padded"):
        load_rom(rom + b"\0", config)
    with pytest.raises(RomError, match="not a stackcam ROM image"):
        load_rom(b"TFL3" * 40, config)
    with pytest.raises(RomError, match="not a stackcam ROM image"):
        load_rom(rom[:20], config)


def test_older_program_format_is_refused(compiled):
    """An image of program format version 1 (whose PAIR CONVs laid out an odd last oc tile as a full pair) is
    refused with the version, not run by the rules of version 2, even with a valid CRC."""
    _, _, rom = compiled
    old = bytearray(rom)
    struct.pack_into("<H", old, 10, 1)
    old[-4:] = struct.pack("<I", zlib.crc32(bytes(old[:-4])))
    with pytest.raises(RomError, match="program format version 1; this toolchain runs version 2"):
        load_rom(bytes(old), CONFIGS["tiny"])


def test_fingerprint(compiled):
    _, _, rom = compiled
    tiny = CONFIGS["tiny"]
    with pytest.raises(RomError, match="compiled for another configuration .*config 'fpga'"):
        load_rom(rom, PRESETS["fpga"])
    with pytest.raises(RomError, match="another configuration"):
        load_rom(rom, tiny.with_(weight_banks=1, sram_banks=3))
    # Fields that do not move anything in SRAM do not change the fingerprint.
    same = tiny.with_(name="renamed", csi2_lanes=2, clock_mhz=50.0)
    assert config_fingerprint(same) == config_fingerprint(tiny)
    load_rom(rom, same)
    # (array_rows is halved: twice as many rows as lanes is not a die, DieConfig refuses it.)
    fps = {config_fingerprint(tiny.with_(**{f: getattr(tiny, f) // 2 if f == "array_rows" else getattr(tiny, f) * 2}))
           for f in LAYOUT_FIELDS if f not in ("weight_banks",)}
    assert len(fps) == len(LAYOUT_FIELDS) - 1 and config_fingerprint(tiny) not in fps


def test_rom_runs_after_a_round_trip(compiled, tmp_path):
    graph, _, rom = compiled
    path = tmp_path / "model.rom"
    path.write_bytes(rom)
    x = np.zeros(graph.tensors[graph.inputs[0]].shape[1:], np.int8)
    assert [o.shape for o in execute(path.read_bytes(), CONFIGS["tiny"], x)] == \
        [tuple(graph.tensors[n].shape) for n in graph.outputs]


def test_manifest_and_readmemh(compiled):
    _, model, rom = compiled
    text = manifest_json(model, rom)
    data = json.loads(text)
    assert text == json.dumps(data, sort_keys=True, indent=2) + "\n"
    assert data["fingerprint"] == config_fingerprint(CONFIGS["tiny"]).hex()
    assert data["rom"]["bytes"] == len(rom)
    assert data["totals"]["macs"] == model.macs
    assert [layer["op"] for layer in data["layers"]] == [layer.op for layer in model.layers]
    # The manifest's cycles are the analytic model's (held to the die's counters by tests/test_cyclemodel.py).
    assert [layer["npu_cycles"] for layer in data["layers"]] == [layer.cycles for layer in model.layers]
    assert data["totals"]["npu_cycles"] == sum(layer.cycles for layer in model.layers) > 0
    assert data["program"][-1]["op"] == "END"
    lines = readmemh(model).splitlines()
    words = model.weight_sram()
    assert len(lines) == words.shape[0]
    assert all(len(line) == 2 * CONFIGS["tiny"].weight_word_bytes for line in lines)
    # Most significant byte first: byte 0 of word 0 (the first descriptor's opcode) is the last two digits.
    assert int(lines[0][-2:], 16) == model.descriptors[0].opcode
    assert bytes.fromhex(lines[5])[::-1] == words[5].tobytes()


def _recrc(image):
    """The image with every section CRC and the trailer CRC recomputed (what a deliberate tamperer does)."""
    image = bytearray(image)
    for i in range(len(SECTION_IDS)):
        pos = HEADER.size + i * ENTRY.size
        sid, off, size, _, load, words = ENTRY.unpack_from(image, pos)
        if off + size <= len(image) - 4:
            ENTRY.pack_into(image, pos, sid, off, size, zlib.crc32(bytes(image[off:off + size])), load, words)
    image[-4:] = struct.pack("<I", zlib.crc32(bytes(image[:-4])))
    return bytes(image)


def _with_io(rom, io):
    """`rom` with its model I/O section (the last) replaced by `io` as JSON, sizes and CRCs made consistent."""
    img = load_rom(rom, CONFIGS["tiny"])
    body = json.dumps(io, sort_keys=True).encode()
    image = bytearray(rom[:img.sections["MIO"]["offset"]] + body)
    image += bytes(-len(image) % 16) + bytes(4)
    pos = HEADER.size + 4 * ENTRY.size
    sid, off, _, crc, load, words = ENTRY.unpack_from(image, pos)
    ENTRY.pack_into(image, pos, sid, off, len(body), crc, load, words)
    fields = list(HEADER.unpack_from(image, 0))
    fields[11] = len(image)
    HEADER.pack_into(image, 0, *fields)
    return _recrc(image)


def _drop(d, *path):
    for key in path[:-1]:
        d = d[key]
    del d[path[-1]]


def _put(value, *path):
    def change(d):
        for key in path[:-1]:
            d = d[key]
        d[path[-1]] = value
    return change


TAMPERED_IO = {
    "not an object": lambda d: [1, 2],
    "no input": lambda d: _drop(d, "input"),
    "input not an object": _put(5, "input"),
    "hwc a string": _put("abc", "input", "hwc"),
    "no zero point": lambda d: _drop(d, "input", "zero_point"),
    "input outside the SRAM": _put(10 ** 9, "input", "addr"),
    "input layout": _put("diagonal", "input", "layout"),
    "no die outputs": lambda d: _drop(d, "die_outputs"),
    "negative hwc": _put([-1, 2, 3], "die_outputs", 0, "hwc"),
    "hwc and shape differ": _put([1, 1, 1], "die_outputs", 0, "hwc"),
    "output name a number": _put(3, "outputs", 0, "name"),
    "output nobody makes": _put("nowhere", "outputs", 0, "name"),
    "unknown host operator": _put("BOGUS", "host", "ops", 0, "kind"),
    "host op reads a stranger": _put(["nowhere"], "host", "ops", 0, "inputs"),
    "host op bad options": _put({"activation": "NONE", "axis": 7}, "host", "ops", 2, "opts"),
    "constant data too short": _put([1], "host", "tensors", 1, "data"),
    "dtype": _put("complex128", "host", "tensors", 1, "dtype"),
    "scale": _put([float("nan")], "outputs", 0, "scale"),
    "layer index": _put("one", "layers", 0, "index"),
}


@pytest.mark.parametrize("case", list(TAMPERED_IO))
def test_tampered_model_io_with_recomputed_crcs_is_one_line(compiled, case):
    """A model I/O section altered and its CRCs recomputed passes the CRCs; every field a reader indexes is checked
    by load_rom, so the Python loader API refuses it as a RomError, never a KeyError/TypeError later."""
    import copy

    _, _, rom = compiled
    config = CONFIGS["tiny"]
    io = load_rom(rom, config).io
    assert load_rom(_with_io(rom, io), config).io == io          # the rebuild alone changes nothing
    assert io["host"]["ops"][2]["kind"] == "CONCATENATION" and "data" in io["host"]["tensors"][1]
    changed = copy.deepcopy(io)
    changed = TAMPERED_IO[case](changed) or changed
    with pytest.raises(RomError, match="model I/O section") as e:
        load_rom(_with_io(rom, changed), config)
    assert "\n" not in str(e.value)


def test_tampered_sections_with_recomputed_crcs_are_refused_or_run(compiled):
    """Random byte changes anywhere in the image with every CRC recomputed: load_rom and the golden executor
    refuse them with a StackcamError or run them, nothing else (a parameter record's shift beyond the RTL's
    5 bits once raised a ValueError from the arithmetic)."""
    from stackcam.errors import StackcamError

    graph, _, rom = compiled
    config = CONFIGS["tiny"]
    img = load_rom(rom, config)
    x = np.zeros(img.io["input"]["hwc"], np.int8)
    parm = img.sections["PARM"]["offset"]
    bad = bytearray(rom)
    bad[parm + 8] = 0x80                          # record 0's shift: -128
    with pytest.raises(StackcamError, match="shift -128"):
        execute(_recrc(bad), config, x)
    rng = np.random.default_rng(14)
    spans = [(s["offset"], s["size"]) for s in img.sections.values()] + [(0, HEADER.size + 5 * ENTRY.size)]
    outcomes = {"refused": 0, "ran": 0}
    for _ in range(300):
        bad = bytearray(rom)
        off, size = spans[rng.integers(len(spans))]
        for _ in range(rng.integers(1, 4)):
            bad[off + rng.integers(size)] = rng.integers(256)
        try:
            execute(_recrc(bad), config, x)
            outcomes["ran"] += 1
        except StackcamError as e:
            assert "\n" not in str(e)
            outcomes["refused"] += 1
    assert outcomes["refused"] > 50 and outcomes["ran"] > 10, outcomes


def test_add_shift_beyond_the_rtl_is_a_program_error():
    """Found by the reliability campaign: an ADD descriptor's shift of -128 (CRCs recomputed) reached a ValueError
    in the arithmetic; the golden executor refuses it as it refuses any descriptor the RTL cannot run."""
    from stackcam.errors import StackcamError

    config = CONFIGS["tiny"]
    model = compile_graph(NETS["add_pools"](), config)
    rom = build_rom(model)
    i = next(k for k, d in enumerate(model.descriptors) if d.op == "ADD")
    img = load_rom(rom, config)
    bad = bytearray(rom)
    bad[img.sections["PROG"]["offset"] + 128 * i + 70] = 0x80          # in_shift (i8 at byte 70): -128
    x = np.zeros(img.io["input"]["hwc"], np.int8)
    with pytest.raises(StackcamError, match=f"descriptor {i} \\(ADD\\): shifts -128/"):
        execute(_recrc(bad), config, x)


def test_build_rom_never_writes_an_image_load_rom_refuses(compiled):
    """Found by the reliability campaign: a damaged .tflite whose host-tail tensor lost its quantization compiled
    to a ROM image that load_rom then refused; build_rom checks the I/O description as load_rom does."""
    import copy
    import dataclasses

    _, model, _ = compiled
    io = copy.deepcopy(model.io)
    concat_input = io["host"]["ops"][2]["inputs"][0]
    tensor = next(t for t in io["host"]["tensors"] if t["name"] == concat_input)
    for key in ("scale", "zero_point", "axis"):
        del tensor[key]
    with pytest.raises(RomError, match="compiles to a model I/O description load_rom would refuse: its host tail "
                                       "does not run") as e:
        build_rom(dataclasses.replace(model, io=io))
    assert "\n" not in str(e.value)
