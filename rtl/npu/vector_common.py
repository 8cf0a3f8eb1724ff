"""Pieces shared by the vector engine's components (`rtl/npu/vector_*.py`): the layouts that join them, the
nested counters of the walks and the pool window bounds."""

from amaranth import Cat, Mux, Signal, signed, unsigned
from amaranth.lib import data

__all__ = ["lane", "Walk", "bounds", "address_tag_layout", "address_request_layout", "address_stage_layout",
           "opcode_layout", "word_layout", "copy_word_layout",
           "pool_tap_layout"]


def lane(value, c):
    """Lane `c` (byte c) of a word, signed."""
    return value.word_select(c, 8).as_signed()


class Walk:
    """Nested counters, outermost first, each running 0 .. limit - 1; `step` advances the innermost. Not a
    component: the counters are registers of the module that steps them, so the walk's end decides that
    module's next state in the same cycle."""

    def __init__(self, name, limits, width=16):
        self.limits = limits
        self.ctr = [Signal(width, name=f"{name}_{i}") for i in range(len(limits))]
        self.at_end = [c == lim - 1 for c, lim in zip(self.ctr, limits)]
        self.last = Cat(*self.at_end).all()

    def reset(self, m):
        m.d.sync += [c.eq(0) for c in self.ctr]

    def step(self, m, level=None):
        level = len(self.ctr) - 1 if level is None else level
        if level == 0:                      # the walk ends here: the caller leaves the state on `last`
            m.d.sync += self.ctr[0].eq(self.ctr[0] + 1)
            return
        with m.If(~self.at_end[level]):
            m.d.sync += self.ctr[level].eq(self.ctr[level] + 1)
        with m.Else():
            m.d.sync += self.ctr[level].eq(0)
            self.step(m, level - 1)


def bounds(origin, k, size):
    """(lo, hi): the taps t in lo <= t < hi of a k-tap window starting at `origin` that fall in 0 .. size - 1."""
    lo = Mux(origin < 0, -origin, 0)
    inside = size - origin
    hi = Mux(inside < k, inside, k)
    return lo, hi


def opcode_layout():
    """The descriptor's operator, decoded (`VectorDecode.op`); `pool` is any windowed walk (MAXPOOL, AVGPOOL and
    MEAN)."""
    return data.StructLayout({"add": 1, "max": 1, "avg": 1, "copy": 1, "lut": 1, "pool": 1, "mul": 1, "mean": 1,
                              "prelu": 1, "resize": 1, "gather": 1})


def address_tag_layout(abits):
    """What travels with an address through `VectorAddressUnit`: the pool walk's tap, the COPY read and the
    RESIZE tap's weight."""
    return data.StructLayout({
        "first": 1, "last": 1, "count": 16,                   # pools (and RESIZE): first / last tap, tap count
        "weight": signed(24),                                 # RESIZE: the tap's wy * wx
        "ren": 1, "raddr": abits, "hi": signed(18), "j0": 1,  # COPY: input read, lanes < hi copied, word 0
        "wr": 1,                                              # COPY: an output word is written (GATHER may not)
    })


def address_request_layout(abits):
    """One request to `VectorAddressUnit`: word ``base + (row * W + col) * T + tile`` and its tag."""
    return data.StructLayout({"valid": 1, "row": unsigned(16), "col": unsigned(16), "tile": unsigned(17),
                              "tag": address_tag_layout(abits)})


def address_stage_layout(abits):
    """A stage of `VectorAddressUnit`'s pipe: the address and its tag."""
    return data.StructLayout({"valid": 1, "addr": unsigned(abits), "tag": address_tag_layout(abits)})


def word_layout(cols):
    """An output word of an operator datapath for the linear writer."""
    return data.StructLayout({"valid": 1, "data": unsigned(8 * cols)})


def copy_word_layout(abits, cols):
    """A COPY output word for the writer: its address, data and byte enables."""
    return data.StructLayout({"valid": 1, "addr": unsigned(abits), "data": unsigned(8 * cols), "mask": unsigned(cols)})


def pool_tap_layout():
    """A tap of the pools' walk (`VectorPoolWalker.tap`): input row, column and tile, whether it is its window's
    first and last tap, and the window's tap count (1 for MAXPOOL)."""
    return data.StructLayout({"row": unsigned(16), "col": unsigned(16), "tile": unsigned(16), "first": 1, "last": 1,
                              "count": unsigned(16)})
