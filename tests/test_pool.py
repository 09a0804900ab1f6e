"""Max, average and L2 pooling against naive loops, numerical gradients and edge cases."""
import numpy as np
import pytest

import reference as ref
from configs import distinct_values, pool_configs
from detector import layers as L

FORWARD = pool_configs(240, seed=11)
GRADIENT = pool_configs(45, seed=12, max_extent=7, dtypes=("float64",))


def forward(kind, x, cfg):
    return getattr(L, f"{kind}_pool2d_forward")(x, cfg.size, stride=cfg.stride, padding=cfg.padding)


def backward(kind, g, cache):
    return getattr(L, f"{kind}_pool2d_backward")(g, cache)


@pytest.mark.parametrize("cfg", FORWARD, ids=repr)
def test_forward_matches_naive_loop(cfg):
    x = np.random.default_rng(0).standard_normal((cfg.n, cfg.c, cfg.h, cfg.w)).astype(cfg.dtype)
    out, _ = forward(cfg.kind, x, cfg)
    expected = ref.pool2d(x.astype(np.float64), cfg.kind, cfg.size, cfg.stride, cfg.padding)
    tol = 1e-5 if cfg.dtype == "float32" else 1e-12
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("cfg", GRADIENT, ids=repr)
def test_backward_matches_numerical_gradient(cfg):
    # distinct, well-separated values: no max-pool ties and no all-zero L2 window
    x = distinct_values((cfg.n, cfg.c, cfg.h, cfg.w), seed=13)
    out, cache = forward(cfg.kind, x, cfg)
    g = np.random.default_rng(14).standard_normal(out.shape)
    dx = backward(cfg.kind, g, cache)
    numeric = ref.numerical_gradient(lambda: float((forward(cfg.kind, x, cfg)[0] * g).sum()), x)
    assert ref.relative_error(dx, numeric) < 1e-6


def test_max_pool_tie_gives_the_gradient_to_the_first_maximum_only():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 1, 0] = x[0, 0, 1, 1] = 5.0  # two maxima in the top-left window, first at (1, 0)
    out, cache = L.max_pool2d_forward(x, 2)
    dx = L.max_pool2d_backward(np.ones_like(out), cache)
    assert dx[0, 0, 1, 0] == 1 and dx[0, 0, 1, 1] == 0
    # the all-zero windows are all ties too: each passes its gradient to its top-left input
    assert dx.sum() == 4
    assert dx[0, 0, 0, 2] == dx[0, 0, 2, 0] == dx[0, 0, 2, 2] == 1


def test_overlapping_max_windows_add_their_gradients():
    x = np.array([[[[1.0, 9.0, 2.0, 3.0]]]])
    out, cache = L.max_pool2d_forward(x, (1, 2), stride=1)
    np.testing.assert_array_equal(out, [[[[9.0, 9.0, 3.0]]]])
    np.testing.assert_array_equal(L.max_pool2d_backward(np.ones_like(out), cache), [[[[0, 2, 0, 1]]]])


def test_max_pool_pads_with_minus_infinity():
    x = -np.ones((1, 1, 2, 2))
    out, _ = L.max_pool2d_forward(x, 2, stride=1, padding=1)
    np.testing.assert_array_equal(out, -np.ones((1, 1, 3, 3)))


def test_l2_pool_of_an_all_zero_window_has_zero_gradient():
    x = np.zeros((1, 2, 4, 4))
    x[0, 1, 0, 0] = 3.0
    out, cache = L.l2_pool2d_forward(x, 2)
    dx = L.l2_pool2d_backward(np.ones_like(out), cache)
    assert np.isfinite(dx).all()
    assert dx[0, 0].sum() == 0 and dx[0, 1, 0, 0] == 1.0


