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


# -- the inference kernel: bias, ReLU and a tiling max-pool in the output stage --------------

INFER = conv_configs(300, seed=7, max_extent=14)
POOLS = [None, 1, 2, (2, 1), 3, (1, 3)]


def naive_infer(x, w, b, cfg, relu, pool):
    """conv, then ReLU, then a max-pool of stride = size: the naive loops, in float64."""
    out = ref.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), cfg.stride, cfg.padding)
    if relu:
        out = np.maximum(out, 0)
    if pool is not None:
        size = pool if isinstance(pool, tuple) else (pool, pool)
        out = ref.pool2d(out, "max", size, size, (0, 0))
    return out


def fitting_pool(cfg, i):
    """A pool from POOLS that fits in the convolution's output (None when none does)."""
    oh = (cfg.h + 2 * cfg.padding[0] - cfg.size[0]) // cfg.stride[0] + 1
    ow = (cfg.w + 2 * cfg.padding[1] - cfg.size[1]) // cfg.stride[1] + 1
    pool = POOLS[i % len(POOLS)]
    size = (1, 1) if pool is None else pool if isinstance(pool, tuple) else (pool, pool)
    return pool if size[0] <= oh and size[1] <= ow else None


@pytest.mark.parametrize("i, cfg", list(enumerate(INFER)), ids=repr)
def test_inference_matches_naive_loop_and_the_training_layers(i, cfg):
    x, w, b = cfg.arrays(seed=i)
    relu, pool = i % 2 == 0, fitting_pool(cfg, i)
    out = L.conv2d_infer(x, w, b, stride=cfg.stride, padding=cfg.padding, relu=relu, pool=pool,
                         algorithm="im2col")  # the Winograd kernel: tests/test_winograd.py
    expected = naive_infer(x, w, b, cfg, relu, pool)
    assert out.dtype == x.dtype and out.shape == expected.shape
    np.testing.assert_allclose(out, expected, **tolerance(cfg.dtype))
    trained, _ = L.conv2d_forward(x, w, b, stride=cfg.stride, padding=cfg.padding)
    if relu:
        trained, _ = L.relu_forward(trained)
    if pool is not None:
        trained, _ = L.max_pool2d_forward(trained, pool)
    np.testing.assert_allclose(out, trained, **tolerance(cfg.dtype))


# Shapes cut into several blocks, both by the unpacked-GEMM rule (small) and by the columns'
# cache budget (the first: 64 filters x 400 inputs x 50 columns is too large to go unpacked).
INFER_MULTI_BLOCK = [
    (Conv(1, 16, 64, 90, 54, (5, 5), (1, 1), (0, 0), "float32"), 2),
    (Conv(1, 16, 64, 91, 55, (5, 5), (1, 1), (0, 0), "float64"), (3, 2)),
    (Conv(2, 4, 3, 31, 700, (3, 3), (1, 1), (1, 1), "float64"), None),
    (Conv(2, 8, 4, 41, 500, (5, 3), (2, 1), (2, 0), "float32"), 2),
]


@pytest.mark.parametrize("cfg, pool", INFER_MULTI_BLOCK, ids=repr)
def test_inference_in_row_blocks_matches_naive_loop(cfg, pool):
    oh = (cfg.h + 2 * cfg.padding[0] - cfg.size[0]) // cfg.stride[0] + 1
    ow = (cfg.w + 2 * cfg.padding[1] - cfg.size[1]) // cfg.stride[1] + 1
    qh, qw = (1, 1) if pool is None else pool if isinstance(pool, tuple) else (pool, pool)
    blocks = conv_kernels.infer_blocks_per_image(cfg.k, cfg.c * cfg.size[0] * cfg.size[1], oh // qh, qh,
                                                 ow // qw * qw, np.dtype(cfg.dtype).itemsize)
    assert blocks >= 3, "the shape must be cut into several blocks to test the split"
    x, w, b = cfg.arrays()
    for relu in (False, True):
        out = L.conv2d_infer(x, w, b, stride=cfg.stride, padding=cfg.padding, relu=relu, pool=pool,
                             algorithm="im2col")
        np.testing.assert_allclose(out, naive_infer(x, w, b, cfg, relu, pool), **tolerance(cfg.dtype))


def test_inference_relu_passes_nan_and_zeroes_negatives():
    x = np.array([[[[1.0, np.nan, -3.0, 2.0]]]])
    w = np.ones((2, 1, 1, 1))
    b = np.array([0.0, -1.5])
    out = L.conv2d_infer(x, w, b, relu=True)
    np.testing.assert_array_equal(out, [[[[1.0, np.nan, 0.0, 2.0]], [[0.0, np.nan, 0.0, 0.5]]]])
    pooled = L.conv2d_infer(x, w, b, relu=True, pool=(1, 2))
    np.testing.assert_array_equal(pooled, [[[[np.nan, 2.0]], [[np.nan, 0.5]]]])


def test_inference_pool_drops_the_rows_and_columns_left_over():
    rng = np.random.default_rng(8)
    x, w, b = rng.standard_normal((1, 2, 9, 8)), rng.standard_normal((3, 2, 2, 2)), rng.standard_normal(3)
    out = L.conv2d_infer(x, w, b, pool=3)  # the 8x7 output pools to 2x2
    full, _ = L.conv2d_forward(x, w, b)
    assert out.shape == (1, 3, 2, 2)
    np.testing.assert_allclose(out, full[:, :, :6, :6].reshape(1, 3, 2, 3, 2, 3).max(axis=(3, 5)), rtol=1e-12)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(pool=0), ValueError, "pool must be at least 1"),
    (dict(pool=2.0), TypeError, "pool must be an int or a pair of ints"),
    (dict(pool=7), ValueError, "output height after the pool would be 0"),
    (dict(pool=(1, 9)), ValueError, "output width after the pool would be 0"),
    (dict(w=np.zeros((4, 2, 3, 3), np.float32)), ValueError, "x has 3 channels but w expects 2"),
    (dict(b=np.zeros(5, np.float32)), ValueError, r"w has 4 filters, b has shape \(5,\)"),
    (dict(x=np.zeros((2, 3, 2, 8), np.float32)), ValueError, "output height would be 0"),
    (dict(w=np.zeros((4, 3, 3, 3))), TypeError, "w is float64 but x is float32"),
])
def test_inference_checks_its_arguments_as_training_does(kwargs, error, message):
    args = dict(x=np.zeros((2, 3, 8, 8), np.float32), w=np.zeros((4, 3, 3, 3), np.float32),
                b=np.zeros(4, np.float32))
    pool = kwargs.pop("pool", None)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        L.conv2d_infer(**args, pool=pool)
    if pool is None:
        with pytest.raises(error, match=message):
            L.conv2d_forward(**args)


