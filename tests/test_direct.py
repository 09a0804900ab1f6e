"""The direct convolution kernel against the naive loop, for any thread count; and every
instruction-set copy of the SIMD kernels (direct and Winograd) against the naive loop."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from detector import layers as L
from detector import winograd

import reference as ref

# (N, C, H, W, K, FH, FW, padding, relu, pool): filters of any shape, rows wider than a
# register block and narrower, K not a multiple of the filter block, odd outputs under a pool,
# narrow unpooled rows (in pairs: an even and an odd number of them, one vector and two wide)
CASES = [
    (3, 1, 32, 32, 16, 5, 5, (0, 0), False, None),
    (2, 2, 17, 12, 5, 5, 5, (1, 0), True, None),
    (1, 3, 8, 7, 9, 3, 3, (0, 0), False, None),
    (1, 1, 20, 37, 16, 5, 5, (0, 0), True, 2),
    (2, 3, 33, 70, 7, 3, 3, (1, 2), False, None),
    (1, 2, 9, 9, 5, 5, 5, (2, 2), True, 2),
    (3, 1, 5, 140, 3, 4, 2, (0, 1), True, None),
    (1, 4, 6, 6, 1, 1, 1, (0, 0), False, 2),
    (1, 3, 41, 203, 17, 7, 7, (3, 3), True, 2),
]


def naive(x, w, b, padding, relu, pool):
    out = ref.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), (1, 1), padding)
    if relu:
        out = np.maximum(out, 0)
    if pool:
        out = ref.pool2d(out, "max", (pool, pool), (pool, pool), (0, 0))
    return out


def arrays(case):
    n, c, h, w_, k, fh, fw = case[:7]
    rng = np.random.default_rng(sum(case[:7]))
    return (rng.standard_normal((n, c, h, w_)).astype(np.float32),
            rng.standard_normal((k, c, fh, fw)).astype(np.float32),
            rng.standard_normal(k).astype(np.float32))


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_direct_matches_the_naive_loop(case):
    x, w, b = arrays(case)
    padding, relu, pool = case[7:]
    out = L.conv2d_infer(x, w, b, padding=padding, relu=relu, pool=pool, algorithm="direct")
    np.testing.assert_allclose(out, naive(x, w, b, padding, relu, pool), rtol=1e-5, atol=1e-5)


def test_direct_gives_identical_bits_for_any_thread_count(same_bits_for_any_thread_count):
    x, w, b = arrays(CASES[-1])
    same_bits_for_any_thread_count(
        lambda: [L.conv2d_infer(x, w, b, padding=3, relu=True, pool=2, algorithm="direct")])


def test_direct_passes_nan_through_relu_and_pool():
    x = np.zeros((1, 1, 8, 8), np.float32)
    x[0, 0, 3, 4] = np.nan
    w, b = np.ones((2, 1, 1, 1), np.float32), np.array([-1, 1], np.float32)
    for pool in (None, 2):
        direct = L.conv2d_infer(x, w, b, relu=True, pool=pool, algorithm="direct")
        np.testing.assert_array_equal(direct, L.conv2d_infer(x, w, b, relu=True, pool=pool, algorithm="im2col"))


@pytest.mark.parametrize("kwargs, message", [
    (dict(pool=3), "pools 2x2 windows or none, not 3x3"),
    (dict(stride=2), r"needs stride 1, not \(2, 2\)"),
    (dict(x=np.zeros((1, 2, 9, 9)), w=np.zeros((3, 2, 5, 5)), b=np.zeros(3)), "computes in float32"),
])
def test_layers_the_direct_kernel_cannot_run_are_refused_by_name(kwargs, message):
    args = dict(x=np.zeros((1, 2, 9, 9), np.float32), w=np.zeros((3, 2, 5, 5), np.float32), b=np.zeros(3, np.float32))
    args.update(kwargs)
    with pytest.raises(ValueError, match="the direct convolution cannot run this layer: it.* " + message):
        L.conv2d_infer(**args, algorithm="direct")


# Run in a fresh interpreter, which picks the copies at import under DETECTOR_SIMD.
COPY_CHECK = """
import json, sys
import numpy as np
from detector import layers as L
from detector import winograd as fast
from detector._ext import direct, winograd
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 3, 29, 75)).astype(np.float32)
outs = {}
narrow = x[:, :, :, :7].copy()  # rows that go in pairs on every copy
outs["direct narrow"] = L.conv2d_infer(narrow, np.ones((4, 3, 3, 3), np.float32), np.zeros(4, np.float32),
                                       algorithm="direct").tolist()