def test_average_pool_counts_padded_zeros():
    out, cache = L.avg_pool2d_forward(np.ones((1, 1, 4, 4)), 3, stride=1, padding=1)
    assert out[0, 0, 0, 0] == pytest.approx(4 / 9)
    assert out[0, 0, 0, 1] == pytest.approx(6 / 9)
    assert out[0, 0, 1, 1] == pytest.approx(1.0)
    dx = L.avg_pool2d_backward(np.ones_like(out), cache)
    assert dx[0, 0, 0, 0] == pytest.approx(4 / 9)  # the corner sits in four windows


def test_pool_that_does_not_fit_ignores_the_last_rows():
    x = np.arange(49.0).reshape(1, 1, 7, 7)
    out, _ = L.max_pool2d_forward(x, 3, stride=3)
    np.testing.assert_array_equal(out, [[[[16.0, 19.0], [37.0, 40.0]]]])


def test_stride_defaults_to_the_size():
    x = np.random.default_rng(0).standard_normal((1, 1, 6, 6))
    np.testing.assert_array_equal(L.max_pool2d_forward(x, 2)[0], L.max_pool2d_forward(x, 2, stride=2)[0])
    np.testing.assert_array_equal(x.reshape(1, 1, 3, 2, 3, 2).max(axis=(3, 5)), L.max_pool2d_forward(x, 2)[0])


# -- the inference kernel: no argmax, a select per value, a 2x2 fast path --------------------

INFER = pool_configs(300, seed=15, kinds=("max",), max_extent=17)
# the fast path (2x2, stride 2, unpadded) and the unpadded general path, odd sizes included
INFER_UNPADDED = [cfg for cfg in pool_configs(200, seed=16, kinds=("max",), max_extent=17)
                  if cfg.padding == (0, 0)]
FAST = [((n, c, h, w), dtype) for n, c, h, w in [(1, 1, 2, 2), (2, 3, 9, 11), (1, 16, 60, 61), (3, 2, 33, 4)]
        for dtype in ("float32", "float64")]


@pytest.mark.parametrize("cfg", INFER + INFER_UNPADDED, ids=repr)
def test_inference_max_pool_equals_the_training_kernel_and_the_naive_loop(cfg):
    x = np.random.default_rng(1).standard_normal((cfg.n, cfg.c, cfg.h, cfg.w)).astype(cfg.dtype)
    out = L.max_pool2d_infer(x, cfg.size, stride=cfg.stride, padding=cfg.padding)
    assert out.dtype == x.dtype
    np.testing.assert_array_equal(out, forward("max", x, cfg)[0])
    np.testing.assert_array_equal(out, ref.pool2d(x, "max", cfg.size, cfg.stride, cfg.padding))


@pytest.mark.parametrize("shape, dtype", FAST, ids=repr)
def test_inference_2x2_pool_equals_reshape_max(shape, dtype):
    x = np.random.default_rng(2).standard_normal(shape).astype(dtype)
    n, c, h, w = shape
    expected = x[:, :, :h // 2 * 2, :w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))
    np.testing.assert_array_equal(L.max_pool2d_infer(x, 2), expected)


@pytest.mark.parametrize("size, stride, padding", [(2, 2, 0), (3, 2, 1), (2, 1, 0), ((1, 3), (2, 1), (0, 1))])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_inference_max_pool_propagates_nan_like_the_training_kernel(size, stride, padding, dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 9, 10)).astype(dtype)
    x[rng.random(x.shape) < 0.05] = np.nan
    x[0, 0, :3, :3] = np.nan  # a NaN first in its window, and a window of NaN only
    out = L.max_pool2d_infer(x, size, stride=stride, padding=padding)
    np.testing.assert_array_equal(out, L.max_pool2d_forward(x, size, stride=stride, padding=padding)[0])
    # a window with a NaN gives NaN, whatever its position in the window; the others their max
    (fh, fw), (sh, sw), (ph, pw) = (np.broadcast_to(v, 2) for v in (size, stride, padding))
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            window = xp[:, :, i * sh:i * sh + fh, j * sw:j * sw + fw]
            has_nan = np.isnan(window).any(axis=(2, 3))
            np.testing.assert_array_equal(np.isnan(out[:, :, i, j]), has_nan)
            largest = np.where(has_nan, np.nan, window.max(axis=(2, 3), initial=-np.inf))
            np.testing.assert_array_equal(out[:, :, i, j], largest)


