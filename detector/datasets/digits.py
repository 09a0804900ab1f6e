"""The built-in digits: 32x32 patches and larger scenes of printed digits, drawn from a seed.

Nothing is downloaded. Glyphs are rendered with real TrueType fonts shipped inside
matplotlib (``mpl-data/fonts/ttf``), backgrounds are OpenCV clutter and crops of the
photographs of :mod:`.photos`. Pixel values of patches are float32 in [0, 1]; images are
uint8, gray (H, W) or BGR (H, W, 3).

Fonts. :data:`FONTS` lists the 21 fonts whose digits 0-9 are real lining figures (each was
rendered and looked at). Left out: DejaVuSansDisplay, DejaVuSerifDisplay, the STIXNonUni* and
STIXSiz* fonts and cmex10/cmsy10 (no digit glyphs, or symbols in their place), cmmi10 (old-style
figures: 3, 4, 5, 7 and 9 descend below the baseline) and LastResortHE (boxes). The
``held-out`` fonts, one from each family and never seen by training, measure how well a model
reads fonts it has not met: DejaVuSans-Bold, DejaVuSerif-Italic, DejaVuSansMono-Oblique,
STIXGeneralBol, cmr10.

What varies. Font (family, weight, slant), an extra shear of up to +-:data:`MAX_SHEAR`,
stroke weight (the mask dilated at render size, or eroded where the font has no hairlines;
bold fonts are thickened one step at most), rotation up to +-:data:`MAX_ROTATION`
degrees, horizontal stretch up to +-:data:`MAX_STRETCH`, blur, JPEG artefacts or resampling
softness, gamma, noise, ink contrast and both polarities. With ``channels=3`` ink and
backgrounds get random BGR colours (the ink keeps a luminance contrast with what is behind it);
with ``channels=1`` the same is drawn in gray. In :data:`NUMBER` of digit patches the digit is
part of a number: neighbours of the same font, size and style at the font's own advance,
partly visible at the window's sides. Backgrounds are clutter (lines, rectangles, ellipses,
dots, gradients, soft texture) or a random crop of a training photograph (scale 0.25-2,
flipped, gray or colour, contrast reduced at random, the busier of two), half each.

A digit patch holds one digit centred (its ink box's centre within :data:`JITTER` pixels of the
window's centre) with an ink height of :data:`DIGIT_HEIGHT` of the window. The background class
is :data:`BACKGROUND_FRACTION` of the patches and its kinds, with their shares, are
:data:`BACKGROUND_KINDS`:

- ``clutter``: clutter alone;
- ``photo``: a photograph crop alone (teaches silence on coins, petals, windows);
- ``shapes``: a "dead leaves" picture of overlapping discs, rings, rectangles and pen strokes
  at the scale of digits, the edges, blobs and curves of photographs without their content
  (thirteen training photographs are too few to teach that alone);
- ``off-centre``: a digit whose centre is a third of the window or more away from the centre;
- ``gap``: the window centred on the gap between two digits of a number;
- ``too small``: a digit (or a small number) at most :data:`TOO_SMALL` times the smallest
  positive height;
- ``too large``: a digit at least :data:`TOO_LARGE` times the largest positive height;
- ``not a digit``: letters and symbols of the same fonts (:data:`NOT_DIGITS`; no glyph that
  looks like a digit, such as O, l, S, Z, B, g or q), alone or as a word, centred.

All but ``clutter``, ``photo`` and ``shapes`` are drawn on either background. So the classifier's score
peaks where a digit is centred at the right scale, and only there. Heights between the
positive range and the too-small or too-large ones are never drawn centred: a pyramid level
2**(1/3) away from the best one may score either way, and non-maximum suppression keeps the
best.

Coordinates are pixel edges: pixel (i, j) covers [j, j+1) x [i, i+1), the window's centre is
(WINDOW / 2, WINDOW / 2), and an ink box (x0, y0, x1, y1) covers the ink pixels [x0, x1) x
[y0, y1). The ink of a glyph is where its anti-aliased coverage is at least one half at render
size (128 px per em), mapped through the glyph's rotation, shear and stretch; a digit's
height is the height of that box as drawn.

Reproducibility: the same arguments give the same arrays, bit for bit, with the same
libraries. Rendering depends on Pillow and its FreeType (glyph rasterisation), matplotlib's font
files, OpenCV (warpAffine, resize, GaussianBlur, the drawing functions and its JPEG codec) and
NumPy's random generator; :func:`render_versions` reports them and :func:`fingerprint` hashes
sample output, so a model header and a test can tell when rendering changed.
"""
import functools
import hashlib
import os
from dataclasses import dataclass

import cv2
import numpy as np

from . import photos as _photos