for r in (3, 5):
    w = rng.standard_normal((11, 3, r, r)).astype(np.float32)
    b = rng.standard_normal(11).astype(np.float32)
    for algorithm in ("winograd", "direct"):
        for pool in (None, 2):
            outs[f"{algorithm} {r} {pool}"] = L.conv2d_infer(x, w, b, padding=1, relu=True, pool=pool,
                                                             algorithm=algorithm).tolist()
    # the 1x1 convolution in the output stage, in chunks across the batch
    w2 = np.linspace(-1, 1, 7 * 11, dtype=np.float32).reshape(7, 11, 1, 1)
    outs[f"projection {r}"] = L.conv2d_infer(x, w, b, padding=1, relu=True, algorithm="winograd",
                                             project=(w2, np.linspace(0, 1, 7, dtype=np.float32))).tolist()
    dout = rng.standard_normal((2, 11, 31 - r, 77 - r)).astype(np.float32)
    outs[f"weight gradient {r}"] = fast.weight_gradient(x, dout, r, (1, 1))[0].tolist()
    # narrow images, in chunks of tiles numbered across the batch (pieces of rows in masked
    # vectors), and side by side (read and written in place, masked vectors)
    small = x[:, :, :13, :13].repeat(3, axis=0)
    outs[f"flat {r}"] = L.conv2d_infer(small, w, b, padding=1, pool=2, algorithm="winograd").tolist()
    flat_pays, fast.flat_pays = fast.flat_pays, lambda *args: False
    outs[f"side by side {r}"] = L.conv2d_infer(small, w, b, padding=1, algorithm="winograd").tolist()
    fast.flat_pays = flat_pays
    small_dout = rng.standard_normal((6, 11, 15 - r, 15 - r)).astype(np.float32)
    outs[f"side by side gradient {r}"] = fast.weight_gradient(small, small_dout, r, (1, 1))[0].tolist()
    # the fused backward: tiles numbered across the batch, pieces of rows in masked vectors
    fused_dout = rng.standard_normal((6, 11, 16 - r, 16 - r)).astype(np.float32)
    outs[f"fused backward {r}"] = [a.tolist() for a in fast.fused_backward(small, fused_dout, w, (1, 1))]
print(json.dumps({"isa": [direct.instruction_set(), winograd.instruction_set()], "outs": outs}))
"""


@pytest.mark.parametrize("isa", ["baseline", "avx2", None])
def test_every_instruction_set_copy_matches_the_naive_loop(isa):
    env = {k: v for k, v in os.environ.items() if k != "DETECTOR_SIMD"}
    if isa:
        env["DETECTOR_SIMD"] = isa
    run = subprocess.run([sys.executable, "-c", COPY_CHECK], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    result = json.loads(run.stdout)
    if isa == "baseline":
        assert result["isa"] == ["baseline", "baseline"]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 29, 75)).astype(np.float32)
    narrow = naive(x[:, :, :, :7], np.ones((4, 3, 3, 3), np.float32), np.zeros(4, np.float32), (0, 0), False, None)
    np.testing.assert_allclose(result["outs"]["direct narrow"], narrow, rtol=1e-5, atol=1e-4)
    for r in (3, 5):
        w = rng.standard_normal((11, 3, r, r)).astype(np.float32)
        b = rng.standard_normal(11).astype(np.float32)
        for algorithm in ("winograd", "direct"):
            for pool in (None, 2):
                out = np.array(result["outs"][f"{algorithm} {r} {pool}"], np.float32)
                np.testing.assert_allclose(out, naive(x, w, b, (1, 1), True, pool), rtol=1e-4, atol=1e-4)
        w2 = np.linspace(-1, 1, 7 * 11).reshape(7, 11, 1, 1)
        projected = ref.conv2d(naive(x, w, b, (1, 1), True, None).astype(np.float64), w2, np.linspace(0, 1, 7),
                               (1, 1), (0, 0))
        np.testing.assert_allclose(result["outs"][f"projection {r}"], projected, rtol=1e-4, atol=1e-3)
        dout = rng.standard_normal((2, 11, 31 - r, 77 - r)).astype(np.float32)
        _, dw, _ = ref.conv2d_backward(x.astype(np.float64), w.astype(np.float64), dout.astype(np.float64),
                                       (1, 1), (1, 1))
        np.testing.assert_allclose(result["outs"][f"weight gradient {r}"], dw, rtol=1e-4, atol=1e-3)
        small = x[:, :, :13, :13].repeat(3, axis=0)
        assert winograd.layout(6, 13, 1, r, 13, 13)[1] is not None, "the narrow images run side by side"
        assert winograd.flat_pays(6, 13, 1, r, 16 - r, 16 - r, 2), "or in chunks across the batch"
        np.testing.assert_allclose(result["outs"][f"flat {r}"], naive(small, w, b, (1, 1), False, 2),
                                   rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(result["outs"][f"side by side {r}"], naive(small, w, b, (1, 1), False, None),
                                   rtol=1e-4, atol=1e-4)
        small_dout = rng.standard_normal((6, 11, 15 - r, 15 - r)).astype(np.float32)
        _, dw, _ = ref.conv2d_backward(small.astype(np.float64), w.astype(np.float64),
                                       small_dout.astype(np.float64), (1, 1), (1, 1))
        np.testing.assert_allclose(result["outs"][f"side by side gradient {r}"], dw, rtol=1e-4, atol=1e-3)
        fused_dout = rng.standard_normal((6, 11, 16 - r, 16 - r)).astype(np.float32)
        dx, dw, db = ref.conv2d_backward(small.astype(np.float64), w.astype(np.float64),
                                         fused_dout.astype(np.float64), (1, 1), (1, 1))
        for got, want in zip(result["outs"][f"fused backward {r}"], (dx, dw, db)):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
