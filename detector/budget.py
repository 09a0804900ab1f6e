"""The work and memory one detection may take, estimated from the request before any work.

:func:`estimate` turns an image's size and the pyramid levels :func:`detector.detect.plan`
chose into a :class:`Cost`: the pixels of all levels (or of all sliding crops), the
floating-point operations of the conv and fc layers over them, the score-map bytes a reply
would carry, and the peak memory of the run. :class:`Budget` refuses a cost over its limits
with :class:`OverBudget`, whose message gives the numbers and what to change.

The memory model follows :func:`detector.detect.detect` step by step (decoding, the float
copy of the input, one level's resize and padding, the FCN's row tiles or the sliding
batches, the softmax and box decoding over the score maps, and the maps kept for the
reply); ``tests/test_budget.py`` checks it against the peak resident memory of real runs.
Throughput on one core of the development machine is about 100 GFLOP/s on the FCN path, so
the default work budget is some 20 s on one thread.
"""
import math
from dataclasses import dataclass

import numpy as np

from .architecture import Conv, Linear
from .fcn import TILE_BYTES

MB = 2 ** 20
# what a run allocates whatever its size: OpenBLAS and OpenMP buffers, small arrays
BASE_BYTES = 32 * MB
SLIDING_BATCH = 512  # windows classified at once by detector.detect.sliding_scores


class OverBudget(ValueError):
    """A request would take more work or memory than allowed."""


def layer_flops(layers, shape):
    """FLOPs (2 per multiply-add) of conv and fc layers on an input of ``shape`` (C, H, W)."""
    total, shape = 0.0, tuple(shape)
    for layer in layers:
        out = layer.shape_after(shape)
        if isinstance(layer, Conv):
            total += 2.0 * np.prod(out) * shape[0] * np.prod(layer.size)
        elif isinstance(layer, Linear):
            total += 2.0 * layer.outputs * np.prod(shape)
        shape = out
    return total


@dataclass(frozen=True)
class Cost:
    levels: int
    pixels: int  # of all levels as padded, or of all sliding crops
    gflops: float
    memory_bytes: int  # estimated peak
    map_bytes: int  # float32 score maps of all levels, as a reply would carry them

    def describe(self):
        return (f"{self.levels} pyramid levels, {self.pixels / 1e6:,.1f} Mpx, {self.gflops:,.0f} GFLOP, "
                f"about {self.memory_bytes / MB:,.0f} MB")


def estimate(height, width, net, mode, stride, level_sizes, return_maps=False, input_channels=None,
             sample_bytes=1):
    """The :class:`Cost` of detecting in a ``height`` x ``width`` image with ``input_channels``
    channels of ``sample_bytes`` each, over levels of ``level_sizes`` [(width, height), ...]
    padded by half a window on each side, at ``stride``."""
    channels, classes, outputs = net.channels, len(net.classes), net.outputs
    input_channels = input_channels or channels
    window, pad = net.window, min(net.window) // 2
    pixels = height * width
    # the decoded image, its float copy (alpha dropped first) and the model's channels
    colour = min(input_channels, 3)
    input_bytes = pixels * (input_channels * sample_bytes + 4 * colour + 4 * channels)
    if sample_bytes > 1:  # 16-bit: decoded to float32, then copied and checked for NaN, alpha and all
        input_bytes += pixels * input_channels * 9
    per_window = layer_flops(net.layers, net.input_shape)
    fcn = net.to_fcn() if mode == "fcn" else None
    # a window's activations in the inference path: no caches, each layer's input and
    # output alive at once (a fused convolution's unpooled output is never stored)
    sizes = [int(np.prod(s)) for s in net.shapes]
    activations = 4 * max(a + b for a, b in zip(sizes, sizes[1:]))
    gflops, work_pixels, level_peak, map_bytes = 0.0, 0, 0, 0
    for w, h in level_sizes:
        hp, wp = h + 2 * pad, w + 2 * pad
        rows, cols = (hp - window[0]) // stride + 1, (wp - window[1]) // stride + 1
        cells = rows * cols
        level = 4 * channels * hp * wp
        if fcn is not None:
            offsets = (fcn.total_stride[0] // stride) ** 2
            gflops += offsets * layer_flops(fcn.layers, (channels, hp, wp)) / 1e9
            work_pixels += offsets * hp * wp
            running = TILE_BYTES
        else:
            gflops += cells * per_window / 1e9
            work_pixels += cells * window[0] * window[1]
            running = min(cells, SLIDING_BATCH) * activations  # a batch's activations
        maps = 4 * cells
        level_peak = max(level_peak,
                         2 * level,  # the resized level and its padded copy
                         level + running + outputs * maps,  # scoring
                         (outputs + 2 * classes) * maps + 16 * cells)  # softmax, then boxes
        map_bytes += classes * maps
    memory = BASE_BYTES + input_bytes + level_peak + (map_bytes if return_maps else 0)
    return Cost(len(level_sizes), work_pixels, gflops, int(memory), map_bytes)


def _positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


@dataclass(frozen=True)
class Budget:
    """Limits on one detection: ``max_pixels`` of the input image, ``max_gflops`` of work
    over all levels and ``max_memory_mb`` of estimated peak memory."""

    max_pixels: int = 50_000_000
    max_gflops: float = 2000.0
    max_memory_mb: float = 1024.0

    def __post_init__(self):
        for name in ("max_pixels", "max_gflops", "max_memory_mb"):
            _positive(name, getattr(self, name))

    def check(self, cost):
        """Raise :class:`OverBudget` when ``cost`` passes a limit."""
        if cost.memory_bytes > self.max_memory_mb * MB:
            raise OverBudget(f"the request needs about {cost.memory_bytes / MB:,.0f} MB ({cost.describe()}); "
                             f"the limit is {self.max_memory_mb:,g} MB: lower the scales, raise min_size, "
                             "leave out the score maps or send a smaller image")
        if cost.gflops > self.max_gflops:
            raise OverBudget(f"the request needs {cost.gflops:,.0f} GFLOP ({cost.describe()}); the limit is "
                             f"{self.max_gflops:,g}: raise min_size, send fewer scales or a smaller image")
