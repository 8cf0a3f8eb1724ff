"""The NPU layer-program format: descriptors and the SRAM layouts of weights, parameters and tensors.

This docstring is the contract between the compiler (`quant/compiler.py`) and the NPU RTL: the RTL sequencer
decodes exactly what is written here, and the golden executor (`quant.golden.execute`) runs a ROM image by these
rules alone (it never sees the graph), so the RTL is checked against it word for word.

Program format version 2 (``PROGRAM_FORMAT_VERSION``; version 1 laid out a PAIR CONV's odd last oc tile as a full
pair of ``2*F + 1`` words per tap, see below: a version-1 image is refused, not misread).

Words and addresses
-------------------
``rows`` x ``cols`` is the MAC array of the `DieConfig` (``array_rows`` output channels x ``array_cols``
reduction lanes).  All multi-byte values are little-endian; "word address" always means an index of a word in
one of the two spaces below, never a byte address.

- **Weight space**: the ``weight_banks`` banks concatenated (bank b holds word addresses
  ``b * WPB .. (b + 1) * WPB - 1``, ``WPB = sram_bank_bytes / WB``) of ``WB = rows * cols``-byte words.  Byte
  ``i`` of a word is its bits ``8*i+7 .. 8*i`` (``weights.hex`` prints a word most significant byte first).
- **Activation space**: the other ``sram_banks - weight_banks`` banks concatenated the same way, in words of
  ``cols`` bytes (one int8 lane per byte, lane ``c`` is byte ``c``).

Weight space holds, from word 0 and in this order, each region and each layer's block starting on a word:

1. **Program**: descriptors of ``DESCRIPTOR_BYTES`` = 128 bytes, read as one byte stream (stream byte ``k`` is
   byte ``k % WB`` of word ``k // WB``; a descriptor may straddle words when WB does not divide 128).
   Descriptor ``i`` is stream bytes ``128*i .. 128*i + 127``.  The sequencer runs them in order until ``END``.
2. **Per-output-channel parameters** of each CONV / DWCONV layer: one 16-byte record per channel, channels
   consecutive: ``int32 bias, int32 multiplier, int8 shift, 7 zero bytes`` (requantization of TFLite:
   ``out = clamp(act_min, act_max, MultiplyByQuantizedMultiplier(acc, multiplier, shift) + out_zp)``; shift > 0
   is a left shift).  When ``WB >= 16``, ``RPW = WB // 16`` records per word: record ``k`` is bytes
   ``16*(k % RPW) ..`` of word ``k // RPW`` (bytes past ``16*RPW`` are zero).  When ``WB < 16`` each record
   occupies ``ceil(16 / WB)`` whole words (the record's bytes as a stream, zero-filled).  A layer has records for
   ``P = max(ceil(C/rows)*rows, ceil(C/cols)*cols)`` channels (C = its output channels); records of channels
   ``>= C`` are all zero, which makes the padding lanes of the output exactly ``out_zp``.  A CONV with the
   FCSCALE flag (a FULLY_CONNECTED) has records ``int32 bias, 4 zero bytes, float64 scale`` instead (IEEE-754
   binary64, little-endian), in the same slots.  A LUT layer's 256-byte table sits in this region too (its own
   word-aligned block, as a byte stream).
3. **Depthwise weights** of each DWCONV layer (depth multiplier 1, taps ``t = ky*kernel_w + kx``): for each
   channel tile ``ct`` (outermost), ``KW = ceil(kernel_h*kernel_w / rows)`` words; byte ``t_local*cols + c`` of
   word ``k`` of that tile is ``W[tap k*rows + t_local][channel ct*cols + c]`` (0 outside the tensor).
4. **MAC-array weights** of each CONV layer: one word per ``(oc_tile, ky, kx, ic_tile)`` in exactly that loop
   order (``oc_tile`` outermost, ``ic_tile`` innermost); byte ``r*cols + c`` is
   ``W[oc_tile*rows + r, ky, kx, ic_tile*cols + c]`` (OHWI; 0 outside the tensor).  FULLY_CONNECTED is a CONV
   with a 1x1 kernel on a 1x1 "pixel" of ``in_c`` = input features; an FC fed by a flattened H x W x C tensor is
   an H x W VALID CONV on that tensor (the same arithmetic, with no layout move).
   A CONV with the PACKED flag (im2col mode, below) reduces over ``K = kernel_h*kernel_w*in_c`` values
   ``k = (ky*kernel_w + kx)*in_c + ic`` instead: one word per ``(oc_tile, k_tile)``, ``k_tile`` innermost, byte
   ``r*cols + c`` is ``W[oc_tile*rows + r][k = k_tile*cols + c]`` (0 for ``k >= K``).
   A CONV with the PAIR flag (an array with ``cols = 2*rows``; the input's last channel tile holds at most
   ``cols/2`` channels, ``in_c - F*cols <= cols/2`` with ``F = in_ct - 1``, so the upper half of its lanes is
   padding) computes output-channel tiles in pairs, a whole output word each: per ``(oc_pair, ky, kx)``,
   ``2*F + 1`` words: the ``F`` full input tiles' words of tile ``2*oc_pair`` (laid out as above), the same of
   tile ``2*oc_pair + 1``, then one word whose byte ``r*cols + c`` is
   ``W[(2*oc_pair + c // (cols/2))*rows + r, ky, kx, F*cols + c % (cols/2)]`` (the last input tile of both:
   tile ``2*oc_pair`` in the lower half of each row, ``2*oc_pair + 1`` in the upper half; 0 outside the tensor).
   The die sums the first ``F`` words' rows into the first tile, the next ``F`` into the second, and for the
   last word copies the input word's lower lanes into the upper ones and sums each half of a row into its own
   tile: ``2*F + 1`` issues for two tiles instead of ``2*F + 2``.  With an odd number of oc tiles the last
   pair (``oc_pair = oc_tiles // 2``) has tile ``2*oc_pair`` only: per ``(ky, kx)`` ``F + 1`` words, the merged
   word first (as above: its upper half is 0, tile ``2*oc_pair + 1`` being outside the tensor), then tile
   ``2*oc_pair``'s ``F`` full input tiles' words (the merged word, the tap's first issue, starts both
   accumulators, so the absent tile's sums are exactly 0).  ``tile_words`` is ``kernel_h*kernel_w*(2*F + 1)``,
   the words per full pair (an odd last pair has ``kernel_h*kernel_w*(F + 1)``).

Activation tensors are channel-tiled HWC: an H x W x C tensor at word ``base`` has ``CT = ceil(C / cols)``
words per pixel; pixel (y, x) channel tile ct is word ``base + (y*W + x)*CT + ct``; lane c of that word is
channel ``ct*cols + c``; lanes ``>= C`` of the last tile ("padding lanes") hold the tensor's zero point, and
every operator keeps it so (CONV/DWCONV through the zero parameter records, ADD/pools because the zero point
maps to the zero point, COPY by its fill, LUT explicitly).  CSI-2 reads the outputs from there (addresses in
the ROM's model I/O section).

The **network input** is written by the ISP, and when it is read only by CONVs and ``PPW = cols // C >= 2``
it is **pixel-packed** instead (the model I/O section says which, with PPW): pixel ``p = y*W + x`` is in word
``base + p // PPW``, lanes ``(p % PPW)*C .. (p % PPW)*C + C - 1``; unused lanes and slots hold the zero point.
It takes ``ceil(H*W / PPW)`` words: a 224 x 224 RGB input is 2,390 words of 64 bytes instead of 50,176, which
is what lets MobileNet V1 224 fit an 8 MiB die.  The CONVs that read it carry the PACKED flag and run in im2col
mode: for each output pixel the sequencer gathers the ``K`` taps x channels (zero point outside the input) into
``in_ct = ceil(K / cols)`` words and feeds them to the MAC array like ``in_ct`` channel tiles of a 1x1 conv
(a 3x3 RGB stem is K = 27: one word per output pixel and oc tile, instead of nine words of three lanes).

**Pixel-packed (superpixel) tensors.**  When a model's activations do not fit, the compiler stores some
narrow tensors (``C <= cols / 2``, ``PPW = cols // C`` dividing W) as the channel-tiled H x (W / PPW) x
(PPW * C) tensor: pixel (y, x) channel c is lane ``(x % PPW) * C + c`` of superpixel (y, x // PPW), the same
bytes in the same row-major order, so no opcode and no reader changes: descriptors see ordinary tiled
tensors (CONVs with block-structured weights, elementwise operators per lane, GATHERs moving pixels between
the two layouts).  A die output stored that way has ``hwc`` = the superpixel shape and ``ppw`` = PPW in the
model I/O section; reading it as that tiled tensor and reshaping to its ``shape`` unpacks it.

Opcodes
-------
``0`` is invalid on purpose (erased or zeroed memory must stop the sequencer with an error, never end a
program silently); so is any value not listed.

- ``CONV`` (1): ``acc[oy, ox, oc] = bias[oc] + sum (x[iy, ix, ic] - in_zp) * W[oc, ky, kx, ic]`` with
  ``iy = oy*stride_h - pad_top + ky`` (``ix`` likewise); taps outside the input contribute 0 (TFLite pads with
  the zero point).  Requantized with the parameter records, clamped to ``[act_min, act_max]``.
  With the FCSCALE flag the rescale is the one LiteRT's reference FULLY_CONNECTED kernel does instead of the
  Q31 multiply: ``a = wrap_int32(acc)``; ``v = double(a) * scale`` (one IEEE binary64 multiply, rounded to
  nearest even); ``out = clamp(round_half_away_from_zero(v) + out_zp)``.  The two rules differ on a few
  outputs in a thousand (ties), so a bit-exact die needs both.  An exact integer form: with ``scale = M *
  2^E`` (M the 53-bit significand), round ``|a| * M`` to 53 significant bits (nearest, ties to even), then to
  an integer at bit ``-E`` (ties away), and apply the sign of ``a``.
  With the RESADD flag (a residual ADD fused into the CONV's back end; a die whose activation SRAM has two read
  ports) the CONV's int8 output ``v`` (its records, ``out_zp``, ``act_min``/``act_max`` as above) is not stored:
  ``out_addr`` gets the ADD below of ``v`` as input 1 (its zero point is ``out_zp``) and the **residual** at
  ``in2_addr`` as input 2 (``out_h x out_w x in2_c``, ``in2_c <= out_c``, ``in2_ct = out_ct``, zero point
  ``in2_zp``), with ``left_shift``, ``in_mult``/``in_shift`` (input 1), ``in2_mult``/``in2_shift``,
  ``out_mult``/``out_shift`` and the ADD's own ``add_zp``, ``add_min``, ``add_max`` in place of its ``out_zp``,
  ``act_min``, ``act_max`` (padding lanes of the output are ``add_zp``). The die reads each output word of the
  residual on its second read port as the CONV writes that word's lanes, so the words the CONV's input spans and
  the words the residual spans must lie in disjoint banks (`resadd_input_banks`); ``out_addr`` may equal
  ``in2_addr`` (in place). With ZPAD2 as well (a channel PAD fused into the ADD, as ADD's ZPAD2) the residual has
  ``in2_ct <= out_ct`` tiles (``in2_c <= out_c``): output word ``(p, ct)`` reads residual word ``in2_addr +
  p*in2_ct + ct`` when ``ct < in2_ct`` and takes ``in2_zp`` in every lane otherwise (no read). Not with PACKED or
  FCSCALE; refused on a die with one read port.
- ``DWCONV`` (2): the same per channel (``W[tap][c]`` from the depthwise block), ``in_c == out_c``.
  With the POOL2 flag (a MAX_POOL_2D fused into the DWCONV that reads the same input) the descriptor also writes
  ``P[y, x, c] = clamp(max(x[2y, 2x, c], x[2y, 2x+1, c], x[2y+1, 2x, c], x[2y+1, 2x+1, c]))`` (clamped to
  ``[add_min, add_max]``) for ``y < out_h``, ``x < out_w``, at ``in2_addr`` (``out_h x out_w x in_c``, ``out_ct``
  tiles; padding lanes ``in_zp``): the 2x2 stride-2 max pool of the input, the pool's quantization the
  input's. The die computes it from the input rows the depthwise line walk reads anyway (a die with the line walk
  (`quant.timing.dw_line_mode`) and a kernel it runs in one pass per row: ``kernel_w <= dw_line_sets *
  stride_w``), so it needs ``stride_h = stride_w = 2``, ``pad_top = pad_left = 0``, a kernel of at least 2x2,
  ``2*out_h <= in_h``, ``2*out_w <= in_w`` and ``add_min <= in_zp <= add_max``, and takes no cycle more. The
  pool's words may not overlap the input or the DWCONV's output.
- ``ADD`` (3): TFLite int8 ADD: ``a = (x1 - in_zp) << left_shift``, ``b = (x2 - in2_zp) << left_shift``,
  ``s = MBQM(a, in_mult, in_shift) + MBQM(b, in2_mult, in2_shift)``,
  ``out = clamp(MBQM(s, out_mult, out_shift) + out_zp)`` (MBQM = MultiplyByQuantizedMultiplier; shifts <= 0).
  With the NEG2 flag, ``s = MBQM(a, ...) - MBQM(b, ...)`` (wrapping in int32): TFLite int8 SUB. The second
  rescaled value is negated, not the second input: MBQM rounds ties of a negative product toward zero, so
  ``MBQM(-b) != -MBQM(b)`` at ties.
  Input 1 has the output's H x W x C; the second input **broadcasts**: it is H x W x C (word of output word
  ``(p, ct)`` is ``in2_addr + p*in2_ct + ct``), 1 x 1 x C (word ``in2_addr + ct``: one value per channel) or
  1 x 1 x 1 (word ``in2_addr``, lane 0 for every lane).
  With the ZPAD2 flag (a channel PAD fused into the ADD) the second input is ``out_h x out_w x in2_c`` with
  ``in2_c <= out_c``: output word ``(p, ct)`` reads word ``in2_addr + p*in2_ct + ct`` (all its lanes, the
  padding lanes included) when ``ct < in2_ct``, and takes ``in2_zp`` in every lane when ``ct >= in2_ct`` (no
  read: such a word costs one cycle, not two). Channels ``>= in2_c`` of the second input are then its zero
  point, which is what a PAD with the zero point as its value makes of them (the padding lanes hold it).
  With the DUAL2 flag (a die whose activation SRAM has two read ports) both inputs of an output word are read in
  the same cycle, one per port: the same result, one cycle per word instead of two. The SRAM's banks have one
  read port each, so the words input 1 spans and the words input 2 spans (`add_input_banks`) must lie in
  disjoint bank ranges; a DUAL2 ADD where they do not, or on a die with one read port, is refused.
- ``MAXPOOL`` (4): max over the in-bounds taps of the window, clamped to ``[act_min, act_max]``.
- ``AVGPOOL`` (5): TFLite reference int8 average: sum of the in-bounds taps (raw int8 values), divided by
  their count rounding half away from zero, clamped.  Input and output quantization are equal.
- ``COPY`` (6): if ``flags`` bit 0 (FILL), first write ``fill`` to lanes ``< out_c`` and ``out_zp`` to the
  padding lanes of every word of the output tensor; then ``out[y + copy_y, x + copy_x, c + copy_c] =
  in[y, x, c]`` for the whole input.  PAD (spatial and channel; ``fill`` is its pad value, the zero point unless
  the model says otherwise) and CONCATENATION (along H, W or C) are one or more COPYs; only the first has FILL.
- ``LUT`` (7): ``out = table[x + 128]`` per lane, the 256-byte ``table`` being the byte stream at
  ``param_addr`` (``param_words`` words); padding lanes get ``out_zp``.  Elementwise int8 operators (LOGISTIC,
  a standalone RELU/RELU6, an int8->int8 QUANTIZE) compile to it, the table computed by the graph executor.
- ``MUL`` (8): TFLite int8 MUL: ``out = clamp(MBQM((x1 - in_zp) * (x2 - in2_zp), out_mult, out_shift) +
  out_zp)`` to ``[act_min, act_max]``; the second input broadcasts as ADD's does, and DUAL2 reads both inputs
  in one cycle as ADD's does.
- ``MEAN`` (9): the mean over H and W of an in_h x in_w x C input (in_h, in_w <= 255) into a 1 x 1 x C output,
  LiteRT's reference int8 MEAN: ``s = sum of the in_h*in_w raw values`` (exact), ``out = clamp(MBQM(s -
  in_zp*in_h*in_w, out_mult, out_shift) + out_zp)`` to ``[act_min, act_max]``; out_mult/out_shift are the
  reference's multiplier with 1/count already folded in (``quant.ref.mean_params``).
- ``PRELU`` (10): per-channel PRELU: ``v = x - in_zp``; ``a = alpha[c] - in2_zp`` with ``alpha`` the int8 byte
  stream at ``param_addr`` (``param_words`` words, one byte per channel, at most 256 channels); ``v >= 0``:
  ``MBQM(v, in_mult, in_shift)``, else ``MBQM(v * a, in2_mult, in2_shift)``; plus out_zp, clamped to
  ``[act_min, act_max]``.
- ``RESIZE`` (11): RESIZE_BILINEAR and RESIZE_NEAREST_NEIGHBOR (int8, no rescale).  Two tables of
  ``RESIZE_ENTRY_BYTES`` = 8-byte entries ``u16 lo, u16 hi, i16 frac, u16 0`` (each table a byte stream from
  its first word, entry ``k`` at stream bytes ``8k .. 8k+7``): the **row table** at ``param_addr``
  (``param_words`` words, ``out_h`` entries) and the **column table** at ``weight_addr`` (``weight_words``
  words, ``out_w`` entries).  With the row entry ``(y0, y1, fy)`` of output row y and the column entry
  ``(x0, x1, fx)`` of output column x, per channel:
  ``s = in[y0,x0]*(1024-fy)*(1024-fx) + in[y1,x0]*fy*(1024-fx) + in[y0,x1]*(1024-fy)*fx + in[y1,x1]*fy*fx``
  and ``out = trunc((s + (s > 0 ? 2^19 : -2^19)) / 2^20)`` wrapped to int8: LiteRT's reference
  ResizeBilinearInteger, whose per-axis arithmetic (10-bit scale, align_corners, half_pixel_centers) the
  compiler evaluates into the tables (`quant.ref.resize_tables`).  Nearest neighbour is the same with
  ``lo = hi = index, frac = 0`` (an exact copy).  Every ``lo``, ``hi`` must lie inside the input and
  ``-1024 <= frac <= 1024``: otherwise the descriptor is refused (the RTL: when its walk reads that entry).
  The tables are the format's choice over an address generator because nearest neighbour's source index is
  computed by LiteRT in float32, which a table states exactly; it costs one weight-space read per output pixel.
- ``GATHER`` (12): a strided COPY of a box.  With FILL, first the fill of COPY; then for ``y < g_h``,
  ``x < g_w``, ``c < g_c``: ``out[copy_y + y*dst_sy, copy_x + x*dst_sx, copy_c + c] =
  in[src_y + y*src_sy, src_x + x*src_sx, src_c + c]``.  COPY is the case of a zero source offset, unit
  strides and the whole input.  DEPTH_TO_SPACE and SPACE_TO_DEPTH (block b) are b*b GATHERs (one per
  sub-pixel, a channel block each), STRIDED_SLICE and SLICE one; the first carries FILL so the output's
  padding lanes hold ``out_zp``.
- ``END`` (15): the program is complete.

An output never overlaps an input of the same descriptor, except that ADD, MUL, PRELU and LUT may work in place
(and a CONV with RESADD over its residual):
their ``out_addr`` may equal ``in_addr`` exactly (or ``in2_addr`` when the second input is not broadcast), the
same words, since each output word depends only on the input words at the same address and is written after
they are read.

Fields each opcode reads (besides ``opcode``, ``flags`` and ``layer``; the others are written 0 by the compiler,
except the informative ``macs`` and a pool's ``in_zp``, and ignored by the sequencer):

- CONV: kernel_*, stride_*, pad_*, in_h/w/c/ct, out_h/w/c/ct, in_addr, out_addr, weight_addr/words,
  param_addr/words, in_zp, out_zp, act_min/max, oc_tiles, tile_words, in_ppw (PACKED); with RESADD also in2_*,
  in2_zp, left_shift, in_mult, in_shift, in2_mult, in2_shift, out_mult, out_shift, add_zp, add_min, add_max.
- DWCONV: as CONV without oc_tiles and in_ppw.
- ADD: in_*, in2_*, out_* shapes and addresses, in_zp, in2_zp, out_zp, act_min/max, left_shift, in_mult,
  in_shift, in2_mult, in2_shift, out_mult, out_shift.
- MAXPOOL, AVGPOOL: kernel_*, stride_*, pad_*, in_* and out_* shapes and addresses, out_zp, act_min/max.
- COPY: in_* and out_* shapes and addresses, out_zp, fill (FILL), copy_y/x/c.
- LUT: in_* and out_* shapes and addresses, param_addr/words, out_zp.
- MUL: in_*, in2_*, out_* shapes and addresses, in_zp, in2_zp, out_zp, act_min/max, out_mult, out_shift.
- MEAN: in_* and out_* shapes and addresses, in_zp, out_zp, act_min/max, out_mult, out_shift.
- PRELU: in_* and out_* shapes and addresses, param_addr/words, in_zp, in2_zp (alpha's zero point), out_zp,
  act_min/max, in_mult, in_shift (identity path), in2_mult, in2_shift (alpha path).
- RESIZE: in_* and out_* shapes and addresses, param_addr/words (row table), weight_addr/words (column
  table), out_zp.
- GATHER: as COPY, and src_y/x/c, g_h/w/c, src_sy/sx, dst_sy/sx.
- END: ``layer`` holds the number of layers.

Descriptor (128 bytes, little-endian; ``unpack`` refuses an unknown opcode, a flag the opcode does not have and
a non-zero reserved field): the table `FIELDS` below states it once. The `Descriptor` dataclass, `pack` and
`unpack`, the RTL's decoded layout (`rtl.npu.ports.descriptor_layout`) and the documentation
(docs/program-format.md, `format_markdown()`) are all generated from it.
"""

