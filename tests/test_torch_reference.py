"""The same sweeps against torch.nn.functional, forward and gradient, when torch is installed.

PyTorch is only a reference here; the product never imports it.
"""
import numpy as np
import pytest

from configs import conv_configs, distinct_values, pool_configs
from detector import layers as L

torch = pytest.importorskip("torch")
F = torch.nn.functional

CONV = conv_configs(120, seed=21, dtypes=("float64",))
POOL = pool_configs(120, seed=22, dtypes=("float64",))
TOL = dict(rtol=1e-9, atol=1e-9)


def tensor(a):
    return torch.tensor(a, requires_grad=True)


@pytest.mark.parametrize("cfg", CONV, ids=repr)
def test_conv2d_forward_and_gradients_match_torch(cfg):
    x, w, b = cfg.arrays()
    out, cache = L.conv2d_forward(x, w, b, stride=cfg.stride, padding=cfg.padding)
    g = np.random.default_rng(1).standard_normal(out.shape)
    dx, dw, db = L.conv2d_backward(g, cache)
    tx, tw, tb = tensor(x), tensor(w), tensor(b)
    t_out = F.conv2d(tx, tw, tb, stride=cfg.stride, padding=cfg.padding)
    t_out.backward(torch.tensor(g))
    np.testing.assert_allclose(out, t_out.detach().numpy(), **TOL)
    for ours, theirs in ((dx, tx), (dw, tw), (db, tb)):
        np.testing.assert_allclose(ours, theirs.grad.numpy(), **TOL)


def torch_pool(kind, x, cfg):
    if kind == "max":
        return F.max_pool2d(x, cfg.size, cfg.stride, cfg.padding)
    if kind == "avg":
        return F.avg_pool2d(x, cfg.size, cfg.stride, cfg.padding, count_include_pad=True)
    # lp_pool2d has no padding argument: pad with zeros, which add nothing to the squares
    ph, pw = cfg.padding
    return F.lp_pool2d(F.pad(x, (pw, pw, ph, ph)), 2, cfg.size, cfg.stride)


@pytest.mark.parametrize("cfg", POOL, ids=repr)
def test_pooling_forward_and_gradient_match_torch(cfg):
    x = distinct_values((cfg.n, cfg.c, cfg.h, cfg.w), seed=23)
    out, cache = getattr(L, f"{cfg.kind}_pool2d_forward")(x, cfg.size, stride=cfg.stride, padding=cfg.padding)
    g = np.random.default_rng(2).standard_normal(out.shape)
    dx = getattr(L, f"{cfg.kind}_pool2d_backward")(g, cache)
    tx = tensor(x)
    t_out = torch_pool(cfg.kind, tx, cfg)
    t_out.backward(torch.tensor(g))
    np.testing.assert_allclose(out, t_out.detach().numpy(), **TOL)
    np.testing.assert_allclose(dx, tx.grad.numpy(), **TOL)


def test_max_pool_ties_route_the_gradient_like_torch():
    x = np.random.default_rng(3).integers(0, 3, (2, 3, 9, 9)).astype(np.float64)  # many ties
    out, cache = L.max_pool2d_forward(x, 3, stride=2, padding=1)
    dx = L.max_pool2d_backward(np.ones_like(out), cache)
    tx = tensor(x)
    F.max_pool2d(tx, 3, 2, 1).sum().backward()
    np.testing.assert_array_equal(dx, tx.grad.numpy())


def test_linear_relu_and_cross_entropy_match_torch():
    rng = np.random.default_rng(4)
    x, w, b = rng.standard_normal((70, 40)), rng.standard_normal((10, 40)), rng.standard_normal(10)
    labels = rng.integers(0, 10, 70)
    hidden, c1 = L.relu_forward(x)
    scores, c2 = L.linear_forward(hidden, w, b)
    loss, dscores = L.softmax_cross_entropy(scores, labels)
    dhidden, dw, db = L.linear_backward(dscores, c2)
    dx = L.relu_backward(dhidden, c1)

    tx, tw, tb = tensor(x), tensor(w), tensor(b)
    t_loss = F.cross_entropy(F.linear(F.relu(tx), tw, tb), torch.tensor(labels))
    t_loss.backward()
    assert loss == pytest.approx(t_loss.item(), rel=1e-12)
    for ours, theirs in ((dx, tx), (dw, tw), (db, tb)):
        np.testing.assert_allclose(ours, theirs.grad.numpy(), **TOL)


def test_float32_conv_agrees_with_torch_float32():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 16, 33, 35)).astype(np.float32)
    w = rng.standard_normal((32, 16, 5, 5)).astype(np.float32)
    b = rng.standard_normal(32).astype(np.float32)
    out, _ = L.conv2d_forward(x, w, b, stride=2, padding=2)
    expected = F.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b), stride=2, padding=2).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
