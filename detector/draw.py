"""Pictures for people, drawn on the original image in colour: boxes with labels and scores,
and score maps as a colour overlay with a title and a colour bar."""
import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX
# one colour per class, the same in every picture (BGR, tab10-like)
PALETTE = ((40, 160, 40), (200, 120, 30), (40, 40, 220), (200, 60, 160), (0, 160, 220),
           (160, 160, 0), (120, 60, 200), (80, 80, 80), (0, 200, 120), (220, 0, 0))


def boxes(image, detections, classes=None):
    """A BGR uint8 copy of ``image`` with each detection's box, label and score drawn; a
    class's colour is its place in ``classes`` (or the same green for all)."""
    canvas = as_bgr(image)
    for d in detections:
        colour = PALETTE[classes.index(d.label) % len(PALETTE)] if classes and d.label in classes else PALETTE[0]
        x0, y0, x1, y1 = (int(round(v)) for v in d.box)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), colour, 2)
        text = f"{d.label} {d.score:.2f}"
        (tw, th), _ = cv2.getTextSize(text, FONT, 0.45, 1)
        cv2.rectangle(canvas, (x0, max(0, y0 - th - 4)), (x0 + tw + 2, max(th + 4, y0)), colour, -1)
        cv2.putText(canvas, text, (x0 + 1, max(th + 1, y0 - 3)), FONT, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


def heatmap(image, levels, window, classes, background, only=None):
    """The image with, over it, the best object probability of each window over all pyramid
    levels (or class ``only``'s), painted at the windows' centres in the JET colours. A strip
    above says what is shown; a colour bar at the right maps colour to probability."""
    canvas = as_bgr(image)
    h, w = canvas.shape[:2]
    if only is not None and (only not in classes or only == background):
        raise ValueError(f"no object class {only!r}: the model's are {[c for c in classes if c != background]}")
    rows = [classes.index(only)] if only else [i for i, c in enumerate(classes) if c != background]
    grid = np.zeros((h, w), np.float32)
    for level in levels:
        best = level.scores[rows].max(axis=0)
        cell = level.stride / level.scale
        # window (r, c) is centred at ((c + 1/2) * stride - pad + window / 2 - stride / 2) / scale
        offset = int(round((window[0] / 2 - level.stride / 2 - level.pad) / level.scale))
        painted = cv2.resize(best, (max(1, int(round(best.shape[1] * cell))), max(1, int(round(best.shape[0] * cell)))),
                             interpolation=cv2.INTER_NEAREST)
        x0, y0 = max(0, offset), max(0, offset)
        x1, y1 = min(w, offset + painted.shape[1]), min(h, offset + painted.shape[0])
        if x1 > x0 and y1 > y0:
            part = painted[y0 - offset:y1 - offset, x0 - offset:x1 - offset]
            np.maximum(grid[y0:y1, x0:x1], part, out=grid[y0:y1, x0:x1])
    colour = cv2.applyColorMap((grid * 255).round().astype(np.uint8), cv2.COLORMAP_JET)
    overlay = cv2.addWeighted(canvas, 0.5, colour, 0.5, 0)
    what = f"P({only})" if only else "best object probability"
    scales = [level.scale for level in levels]
    title = (f"{what}, max over {len(levels)} pyramid level{'s' * (len(levels) != 1)}"
             + (f" (scale {min(scales):.2f}-{max(scales):.2f})" if scales else ""))
    return _with_colour_bar(_with_title(overlay, title))


def _with_title(image, text, height=22):
    strip = np.full((height, image.shape[1], 3), 255, np.uint8)
    scale = min(0.5, 0.5 * image.shape[1] / max(1, cv2.getTextSize(text, FONT, 0.5, 1)[0][0] + 8))
    cv2.putText(strip, text, (4, height - 7), FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([strip, image])


def _with_colour_bar(image, width=14, margin=36):
    """A vertical JET bar from 1 (top) to 0 (bottom) at the right, with ticks."""
    h = image.shape[0]
    panel = np.full((h, width + margin, 3), 255, np.uint8)
    top, bottom = 28, h - 8
    if bottom - top >= 20:
        values = np.linspace(1, 0, bottom - top)[:, None].repeat(width, axis=1)
        panel[top:bottom, 4:4 + width] = cv2.applyColorMap((values * 255).round().astype(np.uint8),
                                                           cv2.COLORMAP_JET)
        for value in (1.0, 0.5, 0.0):
            y = int(round(top + (1 - value) * (bottom - top - 1)))
            cv2.putText(panel, f"{value:.1f}", (width + 7, min(h - 2, y + 4)), FONT, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    return np.hstack([image, panel])


def as_bgr(image):
    """A BGR uint8 copy of a gray, BGR or BGRA image, uint8 or float in [0, 1]."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR) if image.shape[2] == 4 else image[:, :, :3].copy()