import struct
from collections import namedtuple
from dataclasses import field, fields, make_dataclass

import numpy as np

from stackcam.errors import StackcamError

__all__ = ["PROGRAM_FORMAT_VERSION", "DESCRIPTOR_BYTES", "PARAM_RECORD_BYTES", "OPCODES", "OPCODE_NAMES", "FILL",
           "PACKED", "FCSCALE", "NEG2", "ZPAD2", "PAIR", "DUAL2", "RESADD", "POOL2", "add_input_words",
           "add_input_banks",
           "resadd_input_banks", "span_banks",
           "banks_disjoint",
           "FIELDS", "Field", "format_markdown", "Descriptor", "ProgramError", "pack", "unpack",
           "field_table", "param_words",
           "param_record_count", "pack_params", "unpack_params", "pack_fc_params", "unpack_fc_params",
           "dw_block_words", "pack_dw_weights", "unpack_dw_weights", "conv_block_words", "pack_conv_weights",
           "unpack_conv_weights", "pair_fits", "pair_block_words", "pack_pair_weights", "unpack_pair_weights",
           "im2col_block_words", "pack_im2col_weights", "unpack_im2col_weights",
           "packed_words", "write_packed", "read_packed", "stream_words", "read_stream", "tensor_words",
           "write_tensor", "read_tensor", "RESIZE_ENTRY_BYTES", "resize_table_words", "pack_resize_table",
           "unpack_resize_table"]

