"""conv2d against a naive NumPy loop, a numerical gradient, and hand-made cases."""
import numpy as np
import pytest

import reference as ref
from configs import Conv, conv_configs
from detector import layers as L
from detector._ext import conv as conv_kernels

FORWARD = conv_configs(300, seed=1)
GRADIENT = conv_configs(40, seed=2, max_kernel=4, max_extent=6, dtypes=("float64",))


def tolerance(dtype):
    return dict(rtol=1e-4, atol=1e-4) if dtype == "float32" else dict(rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cfg", FORWARD, ids=repr)
def test_forward_matches_naive_loop(cfg):
    x, w, b = cfg.arrays()
    out, _ = L.conv2d_forward(x, w, b, stride=cfg.stride, padding=cfg.padding)
    expected = ref.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                          cfg.stride, cfg.padding)
    assert out.dtype == x.dtype
    np.testing.assert_allclose(out, expected, **tolerance(cfg.dtype))


@pytest.mark.parametrize("cfg", GRADIENT, ids=repr)
def test_backward_matches_numerical_gradient(cfg):
    x, w, b = cfg.arrays()
    out, cache = L.conv2d_forward(x, w, b, stride=cfg.stride, padding=cfg.padding)
    g = np.random.default_rng(3).standard_normal(out.shape)
    dx, dw, db = L.conv2d_backward(g, cache)

    def loss():
        return float((L.conv2d_forward(x, w, b, stride=cfg.stride, padding=cfg.padding)[0] * g).sum())

    assert ref.relative_error(dx, ref.numerical_gradient(loss, x)) < 1e-6
    assert ref.relative_error(dw, ref.numerical_gradient(loss, w)) < 1e-6
    assert ref.relative_error(db, ref.numerical_gradient(loss, b)) < 1e-6


# Shapes wide enough that one image is cut into several blocks of output rows, so the
# chunked im2col and the two-phase gradient scatter are exercised.
MULTI_BLOCK = [
    Conv(1, 16, 8, 40, 300, (5, 5), (1, 1), (0, 0), "float64"),
    Conv(2, 4, 3, 30, 700, (3, 3), (1, 1), (1, 1), "float64"),
    Conv(2, 8, 4, 41, 500, (5, 3), (2, 1), (2, 0), "float32"),
]


@pytest.mark.parametrize("cfg", MULTI_BLOCK, ids=repr)
def test_images_split_into_row_blocks_match_naive_loop(cfg):
    out_h = (cfg.h + 2 * cfg.padding[0] - cfg.size[0]) // cfg.stride[0] + 1
    out_w = (cfg.w + 2 * cfg.padding[1] - cfg.size[1]) // cfg.stride[1] + 1
    for backward in (False, True):
        blocks = conv_kernels.blocks_per_image(cfg.k, cfg.c * cfg.size[0] * cfg.size[1], cfg.size[0],
                                               cfg.stride[0], out_h, out_w, np.dtype(cfg.dtype).itemsize,
                                               backward)
        assert blocks >= 3, "the shape must be cut into several blocks to test the split"
    x, w, b = cfg.arrays()
    out, cache = L.conv2d_forward(x, w, b, stride=cfg.stride, padding=cfg.padding)
    g = np.random.default_rng(4).standard_normal(out.shape).astype(cfg.dtype)
    dx, dw, db = L.conv2d_backward(g, cache)
    x64, w64, g64 = (a.astype(np.float64) for a in (x, w, g))
    np.testing.assert_allclose(out, ref.conv2d(x64, w64, b.astype(np.float64), cfg.stride, cfg.padding),
                               **tolerance(cfg.dtype))
    for got, want in zip((dx, dw, db), ref.conv2d_backward(x64, w64, g64, cfg.stride, cfg.padding)):
        scale = np.abs(want).max()
        np.testing.assert_allclose(got / scale, want / scale, **tolerance(cfg.dtype))


def test_input_that_does_not_fit_drops_the_last_column():
    # 7x7 input, 3x3 filter, stride 3: floor((7 - 3) / 3) + 1 = 2, the seventh row and
    # column are never read.
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 1, 7, 7))
    w = rng.standard_normal((1, 1, 3, 3))
    out, _ = L.conv2d_forward(x, w, np.zeros(1), stride=3)
    assert out.shape == (1, 1, 2, 2)
    changed = x.copy()
    changed[..., 6, :] = changed[..., :, 6] = 100.0
    np.testing.assert_array_equal(L.conv2d_forward(changed, w, np.zeros(1), stride=3)[0], out)
    np.testing.assert_allclose(out[0, 0, 1, 1], (x[0, 0, 3:6, 3:6] * w[0, 0]).sum() + 0.0)


def test_one_by_one_convolution_mixes_channels_per_pixel():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 5, 4, 3))
    w = rng.standard_normal((7, 5, 1, 1))
    b = rng.standard_normal(7)
    out, _ = L.conv2d_forward(x, w, b)
    expected = np.einsum("kc,nchw->nkhw", w[:, :, 0, 0], x) + b[:, None, None]
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_padding_only_region_gives_the_bias():
    x = np.ones((1, 1, 2, 2))
    w = np.ones((1, 1, 1, 1))
    out, _ = L.conv2d_forward(x, w, np.array([0.5]), padding=1)
    assert out.shape == (1, 1, 4, 4)
    assert out[0, 0, 0, 0] == 0.5 and out[0, 0, 1, 1] == 1.5
