"""COCO instances JSON: read and validate images with boxes, write them, write results.

:func:`read_coco` reads what pycocotools reads: ``images`` (``id``, ``file_name``, optional
``width``/``height``), ``annotations`` (``id``, ``image_id``, ``category_id``, ``bbox``
``[x, y, width, height]``, ``iscrowd``) and ``categories`` (``id``, ``name``). File names
are relative to the JSON's folder, or to ``images_dir`` when given. Decisions:

- Images without annotations are kept: they are negatives.
- ``iscrowd`` annotations are kept apart as the image's ``ignore_boxes``: they are not
  positives, and no negative should be cut from a crowd of objects. They do not count as a
  class's examples.
- A box may stray up to ``TOLERANCE`` pixels outside its image (rounding in labelling
  tools); it is clipped to the image. Further out, it is an error.
- An image entry without ``width``/``height`` is decoded to learn its size; otherwise the
  file is only checked to exist (decoding every image would make reading slow), and
  :func:`~detector.datasets.annotations.load_annotated` checks its size when it is loaded.
- Every problem raises ``ValueError`` naming the JSON file and the item. With
  ``skip_bad=True`` bad annotations and images are skipped instead (an image's annotations
  go with it), and so are classes left without examples; the count and the first reasons
  go to ``log`` (a warning when ``log`` is None): nothing is dropped silently. Problems that
  make the whole file ambiguous (not JSON, missing keys, bad or duplicate categories,
  duplicate image ids) are never skipped.
"""
import json
import math
import numbers
import os
import warnings
from dataclasses import dataclass

import numpy as np

from .annotations import AnnotatedImage, image_size

KEYS = ("images", "annotations", "categories")
TOLERANCE = 1.0  # pixels a box may lie outside its image before it is an error
REASONS_SHOWN = 5  # reasons quoted in the skip message


@dataclass(frozen=True, eq=False)
class CocoData:
    """What :func:`read_coco` found. ``categories`` are ``(id, name)`` in id order,
    ``classes`` their names in that order, ``category_id`` maps a name to its id, and
    ``skipped`` holds the reason for everything ``skip_bad`` left out."""

    path: str
    images_dir: str
    categories: list
    classes: list
    category_id: dict
    images: list  # AnnotatedImage, in the file's order
    skipped: tuple = ()


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


class _Problems:
    """Raises the first problem, or with ``skip_bad`` records it and says to skip."""

    def __init__(self, skip_bad):
        self.skip_bad, self.annotations, self.images, self.classes = skip_bad, [], [], []
        self.orphans = 0  # annotations of skipped images

    def bad(self, kind, reason):
        if not self.skip_bad:
            raise ValueError(reason)
        getattr(self, kind).append(reason)

    def report(self, path, log):
        reasons = self.annotations + self.images + self.classes
        if not reasons:
            return ()
        parts = [f"{len(self.annotations)} bad annotations"] if self.annotations else []
        if self.images:
            parts.append(f"{len(self.images)} bad images" + (f" (with their {self.orphans} annotations)"
                                                              if self.orphans else ""))
        if self.classes:
            parts.append(f"{len(self.classes)} classes without examples")
        shown = "; ".join(r.removeprefix(f"{path}: ") for r in reasons[:REASONS_SHOWN])
        more = f"; and {len(reasons) - REASONS_SHOWN} more" if len(reasons) > REASONS_SHOWN else ""
        message = f"{path}: skipped {' and '.join(parts)}: {shown}{more}"
        if log is None:
            warnings.warn(message, stacklevel=3)
        else:
            log(message)
        return tuple(reasons)


def _load_json(path):
    if not os.path.exists(path):
        raise FileNotFoundError(f"no COCO annotations file at {path}")
    if os.path.isdir(path):
        raise ValueError(f"{path} is a folder, not a COCO instances JSON file")
    try:
        with open(path, "rb") as f:
            doc = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a JSON object with {', '.join(map(repr, KEYS))}, "
                         f"got a JSON {type(doc).__name__}")
    missing = [key for key in KEYS if key not in doc]
    if missing:
        raise ValueError(f"{path}: missing {', '.join(map(repr, missing))}: a COCO instances file has "
                         f"{', '.join(map(repr, KEYS))}")
    for key in KEYS:
        if not isinstance(doc[key], list):
            raise ValueError(f"{path}: {key!r} must be a list, got a JSON {type(doc[key]).__name__}")
    return doc


def _categories(path, entries):
    """``{id: name}`` in id order; every problem is fatal."""
    if not entries:
        raise ValueError(f"{path}: 'categories' is empty: there is no class to detect")
    names = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not _is_int(entry.get("id")):
            raise ValueError(f"{path}: categories[{index}] has no integer 'id': {str(entry)[:80]}")
        cid, name = int(entry["id"]), entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{path}: category id {cid} has no 'name' (a non-empty string)")
        if cid in names:
            raise ValueError(f"{path}: category id {cid} appears twice ({names[cid]!r} and {name!r})")
        if name in names.values():
            other = next(i for i, n in names.items() if n == name)
            raise ValueError(f"{path}: category name {name!r} appears twice (ids {other} and {cid})")
        names[cid] = name
    return dict(sorted(names.items()))


