"""The Winograd convolution: its transforms against direct correlation, its kernel against the
naive loop (within its stated float32 error), identical bits for any thread count, and the
cost model's choice."""
import numpy as np
import pytest

from detector import layers as L
from detector import winograd
from detector.conv_algorithms import choose, cost
from detector._ext import winograd as kernel

import reference as ref

# The kernel's float32 error, bounded by this fraction of sum |w| |x| over each window (the
# largest partial sum an output can meet): measured up to 3.1e-6 (52 ulps) with one input
# channel, 1e-6 with 16 and more.
ERROR = 1e-5


@pytest.mark.parametrize("m, r", [(2, 5), (4, 3), (2, 3), (3, 3), (4, 5)])
def test_transforms_compute_a_correlation_exactly(m, r):
    at, g, bt = winograd.transforms(m, r)
    n = m + r - 1
    assert at.shape == (m, n) and g.shape == (n, r) and bt.shape == (n, n)
    rng = np.random.default_rng(m * 10 + r)
    d, w = rng.standard_normal(n), rng.standard_normal(r)
    np.testing.assert_allclose(at @ ((g @ w) * (bt @ d)), [d[i:i + r] @ w for i in range(m)], atol=1e-12)
    d2, w2 = rng.standard_normal((n, n)), rng.standard_normal((r, r))
    two_d = at @ ((g @ w2 @ g.T) * (bt @ d2 @ bt.T)) @ at.T
    direct = [[(d2[i:i + r, j:j + r] * w2).sum() for j in range(m)] for i in range(m)]
    np.testing.assert_allclose(two_d, direct, atol=1e-11)
    assert np.array_equal(bt, np.round(bt)), "B^T is scaled to integers"


def test_too_many_points_is_refused():
    with pytest.raises(ValueError, match="needs 9 points"):
        winograd.transforms(5, 5)


@pytest.mark.parametrize("r", sorted(winograd.TILES))
def test_kernel_applies_the_input_transform_of_the_module(r):
    np.testing.assert_array_equal(kernel.input_matrix(), winograd.transforms(winograd.TILES[r], r)[2])


def test_prepared_filters_are_g_w_g_transposed():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((13, 3, 5, 5)).astype(np.float32)
    filters = winograd.prepare(w)
    _, g, _ = winograd.transforms(2, 5)
    expected = np.einsum("ia,kcab,jb->ijkc", g, w.astype(np.float64), g).reshape(36, 13, 3)
    assert filters.u.shape == (36, 16, 3) and filters.m == 2 and filters.shape == w.shape
    np.testing.assert_allclose(filters.u[:, :13], expected, rtol=1e-6, atol=1e-6)
    assert not filters.u[:, 13:].any(), "the padding filters are zero"


def naive(x, w, b, padding, relu, pool):
    out = ref.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), (1, 1), padding)
    scale = ref.conv2d(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64), 0 * b.astype(np.float64),
                       (1, 1), padding)
    if relu:
        out = np.maximum(out, 0)
    if pool:
        out = ref.pool2d(out, "max", (pool, pool), (pool, pool), (0, 0))
        scale = ref.pool2d(scale, "max", (pool, pool), (pool, pool), (0, 0))
    return out, scale


