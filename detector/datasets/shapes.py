"""A small synthetic COCO data set of coloured shapes, for tests, the docs and benchmarks.

:func:`write_shapes` draws ``n_images`` PNG images and their ``annotations.json``. Each image
is a smooth colour field with a little noise and clutter (thin lines and outlines), or a crop
of one of the given photographs, with 1-6 objects whose boxes are 14-70 pixels on their
longer side, apart from one another:

- "teal disc" and "orange disc": filled discs whose colours have the same luminance (equal
  in OpenCV's BGR2GRAY weights, not only after rounding): a gray model cannot tell them
  apart, a colour model can;
- "square": a filled square, axis-aligned or turned by up to ``MAX_TURN`` degrees.

Shapes are drawn with exact anti-aliasing (coverage from 4x4 samples per pixel); a box is
the shape's exact extent. Objects are flat colour (noise is only in the background). The
same seed gives the same files.
"""
import math
import os

import cv2
import numpy as np

from .annotations import AnnotatedImage
from .coco import write_coco

COLOURS = {  # BGR; the discs' luminance is 117.28 for both (1868 B + 9617 G + 4899 R) / 2**14
    "teal disc": (162, 150, 36),
    "orange disc": (0, 75, 245),
    "square": (215, 70, 190),
}
KINDS = tuple(COLOURS)
SIZES = (14, 70)  # an object's box, longer side, in pixels
OBJECTS = (1, 6)  # per image
MAX_TURN = 20.0  # degrees a square may be turned
GAP = 3  # pixels kept between objects' boxes, and from the image's edge
_SAMPLES = (np.arange(4) + 0.5) / 4  # sub-pixel sample offsets


def _coverage(kind, box, angle, x0, y0, x1, y1):
    """The fraction of each pixel of [y0, y1) x [x0, x1) inside the shape, (h, w) float32."""
    ys = (np.arange(y0, y1)[:, None] + _SAMPLES[None]).reshape(-1, 1)
    xs = (np.arange(x0, x1)[:, None] + _SAMPLES[None]).reshape(1, -1)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    if kind.endswith("disc"):
        radius = (box[2] - box[0]) / 2
        inside = (xs - cx) ** 2 + (ys - cy) ** 2 <= radius ** 2
    else:
        c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        half = (box[2] - box[0]) / 2 / (abs(c) + abs(s))  # the square's half side
        u, v = (xs - cx) * c + (ys - cy) * s, -(xs - cx) * s + (ys - cy) * c
        inside = (np.abs(u) <= half) & (np.abs(v) <= half)
    return inside.reshape(y1 - y0, 4, x1 - x0, 4).mean(axis=(1, 3), dtype=np.float32)


def draw_shape(canvas, kind, box, angle=0.0, colour=None):
    """Blend a ``kind`` shape whose exact extent is ``box`` (x0, y0, x1, y1; square for both
    kinds) into the float32 (H, W, 3) ``canvas``, in place; a square is turned ``angle``
    degrees within that extent."""
    colour = np.array(COLOURS[kind] if colour is None else colour, np.float32)
    h, w = canvas.shape[:2]
    x0, y0 = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
    x1, y1 = min(w, math.ceil(box[2])), min(h, math.ceil(box[3]))
    cover = _coverage(kind, box, angle, x0, y0, x1, y1)[:, :, None]
    patch = canvas[y0:y1, x0:x1]
    patch += cover * (colour - patch)


def _background(rng, size, photos):
    width, height = size
    if photos:
        photo = np.asarray(photos[int(rng.integers(len(photos)))])
        photo = cv2.cvtColor(photo, cv2.COLOR_GRAY2BGR) if photo.ndim == 2 else photo[:, :, :3]
        zoom = max(width / photo.shape[1], height / photo.shape[0]) * rng.uniform(1, 1.5)
        photo = cv2.resize(photo, (max(width, round(photo.shape[1] * zoom)), max(height, round(photo.shape[0] * zoom))),
                           interpolation=cv2.INTER_AREA if zoom < 1 else cv2.INTER_LINEAR)
        x, y = (int(rng.integers(photo.shape[i] - n + 1)) for i, n in ((1, width), (0, height)))
        return photo[y:y + height, x:x + width].astype(np.float32)
    cells = rng.integers(2, 7, 2)
    field = cv2.resize(rng.uniform(0, 255, (cells[0], cells[1], 3)).astype(np.float32), (width, height),
                       interpolation=cv2.INTER_CUBIC)
    field += rng.normal(0, 4, field.shape).astype(np.float32)
    for _ in range(int(rng.integers(0, 9))):  # clutter: thin lines and ellipse outlines
        colour = rng.uniform(0, 255, 3).tolist()
        points = rng.uniform(0, 1, 4) * (width, height, width, height)
        if rng.random() < 0.5:
            cv2.line(field, (int(points[0]), int(points[1])), (int(points[2]), int(points[3])), colour,
                     int(rng.integers(1, 3)), cv2.LINE_AA)
        else:
            axes = (int(rng.integers(5, 40)), int(rng.integers(5, 40)))
            cv2.ellipse(field, (int(points[0]), int(points[1])), axes, float(rng.uniform(0, 180)), 0, 360, colour,
                        1, cv2.LINE_AA)
    return np.clip(field, 0, 255)


