"""Bad input gets a ValueError or TypeError whose message names the culprit."""
import numpy as np
import pytest

import detector
from detector import layers as L

X = np.zeros((2, 3, 8, 8), np.float32)
W = np.zeros((4, 3, 3, 3), np.float32)
B = np.zeros(4, np.float32)


@pytest.mark.parametrize("x, message", [
    (np.zeros((3, 8, 8), np.float32), r"x must have 4 dimensions \(N, C, H, W\), got shape \(3, 8, 8\)"),
    (np.zeros((2, 3, 8, 8), np.int64), "x must be float32 or float64, got dtype int64"),
    (np.zeros((2, 3, 8, 8), object), "x must be float32 or float64, got dtype object"),
    (np.zeros((2, 3, 8, 8), bool), "x must be float32 or float64, got dtype bool"),
    (np.zeros((2, 3, 8, 8), np.float16), "x must be float32 or float64, got dtype float16"),
    (np.zeros((0, 3, 8, 8), np.float32), r"x is empty: shape \(0, 3, 8, 8\)"),
])
def test_conv_rejects_bad_input(x, message):
    with pytest.raises((TypeError, ValueError), match=message):
        L.conv2d_forward(x, W, B)


def test_wrong_dtype_is_a_type_error_and_wrong_shape_a_value_error():
    with pytest.raises(TypeError):
        L.conv2d_forward(X.astype(np.int32), W, B)
    with pytest.raises(ValueError):
        L.conv2d_forward(X[0], W, B)


def test_channel_mismatch_names_both_counts():
    with pytest.raises(ValueError, match="x has 3 channels but w expects 2"):
        L.conv2d_forward(X, np.zeros((4, 2, 3, 3), np.float32), B)


def test_bias_of_the_wrong_length():
    with pytest.raises(ValueError, match=r"w has 4 filters, b has shape \(5,\)"):
        L.conv2d_forward(X, W, np.zeros(5, np.float32))
    with pytest.raises(ValueError, match=r"w has 3 rows, b has shape \(2,\)"):
        L.linear_forward(np.zeros((2, 4)), np.zeros((3, 4)), np.zeros(2))


def test_mixed_dtypes_are_refused():
    with pytest.raises(TypeError, match="w is float64 but x is float32"):
        L.conv2d_forward(X, W.astype(np.float64), B)


def test_output_below_one_names_n_f_p_s_and_the_formula():
    with pytest.raises(ValueError, match=r"floor\(\(N \+ 2P - F\) / S\) \+ 1 with N=2, F=3, P=0, S=1"):
        L.conv2d_forward(np.zeros((1, 3, 2, 8)), np.zeros((4, 3, 3, 3)), np.zeros(4))
    with pytest.raises(ValueError, match="output width would be 0.*N=1, F=2, P=0, S=2"):
        L.max_pool2d_forward(np.zeros((1, 1, 4, 1)), 2)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(stride=0), ValueError, "stride must be at least 1"),
    (dict(stride=1.5), TypeError, "stride must be an int or a pair of ints"),
    (dict(stride=True), TypeError, "stride must be an int or a pair of ints"),
    (dict(stride=(1, 2, 3)), TypeError, "stride must be an int or a pair of ints"),
    (dict(padding=-1), ValueError, "padding must be at least 0"),
])
def test_bad_stride_or_padding(kwargs, error, message):
    with pytest.raises(error, match=message):
        L.conv2d_forward(X, W, B, **kwargs)


def test_pool_padding_over_half_the_window_is_refused():
    with pytest.raises(ValueError, match=r"padding \(2, 2\) must be at most half the pool size \(3, 3\)"):
        L.max_pool2d_forward(X, 3, padding=2)


def test_linear_feature_mismatch_suggests_flattening():
    with pytest.raises(ValueError, match=r"x has 192 features per row but w expects 10.*reshape"):
        L.linear_forward(X.reshape(2, -1), np.zeros((4, 10), np.float32), B)
    with pytest.raises(ValueError, match="x must have 2 dimensions"):
        L.linear_forward(X, np.zeros((4, 192), np.float32), B)


@pytest.mark.parametrize("labels, error, message", [
    ([0, 3], ValueError, r"labels must lie in \[0, 3\): labels\[1\] = 3"),
    ([-1, 0], ValueError, r"labels\[0\] = -1"),
    ([0.0, 1.0], TypeError, "labels must be integers, got dtype float64"),
    ([0, 1, 2], ValueError, r"labels must have shape \(2,\)"),
])
def test_bad_labels(labels, error, message):
    with pytest.raises(error, match=message):
        L.softmax_cross_entropy(np.zeros((2, 3)), np.array(labels))


def test_backward_checks_dout_and_cache():
    out, cache = L.conv2d_forward(X, W, B)
    with pytest.raises(ValueError, match=r"dout has shape \(2, 4, 5, 5\) but the forward output had \(2, 4, 6, 6\)"):
        L.conv2d_backward(np.zeros((2, 4, 5, 5), np.float32), cache)
    with pytest.raises(TypeError, match="dout is float64 but x is float32"):
        L.conv2d_backward(out.astype(np.float64), cache)
    with pytest.raises(TypeError, match="cache must be the one returned by conv2d_forward"):
        L.conv2d_backward(out, ("not", "a", "cache"))
    _, pool_cache = L.avg_pool2d_forward(X, 2)
    with pytest.raises(TypeError, match="cache comes from avg_pool2d_forward, not max_pool2d_forward"):
        L.max_pool2d_backward(np.zeros((2, 3, 4, 4), np.float32), pool_cache)


def test_linear_to_conv_checks_the_volume():
    with pytest.raises(ValueError, match=r"in_shape \(2, 3, 3\) holds 18 values but w has 20"):
        L.linear_to_conv(np.zeros((4, 20)), np.zeros(4), (2, 3, 3))
    with pytest.raises(TypeError, match="in_shape must be"):
        L.linear_to_conv(np.zeros((4, 20)), np.zeros(4), (20,))


@pytest.mark.parametrize("layout", ["fortran", "strided", "big-endian"])
def test_unusual_memory_layouts_are_read_correctly(layout):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 9, 9))
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    expected, _ = L.conv2d_forward(x, w, b, padding=1)
    if layout == "fortran":
        odd = np.asfortranarray(x)
    elif layout == "strided":
        odd = np.zeros((2, 6, 9, 18))[:, ::2, :, ::2]
        odd[...] = x
    else:
        odd = x.astype(">f8")
    assert not (odd.flags.c_contiguous and odd.dtype.isnative)
    np.testing.assert_array_equal(L.conv2d_forward(odd, w, b, padding=1)[0], expected)
    np.testing.assert_array_equal(L.max_pool2d_forward(odd, 2)[0], L.max_pool2d_forward(x, 2)[0])


def test_set_num_threads_validates(monkeypatch):
    with pytest.raises(ValueError, match="the number of threads must be a positive integer, got 0"):
        detector.set_num_threads(0)
    with pytest.raises(TypeError):
        detector.set_num_threads(2.5)
