"""``detector bench detect``: sliding windows against the fully convolutional net.

For each image size, one pyramid level at scale 1 and the net's stride: the median time of
each mode, their ratio beside the ratio of their FLOP counts, the largest difference between
their score maps, and the peak memory NumPy allocates for each (tracemalloc). A large image
is also run through the FCN alone, for its peak memory.

The JSON keeps the vocabulary of :mod:`detector.report_json`: ``image_size`` and ``window``
as ``{"width", "height"}``, durations in milliseconds under keys ending in ``_ms``.
"""
import json
import tracemalloc

import numpy as np

from .. import load_model
from ..budget import layer_flops
from ..datasets import digits
from ..detect import as_model_input, sliding_scores
from ..report_json import size_json
from .timing import median_seconds


def _peak_bytes(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def run(sizes=(128, 256, 512, 1024), large=4096, seed=0):
    net = load_model()
    fcn = net.to_fcn()
    stride = net.total_stride[0]
    rows = []
    for size in sizes:
        image, _, _ = digits.scene(seed, size=(size, size), channels=net.channels)
        x = net.normalise(as_model_input(image, net.channels).transpose(2, 0, 1))[None].astype(np.float32)
        map_rows, map_cols = fcn.map_size(size, size)
        sliding = median_seconds(lambda: sliding_scores(net, x, stride, None), min_repeats=3, min_seconds=1)
        dense = median_seconds(lambda: fcn.scores(x), min_repeats=5, min_seconds=1)
        difference = float(np.abs(sliding_scores(net, x, stride, None) - fcn.scores(x)[0]).max())
        sliding_flops = map_rows * map_cols * layer_flops(net.layers, net.input_shape)
        dense_flops = layer_flops(fcn.layers, (net.channels, size, size))
        rows.append({
            "image_size": size_json(size, size), "windows": map_rows * map_cols,
            "sliding_ms": sliding * 1e3, "fcn_ms": dense * 1e3, "speedup": sliding / dense,
            "flop_ratio": sliding_flops / dense_flops, "max_abs_difference": difference,
            "sliding_peak_mb": _peak_bytes(lambda: sliding_scores(net, x, stride, None)) / 2**20,
            "fcn_peak_mb": _peak_bytes(lambda: fcn.scores(x)) / 2**20,
        })
    result = {"stride": stride, "window": size_json(net.window[1], net.window[0]), "sizes": rows}
    if large:
        image = np.random.default_rng(seed).random((net.channels, large, large), dtype=np.float32)
        x = net.normalise(image)[None].astype(np.float32)  # (1, C, H, W)
        # x was allocated before tracing: the peak is what the FCN adds, its output included
        result["large"] = {"image_size": size_json(large, large),
                           "fcn_peak_mb": _peak_bytes(lambda: fcn.scores(x)) / 2**20, "input_mb": x.nbytes / 2**20}
    return result


def format_table(result):
    lines = [f"detector bench detect: one level at scale 1, stride {result['stride']}, "
             f"window {result['window']['width']}x{result['window']['height']}; medians of repeated runs", "",
             f"{'size':>6}{'windows':>9}{'sliding ms':>12}{'fcn ms':>10}{'speed-up':>10}{'FLOP ratio':>12}"
             f"{'speed-up/FLOPs':>16}{'max |diff|':>12}{'peak MB sl/fcn':>16}"]
    for r in result["sizes"]:
        lines.append(f"{r['image_size']['width']:>6}{r['windows']:>9}{r['sliding_ms']:>12.1f}{r['fcn_ms']:>10.2f}"
                     f"{r['speedup']:>10.1f}{r['flop_ratio']:>12.1f}{r['speedup'] / r['flop_ratio']:>16.2f}"
                     f"{r['max_abs_difference']:>12.1e}{r['sliding_peak_mb']:>8.1f}/{r['fcn_peak_mb']:.1f}")
    if "large" in result:
        big = result["large"]
        side = big["image_size"]
        lines.append(f"\nFCN on {side['width']}x{side['height']}: peak memory {big['fcn_peak_mb']:.0f} MB "
                     f"beyond its {big['input_mb']:.0f} MB input")
    return "\n".join(lines)


def plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["image_size"]["width"] for r in result["sizes"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.loglog(sizes, [r["sliding_ms"] for r in result["sizes"]], "o-", label="sliding windows")
    ax.loglog(sizes, [r["fcn_ms"] for r in result["sizes"]], "s-", label="fully convolutional")
    ax.set_xlabel("image size (pixels per side)")
    ax.set_ylabel("time (ms, median)")
    ax.set_title("one pyramid level at the net's stride")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(args):
    """``detector bench detect``; ``args.sizes`` is a tuple of sides (the parser checks them)."""
    if any(s < 32 for s in args.sizes):
        raise ValueError(f"every size must be at least the 32-pixel window, got {args.sizes}")
    if 0 < args.large < 32:
        raise ValueError(f"--large must be 0 (skip) or at least the 32-pixel window, got {args.large}")
    result = run(args.sizes, args.large)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    if args.plot:
        plot(result, args.plot)
        if not args.json:
            print(f"wrote {args.plot}")
    return 0