@pytest.mark.parametrize("algorithm, stride", [("im2col", (1, 2)), ("winograd", 1), ("direct", 1)])
def test_inference_matches_torch_conv_relu_pool(algorithm, stride):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 16, 37, 41)).astype(np.float32)
    w = rng.standard_normal((32, 16, 5, 5)).astype(np.float32) * 0.1
    b = rng.standard_normal(32).astype(np.float32)
    tx, tw, tb = (torch.from_numpy(a) for a in (x, w, b))
    theirs = F.max_pool2d(F.relu(F.conv2d(tx, tw, tb, stride=stride, padding=1)), 2).numpy()
    ours = L.conv2d_infer(x, w, b, stride=stride, padding=1, relu=True, pool=2, algorithm=algorithm)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


# -- training's own float32 GEMM, on each instruction set the CPU has ------------------------

ISA_CASES = conv_configs(60, seed=21, max_extent=20, dtypes=("float32",)) + [
    # more filters, inputs and columns than one tile or panel holds, and edges in every
    # direction: 37 filters, 3 x 7 x 7 = 147 inputs (> SGEMM_KC), 51 columns
    Conv(2, 3, 37, 57, 57, (7, 7), (1, 1), (0, 0), "float32"),
    Conv(3, 16, 32, 14, 14, (5, 5), (1, 1), (0, 0), "float32"),
    Conv(2, 1, 16, 32, 32, (5, 5), (1, 1), (0, 0), "float32"),
]


@pytest.fixture(params=[0, 1, 2], ids=["baseline", "avx2", "avx512"])
def instruction_set(request):
    """Training's float32 GEMM on one instruction set (skipped when the CPU lacks it)."""
    if conv_kernels.sgemm_instruction_set(request.param) != request.param:
        conv_kernels.sgemm_instruction_set(-1)
        pytest.skip("the CPU lacks this instruction set")
    yield request.param
    conv_kernels.sgemm_instruction_set(-1)


@pytest.mark.parametrize("i, cfg", list(enumerate(ISA_CASES)), ids=repr)
def test_every_instruction_set_matches_naive_loops(instruction_set, i, cfg):
    x, w, b = cfg.arrays(seed=i)
    out, cache = L.conv2d_forward(x, w, b, stride=cfg.stride, padding=cfg.padding, algorithm="im2col")
    g = np.random.default_rng(i).standard_normal(out.shape).astype(cfg.dtype)
    x64, w64, g64 = (a.astype(np.float64) for a in (x, w, g))
    np.testing.assert_allclose(out, ref.conv2d(x64, w64, b.astype(np.float64), cfg.stride, cfg.padding),
                               **tolerance(cfg.dtype))
    for got, want in zip(L.conv2d_backward(g, cache), ref.conv2d_backward(x64, w64, g64, cfg.stride, cfg.padding)):
        scale = np.abs(want).max() or 1.0  # an all-zero gradient must come out all zero
        np.testing.assert_allclose(got / scale, want / scale, **tolerance(cfg.dtype))


@pytest.mark.parametrize("cfg", [*ISA_CASES[-3:], *MULTI_BLOCK, *GRADIENT[:5]], ids=repr)
def test_backward_without_input_gradient_gives_the_same_weight_gradients(cfg):
    x, w, b = cfg.arrays()
    out, cache = L.conv2d_forward(x, w, b, stride=cfg.stride, padding=cfg.padding)
    g = np.random.default_rng(5).standard_normal(out.shape).astype(cfg.dtype)
    dx, dw, db = L.conv2d_backward(g, cache)
    none, dw_only, db_only = L.conv2d_backward(g, cache, input_grad=False)
    assert none is None and dx is not None
    # the same products in the same order: the same bits
    np.testing.assert_array_equal(dw_only, dw)
    np.testing.assert_array_equal(db_only, db)
