"""The model loader: streams a weight ROM image (`quant.romimage` format) into the weight SRAM, checks header,
section table, section CRCs and trailer CRC on the fly, and refuses a bad image (`ok` low, an error code)."""

import struct
import zlib
from dataclasses import dataclass

from amaranth.hdl import Array, Cat, Const, DomainRenamer, Module, Mux, Signal
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from stackcam.quant.program import PROGRAM_FORMAT_VERSION
from stackcam.quant.romimage import (
    ALIGN,
    ENTRY,
    HEADER,
    MAGIC,
    NOT_LOADED,
    ROM_FORMAT_VERSION,
    SECTION_IDS,
    config_fingerprint,
)

from ..clockgate import clock_gates, gating
from .crc32 import CRC32_INIT, CRC32_RESIDUE, CRC32_XOR, crc32_update_upto
from .ports import addr_bits

__all__ = ["LoadError", "LoadResult", "ModelLoader", "rom_beat_layout", "weight_write_signature",
           "header_layout", "HEADER_TABLE_BYTES"]

_SECTIONS = len(SECTION_IDS)
_LOADED = _SECTIONS - 1                                  # PROG, PARM, DWWT, MACW; MIO (last) is host data
HEADER_TABLE_BYTES = HEADER.size + ENTRY.size * _SECTIONS     # 184: header and section table


class LoadError(enum.Enum, shape=3):
    """Why the last image was refused (`NONE`: it was accepted). One code per image, the first that applies in
    this order: an image too short to hold its header and section table is `LENGTH`; then `MAGIC`, `VERSION`,
    `FINGERPRINT`, `HEADER` (all decided from the header and table before any section byte), `LENGTH`,
    `SECTION_CRC`, `IMAGE_CRC`."""

    NONE = 0
    MAGIC = 1           # not a stackcam ROM image
    VERSION = 2         # ROM format or program (descriptor) format version this die does not run
    FINGERPRINT = 3     # compiled for another SRAM layout (config_fingerprint of the DieConfig differs)
    HEADER = 4          # header or section table inconsistent (counts, sizes, ids, offsets, load words, words
    #                     beyond the weight SRAM, activation words beyond the activation SRAM, sections beyond
    #                     image_bytes)
    LENGTH = 5          # stream length != image_bytes (truncated or over-long), a short beat before the last one
    SECTION_CRC = 6     # a section's CRC-32 differs from its table entry
    IMAGE_CRC = 7       # the trailer CRC-32 differs from the CRC of everything before it


def rom_beat_layout(beat_bytes):
    """One beat of the ROM byte stream: `count` valid bytes of `data` (byte 0 first), `first`/`last` image
    markers. All beats of an image are full except possibly the last."""
    return data.StructLayout({"data": data.ArrayLayout(8, beat_bytes), "count": range(beat_bytes + 1),
                              "first": 1, "last": 1})


def weight_write_signature(config):
    """Weight SRAM write: the whole word `data` (WB bytes, byte 0 in the low bits) to `addr` when `en` is high."""
    return wiring.Signature({
        "addr": Out(addr_bits(config.weight_words)), "data": Out(8 * config.weight_word_bytes), "en": Out(1),
    })


def _struct_fields(st, names):
    """(name, bits) of a little-endian struct.Struct, in order, for a StructLayout with the same bit positions."""
    fmt = st.format.lstrip("<")
    sizes = []
    count = ""
    for ch in fmt:
        if ch.isdigit():
            count += ch
            continue
        sizes.append(int(count) if ch == "s" else struct.calcsize("<" + ch))
        count = ""
    assert len(sizes) == len(names) and sum(sizes) == st.size
    return [(name, 8 * size) for name, size in zip(names, sizes)]


def header_layout():
    """The header and section table of a ROM image as a StructLayout (little-endian fields at their byte
    offsets, so a register holding the first HEADER_TABLE_BYTES bytes decodes them)."""
    header = _struct_fields(HEADER, ("magic", "rom_version", "program_version", "header_bytes", "section_count",
                                      "fingerprint", "weight_word_bytes", "act_word_bytes", "weight_words",
                                      "descriptors", "act_words", "image_bytes", "reserved"))
    entry = data.StructLayout(dict(_struct_fields(ENTRY, ("id", "offset", "size", "crc32", "load_word",
                                                           "words"))))
    return data.StructLayout({**dict(header), "sections": data.ArrayLayout(entry, _SECTIONS)})


