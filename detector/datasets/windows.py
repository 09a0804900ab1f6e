"""Training windows cut from images with boxes, looking as the detector's pyramid shows them.

The detector resizes the whole image (``cv2.resize``, INTER_AREA when shrinking, INTER_LINEAR
when enlarging) and reads windows at whole-pixel positions of a level. A window here is cut
the same way from a small region only: the region around the window's footprint is resized
by the window's scale (from an exact 2x2-mean halving of the image when it shrinks by 2 or
more, so each window costs about the same) and the window is read at a whole-pixel offset.
So there is no sub-pixel resampling blur, and the returned box targets are exact for the
cut made. As the region and its resized size are whole pixels, the scale is the one drawn
within 0.1% (up to 0.5% near simple ratios such as 1 or 1/2), and the rounded offset lets
an object's centre stray up to 0.5 pixel further than the shift drawn.

Beyond the image, its edge pixels repeat (BORDER_REPLICATE): a mirror would add a phantom
copy of an object cut by the image's edge. The detector never sees such regions (it reads
windows inside a level); they occur only around objects near an edge.

Geometry: boxes are ``(x0, y0, x1, y1)`` with ``x1``/``y1`` the right/bottom edges; the
window is ``(h, w)``, and its "side" is ``min(h, w)``. An object's size is its box's longer
side. A positive window shows an object of size ``object_size * side`` (times a log-uniform
jitter in ``[1/scale_jitter, scale_jitter]``), its box centre at the window centre give or
take ``shift`` pixels in x and y.

Negatives (:func:`negative_windows`) never show any object of the image as a positive
might: no box has a size within ``WRONG_SIZE`` of ``object_size * side`` with its centre
within ``OFF_CENTRE[0]`` of the window (distance over the window's size), and none overlaps
an ignore (crowd) box. The band between the positives' jitter and these limits is left out
of training on purpose: neither answer is wrong there. The kinds, and their default shares
``NEGATIVE_SHARES`` when the image has boxes (only "empty" when it has none):

- "empty": the window's footprint misses the central half (in each dimension) of every
  box; its scale is that of a pyramid level looking for objects of ``min_size`` pixels up
  to the whole image (log-uniform), its footprint inside the image;
- "off-centre": a box at a positive's scale, its centre displaced by a third to two thirds
  of the window, at least ``VISIBLE`` of the box inside it (a partial object);
- "too small": a box centred, its size ``1/WRONG_SIZE_MAX`` to ``1/WRONG_SIZE`` of a
  positive's;
- "too large": a box centred, ``WRONG_SIZE`` to ``WRONG_SIZE_MAX`` times a positive's.

Every function takes a ``numpy.random.Generator`` and is deterministic given it.
"""
import math
import numbers

import cv2
import numpy as np

MIN_OBJECT = 16  # pixels: the smallest object a pyramid looks for (detect()'s min_size)
NEGATIVE_SHARES = {"empty": 0.4, "off-centre": 0.3, "too small": 0.15, "too large": 0.15}
KINDS = tuple(NEGATIVE_SHARES)
WRONG_SIZE = 1.6  # a negative's object is at most 1/1.6 or at least 1.6 times a positive's size
WRONG_SIZE_MAX = 3.2  # ... and at least 1/3.2, at most 3.2 times
OFF_CENTRE = (1 / 3, 2 / 3)  # an off-centre object's displacement, over the window's size
VISIBLE = 0.25  # the least part of an off-centre object's box inside the window
TRIES = 25  # candidates tried per negative window before giving up on it
_MARGIN = 2  # region pixels around a footprint: interpolation support
_LENGTHS = 64  # region lengths tried for a scale nearest the one wanted ...
_SCALE_ERROR = 1e-3  # ... stopping at the first this near (relative)


def _window(window):
    h, w = (window, window) if isinstance(window, numbers.Integral) else tuple(window)
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in (h, w)):
        raise ValueError(f"the window must be an int or a pair (h, w) of positive ints, got {window!r}")
    return int(h), int(w)


