"""Boxes from a window: the prior box a model expects in it, and the regression offsets.

A window's prior box for a class is centred in the window, its longer side the model's
``object_pixels`` and its width / height the class's box aspect. A box-regression head
predicts offsets from it, as R-CNN and OverFeat do, in units of the prior's longer side so
that they do not depend on the pyramid level:

    dx = (cx - prior_cx) / L,  dy = (cy - prior_cy) / L,  dw = log(w / prior_w),  dh = log(h / prior_h)

Boxes are (x0, y0, x1, y1) with x1, y1 the right and bottom edges.
"""
import numpy as np

# offsets beyond these would move a box out of its window or stretch it past any
# training target: decoding clips to them so one wild output cannot make a huge box
MAX_SHIFT = 0.5
MAX_LOG_STRETCH = float(np.log(2.0))


def prior_sizes(longer_side, aspects):
    """(widths, heights) of prior boxes whose longer side is ``longer_side`` and whose
    width / height are ``aspects`` (array-like)."""
    aspects = np.asarray(aspects, np.float64)
    widths = np.where(aspects >= 1, longer_side, longer_side * aspects)
    heights = np.where(aspects >= 1, longer_side / aspects, longer_side)
    return widths, heights


def encode(boxes, centres, widths, heights):
    """Offsets (N, 4) of ``boxes`` (N, 4) from priors with the given centres (N, 2),
    widths and heights (N,)."""
    boxes = np.asarray(boxes, np.float64)
    longer = np.maximum(widths, heights)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return np.stack([(cx - centres[:, 0]) / longer, (cy - centres[:, 1]) / longer,
                     np.log(w / widths), np.log(h / heights)], axis=1)


def decode(offsets, centres, widths, heights):
    """Boxes (N, 4) from ``offsets`` (N, 4) and priors, the inverse of :func:`encode`
    with offsets clipped to a sane range."""
    offsets = np.asarray(offsets, np.float64)
    longer = np.maximum(widths, heights)
    shift = np.clip(offsets[:, :2], -MAX_SHIFT, MAX_SHIFT) * longer[:, None]
    stretch = np.exp(np.clip(offsets[:, 2:], -MAX_LOG_STRETCH, MAX_LOG_STRETCH))
    cx, cy = centres[:, 0] + shift[:, 0], centres[:, 1] + shift[:, 1]
    w, h = widths * stretch[:, 0], heights * stretch[:, 1]
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
