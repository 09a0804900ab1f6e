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
