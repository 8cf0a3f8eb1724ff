"""The weight ROM image: one checked binary (header, section table, sections, CRC32), its JSON manifest and the
`$readmemh` file of the weight SRAM; `load_rom` refuses any image that is not exactly what was written.

Format version 1 (``ROM_FORMAT_VERSION``), all integers little-endian:

=====  =====  ===================  =====================================================================
 off   type   name                 meaning
=====  =====  ===================  =====================================================================
   0   8s     magic                ``b"STKCMROM"``
   8   u16    rom_version          1
  10   u16    program_version      descriptor format of ``quant.program`` (1)
  12   u16    header_bytes         64 + 24 * section_count
  14   u16    section_count        5
  16   16s    fingerprint          ``config_fingerprint(config)``: the layout the image was compiled for
  32   u32    weight_word_bytes    array_rows * array_cols
  36   u32    act_word_bytes       array_cols
  40   u32    weight_words         words loaded into the weight SRAM (all loaded sections)
  44   u32    descriptors          descriptors in the program, END included
  48   u32    act_words            activation-SRAM words the program uses (peak)
  52   u32    image_bytes          length of the whole file, CRC trailer included
  56   8s     reserved             zero
=====  =====  ===================  =====================================================================

Then ``section_count`` entries of 24 bytes: ``4s id, u32 offset, u32 size, u32 crc32, u32 load_word,
u32 words`` (offset and size in bytes of the file; crc32 of the section's bytes; load_word is the first
weight-SRAM word the loader writes it to, 0xFFFFFFFF for a section that is not loaded; words = size / WB).
Sections follow in table order, each starting on a 16-byte boundary (zero fill between):

- ``PROG`` program words (descriptors), loaded at word 0;
- ``PARM`` per-channel parameter records and LUT tables, loaded right after;
- ``DWWT`` depthwise weight blocks, loaded right after;
- ``MACW`` MAC-array weight blocks, loaded right after (the four loaded sections are the weight SRAM image);
- ``MIO `` model I/O description, canonical JSON (sorted keys, UTF-8), not loaded: input tensor (shape,
  quantization, activation address), die outputs (shape, quantization, address), the host tail as a small
  Graph, graph outputs, and the layer names of the program's ``layer`` indices.

The last 4 bytes are the CRC-32 (IEEE 802.3, ``zlib.crc32``) of every byte before them. A loader streaming the
image checks the magic, version and fingerprint from the header, writes each loaded section to its words and
accepts the image only when the running CRC matches the trailer (and each section's CRC matches its entry).
"""

import hashlib
import json
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from stackcam.errors import StackcamError

from .program import PROGRAM_FORMAT_VERSION

__all__ = ["MAGIC", "ROM_FORMAT_VERSION", "SECTION_IDS", "NOT_LOADED", "HEADER", "ENTRY", "ALIGN", "RomError",
           "RomImage", "LAYOUT_FIELDS", "config_fingerprint", "build_rom", "load_rom", "readmemh"]

MAGIC = b"STKCMROM"
ROM_FORMAT_VERSION = 1
SECTION_IDS = (b"PROG", b"PARM", b"DWWT", b"MACW", b"MIO ")
NOT_LOADED = 0xFFFFFFFF
# The DieConfig fields that change where anything lives in SRAM or how a word is laid out.
LAYOUT_FIELDS = ("array_rows", "array_cols", "sram_banks", "sram_bank_bytes", "weight_banks")

# The image layout, public for the die's model loader (rtl.npu.loader), which parses the same bytes:
# HEADER: magic, ROM format, program format, header bytes, section count, config fingerprint, weight word bytes,
# activation word bytes, weight words loaded, descriptors, activation words, image bytes, 8 reserved bytes;
# ENTRY (one per section, SECTION_IDS order): id, offset, size, CRC-32, first weight word loaded (or NOT_LOADED),
# words; sections start on ALIGN-byte boundaries.
HEADER = struct.Struct("<8sHHHH16sIIIIII8s")
ENTRY = struct.Struct("<4sIIIII")
ALIGN = 16


class RomError(StackcamError, ValueError):
    """A ROM image that is corrupt, truncated, of another format, or compiled for another configuration."""


