"""Winograd's minimal filtering, F(m x m, r x r): the transforms, and the filters made ready.

A correlation of m outputs with an r-tap filter, by Toom-Cook over n = m + r - 1 points
(here 0, 1, -1, 2, -2, 1/2, -1/2, ... and infinity, whose row picks a polynomial's leading
coefficient), is ``A^T [(G g) * (B^T d)]``; in two
dimensions ``A^T [(G g G^T) * (B^T d B)] A`` (Lavin and Gray, "Fast Algorithms for
Convolutional Neural Networks", 2016). The matrices are built here exactly, in rationals:
with V the Vandermonde matrix of the points, ``A^T = V[:, :m]^T``, ``G = V[:, :r]`` and ``B^T = V^{-T}``; each row of B^T is then scaled
to integers and G's row divided by the same factor.

float32 error grows with the tile: the points' powers reach 2^(n-2). F(2x2, 5x5) and
F(4x4, 3x3) (n = 6) stay within 1e-5 of the sum of |w||x| over each window (measured up to
3e-6, 52 float32 ulps of that sum, with one input channel; tests/test_winograd.py); larger
tiles are not offered. A NaN or an infinity in a tile's input makes all its outputs NaN
(an infinity times a zero of the transforms), where im2col keeps it to the windows that hold
it.
"""
from fractions import Fraction
from functools import lru_cache
from math import lcm
from typing import NamedTuple

import numpy as np

from ._ext import winograd as _kernel
from .threads import get_num_threads

POINTS = (Fraction(0), Fraction(1), Fraction(-1), Fraction(2), Fraction(-2), Fraction(1, 2),
          Fraction(-1, 2))

# (output tile m, filter size r) offered, by filter size: n = m + r - 1 = 6 for both
TILES = {3: 4, 5: 2}


def _inverse(matrix):
    """The inverse of a square matrix of Fractions, by Gauss-Jordan elimination."""
    n = len(matrix)
    a = [list(row) + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(matrix)]
    for col in range(n):
        pivot = next(r for r in range(col, n) if a[r][col] != 0)
        a[col], a[pivot] = a[pivot], a[col]
        inv = 1 / a[col][col]
        a[col] = [v * inv for v in a[col]]
        for r in range(n):
            if r != col and a[r][col] != 0:
                f = a[r][col]
                a[r] = [v - f * p for v, p in zip(a[r], a[col])]
    return [row[n:] for row in a]


@lru_cache(maxsize=None)
def transforms(m, r):
    """(A^T (m, n), G (n, r), B^T (n, n)) of F(m, r) as float64 arrays, exact in rationals."""
    n = m + r - 1
    if not 2 <= n <= len(POINTS) + 1:
        raise ValueError(f"F({m}, {r}) needs {n} points; at most {len(POINTS) + 1} are defined")
    points = POINTS[:n - 1]
    vander = [[p ** j for j in range(n)] for p in points] + [[Fraction(int(j == n - 1)) for j in range(n)]]
    inv = _inverse(vander)
    at = [[vander[i][j] for i in range(n)] for j in range(m)]
    at[m - 1][n - 1] = Fraction(1)  # infinity: the leading coefficient, of each truncation
    g = [[vander[i][j] if j < r else 0 for j in range(r)] for i in range(n)]
    g[n - 1] = [Fraction(int(j == r - 1)) for j in range(r)]
    bt = [[inv[j][i] for j in range(n)] for i in range(n)]  # (V^-1)^T
    for i in range(n):  # B^T's row i to integers, G's row i divided to match
        scale = lcm(*(v.denominator for v in bt[i]))
        bt[i] = [v * scale for v in bt[i]]
        g[i] = [v / scale for v in g[i]]
    as_array = lambda rows: np.array([[float(v) for v in row] for row in rows])  # noqa: E731
    return as_array(at), as_array(g), as_array(bt)


class Filters(NamedTuple):
    """Filters made ready for the Winograd kernel by :func:`prepare`: ``u`` (n*n, K padded
    to the kernel's block, C) = G g G^T, for output tiles of ``m`` x ``m``; ``shape`` is that
    of the filters, (K, C, r, r)."""
    u: np.ndarray
    m: int
    shape: tuple


@lru_cache(maxsize=None)
def output_matrix(m, r):
    """A^T of F(m, r) as float32, as the kernel takes it."""
    matrix = transforms(m, r)[0].astype(np.float32)
    matrix.flags.writeable = False
    return matrix


