"""``detector bench algorithms``: each inference convolution kernel timed over a grid of layer
shapes, against the kernel the cost model of :mod:`detector.conv_algorithms` chooses.

For every shape: the median time of each kernel that can run it (im2col, Winograd, direct;
the Winograd filters prepared beforehand, as the FCN does), the one the model chooses, and
that choice's time over the fastest's. The summary gives the mean and worst of that ratio and
the total time of the chosen kernels against the fastest and against im2col alone. With
``--fit``, the coefficients non-negative least squares gives for these timings, to compare
with those the module carries.
"""
import itertools
import json

import numpy as np

from .. import conv_algorithms, layers, winograd
from ..threads import get_num_threads, set_num_threads
from .timing import median_seconds

KERNELS = ("im2col", "winograd", "direct")
GRID = {"filters": (3, 5), "channels": (1, 3, 16, 32), "outputs": (8, 32, 128), "side": (36, 132), "pool": (1, 2)}


def shapes(grid=GRID):
    """(r, C, K, side, pool) of every layer of the grid."""
    return list(itertools.product(grid["filters"], grid["channels"], grid["outputs"], grid["side"], grid["pool"]))


def run(threads=1, grid=GRID, seed=0):
    """Time every kernel on every shape; a JSON-ready dict."""
    rng = np.random.default_rng(seed)
    previous = get_num_threads()
    set_num_threads(threads)
    rows = []
    try:
        for r, c, k, side, pool in shapes(grid):
            x = rng.standard_normal((1, c, side, side)).astype(np.float32)
            w = (rng.standard_normal((k, c, r, r)) * 0.1).astype(np.float32)
            b = rng.standard_normal(k).astype(np.float32)
            prepared = winograd.prepare(w)
            times = {}
            for kernel in KERNELS:
                def call(kernel=kernel):
                    layers.conv2d_infer(x, w, b, relu=True, pool=pool if pool > 1 else None,
                                        algorithm=kernel, winograd_filters=prepared)
                times[kernel] = median_seconds(call, min_repeats=5, min_seconds=0.05) * 1e3
            out = side - r + 1
            chosen = conv_algorithms.choose(x.shape, w.shape, (out, out), pool, prepared=True)
            fastest = min(times, key=times.get)
            rows.append({"filter_size": r, "channels": c, "filters": k, "side": side, "pool": pool,
                         **{f"{kernel}_ms": t for kernel, t in times.items()},
                         "chosen": chosen, "fastest": fastest, "chosen_over_fastest": times[chosen] / times[fastest]})
    finally:
        set_num_threads(previous)
    ratios = [row["chosen_over_fastest"] for row in rows]
    total = {kind: sum(row[f"{kind}_ms"] if kind in KERNELS else row[f"{row[kind]}_ms"] for row in rows)
             for kind in ("chosen", "fastest", "im2col")}
    return {"threads": threads, "rows": rows,
            "summary": {"layers": len(rows), "chosen_is_fastest": sum(row["chosen"] == row["fastest"] for row in rows),
                        "mean_chosen_over_fastest": float(np.mean(ratios)), "worst_chosen_over_fastest": max(ratios),
                        "total_chosen_ms": total["chosen"], "total_fastest_ms": total["fastest"],
                        "total_im2col_ms": total["im2col"]}}


def format_table(result):
    lines = [f"detector bench algorithms: each inference convolution kernel over layer shapes, one image, "
             f"{result['threads']} thread(s), medians in ms; 'chosen' is the cost model's pick", "",
             f"{'r':>2}{'C':>4}{'K':>5}{'side':>6}{'pool':>5}{'im2col':>9}{'winograd':>10}{'direct':>9}"
             f"{'chosen':>10}{'/fastest':>10}"]
    for row in result["rows"]:
        lines.append(f"{row['filter_size']:>2}{row['channels']:>4}{row['filters']:>5}{row['side']:>6}{row['pool']:>5}"
                     f"{row['im2col_ms']:>9.3f}{row['winograd_ms']:>10.3f}{row['direct_ms']:>9.3f}"
                     f"{row['chosen']:>10}{row['chosen_over_fastest']:>9.2f}x")
    s = result["summary"]
    lines += ["", f"the choice is the fastest kernel on {s['chosen_is_fastest']} of {s['layers']} layers; "
                  f"its time over the fastest's: mean {s['mean_chosen_over_fastest']:.2f}x, "
                  f"worst {s['worst_chosen_over_fastest']:.2f}x",
              f"total: chosen {s['total_chosen_ms']:.1f} ms, fastest {s['total_fastest_ms']:.1f} ms, "
              f"im2col alone {s['total_im2col_ms']:.1f} ms"]
    return "\n".join(lines)


def main(args):
    """``detector bench algorithms``."""
    result = run(args.threads)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0
