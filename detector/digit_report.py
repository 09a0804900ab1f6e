"""``detector eval --digits``: the figures of a digit model on what its training never saw.

- accuracy on patches drawn with the held-out fonts and photographs;
- false detections per digit-free held-out photograph, each resized to 480x360 (any
  detection there is false);
- VOC mAP@0.5 and COCO AP@0.5 and AP@[.5:.95] on generated scenes, with the training fonts
  and photographs (seeds apart from training's) and with the held-out ones.
"""
import time

import cv2
import numpy as np

from .datasets import digits, photos
from .detect import detect
from .evaluate import coco_average_precision, mean_average_precision
from .train import accuracy

PATCH_SEED = 424242  # apart from every seed the trainer derives (detector.datasets.sources)
SCENE_SEED = 500000
PHOTO_SIZE = (480, 360)


def held_out_accuracy(net, n=5000):
    """Accuracy (overall, per class) on patches of the held-out fonts and photographs."""
    x, labels, _ = digits.patches(n, PATCH_SEED, channels=net.channels, fonts="held-out", photos="held-out")
    # the generator's labels index digits.CLASSES; the model may order its classes otherwise
    mine = np.array([net.classes.index(net.background if c == digits.CLASSES[0] else c) for c in digits.CLASSES])
    return accuracy(net, x, mine[labels])


def photo_false_detections(net, options):
    """{photograph: detections} on each held-out photograph resized to 480x360."""
    found = {}
    for name in photos.photos("held-out"):
        image = cv2.resize(photos.load(name, net.channels), PHOTO_SIZE, interpolation=cv2.INTER_AREA)
        found[name] = len(detect(image, net, options).detections)
    return found


def scene_ap(net, options, n, split):
    """VOC and COCO AP on ``n`` generated scenes of ``split``'s fonts and photographs."""
    images = []
    for i in range(n):
        image, boxes, labels = digits.scene(SCENE_SEED + i, channels=net.channels, fonts=split, photos=split)
        found = detect(image, net, options).detections
        images.append(([(d.box, d.label, d.score) for d in found], boxes, labels))
    voc = mean_average_precision(images, net.objects)
    coco = coco_average_precision(images, net.objects)
    return {"voc_map50": voc["map"], "ap50": coco["ap50"], "ap": coco["ap"], "ap75": coco["ap75"]}


def report(net, options, scenes=200, log=print):
    """All the figures above, as one dict; ``log`` gets a line as each is measured."""
    if sorted(net.objects) != sorted(digits.CLASSES[1:]):
        raise ValueError(f"--digits measures a digit model, whose classes are 0-9; this one's are {net.objects}")
    started = time.perf_counter()
    accuracy, per_class = held_out_accuracy(net)
    log(f"held-out fonts: accuracy {accuracy:.4f} on 5000 patches (lowest class "
        f"{min(per_class, key=per_class.get)} {min(per_class.values()):.3f})")
    false = photo_false_detections(net, options)
    per_photo = sum(false.values()) / len(false)
    log(f"held-out photographs: {per_photo:.2f} false detections per photograph at {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} "
        f"({', '.join(f'{k} {v}' for k, v in false.items())})")
    figures = {"held_out_accuracy": accuracy, "held_out_per_class": per_class,
               "photo_false_detections": false, "false_detections_per_photo": per_photo}
    for split in ("train", "held-out"):
        ap = scene_ap(net, options, scenes, split)
        log(f"{scenes} scenes, {split} fonts and photographs: VOC mAP@0.5 {ap['voc_map50']:.4f}, "
            f"COCO AP@0.5 {ap['ap50']:.4f}, AP@[.5:.95] {ap['ap']:.4f}")
        figures[f"scenes_{split.replace('-', '_')}"] = ap
    figures["seconds"] = time.perf_counter() - started
    return figures