# (N, C, H, W, K, r, padding, relu, pool): odd sides, padding, K not a multiple of the filter
# block, rows wider than a chunk, outputs smaller than a tile, a pool leaving rows over
CASES = [
    (1, 1, 12, 12, 3, 5, (0, 0), False, None),
    (2, 3, 17, 23, 5, 5, (1, 2), True, 2),
    (1, 16, 40, 150, 32, 5, (0, 0), True, 2),
    (1, 32, 30, 31, 20, 5, (0, 0), True, None),
    (3, 2, 5, 5, 1, 5, (0, 0), False, None),
    (1, 2, 6, 7, 9, 5, (0, 0), True, 2),
    (1, 4, 9, 9, 9, 3, (1, 1), False, None),
    (1, 4, 19, 21, 9, 3, (0, 0), True, 2),
    (2, 3, 20, 150, 17, 3, (2, 0), True, 4),
    (1, 5, 3, 3, 8, 3, (0, 0), False, None),
]


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_kernel_matches_the_naive_loop_within_its_error(case):
    n, c, h, w_, k, r, padding, relu, pool = case
    rng = np.random.default_rng(sum(case[:6]))
    x = rng.standard_normal((n, c, h, w_)).astype(np.float32)
    w = rng.standard_normal((k, c, r, r)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    out = L.conv2d_infer(x, w, b, padding=padding, relu=relu, pool=pool, algorithm="winograd")
    expected, scale = naive(x, w, b, padding, relu, pool)
    assert out.shape == expected.shape and out.dtype == np.float32
    assert np.all(np.abs(out - expected) <= ERROR * scale + 1e-30)
    prepared = L.conv2d_infer(x, w, b, padding=padding, relu=relu, pool=pool, algorithm="winograd",
                              winograd_filters=winograd.prepare(w))
    np.testing.assert_array_equal(prepared, out)


def test_a_nan_stays_in_its_tile_and_passes_relu_and_pool():
    x = np.ones((1, 1, 10, 10), np.float32)
    x[0, 0, 7, 7] = np.nan
    w = np.ones((2, 1, 5, 5), np.float32)
    b = np.array([0, -100], np.float32)
    for pool in (None, 2):
        wino = L.conv2d_infer(x, w, b, relu=True, pool=pool, algorithm="winograd")
        direct = L.conv2d_infer(x, w, b, relu=True, pool=pool, algorithm="im2col")
        # every output whose window holds the NaN is NaN; a Winograd tile is all NaN or none
        assert np.isnan(wino[np.isnan(direct)]).all()
        np.testing.assert_array_equal(wino[~np.isnan(wino)], direct[~np.isnan(wino)])
        assert np.isnan(wino).sum() <= np.isnan(direct).sum() + (0 if pool else 9 * 2)


def test_identical_bits_for_any_thread_count(same_bits_for_any_thread_count):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 8, 41, 170)).astype(np.float32)
    w = rng.standard_normal((20, 8, 5, 5)).astype(np.float32)
    b = rng.standard_normal(20).astype(np.float32)
    same_bits_for_any_thread_count(
        lambda: [L.conv2d_infer(x, w, b, relu=True, pool=p, algorithm="winograd") for p in (None, 2)])


@pytest.mark.parametrize("kwargs, message", [
    (dict(x=np.zeros((1, 2, 9, 9)), w=np.zeros((3, 2, 5, 5)), b=np.zeros(3)), "computes in float32, and x is float64"),
    (dict(stride=2), r"needs stride 1, not \(2, 2\)"),
    (dict(w=np.zeros((3, 2, 7, 7), np.float32)), "square filters of 3x3 or 5x5, not 7x7"),
    (dict(w=np.zeros((3, 2, 5, 3), np.float32)), "not 5x3"),
    (dict(pool=3), "2x2 output tiles are not whole 3x3 pool windows"),
    (dict(pool=(2, 1)), "not whole 2x1 pool windows"),
])
def test_layers_it_cannot_run_are_refused_by_name(kwargs, message):
    args = dict(x=np.zeros((1, 2, 9, 9), np.float32), w=np.zeros((3, 2, 5, 5), np.float32),
                b=np.zeros(3, np.float32))
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        L.conv2d_infer(**args, algorithm="winograd")


def test_unknown_algorithm_and_mismatched_filters_are_refused():
    x, w, b = np.zeros((1, 2, 9, 9), np.float32), np.zeros((3, 2, 5, 5), np.float32), np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="algorithm must be one of 'auto', 'im2col', 'winograd', 'direct', not 'fft'"):
        L.conv2d_infer(x, w, b, algorithm="fft")
    with pytest.raises(ValueError, match=r"prepared for filters \(4, 2, 5, 5\), not \(3, 2, 5, 5\)"):
        L.conv2d_infer(x, w, b, winograd_filters=winograd.prepare(np.zeros((4, 2, 5, 5), np.float32)))