CLASSES = ("background",) + tuple(str(d) for d in range(10))
WINDOW = 32
DIGIT_HEIGHT = (0.55, 0.75)  # ink height as a fraction of the window: a factor 1.36 > 2**(1/3)
JITTER = 2.0  # pixels a digit's centre may stray from the window's centre
MAX_ROTATION = 8.0  # degrees
MAX_SHEAR = 0.2  # x moves by shear * height above the centre
MAX_STRETCH = 0.1  # horizontal scale 1 +- this
NUMBER = 0.3  # share of digit patches whose digit has neighbours, as in a printed number
TOO_SMALL = 0.62  # "too small" digits are at most this times the smallest positive height
TOO_LARGE = 1.5  # "too large" digits are at least this times the largest positive height
BACKGROUND_FRACTION = 0.6  # more background than digits: a detector meets far more of it
# the kinds of background sample and their shares of the background class
BACKGROUND_KINDS = {"clutter": 0.1, "photo": 0.34, "shapes": 0.18, "off-centre": 0.11, "gap": 0.07,
                    "too small": 0.05, "too large": 0.05, "not a digit": 0.1}
PHOTO_BACKGROUND = 0.5  # share of photograph backgrounds where a kind allows either

_FAMILIES = {
    "DejaVu Sans": ("DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique"),
    "DejaVu Sans Mono": ("DejaVuSansMono", "DejaVuSansMono-Bold", "DejaVuSansMono-Oblique",
                         "DejaVuSansMono-BoldOblique"),
    "DejaVu Serif": ("DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic", "DejaVuSerif-BoldItalic"),
    "STIX": ("STIXGeneral", "STIXGeneralBol", "STIXGeneralItalic", "STIXGeneralBolIta"),
    "Computer Modern": ("cmr10", "cmb10", "cmti10", "cmss10", "cmtt10"),
}
HELD_OUT_FONTS = ("DejaVuSans-Bold", "DejaVuSerif-Italic", "DejaVuSansMono-Oblique", "STIXGeneralBol",
                  "cmr10")
_ALL_FONTS = tuple(f for family in _FAMILIES.values() for f in family)
_BOLD = {f for f in _ALL_FONTS if "Bol" in f or f == "cmb10"}
FONTS = {"train": tuple(f for f in _ALL_FONTS if f not in HELD_OUT_FONTS), "held-out": HELD_OUT_FONTS}
# text-like glyphs that no reader would take for a digit (no O o D Q U C G b l I i j J ! | /
# S s $ Z z B g q & y; no < or >, which the Computer Modern fonts draw as inverted ! and ?)
NOT_DIGITS = tuple("AEFHKMNRTVWXYacehkmnrtuvwx") + tuple("%#-+=?*@[]()")

_RENDER_SIZE = 128  # font size (em) in pixels at which glyphs are rendered and cached
_LEVELS = 5  # cached halvings of each mask: 1, 1/2, ... 1/16
_WEIGHT_STEP = 2  # dilation radius per weight step, in render pixels
_WEIGHTS = (-1, 0, 1, 2, 3)  # stroke weight steps (-1 erodes) ...
_WEIGHT_P = (0.15, 0.4, 0.25, 0.14, 0.06)  # ... and how often each is drawn
_LUMA = np.array([0.114, 0.587, 0.299], np.float32)  # BGR weights of OpenCV's gray


# ---------------------------------------------------------------------------------------------
# glyphs

def font_path(font):
    """The file of ``font`` (a name from :data:`FONTS`) inside matplotlib's fonts."""
    import matplotlib
    if font not in _ALL_FONTS:
        raise ValueError(f"unknown font {font!r}; choose from {', '.join(_ALL_FONTS)}")
    path = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", font + ".ttf")
    if not os.path.exists(path):
        raise FileNotFoundError(f"font {font!r} is not in this matplotlib ({path})")
    return path


@functools.lru_cache(maxsize=None)
def _truetype(font):
    from PIL import ImageFont
    return ImageFont.truetype(font_path(font), _RENDER_SIZE)


@functools.lru_cache(maxsize=None)
def _render(char, font):
    """(uint8 coverage mask, its top-left corner relative to the pen origin, advance)."""
    from PIL import Image, ImageDraw
    face = _truetype(font)
    side = 3 * _RENDER_SIZE
    image = Image.new("L", (side, side), 0)
    ImageDraw.Draw(image).text((_RENDER_SIZE, 2 * _RENDER_SIZE), char, font=face, fill=255, anchor="ls")
    mask = np.asarray(image)
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        raise ValueError(f"font {font!r} has no glyph for {char!r}")
    pad = _WEIGHT_STEP * max(_WEIGHTS) + 2
    y0, x0 = ys.min() - pad, xs.min() - pad
    mask = mask[y0:ys.max() + 1 + pad, x0:xs.max() + 1 + pad]
    return mask, (float(x0 - _RENDER_SIZE), float(y0 - 2 * _RENDER_SIZE)), float(face.getlength(char))


def _reweigh(mask, weight):
    if weight == 0:
        return mask
    radius = _WEIGHT_STEP * abs(weight)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return (cv2.dilate if weight > 0 else cv2.erode)(mask, kernel)


