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
    assert data["program"][-1]["op"] == "END"
    lines = readmemh(model).splitlines()
    words = model.weight_sram()
    assert len(lines) == words.shape[0]
    assert all(len(line) == 2 * CONFIGS["tiny"].weight_word_bytes for line in lines)
    # Most significant byte first: byte 0 of word 0 (the first descriptor's opcode) is the last two digits.
    assert int(lines[0][-2:], 16) == model.descriptors[0].opcode
    assert bytes.fromhex(lines[5])[::-1] == words[5].tobytes()
