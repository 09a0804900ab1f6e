"""The layer classes and the spec grammar, shared by :mod:`detector.model` (the classifier)
and :mod:`detector.fcn` (the same layers unrolled over a whole image).

A spec is a list of layers separated by spaces or dashes:

- ``conv16@5x5``: 16 filters of 5x5 (stride 1, no padding); ``conv16@3x3/2+1`` adds
  stride 2 and padding 1;
- ``maxpool2``, ``avgpool2``, ``l2pool2``: 2x2 windows, stride = size; ``maxpool3/2+1``
  adds stride 2 and padding 1;
- ``relu``;
- ``fc128``: fully connected with 128 outputs; the first one flattens its input.

Each layer class wraps the functional API of :mod:`detector.layers` and adds nothing but
its parameters' shapes and its output shape. ``forward``/``backward`` are training's (with
caches; ``backward(..., input_grad=False)`` gives None for the input's gradient, which a
convolution then never computes); ``infer`` gives the output alone, on the inference
kernels. :func:`infer` runs a list of layers that way, a convolution taking in the ReLU and the tiling max-pool after it
(:func:`inference_steps`).
"""
import math
import re
from dataclasses import dataclass

import numpy as np

from . import layers as L
from . import winograd
from .shapes import output_size

# the shipped digit model's architecture: 11 outputs for "background" and the digits 0-9
DEFAULT_SPEC = "conv16@5x5 relu maxpool2 conv32@5x5 relu maxpool2 fc128 relu fc11"
_CONV = re.compile(r"conv(\d+)@(\d+)x(\d+)(?:/(\d+))?(?:\+(\d+))?$")
_POOL = re.compile(r"(max|avg|l2)pool(\d+)(?:/(\d+))?(?:\+(\d+))?$")
_FC = re.compile(r"fc(\d+)$")


@dataclass
class Conv:
    filters: int
    size: tuple
    stride: int = 1
    padding: int = 0
    name: str = ""

    def shape_after(self, shape):
        c, h, w = shape
        return (self.filters,
                output_size(h, self.size[0], self.padding, self.stride, f"height after {self.name}"),
                output_size(w, self.size[1], self.padding, self.stride, f"width after {self.name}"))

    def param_shapes(self, shape):
        return {"w": (self.filters, shape[0], *self.size), "b": (self.filters,)}

    def forward(self, x, params):
        return L.conv2d_forward(x, params["w"], params["b"], stride=self.stride, padding=self.padding)

    def infer(self, x, params, relu=False, pool=None, winograd_filters=None, project=None):
        return L.conv2d_infer(x, params["w"], params["b"], stride=self.stride, padding=self.padding,
                              relu=relu, pool=pool, winograd_filters=winograd_filters, project=project)

    def backward(self, dout, cache, input_grad=True):
        dx, dw, db = L.conv2d_backward(dout, cache, input_grad=input_grad)
        return dx, {"w": dw, "b": db}


@dataclass
class Pool:
    kind: str  # "max", "avg" or "l2"
    size: int
    stride: int
    padding: int = 0
    name: str = ""

    def shape_after(self, shape):
        c, h, w = shape
        return (c, output_size(h, self.size, self.padding, self.stride, f"height after {self.name}"),
                output_size(w, self.size, self.padding, self.stride, f"width after {self.name}"))

    def param_shapes(self, shape):
        return {}

    @property
    def tiles(self):
        """A max-pool whose windows tile its input (stride = size, no padding): a
        convolution before it can pool its own output."""
        return self.kind == "max" and self.stride == self.size and self.padding == 0

    def forward(self, x, params):
        return getattr(L, f"{self.kind}_pool2d_forward")(x, self.size, stride=self.stride, padding=self.padding)

    def infer(self, x, params):
        if self.kind == "max":
            return L.max_pool2d_infer(x, self.size, stride=self.stride, padding=self.padding)
        return self.forward(x, params)[0]

    def backward(self, dout, cache, input_grad=True):
        return getattr(L, f"{self.kind}_pool2d_backward")(dout, cache) if input_grad else None, {}


@dataclass
class Relu:
    name: str = ""

    def shape_after(self, shape):
        return shape

    def param_shapes(self, shape):
        return {}

    def forward(self, x, params):
        return L.relu_forward(x)

    def infer(self, x, params):
        return L.relu_forward(x)[0]

    def backward(self, dout, cache, input_grad=True):
        return L.relu_backward(dout, cache) if input_grad else None, {}


@dataclass
class Linear:
    outputs: int
    name: str = ""

    def shape_after(self, shape):
        return (self.outputs,)

    def param_shapes(self, shape):
        return {"w": (self.outputs, math.prod(shape)), "b": (self.outputs,)}

    def forward(self, x, params):
        out, cache = L.linear_forward(x.reshape(len(x), -1), params["w"], params["b"])
        return out, (cache, x.shape)

    def infer(self, x, params):
        return L.linear_forward(x.reshape(len(x), -1), params["w"], params["b"])[0]

    def backward(self, dout, cache, input_grad=True):
        cache, in_shape = cache
        dx, dw, db = L.linear_backward(dout, cache)
        return dx.reshape(in_shape) if input_grad else None, {"w": dw, "b": db}


