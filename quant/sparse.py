"""Sparse TFLite constants (SparsityParameters) made dense, as LiteRT's DENSIFY op does at Prepare time.

The format (schema.fbs, SparsityParameters): the tensor is walked in `traversal_order`, first one level per
original dimension (a blocked dimension counts its blocks there), then one level per block dimension (`block_map`
names the original dimension each block level splits). Each level is DENSE (`dense_size` entries) or SPARSE_CSR
(`array_segments` give, for each position of the level above, the range of `array_indices` present below it). The
buffer holds only the values the walk reaches, in walk order; everything else is zero. This is
tflite::internal::sparsity::FormatConverter::SparseToDense, level by level in numpy instead of recursively.
"""

import numpy as np

__all__ = ["densify", "SparsityError"]


class SparsityError(ValueError):
    """Sparsity parameters that do not describe the tensor (the message is one line)."""


def _vector(v):
    """The values of a SparseIndexVector union member (Int32VectorT / Uint16VectorT / Uint8VectorT) or None."""
    if v is None:
        return None
    values = getattr(v, "values", v)
    return None if values is None else np.asarray(values, np.int64).reshape(-1)


def densify(values, shape, sparsity):
    """The dense array of `shape` that a sparse constant stores as `values` (1-D, in traversal order)."""
    shape = tuple(int(d) for d in shape)
    rank = len(shape)
    values = np.asarray(values).reshape(-1)
    order = [int(i) for i in (sparsity.traversalOrder if sparsity.traversalOrder is not None else range(rank))]
    block_map = [int(i) for i in (sparsity.blockMap if sparsity.blockMap is not None else [])]
    meta = list(sparsity.dimMetadata or [])
    levels = len(order)
    if levels != rank + len(block_map) or len(meta) != levels:
        raise SparsityError(f"{levels} traversal levels and {len(meta)} dimension records for a rank-{rank} tensor "
                            f"with {len(block_map)} block dimensions")
    if sorted(order[:rank]) != list(range(rank)) or sorted(order[rank:]) != list(range(rank, levels)):
        raise SparsityError(f"traversal order {order} is not a permutation of the dimensions")
    if any(not 0 <= d < rank for d in block_map):
        raise SparsityError(f"block map {block_map} names a dimension outside rank {rank}")
    # Block levels are DENSE; block b's size is read where LiteRT reads it (InitSparseToDenseConverter:
    # dense_size of the level numbered traversal_order[rank + b], which is level rank + b in every usual order).
    for level in range(rank, levels):
        if meta[level].format != 0:
            raise SparsityError(f"block level {level} is not DENSE")
    block_size = [int(meta[order[rank + b]].denseSize) for b in range(len(block_map))]
    if any(b <= 0 for b in block_size):
        raise SparsityError(f"block sizes {block_size} are not positive")

    # Walk the levels breadth first; np.repeat keeps parents in order, so leaves come out in depth-first order.
    paths = []
    prev = np.zeros(1, np.int64)
    for level in range(levels):
        m = meta[level]
        if m.format == 0:                               # DENSE
            size = int(m.denseSize)
            child = np.tile(np.arange(size, dtype=np.int64), prev.size)
            paths = [np.repeat(p, size) for p in paths]
            index, prev = child, np.repeat(prev, size) * size + child
        else:                                           # SPARSE_CSR
            seg, ind = _vector(m.arraySegments), _vector(m.arrayIndices)
            if seg is None or ind is None or seg.size < int(prev.max(initial=-1)) + 2:
                raise SparsityError(f"sparse level {level}: {0 if seg is None else seg.size} segments for "
                                    f"{int(prev.max(initial=-1)) + 1} positions above it")
            start, stop = seg[prev], seg[prev + 1]
            counts = stop - start
            if np.any(counts < 0) or (stop.size and int(stop.max()) > ind.size):
                raise SparsityError(f"sparse level {level}: segments out of order or past its {ind.size} indices")
            total = int(counts.sum())
            # k runs through start[p] .. stop[p] - 1 for every path p, in order.
            first = np.repeat(start - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
            k = first + np.arange(total, dtype=np.int64)
            paths = [np.repeat(p, counts) for p in paths]
            index, prev = ind[k], k
        paths.append(index)
    if values.size != prev.size:
        raise SparsityError(f"the sparsity parameters reach {prev.size} values, the buffer holds {values.size}")

    orig = [None] * rank
    for level in range(rank):
        orig[order[level]] = paths[level]
    for level in range(rank, levels):
        b = order[level] - rank
        d = block_map[b]
        orig[d] = orig[d] * block_size[b] + paths[level]
    flat = np.zeros(prev.size, np.int64)
    for d in range(rank):
        if orig[d].size and (orig[d].min() < 0 or orig[d].max() >= shape[d]):
            raise SparsityError(f"an index along dimension {d} falls outside the shape {list(shape)}")
        flat = flat * shape[d] + orig[d]
    dense = np.zeros(int(np.prod(shape, dtype=np.int64)), values.dtype)
    dense[flat] = values
    return dense.reshape(shape)
