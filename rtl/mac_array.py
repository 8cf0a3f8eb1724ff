"""MAC array: rows x cols int8 multipliers with a per-row adder tree and int32 accumulators."""

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from stackcam.quant.timing import DEEP_MAC_LATENCY, MAC_LATENCY

__all__ = ["MACArray"]


class MACArray(wiring.Component):
    """`rows` output lanes, each the dot product of `cols` (activation, weight) pairs, accumulated in int32.

    The activation vector `x` (input minus its zero point, so 9-bit signed) is broadcast to every row; row r
    multiplies it by its own weight vector `w[r]`. With ``x_groups`` G > 1 there are G vectors (`x` and the
    G - 1 of `xg`): row r takes vector ``r % G`` (the depthwise line walk feeds a column's kernel rows at once).
    On a cycle with `en` high the products are registered; one
    cycle later row r's sum is added to its accumulator (or replaces it when `clear` was high with that `en`).
    So `acc` includes an input `latency` (2, `quant.timing.MAC_LATENCY`) cycles after it was presented. With
    `deep` (an FPGA's clock) the row's sum (its adder tree) is registered first and added one cycle later:
    `latency` 3 (DEEP_MAC_LATENCY). Accumulators wrap at 32 bits, as int32 arithmetic does. No back-pressure:
    the array takes one vector per cycle when enabled.

    With ``split`` there is a second accumulator per row, `acc2` (a PAIR CONV's second output-channel tile),
    and two more inputs presented with `en`: `to2` (the row's sum goes to `acc2` instead of `acc`) and `halves`
    (row r's lanes ``0 .. cols/2 - 1`` go to `acc[r]` and lanes ``cols/2 ..`` to `acc2[r]`); `clear` applies to
    the accumulators the input goes to, and an accumulator the input does not go to keeps its value.

    `products` shows the registered products (row r, column c: ``x[c] * w[r][c]`` of the last enabled cycle),
    for a user that sums them its own way: the NPU's depthwise path accumulates them lane by lane, row by row,
    on the same multipliers.
    """

    def __init__(self, rows, cols, deep=False, x_groups=1, split=False):
        self.rows = rows
        self.cols = cols
        self.deep = bool(deep)
        self.x_groups = x_groups
        self.split = bool(split)
        assert not self.split or cols % 2 == 0
        self.latency = DEEP_MAC_LATENCY if self.deep else MAC_LATENCY
        extra = {"xg": In(data.ArrayLayout(data.ArrayLayout(signed(9), cols), x_groups - 1))} if x_groups > 1 else {}
        if self.split:
            extra.update(to2=In(1), halves=In(1), acc2=Out(data.ArrayLayout(signed(32), rows)))
        super().__init__({
            **extra,
            "x": In(data.ArrayLayout(signed(9), cols)),
            "w": In(data.ArrayLayout(data.ArrayLayout(signed(8), cols), rows)),
            "en": In(1),
            "clear": In(1),
            "acc": Out(data.ArrayLayout(signed(32), rows)),
            "products": Out(data.ArrayLayout(data.ArrayLayout(signed(17), cols), rows)),
        })

    def elaborate(self, platform):
        m = Module()
        en_d = Signal()
        clear_d = Signal()
        m.d.sync += [en_d.eq(self.en), clear_d.eq(self.clear)]
        if self.split:
            to2_d, halves_d = Signal(), Signal()
            m.d.sync += [to2_d.eq(self.to2), halves_d.eq(self.halves)]
        if self.deep:
            en_dd = Signal()
            clear_dd = Signal()
            m.d.sync += [en_dd.eq(en_d), clear_dd.eq(clear_d)]
            if self.split:
                to2_dd, halves_dd = Signal(), Signal()
                m.d.sync += [to2_dd.eq(to2_d), halves_dd.eq(halves_d)]
        all_products = []
        for r in range(self.rows):
            products = [Signal(signed(17), name=f"p_{r}_{c}") for c in range(self.cols)]
            x = self.x if r % self.x_groups == 0 else self.xg[r % self.x_groups - 1]
            with m.If(self.en):
                for c in range(self.cols):
                    m.d.sync += products[c].eq(x[c] * self.w[r][c])
            all_products += products
            width = 17 + max(1, (self.cols - 1).bit_length())
            if self.split:
                # The halves' sums (the tree's last add joins them): with `halves` acc takes the lower and acc2
                # the upper, otherwise one of them the whole row.
                half = self.cols // 2
                lo, hi = _adder_tree(products[:half]), _adder_tree(products[half:])
                whole = lo + hi
                row_sum, row_sum2 = Mux(halves_d, lo, whole), Mux(halves_d, hi, whole)
            else:
                row_sum = _adder_tree(products)
            if self.deep:
                # The row's sum is registered before the accumulator add: one carry chain per stage.
                total = Signal(signed(width), name=f"sum_{r}")
                with m.If(en_d):
                    m.d.sync += total.eq(row_sum)
                if self.split:
                    total2 = Signal(signed(width), name=f"sum2_{r}")
                    with m.If(en_d):
                        m.d.sync += total2.eq(row_sum2)
                acc_en, acc_clear = en_dd, clear_dd
                if self.split:
                    acc_to2, acc_halves = to2_dd, halves_dd
            else:
                total = row_sum
                acc_en, acc_clear = en_d, clear_d
                if self.split:
                    total2, acc_to2, acc_halves = row_sum2, to2_d, halves_d
            with m.If(acc_en & ~acc_to2 if self.split else acc_en):
                with m.If(acc_clear):
                    m.d.sync += self.acc[r].eq(total)
                with m.Else():
                    m.d.sync += self.acc[r].eq(self.acc[r] + total)
            if self.split:
                with m.If(acc_en & (acc_to2 | acc_halves)):
                    with m.If(acc_clear):
                        m.d.sync += self.acc2[r].eq(total2)
                    with m.Else():
                        m.d.sync += self.acc2[r].eq(self.acc2[r] + total2)
        # One assignment for the whole port: Amaranth checks each statement over every bit of its target.
        m.d.comb += self.products.as_value().eq(Cat(*all_products))
        return m

    def model(self, xs, ws):
        """Software view: the int32 dot products of a sequence of (x, w) presented with clear on the first."""
        import numpy as np

        from stackcam.quant.arith import wrap_int32
        acc = np.zeros(self.rows, np.int64)
        for x, w in zip(xs, ws):
            acc = wrap_int32(acc + np.asarray(w, np.int64) @ np.asarray(x, np.int64))
        return acc


def _adder_tree(values):
    values = list(values)
    while len(values) > 1:
        nxt = []
        for i in range(0, len(values) - 1, 2):
            nxt.append(values[i] + values[i + 1])
        if len(values) % 2:
            nxt.append(values[-1])
        values = nxt
    return values[0]
