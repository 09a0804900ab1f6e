"""The classifier: a ``Net`` of layers described by a short spec string.

A spec is a list of layers separated by spaces or dashes:

- ``conv16@5x5``: 16 filters of 5x5 (stride 1, no padding); ``conv16@3x3/2+1`` adds
  stride 2 and padding 1;
- ``maxpool2``, ``avgpool2``, ``l2pool2``: 2x2 windows, stride = size; ``maxpool3/2+1``
  adds stride 2 and padding 1;
- ``relu``;
- ``fc128``: fully connected with 128 outputs; the first one flattens its input.

The last layer must be an ``fc`` with one output per class. The default architecture uses
valid convolutions and pools that tile their input exactly, so it unrolls into a fully
convolutional net whose scores equal sliding windows at the net's total stride.

>>> net = Net(DEFAULT_SPEC, seed=0)
>>> net.window, net.total_stride, net.receptive_field
((32, 32), (4, 4), (32, 32))
"""
import re
from dataclasses import dataclass

import numpy as np

from . import layers as L
from .data import CLASSES, WINDOW
from .shapes import output_size

DEFAULT_SPEC = "conv16@5x5 relu maxpool2 conv32@5x5 relu maxpool2 fc128 relu fc11"
DEFAULT_INPUT = (1, WINDOW, WINDOW)
# patches arrive in [0, 1]; the net sees (x - mean) / std
DEFAULT_NORMALISATION = {"mean": 0.5, "std": 0.25}

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

    def backward(self, dout, cache):
        dx, dw, db = L.conv2d_backward(dout, cache)
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

    def forward(self, x, params):
        return getattr(L, f"{self.kind}_pool2d_forward")(x, self.size, stride=self.stride, padding=self.padding)

    def backward(self, dout, cache):
        return getattr(L, f"{self.kind}_pool2d_backward")(dout, cache), {}


@dataclass
class Relu:
    name: str = ""

    def shape_after(self, shape):
        return shape

    def param_shapes(self, shape):
        return {}

    def forward(self, x, params):
        return L.relu_forward(x)

    def backward(self, dout, cache):
        return L.relu_backward(dout, cache), {}


@dataclass
class Linear:
    outputs: int
    name: str = ""

    def shape_after(self, shape):
        return (self.outputs,)

    def param_shapes(self, shape):
        return {"w": (self.outputs, int(np.prod(shape))), "b": (self.outputs,)}

    def forward(self, x, params):
        out, cache = L.linear_forward(x.reshape(len(x), -1), params["w"], params["b"])
        return out, (cache, x.shape)

    def backward(self, dout, cache):
        cache, in_shape = cache
        dx, dw, db = L.linear_backward(dout, cache)
        return dx.reshape(in_shape), {"w": dw, "b": db}


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


