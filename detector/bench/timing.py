"""Timing helpers: a median over repeated runs (of one function, or of several in turns), and
NumPy's float32 matmul rate."""
import statistics
import time

import numpy as np


def median_seconds(fn, min_repeats=7, min_seconds=0.3, max_repeats=200):
    """Median wall time of ``fn()`` after one warm-up call, over enough runs to fill
    ``min_seconds`` (at least ``min_repeats``)."""
    fn()
    start = time.perf_counter()
    fn()
    first = max(time.perf_counter() - start, 1e-9)
    repeats = int(min(max_repeats, max(min_repeats, min_seconds / first)))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def paired_median_seconds(fns, min_repeats=7, min_seconds=0.6, max_repeats=200):
    """Median wall time of each of ``fns``, called in turns (one call of each per round, after
    a warm-up call each), so that a change in the machine's load falls on all of them alike."""
    for fn in fns:
        fn()
    first = []
    for fn in fns:
        start = time.perf_counter()
        fn()
        first.append(max(time.perf_counter() - start, 1e-9))
    repeats = int(min(max_repeats, max(min_repeats, min_seconds / sum(first))))
    samples = [[] for _ in fns]
    for _ in range(repeats):
        for fn, times in zip(fns, samples):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return [statistics.median(times) for times in samples]


def sgemm_seconds(n=1024, seed=0):
    """Median seconds of NumPy's float32 (n, n) @ (n, n) with its own BLAS threads."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), np.float32)
    return median_seconds(lambda: np.matmul(a, b, out=out), min_repeats=9, min_seconds=0.2)
