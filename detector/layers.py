"""The functional API of the layers: argument checks in front of the compiled kernels.

Activations are NCHW, float32 or float64; conv weights are ``(K, C, FH, FW)``, linear
weights ``(M, D)``, as in PyTorch. Inputs that are not C-contiguous are copied once. Each
``*_forward`` returns ``(out, cache)``; the cache is opaque and goes to the matching
``*_backward``. Output sizes are ``floor((N + 2P - F) / S) + 1``.

Inference has its own entry points, :func:`conv2d_infer` and :func:`max_pool2d_infer`: the
output alone, no cache, no argmax, and the convolution may apply the ReLU and a max-pool
that tiles its output in the same pass. They check their arguments as the training
functions do.

>>> import numpy as np
>>> from detector import layers as L
>>> x = np.ones((2, 3, 8, 8), np.float32)
>>> w = np.ones((4, 3, 3, 3), np.float32)
>>> out, cache = L.conv2d_forward(x, w, np.zeros(4, np.float32), stride=2, padding=1)
>>> out.shape
(2, 4, 4, 4)
>>> dx, dw, db = L.conv2d_backward(np.ones_like(out), cache)
>>> dx.shape, dw.shape, db.shape
((2, 3, 8, 8), (4, 3, 3, 3), (4,))
>>> L.conv2d_infer(x, w, np.zeros(4, np.float32), stride=2, padding=1, relu=True, pool=2).shape
(2, 4, 2, 2)
"""
import numbers
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from ._ext import activations as _activations
from ._ext import conv as _conv
from ._ext import linear as _linear
from ._ext import pool as _pool
from ._ext import direct as _direct
from ._ext import winograd as _wg
from . import conv_algorithms as _algorithms
from . import winograd as _winograd
from .shapes import output_size, pair
from .threads import get_num_threads

__all__ = [
    "conv2d_forward", "conv2d_backward", "conv2d_infer",
    "max_pool2d_forward", "max_pool2d_backward", "max_pool2d_infer",
    "avg_pool2d_forward", "avg_pool2d_backward",
    "l2_pool2d_forward", "l2_pool2d_backward",
    "linear_forward", "linear_backward",
    "relu_forward", "relu_backward",
    "softmax_cross_entropy", "linear_to_conv",
]

_LAYOUTS = {1: "(N,)", 2: "(N, D)", 4: "(N, C, H, W)"}


class ConvCache(NamedTuple):
    x: np.ndarray
    w: np.ndarray
    stride: tuple
    padding: tuple


class PoolCache(NamedTuple):
    kind: str  # "max", "avg" or "l2"
    x: np.ndarray
    out: np.ndarray
    argmax: np.ndarray  # max pooling only: the flat index h * W + w of each window's winner
    size: tuple
    stride: tuple
    padding: tuple


class LinearCache(NamedTuple):
    x: np.ndarray
    w: np.ndarray


class ReluCache(NamedTuple):
    x: np.ndarray


def _float_array(value, name, ndim, like=None):
    """``value`` as a C-contiguous float32/float64 array of rank ``ndim`` (copied if needed)."""
    arr = np.asarray(value)
    if arr.dtype.kind != "f" or arr.dtype.itemsize not in (4, 8):
        raise TypeError(f"{name} must be float32 or float64, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(
            f"{name} must have {ndim} dimensions {_LAYOUTS.get(ndim, '')}, got shape {arr.shape}"
        )
    if arr.size == 0:
        raise ValueError(f"{name} is empty: shape {arr.shape}")
    dtype = arr.dtype.newbyteorder("=")
    if like is not None and dtype != like.dtype:
        raise TypeError(f"{name} is {dtype} but x is {like.dtype}: use one dtype for both")
    return np.ascontiguousarray(arr, dtype=dtype)


def _check_cache(cache, kind, producer):
    if not isinstance(cache, kind):
        raise TypeError(f"cache must be the one returned by {producer}, got {type(cache).__name__}")