def test_cost_model_takes_winograd_for_the_shipped_nets_large_layers_only():
    # conv2 and fc1 of the shipped net's FCN over a 1024x1024 image; conv1 has one channel
    assert choose((1, 16, 510, 510), (32, 16, 5, 5), (506, 506), pool=2, prepared=True) == "winograd"
    assert choose((1, 32, 253, 253), (128, 32, 5, 5), (249, 249), prepared=True) == "winograd"
    assert choose((1, 1, 1024, 1024), (16, 1, 5, 5), (1020, 1020), pool=2) == "direct"
    # a batch of lone 32x32 windows: fc1's output is one value per filter, a chunk of padding
    assert choose((64, 32, 5, 5), (128, 32, 5, 5), (1, 1)) == "im2col"
    costs = cost((1, 32, 253, 253), (128, 32, 5, 5), (249, 249))
    assert costs["winograd"] < costs["im2col"] < 4 * costs["winograd"]
    assert set(cost((1, 4, 20, 20), (8, 4, 5, 5), (16, 16), pool=2)) == {"im2col", "winograd", "direct"}
    assert set(cost((1, 4, 20, 20), (8, 4, 7, 7), (14, 14), pool=2)) == {"im2col", "direct"}


def test_the_fcn_prepares_its_filters_and_uses_them():
    import detector

    fcn = detector.load_model().to_fcn()
    assert set(fcn.winograd_filters) == {"conv1", "conv2", "fc1"}  # fc2 is 1x1
    for name, filters in fcn.winograd_filters.items():
        assert filters.shape == fcn.params[f"{name}.w"].shape


@pytest.mark.parametrize("algorithm, pool, r", [("winograd", None, 5), ("winograd", 2, 5), ("winograd", 2, 3),
                                                ("im2col", None, 5), ("im2col", 2, 3)])
def test_a_projection_equals_the_1x1_convolution_after(algorithm, pool, r, tile_path):
    # 71 or 73 outputs a row: 36 or 19 tiles, in chunks across the batch or in rows of chunks
    assert winograd.flat_pays(2, 75, 0, r, 24 - r, 76 - r, pool or 1) == (tile_path == "flat")
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 6, 23, 75)).astype(np.float32)
    w = rng.standard_normal((19, 6, r, r)).astype(np.float32)
    b = rng.standard_normal(19).astype(np.float32)
    w2 = rng.standard_normal((11, 19, 1, 1)).astype(np.float32)
    b2 = rng.standard_normal(11).astype(np.float32)
    first = L.conv2d_infer(x, w, b, relu=True, pool=pool, algorithm=algorithm)
    expected = ref.conv2d(first.astype(np.float64), w2.astype(np.float64), b2.astype(np.float64), (1, 1), (0, 0))
    out = L.conv2d_infer(x, w, b, relu=True, pool=pool, algorithm=algorithm, project=(w2, b2))
    assert out.shape == expected.shape
    scale = ref.conv2d(np.abs(first).astype(np.float64), np.abs(w2).astype(np.float64), 0 * b2.astype(np.float64),
                       (1, 1), (0, 0))
    assert np.all(np.abs(out - expected) <= 1e-6 * scale + 1e-6)