def parse_spec(spec):
    """The layers of a spec string, each named after its kind and position (conv1, fc2...)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("the spec must be a non-empty string such as " + repr(DEFAULT_SPEC))
    result, counts = [], {}
    for token in re.split(r"[\s\-]+", spec.strip()):
        if m := _CONV.match(token):
            k, fh, fw, s, p = m.groups()
            layer = Conv(int(k), (int(fh), int(fw)), int(s or 1), int(p or 0))
        elif m := _POOL.match(token):
            kind, f, s, p = m.groups()
            layer = Pool(kind, int(f), int(s or f), int(p or 0))
        elif token == "relu":
            layer = Relu()
        elif m := _FC.match(token):
            layer = Linear(int(m.group(1)))
        else:
            raise ValueError(
                f"cannot read layer {token!r} of the spec: expected conv16@5x5[/stride][+pad], "
                "maxpool2 / avgpool2 / l2pool2 [/stride][+pad], relu or fc128"
            )
        kind = type(layer).__name__.lower().replace("linear", "fc")
        counts[kind] = counts.get(kind, 0) + 1
        layer.name = f"{kind}{counts[kind]}"
        result.append(layer)
    for layer in result:
        sizes = [getattr(layer, a) for a in ("filters", "outputs", "size", "stride") if hasattr(layer, a)]
        if any(v < 1 for s in sizes for v in np.atleast_1d(s)):
            raise ValueError(f"{layer.name}: sizes, strides and counts must be at least 1 in {spec!r}")
    return result


def inference_steps(layers):
    """``layers`` grouped for inference: a list of (layer, options for its ``infer``). A
    convolution takes in the ReLU and the tiling max-pool (:attr:`Pool.tiles`) that follow
    it, in either order (they commute), and computes them in its output stage; a convolution
    the Winograd kernel can run also takes the 1x1 convolution after them, unless a ReLU or a
    pool follows that one (option "project": the 1x1 layer, whose parameters :func:`infer`
    passes)."""
    steps, i = [], 0
    while i < len(layers):
        layer, options = layers[i], {}
        i += 1
        while isinstance(layer, Conv) and i < len(layers):
            following = layers[i]
            if isinstance(following, Relu) and "relu" not in options:
                options["relu"] = True
            elif isinstance(following, Pool) and following.tiles and "pool" not in options:
                options["pool"] = following.size
            else:
                break
            i += 1
        if _winograd_shaped(layer) and i < len(layers) and _projects(layers[i]) and (
                i + 1 == len(layers) or not isinstance(layers[i + 1], (Relu, Pool))):
            options["project"] = layers[i]
            i += 1
        steps.append((layer, options))
    return steps


def _winograd_shaped(layer):
    """A convolution the Winograd kernel can run (float32 aside), which alone computes a
    projection in its output stage without storing its own channels."""
    return (isinstance(layer, Conv) and layer.stride in (1, (1, 1))
            and tuple(layer.size) in {(r, r) for r in winograd.TILES})


def _projects(layer):
    """A 1x1 convolution of stride 1, unpadded: a per-position product of channels."""
    return (isinstance(layer, Conv) and tuple(np.atleast_1d(layer.size)) in ((1,), (1, 1))
            and layer.stride in (1, (1, 1)) and not layer.padding)


def training_order(layers):
    """``layers`` in the order training runs them: a ReLU followed by a tiling max-pool runs
    after it instead. The two commute, values and gradients alike (the max of ReLUs is the
    ReLU of the max; a window whose max is not positive passes no gradient either way, and
    otherwise both pick its first largest value), and the ReLU then touches a quarter of the
    values, forward and backward."""
    order = list(layers)
    for i in range(len(order) - 1):
        if isinstance(order[i], Relu) and isinstance(order[i + 1], Pool) and order[i + 1].tiles:
            order[i], order[i + 1] = order[i + 1], order[i]
    return order


def infer(layers, params, x, winograd_filters=None):
    """The output of ``layers`` (parameters named "<layer>.<key>") on x, by the inference
    kernels: no caches, and fused as :func:`inference_steps` says. ``winograd_filters``:
    {layer name: ``detector.winograd.prepare(w)``} for convolutions whose filters are ready."""
    prepared = winograd_filters or {}
    for layer, options in inference_steps(layers):
        if layer.name in prepared:
            options = {**options, "winograd_filters": prepared[layer.name]}
        if "project" in options:
            second = layer_params(params, options["project"])
            options = {**options, "project": (second["w"], second["b"])}
        x = layer.infer(x, layer_params(params, layer), **options)
    return x


def layer_params(params, layer):
    """From parameters named "<layer>.<key>", the given layer's, by key."""
    prefix = layer.name + "."
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