def _gradient(dout, cache_x, shape):
    """``dout`` checked against the forward's output shape and dtype."""
    dout = _float_array(dout, "dout", len(shape), like=cache_x)
    if dout.shape != tuple(shape):
        raise ValueError(f"dout has shape {dout.shape} but the forward output had {tuple(shape)}")
    return dout


# -- convolution ---------------------------------------------------------------------------

def _conv_args(x, w, b, stride, padding):
    """The checked arrays, ((sh, sw), (ph, pw)) and the output's (OH, OW)."""
    x = _float_array(x, "x", 4)
    w = _float_array(w, "w", 4, like=x)
    b = _float_array(b, "b", 1, like=x)
    (sh, sw), (ph, pw) = pair(stride, "stride", 1), pair(padding, "padding", 0)
    n, c, h, wd = x.shape
    k, wc, fh, fw = w.shape
    if wc != c:
        raise ValueError(f"channel mismatch: x has {c} channels but w expects {wc} (w is {w.shape})")
    if b.shape != (k,):
        raise ValueError(f"b must have one entry per filter: w has {k} filters, b has shape {b.shape}")
    oh = output_size(h, fh, ph, sh, "height")
    ow = output_size(wd, fw, pw, sw, "width")
    return x, w, b, (sh, sw), (ph, pw), (oh, ow)


def conv2d_forward(x, w, b, stride=1, padding=0, algorithm="auto"):
    """2-D cross-correlation with zero padding, as ``torch.nn.functional.conv2d``.

    x (N, C, H, W), w (K, C, FH, FW), b (K,) -> out (N, K, OH, OW), cache. ``algorithm``:
    "im2col" (im2col + GEMM), "winograd" (float32, stride 1, 3x3 or 5x5 filters), "direct"
    (float32, stride 1; see :mod:`detector.conv_algorithms`) or "auto": the one its cost
    model expects fastest (the Winograd error: tests/test_winograd.py). The cache holds x and
    w alone, whichever runs.
    """
    x, w, b, (sh, sw), (ph, pw), (oh, ow) = _conv_args(x, w, b, stride, padding)
    cache = ConvCache(x, w, (sh, sw), (ph, pw))
    if algorithm not in ("auto", "im2col", "winograd", "direct"):
        raise ValueError(f"algorithm must be one of 'auto', 'im2col', 'winograd', 'direct', not {algorithm!r}")
    if algorithm == "auto":
        algorithm = _training_algorithm(x.dtype, x.shape, w.shape, (sh, sw), pw, (oh, ow))
    why_not = _algorithms.unfit(algorithm, x.dtype, w.shape, (sh, sw), (1, 1))
    if why_not:
        raise ValueError(f"the {algorithm} convolution cannot run this layer: {why_not}")
    if algorithm == "winograd":
        return _winograd_conv(x, w, b, (ph, pw), (oh, ow), False, 1, None, None, None), cache
    out = np.empty((x.shape[0], w.shape[0], oh, ow), x.dtype)
    if algorithm == "direct":
        _direct.direct_infer(x, w, b, out, ph, pw, False, 1, get_num_threads())
    else:
        _conv.conv2d_forward(x, w, b, out, sh, sw, ph, pw, get_num_threads())
    return out, cache


@lru_cache(maxsize=256)
def _training_algorithm(dtype, x_shape, w_shape, stride, pad, out_size):
    """The kernel of a training convolution the cost model expects fastest: "im2col" for
    float64 or a stride above 1, else also "winograd" (its filters change every step, so
    they are transformed on each call) or "direct". Asked once per layer shape: a call of the
    cost model costs a small layer's microseconds."""
    if dtype != np.float32 or tuple(stride) != (1, 1):
        return "im2col"
    costs = _algorithms.cost(x_shape, w_shape, out_size, 1, False, pad)
    return min(costs, key=costs.get)


