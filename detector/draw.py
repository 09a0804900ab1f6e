"""Pictures for people: boxes with labels and scores, and score maps as a colour overlay."""
import cv2
import numpy as np


def boxes(image, detections):
    """A BGR uint8 copy of ``image`` with each detection's box, label and score drawn."""
    canvas = _bgr(image)
    for d in detections:
        x0, y0, x1, y1 = (int(round(v)) for v in d.box)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), (0, 200, 0), 2)
        text = f"{d.label} {d.score:.2f}"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        cv2.rectangle(canvas, (x0, max(0, y0 - th - 4)), (x0 + tw + 2, max(th + 4, y0)), (0, 200, 0), -1)
        cv2.putText(canvas, text, (x0 + 1, max(th + 1, y0 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def heatmap(image, levels, window):
    """The best digit probability of each window over all pyramid levels, in colour over the
    image. Each level's scores are painted at their windows' centres, stretched to the image."""
    canvas = _bgr(image)
    h, w = canvas.shape[:2]
    grid = np.zeros((h, w), np.float32)
    for level in levels:
        best = level.scores[1:].max(axis=0)
        cell = level.stride / level.scale
        offset = int(round((window[0] - level.stride) / 2 / level.scale))
        x1 = min(w, offset + int(round(best.shape[1] * cell)))
        y1 = min(h, offset + int(round(best.shape[0] * cell)))
        if x1 > offset and y1 > offset:
            painted = cv2.resize(best, (x1 - offset, y1 - offset), interpolation=cv2.INTER_NEAREST)
            np.maximum(grid[offset:y1, offset:x1], painted, out=grid[offset:y1, offset:x1])
    colour = cv2.applyColorMap((grid * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(canvas, 0.5, colour, 0.5, 0)


def _bgr(image):
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image[:, :, :3].copy()