def pad_rows(a, block):
    """a (R, ...) float32, C-contiguous, with zero rows added up to a multiple of block."""
    padded = np.zeros((-(-a.shape[0] // block) * block, *a.shape[1:]), np.float32)
    padded[:a.shape[0]] = a
    return padded


def accepts(w, stride=1):
    """True when the Winograd kernel can run filters w (K, C, r, r) at this stride."""
    w = np.asarray(w)
    return (w.ndim == 4 and w.dtype == np.float32 and stride in (1, (1, 1))
            and w.shape[2] == w.shape[3] and w.shape[2] in TILES)


def prepare(w):
    """The :class:`Filters` of float32 filters w (K, C, r, r), r in :data:`TILES`: computed
    once, they serve every call of :func:`detector.layers.conv2d_infer` with these filters."""
    k, c, r, _ = w.shape
    m = TILES[r]
    _, g, _ = transforms(m, r)
    u = np.empty((g.shape[0] ** 2, -(-k // _kernel.FILTER_BLOCK) * _kernel.FILTER_BLOCK, c), np.float32)
    _kernel.transform_filters(np.ascontiguousarray(w, np.float32), g, u, get_num_threads())  # padding: 0
    return Filters(u, m, tuple(w.shape))


def _chunked_tiles(out_h, out_w, pool, m):
    """Tiles the kernel computes for one image's outputs (OH, OW) and a fused pool: the kept
    outputs in m x m tiles, rows of them padded to whole chunks (as ext/winograd.pyx cuts
    them)."""
    rows, cols = -(-(out_h // pool * pool) // m), -(-(out_w // pool * pool) // m)
    return rows * -(-cols // _kernel.TILES_PER_CHUNK) * _kernel.TILES_PER_CHUNK


def flat_tiles(n, r, out_h, out_w, pool=1):
    """Tiles the kernel computes for n images' outputs (OH, OW) and a fused pool when its
    chunks are runs of the tiles numbered across the batch: every kept output's tile, the
    last chunk padded."""
    m, chunk = TILES[r], _kernel.TILES_PER_CHUNK
    rows, cols = -(-(out_h // pool * pool) // m), -(-(out_w // pool * pool) // m)
    return -(-n * rows * cols // chunk) * chunk


def flat_pays(n, width, pad, r, out_h, out_w, pool=1):
    """Whether chunks of tiles numbered across the batch compute at least a tenth fewer tiles
    than :func:`layout`'s rows of chunks: their pieces of rows cost a little more a tile."""
    return flat_tiles(n, r, out_h, out_w, pool) <= 0.9 * layout(n, width, pad, r, out_h, out_w, pool)[0]


def layout(n, width, pad, r, out_h, out_w, pool=1):
    """How the kernel takes a batch of n images ``width`` wide (padded by ``pad`` columns) with
    outputs (OH, OW): (tiles, side) with side None for image by image, or the width of each
    image's slot when they run side by side as one wide image. Side by side pays when an
    image's row holds fewer tiles than a chunk, whose rest would be padding.

    A slot is a whole number of tiles (and so of pool windows), wide enough that every tile
    holding one of its image's outputs reads inside it: a tile mixes all its inputs (a NaN
    in one makes all its outputs NaN), and no image may reach another's. Tiles across two
    slots hold only outputs that are dropped."""
    m = TILES[r]
    alone = n * _chunked_tiles(out_h, out_w, pool, m)
    slot = -(-(-(-out_w // m) * m + r - 1) // m) * m
    wide = _chunked_tiles(out_h, n * slot - r + 1, pool, m)
    return (wide, slot) if n > 1 and wide < alone else (alone, None)


def weight_gradient(x, dout, r, padding):
    """dw (K, C, r, r) and db (K,) of a stride-1 convolution of float32 x (N, C, H, W) with padding
    (PH, PW) whose outputs' gradient is dout (N, K, OH, OW), by F(r x r, m x m) over the
    forward's tiles: each tile's m x m gradients and n x n input patch, summed over the tiles
    in the transformed domain (n*n GEMMs), in float32 per group of tiles, then in float64.
    Narrow images run side by side, as in the forward."""
    (n, c, h, width), (_, k, oh, ow) = x.shape, dout.shape
    ph, pw = padding
    m, threads = TILES[r], get_num_threads()
    _, slot = layout(n, width, pw, r, oh, ow)
    if slot is not None:  # one wide image, read where the images lie
        ow = n * slot - r + 1
    _, g, _ = transforms(r, m)  # G' of F(r, m): the m x m gradients' transform
    slots = np.empty((_kernel.GRADIENT_GROUPS, *_slot_shape(k, c)), np.float32)
    dw, db = np.empty((k, c, r, r), np.float32), np.empty(k, np.float32)
    _kernel.weight_gradient(x, dout, g.astype(np.float32), transforms(r, m)[0], slots, dw, db,
                            ph, pw, ow, threads, slot or 0)
    return dw, db


def _slot_shape(k, c):
    """(n*n, Kp, Cp): one slot of the weight gradient's sums for K filters of C channels,
    padded to the kernel's register blocks."""
    return (_kernel.N ** 2, -(-k // _kernel.GRADIENT_FILTER_BLOCK) * _kernel.GRADIENT_FILTER_BLOCK,
            -(-c // _kernel.GRADIENT_CHANNEL_BLOCK) * _kernel.GRADIENT_CHANNEL_BLOCK)


def backward_groups(k, c):
    """Groups of images :func:`fused_backward` sums dU and db in, for K filters of C
    channels: each holds a slot of n*n x K x C floats (padded), so that a layer of 512 by 512
    filters would hold 300 MB in 8; fewer groups keep them near 64 MB, 2 at least, to share
    among threads. Fixed by the shapes alone, as the bits depend on the groups."""
    floats = int(np.prod(_slot_shape(k, c)))
    return max(2, min(_kernel.BACKWARD_GROUPS, _kernel.BACKWARD_SLOT_FLOATS // max(1, floats)))


def _check_backward(x, dout, w, padding):
    """ValueError or TypeError naming what :func:`fused_backward` cannot take."""
    for name, a in (("x", x), ("dout", dout), ("w", w)):
        if not isinstance(a, np.ndarray) or a.dtype != np.float32 or a.ndim != 4:
            raise TypeError(f"{name} must be a 4-d float32 array, not {getattr(a, 'dtype', type(a).__name__)} "
                            f"of shape {getattr(a, 'shape', None)}")
    if not accepts(w):
        sizes = " or ".join(f"{r}x{r}" for r in sorted(TILES))
        raise ValueError(f"w must hold square filters of {sizes}, not {w.shape[2]}x{w.shape[3]}")
    if w.shape[1] != x.shape[1]:
        raise ValueError(f"w has {w.shape[1]} input channels and x has {x.shape[1]}")
    if len(padding) != 2 or min(padding) < 0:
        raise ValueError(f"padding must be two numbers of at least 0, not {padding}")
    (n, _, h, width), (k, _, r, _) = x.shape, w.shape
    out = (n, k, h + 2 * padding[0] - r + 1, width + 2 * padding[1] - r + 1)
    if min(out[2:]) < 1:
        raise ValueError(f"{r}x{r} filters do not fit the {h}x{width} images padded by {tuple(padding)}")
    if tuple(dout.shape) != out:
        raise ValueError(f"dout must have the outputs' shape {out}, not {tuple(dout.shape)}")


def fused_backward(x, dout, w, padding, input_grad=True):
    """dx (N, C, H, W) or None, dw (K, C, r, r) and db (K,) of a stride-1 convolution of
    float32 x (N, C, H, W) by filters w (K, C, r, r) with padding (PH, PW), whose outputs'
    gradient is dout (N, K, OH, OW): the forward's Winograd tiles transposed, from one pass
    over the tiles numbered across the batch (ext/winograd_flat_body.h). dw = G^T dU G, dU
    summed in float32 per group of images and over the groups in float64."""
    _check_backward(x, dout, w, padding)
    x = np.ascontiguousarray(x)
    (n, c, h, width), (k, _, r, _) = x.shape, w.shape
    m = TILES[r]
    _, g, _ = transforms(m, r)
    nn = g.shape[0] ** 2
    u = prepare(w).u  # (nn, K padded, C)
    cu = -(-c // _kernel.FILTER_BLOCK) * _kernel.FILTER_BLOCK
    ut = np.zeros((nn, cu, k), np.float32)
    ut[:, :c, :] = u[:, :k, :].transpose(0, 2, 1)
    slots = np.empty((backward_groups(k, c), *_slot_shape(k, c)), np.float32)
    dx = np.empty_like(x) if input_grad else None
    dw, db = np.empty((k, c, r, r), np.float32), np.empty(k, np.float32)
    _kernel.fused_backward(x, np.ascontiguousarray(dout), ut,
                           np.ascontiguousarray(g.T), slots, dx, dw, db, padding[0], padding[1],
                           get_num_threads())
    return dx, dw, db