def config_fingerprint(config):
    """16 bytes identifying the SRAM layout of a DieConfig (SHA-256 of its layout fields, truncated)."""
    text = "stackcam-layout-v1;" + ";".join(f"{name}={getattr(config, name)}" for name in LAYOUT_FIELDS)
    return hashlib.sha256(text.encode()).digest()[:16]


def _canonical_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def build_rom(model):
    """The ROM image bytes of a compiler.CompiledModel. Same model, same bytes; RomError (one line) for a model
    whose I/O description load_rom would refuse."""
    cfg = model.config
    loaded = [model.program, model.params, model.dw_weights, model.weights]
    payloads = [np.ascontiguousarray(w, np.uint8).tobytes() for w in loaded] + [_canonical_json(model.io)]
    try:        # never an image load_rom refuses (a damaged model's host tail that cannot run, say)
        _check_io(json.loads(payloads[-1]), cfg)
    except RomError as e:
        raise RomError(f"model '{model.name}' compiles to a model I/O description load_rom would refuse: "
                       f"{str(e).removeprefix('ROM model I/O section is malformed: ')}") from None
    header_bytes = HEADER.size + ENTRY.size * len(SECTION_IDS)
    offset = -(-header_bytes // ALIGN) * ALIGN
    entries, body = [], bytearray()
    load_word = 0
    for i, (sid, data) in enumerate(zip(SECTION_IDS, payloads)):
        if i < len(loaded):
            words = loaded[i].shape[0]
            entries.append(ENTRY.pack(sid, offset, len(data), zlib.crc32(data), load_word, words))
            load_word += words
        else:
            entries.append(ENTRY.pack(sid, offset, len(data), zlib.crc32(data), NOT_LOADED, 0))
        pad = -len(data) % ALIGN
        body += data + bytes(pad)
        offset += len(data) + pad
    image_bytes = offset + 4
    header = HEADER.pack(MAGIC, ROM_FORMAT_VERSION, PROGRAM_FORMAT_VERSION, header_bytes, len(SECTION_IDS),
                          config_fingerprint(cfg), cfg.weight_word_bytes, cfg.act_word_bytes, load_word,
                          len(model.descriptors), model.act_words, image_bytes, bytes(8))
    head = header + b"".join(entries)
    image = head + bytes(-len(head) % ALIGN) + bytes(body)
    assert len(image) == image_bytes - 4
    return image + struct.pack("<I", zlib.crc32(image))


@dataclass
class RomImage:
    """A validated ROM image: header fields, sections by id, the parsed model I/O description."""

    rom_version: int
    program_version: int
    fingerprint: bytes
    weight_word_bytes: int
    act_word_bytes: int
    weight_words: int
    descriptors: int
    act_words: int
    sections: dict           # id (str) -> {"offset", "size", "crc32", "load_word", "words", "data"}
    io: dict

    def weight_sram(self):
        """uint8 [weight_words, WB]: the weight SRAM as the loader leaves it."""
        out = np.zeros((self.weight_words, self.weight_word_bytes), np.uint8)
        for sec in self.sections.values():
            if sec["load_word"] != NOT_LOADED and sec["words"]:
                out[sec["load_word"]:sec["load_word"] + sec["words"]] = \
                    np.frombuffer(sec["data"], np.uint8).reshape(sec["words"], self.weight_word_bytes)
        return out


def load_rom(data, config):
    """Validate a ROM image against `config` and return a RomImage; RomError (one line) on any defect."""
    data = bytes(data)
    n = len(data)
    if n < HEADER.size + 4 or data[:8] != MAGIC:
        raise RomError(f"not a stackcam ROM image ({n} bytes; the magic {MAGIC.decode()!r} is missing)")
    (magic, rom_version, program_version, header_bytes, count, fingerprint, wb, ab, weight_words, descriptors,
     act_words, image_bytes, reserved) = HEADER.unpack_from(data, 0)
    if rom_version != ROM_FORMAT_VERSION:
        raise RomError(f"ROM format version {rom_version}; this toolchain reads version {ROM_FORMAT_VERSION}")
    if image_bytes != n:
        raise RomError(f"ROM image is {n:,} bytes but its header says {image_bytes:,} (truncated or padded)")
    (crc,) = struct.unpack_from("<I", data, n - 4)
    if zlib.crc32(data[:-4]) != crc:
        raise RomError(f"ROM image CRC-32 mismatch: stored 0x{crc:08x}, computed 0x{zlib.crc32(data[:-4]):08x} "
                       f"(corrupt image)")
    if program_version != PROGRAM_FORMAT_VERSION:
        raise RomError(f"program format version {program_version}; this toolchain runs version "
                       f"{PROGRAM_FORMAT_VERSION}")
    if count != len(SECTION_IDS) or header_bytes != HEADER.size + ENTRY.size * count or any(reserved):
        raise RomError(f"ROM header is malformed ({count} sections, {header_bytes} header bytes)")
    want = config_fingerprint(config)
    if fingerprint != want:
        raise RomError(f"ROM image was compiled for another configuration (fingerprint {fingerprint.hex()}, "
                       f"config '{config.name}' is {want.hex()}: {_layout(config)})")
    if wb != config.weight_word_bytes or ab != config.act_word_bytes:
        raise RomError(f"ROM word sizes {wb}/{ab} B differ from config '{config.name}' "
                       f"({config.weight_word_bytes}/{config.act_word_bytes} B)")
    sections = {}
    end = header_bytes
    load_word = 0
    for i, sid in enumerate(SECTION_IDS):
        got_id, off, size, sec_crc, load, words = ENTRY.unpack_from(data, HEADER.size + i * ENTRY.size)
        name = sid.decode().strip()
        if got_id != sid:
            raise RomError(f"ROM section {i} is {got_id!r}, expected {sid!r}")
        if off < end or off % ALIGN or off + size > n - 4:
            raise RomError(f"ROM section {name} at {off:,}+{size:,} lies outside the image or overlaps")
        body = data[off:off + size]
        if zlib.crc32(body) != sec_crc:
            raise RomError(f"ROM section {name} CRC-32 mismatch (corrupt image)")
        loaded = i < len(SECTION_IDS) - 1
        if loaded and (load != load_word or size != words * wb):
            raise RomError(f"ROM section {name}: {size:,} B loaded at word {load} does not follow the previous "
                           f"section (word {load_word}) in whole {wb}-byte words")
        if not loaded and (load != NOT_LOADED or words):
            raise RomError(f"ROM section {name} is marked for loading; it is host data")
        if loaded:
            load_word += words
        sections[name] = {"offset": off, "size": size, "crc32": sec_crc, "load_word": load, "words": words,
                          "data": body}
        end = off + size
    if load_word != weight_words:
        raise RomError(f"ROM sections fill {load_word} words, the header says {weight_words}")
    capacity = config.weight_banks * config.sram_bank_bytes // wb
    if weight_words > capacity:
        raise RomError(f"ROM image needs {weight_words:,} weight words, config '{config.name}' has {capacity:,}")
    act_capacity = config.act_banks * config.sram_bank_bytes // ab
    if act_words > act_capacity:
        raise RomError(f"ROM image needs {act_words:,} activation words, config '{config.name}' has "
                       f"{act_capacity:,}")
    if descriptors * 128 > sections["PROG"]["size"]:
        raise RomError(f"ROM program section holds fewer than its {descriptors} descriptors")
    try:
        io = json.loads(sections["MIO"]["data"].decode())
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise RomError(f"ROM model I/O section is not valid JSON: {str(e).splitlines()[0]}") from None
    _check_io(io, config)
    return RomImage(rom_version=rom_version, program_version=program_version, fingerprint=fingerprint,
                    weight_word_bytes=wb, act_word_bytes=ab, weight_words=weight_words, descriptors=descriptors,
                    act_words=act_words, sections=sections, io=io)


# The model I/O section's schema. Every reader (the golden executor, the host side of a die run, the CLI) indexes
# these fields without further checks, so a section that passes the CRCs but not this (a tampered image with its
# CRCs recomputed, a buggy writer) is refused here as a RomError naming the field.
_DTYPES = ("int8", "uint8", "int16", "int32", "int64", "float32")
_DTYPE_RANGE = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-2 ** 15, 2 ** 15 - 1)}
_MAX_RANK = 8
_MAX_ELEMENTS = 1 << 31