def conv2d_infer(x, w, b, stride=1, padding=0, relu=False, pool=None, algorithm="auto",
                 winograd_filters=None, project=None):
    """The output of :func:`conv2d_forward` alone (no cache), for inference.

    With ``relu``, max(out, 0) (NaN passes); with ``pool`` (an int or an (h, w) pair), then
    max-pooled in windows of that size at a stride of the same size, unpadded, as
    :func:`max_pool2d_infer` would. Both happen in the convolution's output stage, block by
    block while it is in cache: the unpooled output is never stored.
    x (N, C, H, W), w (K, C, FH, FW), b (K,) -> out (N, K, OH, OW), or
    (N, K, OH // pool_h, OW // pool_w) with a pool.

    ``project``: (w2 (K2, K, 1, 1), b2 (K2,)), a 1x1 convolution applied to that result, which
    is then (N, K2, ...). The Winograd kernel computes it in its output stage, so the K
    channels are never stored (the im2col path runs it after).

    ``algorithm``: "im2col" (im2col + GEMM; equals the training path within rounding: bias
    is added after the GEMM here, before it there), "winograd", "direct" (the kernels of
    :mod:`detector.conv_algorithms`, which says what each can run) or "auto", the one its
    cost model expects fastest.
    ``winograd_filters``: ``detector.winograd.prepare(w)``, made once for many calls with the
    same filters (the caller keeps them in step with ``w``); without it the Winograd kernel
    transforms ``w`` on each call.
    """
    x, w, b, (sh, sw), (ph, pw), (oh, ow) = _conv_args(x, w, b, stride, padding)
    qh, qw = (1, 1) if pool is None else pair(pool, "pool", 1)
    out_h = output_size(oh, qh, 0, qh, "height after the pool")
    out_w = output_size(ow, qw, 0, qw, "width after the pool")
    if algorithm not in _algorithms.ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(map(repr, _algorithms.ALGORITHMS))}, "
                         f"not {algorithm!r}")
    w2, b2 = _projection(project, w, x.dtype)
    if winograd_filters is not None and tuple(winograd_filters.shape) != w.shape:
        raise ValueError(f"winograd_filters were prepared for filters {tuple(winograd_filters.shape)}, "
                         f"not {w.shape}")
    if algorithm == "auto":
        algorithm = "im2col"
        if w2 is not None and not _algorithms.unfit("winograd", x.dtype, w.shape, (sh, sw), (qh, qw)):
            algorithm = "winograd"  # the projection in its output stage: the K channels are never stored
        elif x.dtype == np.float32 and (sh, sw) == (1, 1) and qh == qw:
            algorithm = _algorithms.choose(x.shape, w.shape, (oh, ow), qh, winograd_filters is not None, pw)
    else:
        why_not = _algorithms.unfit(algorithm, x.dtype, w.shape, (sh, sw), (qh, qw))
        if why_not:
            raise ValueError(f"the {algorithm} convolution cannot run this layer: {why_not}")
    if algorithm == "winograd":
        return _winograd_conv(x, w, b, (ph, pw), (oh, ow), relu, qh, winograd_filters, w2, b2)
    out = np.empty((x.shape[0], w.shape[0], out_h, out_w), x.dtype)
    if algorithm == "direct":
        _direct.direct_infer(x, w, b, out, ph, pw, bool(relu), qh, get_num_threads())
    else:
        _conv.conv2d_infer(x, w, b, out, sh, sw, ph, pw, oh, ow, bool(relu), qh, qw, get_num_threads())
    return out if w2 is None else conv2d_infer(out, w2, b2, algorithm="im2col")


