"""Results do not depend on the number of threads, and concurrent callers are safe."""
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from detector import layers as L


def run_all_layers(seed=0):
    """Every kernel, forward and backward, on shapes cut into several chunks."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, 6, 40, 260)).astype(np.float32)
    w = rng.standard_normal((8, 6, 5, 5)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    results = []
    out, cache = L.conv2d_forward(x, w, b, padding=(2, 1))
    results += [out, *L.conv2d_backward(np.sin(out), cache)]
    for kind in ("max", "avg", "l2"):
        pooled, cache = getattr(L, f"{kind}_pool2d_forward")(out, 3, stride=2, padding=1)
        results += [pooled, getattr(L, f"{kind}_pool2d_backward")(np.cos(pooled), cache)]
    flat = out.reshape(-1)[:150 * 500].reshape(150, 500)  # 150 rows: three row chunks
    fc, cache = L.linear_forward(flat, rng.standard_normal((130, 500)).astype(np.float32),
                                 np.zeros(130, np.float32))
    results += [fc, *L.linear_backward(np.tanh(fc), cache)]
    relu, cache = L.relu_forward(fc)
    results += [relu, L.relu_backward(fc, cache)]
    loss, dscores = L.softmax_cross_entropy(fc, rng.integers(0, 130, 150))
    return results + [np.array(loss), dscores]


def test_every_kernel_gives_identical_bits_for_any_thread_count(same_bits_for_any_thread_count):
    same_bits_for_any_thread_count(run_all_layers)


def test_concurrent_python_threads_get_their_own_correct_answers(threads):
    threads(1)
    expected = [run_all_layers(seed) for seed in range(4)]
    threads(2)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(run_all_layers, range(4)))
    for want, have in zip(expected, got):
        for a, b in zip(want, have):
            np.testing.assert_array_equal(a, b)


def test_environment_variable_sets_the_default():
    code = "import detector; print(detector.get_num_threads())"
    env = {**os.environ, "DETECTOR_NUM_THREADS": "3"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "3"
    env["DETECTOR_NUM_THREADS"] = "lots"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "DETECTOR_NUM_THREADS must be a positive integer, got 'lots'" in bad.stderr