@pytest.mark.parametrize("project, error, message", [
    ((np.zeros((4, 3, 1, 1), np.float32),), TypeError, r"project must be a pair \(w2, b2\)"),
    ((np.zeros((4, 5, 1, 1), np.float32), np.zeros(4, np.float32)), ValueError,
     r"w2 must be \(K2, 3, 1, 1\): a 1x1 convolution of the 3 filters' outputs, not \(4, 5, 1, 1\)"),
    ((np.zeros((4, 3, 3, 3), np.float32), np.zeros(4, np.float32)), ValueError, r"not \(4, 3, 3, 3\)"),
    ((np.zeros((4, 3, 1, 1), np.float32), np.zeros(5, np.float32)), ValueError, r"one entry per filter of w2 \(4\)"),
    ((np.zeros((4, 3, 1, 1)), np.zeros(4)), TypeError, "must be float32 as x is, not float64"),
])
def test_bad_projections_are_refused_by_name(project, error, message):
    x, w, b = np.zeros((1, 2, 9, 9), np.float32), np.zeros((3, 2, 5, 5), np.float32), np.zeros(3, np.float32)
    with pytest.raises(error, match=message):
        L.conv2d_infer(x, w, b, project=project)


@pytest.fixture(params=["flat", "rows"])
def tile_path(request, monkeypatch):
    """Runs a test in chunks of tiles numbered across the batch, then with those chunks off:
    in rows of chunks, narrow images side by side as one wide image."""
    if request.param == "rows":
        monkeypatch.setattr(winograd, "flat_pays", lambda *args, **kwargs: False)
    return request.param


def test_narrow_images_run_in_flat_chunks_or_side_by_side_and_match_the_naive_loop(tile_path):
    # 14-pixel rows hold 5 tiles of a 32-tile chunk; side by side, 9 images fill 63; numbered
    # across the batch, the 9 * 6 * 6 tiles of 12 x 12 outputs fill 11 chunks
    tiles, slot = winograd.layout(9, 14, 1, 5, 12, 12, pool=2)
    assert slot == 16 and tiles < 9 * winograd.layout(1, 14, 1, 5, 12, 12, pool=2)[0]
    assert winograd.layout(1, 14, 1, 5, 12, 12)[1] is None  # one image: nothing to gain
    assert winograd.flat_tiles(9, 5, 12, 12, pool=2) == 11 * 32 < 0.9 * tiles
    assert winograd.flat_pays(9, 14, 1, 5, 12, 12, pool=2) == (tile_path == "flat")
    rng = np.random.default_rng(8)
    x = rng.standard_normal((9, 3, 13, 14)).astype(np.float32)
    w = rng.standard_normal((10, 3, 5, 5)).astype(np.float32)
    b = rng.standard_normal(10).astype(np.float32)
    for pool in (None, 2):
        out = L.conv2d_infer(x, w, b, padding=1, relu=True, pool=pool, algorithm="winograd")
        expected, scale = naive(x, w, b, (1, 1), True, pool)
        assert out.shape == expected.shape
        assert np.all(np.abs(out - expected) <= ERROR * scale + 1e-30)


def test_training_forward_takes_winograd_where_it_pays_and_matches_the_naive_loop():
    from detector.layers import _training_algorithm

    rng = np.random.default_rng(9)
    x = rng.standard_normal((64, 16, 14, 14)).astype(np.float32)  # the default net's conv2, batch 64
    w = rng.standard_normal((32, 16, 5, 5)).astype(np.float32)
    b = rng.standard_normal(32).astype(np.float32)
    assert _training_algorithm(x.dtype, x.shape, w.shape, (1, 1), 0, (10, 10)) == "winograd"
    assert _training_algorithm(x.dtype, (64, 1, 14, 14), (32, 1, 5, 5), (1, 1), 0, (10, 10)) != "winograd"
    out, _ = L.conv2d_forward(x, w, b)
    expected, scale = naive(x, w, b, (0, 0), False, None)
    assert np.all(np.abs(out - expected) <= ERROR * scale + 1e-30)


def test_training_forward_refuses_what_winograd_cannot_run():
    x, w, b = np.zeros((1, 2, 9, 9)), np.zeros((3, 2, 5, 5)), np.zeros(3)
    with pytest.raises(ValueError, match="cannot run this layer: it computes in float32, and x is float64"):
        L.conv2d_forward(x, w, b, algorithm="winograd")
    with pytest.raises(ValueError, match="the direct convolution cannot run this layer: it computes in float32"):
        L.conv2d_forward(x, w, b, algorithm="direct")
    with pytest.raises(ValueError, match="algorithm must be one of 'auto', 'im2col', 'winograd', 'direct', not 'fft'"):
        L.conv2d_forward(x, w, b, algorithm="fft")