def _winograd_conv(x, w, b, padding, out_size, relu, q, filters, w2, b2):
    """conv2d_infer's Winograd path: chunks of tiles numbered across the batch where that
    computes fewer tiles (see detector.winograd.flat_pays), else image by image, or the
    images side by side as one wide image when that leaves fewer tiles of padding (see
    detector.winograd.layout), read and written where they lie."""
    (n, c, h, width), r = x.shape, w.shape[2]
    (ph, pw), (oh, ow), threads = padding, out_size, get_num_threads()
    filters = filters or _winograd.prepare(w)
    at = _winograd.output_matrix(filters.m, r)
    extra = {} if w2 is None else dict(p=_winograd.pad_rows(w2.reshape(w2.shape[:2]), _wg.FILTER_BLOCK), p_bias=b2)
    out = np.empty((n, w.shape[0] if w2 is None else w2.shape[0], oh // q, ow // q), np.float32)
    if _winograd.flat_pays(n, width, pw, r, oh, ow, q):
        _wg.flat_infer(x, filters.u, b, at, out, ph, pw, bool(relu), q, threads, **extra)
        return out
    _, slot = _winograd.layout(n, width, pw, r, oh, ow, q)
    _wg.winograd_infer(x, filters.u, b, at, out, ph, pw, oh, ow, bool(relu), q, threads, **extra,
                       slot=slot or 0)
    return out


def _projection(project, w, dtype):
    """(w2, b2) of ``project`` checked against the filters w it follows, or (None, None)."""
    if project is None:
        return None, None
    if not isinstance(project, (tuple, list)) or len(project) != 2:
        raise TypeError("project must be a pair (w2, b2) of a 1x1 convolution")
    w2 = _float_array(project[0], "project's w2", 4)
    b2 = _float_array(project[1], "project's b2", 1)
    if w2.dtype != dtype or b2.dtype != dtype:
        raise TypeError(f"project's w2 and b2 must be {dtype} as x is, not {w2.dtype} and {b2.dtype}")
    if w2.shape[1:] != (w.shape[0], 1, 1):
        raise ValueError(f"project's w2 must be (K2, {w.shape[0]}, 1, 1): a 1x1 convolution of the "
                         f"{w.shape[0]} filters' outputs, not {w2.shape}")
    if b2.shape != (w2.shape[0],):
        raise ValueError(f"project's b2 must have one entry per filter of w2 ({w2.shape[0]}), not {b2.shape}")
    return w2, b2


def conv2d_backward(dout, cache, input_grad=True):
    """Gradients of :func:`conv2d_forward`: dout (N, K, OH, OW) -> dx, dw, db.

    With ``input_grad=False`` dx is None and costs nothing: a net's first layer needs no
    gradient for its input. float32 stride-1 3x3 and 5x5 layers take Winograd's transforms
    where the cost model expects them faster for the forward: for a batch of at least
    ``BACKWARD_GROUPS`` images, every gradient from one pass over the forward's tiles
    transposed (:func:`detector.winograd.fused_backward`); for fewer, dw and db by
    :func:`detector.winograd.weight_gradient` and dx, where the cost model expects it
    faster, as the forward kernel's correlation of dout with the flipped filters. Their
    float32 errors: tests/test_winograd.py.
    """
    _check_cache(cache, ConvCache, "conv2d_forward")
    x, w, (sh, sw), (ph, pw) = cache
    n, k = x.shape[0], w.shape[0]
    oh = output_size(x.shape[2], w.shape[2], ph, sh, "height")
    ow = output_size(x.shape[3], w.shape[3], pw, sw, "width")
    dout = _gradient(dout, x, (n, k, oh, ow))
    winograd_dw = _training_algorithm(x.dtype, x.shape, w.shape, (sh, sw), pw, (oh, ow)) == "winograd"
    if winograd_dw and n >= _wg.BACKWARD_GROUPS:  # a batch: every gradient from one pass
        return _winograd.fused_backward(x, dout, w, (ph, pw), input_grad)
    winograd_dx = input_grad and _winograd_input_gradient_pays(x.dtype, x.shape, w.shape, (sh, sw), (ph, pw),
                                                               (oh, ow))
    dx = np.zeros_like(x) if input_grad and not winograd_dx else None
    if winograd_dw:
        dw, db = _winograd.weight_gradient(x, dout, w.shape[2], (ph, pw))
    if dx is not None or not winograd_dw:  # the GEMM kernel: its dx, and dw and db unless Winograd's
        gemm_dw, gemm_db = None if winograd_dw else np.empty((k, w[0].size), x.dtype), np.empty(k, x.dtype)
        _conv.conv2d_backward(dout, x, w, dx, gemm_dw, gemm_db, sh, sw, ph, pw, get_num_threads())
        if not winograd_dw:
            dw, db = gemm_dw, gemm_db
    if winograd_dx:
        dx = _winograd_input_gradient(dout, w, (ph, pw), x.shape[2:])
    return dx, dw.reshape(w.shape), db


def _flipped(w):
    """w (K, C, FH, FW) as the filters of the input gradient's correlation: (C, K, FH, FW),
    each rotated by 180 degrees."""
    return np.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])