def _boxes(boxes, name="boxes"):
    boxes = np.asarray(boxes if boxes is not None else np.zeros((0, 4)), np.float64).reshape(-1, 4)
    if not np.isfinite(boxes).all():
        raise ValueError(f"{name} must be finite, got {boxes[~np.isfinite(boxes).all(axis=1)][0]}")
    bad = np.nonzero((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))[0]
    if len(bad):
        raise ValueError(f"{name}[{bad[0]}] = {boxes[bad[0]].tolist()} has no area: (x0, y0, x1, y1) needs x1 > x0 "
                         "and y1 > y0")
    return boxes


def _positive(name, value, allow_zero=False):
    if not (isinstance(value, numbers.Real) and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)):
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} number, got {value!r}")
    return float(value)


def _count(name, value):
    if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0):
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return int(value)


class _Pyramid:
    """The image, and its exact 2x2-mean halvings (float32 in [0, 1]) built when needed."""

    def __init__(self, image):
        image = np.asarray(image)
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3) or 0 in image.shape:
            raise ValueError(f"the image must be (H, W) gray or (H, W, 3) BGR, got shape {image.shape}")
        if image.dtype.kind == "f":  # a colour conversion may stray a rounding error outside [0, 1]
            if not (np.isfinite(image).all() and image.min() >= -1e-3 and image.max() <= 1 + 1e-3):
                raise ValueError("a float image must hold finite values in [0, 1]")
            image = np.clip(image, 0, 1, dtype=np.float32)
        elif image.dtype != np.uint8:
            raise ValueError(f"the image must be uint8 or float in [0, 1], got dtype {image.dtype}")
        self.levels = [image]
        self.height, self.width = image.shape[:2]
        self.channels = 1 if image.ndim == 2 else 3

    def level(self, k):
        """Level ``k`` (pixel (i, j) covers image pixels 2**k * (i, j) on), or the smallest
        level built when the image is too small to halve ``k`` times."""
        while len(self.levels) <= k:
            top = self.levels[-1]
            h, w = top.shape[0] // 2, top.shape[1] // 2
            if min(h, w) < 4:
                break
            self.levels.append(_halve(top[:2 * h, :2 * w], w, h))
        return min(k, len(self.levels) - 1), self.levels[min(k, len(self.levels) - 1)]


def _halve(image, w, h):
    """The 2x2 means of an even-sized image, float32 in [0, 1] (INTER_AREA's exact halving)."""
    if image.dtype != np.uint8:
        return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    total = image[0::2, 0::2].astype(np.uint16)  # exact sums, without a float copy of the image
    total += image[1::2, 0::2]
    total += image[0::2, 1::2]
    total += image[1::2, 1::2]
    return total.astype(np.float32) * np.float32(1 / 1020)


def _float(a):
    return a.astype(np.float32) * np.float32(1 / 255) if a.dtype == np.uint8 else a


