"""Detection on images of any size, by sliding windows or by the fully convolutional net.

``detect(image, net)`` builds an image pyramid so that objects whose longer side is from
``min_size`` to ``max_size`` pixels reach the size the classifier was trained on
(``net.object_pixels``) at some level. Each level is scored in one of two ways:
- ``mode="fcn"``: the net unrolled into a fully convolutional net, run once over the level
  in row tiles;
- ``mode="sliding"``: crops every ``stride`` pixels, classified alone in batches.
Both give the same score maps. Windows whose best object-class probability passes the
threshold become boxes in the input's coordinates, and non-maximum suppression keeps the
best. A box is the window's prior box for its class (see :mod:`detector.boxes`), moved and
stretched by the net's regression head when it has one, or else centred on the
score-weighted centroid of its 3x3 neighbourhood.

Each level is padded by half a window (its edge pixels repeated, as the training windows
of :mod:`detector.datasets.windows` are), so that a window can be centred on any pixel and
objects touching the image's border are found too.

The input is converted to what the model expects: colour to gray for a 1-channel model,
gray to colour for a 3-channel one. Every knob is a field of :class:`DetectOptions`, the one
validated set of defaults that the API, the CLI and the service share.

A stride finer than the net's total stride (a divisor of it) runs the FCN once per offset
and interleaves the maps (shift-and-stitch, OverFeat's dense evaluation). The result still
equals sliding windows at that stride.
"""
import dataclasses
import math
import time
from dataclasses import dataclass, field

import cv2
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import boxes as box_coding
from .budget import OverBudget, estimate
from .nms import nms

MODES = ("fcn", "sliding")
# the most a level may enlarge the input per side: beyond it the pyramid would look for
# objects a few pixels across, and a hostile min_size could ask for an enormous level
MAX_SCALE = 4.0
MAX_LEVELS = 40  # more levels than any sane pyramid: 1.26 apart they span 10,000x in size
MIN_SCALE_STEP = 1.05


@dataclass(frozen=True)
class DetectOptions:
    """What :func:`detect` does, checked once. ``stride`` is in pixels of each level
    (default: the net's total stride); ``scales`` overrides the pyramid built from
    ``min_size``, ``max_size`` (an object's longer side in input pixels; default: the
    image's longer side) and ``scale_step``; ``max_detections`` caps the reply after NMS
    (``None``: no cap), and the result says how many the cap cut."""

    mode: str = "fcn"
    stride: int = None
    scales: tuple = None
    min_size: float = 16.0
    max_size: float = None
    scale_step: float = 2 ** (1 / 3)
    score_threshold: float = 0.5
    nms_iou: float = 0.3
    class_agnostic: bool = False
    max_detections: int = 100
    return_maps: bool = False

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {_short(self.mode)}")
        for name in ("score_threshold", "nms_iou"):
            if not _number(getattr(self, name)) or not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {_short(getattr(self, name))}")
        if self.stride is not None and (not _whole(self.stride) or self.stride < 1):
            raise ValueError(f"stride must be a whole number of at least 1, got {_short(self.stride)}")
        if self.max_detections is not None and (not _whole(self.max_detections) or self.max_detections < 1):
            raise ValueError(f"max_detections must be at least 1, got {_short(self.max_detections)}")
        if not _number(self.min_size) or not self.min_size > 0:
            raise ValueError(f"min_size must be a positive number of pixels, got {_short(self.min_size)}")
        if self.max_size is not None and (not _number(self.max_size) or not self.max_size >= self.min_size):
            raise ValueError(f"max_size must be a number at least min_size={self.min_size:g}, "
                             f"got {_short(self.max_size)}")
        if not _number(self.scale_step) or not self.scale_step >= MIN_SCALE_STEP:
            raise ValueError(f"scale_step must be at least {MIN_SCALE_STEP}, got {_short(self.scale_step)}")
        if self.scales is not None:
            scales = tuple(self.scales)
            if not scales or not all(_number(s) and s > 0 for s in scales):
                raise ValueError(f"scales must be positive, finite numbers, got {_short(list(scales))}")
            if len(scales) > MAX_LEVELS:
                raise ValueError(f"at most {MAX_LEVELS} scales, got {len(scales)}")
            if max(scales) > MAX_SCALE:
                raise ValueError(f"scale {max(scales):g} enlarges the image more than {MAX_SCALE:g}x per side; "
                                 "lower the scales")
            object.__setattr__(self, "scales", tuple(float(s) for s in scales))

    def replace(self, **changes):
        """A copy with ``changes``, checked again."""
        return dataclasses.replace(self, **changes)


