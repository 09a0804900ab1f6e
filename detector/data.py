"""Generated data: 32x32 grayscale patches of the digits 0-9 and of background.

Nothing is downloaded. Everything is drawn with OpenCV from a seed, so a seed gives the same
data every time (with the same OpenCV version). Pixel values are float32 in [0, 1].

A digit patch holds one digit whose ink is 50-80% of the window's height, centred to within
``JITTER`` pixels. Hershey fonts, stroke widths, small rotations, blur, noise, both polarities
and cluttered backgrounds vary. The background class is ``BACKGROUND_FRACTION`` of the data
and includes the hard cases a detector meets between the right answers:
- plain clutter;
- digits off-centre by a third of the window or more;
- fragments of two neighbouring digits;
- digits far too small or too large for the window.
So the classifier's score peaks where a digit is centred at the right scale.
"""
import functools

import cv2
import numpy as np

CLASSES = ("background",) + tuple(str(d) for d in range(10))
WINDOW = 32
DIGIT_HEIGHT = (0.5, 0.8)  # ink height as a fraction of the window
JITTER = 2.0  # pixels a digit's centre may stray from the window's centre
MAX_ROTATION = 12.0  # degrees
BACKGROUND_FRACTION = 0.5
# the kinds of background sample and their shares of the background class
BACKGROUND_KINDS = {"clutter": 0.35, "off-centre": 0.3, "two fragments": 0.15,
                    "too small": 0.1, "too large": 0.1}

_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
          cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_COMPLEX_SMALL)
_STROKES = (3, 5, 7, 9)  # thickness at the 96-pixel rendering: 0.5 to 2 pixels in a patch
_RENDER_HEIGHT = 96