class _Cut:
    """Where and how one window is cut: scale ``s`` (window pixels per image pixel), the
    window's top-left corner at image point ``(x0, y0)``. ``transform`` maps image points
    to window points exactly as the cut does."""

    def __init__(self, pyramid, s, x0, y0, window):
        k = 0 if s >= 1 else int(math.floor(-math.log2(s) + 1e-9))
        self.k, self.level = pyramid.level(k)
        f = 2.0 ** self.k
        self.sk, self.window = s * f, window
        self.axes = [self._axis(origin / f, n) for origin, n in ((y0, window[0]), (x0, window[1]))]
        # v = (u / f - start) * scale - offset, per axis
        (ay, _, _, sy, oy), (ax, _, _, sx, ox) = self.axes
        self.a = np.array([sx / f, sy / f, sx / f, sy / f])
        self.b = np.array([-(ax * sx + ox), -(ay * sy + oy)] * 2)

    def _axis(self, origin, n_out):
        """The region [start, start + length) of the level, resized to ``size`` pixels, and
        the window's ``offset`` in it. Both ends are whole pixels, so ``size / length`` only
        approximates the scale wanted: the shortest length within ``_SCALE_ERROR`` of it is
        taken, else the nearest of ``_LENGTHS`` (near 1, 1/2, 2/3... the error can reach
        half a percent)."""
        start = math.floor(origin) - _MARGIN
        shortest = math.ceil(origin - start + n_out / self.sk) + _MARGIN
        best, error = shortest, math.inf
        for length in range(shortest, shortest + _LENGTHS):
            e = abs(max(1, round(length * self.sk)) / length / self.sk - 1)
            if e < error:
                best, error = length, e
            if e <= _SCALE_ERROR:
                break
        size = max(1, round(best * self.sk))
        scale = size / best
        return start, best, size, scale, round((origin - start) * scale)

    def transform(self, boxes):
        return boxes * self.a + self.b

    def pixels(self):
        """The window, (C, h, w) float32 in [0, 1]."""
        (ay, ly, ny, _, oy), (ax, lx, nx, _, ox) = self.axes
        level = self.level
        hk, wk = level.shape[:2]
        if ay >= 0 and ax >= 0 and ay + ly <= hk and ax + lx <= wk:
            region = level[ay:ay + ly, ax:ax + lx]
        else:
            # beyond the image, its edge pixels repeat (BORDER_REPLICATE)
            rows, columns = np.clip(np.arange(ay, ay + ly), 0, hk - 1), np.clip(np.arange(ax, ax + lx), 0, wk - 1)
            region = level[np.ix_(rows, columns)]
        region = _float(region)
        if (nx, ny) != (lx, ly):
            interpolation = cv2.INTER_AREA if self.sk < 1 else cv2.INTER_LINEAR
            region = cv2.resize(region, (nx, ny), interpolation=interpolation)
        h, w = self.window
        if oy + h > region.shape[0] or ox + w > region.shape[1]:  # rounding: never seen, but be safe
            region = cv2.copyMakeBorder(region, 0, max(0, oy + h - region.shape[0]), 0,
                                        max(0, ox + w - region.shape[1]), cv2.BORDER_REPLICATE)
        patch = np.clip(region[oy:oy + h, ox:ox + w], 0, 1)
        return patch[None] if patch.ndim == 2 else patch.transpose(2, 0, 1)


def _stack(patches, channels, window):
    if not patches:
        return np.zeros((0, channels, *window), np.float32)
    return np.ascontiguousarray(np.stack(patches), np.float32)


def _centred_cut(pyramid, box, s, offset, window):
    """The cut that puts ``box``'s centre at the window's centre plus ``offset`` (dx, dy)."""
    h, w = window
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return _Cut(pyramid, s, cx - (w / 2 + offset[0]) / s, cy - (h / 2 + offset[1]) / s, window)


def positive_windows(image, boxes, window, object_size, rng, per_box=8, scale_jitter=2 ** (1 / 6), shift=2.0,
                     flip=False):
    """``per_box`` windows of each box, each with the box centred and sized as the model is
    trained to find it (see the module docstring), flipped left-right at random when
    ``flip``.

    ``image`` is uint8 (or float in [0, 1]), (H, W) or (H, W, 3). Returns ``x`` (n, C, h, w)
    float32 in [0, 1], the box ``targets`` (n, 4) float32 in window pixels, and ``source``
    (n,) int64, the index of each window's box.
    """
    pyramid, window, boxes = _Pyramid(image), _window(window), _boxes(boxes)
    object_size, per_box = _positive("object_size", object_size), _count("per_box", per_box)
    jitter, shift = _positive("scale_jitter", scale_jitter), _positive("shift", shift, allow_zero=True)
    if jitter < 1:
        raise ValueError(f"scale_jitter must be at least 1, got {scale_jitter}")
    h, w = window
    source = np.repeat(np.arange(len(boxes)), per_box)
    n = len(source)
    factor = np.exp(rng.uniform(-math.log(jitter), math.log(jitter), n))
    offset = rng.uniform(-shift, shift, (n, 2))
    flips = rng.random(n) < 0.5 if flip else np.zeros(n, bool)
    sizes = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    patches, targets = [], np.zeros((n, 4))
    for i, b in enumerate(source):
        cut = _centred_cut(pyramid, boxes[b], object_size * min(window) * factor[i] / sizes[b], offset[i], window)
        patch, targets[i] = cut.pixels(), cut.transform(boxes[b])
        if flips[i]:
            patch = patch[:, :, ::-1]
            targets[i, [0, 2]] = w - targets[i, [2, 0]]
        patches.append(patch)
    return _stack(patches, pyramid.channels, window), targets.astype(np.float32), source.astype(np.int64)


