"""Which kernel runs an inference convolution: what each can run, and a measured cost model.

Three kernels compute :func:`detector.layers.conv2d_infer`:

- ``im2col``: im2col of a block of rows, then a BLAS GEMM (ext/conv.pyx); runs anything;
- ``winograd``: F(2x2, 5x5) and F(4x4, 3x3) tiles (ext/winograd.pyx, :mod:`detector.winograd`);
  float32, stride 1, square 3x3 or 5x5 filters, a square pool that tiles the Winograd tile;
- ``direct``: register-blocked taps read in place (ext/direct.pyx), for few input channels;
  float32, stride 1, no pool or a 2x2 one.

The cost model gives seconds for one call on one thread as counts times coefficients, fitted
(non-negative least squares, each timing weighted by its inverse square root: between
absolute and relative error, so that the large layers are right) to 448 timings of each
kernel: C in 1..64,
K in 8..128, output sides 8..130, with and without a 2x2 pool, r = 3 and 5, one image, this
project's 2-core AMD EPYC (AVX-512; OpenBLAS on the kernel it picks for this CPU). Over
those layers, its choice took 1.04x the time of the fastest kernel (mean; 2.1x at worst, on
layers of a few microseconds), and the chosen kernels took 0.58x the time of im2col alone. ``detector bench algorithms`` measures again.
The Winograd and direct kernels have been made faster since that fit (transforms at
constant offsets, side-by-side images read in place; narrow rows in pairs; chunks of tiles
numbered across a batch), which the coefficients do not know but for the pairs' blocks and
the tiles counted (see ``cost``). Measured again after the last of those, on
``detector bench algorithms``' 96 single-image layers: the choice took 1.05x the fastest
kernel's time (mean; 1.57x at worst).

Training asks it too (:mod:`detector.layers`): the forward for its kernel, and the backward
whether Winograd's weight and input gradients pay.
"""
import numpy as np

from . import winograd
from ._ext import direct as _direct
from ._ext import winograd as _wg

ALGORITHMS = ("auto", "im2col", "winograd", "direct")

# im2col: multiply-adds, values im2col copies, outputs, a call
IM2COL_COST = (9.413e-12, 1.351e-10, 8.511e-11, 6.75e-6)
# winograd, by filter size: multiply-adds of the tile products, transformed inputs,
# transformed outputs, a call; and seconds per filter and channel to transform the filters
WINOGRAD_COST = {5: (9.416e-12, 2.643e-10, 6.626e-10, 0.0),
                 3: (9.247e-12, 3.316e-10, 2.202e-10, 1.22e-6)}
PREPARE_COST = 1.27e-7
# direct: multiply-adds (in whole register blocks), input values copied, outputs, a call
DIRECT_COST = (7.736e-12, 1.213e-10, 1.048e-10, 3.19e-6)


def unfit(algorithm, dtype, w_shape, stride, pool):
    """Why ``algorithm`` cannot run a convolution by filters w_shape (K, C, FH, FW) at this
    stride with this (h, w) pool fused after it, or "" when it can."""
    _, _, fh, fw = w_shape
    if algorithm == "im2col":
        return ""
    if dtype != np.float32:
        return f"it computes in float32, and x is {dtype}"
    if tuple(stride) != (1, 1):
        return f"it needs stride 1, not {tuple(stride)}"
    if algorithm == "winograd":
        if fh != fw or fh not in winograd.TILES:
            sizes = " or ".join(f"{r}x{r}" for r in sorted(winograd.TILES))
            return f"it takes square filters of {sizes}, not {fh}x{fw}"
        m = winograd.TILES[fh]
        if pool[0] != pool[1] or m % pool[0]:
            return f"its {m}x{m} output tiles are not whole {pool[0]}x{pool[1]} pool windows"
        return ""
    if pool[0] != pool[1] or pool[0] not in _direct.POOLS:
        return f"its output stage pools 2x2 windows or none, not {pool[0]}x{pool[1]}"
    return ""


def cost(x_shape, w_shape, out_size, pool=1, prepared=False, pad=0):
    """{algorithm: seconds} the model expects for each kernel that can run a float32
    stride-1 convolution of x (N, C, H, W) by w (K, C, FH, FW) with outputs (OH, OW) and a
    pool x pool max-pool; ``prepared``: the Winograd filters are made already; ``pad``: the
    columns of padding on each side."""
    n, c, _, width = x_shape
    k, _, fh, fw = w_shape
    oh, ow = out_size
    p, taps = oh * ow, c * fh * fw
    kept = (oh // pool * pool) * (ow // pool * pool)
    costs = {"im2col": n * np.dot(IM2COL_COST, (p * k * taps, p * taps, p * k, 1 / n))}
    if not unfit("direct", np.float32, w_shape, (1, 1), (pool, pool)):
        # whole blocks of 64 columns and 4 filters; each chunk copies its rows and FH - 1 more.
        # Unpooled rows of at most 32 go in pairs, blocks of two rows of 32 columns, which
        # cost as 44 columns would (timed against im2col after the coefficients were fitted:
        # (64, 1, 32, 32) by 16 5x5 filters 0.44 ms against 0.49, (1, 32, 34, 34) by 128 3x3
        # ones 0.57 against 0.52)
        if pool == 1 and ow <= 32:
            blocks = 44 * -(-oh // 2) * 2 * -(-k // 4) * 4
        else:
            blocks = -(-(ow // pool * pool) // 64) * 64 * (oh // pool * pool) * -(-k // 4) * 4
        copied = c * (oh + (oh // pool) / 8 * (fh - 1)) * (width + 64)
        costs["direct"] = n * np.dot(DIRECT_COST, (blocks * taps, copied, kept * k, 1 / n))
    if not unfit("winograd", np.float32, w_shape, (1, 1), (pool, pool)):
        m = winograd.TILES[fh]
        kp = -(-k // _wg.FILTER_BLOCK) * _wg.FILTER_BLOCK
        t, _ = winograd.layout(n, width, pad, fh, oh, ow, pool)
        if winograd.flat_pays(n, width, pad, fh, oh, ow, pool):
            t = winograd.flat_tiles(n, fh, oh, ow, pool)
        seconds = np.dot(WINOGRAD_COST[fh], (t * 36 * kp * c, t * 36 * c, t * kp * m * m, 1))
        costs["winograd"] = seconds + (0 if prepared else PREPARE_COST * k * c)
    return {name: float(v) for name, v in costs.items()}


def choose(x_shape, w_shape, out_size, pool=1, prepared=False, pad=0):
    """The kernel the cost model expects fastest for a float32 stride-1 convolution."""
    costs = cost(x_shape, w_shape, out_size, pool, prepared, pad)
    return min(costs, key=costs.get)