@pytest.mark.parametrize("r, width", [(3, 13), (3, 14), (5, 14), (5, 9)])
def test_a_nan_in_one_image_of_a_narrow_batch_stays_in_it(r, width, tile_path):
    x = np.random.default_rng(10).standard_normal((6, 2, 12, width)).astype(np.float32)
    x[0, 0, :, -1] = np.nan  # the last column of the first image
    x[3, 1, 5, 0] = np.inf  # the first column of the fourth
    w = np.ones((3, 2, r, r), np.float32)
    assert winograd.layout(6, width, 0, r, 12 - r + 1, width - r + 1)[1] is not None
    out = L.conv2d_infer(x, w, np.zeros(3, np.float32), algorithm="winograd")
    bad = ~np.isfinite(out).reshape(6, -1).all(axis=1)
    assert bad.tolist() == [True, False, False, True, False, False]


# -- training backward: dw by F(r x r, m x m) over the forward's tiles, dx as a correlation --

# The gradients' float32 errors are bounded by ERROR of a tile's scale rather than of each
# entry's own, since a tile mixes all its inputs: for dx, the largest sum of |w| |dout| over
# the windows of the entries up to m - 1 away (an entry whose window holds one product may
# share a tile with far larger ones: 6e-4 of its own scale was measured); for dw, the largest
# sum of |dout| |x| over the products of an entry of the same filter and channel. Measured up
# to 2.1e-6 of those, over 30 seeds of GRADIENT_CASES.

def reference_gradients(x, w, dout, padding):
    """dx, dw, db in float64 by the loop over output positions, and the tile scales of dx and
    dw their float32 errors are bounded by (see above)."""
    x64, w64, g64 = (a.astype(np.float64) for a in (x, w, dout))
    exact = ref.conv2d_backward(x64, w64, g64, (1, 1), padding)
    dx_scale = ref.conv2d_backward(np.zeros_like(x64), np.abs(w64), np.abs(g64), (1, 1), padding)[0]
    m = winograd.TILES[w.shape[2]]
    padded = np.pad(dx_scale, ((0, 0), (0, 0), (m - 1, m - 1), (m - 1, m - 1)))
    h, width = x.shape[2:]
    dx_scale = np.max([padded[:, :, i:i + h, j:j + width] for i in range(2 * m - 1) for j in range(2 * m - 1)], axis=0)
    dw_scale = ref.conv2d_backward(np.abs(x64), w64, np.abs(g64), (1, 1), padding)[1]
    return exact, (dx_scale, dw_scale.max(axis=(2, 3), keepdims=True))


# (N, C, H, W, K, r, padding): odd sides, padding, K and C not multiples of the slots'
# blocks, narrow images side by side, rows wider than a chunk, outputs smaller than a tile
GRADIENT_CASES = [
    (1, 1, 12, 12, 3, 5, (0, 0)),
    (2, 3, 17, 23, 5, 5, (1, 2)),
    (9, 16, 14, 14, 32, 5, (0, 0)),
    (1, 5, 9, 80, 17, 5, (2, 2)),
    (3, 2, 5, 5, 1, 5, (0, 0)),
    (2, 4, 9, 11, 9, 3, (1, 1)),
    (5, 16, 12, 12, 32, 3, (1, 1)),
    (1, 3, 20, 150, 17, 3, (2, 0)),
    (2, 18, 3, 3, 8, 3, (0, 0)),
]


def gradient_case(case, seed):
    """x, w, dout of a case (N, C, H, W, K, r, padding), drawn from its own seed."""
    n, c, h, width, k, r, padding = case
    rng = np.random.default_rng(sum(case[:6]) + seed)
    x = rng.standard_normal((n, c, h, width)).astype(np.float32)
    w = rng.standard_normal((k, c, r, r)).astype(np.float32)
    oh, ow = h + 2 * padding[0] - r + 1, width + 2 * padding[1] - r + 1
    return x, w, rng.standard_normal((n, k, oh, ow)).astype(np.float32)