def _allocate(n, shares):
    """``n`` split by ``shares`` (largest remainders), as {kind: count}."""
    names = list(shares)
    weights = np.array([shares[k] for k in names], np.float64)
    if not (np.isfinite(weights).all() and (weights >= 0).all() and weights.sum() > 0):
        raise ValueError(f"the shares of the kinds must be non-negative with a positive sum, got {shares}")
    raw = n * weights / weights.sum()
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[:n - counts.sum()]:
        counts[i] += 1
    return dict(zip(names, counts.tolist()))


def _kinds(kinds, has_boxes):
    if kinds is None:
        shares = dict(NEGATIVE_SHARES)
    elif isinstance(kinds, dict):
        shares = dict(kinds)
    else:
        shares = {k: 1.0 for k in ([kinds] if isinstance(kinds, str) else kinds)}
    unknown = [k for k in shares if k not in KINDS]
    if unknown or not shares:
        raise ValueError(f"unknown kinds of negative window {unknown or kinds!r}: choose among {KINDS}")
    return shares if has_boxes else {"empty": 1.0}


class _Negatives:
    """Draws candidate cuts of each kind and keeps those that show no object as a positive."""

    def __init__(self, pyramid, boxes, ignore, window, object_size, jitter, shift, min_size, rng):
        self.pyramid, self.boxes, self.ignore, self.window = pyramid, boxes, ignore, window
        self.object_size, self.jitter, self.shift, self.min_size, self.rng = object_size, jitter, shift, min_size, rng
        self.side = min(window)
        self.sizes = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        quarter = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, axis=1) / 4
        centres = np.stack([boxes[:, 0] + boxes[:, 2], boxes[:, 1] + boxes[:, 3]] * 2, axis=1) / 2
        self.cores = centres + quarter * np.array([-1, -1, 1, 1])  # the central half of each box

    def _scaled(self, b, low, high):
        """A scale putting box ``b`` at ``object_size * side`` times a log-uniform factor."""
        factor = math.exp(self.rng.uniform(math.log(low), math.log(high)))
        return self.object_size * self.side * factor / self.sizes[b]

    def candidate(self, kind):
        """A cut of ``kind``, and the index of the box it was cut for (None for "empty")."""
        rng, window = self.rng, self.window
        if kind == "empty":
            return _random_cut(self.pyramid, window, rng, self.min_size / self.object_size), None
        b = int(rng.integers(len(self.boxes)))
        if kind == "off-centre":
            s = self._scaled(b, 1 / self.jitter, self.jitter)
            angle, distance = rng.uniform(0, 2 * math.pi), rng.uniform(*OFF_CENTRE)
            offset = (distance * math.cos(angle) * window[1], distance * math.sin(angle) * window[0])
        else:
            low, high = (1 / WRONG_SIZE_MAX, 1 / WRONG_SIZE) if kind == "too small" else (WRONG_SIZE, WRONG_SIZE_MAX)
            s = self._scaled(b, low, high)
            offset = rng.uniform(-self.shift, self.shift, 2)
        return _centred_cut(self.pyramid, self.boxes[b], s, offset, window), b

    def acceptable(self, cut, kind, b):
        h, w = self.window
        footprint = np.array([0, 0, w, h], np.float64)
        footprint = (footprint - cut.b) / cut.a  # the window's extent in the image
        if len(self.ignore) and _overlaps(footprint, self.ignore).any():
            return False
        if kind == "empty" and len(self.boxes) and _overlaps(footprint, self.cores).any():
            return False
        if not len(self.boxes):
            return True
        inside = cut.transform(self.boxes)
        if kind == "off-centre":  # a part of the object shows, not only the background beside it
            x0, y0, x1, y1 = inside[b]
            shown = max(0, min(x1, w) - max(x0, 0)) * max(0, min(y1, h) - max(y0, 0))
            if shown < VISIBLE * (x1 - x0) * (y1 - y0):
                return False
        size = np.maximum(inside[:, 2] - inside[:, 0], inside[:, 3] - inside[:, 1]) / (self.object_size * self.side)
        distance = np.hypot((inside[:, 0] + inside[:, 2]) / 2 / w - 0.5, (inside[:, 1] + inside[:, 3]) / 2 / h - 0.5)
        return not ((size > 1 / WRONG_SIZE) & (size < WRONG_SIZE) & (distance < OFF_CENTRE[0])).any()