PROGRAM_FORMAT_VERSION = 2
DESCRIPTOR_BYTES = 128
PARAM_RECORD_BYTES = 16
RESIZE_ENTRY_BYTES = 8

OPCODES = {"CONV": 1, "DWCONV": 2, "ADD": 3, "MAXPOOL": 4, "AVGPOOL": 5, "COPY": 6, "LUT": 7, "MUL": 8, "MEAN": 9,
           "PRELU": 10, "RESIZE": 11, "GATHER": 12, "END": 15}
OPCODE_NAMES = {v: k for k, v in OPCODES.items()}
FILL = 1            # flags bit 0 of COPY
PACKED = 2          # flags bit 1 of CONV
FCSCALE = 4         # flags bit 2 of CONV
NEG2 = 8            # flags bit 3 of ADD: subtract the second rescaled input (SUB)
ZPAD2 = 16          # flags bit 4 of ADD (and a RESADD CONV): the second input's in2_ct tiles, the others in2_zp
PAIR = 32           # flags bit 5 of CONV: oc tiles in pairs, the input's last (at most half full) tile in one word
DUAL2 = 64          # flags bit 6 of ADD: both inputs read in one cycle (two read ports, disjoint banks)
RESADD = 128        # flags bit 7 of CONV: a residual ADD fused into the back end (two read ports, disjoint banks)
POOL2 = 128         # flags bit 7 of DWCONV: the input's 2x2 stride-2 MAX_POOL written too, at in2_addr