@dataclass(frozen=True)
class LoadResult:
    """What the loader reports for one image: the error code, the weight words it wrote, and its `cycles` when
    the image is streamed with no idle beats."""

    error: LoadError
    words_written: int
    cycles: int

    @property
    def ok(self):
        return self.error == LoadError.NONE


class ModelLoader(wiring.Component):
    """Streams a ROM image into the weight SRAM, one beat per clock, and accepts or refuses it.

    Ports:

    - `rom`: the image bytes in order (`rom_beat_layout(beat_bytes)`); `first` on the first beat starts an image
      (abandoning, with no `done`, one still being received); beats without `first` outside an image are dropped.
    - `w`: weight SRAM write port (`weight_write_signature`): one whole WB-byte word per write, registered.
    - `busy`: an image is being received (from the cycle after its first beat to its last).
    - `done`: one-cycle pulse `latency` cycles after the last beat's transfer; `ok` and `error` are valid from
      then until the next image's first beat, which clears them (that beat may come in the `done` cycle).
      Nothing in the die may use the weight SRAM as a model unless `ok` is high (the sequencer waits for it).
    - `ok`: the image was accepted (every check passed). `error`: a `LoadError`, `NONE` when ok.
    - `words_written`: weight words written for the current/last image.
    - `cycles`: clock cycles from the first beat's transfer to `done` (the beats' count at full rate); with the
      WB < beat_bytes buffer, from the cycle after it (the first chunk's).

    Checks (the same acceptance as `quant.romimage.load_rom`, except that the loader does not parse the MIO
    section's JSON, which only the host reads): the header (magic, versions, fingerprint == the constant
    `config_fingerprint(config)`, word sizes, counts, reserved bytes) and section table (ids, 16-byte aligned
    offsets in order without overlap, sections inside image_bytes - 4, loaded sections contiguous from word 0 in
    whole words, MIO not loaded, weight words within the weight SRAM, activation words within the activation
    SRAM, descriptors within PROG) are all decided from a 184-byte header register once the table has arrived,
    before the first section byte (sections start at byte 192 or later). Each section's CRC-32 is computed as its
    bytes pass and compared with its entry at its last byte (an empty section's entry must be 0, the CRC of no
    bytes). The whole image, trailer included, runs through a second CRC-32 whose register must end at the
    CRC-32 residue: that is the trailer check without locating the trailer. The stream's length must equal
    image_bytes. Bytes outside sections (alignment fill, gaps) are covered by the trailer CRC only; they are
    skipped, not required to be zero, because `load_rom` accepts any fill.

    Writes: each loaded section is written to words load_word, load_word+1, ... as its bytes arrive, only when
    the header and table passed (so never outside the sections' words, which are inside the SRAM). A section CRC,
    trailer CRC or length error is known only at the section's or image's end: the SRAM then holds the refused
    image's words (garbage) but `ok` is low, and the die must not run until an image is accepted.

    Throughput: with WB a multiple of `beat_bytes` (tiny, fpga, imx500 at 16 bytes per beat) `rom.ready` is
    always high and a beat is taken every clock; a word is written every WB / beat_bytes beats. With WB smaller
    than a beat (e.g. WB = 8), a beat carries beat_bytes / WB words and the loader stalls the stream (`ready`
    low) to write them one per clock through a one-beat buffer (one more cycle of latency). `beat_bytes` must be
    a power of two up to 16, so a beat never spans two sections; WB is a power of two too (whole words fill a
    power-of-two bank), so one of them divides the other.

    Latency: `done` (with `ok`, `error`, final `words_written`) one cycle after the last beat's transfer (two with
    the WB < beat_bytes buffer, whose last beat is one chunk: the trailer); the last word's write is issued in that
    same cycle. At full rate an image of B bytes takes ceil(B / beat_bytes) cycles when WB >= beat_bytes
    (`model()` gives the count in every case).
    """

    def __init__(self, config, beat_bytes=16):
        wb = config.weight_word_bytes
        if beat_bytes not in (1, 2, 4, 8, 16):
            raise ValueError(f"beat_bytes must be 1, 2, 4, 8 or 16 (a beat inside one 16-byte aligned block of the "
                             f"image), got {beat_bytes!r}")
        # WB is a power of two (a bank, a power of two, holds whole words), so it divides the beat or the beat it.
        assert wb & (wb - 1) == 0, wb
        self.config = config
        self.beat_bytes = beat_bytes
        self.chunk_bytes = min(beat_bytes, wb)
        self.fingerprint = config_fingerprint(config)
        super().__init__({
            "rom": In(stream.Signature(rom_beat_layout(beat_bytes))),
            "w": Out(weight_write_signature(config)),
            "busy": Out(1), "done": Out(1), "ok": Out(1), "error": Out(LoadError),
            "words_written": Out(range(config.weight_words + 1)),
            "cycles": Out(32),
            "image_crc": Out(32),
        })

    @property
    def latency(self):
        """Cycles from the last beat's transfer to `done` when the last beat is one chunk (it is 4 bytes)."""
        return 1 if self.chunk_bytes == self.beat_bytes else 2

    # --- software model ---------------------------------------------------------------------------------------

    def model(self, image):
        """The LoadResult of streaming the bytes `image` in whole beats (the last one partial); when it is ok, the
        SRAM holds `quant.romimage.load_rom(image, config).weight_sram()`."""
        cfg = self.config
        wb, c, bb = cfg.weight_word_bytes, self.chunk_bytes, self.beat_bytes
        image = bytes(image)
        n = len(image)
        beats = [min(bb, n - i) for i in range(0, n, bb)] or [0]
        cycles = sum(max(1, -(-k // c)) for k in beats)
        last_chunk = c * ((n - 1) // c) if n else 0       # chunks (c bytes) are full but the last
        if last_chunk < HEADER_TABLE_BYTES:
            return LoadResult(LoadError.LENGTH, 0, cycles)
        (magic, rom_version, program_version, header_bytes, count, fingerprint, hwb, hab, weight_words, descriptors,
         act_words, image_bytes, reserved) = HEADER.unpack_from(image, 0)
        entries = [ENTRY.unpack_from(image, HEADER.size + i * ENTRY.size) for i in range(_SECTIONS)]
        if magic != MAGIC:
            return LoadResult(LoadError.MAGIC, 0, cycles)
        if rom_version != ROM_FORMAT_VERSION or program_version != PROGRAM_FORMAT_VERSION:
            return LoadResult(LoadError.VERSION, 0, cycles)
        if fingerprint != self.fingerprint:
            return LoadResult(LoadError.FINGERPRINT, 0, cycles)
        bad = (count != _SECTIONS or header_bytes != HEADER_TABLE_BYTES or any(reserved) or hwb != wb
               or hab != cfg.act_word_bytes or weight_words > cfg.weight_words or act_words > cfg.act_words)
        end, load_word = HEADER_TABLE_BYTES, 0
        for i, (sid, off, size, _crc, load, words) in enumerate(entries):
            bad |= sid != SECTION_IDS[i] or off < end or off % ALIGN != 0 or off + size + 4 > image_bytes
            if i < _LOADED:
                bad |= load != load_word or size != words * wb
                load_word += words
            else:
                bad |= load != NOT_LOADED or words != 0
            end = off + size
        bad |= load_word != weight_words or descriptors * 128 > entries[0][2]
        if bad:
            return LoadResult(LoadError.HEADER, 0, cycles)
        # A word is written when the chunk holding its last byte arrives.
        written = sum(sum(1 for k in range(e[5]) if e[1] + (k + 1) * wb - c <= last_chunk) for e in entries[:_LOADED])
        if n != image_bytes:
            return LoadResult(LoadError.LENGTH, written, cycles)
        if any(zlib.crc32(image[off:off + size]) != crc for _, off, size, crc, _, _ in entries):
            return LoadResult(LoadError.SECTION_CRC, written, cycles)
        if zlib.crc32(image[:-4]) != struct.unpack_from("<I", image, n - 4)[0]:
            return LoadResult(LoadError.IMAGE_CRC, written, cycles)
        return LoadResult(LoadError.NONE, written, cycles)

    # --- hardware ---------------------------------------------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        wb, c, bb = cfg.weight_word_bytes, self.chunk_bytes, self.beat_bytes
        slots = wb // c                      # chunks per weight word

        # Chunks of c bytes: the beats themselves, or (WB < beat_bytes) each beat split into WB-byte chunks.
        ch_valid, ch_flat = Signal(), Signal(8 * c)
        ch_count, ch_first, ch_last, ch_bad = Signal(range(bb + 1)), Signal(), Signal(), Signal()
        if c == bb:
            m.d.comb += [
                self.rom.ready.eq(1),
                ch_valid.eq(self.rom.valid), ch_flat.eq(self.rom.payload.data.as_value()),
                ch_count.eq(self.rom.payload.count), ch_first.eq(self.rom.payload.first),
                ch_last.eq(self.rom.payload.last),
            ]
        else:
            self._chunker(m, ch_valid, ch_flat, ch_count, ch_first, ch_last, ch_bad)
        ch_bytes = [ch_flat[8 * j:8 * j + 8] for j in range(c)]

        active = Signal()
        pos = Signal(32)                     # bytes of the image received before this chunk
        take = Signal()
        p = Signal(32)                       # this chunk's byte position in the image
        n = Signal(range(c + 1))             # its valid bytes
        m.d.comb += [
            take.eq(ch_valid & (ch_first | active)),
            p.eq(Mux(ch_first, 0, pos)),
            n.eq(Mux(ch_count > c, c, ch_count)),
        ]

        def fresh(reg):
            """A sticky per-image value as the chunk sees it: cleared by `first`."""
            return Mux(ch_first, 0, reg)

        # Header and section table register, written a chunk at a time.
        hdr = Signal(header_layout())
        flat = hdr.as_value()
        lc = (c - 1).bit_length()
        for j in range(-(-HEADER_TABLE_BYTES // c)):
            lo, hi = j * c, min(j * c + c, HEADER_TABLE_BYTES)
            with m.If(take & (p[lc:] == j)):
                m.d.sync += flat[8 * lo:8 * hi].eq(ch_flat[:8 * (hi - lo)])
        header_in = Signal()                 # the whole header and table arrived before this chunk
        # (p is pos unless the chunk starts an image, at byte 0: the beat's `first` enters the section logic last.)
        m.d.comb += header_in.eq(~ch_first & (pos >= HEADER_TABLE_BYTES))

        # Header and table checks: combinational from the register, settled before the first section byte.
        # (A submodule of its own: it changes only while the table arrives, and simulates only then.)
        hm = Module()
        m.submodules.header_check = hm
        magic_bad, version_bad, fp_bad, table_bad, empty_crc_bad = (Signal(name=s) for s in (
            "magic_bad", "version_bad", "fp_bad", "table_bad", "empty_crc_bad"))
        secs = hdr.sections
        ends = [Signal(33, name=f"end_{i}") for i in range(_SECTIONS)]
        hm.d.comb += [e.eq(secs[i].offset + secs[i].size) for i, e in enumerate(ends)]
        cum = [0]
        for i in range(_LOADED):
            cum.append(cum[-1] + secs[i].words)
        bad = [
            hdr.section_count != _SECTIONS, hdr.header_bytes != HEADER_TABLE_BYTES, hdr.reserved != 0,
            hdr.weight_word_bytes != wb, hdr.act_word_bytes != cfg.act_word_bytes,
            hdr.weight_words > cfg.weight_words, hdr.act_words > cfg.act_words,
            cum[-1] != hdr.weight_words, (hdr.descriptors << 7) > secs[0].size,
        ]
        for i, sid in enumerate(SECTION_IDS):
            s = secs[i]
            prev_end = HEADER_TABLE_BYTES if i == 0 else ends[i - 1]
            bad += [s.id != int.from_bytes(sid, "little"), s.offset < prev_end, (s.offset & (ALIGN - 1)) != 0,
                    ends[i] + 4 > hdr.image_bytes]
            if i < _LOADED:
                bad += [s.load_word != cum[i], s.size != s.words * wb]
            else:
                bad += [s.load_word != NOT_LOADED, s.words != 0]
        hm.d.comb += [
            magic_bad.eq(hdr.magic != int.from_bytes(MAGIC, "little")),
            version_bad.eq((hdr.rom_version != ROM_FORMAT_VERSION) | (hdr.program_version != PROGRAM_FORMAT_VERSION)),
            fp_bad.eq(hdr.fingerprint != int.from_bytes(self.fingerprint, "little")),
            table_bad.eq(Cat(*bad).any()),
            empty_crc_bad.eq(Cat(*[(secs[i].size == 0) & (secs[i].crc32 != 0) for i in range(_SECTIONS)]).any()),
        ]
        header_ok = Signal()
        hm.d.comb += header_ok.eq(~(magic_bad | version_bad | fp_bad | table_bad))

        # Which section this chunk belongs to (sections are ordered and disjoint once the table passed; a chunk
        # lies in one 16-byte block, so in at most one section, which starts at the chunk's first byte).
        in_sec, sel_start, sel_last, sel_loaded = Signal(), Signal(), Signal(), Signal()
        sel_crc, sel_load = Signal(32), Signal(32)
        sel_k = Signal(range(c + 1))         # the section's bytes in this chunk (lanes 0..k-1)
        # With chunks of at most 8 bytes, the chunk after the header's last one starts at byte 184..191, where no
        # section of a passing table starts (the first is 16-byte aligned after the table: byte 192 or later), so
        # the section ends can be registered from the header register (a cycle behind it) without changing what
        # any chunk of a passing table sees; a failing table writes nothing and its verdict does not use them.
        if c <= 8:
            sec_ends = [Signal(33, name=f"end_q_{i}") for i in range(_SECTIONS)]
            m.d.sync += [q.eq(e) for q, e in zip(sec_ends, ends)]
        else:
            sec_ends = ends
        # The section's fields are OR-ed over one-hot section matches rather than picked by a priority chain: with
        # a passing table at most one section matches; with a failing one (header_ok low) nothing is written and
        # the verdict is decided before the section checks, so what the select gives then is never seen.
        hits = [Signal(name=f"in_sec_{i}") for i in range(_SECTIONS)]
        fields = []
        for i, hit in enumerate(hits):
            s = secs[i]
            last = pos + c >= sec_ends[i]
            m.d.comb += hit.eq(header_in & (pos >= s.offset) & (pos < sec_ends[i]))
            fields.append((hit, Cat(Const(1, 1), pos == s.offset, last, Const(i < _LOADED, 1), s.crc32,
                                    s.load_word, Mux(last, (sec_ends[i] - pos)[:len(sel_k)], c))))
        selected = Cat(in_sec, sel_start, sel_last, sel_loaded, sel_crc, sel_load, sel_k)
        picked = 0
        for hit, f in fields:
            picked = picked | (hit.replicate(len(f)) & f)
        m.d.comb += selected.eq(picked)
        sec_go = Signal()
        m.d.comb += sec_go.eq(take & in_sec)

        # Section CRC: one register, restarted at each section's first byte, compared at its last.
        sec_crc = Signal(32)
        sec_next = crc32_update_upto(m, Mux(sel_start, CRC32_INIT, sec_crc), ch_bytes, sel_k, name="sec_crc_next")
        sec_bad = Signal()
        sec_bad_now = Signal()
        m.d.comb += sec_bad_now.eq(fresh(sec_bad) | (sec_go & sel_last & ((sec_next ^ CRC32_XOR) != sel_crc)))
        with m.If(sec_go):
            m.d.sync += sec_crc.eq(sec_next)

        # Whole-image CRC, trailer included: it must end at the residue.
        img_crc = Signal(32)
        img_next = crc32_update_upto(m, Mux(ch_first, CRC32_INIT, img_crc), ch_bytes, n, name="img_crc_next")

        # Length and framing.
        total = Signal(33)
        frame_bad, long_bad = Signal(), Signal()
        frame_bad_now, long_bad_now = Signal(), Signal()
        m.d.comb += [
            total.eq(p + n),
            frame_bad_now.eq(fresh(frame_bad) | ch_bad | (ch_count > c) | (~ch_last & (ch_count != c))),
            long_bad_now.eq(fresh(long_bad) | (header_in & (total > hdr.image_bytes))),
        ]

        # Weight words: chunks gathered into the write-data register, a write when a word is complete.
        slot = Signal(range(max(slots, 2)))
        waddr = Signal(len(self.w.addr))
        slot_in = Signal.like(slot)
        addr_in = Signal.like(waddr)
        m.d.comb += [slot_in.eq(Mux(sel_start, 0, slot)), addr_in.eq(Mux(sel_start, sel_load, waddr))]
        words = Signal.like(self.words_written)
        m.d.sync += self.w.en.eq(0)
        with m.If(sec_go & sel_loaded & header_ok):
            for j in range(slots):
                with m.If(slot_in == j):
                    m.d.sync += self.w.data[8 * c * j:8 * c * (j + 1)].eq(ch_flat)
            with m.If(slot_in == slots - 1):
                m.d.sync += [self.w.en.eq(1), self.w.addr.eq(addr_in), waddr.eq(addr_in + 1), slot.eq(0),
                             words.eq(words + 1)]
            with m.Else():
                m.d.sync += [slot.eq(slot_in + 1), waddr.eq(addr_in)]

        # The verdict, at the last chunk.
        code = Signal(LoadError)
        with m.If(~header_in):
            m.d.comb += code.eq(LoadError.LENGTH)
        with m.Elif(magic_bad):
            m.d.comb += code.eq(LoadError.MAGIC)
        with m.Elif(version_bad):
            m.d.comb += code.eq(LoadError.VERSION)
        with m.Elif(fp_bad):
            m.d.comb += code.eq(LoadError.FINGERPRINT)
        with m.Elif(table_bad):
            m.d.comb += code.eq(LoadError.HEADER)
        with m.Elif(long_bad_now | frame_bad_now | (total != hdr.image_bytes)):
            m.d.comb += code.eq(LoadError.LENGTH)
        with m.Elif(sec_bad_now | empty_crc_bad):
            m.d.comb += code.eq(LoadError.SECTION_CRC)
        with m.Elif(img_next != CRC32_RESIDUE):
            m.d.comb += code.eq(LoadError.IMAGE_CRC)
        with m.Else():
            m.d.comb += code.eq(LoadError.NONE)

        cycles = Signal(32)
        m.d.sync += self.done.eq(0)
        with m.If(active):
            m.d.sync += cycles.eq(cycles + 1)
        with m.If(take):
            m.d.sync += [pos.eq(total), img_crc.eq(img_next), sec_bad.eq(sec_bad_now), frame_bad.eq(frame_bad_now),
                         long_bad.eq(long_bad_now)]
            with m.If(ch_first):
                m.d.sync += [cycles.eq(1), active.eq(1), self.ok.eq(0), self.error.eq(LoadError.NONE), words.eq(0)]
            with m.If(ch_last):
                m.d.sync += [active.eq(0), self.done.eq(1), self.ok.eq(code == LoadError.NONE), self.error.eq(code)]
        m.d.comb += [self.busy.eq(active), self.cycles.eq(cycles), self.words_written.eq(words)]

        # The image's last 4 bytes, its trailer CRC-32: after an accepted load it names the model (the die's
        # model fingerprint). Kept as a sliding window over the chunks' valid bytes.
        last4 = Signal(32)
        joined = Cat(last4, ch_flat)
        with m.If(take):
            m.d.sync += last4.eq((joined >> Cat(Const(0, 3), ch_count))[:32])
        m.d.comb += self.image_crc.eq(last4)
        if not gating(cfg, platform):
            return m
        # Clock gating: the loader's registers change only while a beat is offered or held, an image is being
        # loaded, or in the cycle after a write or `done` (which then fall).
        top = Module()
        top.submodules.gated = DomainRenamer("loader")(m)
        clock_gates(top, [("loader", self.rom.valid | ch_valid | active | self.w.en | self.done)])
        return top

    def _chunker(self, m, ch_valid, ch_flat, ch_count, ch_first, ch_last, ch_bad):
        """A one-beat buffer that hands a beat on as beat_bytes / WB chunks, one per clock, taking the next beat
        as it hands on the last chunk of this one."""
        c, bb = self.chunk_bytes, self.beat_bytes
        nch = bb // c
        hold = Signal(8 * bb)
        hcount = Signal(range(bb + 1))
        hfirst, hlast, hbad, hvalid = Signal(), Signal(), Signal(), Signal()
        idx = Signal(range(nch))
        final = Signal()
        m.d.comb += final.eq((idx == nch - 1) | (hcount <= (idx + 1) * c))
        groups = Array(hold[8 * c * g:8 * c * (g + 1)] for g in range(nch))
        with m.If(hcount >= (idx + 1) * c):
            m.d.comb += ch_count.eq(c)
        with m.Elif(hcount > idx * c):
            m.d.comb += ch_count.eq(hcount - idx * c)
        m.d.comb += [
            ch_valid.eq(hvalid), ch_flat.eq(groups[idx]),
            ch_first.eq(hfirst & (idx == 0)), ch_last.eq(hlast & final), ch_bad.eq(hbad & (idx == 0)),
            self.rom.ready.eq(~hvalid | final),
        ]
        with m.If(hvalid):
            m.d.sync += idx.eq(idx + 1)
            with m.If(final):
                m.d.sync += [idx.eq(0), hvalid.eq(0)]
        with m.If(self.rom.valid & self.rom.ready):
            payload = self.rom.payload
            m.d.sync += [hold.eq(payload.data.as_value()), hcount.eq(payload.count), hfirst.eq(payload.first),
                         hlast.eq(payload.last), hbad.eq(payload.count > bb), hvalid.eq(1), idx.eq(0)]