def _number(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _whole(value):
    return _number(value) and float(value) == int(value)


def _short(value, limit=80):
    """A client's value for an error message, never unboundedly long."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


@dataclass
class Detection:
    box: tuple  # (x0, y0, x1, y1) in the input image's pixels
    label: str
    score: float


@dataclass
class Level:
    scale: float  # level size / input size
    stride: int  # pixels of the level between neighbouring windows
    scores: np.ndarray = field(repr=False)  # (classes, H', W') class probabilities
    pad: int = 0  # window (r, c) covers the level's pixels from (r, c) * stride - pad


@dataclass
class Result:
    detections: list
    levels: list  # with their score maps when asked for, else empty
    timings: dict  # seconds per stage: pyramid, inference, nms
    image_size: tuple  # (height, width)
    truncated: int = 0  # detections NMS kept that max_detections cut


def as_model_input(image, channels):
    """A float32 (H, W, channels) image in [0, 1] from grayscale or BGR(A), uint8 or float
    in [0, 1]: colour becomes gray for a 1-channel model, gray becomes colour for 3."""
    if channels not in (1, 3):
        raise ValueError(f"an image model has 1 (gray) or 3 (BGR) channels, this one has {channels}")
    image = np.asarray(image)
    if image.dtype == np.uint8:
        if image.ndim == 3 and image.shape[2] == 4:
            image = image[:, :, :3]  # alpha goes, as in cv2.COLOR_BGRA2BGR, before the float copy
        image = np.divide(image, np.float32(255), dtype=np.float32)
    elif image.dtype.kind == "f":
        image = image.astype(np.float32)
        if not np.isfinite(image).all():
            raise ValueError("the image holds NaN or infinite values")
        if image.size and (image.min() < 0 or image.max() > 1):
            raise ValueError(f"a float image must lie in [0, 1], got values in "
                             f"[{image.min():g}, {image.max():g}]; pass uint8 or divide by 255")
    else:
        raise TypeError(f"the image must be uint8 or float, got dtype {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
        raise ValueError(f"the image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got shape {image.shape}")
    if image.size == 0:
        raise ValueError(f"the image is empty: shape {image.shape}")
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if channels == 1 and image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    elif channels == 3 and image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(image.reshape(*image.shape[:2], channels))


def pyramid_scales(height, width, window, object_pixels, min_size=16, max_size=None, scale_step=2 ** (1 / 3)):
    """Scales, largest first, so that objects whose longer side is ``min_size``..``max_size``
    pixels reach ``object_pixels`` (the size the classifier was trained on) at some level;
    levels smaller than the window are dropped."""
    max_size = max_size or max(height, width)
    scales, scale = [], object_pixels / min_size
    while scale >= object_pixels / max_size / scale_step ** 0.5 and len(scales) < MAX_LEVELS:
        if round(height * scale) >= window[0] and round(width * scale) >= window[1]:
            scales.append(scale)
        scale /= scale_step
    if not scales:
        raise ValueError(f"the image is {height}x{width} (HxW): no pyramid level of objects between "
                         f"{min_size:g} and {max_size:g} pixels fits the {window[0]}x{window[1]} window")
    return scales


def plan(height, width, net, options):
    """The stride and the levels, [(scale, (width, height)), ...], that :func:`detect`
    runs over a ``height`` x ``width`` image (before padding); errors for a stride the mode
    cannot use or an image no level fits."""
    window, total = net.window, net.total_stride[0]
    stride = options.stride or total
    if options.mode == "fcn" and total % stride:
        raise ValueError(f"in fcn mode the stride must divide the net's total stride {total}, got {stride}")
    if height < window[0] or width < window[1]:
        raise ValueError(f"the image is {height}x{width} (HxW) but the window is {window[0]}x{window[1]}: "
                         "it must be at least as large as the window")
    scales = options.scales or pyramid_scales(height, width, window, net.object_pixels, options.min_size,
                                              options.max_size, options.scale_step)
    if max(scales) > MAX_SCALE:
        raise ValueError(f"scale {max(scales):g} enlarges the image more than {MAX_SCALE:g}x per side: "
                         f"objects under {net.object_pixels / MAX_SCALE:.0f} pixels cannot be found; "
                         "raise min_size or lower the scales")
    levels = []
    for scale in scales:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        if size[0] >= window[1] and size[1] >= window[0]:
            levels.append((scale, size))
    if not levels:
        raise ValueError(f"no pyramid level fits the {window[0]}x{window[1]} window: the scales "
                         f"{_short(list(scales))} shrink the {height}x{width} (HxW) image below it")
    return stride, levels


def cost(image_shape, net, options=None, sample_bytes=1):
    """The :class:`detector.budget.Cost` of :func:`detect` on an image of ``image_shape``
    ((H, W) or (H, W, C)) stored with ``sample_bytes`` per value, without running it."""
    options = options or DetectOptions()
    height, width = image_shape[:2]
    stride, levels = plan(height, width, net, options)
    return estimate(height, width, net, options.mode, stride, [size for _, size in levels],
                           options.return_maps, image_shape[2] if len(image_shape) > 2 else 1, sample_bytes)


def detect(image, net, options=None, tile_rows=None, check=None, budget=None, **changes):
    """Detect the model's objects in ``image``; see the module docstring.

    ``options`` is a :class:`DetectOptions` (default: its defaults), changed by any keyword
    named after one of its fields (``detect(image, net, mode="sliding")``). ``check()``, if
    given, runs between levels, tiles and batches: a deadline or cancellation may raise there
    to stop the work. ``budget`` (a :class:`detector.budget.Budget`) refuses, before any work,
    a request whose estimated work or memory passes its limits.
    """
    options = options or DetectOptions()
    if changes:
        options = options.replace(**changes)
    image = np.asarray(image)
    if budget is not None:
        if image.ndim >= 2:
            _check_image_pixels(image.shape, budget.max_pixels)
        budget.check(cost(image.shape, net, options, image.dtype.itemsize))
    start = time.perf_counter()
    pixels = as_model_input(image, net.channels)
    h, w = pixels.shape[:2]
    stride, plan_levels = plan(h, w, net, options)
    fcn = net.to_fcn() if options.mode == "fcn" else None
    pad = min(net.window) // 2
    # the conversion to the model's channels counts with the pyramid's resizing
    timings = {"pyramid": time.perf_counter() - start, "inference": 0.0, "nms": 0.0}
    levels, found = [], []
    for scale, size in plan_levels:
        if check is not None:
            check()
        start = time.perf_counter()
        x = _level_input(pixels, net, scale, size, pad)
        timings["pyramid"] += time.perf_counter() - start
        start = time.perf_counter()
        raw = fcn_scores(fcn, x, stride, tile_rows, check) if fcn else sliding_scores(net, x, stride, check)
        del x
        probs = _probabilities(raw[:len(net.classes)])
        timings["inference"] += time.perf_counter() - start
        # the level's size was rounded to whole pixels: map boxes back by its real ratios
        ratio = (size[0] / w, size[1] / h)
        found.append(level_boxes(probs, raw[len(net.classes):], net, stride, ratio, options.score_threshold, pad))
        levels.append(Level(ratio[0], stride, probs if options.return_maps else None, pad))
        del raw, probs
    start = time.perf_counter()
    boxes, scores, labels = (np.concatenate(a) for a in zip(*found))
    # a padded level or the box head may reach past the image: keep what lies inside it
    np.clip(boxes, 0, [w, h, w, h], out=boxes)
    inside = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
    boxes, scores, labels = boxes[inside], scores[inside], labels[inside]
    keep = nms(boxes, scores, options.nms_iou, None if options.class_agnostic else labels, check=check)
    cap = len(keep) if options.max_detections is None else options.max_detections
    detections = [Detection(tuple(float(v) for v in boxes[i]), net.classes[labels[i]], float(scores[i]))
                  for i in keep[:cap]]
    timings["nms"] = time.perf_counter() - start
    return Result(detections, levels if options.return_maps else [], timings, (h, w),
                  truncated=max(0, len(keep) - cap))


def _probabilities(scores):
    """Softmax over the classes of a score map (classes, H', W'), in one new array."""
    probs = scores - scores.max(axis=0)
    np.exp(probs, out=probs)
    probs /= probs.sum(axis=0)
    return probs


def _check_image_pixels(shape, max_pixels):
    if shape[0] * shape[1] > max_pixels:
        raise OverBudget(f"the image has {shape[1]}x{shape[0]} = {shape[0] * shape[1]:,} pixels; "
                                f"at most {max_pixels:,} are allowed")


def _level_input(pixels, net, scale, size, pad):
    """The level at ``size`` (width, height), padded by ``pad`` repeated edge pixels, as the
    net's normalised input (1, C, H, W). At most two level-sized arrays live at once."""
    level = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    level = cv2.copyMakeBorder(level, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    level = level.reshape(*level.shape[:2], -1)
    x = np.empty((1, level.shape[2], *level.shape[:2]), np.float32)
    x[0] = level.transpose(2, 0, 1)
    del level
    mean, std = (np.asarray(net.normalisation[k], np.float32).reshape(-1, 1, 1) for k in ("mean", "std"))
    x[0] -= mean
    x[0] /= std
    return x


def fcn_scores(fcn, x, stride, tile_rows, check):
    """Raw output map (outputs, H', W') at ``stride``: one FCN pass, or one per offset,
    interleaved."""
    total = fcn.total_stride[0]
    if stride == total:
        return fcn.scores(x, tile_rows, check)[0]
    k = total // stride
    rows, cols = ((n - f) // stride + 1 for n, f in zip(x.shape[2:], fcn.window))
    out = np.empty((fcn.outputs, rows, cols), x.dtype)
    for a in range(k):
        for b in range(k):
            shifted = x[:, :, a * stride:, b * stride:]
            if shifted.shape[2] >= fcn.window[0] and shifted.shape[3] >= fcn.window[1]:
                out[:, a::k, b::k] = fcn.scores(shifted, tile_rows, check)[0]
    return out


def sliding_scores(net, x, stride, check, batch=512):
    """Raw output map (outputs, H', W') at ``stride`` by classifying every crop alone, a
    batch of crops at a time. The crops are a strided view of the level (1, C, H, W); only
    one batch is ever copied."""
    crops = sliding_window_view(x[0], net.window, axis=(1, 2))[:, ::stride, ::stride]
    channels, rows, cols = crops.shape[:3]
    out = np.empty((net.outputs, rows, cols), x.dtype)
    step = max(1, batch // cols)  # whole rows of windows per batch
    for r0 in range(0, rows, step):
        if check is not None:
            check()
        chunk = crops[:, r0:r0 + step].transpose(1, 2, 0, 3, 4)  # (rows, cols, C, h, w)
        scores = net.forward(chunk.reshape(-1, channels, *net.window))  # copies this batch only
        out[:, r0:r0 + step] = scores.T.reshape(net.outputs, len(chunk), cols)
    return out


def level_boxes(probs, offsets, net, stride, scale, threshold, pad=0):
    """Boxes (in input pixels), scores and class indices of the windows of one level whose
    best object probability passes ``threshold``. ``probs`` (classes, H', W'), ``offsets``
    (4, H', W') from a regression head or empty; ``scale`` is the level's (x, y) size ratio
    to the input, ``pad`` the pixels added around the level."""
    objects = [i for i, c in enumerate(net.classes) if c != net.background]
    # a view when the object classes are contiguous (the background first or last)
    candidates = probs[objects[0]:objects[-1] + 1] if objects[-1] - objects[0] == len(objects) - 1 else probs[objects]
    which = candidates.argmax(axis=0)
    best = np.take_along_axis(candidates, which[None], axis=0)[0]
    rows, cols = np.nonzero(best >= threshold)
    if rows.size == 0:
        return np.empty((0, 4)), np.empty(0), np.empty(0, np.int64)
    which = which[rows, cols]
    labels = np.asarray(objects)[which]
    centres = np.stack([cols * stride + net.window[1] / 2 - pad, rows * stride + net.window[0] / 2 - pad], axis=1)
    widths, heights = net.prior_sizes(labels)
    if len(offsets):
        boxes = box_coding.decode(offsets[:, rows, cols].T, centres, widths, heights)
    else:
        centres = centres + _centroid_shift(candidates, which, rows, cols) * stride
        boxes = np.stack([centres[:, 0] - widths / 2, centres[:, 1] - heights / 2,
                          centres[:, 0] + widths / 2, centres[:, 1] + heights / 2], axis=1)
    return boxes / np.array([scale[0], scale[1], scale[0], scale[1]]), best[rows, cols].astype(np.float64), labels


def _centroid_shift(probs, which, rows, cols):
    """(dx, dy) in map cells of the class's score-weighted centroid over each 3x3
    neighbourhood: a finer centre than the map's grid, for nets without a box head."""
    padded = np.pad(probs, ((0, 0), (1, 1), (1, 1)))
    weights = np.stack([padded[which, rows + 1 + dy, cols + 1 + dx]
                        for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=1)
    offsets = np.array([(dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1)], np.float64)
    return weights @ offsets / weights.sum(axis=1, keepdims=True)
