"""Detection on images of any size, by sliding windows or by the fully convolutional net.

``detect(image, net)`` builds an image pyramid so that digits from ``min_size`` to
``max_size`` pixels tall reach the classifier's trained size at some level. Each level is
scored in one of two ways:
- ``mode="fcn"``: the net unrolled into a fully convolutional net, run once over the level
  in row tiles;
- ``mode="sliding"``: crops every ``stride`` pixels, classified alone in batches.
Both give the same score maps. Windows whose best digit probability passes the threshold
become boxes in the input's coordinates, and non-maximum suppression keeps the best.

A stride finer than the net's total stride (a divisor of it) runs the FCN once per offset
and interleaves the maps (shift-and-stitch, OverFeat's dense evaluation). The result still
equals sliding windows at that stride.
"""
import time
from dataclasses import dataclass, field

import cv2
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .data import DIGIT_HEIGHT, glyph_aspect
from .model import softmax
from .nms import nms

MODES = ("fcn", "sliding")
# the most a level may enlarge the input per side: beyond it the pyramid would look for
# digits under ~5 pixels tall, and a hostile min_size could ask for an enormous level
MAX_SCALE = 4.0
# the digit height the classifier is trained around: the middle of its range, in window pixels
TRAINED_HEIGHT = float(np.sqrt(DIGIT_HEIGHT[0] * DIGIT_HEIGHT[1]))


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


@dataclass
class Result:
    detections: list
    levels: list  # with their score maps when asked for, else empty
    timings: dict  # seconds per stage: pyramid, inference, nms
    image_size: tuple  # (height, width)


def as_gray(image):
    """A float32 (H, W) image in [0, 1] from grayscale or BGR(A), uint8 or float in [0, 1]."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        image = image.astype(np.float32) / 255
    elif image.dtype.kind == "f":
        image = image.astype(np.float32)
        if image.size and (np.nanmin(image) < 0 or np.nanmax(image) > 1):
            raise ValueError(f"a float image must lie in [0, 1], got values in "
                             f"[{np.nanmin(image):g}, {np.nanmax(image):g}]; pass uint8 or divide by 255")
        if not np.isfinite(image).all():
            raise ValueError("the image holds NaN or infinite values")
    else:
        raise TypeError(f"the image must be uint8 or float, got dtype {image.dtype}")
    if image.ndim == 3 and image.shape[2] in (3, 4):
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim != 2:
        raise ValueError(f"the image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got shape {image.shape}")
    if image.size == 0:
        raise ValueError(f"the image is empty: shape {image.shape}")
    return np.ascontiguousarray(image)


def pyramid_scales(height, width, window, min_size=16, max_size=None, scale_step=2 ** (1 / 3)):
    """Scales, largest first, so that digits ``min_size``..``max_size`` pixels tall reach the
    classifier's trained height at some level; levels smaller than the window are dropped."""
    max_size = max_size or max(height, width)
    if not (np.isfinite(min_size) and np.isfinite(max_size) and 0 < min_size <= max_size):
        raise ValueError(f"need 0 < min_size <= max_size, got min_size={min_size}, max_size={max_size}")
    if not scale_step > 1:
        raise ValueError(f"scale_step must be above 1, got {scale_step}")
    trained = TRAINED_HEIGHT * window[0]
    scales, scale = [], trained / min_size
    while scale >= trained / max_size / scale_step ** 0.5:
        if round(height * scale) >= window[0] and round(width * scale) >= window[1]:
            scales.append(scale)
        scale /= scale_step
    if not scales:
        raise ValueError(f"the image is {height}x{width} (HxW): no pyramid level of digits between "
                         f"{min_size} and {max_size} pixels fits the {window[0]}x{window[1]} window")
    return scales


