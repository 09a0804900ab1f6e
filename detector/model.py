"""The classifier: a ``Net`` of layers built from a spec (the grammar is in
:mod:`detector.architecture`), and what detection needs to know about it.

A model knows its own classes, channels and priors, as a fitted scikit-learn estimator knows
its ``classes_``; nothing downstream reaches back into the data that trained it:

- ``classes``, and ``background``: the name of the class that means "no object";
- ``input_shape`` (channels, height, width): 1 (gray) or 3 (BGR) channels, and the window;
- ``normalisation``: a mean and a std per channel; the net sees ``(x - mean) / std`` of
  inputs ``x`` in [0, 1];
- ``object_size``: an object's longer side in a positive training window, as a fraction of
  the window's side (the windows were cut within a jitter around it);
- ``box_aspects``: each object class's typical box width / height;
- ``box_regression``: the last layer gives, after the class scores, 4 box offsets from
  the window's prior box (see :mod:`detector.boxes`), as OverFeat's regression head does.

The last layer of the spec must be ``fc`` with one output per class; with box regression it
carries 4 more rows. The default architecture uses valid convolutions and pools that tile
their input exactly, so it unrolls into a fully convolutional net whose scores equal
sliding windows at the net's total stride.

>>> net = Net(DEFAULT_SPEC, seed=0)
>>> net.window, net.total_stride, net.receptive_field
((32, 32), (4, 4), (32, 32))
"""
import math
import zlib

import numpy as np

from . import boxes as box_coding
from .architecture import DEFAULT_SPEC, Conv, Linear, Pool, Relu, infer, layer_params, parse_spec, training_order

DEFAULT_CLASSES = ("background",) + tuple(str(d) for d in range(10))
DEFAULT_INPUT = (1, 32, 32)
# inputs arrive in [0, 1]; the net sees (x - mean) / std
DEFAULT_NORMALISATION = {"mean": 0.5, "std": 0.25}
# the middle of the digits' 50-80% of the window, on a log scale
DEFAULT_OBJECT_SIZE = float(np.sqrt(0.5 * 0.8))
BOX_OFFSETS = 4  # (dx, dy, dw, dh) of the regression head
# far above any net this project trains; refuses a spec (or a hostile header) that would
# allocate gigabytes before anything else is checked
MAX_PARAMETERS = 50_000_000
MAX_ACTIVATIONS = 20_000_000  # values of all layers for one window: 80 MB in float32