@pytest.mark.parametrize("case", GRADIENT_CASES)
def test_weight_gradient_matches_the_reference_within_its_error(case):
    x, w, dout = gradient_case(case, 0)
    r, padding = case[5:]
    (_, dw, db), (_, scale) = reference_gradients(x, w, dout, padding)
    got, got_db = winograd.weight_gradient(x, dout, r, padding)
    assert got.dtype == np.float32 and got.shape == w.shape
    assert np.all(np.abs(got - dw) <= ERROR * scale)
    # the bias gradient, summed in float32 within a chunk's tiles and in float64 over them
    np.testing.assert_allclose(got_db, db, rtol=1e-5, atol=1e-5 * np.abs(dout).sum(axis=(0, 2, 3)).max())


@pytest.mark.parametrize("case", GRADIENT_CASES)
def test_input_gradient_by_winograd_matches_the_reference_within_its_error(case):
    x, w, dout = gradient_case(case, 1)
    (h, width), padding = x.shape[2:], case[6]
    (dx, _, _), (scale, _) = reference_gradients(x, w, dout, padding)
    got = L._winograd_input_gradient(dout, w, padding, (h, width))
    assert got.dtype == np.float32 and got.shape == x.shape
    assert np.all(np.abs(got - dx) <= ERROR * scale + 1e-30)


# and for the fused backward: padding past r - 1 (patches wholly outside the image), rows
# wider than a piece, a batch whose tiles fill no whole chunk
FUSED_CASES = GRADIENT_CASES + [(3, 4, 6, 6, 3, 5, (4, 4)), (2, 3, 7, 61, 5, 3, (1, 3)), (11, 2, 9, 7, 3, 5, (2, 1))]


@pytest.mark.parametrize("case", FUSED_CASES)
def test_fused_backward_matches_the_reference_within_its_error(case):
    x, w, dout = gradient_case(case, 2)
    k, padding = w.shape[0], case[6]
    (rdx, rdw, rdb), (sdx, sdw) = reference_gradients(x, w, dout, padding)
    dx, dw, db = winograd.fused_backward(x, dout, w, padding)
    assert dx.dtype == dw.dtype == db.dtype == np.float32
    assert dx.shape == x.shape and dw.shape == w.shape and db.shape == (k,)
    assert np.all(np.abs(dx - rdx) <= ERROR * sdx + 1e-30)
    assert np.all(np.abs(dw - rdw) <= ERROR * sdw)
    np.testing.assert_allclose(db, rdb, rtol=1e-5, atol=1e-5 * np.abs(dout).sum(axis=(0, 2, 3)).max())
    none, dw_only, db_only = winograd.fused_backward(x, dout, w, padding, input_grad=False)
    assert none is None
    np.testing.assert_array_equal(dw_only, dw)
    np.testing.assert_array_equal(db_only, db)


@pytest.mark.parametrize("shape, k, r, pad", [((64, 16, 14, 14), 32, 5, 0), ((8, 16, 32, 32), 32, 3, 1),
                                              ((1, 16, 130, 300), 32, 5, 0)])