def _overlaps(box, boxes):
    return ((np.minimum(box[2], boxes[:, 2]) > np.maximum(box[0], boxes[:, 0]))
            & (np.minimum(box[3], boxes[:, 3]) > np.maximum(box[1], boxes[:, 1])))


def negative_windows(image, boxes, window, object_size, rng, n, kinds=None, ignore_boxes=None,
                     min_size=MIN_OBJECT, scale_jitter=2 ** (1 / 6), shift=2.0):
    """Up to ``n`` background windows of ``image`` that show none of its ``boxes`` as a
    positive would (see the module docstring for the kinds and the rule).

    ``kinds`` is None (the default shares), a kind, a list of kinds (equal shares) or a dict
    kind -> share. ``ignore_boxes`` (crowds) are never overlapped. ``scale_jitter`` and
    ``shift`` should be the positives'. Returns ``x`` (m, C, h, w) float32 in [0, 1], where
    ``m`` is ``n`` unless the boxes leave too little room (each window gets ``TRIES``
    candidates).
    """
    pyramid, window, boxes = _Pyramid(image), _window(window), _boxes(boxes)
    ignore = _boxes(ignore_boxes, "ignore_boxes")
    object_size, n = _positive("object_size", object_size), _count("n", n)
    draw = _Negatives(pyramid, boxes, ignore, window, object_size, _positive("scale_jitter", scale_jitter),
                      _positive("shift", shift, allow_zero=True), _positive("min_size", min_size), rng)
    patches = []
    for kind, count in _allocate(n, _kinds(kinds, len(boxes) > 0)).items():
        kept = 0
        for _ in range(count * TRIES):
            if kept == count:
                break
            cut, b = draw.candidate(kind)
            if draw.acceptable(cut, kind, b):
                patches.append(cut.pixels())
                kept += 1
    return _stack(patches, pyramid.channels, window)


def _random_cut(pyramid, window, rng, min_side=None, max_side=None):
    """A cut at a random position whose footprint lies inside the image, the footprint's
    ``min(window)`` side log-uniform in [``min_side``, ``max_side``] image pixels (default:
    the window's side, no enlargement, up to the largest footprint that fits)."""
    h, w = window
    side = min(window)
    fits = side * min(pyramid.width / w, pyramid.height / h)
    high = fits if max_side is None else min(max_side, fits)
    low = min(side if min_side is None else min_side, high)
    footprint = math.exp(rng.uniform(math.log(low), math.log(high)))
    s = side / footprint
    x0 = rng.uniform(0, max(0.0, pyramid.width - w / s))
    y0 = rng.uniform(0, max(0.0, pyramid.height - h / s))
    return _Cut(pyramid, s, x0, y0, window)


def random_windows(image, window, rng, n, min_side=None, max_side=None):
    """``n`` windows at random positions and scales, for images known to hold no object (a
    negatives folder): the footprint of the window's shorter side is log-uniform in
    [``min_side``, ``max_side``] image pixels (default: the window's side, so no
    enlargement, up to the whole image), as the levels of a pyramid are spaced. Pass
    ``min_side = min_size / object_size`` to cover the levels that enlarge the image too.
    Returns ``x`` (n, C, h, w) float32 in [0, 1]."""
    pyramid, window, n = _Pyramid(image), _window(window), _count("n", n)
    for name, value in (("min_side", min_side), ("max_side", max_side)):
        if value is not None:
            _positive(name, value)
    return _stack([_random_cut(pyramid, window, rng, min_side, max_side).pixels() for _ in range(n)],
                  pyramid.channels, window)