def _image_size(file_path):
    return image_size(np.fromfile(file_path, np.uint8), file_path)


def _images(path, entries, base, problems):
    """``{id: record}`` of the usable image entries, and the ids of the skipped ones."""
    records, first, skipped = {}, {}, set()
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            problems.bad("images", f"{path}: images[{index}] is not an object: {str(entry)[:80]}")
            continue
        name = entry.get("file_name")
        if not _is_int(entry.get("id")):
            problems.bad("images", f"{path}: images[{index}] ({name!r}) has no integer 'id'")
            continue
        iid = int(entry["id"])
        if iid in first:
            raise ValueError(f"{path}: image id {iid} appears twice: images[{first[iid][0]}] "
                             f"({first[iid][1]!r}) and images[{index}] ({name!r})")
        first[iid] = (index, name)
        where = f"{path}: image id {iid}"
        if not isinstance(name, str) or not name:
            skipped.add(iid)
            problems.bad("images", f"{where} has no 'file_name' (a non-empty string)")
            continue
        where += f" ({name!r})"
        file_path = os.path.abspath(os.path.join(base, name))
        if not os.path.isfile(file_path):
            skipped.add(iid)
            problems.bad("images", f"{where}: file {name!r} not found in {base}")
            continue
        width, height = entry.get("width"), entry.get("height")
        if width is None or height is None:
            try:
                width, height = _image_size(file_path)
            except (ValueError, OSError) as error:
                skipped.add(iid)
                problems.bad("images", f"{where}: {error}")
                continue
        bad = [f"{k} {v!r}" for k, v in (("width", width), ("height", height)) if not (_is_int(v) and v > 0)]
        if bad:
            skipped.add(iid)
            problems.bad("images", f"{where}: {' and '.join(bad)} must be positive integers")
            continue
        records[iid] = dict(path=file_path, name=name, width=int(width), height=int(height),
                            boxes=[], labels=[], ignore_boxes=[], ignore_labels=[])
    return records, skipped


MIN_SIDE = 1.0  # pixels: a box's smallest width or height


def _box(where, bbox, width, height):
    """``(x0, y0, x1, y1)`` clipped to the image, or the reason it is bad."""
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        return f"{where}: bbox {str(bbox)[:80]} is not 4 finite numbers [x, y, width, height]"
    x, y, w, h = (float(v) for v in bbox)
    for size, name in ((w, "width"), (h, "height")):
        if size <= 0:
            return f"{where}: box {bbox} has {'zero' if size == 0 else 'negative'} {name}"
        if size < MIN_SIDE:  # a window cut around it would enlarge it to gigapixels
            return f"{where}: box {bbox} has a {name} of {size:g}, under {MIN_SIDE:g} pixel"
    if x < -TOLERANCE or y < -TOLERANCE or x + w > width + TOLERANCE or y + h > height + TOLERANCE:
        return (f"{where}: box {bbox} (x0, y0, x1, y1 = {x:g}, {y:g}, {x + w:g}, {y + h:g}) lies outside "
                f"the {width}x{height} (WxH) image by more than {TOLERANCE:g} pixel")
    box = (max(x, 0.0), max(y, 0.0), min(x + w, width), min(y + h, height))
    if box[2] <= box[0] or box[3] <= box[1]:
        return f"{where}: box {bbox} lies on the edge of the {width}x{height} (WxH) image"
    return box


def read_coco(json_path, images_dir=None, skip_bad=False, log=None, every_class_labelled=True):
    """The :class:`CocoData` of a COCO instances JSON, validated (see the module docstring).

    ``images_dir`` is the folder ``file_name`` is relative to (default: the JSON's folder).
    ``every_class_labelled=False`` keeps categories without annotations (as ground truth for
    evaluation may have) instead of calling them an error.
    """
    path = os.fspath(json_path)
    doc = _load_json(path)
    base = os.path.abspath(os.fspath(images_dir) if images_dir is not None else os.path.dirname(os.path.abspath(path)))
    if not os.path.isdir(base):
        raise FileNotFoundError(f"the images folder {base} of {path} does not exist")
    names = _categories(path, doc["categories"])
    if not doc["images"]:
        raise ValueError(f"{path}: 'images' is empty")
    problems = _Problems(skip_bad)
    records, skipped_images = _images(path, doc["images"], base, problems)
    for index, ann in enumerate(doc["annotations"]):
        if not isinstance(ann, dict):
            problems.bad("annotations", f"{path}: annotations[{index}] is not an object: {str(ann)[:80]}")
            continue
        where = f"{path}: " + (f"annotation id {ann['id']}" if "id" in ann else f"annotations[{index}] (no id)")
        iid, cid = ann.get("image_id"), ann.get("category_id")
        if _is_int(iid) and iid in skipped_images:
            problems.orphans += 1
            continue
        if not (_is_int(iid) and iid in records):
            problems.bad("annotations", f"{where}: image_id {iid!r} is not the id of any image")
            continue
        record = records[iid]
        where += f" (image id {iid}, {record['name']!r})"
        if not (_is_int(cid) and cid in names):
            problems.bad("annotations", f"{where}: category_id {cid!r} is not among the categories' ids "
                                        f"{list(names)}")
            continue
        box = _box(where, ann.get("bbox"), record["width"], record["height"])
        if isinstance(box, str):
            problems.bad("annotations", box)
            continue
        kind = "ignore_" if ann.get("iscrowd") else ""
        record[kind + "boxes"].append(box)
        record[kind + "labels"].append(names[int(cid)])
    examples = {name: 0 for name in names.values()}
    for record in records.values():
        for label in record["labels"]:
            examples[label] += 1
    for cid, name in list(names.items()):
        if not examples[name] and every_class_labelled:
            problems.bad("classes", f"{path}: class {name!r} (category id {cid}) has no examples: no "
                                    "annotation other than crowds uses it; label some or remove the category")
            del names[cid]
    if not names:
        raise ValueError(f"{path}: no class has examples left after skipping the bad annotations")
    images = [AnnotatedImage(r["path"], iid, r["width"], r["height"], r["boxes"], r["labels"], r["ignore_boxes"],
                             r["ignore_labels"]) for iid, r in records.items()]
    if not images:
        raise ValueError(f"{path}: no usable image left after skipping the bad ones")
    skipped = problems.report(path, log)
    return CocoData(path, base, list(names.items()), list(names.values()), {n: i for i, n in names.items()},
                    images, skipped)


