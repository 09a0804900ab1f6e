"""The classifier unrolled into a fully convolutional net.

Each fully-connected layer becomes a convolution: the first over the whole final feature
map of the window (an FC over an MxMxN volume is a conv with MxM kernels), the next ones
1x1. Run over a whole image, the net gives one score vector every ``total_stride`` pixels,
equal to classifying the window at that place on its own.

The result is exact unless a layer pads. Inside a lone window the padding holds zeros; over
the whole image the same place holds the neighbouring pixels. Pools that leave rows over
are exact, because the window's activations are a sub-block of the whole image's at every
layer. Such a net sees less than its window, though, so its map runs past the windows that
fit in the image; the map is cropped to those. ``Net.to_fcn(strict=True)`` refuses a padded net, and ``strict=False`` runs it with a
warning that names the layers.

The pass runs on the inference kernels (:func:`detector.architecture.infer`): no caches, and
each convolution applies the ReLU and the tiling max-pool after it in its own output stage.
Each convolution runs on the kernel (im2col + GEMM, Winograd or direct) the cost model of
:mod:`detector.conv_algorithms` expects fastest for the image at hand; the FCN transforms
its filters for the Winograd kernel on first use and keeps them (its parameters are a
copy), and fc1's projection onto the scores runs in the Winograd kernel's output stage.
"""
import warnings

import numpy as np

from . import layers as L
from . import winograd
from .architecture import Conv, Linear, Pool, infer, inference_steps

# Activation memory one tile of rows may take; tiles overlap by the window and stitch
# exactly, so the size changes speed and peak memory, never the scores.
TILE_BYTES = 64 * 1024 * 1024


class FullyConvNet:
    """Raw outputs of every window of an image in one pass: ``scores(x)`` for x (N, C, H, W)
    normalised as the classifier's input, giving (N, outputs, H', W') with
    ``H' = floor((H - window) / stride) + 1``; ``outputs`` are the class scores, then the
    box offsets if the classifier has a regression head."""

    def __init__(self, layers, params, window, total_stride, outputs, exact):
        self.layers, self.params = layers, params
        self.window, self.total_stride = window, total_stride
        self.outputs, self.exact = outputs, exact
        self._winograd_filters = None

    @property
    def winograd_filters(self):
        """{layer name: filters made ready for the Winograd kernel} of every convolution it
        can run, made on first use and kept: the FCN's parameters are its own copy."""
        if self._winograd_filters is None:
            self._winograd_filters = {
                layer.name: winograd.prepare(self.params[f"{layer.name}.w"]) for layer in self.layers
                if isinstance(layer, Conv) and winograd.accepts(self.params[f"{layer.name}.w"], layer.stride)}
        return self._winograd_filters

    def _forward(self, x):
        return infer(self.layers, self.params, x, self.winograd_filters)

    def map_size(self, h, w):
        """(rows, columns) of the score map of an h x w input."""
        (wh, ww), (sh, sw) = self.window, self.total_stride
        if h < wh or w < ww:
            raise ValueError(f"the image is {h}x{w} (HxW) but the window is {wh}x{ww}: "
                             "it must be at least as large as the window")
        return (h - wh) // sh + 1, (w - ww) // sw + 1

    def tile_rows(self, width, budget=TILE_BYTES):
        """Score-map rows per tile so that one tile's activations fit in ``budget`` bytes:
        the outputs of the inference steps, which are all that is stored (a fused ReLU,
        pool or 1x1 projection never stores the convolution's own output)."""
        per_row, jump = 0, 1  # bytes of activations per input row, summed over the steps
        channels = None
        # the Winograd kernel projects without storing the K channels (float32 only)
        fused = next(iter(self.params.values())).dtype == np.float32
        for layer, options in inference_steps(self.layers):
            jump *= getattr(layer, "stride", 1) * options.get("pool", 1)
            if "project" in options and not fused:
                per_row += 4 * layer.filters * (width / jump) / jump
            channels = getattr(options.get("project", layer), "filters", channels)
            per_row += 4 * (channels or 1) * (width / jump) / jump
        input_rows = budget / max(per_row, 1)
        return max(1, int((input_rows - self.window[0]) // self.total_stride[0]) + 1)

    def scores(self, x, tile_rows=None, check=None):
        """Raw outputs (N, outputs, H', W'), computed in tiles of ``tile_rows`` map rows.
        ``check()`` runs between tiles (a deadline or cancellation may raise there)."""
        n, _, h, w = x.shape
        rows, cols = self.map_size(h, w)
        if not self.exact:
            return self._forward(x)  # padding: tiles would not stitch, and the map size differs
        tile_rows = tile_rows or self.tile_rows(w)
        out = np.empty((n, self.outputs, rows, cols), x.dtype)
        stride, window = self.total_stride[0], self.window[0]
        for r0 in range(0, rows, tile_rows):
            if check is not None:
                check()
            r1 = min(rows, r0 + tile_rows)
            tile = self._forward(x[:, :, r0 * stride:(r1 - 1) * stride + window])
            # a net whose pools leave rows over sees less than its window, so it also scores
            # windows that would poke past the edge: keep the ones sliding windows have
            out[:, :, r0:r1] = tile[:, :, :r1 - r0, :cols]
        return out


def unroll(net, strict=True):
    """The :class:`FullyConvNet` of ``net`` (see the module docstring)."""
    padded = [f"{layer.name} pads by {layer.padding}" for layer in net.layers
              if isinstance(layer, (Conv, Pool)) and layer.padding]
    if padded:
        message = ("this net cannot be unrolled exactly: " + ", ".join(padded) + ". Inside one window "
                   "the padding holds zeros, over the whole image it holds the neighbouring pixels, "
                   "so the fully convolutional scores differ from sliding windows near every padded edge")
        if strict:
            raise ValueError(message + "; pass strict=False to run it anyway")
        warnings.warn(message, stacklevel=3)
    layers, params = [], {}
    for layer, shape in zip(net.layers, net.shapes):
        own = {k: v.copy() for k, v in net.params_of(layer).items()}  # a snapshot of the net
        if isinstance(layer, Linear):
            in_shape = shape if len(shape) == 3 else (shape[0], 1, 1)
            w, b = L.linear_to_conv(own["w"], own["b"], tuple(in_shape))
            layer = Conv(layer.outputs, in_shape[1:], name=layer.name)
            own = {"w": w, "b": b}
        layers.append(layer)
        params.update({f"{layer.name}.{k}": v for k, v in own.items()})
    return FullyConvNet(layers, params, net.window, net.total_stride, net.outputs, exact=not padded)