def shapes_image(rng, size=(320, 240), kinds=KINDS, photos=None, count=None, first_kinds=()):
    """One image: ``(image uint8 (H, W, 3), boxes (N, 4) float64, labels)``. ``count``
    objects (default: 1-6, fewer when there is no room), the first of kinds
    ``first_kinds``, the others of random kinds."""
    width, height = size
    canvas = _background(rng, size, photos)
    count = int(rng.integers(OBJECTS[0], OBJECTS[1] + 1)) if count is None else count
    boxes, labels = [], []
    for i in range(count):
        kind = first_kinds[i] if i < len(first_kinds) else kinds[int(rng.integers(len(kinds)))]
        for _ in range(50):
            side = rng.uniform(*SIZES)
            cx = rng.uniform(GAP + side / 2, width - GAP - side / 2)
            cy = rng.uniform(GAP + side / 2, height - GAP - side / 2)
            box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
            if all(box[0] >= b[2] + GAP or b[0] >= box[2] + GAP or box[1] >= b[3] + GAP or b[1] >= box[3] + GAP
                   for b in boxes):
                break
        else:
            continue  # no room left
        angle = 0.0 if kind != "square" or rng.random() < 0.5 else rng.uniform(-MAX_TURN, MAX_TURN)
        draw_shape(canvas, kind, box, angle)
        boxes.append(box)
        labels.append(kind)
    image = np.round(np.clip(canvas, 0, 255)).astype(np.uint8)
    return image, np.array(boxes, np.float64).reshape(-1, 4), labels


def write_shapes(folder, n_images, seed, size=(320, 240), kinds=KINDS, photos=None, negatives=0):
    """Write ``n_images`` images (``size`` is (width, height)) as PNGs and their
    ``annotations.json`` into ``folder``; return the JSON's path. ``photos``, a list of
    uint8 BGR or gray arrays, replaces the drawn backgrounds by crops of them. ``negatives``
    images without objects go to ``folder/negatives``. The first images hold every kind, so
    that each class has examples."""
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in COLOURS]
    if unknown or not kinds:
        raise ValueError(f"unknown shape kinds {unknown}: choose among {KINDS}")
    width, height = size
    if min(width, height) < SIZES[1] + 2 * GAP:
        raise ValueError(f"the images must be at least {SIZES[1] + 2 * GAP} pixels on each side, got {size}")
    if n_images < 1 or n_images * OBJECTS[1] < len(kinds):
        raise ValueError(f"{n_images} images cannot hold the {len(kinds)} kinds {kinds}")
    folder = os.path.abspath(os.fspath(folder))
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    records, todo = [], list(kinds)
    for i in range(n_images):
        first, todo = todo[:OBJECTS[1]], todo[OBJECTS[1]:]
        image, boxes, labels = shapes_image(rng, size, kinds, photos, count=max(len(first), int(
            rng.integers(OBJECTS[0], OBJECTS[1] + 1))), first_kinds=first)
        todo = [k for k in first if k not in labels] + todo  # kinds that found no room: next image
        path = os.path.join(folder, f"{i + 1:05d}.png")
        cv2.imwrite(path, image)
        records.append(AnnotatedImage(path, i + 1, width, height, boxes, labels))
    if todo:
        raise ValueError(f"no room was found for the kinds {todo} in {n_images} images")
    if negatives:
        os.makedirs(os.path.join(folder, "negatives"), exist_ok=True)
        for i in range(negatives):
            image = np.round(_background(rng, size, photos)).astype(np.uint8)
            cv2.imwrite(os.path.join(folder, "negatives", f"{i + 1:05d}.png"), image)
    return write_coco(os.path.join(folder, "annotations.json"), records, kinds)