def atomic_write_json(path, doc):
    """Write ``doc`` as JSON to ``path`` atomically (see :mod:`detector.atomic`)."""
    from ..atomic import atomic_write

    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False)


def write_coco(json_path, images, classes, category_ids=None):
    """Write a COCO instances JSON for ``images`` (:class:`AnnotatedImage`), atomically.

    ``file_name`` is written relative to the JSON's folder; categories are ``classes`` with
    ids 1, 2, ... unless ``category_ids`` (a dict name -> id) says otherwise. Ignore boxes
    are written as ``iscrowd`` annotations.
    """
    path = os.path.abspath(os.fspath(json_path))
    classes = list(classes)
    if len(set(classes)) != len(classes):
        raise ValueError(f"{path}: the classes {classes} name a class twice")
    ids = {name: i + 1 for i, name in enumerate(classes)} if category_ids is None else dict(category_ids)
    missing = [name for name in classes if name not in ids]
    if missing or not all(_is_int(ids[n]) for n in classes) or len({ids[n] for n in classes}) != len(classes):
        raise ValueError(f"{path}: category_ids {ids} must give each of the classes {classes} its own integer id")
    folder = os.path.dirname(path)
    doc = {"info": {"description": "written by detector.datasets.coco.write_coco"}, "images": [],
           "annotations": [], "categories": [{"id": int(ids[n]), "name": n} for n in classes]}
    seen = set()
    for item in images:
        if item.image_id in seen:
            raise ValueError(f"{path}: image id {item.image_id} appears twice ({item.path})")
        seen.add(item.image_id)
        doc["images"].append({"id": int(item.image_id), "width": int(item.width), "height": int(item.height),
                              "file_name": os.path.relpath(item.path, folder).replace(os.sep, "/")})
        for crowd, boxes, labels in ((0, item.boxes, item.labels), (1, item.ignore_boxes, item.ignore_labels)):
            for box, label in zip(boxes, labels):
                if label not in ids:
                    raise ValueError(f"{path}: image id {item.image_id} ({item.path}) has a box of class "
                                     f"{label!r}, not among the classes {classes}")
                x0, y0, x1, y1 = (float(v) for v in box)
                doc["annotations"].append({"id": len(doc["annotations"]) + 1, "image_id": int(item.image_id),
                                           "category_id": int(ids[label]), "bbox": [x0, y0, x1 - x0, y1 - y0],
                                           "area": (x1 - x0) * (y1 - y0), "iscrowd": crowd})
    atomic_write_json(path, doc)
    return path


def results_json(per_image_detections, category_id):
    """COCO's results format, a list of ``{"image_id", "category_id", "bbox": [x, y, w, h],
    "score"}``, from ``(image_id, detections)`` pairs, each detection a ``(box, label,
    score)`` tuple or an object with those attributes (a :class:`detector.detect.Detection`);
    ``box`` is ``(x0, y0, x1, y1)``. A label not in ``category_id`` raises ``ValueError``."""
    results = []
    for image_id, detections in per_image_detections:
        for detection in detections:
            if hasattr(detection, "box"):
                box, label, score = detection.box, detection.label, detection.score
            else:
                box, label, score = detection
            if label not in category_id:
                raise ValueError(f"image id {image_id}: detection label {label!r} is not among the "
                                 f"categories {sorted(category_id)}")
            x0, y0, x1, y1 = (float(v) for v in box)
            if not all(math.isfinite(v) for v in (x0, y0, x1, y1, float(score))):
                raise ValueError(f"image id {image_id}: detection {label!r} has a non-finite box or score: "
                                 f"{(x0, y0, x1, y1)}, {score}")
            results.append({"image_id": int(image_id), "category_id": int(category_id[label]),
                            "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(score)})
    return results