def detect(image, net, mode="fcn", stride=None, scales=None, min_size=16, max_size=None,
           scale_step=2 ** (1 / 3), score_threshold=0.5, nms_iou=0.3, class_agnostic=False,
           max_detections=100, return_maps=False, tile_rows=None, check=None):
    """Detect digits in ``image`` with the classifier ``net``; see the module docstring.

    ``stride`` is in pixels of each level (default: the net's total stride). ``scales``
    overrides the pyramid built from ``min_size``, ``max_size`` and ``scale_step``.
    ``check()``, if given, runs between tiles and batches: a deadline or cancellation may
    raise there to stop the work.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not 0 <= score_threshold <= 1:
        raise ValueError(f"score_threshold must lie in [0, 1], got {score_threshold}")
    if not 0 <= nms_iou <= 1:
        raise ValueError(f"nms_iou must lie in [0, 1], got {nms_iou}")
    if max_detections is not None and max_detections < 1:
        raise ValueError(f"max_detections must be at least 1, got {max_detections}")
    gray = as_gray(image)
    h, w = gray.shape
    window, total = net.window, net.total_stride[0]
    stride = total if stride is None else int(stride)
    if stride < 1:
        raise ValueError(f"stride must be at least 1, got {stride}")
    if mode == "fcn" and total % stride:
        raise ValueError(f"in fcn mode the stride must divide the net's total stride {total}, got {stride}")
    if h < window[0] or w < window[1]:
        raise ValueError(f"the image is {h}x{w} (HxW) but the window is {window[0]}x{window[1]}: "
                         "it must be at least as large as the window")
    if scales is None:
        scales = pyramid_scales(h, w, window, min_size, max_size, scale_step)
    elif not len(scales) or not all(np.isfinite(s) and s > 0 for s in scales):
        raise ValueError(f"scales must be positive, finite numbers, got {list(scales)!r}")
    if max(scales) > MAX_SCALE:
        raise ValueError(f"scale {max(scales):g} enlarges the image more than {MAX_SCALE:g}x per side: "
                         f"digits under {TRAINED_HEIGHT * window[0] / MAX_SCALE:.0f} pixels cannot be found; "
                         "raise min_size or lower the scales")
    fcn = net.to_fcn() if mode == "fcn" else None
    timings = {"pyramid": 0.0, "inference": 0.0, "nms": 0.0}
    levels, boxes, scores, labels = [], [], [], []
    for scale in scales:
        start = time.perf_counter()
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        if size[0] < window[1] or size[1] < window[0]:
            continue
        level = cv2.resize(gray, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        x = net.normalise(level)[None, None].astype(np.float32)
        timings["pyramid"] += time.perf_counter() - start
        start = time.perf_counter()
        if fcn is not None:
            raw = fcn_scores(fcn, x, stride, tile_rows, check)
        else:
            raw = sliding_scores(net, x, stride, check)
        probs = softmax(raw.reshape(raw.shape[0], -1).T).T.reshape(raw.shape)
        timings["inference"] += time.perf_counter() - start
        # the level's size was rounded to whole pixels: map boxes back by its real ratios
        b, s, c = _level_boxes(probs, stride, (size[0] / w, size[1] / h), window, score_threshold)
        boxes.append(b), scores.append(s), labels.append(c)
        levels.append(Level(size[0] / w, stride, probs if return_maps else None))
    if not boxes:
        raise ValueError(f"no pyramid level fits the {window[0]}x{window[1]} window: the scales "
                         f"{list(scales)} shrink the {h}x{w} (HxW) image below it")
    start = time.perf_counter()
    boxes, scores, labels = (np.concatenate(a) for a in (boxes, scores, labels))
    keep = nms(boxes, scores, nms_iou, None if class_agnostic else labels, max_detections)
    detections = [Detection(tuple(float(v) for v in boxes[i]), net.classes[labels[i]], float(scores[i]))
                  for i in keep]
    timings["nms"] = time.perf_counter() - start
    return Result(detections, levels if return_maps else [], timings, (h, w))


def fcn_scores(fcn, x, stride, tile_rows, check):
    """Score map at ``stride``: one FCN pass, or one per offset, interleaved."""
    total = fcn.total_stride[0]
    if stride == total:
        return fcn.scores(x, tile_rows, check)[0]
    k = total // stride
    rows, cols = ((n - f) // stride + 1 for n, f in zip(x.shape[2:], fcn.window))
    out = np.empty((len(fcn.classes), rows, cols), x.dtype)
    for a in range(k):
        for b in range(k):
            shifted = x[:, :, a * stride:, b * stride:]
            if shifted.shape[2] >= fcn.window[0] and shifted.shape[3] >= fcn.window[1]:
                out[:, a::k, b::k] = fcn.scores(shifted, tile_rows, check)[0]
    return out


def sliding_scores(net, x, stride, check, batch=512):
    """Score map at ``stride`` by classifying every crop alone, a batch of crops at a time.
    The crops are a strided view of the level; only one batch is ever copied."""
    crops = sliding_window_view(x[0, 0], net.window)[::stride, ::stride]
    rows, cols = crops.shape[:2]
    out = np.empty((len(net.classes), rows, cols), x.dtype)
    step = max(1, batch // cols)  # whole rows of windows per batch
    for r0 in range(0, rows, step):
        if check is not None:
            check()
        chunk = crops[r0:r0 + step]
        scores = net.forward(chunk.reshape(-1, 1, *net.window))  # copies this batch only
        out[:, r0:r0 + step] = scores.T.reshape(len(net.classes), len(chunk), cols)
    return out


def _level_boxes(probs, stride, scale, window, threshold):
    """Boxes (in input pixels), scores and class indices of the windows above threshold;
    ``scale`` is the level's (x, y) size ratio to the input."""
    digits = probs[1:]
    label = digits.argmax(axis=0)
    best = np.take_along_axis(digits, label[None], axis=0)[0]
    rows, cols = np.nonzero(best >= threshold)
    if rows.size == 0:
        return np.empty((0, 4)), np.empty(0), np.empty(0, np.int64)
    label = label[rows, cols]
    # refine the centre by the class's score-weighted centroid over the 3x3 neighbourhood
    padded = np.pad(digits, ((0, 0), (1, 1), (1, 1)))
    weights = np.stack([padded[label, rows + 1 + dy, cols + 1 + dx]
                        for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=1)
    offsets = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)], np.float64) * stride
    shift = weights @ offsets / weights.sum(axis=1, keepdims=True)
    cy = rows * stride + (window[0] - 1) / 2 + shift[:, 0]
    cx = cols * stride + (window[1] - 1) / 2 + shift[:, 1]
    height = np.full(rows.size, TRAINED_HEIGHT * window[0])
    width = height * np.array([glyph_aspect(d) for d in range(10)])[label]
    boxes = np.stack([cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2], axis=1)
    return boxes / np.array([scale[0], scale[1], scale[0], scale[1]]), best[rows, cols].astype(np.float64), label + 1