class Net:
    """An ordered list of layers with their parameters, and the model's priors.

    ``Net(spec, input_shape=(1, 32, 32), classes=DEFAULT_CLASSES, seed=0)`` builds one with He
    initialisation from the seed; :func:`detector.checkpoint.load` restores a trained one.
    ``background`` defaults to the first class; ``box_aspects`` to 1 for every object class.
    """

    def __init__(self, spec=DEFAULT_SPEC, input_shape=DEFAULT_INPUT, classes=DEFAULT_CLASSES, seed=0,
                 normalisation=None, dtype=np.float32, background=None, object_size=DEFAULT_OBJECT_SIZE,
                 box_aspects=None, box_regression=False):
        self.spec = spec
        self.layers = parse_spec(spec)
        self.input_shape = _input_shape(input_shape)
        self.classes = [str(c) for c in classes]
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"a net needs at least 2 distinct class names, got {self.classes}")
        self.background = self.classes[0] if background is None else str(background)
        if self.background not in self.classes:
            raise ValueError(f"the background class {self.background!r} is not one of the classes {self.classes}")
        self.normalisation = _per_channel(normalisation or DEFAULT_NORMALISATION, self.channels)
        if not 0 < float(object_size) <= 1:
            raise ValueError(f"object_size is a fraction of the window in (0, 1], got {object_size}")
        self.object_size = float(object_size)
        self.box_aspects = {c: 1.0 for c in self.objects}
        for name, aspect in (box_aspects or {}).items():
            if name not in self.box_aspects or not np.isfinite(aspect) or not 0.05 <= aspect <= 20:
                raise ValueError(f"box aspect {name!r}: {aspect!r} (need an object class and a width / height "
                                 "between 0.05 and 20)")
            self.box_aspects[name] = float(aspect)
        self.box_regression = bool(box_regression)
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
        if self.box_regression:  # the head's 4 box offsets ride on the last layer
            self.layers[-1].outputs += BOX_OFFSETS
            self.shapes[-1] = (self.outputs,)
        values = sum(math.prod(shape) for shape in self.shapes)  # Python ints: they never wrap
        if values > MAX_ACTIVATIONS:
            raise ValueError(f"the spec {spec!r} has {values:,} activations per window on a {self.input_shape} "
                             f"input, more than the {MAX_ACTIVATIONS:,} a detector net may have")
        param_shapes = [layer.param_shapes(shape) for layer, shape in zip(self.layers, self.shapes)]
        total = sum(math.prod(s) for p in param_shapes for s in p.values())
        if total > MAX_PARAMETERS:
            raise ValueError(f"the spec {spec!r} has {total:,} parameters on a {self.input_shape} input, "
                             f"more than the {MAX_PARAMETERS:,} a detector net may have")
        rng = np.random.default_rng(seed)
        self.params = {}
        for layer, shapes in zip(self.layers, param_shapes):
            for key, pshape in shapes.items():
                fan_in = int(np.prod(pshape[1:])) if key == "w" else 1
                value = rng.standard_normal(pshape) * np.sqrt(2.0 / fan_in) if key == "w" else np.zeros(pshape)
                self.params[f"{layer.name}.{key}"] = value.astype(dtype)
        self.metrics, self.data = {}, {}  # what training measured, and what it trained on
        self._caches = None
        self._fcn = None  # (key, FullyConvNet) of to_fcn

    # -- what the model is -------------------------------------------------------------------

    @property
    def channels(self):
        """1 (gray) or 3 (BGR) for an image model: what the net's input holds."""
        return self.input_shape[0]

    @property
    def background_index(self):
        return self.classes.index(self.background)

    @property
    def objects(self):
        """The object classes: every class but the background, in order."""
        return [c for c in self.classes if c != self.background]

    @property
    def outputs(self):
        """Raw outputs per window: the class scores, then the box offsets if any."""
        return len(self.classes) + (BOX_OFFSETS if self.box_regression else 0)

    @property
    def object_pixels(self):
        """An object's longer side, in window pixels, as the net was trained to see it."""
        return self.object_size * min(self.window)

    def prior_sizes(self, labels):
        """(widths, heights) of the prior boxes, in window pixels, of class indices ``labels``:
        the longer side :attr:`object_pixels`, the aspect the class's."""
        aspects = [self.box_aspects[self.classes[i]] for i in np.asarray(labels).ravel()]
        return box_coding.prior_sizes(self.object_pixels, aspects)

    def priors(self):
        """The header fields that describe what the net detects (see the module docstring)."""
        return {"classes": list(self.classes), "background": self.background, "channels": self.channels,
                "normalisation": {k: list(v) for k, v in self.normalisation.items()},
                "window": list(self.window), "object_size": self.object_size,
                "box_aspects": dict(self.box_aspects), "box_regression": self.box_regression}

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
        """This net unrolled into a fully convolutional net (see :mod:`detector.fcn`). The
        FCN is a snapshot of the parameters, kept while they stay the same: a checksum of
        their bytes (a tenth of a millisecond for the default net) spares each detection
        the copy and the Winograd transform of the filters (about a millisecond), and a net
        that trains on gets a new FCN."""
        from .fcn import unroll

        key = (strict, self._params_checksum())
        cached = self._fcn
        if cached is None or cached[0] != key:
            cached = self._fcn = (key, unroll(self, strict))
        return cached[1]

    def _params_checksum(self):
        checksum = 0
        for name in sorted(self.params):
            checksum = zlib.crc32(name.encode(), checksum)
            checksum = zlib.crc32(np.ascontiguousarray(self.params[name]), checksum)
        return checksum

    # -- running -----------------------------------------------------------------------------

    def params_of(self, layer):
        """The layer's parameters by short name ("w", "b")."""
        return layer_params(self.params, layer)

    def normalise(self, x):
        """``(x - mean) / std`` per channel, for x (..., C, H, W) in [0, 1]."""
        mean, std = (np.asarray(self.normalisation[k], x.dtype if x.dtype.kind == "f" else np.float32)
                     .reshape(-1, 1, 1) for k in ("mean", "std"))
        return (x - mean) / std

    def forward(self, x, train=False):
        """Raw outputs (N, :attr:`outputs`) of normalised inputs x (N, C, H, W): class
        scores, then box offsets if the net has them. With ``train``, the caches are kept
        for :meth:`backward`; without, the inference kernels run (no caches, the ReLU and
        max-pool that follow a convolution fused into it)."""
        if not train:
            self._caches = None
            return infer(self.layers, self.params, x)
        caches = []
        for layer in training_order(self.layers):
            x, cache = layer.forward(x, self.params_of(layer))
            caches.append(cache)
        self._caches = caches
        return x

    def backward(self, dscores):
        """Gradients by parameter name, of the last ``forward(..., train=True)``."""
        if self._caches is None:
            raise RuntimeError("backward needs a forward(x, train=True) first")
        grads = {}
        order = training_order(self.layers)
        for i in reversed(range(len(order))):
            layer = order[i]
            # the first layer's input is the data: it needs no gradient
            dscores, layer_grads = layer.backward(dscores, self._caches[i], input_grad=i > 0)
            for key, value in layer_grads.items():
                grads[f"{layer.name}.{key}"] = value
        self._caches = None
        return grads

    def predict(self, patches, batch_size=512):
        """Class probabilities (N, classes) of patches (N, C, H, W) in [0, 1] (or uint8)."""
        return softmax(self._raw(patches, batch_size)[:, :len(self.classes)])

    def predict_boxes(self, patches, batch_size=512):
        """Class probabilities (N, classes) and box offsets (N, 4) of patches in [0, 1]
        (see :mod:`detector.boxes`); needs a net with ``box_regression``."""
        if not self.box_regression:
            raise ValueError("this net has no box-regression head")
        raw = self._raw(patches, batch_size)
        return softmax(raw[:, :len(self.classes)]), raw[:, len(self.classes):]

    @property
    def dtype(self):
        return next(iter(self.params.values())).dtype

    def _raw(self, patches, batch_size):
        """Raw outputs (N, outputs) of patches in [0, 1] (or uint8), a batch at a time."""
        patches = np.asarray(patches)
        if patches.ndim != 4 or patches.shape[1:] != self.input_shape:
            raise ValueError(f"patches must have shape (N, {', '.join(map(str, self.input_shape))}), "
                             f"got {patches.shape}")
        if patches.dtype.kind not in "fu":
            raise TypeError(f"patches must be float in [0, 1] (or uint8 0-255), got dtype {patches.dtype}")
        dtype = self.dtype
        scale = dtype.type(255.0 if patches.dtype == np.uint8 else 1.0)
        out = [self.forward(self.normalise(patches[i:i + batch_size].astype(dtype) / scale).astype(dtype))
               for i in range(0, len(patches), batch_size)]
        return np.concatenate(out) if out else np.empty((0, self.outputs), dtype)


def softmax(scores):
    shifted = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def _input_shape(shape):
    shape = tuple(int(v) for v in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape is (channels, height, width), each at least 1, got {shape}")
    return shape


def _per_channel(normalisation, channels):
    """{"mean": [...], "std": [...]}, one value per channel; a single number is broadcast."""
    out = {}
    for key in ("mean", "std"):
        value = np.broadcast_to(np.asarray(normalisation[key], np.float64).ravel(), (channels,)) \
            if np.size(normalisation[key]) in (1, channels) else None
        if value is None or not np.isfinite(value).all() or (key == "std" and (value <= 0).any()):
            raise ValueError(f"normalisation {key} must be {channels} finite number(s)"
                             f"{' above 0' if key == 'std' else ''}, got {normalisation[key]!r}")
        out[key] = [float(v) for v in value]
    return out