@lru_cache(maxsize=256)
def _winograd_input_gradient_pays(dtype, x_shape, w_shape, stride, padding, out_size):
    """Whether dx runs faster as a Winograd correlation of dout (padded by FH - 1 - PH) with
    the flipped filters than by GEMM and col2im, by the cost model. That correlation has
    padding of at least 0 only when PH <= FH - 1 (PW likewise), and is never taken for
    fewer input channels than a register block of the kernel's filters: its tile products
    would be mostly padding, and dout's transforms would serve a channel or two (the first
    layer of an RGB or grey net; measured 1.4 ms against 1.0 for GEMM on (64, 1, 32, 32) by
    16 5x5 filters, where the model, fitted before tiles were numbered across the batch, chose
    Winograd)."""
    fh, fw = w_shape[2:]
    if padding[0] > fh - 1 or padding[1] > fw - 1 or w_shape[1] < _wg.FILTER_BLOCK:
        return False
    flipped_shape = (w_shape[1], w_shape[0], fh, fw)
    if _algorithms.unfit("winograd", dtype, flipped_shape, stride, (1, 1)):
        return False
    dout_shape = (x_shape[0], w_shape[0], *out_size)
    costs = _algorithms.cost(dout_shape, flipped_shape, x_shape[2:], 1, False, fw - 1 - padding[1])
    return costs["winograd"] < costs["im2col"]


def _winograd_input_gradient(dout, w, padding, in_size):
    """dx (N, C, H, W) of a stride-1 convolution: the full correlation of dout with the
    flipped filters, on the Winograd kernel (its float32 error: tests/test_winograd.py)."""
    fh, fw = w.shape[2:]
    pad = (fh - 1 - padding[0], fw - 1 - padding[1])
    zero = np.zeros(w.shape[1], dout.dtype)
    return _winograd_conv(dout, _flipped(w), zero, pad, tuple(in_size), False, 1, None, None, None)


# -- pooling -------------------------------------------------------------------------------

def _pool_geometry(x, size, stride, padding):
    fh, fw = pair(size, "size", 1)
    sh, sw = pair(size if stride is None else stride, "stride", 1)
    ph, pw = pair(padding, "padding", 0)
    if 2 * ph > fh or 2 * pw > fw:
        raise ValueError(
            f"padding {(ph, pw)} must be at most half the pool size {(fh, fw)}, "
            "or a window could hold padding only"
        )
    oh = output_size(x.shape[2], fh, ph, sh, "height")
    ow = output_size(x.shape[3], fw, pw, sw, "width")
    return (fh, fw), (sh, sw), (ph, pw), (x.shape[0], x.shape[1], oh, ow)


