"""Scene folders of the built-in digits: PNG images plus one annotations.json of boxes and
labels, for ``detector eval --scenes``."""
import json
import os

import cv2
import numpy as np

from .datasets import digits
from .datasets.coco import atomic_write_json

ANNOTATIONS = "annotations.json"


def write_scenes(n, seed, folder, channels=1, split="train"):
    """Draw ``n`` scenes (scene i from seed ``seed + i``) into ``folder``, with the fonts
    and photographs of ``split`` ("train", or "held-out": those training never sees)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    os.makedirs(folder, exist_ok=True)
    entries = []
    for i in range(n):
        image, boxes, labels = digits.scene(seed + i, channels=channels, fonts=split, photos=split)
        name = f"scene_{i:04d}.png"
        if not cv2.imwrite(os.path.join(folder, name), image):
            raise OSError(f"could not write {os.path.join(folder, name)}")
        entries.append({"file": name, "seed": seed + i, "width": image.shape[1], "height": image.shape[0],
                        "boxes": boxes.round(2).tolist(), "labels": labels.tolist()})
    atomic_write_json(os.path.join(folder, ANNOTATIONS), {"classes": list(digits.CLASSES[1:]), "channels": channels,
                                                          "split": split, "scenes": entries})
    return entries


def read_scenes(folder):
    """(image uint8 (H, W) or (H, W, 3), boxes (N, 4), labels (N,)) of each scene in ``folder``."""
    path = os.path.join(folder, ANNOTATIONS)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{folder} has no {ANNOTATIONS}: make one with 'detector data scenes'")
    try:
        with open(path) as f:
            entries = json.load(f)["scenes"]
        scenes = [(os.path.join(folder, e["file"]), np.array(e["boxes"], np.float64).reshape(-1, 4),
                   np.array(e["labels"], str)) for e in entries]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path} is not a scene list written by 'detector data scenes': "
                         f"{type(error).__name__} {str(error)[:80]}") from None
    for file, boxes, labels in scenes:
        image = cv2.imread(file, cv2.IMREAD_UNCHANGED)
        if image is None:
            raise ValueError(f"cannot read {file}")
        yield image, boxes, labels