@functools.lru_cache(maxsize=None)
def _glyph(digit, font, stroke):
    """The digit's ink as a float32 mask in [0, 1], cropped to its bounding box."""
    scale = cv2.getFontScaleFromHeight(font, _RENDER_HEIGHT, stroke)
    (w, h), base = cv2.getTextSize(str(digit), font, scale, stroke)
    pad = 2 * stroke
    canvas = np.zeros((h + base + 2 * pad, w + 2 * pad), np.uint8)
    cv2.putText(canvas, str(digit), (pad, pad + h), font, scale, 255, stroke, cv2.LINE_AA)
    ys, xs = np.nonzero(canvas)
    mask = canvas[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    mask.flags.writeable = False
    return mask


@functools.lru_cache(maxsize=None)
def glyph_aspect(digit):
    """A digit's mean ink width / height over the fonts and strokes drawn."""
    return float(np.mean([_glyph(digit, f, s).shape[1] / _glyph(digit, f, s).shape[0]
                          for f in _FONTS for s in _STROKES]))


def draw_digit(canvas, digit, center, height, rng, value):
    """Blend ``digit`` into the float32 ``canvas`` with its ink box centred at ``center``
    (x, y), ``height`` pixels tall, in intensity ``value``; font, stroke and a small
    rotation are drawn from ``rng``. Returns the ink box (x0, y0, x1, y1)."""
    glyph = _glyph(int(digit), _FONTS[rng.integers(len(_FONTS))], _STROKES[rng.integers(len(_STROKES))])
    scale = height / glyph.shape[0]
    angle = rng.uniform(-MAX_ROTATION, MAX_ROTATION)
    # one affine map: glyph centre -> origin, rotate and scale, origin -> target centre
    gy, gx = (glyph.shape[0] - 1) / 2, (glyph.shape[1] - 1) / 2
    m = cv2.getRotationMatrix2D((gx, gy), angle, scale)
    m[:, 2] += np.array(center) - (gx, gy)
    alpha = cv2.warpAffine(glyph.astype(np.float32) / 255, m, (canvas.shape[1], canvas.shape[0]),
                           flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    canvas *= 1 - alpha
    canvas += alpha * value
    half_w, half_h = glyph.shape[1] * scale / 2, height / 2
    return (center[0] - half_w, center[1] - half_h, center[0] + half_w, center[1] + half_h)


def clutter(shape, rng):
    """A float32 background: a tilted gradient, soft blobs, a few long lines and shapes."""
    h, w = shape
    base = rng.uniform(0.1, 0.9)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx + np.sin(angle) * yy) / max(h, w)
    canvas = (base + rng.uniform(-0.25, 0.25) * ramp).astype(np.float32)
    # low-frequency texture
    coarse = rng.standard_normal((max(2, h // 8), max(2, w // 8))).astype(np.float32)
    canvas += rng.uniform(0, 0.12) * cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(rng.integers(0, 4)):
        value = float(np.clip(base + rng.uniform(-0.5, 0.5), 0, 1))
        kind = rng.integers(3)
        if kind == 0:  # a long line across the area
            p0 = (int(rng.integers(-w, 2 * w)), int(rng.integers(-h, 2 * h)))
            p1 = (int(rng.integers(-w, 2 * w)), int(rng.integers(-h, 2 * h)))
            cv2.line(canvas, p0, p1, value, int(rng.integers(1, 3)), cv2.LINE_AA)
        elif kind == 1:  # a large filled rectangle, mostly outside
            x0, y0 = int(rng.integers(-w, w)), int(rng.integers(-h, h))
            cv2.rectangle(canvas, (x0, y0), (x0 + int(rng.integers(w // 2, 2 * w)), y0 + int(rng.integers(h // 2, 2 * h))), value, -1)
        else:  # a big ellipse outline or a small dot
            center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            if rng.random() < 0.5:
                axes = (int(rng.integers(w, 2 * w)), int(rng.integers(h, 2 * h)))
                cv2.ellipse(canvas, center, axes, float(rng.uniform(0, 180)), 0, 360, value, 1, cv2.LINE_AA)
            else:
                cv2.circle(canvas, center, int(rng.integers(1, 3)), value, -1, cv2.LINE_AA)
    return canvas


def ink_value(canvas, rng):
    """An ink intensity that contrasts with the canvas: dark on light or light on dark."""
    level = float(np.median(canvas))
    contrast = rng.uniform(0.35, 0.8)
    dark, light = level - contrast, level + contrast
    if dark < 0 and light > 1:
        return 0.0 if level > 0.5 else 1.0
    if dark < 0:
        return min(light, 1.0)
    if light > 1:
        return dark
    return dark if rng.random() < 0.5 else light


def finish(canvas, rng):
    """Camera-ish degradation: a little blur and noise, clipped to [0, 1]."""
    if rng.random() < 0.5:
        canvas = cv2.GaussianBlur(canvas, (0, 0), rng.uniform(0.3, 1.0))
    canvas = canvas + rng.normal(0, rng.uniform(0, 0.05), canvas.shape).astype(np.float32)
    return np.clip(canvas, 0, 1, out=canvas)


def _digit_patch(rng, digit):
    canvas = clutter((WINDOW, WINDOW), rng)
    centre = (WINDOW - 1) / 2
    if rng.random() < 0.2:  # a neighbour's fragment at the border, as in a row of digits
        side = rng.choice([-1, 1])
        draw_digit(canvas, rng.integers(10), (centre + side * rng.uniform(24, 30), centre + rng.uniform(-3, 3)),
                   WINDOW * rng.uniform(*DIGIT_HEIGHT), rng, ink_value(canvas, rng))
    jitter = rng.uniform(-JITTER, JITTER, 2)
    draw_digit(canvas, digit, (centre + jitter[0], centre + jitter[1]),
               WINDOW * rng.uniform(*DIGIT_HEIGHT), rng, ink_value(canvas, rng))
    return finish(canvas, rng)


def _background_patch(rng, kind):
    canvas = clutter((WINDOW, WINDOW), rng)
    centre = (WINDOW - 1) / 2
    value = ink_value(canvas, rng)
    if kind == "off-centre":
        angle = rng.uniform(0, 2 * np.pi)
        offset = rng.uniform(WINDOW / 3, WINDOW * 0.75)
        draw_digit(canvas, rng.integers(10), (centre + offset * np.cos(angle), centre + offset * np.sin(angle)),
                   WINDOW * rng.uniform(*DIGIT_HEIGHT), rng, value)
    elif kind == "two fragments":
        gap = rng.uniform(WINDOW / 3, WINDOW / 2)
        for side in (-1, 1):
            draw_digit(canvas, rng.integers(10), (centre + side * gap, centre + rng.uniform(-3, 3)),
                       WINDOW * rng.uniform(*DIGIT_HEIGHT), rng, value)
    elif kind == "too small":
        jitter = rng.uniform(-JITTER, JITTER, 2)
        draw_digit(canvas, rng.integers(10), (centre + jitter[0], centre + jitter[1]),
                   WINDOW * rng.uniform(0.2, 0.32), rng, value)
    elif kind == "too large":
        jitter = rng.uniform(-JITTER, JITTER, 2)
        draw_digit(canvas, rng.integers(10), (centre + jitter[0], centre + jitter[1]),
                   WINDOW * rng.uniform(1.25, 1.8), rng, value)
    return finish(canvas, rng)


def class_counts(n, background_fraction=BACKGROUND_FRACTION):
    """How many of ``n`` patches each class gets: background first, the rest spread evenly."""
    background = int(round(n * background_fraction))
    digits = np.full(10, (n - background) // 10)
    digits[:(n - background) % 10] += 1
    return np.concatenate([[background], digits])


def patches(n, seed, background_fraction=BACKGROUND_FRACTION):
    """``n`` patches and labels: x (n, 1, 32, 32) float32 in [0, 1], labels (n,) int64
    indexing :data:`CLASSES`. Classes follow :func:`class_counts`, in shuffled order."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(CLASSES)), class_counts(n, background_fraction))
    rng.shuffle(labels)
    kinds, shares = list(BACKGROUND_KINDS), np.array(list(BACKGROUND_KINDS.values()))
    x = np.empty((n, 1, WINDOW, WINDOW), np.float32)
    for i, label in enumerate(labels):
        if label == 0:
            x[i, 0] = _background_patch(rng, kinds[rng.choice(len(kinds), p=shares / shares.sum())])
        else:
            x[i, 0] = _digit_patch(rng, label - 1)
    return x, labels.astype(np.int64)


def preview(x, labels, columns=16, zoom=3):
    """A uint8 grid image of patches, each captioned with its class name."""
    n = len(x)
    rows = -(-n // columns)
    cell = WINDOW * zoom
    caption = 14
    grid = np.full((rows * (cell + caption), columns * cell), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, columns)
        tile = cv2.resize((x[i, 0] * 255).astype(np.uint8), (cell, cell), interpolation=cv2.INTER_NEAREST)
        y0 = r * (cell + caption)
        grid[y0:y0 + cell, c * cell:(c + 1) * cell] = tile
        name = CLASSES[labels[i]] if labels[i] else "bg"
        cv2.putText(grid, name, (c * cell + 2, y0 + cell + caption - 3), cv2.FONT_HERSHEY_PLAIN, 0.9, 0, 1)
    return grid


SCENE_SIZES = ((160, 120), (1280, 960))  # smallest and largest (width, height)
SCENE_DIGIT_HEIGHT = (16, 160)  # pixels


def scene(seed, size=None, digits=None):
    """A cluttered canvas with digits at many sizes: (uint8 (H, W) image, boxes (N, 4) as
    (x0, y0, x1, y1), labels (N,) digit strings). ``size`` is (width, height); by default
    it is drawn between :data:`SCENE_SIZES` with a 4:3 aspect. ``digits`` is how many to
    place (by default a number that suits the area); they never overlap."""
    rng = np.random.default_rng(seed)
    if size is None:
        width = int(rng.integers(SCENE_SIZES[0][0], SCENE_SIZES[1][0] + 1))
        size = (width, width * 3 // 4)
    width, height = size
    canvas = clutter((height, width), rng)
    if digits is None:
        digits = int(rng.integers(2, 4 + width * height // 40000 + 1))
    boxes, labels = [], []
    for _ in range(digits * 20):  # tries
        if len(boxes) == digits:
            break
        top = min(SCENE_DIGIT_HEIGHT[1], 0.6 * height)
        h = float(np.exp(rng.uniform(np.log(SCENE_DIGIT_HEIGHT[0]), np.log(top))))
        digit = int(rng.integers(10))
        w = h * glyph_aspect(digit)
        margin = 0.25 * h  # keep digits apart, so each window holds one at most
        cx, cy = rng.uniform(w / 2 + 2, width - w / 2 - 2), rng.uniform(h / 2 + 2, height - h / 2 - 2)
        box = (cx - w / 2 - margin, cy - h / 2 - margin, cx + w / 2 + margin, cy + h / 2 + margin)
        if any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in boxes):
            continue
        patch = canvas[max(0, int(cy - h)):int(cy + h) + 1, max(0, int(cx - w)):int(cx + w) + 1]
        drawn = draw_digit(canvas, digit, (cx, cy), h, rng, ink_value(patch, rng))
        boxes.append(box)
        labels.append((str(digit), drawn))
    image = (finish(canvas, rng) * 255).round().astype(np.uint8)
    return (image, np.array([d for _, d in labels], np.float64).reshape(-1, 4),
            np.array([c for c, _ in labels]))