def _pool_forward(kind, x, size, stride, padding):
    x = _float_array(x, "x", 4)
    size, stride, padding, out_shape = _pool_geometry(x, size, stride, padding)
    out = np.empty(out_shape, x.dtype)
    geometry = (*size, *stride, *padding, get_num_threads())
    argmax = None
    if kind == "max":
        argmax = np.empty(out_shape, np.intp)
        _pool.max_pool2d_forward(x, out, argmax, *geometry)
    else:
        _pool.sum_pool2d_forward(x, out, kind == "l2", *geometry)
    return out, PoolCache(kind, x, out, argmax, size, stride, padding)


def _pool_backward(kind, dout, cache):
    _check_cache(cache, PoolCache, f"{kind}_pool2d_forward")
    if cache.kind != kind:
        raise TypeError(f"cache comes from {cache.kind}_pool2d_forward, not {kind}_pool2d_forward")
    dout = _gradient(dout, cache.x, cache.out.shape)
    geometry = (*cache.size, *cache.stride, *cache.padding, get_num_threads())
    if kind == "max":
        dx = np.empty_like(cache.x)  # the kernel zeroes it, plane by plane
        _pool.max_pool2d_backward(dout, cache.argmax, dx, get_num_threads())
    else:
        dx = np.zeros_like(cache.x)
        _pool.sum_pool2d_backward(dout, cache.x, cache.out, dx, kind == "l2", *geometry)
    return dx


def max_pool2d_forward(x, size, stride=None, padding=0):
    """Max pooling, padding with -inf; stride defaults to ``size``. x (N, C, H, W) -> out, cache.

    Where a window holds several maxima, the first in row-major order wins (as in PyTorch)
    and alone receives the gradient.
    """
    return _pool_forward("max", x, size, stride, padding)


def max_pool2d_infer(x, size, stride=None, padding=0):
    """The output of :func:`max_pool2d_forward` alone (no argmax, no cache), for inference.

    A window holding a NaN gives NaN, as in ``torch.nn.functional.max_pool2d`` (and as in
    the training kernel). x (N, C, H, W) -> out (N, C, OH, OW).
    """
    x = _float_array(x, "x", 4)
    size, stride, padding, out_shape = _pool_geometry(x, size, stride, padding)
    out = np.empty(out_shape, x.dtype)
    _pool.max_pool2d_infer(x, out, *size, *stride, *padding, get_num_threads())
    return out


def max_pool2d_backward(dout, cache):
    """Gradient of :func:`max_pool2d_forward`: dout (N, C, OH, OW) -> dx (N, C, H, W)."""
    return _pool_backward("max", dout, cache)


def avg_pool2d_forward(x, size, stride=None, padding=0):
    """Average pooling; padded zeros count in the mean (PyTorch's ``count_include_pad``)."""
    return _pool_forward("avg", x, size, stride, padding)


def avg_pool2d_backward(dout, cache):
    """Gradient of :func:`avg_pool2d_forward`: dout (N, C, OH, OW) -> dx (N, C, H, W)."""
    return _pool_backward("avg", dout, cache)


def l2_pool2d_forward(x, size, stride=None, padding=0):
    """L2 pooling: the square root of each window's sum of squares (``lp_pool2d``, p=2)."""
    return _pool_forward("l2", x, size, stride, padding)


def l2_pool2d_backward(dout, cache):
    """Gradient of :func:`l2_pool2d_forward`; an all-zero window passes gradient 0."""
    return _pool_backward("l2", dout, cache)


# -- fully connected -----------------------------------------------------------------------

def linear_forward(x, w, b):
    """out = x @ w.T + b: x (N, D), w (M, D), b (M,) -> out (N, M), cache."""
    x = _float_array(x, "x", 2)
    w = _float_array(w, "w", 2, like=x)
    b = _float_array(b, "b", 1, like=x)
    if w.shape[1] != x.shape[1]:
        raise ValueError(
            f"feature mismatch: x has {x.shape[1]} features per row but w expects {w.shape[1]} "
            f"(w is {w.shape}); flatten images with x.reshape(len(x), -1)"
        )
    if b.shape != (w.shape[0],):
        raise ValueError(f"b must have one entry per output: w has {w.shape[0]} rows, b has shape {b.shape}")
    out = np.empty((x.shape[0], w.shape[0]), x.dtype)
    _linear.linear_forward(x, w, b, out, get_num_threads())
    return out, LinearCache(x, w)


