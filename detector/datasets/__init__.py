"""Training data behind one small interface: windows and labels for the trainer, images with
boxes for mining and evaluation.

``open_data(source, ...)`` takes any of three sources:

- ``"digits"``: the built-in generator (:mod:`.digits`), the default and the demo;
- a COCO instances JSON (:mod:`.coco`): images with boxes, split by image into training and
  validation; windows are cut so that each object fills the window as the model is trained
  to see it, with scale and position jitter, beside negatives that overlap no object and
  objects at wrong scales or off-centre (:mod:`.windows`);
- a folder of labelled crops, one sub-folder per class (:mod:`.folders`), with a background
  sub-folder: each crop is an object filling its window.

``negatives`` adds a folder of images holding none of the objects: random windows of them
join the background class, and hard-negative mining searches them too.

A :class:`TrainingData` gives ``windows(split)`` (a :class:`WindowSet`), ``scenes(split)``
(images with boxes: for mining on training images, for evaluation on validation ones) and
``negative_images()``. Validation never shares an image with training.
"""
import os
from dataclasses import dataclass

import numpy as np

DIGITS = "digits"
BACKGROUND = "background"


@dataclass
class WindowSet:
    """Training windows: ``x`` (N, C, H, W) float32 in [0, 1], ``labels`` (N,) int64
    indexing the classes, ``boxes`` (N, 4) float32 object boxes in window pixels (NaN rows
    for background or where the box is unknown)."""

    x: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray

    def __len__(self):
        return len(self.labels)

    @classmethod
    def concat(cls, sets):
        sets = [s for s in sets if len(s)]
        if not sets:
            raise ValueError("no windows: the data set has too few images for a training and a validation "
                             "split (lower --val-fraction or add images)")
        return cls(np.concatenate([s.x for s in sets]), np.concatenate([s.labels for s in sets]),
                   np.concatenate([s.boxes for s in sets]))

    @classmethod
    def background(cls, x):
        """Windows x of the background class (label index 0 by convention of this module)."""
        return cls(np.asarray(x, np.float32), np.zeros(len(x), np.int64), np.full((len(x), 4), np.nan, np.float32))


def box_aspects(windows, classes):
    """The median width / height of each object class's boxes in ``windows``."""
    aspects = {}
    for index, name in enumerate(classes):
        boxes = windows.boxes[(windows.labels == index) & np.isfinite(windows.boxes).all(axis=1)]
        if len(boxes):
            ratio = (boxes[:, 2] - boxes[:, 0]) / np.maximum(boxes[:, 3] - boxes[:, 1], 1e-6)
            aspects[name] = float(np.clip(np.median(ratio), 0.05, 20))
    return aspects


def open_data(source=DIGITS, channels=1, window=(32, 32), seed=0, images_dir=None, background=BACKGROUND,
              negatives=None, object_size=None, val_fraction=0.2, windows_per_box=8, train_size=60000,
              val_size=5000, skip_bad=False, log=print):
    """The :class:`TrainingData` of ``source`` ("digits", a COCO JSON or a crop folder)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (gray) or 3 (BGR colour), got {channels}")
    common = dict(channels=channels, window=tuple(window), seed=seed, negatives=negatives, log=log,
                  skip_bad=skip_bad)
    if source == DIGITS:
        from .sources import DigitData

        return DigitData(train_size=train_size, val_size=val_size, **common)
    if not os.path.exists(source):
        raise FileNotFoundError(f"no data at {source}: give 'digits', a COCO instances JSON or a folder of "
                                "class sub-folders")
    if os.path.isdir(source):
        from .sources import CropData

        return CropData(source, background=background, object_size=object_size or 1.0,
                        val_fraction=val_fraction, **common)
    from .sources import CocoSource

    return CocoSource(source, images_dir=images_dir, background=background, object_size=object_size or 0.65,
                      val_fraction=val_fraction, windows_per_box=windows_per_box, **common)