class ProgramError(StackcamError, ValueError):
    """A descriptor or program that breaks the format; the message names the descriptor and field."""


class Field(namedtuple("Field", "offset type name meaning")):
    """One descriptor field: byte offset, type (u8, i8, u16, i16, u32, i32), name and meaning."""

    @property
    def bits(self):
        return int(self.type[1:])

    @property
    def signed(self):
        return self.type[0] == "i"

    @property
    def code(self):
        """The struct module's format code."""
        return {"u8": "B", "i8": "b", "u16": "H", "i16": "h", "u32": "I", "i32": "i"}[self.type]


# The descriptor, stated once: everything else about it is generated from this table.
FIELDS = (
    Field(0, "u8", "opcode", '1 CONV, 2 DWCONV, 3 ADD, 4 MAXPOOL, 5 AVGPOOL, 6 COPY, 7 LUT, 8 MUL, 9 MEAN, '
                             '10 PRELU, 11 RESIZE, 12 GATHER, 15 END'),
    Field(1, "u8", "flags", 'bit 0 FILL (COPY, GATHER); bit 1 PACKED (CONV: pixel-packed input, im2col); '
                            'bit 2 FCSCALE (CONV: float64 rescale of FULLY_CONNECTED); '
                            'bit 3 NEG2 (ADD: subtract the second input, SUB); '
                            'bit 4 ZPAD2 (ADD, CONV with RESADD: the second input has in2_c <= out_c channels, '
                            'tiles past in2_ct are in2_zp: a fused channel PAD); '
                            'bit 5 PAIR (CONV: the last input tile at most half '
                            'full, output-channel tiles in pairs, the last input tile of both in one word); '
                            'bit 6 DUAL2 (ADD, MUL: both inputs read in one cycle, from disjoint banks); '
                            'bit 7 RESADD (CONV: a residual ADD fused into its back end, the residual at in2_addr), '
                            'POOL2 (DWCONV: the input\'s 2x2 stride-2 max pool written at in2_addr); '
                            'others 0'),
    Field(2, "u16", "layer", 'index of the compiled layer this descriptor belongs to (per-layer counters)'),
    Field(4, "u8", "kernel_h", 'kernel / pooling window height'),
    Field(5, "u8", "kernel_w", 'kernel / pooling window width'),
    Field(6, "u8", "stride_h", 'vertical stride'),
    Field(7, "u8", "stride_w", 'horizontal stride'),
    Field(8, "u8", "pad_top", 'padding rows above the input (conv: zero point; pools: not in the window)'),
    Field(9, "u8", "pad_bottom", 'padding rows below (TensorFlow SAME puts the odd one here)'),
    Field(10, "u8", "pad_left", 'padding columns left of the input'),
    Field(11, "u8", "pad_right", 'padding columns right of the input'),
    Field(12, "u16", "in_h", 'input height'),
    Field(14, "u16", "in_w", 'input width'),
    Field(16, "u16", "in_c", 'input channels'),
    Field(18, "u16", "in_ct", 'input channel tiles, ceil(in_c / cols); PACKED: im2col words ceil(K / cols)'),
    Field(20, "u16", "in2_h", 'second input height (ADD, MUL: out_h or 1)'),
    Field(22, "u16", "in2_w", 'second input width (ADD, MUL: out_w or 1)'),
    Field(24, "u16", "in2_c", 'second input channels (ADD, MUL: out_c or 1; ADD with ZPAD2: 1 .. out_c)'),
    Field(26, "u16", "in2_ct", 'second input channel tiles (ADD, MUL; ZPAD2: the tiles read, <= out_ct)'),
    Field(28, "u16", "out_h", 'output height'),
    Field(30, "u16", "out_w", 'output width'),
    Field(32, "u16", "out_c", 'output channels'),
    Field(34, "u16", "out_ct", 'output channel tiles, ceil(out_c / cols)'),
    Field(36, "u32", "in_addr", 'activation word address of the input'),
    Field(40, "u32", "in2_addr", 'activation word address of the second input (ADD, MUL); DWCONV with POOL2: '
                                 'of the max pool it writes'),
    Field(44, "u32", "out_addr", 'activation word address of the output'),
    Field(48, "u32", "weight_addr", 'weight word address of the MAC-array (CONV) or depthwise (DWCONV) block, '
                                    'or of the column table (RESIZE)'),
    Field(52, "u32", "weight_words", 'words in that block'),
    Field(56, "u32", "param_addr", 'weight word address of the parameter records (CONV, DWCONV), table (LUT)'
                                   ', alphas (PRELU) or row table (RESIZE)'),
    Field(60, "u32", "param_words", 'words of parameter records or table'),
    Field(64, "i8", "in_zp", 'input zero point'),
    Field(65, "i8", "in2_zp", "second input zero point (ADD, MUL); alpha's zero point (PRELU)"),
    Field(66, "i8", "out_zp", "output zero point (the value of the output's padding lanes)"),
    Field(67, "i8", "act_min", 'output clamp low'),
    Field(68, "i8", "act_max", 'output clamp high'),
    Field(69, "u8", "left_shift", 'ADD input left shift (20 for int8)'),
    Field(70, "i8", "in_shift", 'ADD input 1 shift (<= 0); PRELU identity-path shift'),
    Field(71, "i8", "in2_shift", 'ADD input 2 shift (<= 0); PRELU alpha-path shift'),
    Field(72, "i32", "in_mult", 'ADD input 1 Q31 multiplier; PRELU identity-path multiplier'),
    Field(76, "i32", "in2_mult", 'ADD input 2 Q31 multiplier; PRELU alpha-path multiplier'),
    Field(80, "i32", "out_mult", 'ADD, MUL, MEAN output Q31 multiplier'),
    Field(84, "i8", "out_shift", 'ADD, MUL, MEAN output shift'),
    Field(85, "i8", "fill", "COPY/GATHER with FILL: value of the output's lanes < out_c before the copy"),
    Field(86, "u16", "copy_y", 'COPY/GATHER destination row offset'),
    Field(88, "u16", "copy_x", 'COPY/GATHER destination column offset'),
    Field(90, "u16", "copy_c", 'COPY/GATHER destination channel offset'),
    Field(92, "u16", "oc_tiles", 'CONV: ceil(out_c / rows), output-channel tiles of the MAC array'),
    Field(94, "u16", "tile_words", 'CONV: kernel_h*kernel_w*in_ct words per oc tile (PACKED: in_ct; PAIR: '
                                   'kernel_h*kernel_w*(2*in_ct - 1) per full pair); '
                                   'DWCONV: ceil(kernel_h*kernel_w / rows)'),
    Field(96, "u32", "macs", "multiply-accumulates of the layer's useful work (for utilization counters)"),
    Field(100, "u16", "in_ppw", 'PACKED: input pixels per word, cols // in_c; otherwise 0'),
    Field(102, "u16", "reserved1", '0'),
    Field(104, "i8", "add_zp", 'CONV with RESADD: output zero point of the fused ADD (out_zp is the CONV\'s)'),
    Field(105, "i8", "add_min", 'CONV with RESADD: output clamp low of the fused ADD; DWCONV with POOL2: of the '
                                'max pool'),
    Field(106, "i8", "add_max", 'CONV with RESADD: output clamp high of the fused ADD; DWCONV with POOL2: of the '
                                'max pool'),
    Field(107, "u8", "reserved2", '0'),
    Field(108, "u16", "src_y", 'GATHER: first source row'),
    Field(110, "u16", "src_x", 'GATHER: first source column'),
    Field(112, "u16", "src_c", 'GATHER: first source channel'),
    Field(114, "u16", "g_h", 'GATHER: rows copied'),
    Field(116, "u16", "g_w", 'GATHER: columns copied'),
    Field(118, "u16", "g_c", 'GATHER: channels copied'),
    Field(120, "u8", "src_sy", 'GATHER: source row step'),
    Field(121, "u8", "src_sx", 'GATHER: source column step'),
    Field(122, "u8", "dst_sy", 'GATHER: destination row step'),
    Field(123, "u8", "dst_sx", 'GATHER: destination column step'),
    Field(124, "u32", "reserved7", '0'),
)
_STRUCT = struct.Struct("<" + "".join(f.code for f in FIELDS))


