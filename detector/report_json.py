"""The one JSON vocabulary of detections, shared by ``detector detect --json``,
``detector client --json`` (:func:`detector_server.reply_to_dict`) and the benchmarks.

- ``"image_size": {"width": W, "height": H}``, in pixels;
- a box is ``[x0, y0, x1, y1]`` in the input image's pixels;
- every duration is in milliseconds, under a key ending in ``_ms``
  (``"timings_ms": {"decode_ms", "pyramid_ms", "inference_ms", "nms_ms", "total_ms"}``, and
  ``"queue_ms"`` from the service);
- a detection is ``{"box", "label", "score"}``; ``"truncated"`` counts the detections that
  ``max_detections`` cut;
- ``"model": {"name", "checksum"}``: the checkpoint's file name and its SHA-256.
"""
import hashlib
import os


def size_json(width, height):
    """``{"width": W, "height": H}``."""
    return {"width": int(width), "height": int(height)}


def detections_json(detections, width, height, truncated, timings_ms):
    """The JSON dict of detections [(box, label, score), ...] in a ``width`` x ``height``
    image, with ``timings_ms`` {stage_ms: milliseconds}."""
    return {"image_size": size_json(width, height),
            "detections": [{"box": [float(v) for v in box], "label": str(label), "score": float(score)}
                           for box, label, score in detections],
            "truncated": int(truncated),
            "timings_ms": {name: float(ms) for name, ms in timings_ms.items()}}


def result_json(result, decode_ms=None, total_ms=None):
    """The JSON dict of a :class:`detector.detect.Result`; ``decode_ms`` is the time spent
    reading the image before :func:`detector.detect.detect`, ``total_ms`` the whole run
    (default: the sum of the stages)."""
    timings = {} if decode_ms is None else {"decode_ms": decode_ms}
    timings.update((f"{stage}_ms", seconds * 1e3) for stage, seconds in result.timings.items())
    timings["total_ms"] = sum(timings.values()) if total_ms is None else total_ms
    height, width = result.image_size
    return detections_json(((d.box, d.label, d.score) for d in result.detections), width, height,
                           result.truncated, timings)


def model_json(path):
    """``{"name": file name, "checksum": SHA-256 hex}`` of a checkpoint file, as the service
    reports its model."""
    with open(path, "rb") as f:
        return {"name": os.path.basename(path), "checksum": hashlib.sha256(f.read()).hexdigest()}
