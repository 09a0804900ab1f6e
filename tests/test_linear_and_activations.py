"""linear, ReLU, softmax cross-entropy and linear_to_conv."""
import numpy as np
import pytest

import reference as ref
from detector import layers as L

SHAPES = [(1, 1, 1), (3, 5, 2), (70, 33, 10), (130, 17, 65), (5, 200, 129)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n,d,m", SHAPES)
def test_linear_forward_matches_naive_loop(n, d, m, dtype):
    rng = np.random.default_rng(n * d * m)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((n, d), (m, d), (m,)))
    out, _ = L.linear_forward(x, w, b)
    tol = 1e-4 if dtype == "float32" else 1e-11
    np.testing.assert_allclose(out, ref.linear(x.astype(np.float64), w.astype(np.float64), b), rtol=tol, atol=tol)


@pytest.mark.parametrize("n,d,m", [(1, 1, 1), (3, 5, 2), (66, 4, 3), (4, 6, 70)])
def test_linear_backward_matches_numerical_gradient(n, d, m):
    rng = np.random.default_rng(n + d + m)
    x, w, b = rng.standard_normal((n, d)), rng.standard_normal((m, d)), rng.standard_normal(m)
    out, cache = L.linear_forward(x, w, b)
    g = rng.standard_normal(out.shape)
    dx, dw, db = L.linear_backward(g, cache)

    def loss():
        return float((L.linear_forward(x, w, b)[0] * g).sum())

    for got, wrt in ((dx, x), (dw, w), (db, b)):
        assert ref.relative_error(got, ref.numerical_gradient(loss, wrt)) < 1e-6


def test_relu_forward_and_backward():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 5, 6))
    x[np.abs(x) < 1e-3] = 0.5  # keep the numerical gradient away from the kink
    out, cache = L.relu_forward(x)
    np.testing.assert_array_equal(out, np.maximum(x, 0))
    g = rng.standard_normal(x.shape)
    dx = L.relu_backward(g, cache)
    numeric = ref.numerical_gradient(lambda: float((L.relu_forward(x)[0] * g).sum()), x)
    assert ref.relative_error(dx, numeric) < 1e-6


def test_relu_passes_nan_through():
    out, _ = L.relu_forward(np.array([np.nan, -1.0, 2.0]))
    assert np.isnan(out[0]) and out[1] == 0 and out[2] == 2


@pytest.mark.parametrize("n,m", [(1, 2), (7, 11), (64, 10)])
def test_softmax_cross_entropy_matches_reference_and_numerical_gradient(n, m):
    rng = np.random.default_rng(n * m)
    scores = rng.standard_normal((n, m)) * 3
    labels = rng.integers(0, m, n)
    loss, dscores = L.softmax_cross_entropy(scores, labels)
    assert loss == pytest.approx(ref.softmax_cross_entropy(scores, labels), rel=1e-12)
    numeric = ref.numerical_gradient(lambda: L.softmax_cross_entropy(scores, labels)[0], scores)
    assert ref.relative_error(dscores, numeric) < 1e-6


def test_softmax_cross_entropy_is_stable_for_huge_scores():
    loss, dscores = L.softmax_cross_entropy(np.array([[1000.0, 0.0], [0.0, -1000.0]], np.float32), [0, 1])
    assert np.isfinite(loss) and np.isfinite(dscores).all()
    assert loss == pytest.approx(500.0)


def test_linear_to_conv_gives_the_linear_layer_as_a_convolution():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4, 5, 6))
    w1, b1 = rng.standard_normal((8, 4 * 5 * 6)), rng.standard_normal(8)
    w2, b2 = rng.standard_normal((3, 8)), rng.standard_normal(3)
    fc1, _ = L.linear_forward(x.reshape(3, -1), w1, b1)
    fc2, _ = L.linear_forward(fc1, w2, b2)
    conv1, _ = L.conv2d_forward(x, *L.linear_to_conv(w1, b1, (4, 5, 6)))
    conv2, _ = L.conv2d_forward(conv1, *L.linear_to_conv(w2, b2, (8, 1, 1)))
    assert conv1.shape == (3, 8, 1, 1) and conv2.shape == (3, 3, 1, 1)
    np.testing.assert_allclose(conv2[:, :, 0, 0], fc2, rtol=1e-12)


def test_linear_to_conv_slides_the_classifier_over_a_larger_input():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 2, 6, 7))
    w, b = rng.standard_normal((5, 2 * 4 * 4)), rng.standard_normal(5)
    dense, _ = L.conv2d_forward(x, *L.linear_to_conv(w, b, (2, 4, 4)))
    assert dense.shape == (1, 5, 3, 4)
    crop = x[:, :, 2:6, 1:5].reshape(1, -1)
    np.testing.assert_allclose(dense[:, :, 2, 1], L.linear_forward(crop, w, b)[0], rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_relu_backward_passes_the_gradient_where_x_is_positive_only(dtype):
    # random signs (the case a branch mispredicts), zeros of both signs, NaN and infinities
    rng = np.random.default_rng(3)
    x = rng.standard_normal(100_003).astype(dtype)
    x[:6] = [0.0, -0.0, np.nan, np.inf, -np.inf, np.finfo(dtype).tiny]
    g = rng.standard_normal(x.shape).astype(dtype)
    g[7] = np.nan  # a NaN gradient passes where x > 0 only
    x[7] = 1.0
    _, cache = L.relu_forward(x)
    dx = L.relu_backward(g, cache)
    np.testing.assert_array_equal(dx, np.where(x > 0, g, 0))
    assert dx[:6].tolist() == [0, 0, 0, g[3], 0, g[5]] and np.isnan(dx[7])


def test_relu_backward_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 5, 7, 11)).astype(np.float32)
    x[0, 0, 0, :2] = [0.0, -0.0]  # (at a NaN input torch passes the gradient; we pass 0)
    g = rng.standard_normal(x.shape).astype(np.float32)
    tx = torch.tensor(x, requires_grad=True)
    torch.relu(tx).backward(torch.from_numpy(g))
    _, cache = L.relu_forward(x)
    np.testing.assert_array_equal(L.relu_backward(g, cache), tx.grad.numpy())