def _check_table():
    offset = 0
    for f in FIELDS:
        if f.offset != offset:
            raise AssertionError(f"descriptor table: field {f.name} at {f.offset}, expected {offset}")
        offset += f.bits // 8
    if offset != DESCRIPTOR_BYTES or _STRUCT.size != DESCRIPTOR_BYTES:
        raise AssertionError(f"descriptor table covers {offset} bytes, not {DESCRIPTOR_BYTES}")


_check_table()


def field_table():
    """[(offset, struct code, name)] of the descriptor."""
    return [(f.offset, f.code, f.name) for f in FIELDS]


def format_markdown():
    """The descriptor table as Markdown (docs/program-format.md is this text)."""
    lines = ["| offset | type | field | meaning |", "|---:|---|---|---|"]
    lines += [f"| {f.offset} | {f.type} | `{f.name}` | {f.meaning} |" for f in FIELDS]
    return ("# The NPU layer-program descriptor\n\n"
            f"Program format version {PROGRAM_FORMAT_VERSION}: {DESCRIPTOR_BYTES} bytes per descriptor, little-endian. "
            "Generated from `stackcam.quant.program.FIELDS` (`python -m stackcam.quant.program`); the prose "
            "(words, addresses, weight-space layout, what each opcode reads) is the module's docstring.\n\n"
            + "\n".join(lines) + "\n")