class Net:
    """An ordered list of layers with their parameters.

    ``Net(spec, input_shape=(1, 32, 32), classes=CLASSES, seed=0)`` builds one with He
    initialisation from the seed; :func:`detector.checkpoint.load` restores a trained one.
    """

    def __init__(self, spec=DEFAULT_SPEC, input_shape=DEFAULT_INPUT, classes=CLASSES, seed=0,
                 normalisation=None, dtype=np.float32):
        self.spec = spec
        self.layers = parse_spec(spec)
        self.input_shape = tuple(int(v) for v in input_shape)
        self.classes = list(classes)
        self.normalisation = dict(normalisation or DEFAULT_NORMALISATION)
        self.shapes = [self.input_shape]  # the activation shape before each layer, then the output
        seen_fc = False
        for layer in self.layers:
            if isinstance(layer, Linear):
                seen_fc = True
            elif seen_fc and not isinstance(layer, Relu):
                raise ValueError(f"{layer.name} follows a fully-connected layer: only relu and fc may")
            self.shapes.append(layer.shape_after(self.shapes[-1]))
        if not isinstance(self.layers[-1], Linear) or self.shapes[-1] != (len(self.classes),):
            raise ValueError(
                f"the spec must end in fc{len(self.classes)}: one output per class of {self.classes}"
            )
        rng = np.random.default_rng(seed)
        self.params = {}
        for layer, shape in zip(self.layers, self.shapes):
            for key, pshape in layer.param_shapes(shape).items():
                fan_in = int(np.prod(pshape[1:])) if key == "w" else 1
                value = rng.standard_normal(pshape) * np.sqrt(2.0 / fan_in) if key == "w" else np.zeros(pshape)
                self.params[f"{layer.name}.{key}"] = value.astype(dtype)
        self._caches = None

    # -- geometry ----------------------------------------------------------------------------

    @property
    def window(self):
        """The input size (h, w) the classifier sees."""
        return self.input_shape[1:]

    @property
    def total_stride(self):
        """Pixels between neighbouring windows when the net runs fully convolutionally."""
        stride = 1
        for layer in self.layers:
            stride *= getattr(layer, "stride", 1)
        return (stride, stride)

    @property
    def receptive_field(self):
        """Input pixels (h, w) that one output score depends on."""
        field, jump = np.ones(2, int), 1
        for layer, shape in zip(self.layers, self.shapes):
            if isinstance(layer, Conv):
                field += (np.array(layer.size) - 1) * jump
            elif isinstance(layer, Pool):
                field += (layer.size - 1) * jump
            elif isinstance(layer, Linear) and len(shape) == 3:
                field += (np.array(shape[1:]) - 1) * jump  # an fc over a map sees all of it
            jump *= getattr(layer, "stride", 1)
        return tuple(int(v) for v in np.minimum(field, self.window))

    def to_fcn(self, strict=True):
        """This net unrolled into a fully convolutional net (see :mod:`detector.fcn`)."""
        from .fcn import unroll

        return unroll(self, strict)

    # -- running -----------------------------------------------------------------------------

    def params_of(self, layer):
        """The layer's parameters by short name ("w", "b")."""
        return layer_params(self.params, layer)

    def normalise(self, patches):
        return (patches - self.normalisation["mean"]) / self.normalisation["std"]

    def forward(self, x, train=False):
        """Class scores (N, classes) of normalised inputs x (N, C, H, W). With ``train``, the
        caches are kept for :meth:`backward`."""
        caches = []
        for layer in self.layers:
            x, cache = layer.forward(x, self.params_of(layer))
            caches.append(cache)
        self._caches = caches if train else None
        return x

    def backward(self, dscores):
        """Gradients by parameter name, of the last ``forward(..., train=True)``."""
        if self._caches is None:
            raise RuntimeError("backward needs a forward(x, train=True) first")
        grads = {}
        for layer, cache in zip(reversed(self.layers), reversed(self._caches)):
            dscores, layer_grads = layer.backward(dscores, cache)
            for key, value in layer_grads.items():
                grads[f"{layer.name}.{key}"] = value
        self._caches = None
        return grads

    def predict(self, patches, batch_size=512):
        """Class probabilities (N, classes) of patches (N, C, H, W) in [0, 1]."""
        patches = np.asarray(patches)
        if patches.ndim != 4 or patches.shape[1:] != self.input_shape:
            raise ValueError(f"patches must have shape (N, {', '.join(map(str, self.input_shape))}), "
                             f"got {patches.shape}")
        if patches.dtype.kind not in "fu":
            raise TypeError(f"patches must be float in [0, 1] (or uint8 0-255), got dtype {patches.dtype}")
        dtype = self.params[next(iter(self.params))].dtype
        scale = 255.0 if patches.dtype == np.uint8 else 1.0
        out = []
        for start in range(0, len(patches), batch_size):
            x = self.normalise(patches[start:start + batch_size].astype(dtype) / dtype.type(scale))
            out.append(softmax(self.forward(x.astype(dtype))))
        return np.concatenate(out) if out else np.empty((0, len(self.classes)), dtype)


def layer_params(params, layer):
    """From parameters named "<layer>.<key>", the given layer's, by key."""
    prefix = layer.name + "."
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def softmax(scores):
    shifted = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)