class _Bad(Exception):
    """A field of the model I/O section that is not what the format says (the message names it)."""


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _get(obj, key, kind, where):
    if not isinstance(obj, dict):
        raise _Bad(f"{where or 'the section'} is a {type(obj).__name__}, not an object")
    if key not in obj:
        raise _Bad(f"{where or 'the section'} has no '{key}'")
    v = obj[key]
    ok = _is_int(v) if kind is int else isinstance(v, kind)
    if not ok:
        kinds = {int: "an integer", str: "a string", list: "a list", dict: "an object"}
        raise _Bad(f"{f'{where}.' if where else ''}{key} is {_short(v)}, not {kinds[kind]}")
    return v


def _short(v):
    text = json.dumps(v) if not isinstance(v, bytes) else repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _ints(v, where, lo=None, n=None):
    if not isinstance(v, list) or not all(_is_int(x) for x in v) or (n is not None and len(v) != n) or \
            (lo is not None and any(x < lo for x in v)):
        want = f"{n} " if n is not None else ""
        raise _Bad(f"{where} is {_short(v)}, not a list of {want}integers{f' >= {lo}' if lo is not None else ''}")
    return v


def _check_tensor(t, where, config=None, packed_ppw=None):
    """One tensor record; `config` given: a tensor the die holds (int8, quantized, placed in the activation
    SRAM); `packed_ppw` the pixels per word of a pixel-packed input."""
    name = _get(t, "name", str, where)
    where = f"{where} '{name}'"
    if not name:
        raise _Bad(f"{where} has an empty name")
    shape = _ints(_get(t, "shape", list, where), f"{where}.shape", lo=0)
    if len(shape) > _MAX_RANK or int(np.prod(shape, dtype=object)) > _MAX_ELEMENTS:
        raise _Bad(f"{where}.shape {_short(shape)} is too large")
    dtype = _get(t, "dtype", str, where)
    if dtype not in _DTYPES:
        raise _Bad(f"{where}.dtype {dtype!r} is not one of {', '.join(_DTYPES)}")
    quant = [k for k in ("scale", "zero_point", "axis") if k in t]
    if quant:
        scale = _get(t, "scale", list, where)
        zps = _ints(_get(t, "zero_point", list, where), f"{where}.zero_point")
        axis = _get(t, "axis", int, where)
        if not scale or len(zps) != len(scale) or \
                not all(isinstance(s, (int, float)) and not isinstance(s, bool) and np.isfinite(s) and s > 0
                        for s in scale):
            raise _Bad(f"{where}: scale {_short(scale)} and zero_point {_short(zps)} are not matching lists of "
                       f"positive scales and integers")
        lo, hi = _DTYPE_RANGE.get(dtype, (-2 ** 31, 2 ** 31 - 1))
        if any(z < lo or z > hi for z in zps):
            raise _Bad(f"{where}.zero_point {_short(zps)} is outside {dtype}")
        if len(scale) > 1 and not (0 <= axis < len(shape) and len(scale) == shape[axis]):    # per channel
            raise _Bad(f"{where}: {len(scale)} scales along axis {axis} of shape {shape}")
    if "data" in t:
        try:
            data = np.array(t["data"], dtype)
        except (ValueError, TypeError, OverflowError) as e:
            raise _Bad(f"{where}.data is not {dtype} data ({str(e).splitlines()[0]})") from None
        if data.size != int(np.prod(shape, dtype=object)) or data.dtype == object:
            raise _Bad(f"{where}.data holds {data.size} values, its shape {shape} needs "
                       f"{int(np.prod(shape, dtype=object))}")
    if config is None:
        return name
    if dtype != "int8" or not quant:
        raise _Bad(f"{where} is held by the die: it must be a quantized int8 tensor, not {dtype}")
    h, w, c = _ints(_get(t, "hwc", list, where), f"{where}.hwc", lo=1, n=3)
    if h * w * c != int(np.prod(shape, dtype=object)):
        raise _Bad(f"{where}: hwc {h}x{w}x{c} and shape {shape} differ in size")
    addr = _get(t, "addr", int, where)
    words = _get(t, "words", int, where)
    cols = config.array_cols
    want = -(-(h * w) // packed_ppw) if packed_ppw else h * w * -(-c // cols)
    if words != want:
        raise _Bad(f"{where}: {words} words, a {h}x{w}x{c} tensor takes {want}")
    capacity = config.act_banks * config.sram_bank_bytes // cols
    if addr < 0 or addr + words > capacity:
        raise _Bad(f"{where}: words {addr}..{addr + words - 1} lie outside the activation SRAM "
                   f"({capacity:,} words)")
    return name


def _check_io(io, config):
    """Refuse (RomError, one line) a model I/O section that is not what `Compiler.io` writes, field by field,
    and run its host tail once on zeros, so that no reader of a loaded image meets a KeyError or a TypeError."""
    try:
        _check_io_fields(io, config)
    except _Bad as e:
        raise RomError(f"ROM model I/O section is malformed: {e}") from None


def _check_io_fields(io, config):
    if not isinstance(io, dict):
        raise _Bad(f"it is a {type(io).__name__}, not an object")
    _get(io, "model", str, "")
    inp = _get(io, "input", dict, "")
    layout = _get(inp, "layout", str, "input")
    ppw = _get(inp, "ppw", int, "input")
    if layout not in ("packed", "tiled"):
        raise _Bad(f"input.layout {layout!r} is neither 'packed' nor 'tiled'")
    c = _ints(_get(inp, "hwc", list, "input"), "input.hwc", lo=1, n=3)[2]
    want_ppw = config.array_cols // c if layout == "packed" else 0
    if ppw != want_ppw or (layout == "packed" and ppw < 2):
        raise _Bad(f"input.ppw {ppw} does not fit a {layout} {c}-channel input in {config.array_cols}-byte words")
    _check_tensor(inp, "input", config, packed_ppw=ppw)
    outs = _get(io, "die_outputs", list, "")
    if not outs:
        raise _Bad("die_outputs is empty")
    die = [_check_tensor(t, f"die_outputs[{k}]", config) for k, t in enumerate(outs)]
    if len(set(die)) != len(die):
        raise _Bad(f"die_outputs names a tensor twice ({die})")
    host = _get(io, "host", dict, "")
    host_inputs = _get(host, "inputs", list, "host")
    tensors = _get(host, "tensors", list, "host")
    ops = _get(host, "ops", list, "host")
    names = [_check_tensor(t, f"host.tensors[{k}]") for k, t in enumerate(tensors)]
    if len(set(names)) != len(names):
        raise _Bad("host.tensors names a tensor twice")
    if not all(isinstance(n, str) and n in die and n in names for n in host_inputs):
        raise _Bad(f"host.inputs {_short(host_inputs)} are not die outputs among the host tensors")
    produced = set()
    for k, op in enumerate(ops):
        where = f"host.ops[{k}]"
        _get(op, "kind", str, where)
        _get(op, "name", str, where)
        _get(op, "opts", dict, where)
        op_in = _get(op, "inputs", list, where)
        op_out = _get(op, "outputs", list, where)
        if not op_out or not all(isinstance(n, str) and n in names for n in op_in + op_out) or \
                any(not n for n in op_out):
            raise _Bad(f"{where} reads or writes a tensor that is not among the host tensors")
        produced.update(op_out)
    graph_outs = _get(io, "outputs", list, "")
    if not graph_outs:
        raise _Bad("outputs is empty")
    for k, t in enumerate(graph_outs):
        name = _check_tensor(t, f"outputs[{k}]")
        if name not in die and name not in produced:
            raise _Bad(f"outputs[{k}] '{name}' is neither a die output nor made by the host tail")
    for k, layer in enumerate(_get(io, "layers", list, "")):
        _get(layer, "index", int, f"layers[{k}]")
        for key in ("name", "kind", "op"):
            _get(layer, key, str, f"layers[{k}]")
    if ops:
        _dry_run_host_tail(io)


def _dry_run_host_tail(io):
    """Run the host tail once on zero die outputs (as quant.golden.host_outputs builds it): a tail whose operators
    or options do not run is refused at load time, not after a frame."""
    from .executor import run_graph
    from .graph import Graph, Op, QuantParams, Tensor

    shapes = {t["name"]: t["shape"] for t in io["die_outputs"]}
    host = io["host"]
    try:
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
        run_graph(tail, [np.zeros(shapes[n], np.int8) for n in host["inputs"]], trace={})
    except Exception as e:     # noqa: BLE001 -- whatever the tail's kernels raise, the image is at fault
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise _Bad(f"its host tail does not run ({type(e).__name__}: {why})") from None


def _layout(config):
    return ", ".join(f"{name}={getattr(config, name)}" for name in LAYOUT_FIELDS)


def readmemh(model):
    """`$readmemh` text of the weight SRAM: one word per line, most significant byte (byte WB-1) first."""
    words = model.weight_sram()
    return "".join(bytes(row[::-1]).hex() + "\n" for row in words)