class _DescriptorMethods:
    @property
    def op(self):
        """The opcode's name ("CONV", ...), or "INVALID"."""
        return OPCODE_NAMES.get(self.opcode, "INVALID")

    def nonzero(self):
        """{field: value} of the fields that are not 0, in table order (for printing)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}


Descriptor = make_dataclass("Descriptor", [(f.name, int, field(default=0)) for f in FIELDS],
                            bases=(_DescriptorMethods,))
Descriptor.__module__ = __name__
Descriptor.__doc__ = "One layer-program descriptor: the fields of `FIELDS`, in table order, all 0 by default."


_RANGES = {"B": (0, 0xFF), "b": (-0x80, 0x7F), "H": (0, 0xFFFF), "h": (-0x8000, 0x7FFF),
           "I": (0, 0xFFFFFFFF), "i": (-0x80000000, 0x7FFFFFFF)}


def pack(desc):
    """128 little-endian bytes of a Descriptor; ProgramError names a field whose value does not fit."""
    values = []
    for f in FIELDS:
        value = getattr(desc, f.name)
        lo, hi = _RANGES[f.code]
        if not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
            raise ProgramError(f"descriptor field {f.name} = {value!r} does not fit {f.code!r} ({lo}..{hi})")
        values.append(int(value))
    return _STRUCT.pack(*values)


def unpack(data, index=None):
    """Descriptor from 128 bytes; refuses an unknown opcode, unknown flags or non-zero reserved fields."""
    where = "descriptor" if index is None else f"descriptor {index}"
    if len(data) != DESCRIPTOR_BYTES:
        raise ProgramError(f"{where}: {len(data)} bytes, expected {DESCRIPTOR_BYTES}")
    desc = Descriptor(*_STRUCT.unpack(bytes(data)))
    if desc.opcode not in OPCODE_NAMES:
        raise ProgramError(f"{where}: invalid opcode {desc.opcode}")
    allowed = {"COPY": FILL, "GATHER": FILL, "CONV": PACKED | FCSCALE | PAIR | RESADD | ZPAD2,
               "ADD": NEG2 | ZPAD2 | DUAL2, "MUL": DUAL2, "DWCONV": POOL2}
    if desc.flags & ~allowed.get(desc.op, 0):
        raise ProgramError(f"{where}: invalid flags 0x{desc.flags:02x} for {desc.op}")
    for name in ("reserved1", "reserved2", "reserved7"):
        if getattr(desc, name):
            raise ProgramError(f"{where}: {name} is {getattr(desc, name)}, must be 0")
    return desc


# --- weight-space layouts -------------------------------------------------------------------------------------

def stream_words(data, word_bytes):
    """Bytes laid into whole words as a byte stream: uint8 [words, word_bytes], the tail zero-filled."""
    data = np.frombuffer(bytes(data), np.uint8)
    words = -(-data.size // word_bytes)
    out = np.zeros(words * word_bytes, np.uint8)
    out[:data.size] = data
    return out.reshape(words, word_bytes)


def read_stream(words, start_word, nbytes):
    """`nbytes` of the byte stream that starts at word `start_word` of a uint8 [words, WB] array."""
    wb = words.shape[1]
    n_words = -(-nbytes // wb)
    return words[start_word:start_word + n_words].reshape(-1)[:nbytes].tobytes()


def param_record_count(channels, rows, cols):
    """Parameter records a layer with `channels` output channels has (its padded channel count)."""
    return max(-(-channels // rows) * rows, -(-channels // cols) * cols)


def _record_slots(word_bytes):
    """(records per word, words per record): one of them is 1."""
    if word_bytes >= PARAM_RECORD_BYTES:
        return word_bytes // PARAM_RECORD_BYTES, 1
    return 1, -(-PARAM_RECORD_BYTES // word_bytes)


def param_words(channels, rows, cols):
    """Words of parameter records for a layer with `channels` output channels."""
    rpw, wpr = _record_slots(rows * cols)
    n = param_record_count(channels, rows, cols)
    return -(-n // rpw) * wpr


def _place_records(rec, word_bytes):
    """uint8 [words, WB] holding the [n, 16] records `rec` in their slots."""
    n = rec.shape[0]
    rpw, wpr = _record_slots(word_bytes)
    if wpr == 1:
        words = np.zeros((-(-n // rpw), rpw, word_bytes // rpw), np.uint8)
        words.reshape(-1, word_bytes // rpw)[:n, :PARAM_RECORD_BYTES] = rec
        return words.reshape(-1, word_bytes)
    words = np.zeros((n, wpr * word_bytes), np.uint8)
    words[:, :PARAM_RECORD_BYTES] = rec
    return words.reshape(n * wpr, word_bytes)


def _records(words, word_bytes):
    """[records, 16] copy of the record slots of a parameter block."""
    rpw, wpr = _record_slots(word_bytes)
    if wpr == 1:
        return words.reshape(-1, rpw, word_bytes // rpw)[:, :, :PARAM_RECORD_BYTES].reshape(-1, PARAM_RECORD_BYTES)
    return np.ascontiguousarray(words.reshape(-1, wpr * word_bytes)[:, :PARAM_RECORD_BYTES])


def pack_params(bias, multiplier, shift, rows, cols):
    """uint8 [words, rows*cols] parameter block of one layer (format in the module docstring)."""
    rec = np.zeros((param_record_count(len(bias), rows, cols), PARAM_RECORD_BYTES), np.uint8)
    rec[:len(bias), 0:4] = np.asarray(bias, "<i4").reshape(-1, 1).view(np.uint8)
    rec[:len(bias), 4:8] = np.asarray(multiplier, "<i4").reshape(-1, 1).view(np.uint8)
    rec[:len(bias), 8] = np.asarray(shift, np.int8).view(np.uint8)
    return _place_records(rec, rows * cols)


def unpack_params(words, channels, rows, cols):
    """(bias, multiplier, shift) int64 arrays of `channels` records from a parameter block."""
    rec = np.ascontiguousarray(_records(words, rows * cols)[:channels])
    bias = rec[:, 0:4].copy().view("<i4").reshape(-1).astype(np.int64)
    mult = rec[:, 4:8].copy().view("<i4").reshape(-1).astype(np.int64)
    shift = rec[:, 8].view(np.int8).astype(np.int64)
    return bias, mult, shift


def pack_fc_params(bias, scale, rows, cols):
    """uint8 [words, rows*cols] FCSCALE parameter block: records of int32 bias, 4 zero bytes, float64 scale."""
    rec = np.zeros((param_record_count(len(bias), rows, cols), PARAM_RECORD_BYTES), np.uint8)
    rec[:len(bias), 0:4] = np.asarray(bias, "<i4").reshape(-1, 1).view(np.uint8)
    rec[:len(bias), 8:16] = np.asarray(scale, "<f8").reshape(-1, 1).view(np.uint8)
    return _place_records(rec, rows * cols)


def unpack_fc_params(words, channels, rows, cols):
    """(bias int64, scale float64) of `channels` FCSCALE records."""
    rec = np.ascontiguousarray(_records(words, rows * cols)[:channels])
    return rec[:, 0:4].copy().view("<i4").reshape(-1).astype(np.int64), rec[:, 8:16].copy().view("<f8").reshape(-1)


def dw_block_words(kernel_h, kernel_w, channels, rows, cols):
    """Words of a depthwise weight block."""
    return -(-channels // cols) * -(-(kernel_h * kernel_w) // rows)


def pack_dw_weights(w, rows, cols):
    """uint8 [words, rows*cols] depthwise block from int8 weights [KH, KW, C] (TFLite 1HWO without the 1)."""
    kh, kw, ch = w.shape
    taps = kh * kw
    ct, kwd = -(-ch // cols), -(-taps // rows)
    grid = np.zeros((kwd * rows, ct * cols), np.int8)           # [tap, channel], zero-padded
    grid[:taps, :ch] = w.reshape(taps, ch)
    # word (ct, k) byte (t_local, c) = grid[k*rows + t_local, ct*cols + c]
    blocks = grid.reshape(kwd, rows, ct, cols).transpose(2, 0, 1, 3)
    return blocks.reshape(ct * kwd, rows * cols).view(np.uint8)


def unpack_dw_weights(words, kernel_h, kernel_w, channels, rows, cols):
    """int8 [KH, KW, C] from a depthwise block (inverse of pack_dw_weights)."""
    taps = kernel_h * kernel_w
    ct, kwd = -(-channels // cols), -(-taps // rows)
    grid = words.view(np.int8).reshape(ct, kwd, rows, cols).transpose(1, 2, 0, 3).reshape(kwd * rows, ct * cols)
    return grid[:taps, :channels].reshape(kernel_h, kernel_w, channels)


def conv_block_words(out_c, kernel_h, kernel_w, in_c, rows, cols):
    """Words of a MAC-array weight block."""
    return -(-out_c // rows) * kernel_h * kernel_w * -(-in_c // cols)


def pack_conv_weights(w, rows, cols):
    """uint8 [words, rows*cols] MAC-array block from int8 OHWI weights [OC, KH, KW, IC]."""
    oc, kh, kw, ic = w.shape
    ot, it = -(-oc // rows), -(-ic // cols)
    full = np.zeros((ot * rows, kh, kw, it * cols), np.int8)
    full[:oc, :, :, :ic] = w
    # word (ot, ky, kx, it) byte (r, c) = full[ot*rows + r, ky, kx, it*cols + c]
    blocks = full.reshape(ot, rows, kh, kw, it, cols).transpose(0, 2, 3, 4, 1, 5)
    return blocks.reshape(ot * kh * kw * it, rows * cols).view(np.uint8)


def unpack_conv_weights(words, out_c, kernel_h, kernel_w, in_c, rows, cols, padded=False):
    """int8 OHWI weights from a MAC-array block; `padded` keeps the whole tiles (zero rows and lanes)."""
    ot, it = -(-out_c // rows), -(-in_c // cols)
    full = words.view(np.int8).reshape(ot, kernel_h, kernel_w, it, rows, cols).transpose(0, 4, 1, 2, 3, 5)
    full = full.reshape(ot * rows, kernel_h, kernel_w, it * cols)
    return full if padded else full[:out_c, :, :, :in_c]


def pair_fits(in_c, cols):
    """Whether a PAIR CONV may read an input of `in_c` channels: its last channel tile holds at most cols/2."""
    return in_c - (-(-in_c // cols) - 1) * cols <= cols // 2


def pair_block_words(out_c, kernel_h, kernel_w, in_c, rows, cols):
    """Words of a PAIR CONV's weight block: 2*F + 1 per (full oc tile pair, ky, kx), F + 1 per (ky, kx) of an
    odd last tile, F = ceil(in_c / cols) - 1."""
    tiles, f = -(-out_c // rows), -(-in_c // cols) - 1
    return kernel_h * kernel_w * (tiles // 2 * (2 * f + 1) + tiles % 2 * (f + 1))


def pack_pair_weights(w, rows, cols):
    """uint8 [words, rows*cols] PAIR block from int8 OHWI weights [OC, KH, KW, IC] (`pair_fits`): per (pair,
    ky, kx) the F full input tiles' words of tile 2*pair, of tile 2*pair + 1, then the merged word, byte
    (r, h*cols/2 + c) = W[(2*pair + h)*rows + r, ky, kx, F*cols + c]; an odd last tile's pair per (ky, kx) the
    merged word (upper half 0), then its F full words."""
    oc, kh, kw, ic = w.shape
    half = cols // 2
    assert cols == 2 * rows and pair_fits(ic, cols), (rows, cols, ic)
    it = -(-ic // cols)
    f = it - 1
    tiles = -(-oc // rows)
    pairs = -(-tiles // 2)
    full = np.zeros((pairs * 2 * rows, kh, kw, it * cols), np.int8)
    full[:oc, :, :, :ic] = w
    a = full.reshape(pairs, 2, rows, kh, kw, it, cols)                     # [p, h, r, ky, kx, it, c]
    out = np.zeros((pairs, kh, kw, 2 * f + 1, rows, cols), np.int8)
    out[:, :, :, :2 * f] = a[..., :f, :].transpose(0, 3, 4, 1, 5, 2, 6).reshape(pairs, kh, kw, 2 * f, rows, cols)
    out[:, :, :, 2 * f] = a[..., f, :half].transpose(0, 3, 4, 2, 1, 5).reshape(pairs, kh, kw, rows, cols)
    blocks = [out[:tiles // 2].reshape(-1, rows * cols)]
    if tiles % 2:                           # the odd last pair: the merged word, then the first tile's F words
        blocks.append(out[-1][:, :, [2 * f, *range(f)]].reshape(-1, rows * cols))
    return np.concatenate(blocks).view(np.uint8)


def unpack_pair_weights(words, out_c, kernel_h, kernel_w, in_c, rows, cols):
    """int8 OHWI weights [out_c, KH, KW, in_c] from a PAIR block (`pack_pair_weights`)."""
    half = cols // 2
    it = -(-in_c // cols)
    f = it - 1
    tiles = -(-out_c // rows)
    pairs = -(-tiles // 2)
    words = words.view(np.int8).reshape(-1, rows, cols)
    blk = np.zeros((pairs, kernel_h, kernel_w, 2 * f + 1, rows, cols), np.int8)
    n = tiles // 2 * kernel_h * kernel_w * (2 * f + 1)
    blk[:tiles // 2] = words[:n].reshape(tiles // 2, kernel_h, kernel_w, 2 * f + 1, rows, cols)
    if tiles % 2:                           # the odd last pair: the merged word, then the first tile's F words
        blk[-1][:, :, [2 * f, *range(f)]] = words[n:].reshape(kernel_h, kernel_w, f + 1, rows, cols)
    a = np.zeros((pairs, 2, rows, kernel_h, kernel_w, it, cols), np.int8)
    a[..., :f, :] = blk[:, :, :, :2 * f].reshape(pairs, kernel_h, kernel_w, 2, f, rows, cols) \
        .transpose(0, 3, 5, 1, 2, 4, 6)
    a[..., f, :half] = blk[:, :, :, 2 * f].reshape(pairs, kernel_h, kernel_w, rows, 2, half).transpose(0, 4, 3, 1, 2, 5)
    return a.reshape(pairs * 2 * rows, kernel_h, kernel_w, it * cols)[:out_c, :, :, :in_c]


def im2col_block_words(out_c, kernel_h, kernel_w, in_c, rows, cols):
    """Words of a PACKED (im2col) CONV's weight block."""
    return -(-out_c // rows) * -(-(kernel_h * kernel_w * in_c) // cols)


def pack_im2col_weights(w, rows, cols):
    """uint8 [words, rows*cols] im2col block from int8 OHWI weights: a 1x1 conv over K = KH*KW*IC inputs."""
    oc = w.shape[0]
    return pack_conv_weights(w.reshape(oc, 1, 1, -1), rows, cols)


def unpack_im2col_weights(words, out_c, kernel_h, kernel_w, in_c, rows, cols):
    """int8 OHWI weights from an im2col block (inverse of pack_im2col_weights)."""
    k = kernel_h * kernel_w * in_c
    return unpack_conv_weights(words, out_c, 1, 1, k, rows, cols).reshape(out_c, kernel_h, kernel_w, in_c)


def resize_table_words(entries, word_bytes):
    """Weight words of a RESIZE table of `entries` entries."""
    return -(-(entries * RESIZE_ENTRY_BYTES) // word_bytes)


def pack_resize_table(lo, hi, frac, word_bytes):
    """uint8 [words, WB] RESIZE table (u16 lo, u16 hi, i16 frac, u16 0 per entry) as a byte stream."""
    rec = np.zeros((len(lo), 4), "<i2")
    rec[:, 0] = np.asarray(lo, np.int64).astype("<u2").view("<i2")
    rec[:, 1] = np.asarray(hi, np.int64).astype("<u2").view("<i2")
    rec[:, 2] = np.asarray(frac, np.int64)
    return stream_words(rec.tobytes(), word_bytes)


def unpack_resize_table(words, entries):
    """(lo, hi, frac) int64 arrays of the first `entries` entries of a RESIZE table."""
    rec = np.frombuffer(read_stream(words, 0, entries * RESIZE_ENTRY_BYTES), "<u2").reshape(entries, 4)
    return rec[:, 0].astype(np.int64), rec[:, 1].astype(np.int64), rec[:, 2].view("<i2").astype(np.int64)


# --- activation-space layout ----------------------------------------------------------------------------------

def add_input_words(desc):
    """(words input 1 spans, words input 2 spans) of an ADD (or MUL): input 1 the output's shape, input 2
    its own (a broadcast's one or in2_ct words, ZPAD2's out_h*out_w*in2_ct)."""
    return desc.in_h * desc.in_w * desc.in_ct, desc.in2_h * desc.in2_w * desc.in2_ct


def add_input_banks(desc, bank_words):
    """((first, last) bank of input 1, (first, last) bank of input 2) of an ADD in an activation SRAM of
    `bank_words` words per bank: DUAL2 needs the two ranges disjoint."""
    n1, n2 = add_input_words(desc)
    return span_banks(desc.in_addr, n1, bank_words), span_banks(desc.in2_addr, n2, bank_words)


def resadd_input_banks(desc, bank_words):
    """((first, last) bank of the input, (first, last) bank of the residual) of a CONV with RESADD (not PACKED):
    the conv reads its input on the first read port while the fused ADD reads the residual on the second, so the
    two ranges must be disjoint."""
    n1, n2 = desc.in_h * desc.in_w * desc.in_ct, desc.in2_h * desc.in2_w * desc.in2_ct
    return span_banks(desc.in_addr, n1, bank_words), span_banks(desc.in2_addr, n2, bank_words)


def span_banks(base, words, bank_words):
    """(first, last) bank of `words` words from word `base`, in banks of `bank_words` words."""
    return base // bank_words, (base + words - 1) // bank_words


def banks_disjoint(ranges):
    """Do two (first, last) bank ranges share no bank?"""
    (a0, a1), (b0, b1) = ranges
    return a1 < b0 or b1 < a0


def tensor_words(h, w, c, cols):
    """Activation words of an H x W x C tensor."""
    return h * w * -(-c // cols)


def write_tensor(sram, base, x, zero_point):
    """Store int8 HWC `x` at word `base` of the activation SRAM (int8 [words, cols]), padding lanes = zp."""
    h, w, c = x.shape
    cols = sram.shape[1]
    ct = -(-c // cols)
    words = np.full((h * w, ct * cols), zero_point, np.int8)
    words[:, :c] = x.reshape(h * w, c)
    n = h * w * ct
    if base < 0 or base + n > sram.shape[0]:
        raise ProgramError(f"tensor {h}x{w}x{c} at word {base} runs past the activation SRAM "
                           f"({sram.shape[0]} words)")
    sram[base:base + n] = words.reshape(n, cols)


def read_tensor(sram, base, h, w, c, lanes=False):
    """int8 HWC tensor at word `base`; `lanes` returns all CT*cols lanes (padding included)."""
    cols = sram.shape[1]
    ct = -(-c // cols)
    n = h * w * ct
    if base < 0 or base + n > sram.shape[0]:
        raise ProgramError(f"tensor {h}x{w}x{c} at word {base} runs past the activation SRAM "
                           f"({sram.shape[0]} words)")
    x = sram[base:base + n].reshape(h, w, ct * cols)
    return x.copy() if lanes else x[:, :, :c].copy()


def packed_words(h, w, c, cols):
    """Activation words of a pixel-packed H x W x C tensor."""
    return -(-(h * w) // (cols // c))


def write_packed(sram, base, x, zero_point):
    """Store int8 HWC `x` pixel-packed (cols // C pixels per word) at word `base`; unused lanes = zp."""
    h, w, c = x.shape
    cols = sram.shape[1]
    ppw = cols // c
    n = packed_words(h, w, c, cols)
    if ppw < 1 or base < 0 or base + n > sram.shape[0]:
        raise ProgramError(f"packed tensor {h}x{w}x{c} at word {base} does not fit the activation SRAM")
    words = np.full((n * ppw, c), zero_point, np.int8)
    words[:h * w] = x.reshape(h * w, c)
    out = np.full((n, cols), zero_point, np.int8)
    out[:, :ppw * c] = words.reshape(n, ppw * c)
    sram[base:base + n] = out


def read_packed(sram, base, h, w, c):
    """int8 HWC tensor stored pixel-packed at word `base`."""
    cols = sram.shape[1]
    ppw = cols // c
    n = packed_words(h, w, c, cols)
    if ppw < 1 or base < 0 or base + n > sram.shape[0]:
        raise ProgramError(f"packed tensor {h}x{w}x{c} at word {base} runs past the activation SRAM")
    return sram[base:base + n, :ppw * c].reshape(n * ppw, c)[:h * w].reshape(h, w, c).copy()


if __name__ == "__main__":
    print(format_markdown(), end="")