def linear_backward(dout, cache):
    """Gradients of :func:`linear_forward`: dout (N, M) -> dx (N, D), dw (M, D), db (M,)."""
    _check_cache(cache, LinearCache, "linear_forward")
    x, w = cache
    dout = _gradient(dout, x, (x.shape[0], w.shape[0]))
    dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty(w.shape[0], x.dtype)
    _linear.linear_backward(dout, x, w, dx, dw, db, get_num_threads())
    return dx, dw, db


def linear_to_conv(w, b, in_shape):
    """Rewrite a linear layer over a flattened (C, H, W) volume as a convolution.

    w (M, C*H*W), b (M,) -> w_conv (M, C, H, W), b_conv (M,). The convolution, run valid
    over exactly that volume, gives the linear layer's outputs as (N, M, 1, 1); over a
    larger input it slides the classifier. The next linear layer becomes a 1x1 convolution
    with ``in_shape=(M, 1, 1)``.
    """
    w = _float_array(w, "w", 2)
    b = _float_array(b, "b", 1, like=w)
    if not (isinstance(in_shape, (tuple, list)) and len(in_shape) == 3 and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in in_shape
    )):
        raise TypeError(f"in_shape must be (C, H, W), three positive ints, got {in_shape!r}")
    c, h, wd = map(int, in_shape)
    if c * h * wd != w.shape[1]:
        raise ValueError(
            f"in_shape {tuple(in_shape)} holds {c * h * wd} values but w has {w.shape[1]} inputs per row"
        )
    if b.shape != (w.shape[0],):
        raise ValueError(f"b must have one entry per output: w has {w.shape[0]} rows, b has shape {b.shape}")
    return w.reshape(w.shape[0], c, h, wd).copy(), b.copy()


# -- activations and loss ------------------------------------------------------------------

def relu_forward(x):
    """max(x, 0) elementwise, any shape -> out, cache."""
    x = np.asarray(x)
    flat = _float_array(x.reshape(-1), "x", 1)
    out = np.empty_like(flat)
    _activations.relu_forward(flat, out, get_num_threads())
    return out.reshape(x.shape), ReluCache(flat.reshape(x.shape))


def relu_backward(dout, cache):
    """Gradient of :func:`relu_forward`: dout where x > 0, else 0."""
    _check_cache(cache, ReluCache, "relu_forward")
    x = cache.x
    dout = _gradient(dout, x, x.shape)
    dx = np.empty_like(x)
    _activations.relu_backward(dout.reshape(-1), x.reshape(-1), dx.reshape(-1), get_num_threads())
    return dx


def softmax_cross_entropy(scores, labels):
    """Mean over the batch of -log softmax(scores)[label].

    scores (N, M) float, labels (N,) integers in [0, M) -> loss (float), dscores (N, M).
    """
    scores = _float_array(scores, "scores", 2)
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.shape != (scores.shape[0],):
        raise ValueError(f"labels must have shape ({scores.shape[0]},) to match scores {scores.shape}, got {labels.shape}")
    bad = np.flatnonzero((labels < 0) | (labels >= scores.shape[1]))
    if bad.size:
        raise ValueError(
            f"labels must lie in [0, {scores.shape[1]}): labels[{bad[0]}] = {labels[bad[0]]}"
        )
    dscores = np.empty_like(scores)
    loss = _activations.softmax_cross_entropy(
        scores, np.ascontiguousarray(labels, np.intp), dscores, get_num_threads()
    )
    return float(loss), dscores
