"""Scene folders of the built-in digits: PNG images plus one annotations.json of boxes and
labels, for ``detector eval --scenes``."""
import json
import os

import cv2
import numpy as np

from .datasets import digits

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
    tmp = os.path.join(folder, ANNOTATIONS + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"classes": list(digits.CLASSES[1:]), "channels": channels, "split": split,
                   "scenes": entries}, f, indent=1)
    os.replace(tmp, os.path.join(folder, ANNOTATIONS))
    return entries


def read_scenes(folder):
    """(image uint8 (H, W) or (H, W, 3), boxes (N, 4), labels (N,)) of each scene in ``folder``."""
    path = os.path.join(folder, ANNOTATIONS)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{folder} has no {ANNOTATIONS}: make one with 'detector data scenes'")
    with open(path) as f:
        entries = json.load(f)["scenes"]
    for entry in entries:
        image = cv2.imread(os.path.join(folder, entry["file"]), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise ValueError(f"cannot read {os.path.join(folder, entry['file'])}")
        yield image, np.array(entry["boxes"], np.float64).reshape(-1, 4), np.array(entry["labels"], str)