@functools.lru_cache(maxsize=None)
def _erodible(font):
    """Whether eroding keeps every digit of ``font`` whole (thin serifs and hairlines break)."""
    for digit in "0123456789":
        mask = _render(digit, font)[0]
        before = cv2.connectedComponents((mask >= 128).astype(np.uint8))[0]
        thin = _reweigh(mask, -1) >= 128
        if cv2.connectedComponents(thin.astype(np.uint8))[0] != before or thin.sum() < 0.55 * (mask >= 128).sum():
            return False
    return True


@dataclass(frozen=True)
class _Glyph:
    levels: tuple  # uint8 masks: the rendering and its halvings
    corner: tuple  # (x, y) of the masks' top-left corner relative to the pen origin, render pixels
    box: tuple  # ink box (x0, y0, x1, y1) relative to the pen origin
    hull: np.ndarray  # (m, 2) corners of the ink's convex hull relative to the pen origin
    advance: float


@functools.lru_cache(maxsize=None)
def _glyph(char, font, weight):
    mask, corner, advance = _render(char, font)
    thinned = _reweigh(mask, weight)
    if weight >= 0 or (_erodible(font) and (thinned >= 128).sum() >= 0.5 * (mask >= 128).sum()):
        mask = thinned  # (thin fonts, and symbols that erosion would wipe out, keep their weight)
    ys, xs = np.nonzero(mask)
    y0, x0 = ys.min() - 1, xs.min() - 1
    mask = mask[y0:ys.max() + 2, x0:xs.max() + 2]
    corner = (corner[0] + x0, corner[1] + y0)
    step = 2 ** (_LEVELS - 1)  # pad so that each halving is exact
    h, w = mask.shape
    mask = np.pad(mask, ((0, -h % step), (0, -w % step)))
    levels = [mask]
    for _ in range(_LEVELS - 1):
        levels.append(cv2.resize(levels[-1], (levels[-1].shape[1] // 2, levels[-1].shape[0] // 2),
                                 interpolation=cv2.INTER_AREA))
    for level in levels:
        level.flags.writeable = False
    ink = cv2.findNonZero((mask >= 128).astype(np.uint8))
    hull = cv2.convexHull(ink).reshape(-1, 2).astype(np.float64)
    # each hull pixel's four corners, in pen-origin coordinates
    hull = (hull[:, None, :] + np.array([[0, 0], [1, 0], [0, 1], [1, 1]])).reshape(-1, 2) + corner
    hull.flags.writeable = False
    box = (hull[:, 0].min(), hull[:, 1].min(), hull[:, 0].max(), hull[:, 1].max())
    return _Glyph(tuple(levels), corner, tuple(float(v) for v in box), hull, advance)


def _digit_height(font, weight):
    """The ink height of "0" in ``font`` at ``weight``: the scale reference of every glyph."""
    box = _glyph("0", font, weight).box
    return box[3] - box[1]


@functools.lru_cache(maxsize=None)
def glyph_aspect(digit):
    """A digit's mean ink width / height over the training fonts, upright and at their own
    weight (shear, rotation and stretch average out to about this)."""
    boxes = [_glyph(str(int(digit)), font, 0).box for font in FONTS["train"]]
    return float(np.mean([(b[2] - b[0]) / (b[3] - b[1]) for b in boxes]))


# ---------------------------------------------------------------------------------------------
# drawing

@dataclass(frozen=True)
class Style:
    """How a run of glyphs is drawn: font, stroke weight step (-1 to 3; 0 is the font's
    own), rotation in degrees (counter-clockwise), shear (x moves right by ``shear`` times the
    height above the centre) and horizontal stretch."""
    font: str
    weight: int = 0
    angle: float = 0.0
    shear: float = 0.0
    stretch: float = 1.0


def random_style(rng, fonts):
    """A :class:`Style` with a font from ``fonts`` and weight, rotation, shear and stretch
    drawn from their documented ranges."""
    font = fonts[rng.integers(len(fonts))]
    weight = int(rng.choice(_WEIGHTS, p=_WEIGHT_P))
    if weight < 0 and not _erodible(font):
        weight = 0
    if font in _BOLD:  # heavier still would close the counters of 0, 6, 8 and 9
        weight = min(weight, 1)
    return Style(font, weight, float(rng.uniform(-MAX_ROTATION, MAX_ROTATION)),
                 float(rng.uniform(-MAX_SHEAR, MAX_SHEAR)), float(1 + rng.uniform(-MAX_STRETCH, MAX_STRETCH)))


def layout(text, center, height, style, anchor=0):
    """Typeset ``text`` in ``style``: the glyphs at the font's advances, all through the same
    rotation, shear and stretch, scaled and placed so that glyph ``anchor``'s ink box as
    drawn is ``height`` pixels tall and centred at ``center`` (x, y). Returns (glyphs, affine
    maps (2, 3) from pen-origin render pixels to canvas pixels, ink boxes (len(text), 4))."""
    glyphs = [_glyph(c, style.font, style.weight) for c in text]
    pens = np.concatenate([[0.0], np.cumsum([g.advance for g in glyphs[:-1]])])
    angle = np.deg2rad(style.angle)
    rotate = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    linear = rotate @ np.array([[1.0, -style.shear], [0.0, 1.0]]) @ np.diag([style.stretch, 1.0])
    ink = (glyphs[anchor].hull + (pens[anchor], 0.0)) @ linear.T
    low, high = ink.min(0), ink.max(0)
    linear = linear * (height / (high[1] - low[1]))
    shift = np.asarray(center, np.float64) - (low + high) / 2 * (height / (high[1] - low[1]))
    maps, boxes = [], []
    for glyph, pen in zip(glyphs, pens):
        m = np.empty((2, 3))
        m[:, :2] = linear
        m[:, 2] = shift + linear[:, 0] * pen
        corners = glyph.hull @ linear.T + m[:, 2]
        maps.append(m)
        boxes.append((*corners.min(0), *corners.max(0)))
    return glyphs, maps, np.array(boxes, np.float64).reshape(-1, 4)


def draw(canvas, text, center, height, style, ink, anchor=0):
    """Blend ``text`` (see :func:`layout`) into the float32 ``canvas`` ((H, W) or (H, W, 3))
    in colour ``ink`` (a sequence of 1 or 3 values in [0, 1]). Returns the ink boxes
    (len(text), 4) as (x0, y0, x1, y1)."""
    glyphs, maps, boxes = layout(text, center, height, style, anchor)
    for glyph, m in zip(glyphs, maps):
        _blend(canvas, glyph, m, ink)
    return boxes


def _blend(canvas, glyph, m, ink):
    # the level nearest the drawn size, so that warpAffine resamples by a factor 0.7-1.4
    size = np.sqrt(abs(np.linalg.det(m[:, :2])))
    k = int(np.clip(np.round(-np.log2(max(size, 1e-6))), 0, _LEVELS - 1))
    level, f = glyph.levels[k], 2.0 ** k
    h, w = glyph.levels[0].shape
    rect = np.array([[0, 0], [w, 0], [0, h], [w, h]], np.float64) + glyph.corner
    corners = rect @ m[:, :2].T + m[:, 2]
    x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int) - 1, 0)
    x1 = min(int(np.ceil(corners[:, 0].max())) + 1, canvas.shape[1])
    y1 = min(int(np.ceil(corners[:, 1].max())) + 1, canvas.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    # level pixel (j, i) has its centre at render (j + 1/2) f + corner; canvas pixel centres are
    # at integer + 1/2 in edge coordinates
    warp = np.empty((2, 3))
    warp[:, :2] = m[:, :2] * f
    warp[:, 2] = m[:, :2] @ (np.array(glyph.corner) + 0.5 * f) + m[:, 2] - 0.5 - (x0, y0)
    alpha = cv2.warpAffine(level, warp, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR)
    alpha = alpha.astype(np.float32) * np.float32(1 / 255)
    region = canvas[y0:y1, x0:x1]
    if canvas.ndim == 3:
        alpha = alpha[..., None]
        region += alpha * (np.asarray(ink, np.float32) - region)
    else:
        region += alpha * (np.float32(ink[0]) - region)


# ---------------------------------------------------------------------------------------------
# colours, backgrounds and degradation

def luminance(canvas):
    """Gray of a float32 (H, W) or BGR (H, W, 3) canvas, as OpenCV converts it."""
    return canvas if canvas.ndim == 2 else cv2.cvtColor(canvas, cv2.COLOR_BGR2GRAY)


def _colour(rng, channels, level):
    """A colour of ``channels`` values in [0, 1] whose luminance is about ``level``."""
    if channels == 1:
        return np.array([level], np.float32)
    hue = rng.uniform(0, 1, 3).astype(np.float32)
    colour = np.clip(level + rng.uniform(0, 1) * (hue - hue @ _LUMA), 0, 1)
    return colour if abs(colour @ _LUMA - level) < 0.08 else np.full(3, level, np.float32)


def ink_colour(background, rng):
    """An ink that contrasts with ``background`` (a float32 area): dark on light or light on
    dark by a luminance of 0.3-0.85 where that fits, in random hue when it has 3 channels."""
    level = float(np.median(luminance(background)))
    contrast = rng.uniform(0.3, 0.85)
    dark, light = level - contrast, level + contrast
    if dark < 0 and light > 1:
        target = 0.0 if level > 0.5 else 1.0
    elif dark < 0:
        target = min(light, 1.0)
    elif light > 1:
        target = dark
    else:
        target = dark if rng.random() < 0.5 else light
    channels = 1 if background.ndim == 2 else 3
    return _colour(rng, channels, target)


@functools.lru_cache(maxsize=8)
def _grid(h, w):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / max(h, w)
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


def _lum(colour):
    return float(colour[0]) if len(colour) == 1 else float(colour @ _LUMA)


def clutter(shape, rng, channels=1):
    """A float32 background (H, W) or (H, W, 3): a tilted gradient, soft texture, and a few
    long lines, large rectangles, big ellipse outlines and dots."""
    h, w = shape
    base = _colour(rng, channels, rng.uniform(0.1, 0.9))
    yy, xx = _grid(h, w)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.float32(np.cos(angle)) * xx + np.float32(np.sin(angle)) * yy
    tilt = rng.uniform(-0.25, 0.25, channels).astype(np.float32)
    coarse = rng.standard_normal((max(2, h // 8), max(2, w // 8)), dtype=np.float32)
    texture = np.float32(rng.uniform(0, 0.12)) * cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    if channels == 1:
        canvas = base[0] + tilt[0] * ramp + texture
    else:
        canvas = base + tilt * ramp[..., None] + texture[..., None]
    canvas = np.ascontiguousarray(canvas, np.float32)
    for _ in range(rng.integers(0, 4)):
        level = float(np.clip(_lum(base) + rng.uniform(-0.5, 0.5), 0, 1))
        colour = tuple(float(v) for v in _colour(rng, channels, level))
        kind = rng.integers(3)
        if kind == 0:  # a long line across the area
            p0 = (int(rng.integers(-w, 2 * w)), int(rng.integers(-h, 2 * h)))
            p1 = (int(rng.integers(-w, 2 * w)), int(rng.integers(-h, 2 * h)))
            cv2.line(canvas, p0, p1, colour, int(rng.integers(1, 3)), cv2.LINE_AA)
        elif kind == 1:  # a large filled rectangle, mostly outside
            x0, y0 = int(rng.integers(-w, w)), int(rng.integers(-h, h))
            x1, y1 = x0 + int(rng.integers(w // 2, 2 * w)), y0 + int(rng.integers(h // 2, 2 * h))
            cv2.rectangle(canvas, (x0, y0), (x1, y1), colour, -1)
        else:  # a big ellipse outline or a small dot
            center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            if rng.random() < 0.5:
                axes = (int(rng.integers(w, 2 * w)), int(rng.integers(h, 2 * h)))
                cv2.ellipse(canvas, center, axes, float(rng.uniform(0, 180)), 0, 360, colour, 1, cv2.LINE_AA)
            else:
                cv2.circle(canvas, center, int(rng.integers(1, 3)), colour, -1, cv2.LINE_AA)
    return canvas


def photo_crop(shape, rng, names, channels=1, scale=(0.25, 2.0), tries=2):
    """A float32 (H, W) or (H, W, 3) crop of a photograph from ``names``, resized by a factor
    drawn log-uniformly from ``scale``, flipped at random, its contrast reduced at random; in
    colour 30% of the crops are gray. The busiest of ``tries`` crops is kept: flat sky and
    blur teach little."""
    h, w = shape
    name = names[rng.integers(len(names))]
    colour = channels == 3 and rng.random() < 0.7
    image = _photos.load(name, 3 if colour else 1)
    best = None
    for _ in range(tries):
        factor = float(np.exp(rng.uniform(np.log(scale[0]), np.log(scale[1]))))
        factor = max(factor, h / image.shape[0], w / image.shape[1])  # the crop must fit
        ch, cw = min(image.shape[0], round(h / factor)), min(image.shape[1], round(w / factor))
        y0, x0 = rng.integers(0, image.shape[0] - ch + 1), rng.integers(0, image.shape[1] - cw + 1)
        out = cv2.resize(image[y0:y0 + ch, x0:x0 + cw], (w, h),
                         interpolation=cv2.INTER_AREA if cw > w else cv2.INTER_LINEAR)
        spread = float(out.std())
        if best is None or spread > best[0]:
            best = (spread, out)
    out = best[1]
    if rng.random() < 0.5:
        out = cv2.flip(out, 1)
    if h == w:  # a square crop may also turn: thirteen photographs, eight orientations each
        out = np.ascontiguousarray(np.rot90(out, int(rng.integers(4))))
    out = out.astype(np.float32) * np.float32(1 / 255)
    mean = np.float32(out.mean())
    out = mean + np.float32(rng.uniform(0.4, 1.0)) * (out - mean)
    if channels == 3 and not colour:
        out = cv2.merge([out, out, out])
    return out


def _scene_photo(shape, rng, names, channels):
    # a 4:3-ish crop covering most of a photograph, resized to the scene
    h, w = shape
    name = names[rng.integers(len(names))]
    image = _photos.load(name, channels)
    fit = min(image.shape[0] / h, image.shape[1] / w) * rng.uniform(0.5, 1.0)
    ch, cw = max(1, round(h * fit)), max(1, round(w * fit))
    y0, x0 = rng.integers(0, image.shape[0] - ch + 1), rng.integers(0, image.shape[1] - cw + 1)
    out = cv2.resize(image[y0:y0 + ch, x0:x0 + cw], (w, h),
                     interpolation=cv2.INTER_AREA if cw > w else cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        out = cv2.flip(out, 1)
    out = out.astype(np.float32) * np.float32(1 / 255)
    mean = np.float32(out.mean())
    return mean + np.float32(rng.uniform(0.5, 1.0)) * (out - mean)


def finish(canvas, rng):
    """Camera and print degradation of a float32 canvas, clipped to [0, 1]: blur, JPEG
    artefacts or resampling softness, gamma, noise."""
    if rng.random() < 0.5:
        canvas = cv2.GaussianBlur(canvas, (0, 0), rng.uniform(0.3, 1.1))
    soft = rng.random()
    if soft < 0.15:  # a JPEG round trip
        quality = int(rng.integers(20, 90))
        code = cv2.imencode(".jpg", (np.clip(canvas, 0, 1) * 255).round().astype(np.uint8),
                            [cv2.IMWRITE_JPEG_QUALITY, quality])[1]
        canvas = cv2.imdecode(code, cv2.IMREAD_UNCHANGED).astype(np.float32) * np.float32(1 / 255)
    elif soft < 0.3:  # resampled down and up
        h, w = canvas.shape[:2]
        f = rng.uniform(0.5, 0.8)
        small = cv2.resize(canvas, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        canvas = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    np.clip(canvas, 0, 1, out=canvas)
    if rng.random() < 0.3:
        canvas **= np.float32(np.exp(rng.uniform(-0.35, 0.35)))
    sigma = rng.uniform(0, 0.05)
    canvas += np.float32(sigma) * rng.standard_normal(canvas.shape, dtype=np.float32)
    return np.clip(canvas, 0, 1, out=canvas)


# ---------------------------------------------------------------------------------------------
# patches

@dataclass(frozen=True)
class _Source:
    channels: int
    fonts: tuple
    photos: tuple


def _source(channels, fonts, photos):
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if isinstance(fonts, str):
        if fonts not in FONTS:
            raise ValueError(f"fonts must be 'train', 'held-out' or a sequence of font names, got {fonts!r}")
        fonts = FONTS[fonts]
    fonts = tuple(fonts)
    for font in fonts:
        font_path(font)
    if not fonts:
        raise ValueError("no fonts given")
    photos = _photos.photos(photos) if isinstance(photos, str) else tuple(photos)
    if not photos:
        raise ValueError("no photographs given")
    return _Source(channels, fonts, photos)


def _background(rng, src, kind=None):
    if kind == "photo" or (kind is None and rng.random() < PHOTO_BACKGROUND):
        return photo_crop((WINDOW, WINDOW), rng, src.photos, src.channels)
    return clutter((WINDOW, WINDOW), rng, src.channels)


def _positive_height(rng):
    return WINDOW * rng.uniform(*DIGIT_HEIGHT)


def _digits(rng, n):
    return "".join(str(d) for d in rng.integers(0, 10, n))


def _digit_patch(rng, src, digit):
    canvas = _background(rng, src)
    style = random_style(rng, src.fonts)
    left = right = ""
    if rng.random() < NUMBER:  # part of a number: one or two digits on one side or both
        side = rng.integers(3)
        left = _digits(rng, int(rng.integers(1, 3))) if side != 1 else ""
        right = _digits(rng, int(rng.integers(1, 3))) if side != 0 else ""
    centre = WINDOW / 2 + rng.uniform(-JITTER, JITTER, 2)
    boxes = draw(canvas, left + str(digit) + right, centre, _positive_height(rng), style,
                 ink_colour(canvas, rng), anchor=len(left))
    return finish(canvas, rng), boxes[len(left)]


def dead_leaves(canvas, rng, n=None):
    """Overlapping filled discs, rings, rectangles and curved pen strokes of random
    colours drawn in place on the float32 ``canvas``: a few at 15-100% of the canvas's
    side, or (half the time) a dense texture of many small ones, as grass and twigs are."""
    h, w = canvas.shape[:2]
    channels = 1 if canvas.ndim == 2 else 3
    side = min(h, w)
    dense = n is None and rng.random() < 0.5
    count = n if n is not None else int(rng.integers(15, 40) if dense else rng.integers(3, 9))
    for _ in range(count):
        colour = tuple(float(v) for v in _colour(rng, channels, rng.uniform(0.05, 0.95)))
        centre = (int(rng.integers(-side // 4, w + side // 4)), int(rng.integers(-side // 4, h + side // 4)))
        size = int(side * (rng.uniform(0.05, 0.35) if dense else rng.uniform(0.15, 1.0)))
        kind = rng.integers(4)
        if kind == 0:  # a disc or an ellipse
            axes = (max(1, size // 2), max(1, int(size * rng.uniform(0.4, 1.0)) // 2))
            cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
        elif kind == 1:  # a ring or an arc, as thick as a digit's stroke
            axes = (max(1, size // 2), max(1, int(size * rng.uniform(0.5, 1.0)) // 2))
            start = float(rng.uniform(0, 360))
            cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), start, start + rng.uniform(90, 360),
                        colour, int(rng.integers(1, 4)), cv2.LINE_AA)
        elif kind == 2:  # a rectangle, turned
            box = (centre, (size, int(size * rng.uniform(0.2, 1.0))), float(rng.uniform(0, 180)))
            cv2.fillPoly(canvas, [cv2.boxPoints(box).round().astype(np.int32)], colour, cv2.LINE_AA)
        else:  # a pen stroke: a smooth random curve
            t = np.linspace(0, 1, 12)[:, None]
            ends = rng.uniform(-0.5, 0.5, (3, 2)) * size
            curve = (1 - t) ** 2 * ends[0] + 2 * t * (1 - t) * ends[1] + t ** 2 * ends[2] + centre
            cv2.polylines(canvas, [curve.round().astype(np.int32)], False, colour, int(rng.integers(1, 4)),
                          cv2.LINE_AA)
    return canvas


def _background_patch(rng, src, kind):
    canvas = _background(rng, src, "photo" if kind == "photo" else "clutter" if kind == "clutter" else None)
    if kind in ("clutter", "photo"):
        return finish(canvas, rng)
    if kind == "shapes":
        return finish(dead_leaves(canvas, rng), rng)
    style = random_style(rng, src.fonts)
    ink = ink_colour(canvas, rng)
    middle = WINDOW / 2
    if kind == "off-centre":
        angle, offset = rng.uniform(0, 2 * np.pi), rng.uniform(WINDOW / 3, WINDOW * 0.75)
        draw(canvas, _digits(rng, 1), middle + offset * np.array([np.cos(angle), np.sin(angle)]),
             _positive_height(rng), style, ink)
    elif kind == "gap":
        text = _digits(rng, int(rng.integers(2, 5)))
        gap = int(rng.integers(len(text) - 1))
        height = _positive_height(rng)
        _, _, boxes = layout(text, (0.0, 0.0), height, style, anchor=gap)
        mid = (boxes[gap, :2] + boxes[gap, 2:] + boxes[gap + 1, :2] + boxes[gap + 1, 2:]) / 4
        draw(canvas, text, middle - mid + rng.uniform(-JITTER, JITTER, 2), height, style, ink, anchor=gap)
    elif kind == "too small":
        text = _digits(rng, int(rng.integers(1, 5)))
        height = WINDOW * rng.uniform(0.2, TOO_SMALL * DIGIT_HEIGHT[0])
        draw(canvas, text, middle + rng.uniform(-3, 3, 2), height, style, ink, anchor=int(rng.integers(len(text))))
    elif kind == "too large":
        height = WINDOW * rng.uniform(TOO_LARGE * DIGIT_HEIGHT[1], 2.0)
        draw(canvas, _digits(rng, 1), middle + rng.uniform(-4, 4, 2), height, style, ink)
    elif kind == "not a digit":
        text = "".join(NOT_DIGITS[i] for i in rng.integers(0, len(NOT_DIGITS), int(rng.choice([1, 1, 2, 3]))))
        anchor = int(rng.integers(len(text)))
        glyph = _glyph(text[anchor], style.font, style.weight)
        # the font size at which a digit would be a positive: letters keep their own height
        height = _positive_height(rng) * (glyph.box[3] - glyph.box[1]) / _digit_height(style.font, style.weight)
        draw(canvas, text, middle + rng.uniform(-JITTER, JITTER, 2), height, style, ink, anchor=anchor)
    else:
        raise ValueError(f"unknown background kind {kind!r}")
    return finish(canvas, rng)


def class_counts(n, background_fraction=BACKGROUND_FRACTION):
    """How many of ``n`` patches each class gets: background first, the rest spread evenly."""
    background = int(round(n * background_fraction))
    digits = np.full(10, (n - background) // 10)
    digits[:(n - background) % 10] += 1
    return np.concatenate([[background], digits])


def patches(n, seed, channels=1, fonts="train", photos="train", background_fraction=BACKGROUND_FRACTION):
    """``n`` patches: x (n, channels, 32, 32) float32 in [0, 1] (BGR when ``channels`` is 3),
    labels (n,) int64 indexing :data:`CLASSES`, boxes (n, 4) float32, the centred digit's
    ink box (x0, y0, x1, y1) in window pixels (NaN for background). Classes follow
    :func:`class_counts`, in shuffled order. ``fonts`` and ``photos`` are "train",
    "held-out" or sequences of names."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    src = _source(channels, fonts, photos)
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(CLASSES)), class_counts(n, background_fraction))
    rng.shuffle(labels)
    kinds, shares = list(BACKGROUND_KINDS), np.array(list(BACKGROUND_KINDS.values()))
    shares = shares / shares.sum()
    x = np.empty((n, channels, WINDOW, WINDOW), np.float32)
    boxes = np.full((n, 4), np.nan, np.float32)
    for i, label in enumerate(labels):
        if label == 0:
            patch = _background_patch(rng, src, kinds[rng.choice(len(kinds), p=shares)])
        else:
            patch, boxes[i] = _digit_patch(rng, src, label - 1)
        x[i] = patch if channels == 1 else patch.transpose(2, 0, 1)
    return x, labels.astype(np.int64), boxes


def preview(x, labels, columns=16, zoom=3):
    """A uint8 grid image of patches (BGR when they have 3 channels), each captioned with
    its class name ("bg" for background)."""
    n, channels = len(x), x.shape[1]
    rows = -(-n // columns)
    cell, caption = WINDOW * zoom, 14
    grid = np.full((rows * (cell + caption), columns * cell, channels), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, columns)
        tile = (np.clip(x[i], 0, 1).transpose(1, 2, 0) * 255).round().astype(np.uint8)
        tile = cv2.resize(tile, (cell, cell), interpolation=cv2.INTER_NEAREST).reshape(cell, cell, channels)
        y0 = r * (cell + caption)
        grid[y0:y0 + cell, c * cell:(c + 1) * cell] = tile
        name = CLASSES[labels[i]] if labels[i] else "bg"
        cv2.putText(grid, name, (c * cell + 2, y0 + cell + caption - 3), cv2.FONT_HERSHEY_PLAIN, 0.9,
                    (0,) * channels, 1)
    return np.ascontiguousarray(grid[..., 0]) if channels == 1 else grid


# ---------------------------------------------------------------------------------------------
# scenes

SCENE_SIZES = ((160, 120), (1280, 960))  # smallest and largest (width, height)
SCENE_DIGIT_HEIGHT = (16, 160)  # pixels
SCENE_PHOTO = 0.4  # share of scenes drawn on a photograph
SCENE_MARGIN = 0.25  # free space around each digit, as a fraction of its height


def scene(seed, size=None, digits=None, channels=1, fonts="train", photos="train"):
    """A canvas with digits at many sizes: (uint8 image (H, W) or BGR (H, W, 3), ink boxes
    (N, 4) float64 as (x0, y0, x1, y1), labels (N,) digit strings). ``size`` is (width,
    height); by default it is drawn between :data:`SCENE_SIZES` with a 4:3 aspect. ``digits``
    is how many to place (by default a number that suits the area); they never overlap and
    keep :data:`SCENE_MARGIN` of their height apart, so a window holds one digit at most."""
    src = _source(channels, fonts, photos)
    rng = np.random.default_rng(seed)
    if size is None:
        width = int(rng.integers(SCENE_SIZES[0][0], SCENE_SIZES[1][0] + 1))
        size = (width, width * 3 // 4)
    width, height = size
    if rng.random() < SCENE_PHOTO:
        canvas = _scene_photo((height, width), rng, src.photos, channels)
    else:
        canvas = clutter((height, width), rng, channels)
    if digits is None:
        digits = int(rng.integers(2, 4 + width * height // 40000 + 1))
    taken, boxes, labels = [], [], []
    for _ in range(digits * 20):  # tries
        if len(boxes) == digits:
            break
        top = min(SCENE_DIGIT_HEIGHT[1], 0.6 * height)
        h = float(np.exp(rng.uniform(np.log(SCENE_DIGIT_HEIGHT[0]), np.log(top))))
        digit = str(int(rng.integers(10)))
        style = random_style(rng, src.fonts)
        center = (rng.uniform(0, width), rng.uniform(0, height))
        box = layout(digit, center, h, style)[2][0]
        margin = SCENE_MARGIN * h
        grown = (box[0] - margin, box[1] - margin, box[2] + margin, box[3] + margin)
        if box[0] < 2 or box[1] < 2 or box[2] > width - 2 or box[3] > height - 2 or any(
                grown[0] < b[2] and b[0] < grown[2] and grown[1] < b[3] and b[1] < grown[3] for b in taken):
            continue
        x0, y0, x1, y1 = (int(v) for v in box)
        ink = ink_colour(canvas[y0:y1 + 1, x0:x1 + 1], rng)
        boxes.append(draw(canvas, digit, center, h, style, ink)[0])
        taken.append(grown)
        labels.append(digit)
    image = (finish(canvas, rng) * 255).round().astype(np.uint8)
    return image, np.array(boxes, np.float64).reshape(-1, 4), np.array(labels, dtype="<U1")


# ---------------------------------------------------------------------------------------------
# reproducibility

def render_versions():
    """The versions of the libraries that rendering depends on."""
    import matplotlib
    import PIL
    from PIL import features
    return {"numpy": np.__version__, "pillow": PIL.__version__, "freetype2": features.version("freetype2"),
            "matplotlib": matplotlib.__version__, "opencv": cv2.__version__}


def fingerprint(n=2000, seed=0):
    """SHA-256 (hex) of ``patches(n, seed)`` and ``scene(seed)``: changes when rendering
    does (see :func:`render_versions`)."""
    digest = hashlib.sha256()
    for array in (*patches(n, seed), *scene(seed)):
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