def test_training_backward_takes_winograd_where_it_pays_and_matches_the_reference(shape, k, r, pad):
    from detector.layers import _training_algorithm, _winograd_input_gradient_pays

    rng = np.random.default_rng(r + pad)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((k, shape[1], r, r)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    out, cache = L.conv2d_forward(x, w, b, padding=pad)
    out_size = out.shape[2:]
    assert _training_algorithm(x.dtype, x.shape, w.shape, (1, 1), pad, out_size) == "winograd"
    assert _winograd_input_gradient_pays(x.dtype, x.shape, w.shape, (1, 1), (pad, pad), out_size)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    dx, dw, db = L.conv2d_backward(dout, cache)
    if shape[0] >= kernel.BACKWARD_GROUPS:  # a batch: the fused backward, bit for bit
        for got, fused in zip((dx, dw, db), winograd.fused_backward(x, dout, w, (pad, pad))):
            np.testing.assert_array_equal(got, fused)
    (rdx, rdw, rdb), (sdx, sdw) = reference_gradients(x, w, dout, (pad, pad))
    assert np.all(np.abs(dw - rdw) <= ERROR * sdw)
    assert np.all(np.abs(dx - rdx) <= ERROR * sdx + 1e-30)
    np.testing.assert_allclose(db, rdb, rtol=1e-5, atol=1e-3)
    _, dw_only, db_only = L.conv2d_backward(dout, cache, input_grad=False)
    np.testing.assert_array_equal(dw_only, dw)
    np.testing.assert_array_equal(db_only, db)


@pytest.mark.parametrize("change, error, message", [
    (dict(w=np.zeros((4, 3, 5, 3), np.float32)), ValueError, "square filters of 3x3 or 5x5, not 5x3"),
    (dict(w=np.zeros((4, 3, 7, 7), np.float32)), ValueError, "not 7x7"),
    (dict(w=np.zeros((4, 1, 3, 3), np.float32)), ValueError, "w has 1 input channels and x has 3"),
    (dict(padding=(-1, -1)), ValueError, "padding must be two numbers of at least 0"),
    (dict(dout=np.zeros((8, 4, 7, 6), np.float32)), ValueError, r"dout must have the outputs' shape \(8, 4, 7, 7\)"),
    (dict(x=np.zeros((8, 3, 9, 9))), TypeError, "x must be a 4-d float32 array, not float64"),
    (dict(dout=[0.0]), TypeError, "dout must be a 4-d float32 array, not list"),
    (dict(x=np.zeros((8, 3, 1, 9), np.float32), padding=(0, 0)), ValueError, "3x3 filters do not fit the 1x9 images"),
])
def test_fused_backward_refuses_what_it_cannot_take_by_name(change, error, message):
    args = dict(x=np.zeros((8, 3, 9, 9), np.float32), dout=np.zeros((8, 4, 7, 7), np.float32),
                w=np.zeros((4, 3, 3, 3), np.float32), padding=(0, 0))
    with pytest.raises(error, match=message):
        winograd.fused_backward(**{**args, **change})


def test_the_flat_kernels_refuse_shapes_they_would_read_or_write_past():
    x, w = np.zeros((4, 3, 8, 8), np.float32), np.zeros((5, 3, 5, 5), np.float32)
    f, b = winograd.prepare(w), np.zeros(5, np.float32)
    at = winograd.output_matrix(f.m, 5)
    with pytest.raises(ValueError, match=r"out must have shape \(4, 5, 4, 4\)"):
        kernel.flat_infer(x, f.u, b, at, np.zeros((4, 4, 4, 4), np.float32), 0, 0, False, 1, 1)
    with pytest.raises(ValueError, match="a 4x4 pool does not tile the 2x2 output tiles"):
        kernel.flat_infer(x, f.u, b, at, np.zeros((4, 5, 1, 1), np.float32), 0, 0, False, 4, 1)
    with pytest.raises(ValueError, match=r"p must be \(K2 padded to 8, 5\) for 3 outputs, not \(8, 4\)"):
        kernel.flat_infer(x, f.u, b, at, np.zeros((4, 3, 4, 4), np.float32), 0, 0, False, 1, 1,
                          p=np.zeros((8, 4), np.float32), p_bias=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="a projection takes both p and p_bias"):
        kernel.flat_infer(x, f.u, b, at, np.zeros((4, 3, 4, 4), np.float32), 0, 0, False, 1, 1,
                          p=np.zeros((8, 5), np.float32))
    with pytest.raises(ValueError, match="u must be"):
        kernel.flat_infer(x, f.u[:, :, :2].copy(), b, at, np.zeros((4, 5, 4, 4), np.float32), 0, 0, False, 1, 1)
    dout, gt = np.zeros((4, 5, 4, 4), np.float32), np.ascontiguousarray(winograd.transforms(2, 5)[1].T)
    slots = np.zeros((2, 36, 16, 16), np.float32)
    dw, db = np.zeros((5, 3, 5, 5), np.float32), np.zeros(5, np.float32)
    ut = np.zeros((36, 8, 5), np.float32)
    with pytest.raises(ValueError, match="dx must have x's shape"):
        kernel.fused_backward(x, dout, ut, gt, slots, np.zeros((4, 3, 8, 7), np.float32), dw, db, 0, 0, 1)
    with pytest.raises(ValueError, match="do not hold 5 filters of 3 channels"):
        kernel.fused_backward(x, dout, ut, gt, np.zeros((2, 36, 8, 16), np.float32), None, dw, db, 0, 0, 1)
    with pytest.raises(ValueError, match=r"ut must have shape \(36, 8, 5\)"):
        kernel.fused_backward(x, dout, np.zeros((36, 4, 5), np.float32), gt, slots, None, dw, db, 0, 0, 1)


def test_fused_backward_holds_its_sums_in_fewer_groups_for_large_layers():
    assert winograd.backward_groups(32, 16) == kernel.BACKWARD_GROUPS
    slot_bytes = lambda k, c: 36 * k * c * 4  # noqa: E731
    assert winograd.backward_groups(512, 512) * slot_bytes(512, 512) <= 80 * 2 ** 20
    assert winograd.backward_groups(4096, 4096) == 2  # at least two, to share among threads
    # and the gradients do not change but by the order of the sums
    rng = np.random.default_rng(12)
    x = rng.standard_normal((9, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    dout = rng.standard_normal((9, 4, 6, 6)).astype(np.float32)
    many = winograd.fused_backward(x, dout, w, (0, 0))
    import unittest.mock
    with unittest.mock.patch.object(winograd, "backward_groups", lambda k, c: 2):
        two = winograd.fused_backward(x, dout, w, (0, 0))
    np.testing.assert_array_equal(two[0], many[0])  # dx: added in the same order
    (_, rdw, _), (_, sdw) = reference_gradients(x, w, dout, (0, 0))
    assert np.all(np.abs(two[1] - rdw) <= ERROR * sdw)


def test_backward_gives_identical_bits_for_any_thread_count(same_bits_for_any_thread_count):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((9, 8, 14, 14)).astype(np.float32)
    w = rng.standard_normal((20, 8, 5, 5)).astype(np.float32)
    big = rng.standard_normal((1, 4, 70, 130)).astype(np.float32)
    w3 = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    dout = rng.standard_normal((9, 20, 10, 10)).astype(np.float32)
    dout3 = rng.standard_normal((1, 6, 70, 130)).astype(np.float32)
    dout_padded = rng.standard_normal((3, 20, 14, 12)).astype(np.float32)
    same_bits_for_any_thread_count(lambda: [
        *winograd.weight_gradient(x, dout, 5, (0, 0)), L._winograd_input_gradient(dout, w, (0, 0), (14, 14)),
        *winograd.weight_gradient(big, dout3, 3, (1, 1)), L._winograd_input_gradient(dout3, w3, (1, 1), (70, 130)),
        *winograd.fused_backward(x, dout, w, (0, 0)), *winograd.fused_backward(x[:3], dout_padded, w, (2, 1)),
        *winograd.fused_backward(big, dout3, w3, (1, 1))])


def test_weight_gradient_transforms_are_those_of_the_module():
    # F(r, m) over the same six points: the gradient's B^T is the forward's, which the kernel applies
    for r, m in ((5, 2), (3, 4)):
        np.testing.assert_array_equal(winograd.transforms(r, m)[2], winograd.transforms(m, r)[2])
        np.testing.assert_array_equal(winograd.transforms(r, m)[2], kernel.input_matrix())