def test_inference_max_pool_keeps_infinities():
    x = np.array([[[[-np.inf, -np.inf, 1.0, np.inf], [-np.inf, -np.inf, -2.0, 0.0]]]])
    np.testing.assert_array_equal(L.max_pool2d_infer(x, 2), [[[[-np.inf, np.inf]]]])


def test_inference_max_pool_matches_torch_with_nan():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 4, 13, 12)).astype(np.float32)
    x[rng.random(x.shape) < 0.03] = np.nan
    for size, stride, padding in [(2, 2, 0), (3, 2, 1), (2, 1, 1)]:
        theirs = torch.nn.functional.max_pool2d(torch.from_numpy(x), size, stride, padding).numpy()
        np.testing.assert_array_equal(L.max_pool2d_infer(x, size, stride=stride, padding=padding), theirs)


@pytest.mark.parametrize("args, error, message", [
    ((np.zeros((1, 1, 4, 1)), 2), ValueError, "output width would be 0.*N=1, F=2, P=0, S=2"),
    ((np.zeros((1, 1, 4, 4)), 2, None, 2), ValueError, "padding .* must be at most half the pool size"),
    ((np.zeros((1, 4, 4)), 2), ValueError, r"x must have 4 dimensions"),
    ((np.zeros((1, 1, 4, 4), np.int32), 2), TypeError, "x must be float32 or float64"),
    ((np.zeros((1, 1, 4, 4)), 0), ValueError, "size must be at least 1"),
])
def test_inference_max_pool_checks_its_arguments_as_training_does(args, error, message):
    for pool in (L.max_pool2d_infer, L.max_pool2d_forward):
        with pytest.raises(error, match=message):
            pool(*args)


def test_inference_max_pool_reads_non_contiguous_input():
    x = np.random.default_rng(5).standard_normal((2, 3, 8, 10))[:, ::2, :, ::-1]
    np.testing.assert_array_equal(L.max_pool2d_infer(x, 2), L.max_pool2d_forward(x, 2)[0])


def naive_max_argmax(x, size, stride):
    """The first maximum of each unpadded window in row-major order, or its first NaN."""
    n, c, h, w = x.shape
    oh, ow = (h - size) // stride + 1, (w - size) // stride + 1
    out, arg = np.empty((n, c, oh, ow), x.dtype), np.empty((n, c, oh, ow), np.intp)
    for p in np.ndindex(n, c, oh, ow):
        best, at = None, None
        for i in range(size):
            for j in range(size):
                ih, iw = p[2] * stride + i, p[3] * stride + j
                v = x[p[0], p[1], ih, iw]
                if best is None or v > best or (np.isnan(v) and not np.isnan(best)):
                    best, at = v, ih * w + iw
        out[p], arg[p] = best, at
    return out, arg


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("width", [2, 5, 15, 33, 66])  # whole vectors and the lanes left over
def test_2x2_max_pool_keeps_the_first_maximum_or_nan(dtype, width):
    rng = np.random.default_rng(width)
    # few distinct values: many ties; some NaN, infinities and signed zeros
    x = rng.integers(-2, 3, (2, 3, 6, width)).astype(dtype)
    x[rng.random(x.shape) < 0.05] = np.nan
    x[rng.random(x.shape) < 0.05] = np.inf
    x[rng.random(x.shape) < 0.05] = -0.0
    out, cache = L.max_pool2d_forward(x, 2)
    expected, argmax = naive_max_argmax(x, 2, 2)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(cache.argmax, argmax)
    g = rng.standard_normal(out.shape).astype(dtype)
    dx = L.max_pool2d_backward(g, cache)
    want = np.zeros_like(x).reshape(2, 3, -1)
    np.put_along_axis(want, argmax.reshape(2, 3, -1), g.reshape(2, 3, -1), axis=2)
    np.testing.assert_array_equal(dx, want.reshape(x.shape))
